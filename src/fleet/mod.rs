//! The elastic fleet: pools of workers the coordinator starts and stops with demand.
//!
//! A pool (`[[pool]]` in `drover.toml`, [`config`]) names a [`provider`] of machines (EC2
//! instances, [`ec2`], or local processes, [`process`]), how many workers it may have, and what
//! each offers. The Fleet actor (`crate::actors::fleet`) compares demand (pending jobs, from the
//! Scheduler) with supply (the pool's workers, from the Registry and Scheduler) and calls the
//! providers off its event loop. A machine carries its cluster (the ledger's id) and pool as
//! tags, so a restarted coordinator adopts its own machines and touches no one else's.

pub mod config;
pub mod ec2;
pub mod process;
pub mod provider;

pub use config::{
    parse_pools, Ec2Config, Market, PoolConfig, ProcessConfig, ProviderConfig, TokenSource,
};
pub use provider::{LaunchRequest, Machine, Provider, ProviderError, ProviderFuture};

use crate::net::auth::Secret;
use std::sync::Arc;

/// The provider a pool's configuration names. The worker secret is what `process` workers are
/// given (through their environment) to join.
pub fn provider_for(pool: &PoolConfig, worker_secret: Option<&Secret>) -> Arc<dyn Provider> {
    match &pool.provider {
        ProviderConfig::Process(process) => Arc::new(process::ProcessProvider::new(
            pool,
            process.command.clone(),
            worker_secret.cloned(),
        )),
        ProviderConfig::Ec2(config) => Arc::new(ec2::Ec2Provider::new(pool, config, worker_secret)),
    }
}
