//! Workers coming and going, as the Scheduler hears of them: one registered (with the attempts
//! it carries), one gone, its attempts acknowledged, one told to take nothing more.

use super::slots::{Held, WorkerSlots};
use super::{Departure, Scheduler};
use crate::actors::ledger::{AttemptsCarried, LostAttempt, ResultsArrived, WorkerLost};
use crate::actors::session::ToWorker;
use crate::job::{now_ms, AttemptResult, CarriedAttempt, Lease, Outcome, WorkerId};
use crate::net::protocol::PoolMember;
use actix::prelude::*;
use std::collections::HashMap;
use std::sync::Arc;

/// A worker registered and can take jobs.
#[derive(Message)]
#[rtype(result = "()")]
pub struct WorkerJoined {
    /// Its registration.
    pub worker: WorkerId,
    /// Its name.
    pub name: Arc<str>,
    /// Its process: registrations of the same process may pass attempts on to each other.
    pub instance: u64,
    /// Slots it offers.
    pub slots: u32,
    /// Its labels.
    pub labels: Vec<String>,
    /// The pool and machine it was started for, if the fleet started it.
    pub member: Option<PoolMember>,
    /// Attempts it still runs from an earlier registration.
    pub carried: Vec<CarriedAttempt>,
    /// Results it had not had acknowledged: handled before it is given anything, so a job that
    /// finished while its worker was away is not started again.
    pub results: Vec<AttemptResult>,
}

impl Handler<WorkerJoined> for Scheduler {
    type Result = ();

    fn handle(&mut self, joined: WorkerJoined, ctx: &mut Context<Self>) {
        let now = now_ms();
        let slots = WorkerSlots::new(
            joined.name,
            joined.instance,
            joined.labels.into_iter().collect(),
            joined.slots,
        );
        // An attempt another worker process holds is not this one's to carry, whatever its
        // name: a worker speaks for its own attempts only.
        let claimed_elsewhere = |lease: &Lease| {
            self.workers.values().any(|other| {
                other.instance != slots.instance
                    && (other.running.contains_key(lease) || other.carried.contains_key(lease))
            })
        };
        let (theirs, mine): (Vec<CarriedAttempt>, Vec<CarriedAttempt>) = joined
            .carried
            .into_iter()
            .partition(|carried| claimed_elsewhere(&carried.lease));
        if !theirs.is_empty() {
            tracing::warn!(worker = %slots.name, attempts = theirs.len(), "carried attempts held by other workers, refused");
        }
        // What it still runs first, so a job is taken back by its running attempt rather than
        // by an older one's result; then its results, by the road every result takes.
        if !mine.is_empty() {
            // A carried attempt may take its job back (one whose start never reached the disk
            // before a restart): the job leaves the line now, so no other worker is given it
            // while the Ledger decides. The Ledger queues it again if it refuses.
            self.pending
                .withdraw(mine.iter().map(|carried| carried.job));
            self.ledger.do_send(AttemptsCarried {
                worker: slots.worker_ref(joined.worker),
                carried: mine.clone(),
            });
        }
        if !joined.results.is_empty() {
            // None of these is an attempt of this registration: a success's job may be queued
            // again meanwhile, and must not start before the Ledger has the result (if it
            // refuses it, it queues the job again).
            self.pending.withdraw(
                joined
                    .results
                    .iter()
                    .filter(|result| result.outcome == Outcome::Succeeded)
                    .map(|result| result.job),
            );
            self.ledger.do_send(ResultsArrived {
                worker: slots.worker_ref(joined.worker),
                results: joined.results,
            });
        }
        let carried: HashMap<Lease, Held> = mine
            .into_iter()
            .map(|carried| {
                let held = Held {
                    job: carried.job,
                    slots: carried.slots,
                    since_ms: now,
                    started: true,
                    waiting: false,
                    asked_back: false,
                };
                (carried.lease, held)
            })
            .collect();
        // An earlier registration of the same process, not yet found gone, must not report
        // these attempts lost when it is: they run here now.
        for other in self.workers.values_mut() {
            for lease in carried.keys() {
                other.release(*lease, now);
            }
        }
        let busy = carried
            .values()
            .fold(0u32, |sum, held| sum.saturating_add(held.slots));
        let mut slots = slots;
        slots.free = slots.total.saturating_sub(busy);
        slots.carried = carried;
        slots.last_busy_ms = now;
        slots.member = joined.member;
        if self.retired.holds(slots.member.as_ref()) {
            // Its machine is being terminated: it must take nothing it could not finish.
            slots.draining = true;
            self.directory.tell(
                joined.worker,
                ToWorker::Drain {
                    reason: "its machine is being terminated".into(),
                },
            );
        }
        self.workers.insert(joined.worker, slots);
        self.queue_dispatch(ctx);
    }
}

/// A worker is gone (its connection closed or it went silent); its attempts are lost. Answered
/// with what it was doing, if the Scheduler knew it.
#[derive(Message)]
#[rtype(result = "Option<Departure>")]
pub struct WorkerGone {
    /// Its registration.
    pub worker: WorkerId,
    /// Why, in words.
    pub reason: String,
}

impl Handler<WorkerGone> for Scheduler {
    type Result = Option<Departure>;

    fn handle(&mut self, gone: WorkerGone, _ctx: &mut Context<Self>) -> Option<Departure> {
        let slots = self.workers.remove(&gone.worker)?;
        // Carried attempts too: the Ledger may have given their jobs back to them.
        let attempts: Vec<LostAttempt> = slots
            .running
            .iter()
            .chain(slots.carried.iter())
            .map(|(lease, held)| LostAttempt {
                job: held.job,
                lease: *lease,
                started: held.started,
            })
            .collect();
        let departure = Departure {
            slots: slots.total,
            draining: slots.draining,
            attempts: attempts.len(),
        };
        if !attempts.is_empty() {
            self.ledger.do_send(WorkerLost {
                worker_name: slots.name,
                attempts,
                reason: gone.reason,
            });
        }
        Some(departure)
    }
}

/// A worker says it started these attempts: lost with it from now on, they count against their
/// jobs.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AttemptsAcknowledged {
    /// The worker's registration.
    pub worker: WorkerId,
    /// The attempts.
    pub leases: Vec<Lease>,
}

impl Handler<AttemptsAcknowledged> for Scheduler {
    type Result = ();

    fn handle(&mut self, acknowledged: AttemptsAcknowledged, _ctx: &mut Context<Self>) {
        let Some(slots) = self.workers.get_mut(&acknowledged.worker) else {
            return;
        };
        for lease in acknowledged.leases {
            if let Some(held) = slots.running.get_mut(&lease) {
                held.started = true;
            }
        }
    }
}

/// A worker stops taking new jobs (it is draining before exit).
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopAssigning(pub WorkerId);

impl Handler<StopAssigning> for Scheduler {
    type Result = ();

    fn handle(&mut self, StopAssigning(worker): StopAssigning, _ctx: &mut Context<Self>) {
        if let Some(slots) = self.workers.get_mut(&worker) {
            slots.draining = true;
        }
    }
}
