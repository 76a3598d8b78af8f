//! What each worker is doing, as the Scheduler knows it, for the worker list and the status's
//! counts: both in order of registration, so that they join the Registry's part in one pass.

use super::{Scheduler, WorkerLoad};
use crate::job::WorkerId;
use crate::status::CurrentJob;
use actix::prelude::*;

/// What each worker is doing, for the worker list, by registration.
#[derive(Message)]
#[rtype(result = "Vec<(WorkerId, WorkerLoad)>")]
pub struct ListLoads;

impl Handler<ListLoads> for Scheduler {
    type Result = MessageResult<ListLoads>;

    fn handle(&mut self, _: ListLoads, _ctx: &mut Context<Self>) -> Self::Result {
        let loads = self
            .workers
            .iter()
            .map(|(id, slots)| {
                let mut current: Vec<CurrentJob> = slots
                    .running
                    .values()
                    .chain(slots.carried.values())
                    .map(|held| CurrentJob {
                        job: held.job,
                        since_ms: held.since_ms,
                    })
                    .collect();
                current.sort_unstable_by_key(|running| (running.job, running.since_ms));
                let load = WorkerLoad {
                    slots: slots.total,
                    draining: slots.draining,
                    current,
                };
                (*id, load)
            })
            .collect();
        MessageResult(loads)
    }
}

/// How much one worker runs, without what: all the status counts need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadCount {
    /// Slots it offers.
    pub slots: u32,
    /// Attempts it runs.
    pub running: u32,
    /// True while it drains.
    pub draining: bool,
}

/// How much each worker runs, for the status's counts, by registration: a few bytes a worker
/// where [`ListLoads`] makes a list of jobs for each, since `drover status` and `/metrics` are
/// asked often and a fleet may have thousands of workers.
#[derive(Message)]
#[rtype(result = "Vec<(WorkerId, LoadCount)>")]
pub struct CountLoads;

impl Handler<CountLoads> for Scheduler {
    type Result = MessageResult<CountLoads>;

    fn handle(&mut self, _: CountLoads, _ctx: &mut Context<Self>) -> Self::Result {
        let counts = self
            .workers
            .iter()
            .map(|(id, slots)| {
                let count = LoadCount {
                    slots: slots.total,
                    running: (slots.running.len() + slots.carried.len()) as u32,
                    draining: slots.draining,
                };
                (*id, count)
            })
            .collect();
        MessageResult(counts)
    }
}
