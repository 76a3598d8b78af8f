//! Attempts held beyond workers' free slots, asked back and handed back: when another worker
//! has slots free and nothing in line for them, when they waited too long, and as the worker
//! confirms (only then do their jobs go back in line). See `slots.rs` for how a worker holds
//! them.

use super::{Scheduler, ToWorker};
use crate::actors::ledger::AttemptsReturned;
use crate::job::{now_ms, Lease, WorkerId};
use actix::prelude::*;
use std::collections::HashSet;

/// How often workers' held attempts are looked at.
pub(super) const SWEEP: std::time::Duration = std::time::Duration::from_millis(250);
/// A worker whose oldest held attempt waited this long is asked for all of them back: its jobs
/// are not as short as its last ones, and another worker (or a job of higher priority) may need
/// them.
const STALE_MS: u64 = 1000;

impl Scheduler {
    /// Asks holders to hand back held attempts a worker with free slots could run now (the
    /// line has nothing for it, or it would have been given that).
    pub(super) fn ask_back_for_idle(&mut self) {
        if !self.workers.values().any(|slots| slots.held() > 0) {
            return;
        }
        let idle: Vec<(WorkerId, u32, HashSet<String>)> = self
            .workers
            .iter()
            .filter(|(_, slots)| slots.free > 0 && !slots.draining)
            .map(|(id, slots)| (*id, slots.free, slots.labels.clone()))
            .collect();
        for (idle_worker, free, labels) in idle {
            let mut left = free;
            for (holder, slots) in self.workers.iter_mut() {
                if left == 0 {
                    break;
                }
                if *holder == idle_worker || slots.held() == 0 {
                    continue;
                }
                let asked = slots.ask_back(left, &labels);
                if asked.is_empty() {
                    continue;
                }
                let asked_slots: u32 = asked
                    .iter()
                    .filter_map(|lease| slots.running.get(lease))
                    .map(|held| held.slots)
                    .sum();
                left = left.saturating_sub(asked_slots);
                self.directory.tell(*holder, ToWorker::Release(asked));
            }
        }
    }

    /// Asks back the held attempts that waited too long.
    pub(super) fn ask_back_stale(&mut self) {
        let before = now_ms().saturating_sub(STALE_MS);
        for (worker, slots) in self.workers.iter_mut() {
            if slots.held() == 0 {
                continue;
            }
            let asked = slots.ask_back_stale(before);
            if !asked.is_empty() {
                tracing::debug!(worker = %slots.name, jobs = asked.len(), "held jobs waited too long, asked back");
                self.directory.tell(*worker, ToWorker::Release(asked));
            }
        }
    }
}

/// A worker handed back attempts it held and never started, and never will.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AttemptsReleased {
    /// The worker's registration.
    pub worker: WorkerId,
    /// The attempts.
    pub leases: Vec<Lease>,
}

impl Handler<AttemptsReleased> for Scheduler {
    type Result = ();

    fn handle(&mut self, released: AttemptsReleased, ctx: &mut Context<Self>) {
        let now = now_ms();
        let Some(slots) = self.workers.get_mut(&released.worker) else {
            return;
        };
        let mut returned = Vec::with_capacity(released.leases.len());
        for lease in released.leases {
            // Only an attempt of this registration that it did not say it started: a worker
            // speaks for its own attempts, and one it started runs on to its result.
            if slots.running.get(&lease).is_some_and(|held| !held.started) {
                if let Some(held) = slots.release(lease, now) {
                    returned.push((held.job, lease));
                }
            }
        }
        if !returned.is_empty() {
            self.ledger.do_send(AttemptsReturned {
                worker: slots.worker_ref(released.worker),
                returned,
            });
        }
        self.queue_dispatch(ctx);
    }
}
