//! The Fleet actor: starts and stops the pools' machines with demand.
//!
//! It owns each pool's machines (launched, booting, registered, draining, terminating) and its
//! counters. On every tick it takes demand from the Scheduler (pending slots per label set) and
//! supply from the Registry and Scheduler (each pool's workers, busy or idle since when),
//! decides, and calls the pool's provider on a task of its own, so a slow cloud API never holds
//! its event loop.

use crate::actors::registry::Registry;
use crate::actors::scheduler::Scheduler;
use crate::fleet::{PoolConfig, Provider};
use crate::status::PoolInfo;
use actix::prelude::*;
use std::sync::Arc;

/// One pool with its provider.
pub struct Pool {
    /// What it is.
    pub config: Arc<PoolConfig>,
    /// Where its machines come from.
    pub provider: Arc<dyn Provider>,
}

/// What the Fleet needs to know besides its pools.
pub struct FleetContext {
    /// The cluster's id (the ledger's), the tag on every machine.
    pub cluster: String,
    /// The protocol address(es) workers connect to.
    pub coordinator: String,
    /// Demand.
    pub scheduler: Addr<Scheduler>,
    /// Supply.
    pub registry: Addr<Registry>,
}

/// Keeps each pool between its min and max, as demand asks.
pub struct Fleet {
    pools: Vec<Pool>,
    context: FleetContext,
}

impl Fleet {
    /// A fleet of these pools.
    pub fn new(pools: Vec<Pool>, context: FleetContext) -> Self {
        Fleet { pools, context }
    }
}

impl Actor for Fleet {
    type Context = Context<Self>;
}

/// Each pool as the views show it, in the order of the configuration.
#[derive(Message)]
#[rtype(result = "Vec<PoolInfo>")]
pub struct ListPools;

impl Handler<ListPools> for Fleet {
    type Result = MessageResult<ListPools>;

    fn handle(&mut self, _: ListPools, _: &mut Context<Self>) -> Self::Result {
        // Contract stub for issue 13: the fleet helper counts machines and workers.
        let _ = &self.context;
        MessageResult(
            self.pools
                .iter()
                .map(|pool| PoolInfo {
                    name: pool.config.name.clone(),
                    provider: pool.config.provider.kind().to_string(),
                    min: pool.config.min,
                    max: pool.config.max,
                    ..PoolInfo::default()
                })
                .collect(),
        )
    }
}
