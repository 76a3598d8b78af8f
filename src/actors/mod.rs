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

use crate::job::WorkerId;
use crate::status::{ClusterStatus, WorkerCounts, WorkerInfo};
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
    let (registered, loads) = (registered?, loads?);
    let mut loads = loads.into_iter().peekable();
    let mut workers = registered.connected;
    // Filled in where they are (a worker's entry is a few hundred bytes, and a fleet has
    // thousands), both sides in order of registration.
    workers.retain_mut(|info| {
        while loads.next_if(|(id, _)| *id < info.id).is_some() {}
        let Some((_, load)) = loads.next_if(|(id, _)| *id == info.id) else {
            return false;
        };
        info.slots = load.slots;
        info.running = load.current.len() as u32;
        info.jobs = load.current.iter().map(|running| running.job).collect();
        // Written over the Registry's string: one allocation fewer a worker.
        info.state.clear();
        info.state.push_str(if load.draining {
            "draining"
        } else if load.current.is_empty() {
            "idle"
        } else {
            "busy"
        });
        info.current = load.current;
        true
    });
    workers.extend(registered.gone);
    Ok(workers)
}

/// Connected workers by state and their slots, as [`list_workers`] would count them (a worker
/// the Scheduler has not heard of yet is left out), with the recently lost ones; without making
/// the list, which for thousands of workers costs milliseconds of the actors' thread.
pub async fn worker_counts(
    registry: &Addr<registry::Registry>,
    scheduler: &Addr<scheduler::Scheduler>,
) -> Result<WorkerCounts, MailboxError> {
    let (registered, loads) = futures::join!(
        registry.send(registry::CountRegistered),
        scheduler.send(scheduler::CountLoads)
    );
    let (registered, loads) = (registered?, loads?);
    let connected = registered.connected.into_iter().map(|id| (id, ()));
    let mut counts = WorkerCounts {
        lost: registered.lost,
        ..WorkerCounts::default()
    };
    for ((), load) in join_in_order(connected, loads) {
        if load.draining {
            counts.draining += 1;
        } else if load.running == 0 {
            counts.idle += 1;
        } else {
            counts.busy += 1;
        }
        counts.slots += u64::from(load.slots);
        counts.running += u64::from(load.running);
    }
    Ok(counts)
}

/// Pairs the Registry's and the Scheduler's entries of the workers both know, each side in
/// order of registration (both keep their workers in ordered maps), in one pass.
fn join_in_order<A, B>(
    registered: impl IntoIterator<Item = (WorkerId, A)>,
    loads: impl IntoIterator<Item = (WorkerId, B)>,
) -> impl Iterator<Item = (A, B)> {
    let mut loads = loads.into_iter().peekable();
    registered.into_iter().filter_map(move |(id, registered)| {
        while loads.next_if(|(load, _)| *load < id).is_some() {}
        loads
            .next_if(|(load, _)| *load == id)
            .map(|(_, load)| (registered, load))
    })
}

/// The cluster at a glance, from the Ledger's statistics, the workers' counts, why jobs wait and
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
        worker_counts(registry, scheduler),
        views::waiting(ledger, scheduler, None),
        fleet.send(fleet::ListPools)
    );
    let mut status = ClusterStatus::with_counts(stats?, workers?, waiting?);
    status.pools = pools?;
    Ok(status.with_cluster(&cluster.borrow()))
}
