//! The elastic fleet: pools of workers the coordinator starts and stops with demand.
//!
//! A pool (`[[pool]]` in `drover.toml`, [`config`]) names a [`provider`] of machines (EC2
//! instances, [`ec2`], or local processes, [`process`]), how many workers it may have, and what
//! each offers. The Fleet actor (`crate::actors::fleet`) compares demand (pending jobs, from the
//! Scheduler) with supply (the pool's workers, from the Registry and Scheduler) and calls the
//! providers off its event loop. A machine carries its cluster (the ledger's id) and pool as
//! tags, so a restarted coordinator adopts its own machines and touches no one else's.

pub mod config;
#[cfg(feature = "ec2")]
pub mod ec2;
pub mod process;
pub mod provider;

pub use config::{
    parse_pools, Ec2Config, Market, PoolConfig, ProcessConfig, ProviderConfig, TokenSource,
};
pub use provider::{LaunchRequest, Machine, Provider, ProviderError, ProviderFuture};

use crate::ha::LeaseClock;
use crate::net::auth::Secret;
use std::sync::Arc;

/// The provider a pool's configuration names. The worker secret is what `process` workers are
/// given (through their environment) to join; `lease` is the one the coordinator leads under,
/// without which EC2 is sent nothing.
pub fn provider_for(
    pool: &PoolConfig,
    worker_secret: Option<&Secret>,
    lease: &LeaseClock,
) -> Arc<dyn Provider> {
    match &pool.provider {
        ProviderConfig::Process(process) => Arc::new(process::ProcessProvider::new(
            pool,
            process.command.clone(),
            worker_secret.cloned(),
        )),
        #[cfg(feature = "ec2")]
        ProviderConfig::Ec2(config) => {
            Arc::new(ec2::Ec2Provider::new(pool, config, worker_secret).fenced_by(lease.clone()))
        }
        #[cfg(not(feature = "ec2"))]
        ProviderConfig::Ec2(_) => {
            let _ = lease;
            Arc::new(WithoutEc2)
        }
    }
}

/// The `ec2` provider of a drover built without its `ec2` feature: every launch fails, saying
/// so, and it has no machines.
#[cfg(not(feature = "ec2"))]
struct WithoutEc2;

#[cfg(not(feature = "ec2"))]
impl Provider for WithoutEc2 {
    fn launch(&self, _: LaunchRequest) -> ProviderFuture<Vec<Machine>> {
        Box::pin(async { Err(ProviderError::new(WITHOUT_EC2)) })
    }
    fn terminate(&self, _: &str, _: Vec<String>) -> ProviderFuture<()> {
        Box::pin(async { Err(ProviderError::new(WITHOUT_EC2)) })
    }
    fn list(&self, _: &str, _: &str) -> ProviderFuture<Vec<Machine>> {
        Box::pin(async { Ok(Vec::new()) })
    }
}

#[cfg(not(feature = "ec2"))]
const WITHOUT_EC2: &str =
    "this drover was built without its `ec2` feature (cargo build --features ec2)";
