//! The coordinator's actors. Each owns its state and is its only writer; messages are the only
//! way in. The views that need facts of several owners ask each at the same time and join the
//! answers here.

pub mod fleet;
pub mod ledger;
pub mod queue;
pub mod registry;
pub mod scheduler;
pub mod session;
pub mod views;

use crate::status::{ClusterStatus, WorkerInfo};
use actix::{Addr, MailboxError};

/// Every connected worker, then the recently gone ones: who it is, whether it is alive and what
/// it has done (the Registry's), joined with what it runs and whether it drains (the
/// Scheduler's). A worker the Scheduler has not heard of yet (its registration is on its way)
/// is left out until it has.
pub async fn list_workers(
    registry: &Addr<registry::Registry>,
    scheduler: &Addr<scheduler::Scheduler>,
) -> Result<Vec<WorkerInfo>, MailboxError> {
    let (registered, loads) = futures::join!(
        registry.send(registry::ListRegistered),
        scheduler.send(scheduler::ListLoads)
    );
    let (registered, loads) = (registered?, &mut loads?);
    let mut workers: Vec<WorkerInfo> = registered
        .connected
        .into_iter()
        .filter_map(|(id, mut info)| {
            let load = loads.remove(&id)?;
            info.slots = load.slots;
            info.running = load.current.len() as u32;
            info.jobs = load.current.iter().map(|running| running.job).collect();
            info.state = if load.draining {
                "draining"
            } else if load.current.is_empty() {
                "idle"
            } else {
                "busy"
            }
            .to_string();
            info.current = load.current;
            Some(info)
        })
        .collect();
    workers.extend(registered.gone);
    Ok(workers)
}

/// The cluster at a glance, from the Ledger's statistics, the worker list, why jobs wait and
/// the Fleet's pools (asked at the same time), with who leads and which coordinators there are.
pub async fn cluster_status(
    ledger: &Addr<ledger::Ledger>,
    registry: &Addr<registry::Registry>,
    scheduler: &Addr<scheduler::Scheduler>,
    fleet: &Addr<fleet::Fleet>,
    cluster: &tokio::sync::watch::Receiver<crate::ha::Cluster>,
) -> Result<ClusterStatus, MailboxError> {
    let (stats, workers, waiting, pools) = futures::join!(
        ledger.send(ledger::Statistics),
        list_workers(registry, scheduler),
        views::waiting(ledger, scheduler, None),
        fleet.send(fleet::ListPools)
    );
    let mut status = ClusterStatus::assemble(stats?, &workers?, waiting?);
    status.pools = pools?;
    Ok(status.with_cluster(&cluster.borrow()))
}
