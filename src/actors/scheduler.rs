//! The Scheduler actor: holds the pending queue and every worker's free slots, and pushes a job to
//! a matching idle slot the moment both exist.
//!
//! It is also the one road from workers to the Ledger: assignments and results pass through it in
//! order, so the Ledger always learns of an attempt's start before its result or its loss.

use crate::actors::ledger::{AttemptsCarried, AttemptsStarted, Ledger, ResultsArrived, WorkerLost};
use crate::actors::queue::{PendingJob, PendingQueue};
use crate::actors::registry::{JobsAssigned, JobsEnded, Registry};
use crate::actors::session::{Push, Session};
use crate::job::{AttemptResult, JobId, Lease, Outcome, WorkerId};
use crate::net::protocol::{Assignment, CarriedAttempt, FromCoordinator, ManifestOrder};
use crate::storage::journal::lease;
use actix::prelude::*;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

/// Spec bytes per `Assign` frame, far below the frame limit (one spec alone is bounded by the
/// submission frame it came in).
const ASSIGN_FRAME_BYTES: usize = 4 * 1024 * 1024;

/// A worker's slots as the Scheduler sees them.
struct WorkerSlots {
    name: Arc<str>,
    session: Addr<Session>,
    labels: HashSet<String>,
    total: u32,
    free: u32,
    draining: bool,
    /// Attempts assigned on this registration: lease → (job, slots).
    running: HashMap<Lease, (JobId, u32)>,
    /// Attempts the worker kept running from an earlier registration: lease → (job, slots).
    carried: HashMap<Lease, (JobId, u32)>,
}

/// Matches pending jobs to free slots.
pub struct Scheduler {
    ledger: Addr<Ledger>,
    registry: Addr<Registry>,
    epoch: u64,
    next_lease: u64,
    pending: PendingQueue,
    /// Ordered so assignment visits workers in a stable order.
    workers: BTreeMap<WorkerId, WorkerSlots>,
    dispatch_queued: bool,
    /// Turns of workers asked to write manifests.
    next_publisher: usize,
    /// Where the last dispatch pass started, so slots are filled round-robin across workers.
    next_first_worker: WorkerId,
}

impl Scheduler {
    /// A scheduler that issues leases of the given epoch.
    pub fn new(ledger: Addr<Ledger>, registry: Addr<Registry>, epoch: u64) -> Self {
        Scheduler {
            ledger,
            registry,
            epoch,
            next_lease: 1,
            pending: PendingQueue::default(),
            workers: BTreeMap::new(),
            dispatch_queued: false,
            next_publisher: 0,
            next_first_worker: 0,
        }
    }

    /// Runs a dispatch pass once the messages already in the mailbox are handled, so a burst of
    /// events costs one pass.
    fn queue_dispatch(&mut self, ctx: &mut Context<Self>) {
        if !self.dispatch_queued && !self.pending.is_empty() {
            self.dispatch_queued = true;
            ctx.notify(Dispatch);
        }
    }

    /// Fills free slots, one job per worker per round so work spreads across the fleet.
    fn dispatch(&mut self) {
        let mut assigned: HashMap<WorkerId, Vec<Assignment>> = HashMap::new();
        let order: Vec<WorkerId> = self
            .workers
            .range(self.next_first_worker..)
            .chain(self.workers.range(..self.next_first_worker))
            .filter(|(_, slots)| slots.free > 0 && !slots.draining)
            .map(|(id, _)| *id)
            .collect();
        let mut active = order;
        while !active.is_empty() && !self.pending.is_empty() {
            active.retain(|worker| {
                let Some(slots) = self.workers.get_mut(worker) else {
                    return false;
                };
                let Some((job, job_slots)) = self.pending.pop_for(slots.free, &slots.labels) else {
                    return false;
                };
                let lease = lease(self.epoch, self.next_lease);
                self.next_lease += 1;
                slots.free -= job_slots;
                slots.running.insert(lease, (job.job, job_slots));
                assigned.entry(*worker).or_default().push(Assignment {
                    lease,
                    job: job.job,
                    batch: job.batch,
                    attempt: job.attempt,
                    spec: job.spec,
                });
                slots.free > 0
            });
        }
        if let Some((last, _)) = self.workers.range(self.next_first_worker..).next() {
            self.next_first_worker = last + 1;
        } else {
            self.next_first_worker = 0;
        }
        for (worker, assignments) in assigned {
            let Some(slots) = self.workers.get(&worker) else {
                continue;
            };
            let started = assignments
                .iter()
                .map(|assignment| (assignment.job, assignment.lease, assignment.attempt))
                .collect::<Vec<_>>();
            self.registry.do_send(JobsAssigned {
                worker,
                jobs: started
                    .iter()
                    .map(|(job, lease, _)| (*lease, *job))
                    .collect(),
            });
            self.ledger.do_send(AttemptsStarted {
                worker_name: slots.name.clone(),
                started,
            });
            // Specs can be large: keep each frame well below the size limit.
            let mut frame = Vec::new();
            let mut frame_bytes = 0;
            for assignment in assignments {
                let size = assignment.spec.as_bytes().len();
                if !frame.is_empty() && frame_bytes + size > ASSIGN_FRAME_BYTES {
                    let full = std::mem::take(&mut frame);
                    slots.session.do_send(Push(FromCoordinator::Assign(full)));
                    frame_bytes = 0;
                }
                frame_bytes += size;
                frame.push(assignment);
            }
            slots.session.do_send(Push(FromCoordinator::Assign(frame)));
        }
    }
}

impl Actor for Scheduler {
    type Context = Context<Self>;
}

#[derive(Message)]
#[rtype(result = "()")]
struct Dispatch;

impl Handler<Dispatch> for Scheduler {
    type Result = ();

    fn handle(&mut self, _: Dispatch, _ctx: &mut Context<Self>) {
        self.dispatch_queued = false;
        self.dispatch();
    }
}

/// Jobs became pending (new, retried after backoff, or taken back from a lost worker).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Enqueue(pub Vec<PendingJob>);

impl Handler<Enqueue> for Scheduler {
    type Result = ();

    fn handle(&mut self, Enqueue(jobs): Enqueue, ctx: &mut Context<Self>) {
        for job in jobs {
            self.pending.push(job);
        }
        self.queue_dispatch(ctx);
    }
}

/// Pending jobs that must not start (they were cancelled).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Withdraw(pub Vec<JobId>);

impl Handler<Withdraw> for Scheduler {
    type Result = ();

    fn handle(&mut self, Withdraw(jobs): Withdraw, _ctx: &mut Context<Self>) {
        self.pending.withdraw(jobs);
    }
}

/// Attempts to stop on their workers.
#[derive(Message)]
#[rtype(result = "()")]
pub struct KillAttempts(pub Vec<Lease>);

impl Handler<KillAttempts> for Scheduler {
    type Result = ();

    fn handle(&mut self, KillAttempts(leases): KillAttempts, _ctx: &mut Context<Self>) {
        for slots in self.workers.values() {
            let mine: Vec<Lease> = leases
                .iter()
                .copied()
                .filter(|lease| {
                    slots.running.contains_key(lease) || slots.carried.contains_key(lease)
                })
                .collect();
            if !mine.is_empty() {
                slots.session.do_send(Push(FromCoordinator::Kill(mine)));
            }
        }
    }
}

/// A worker registered and can take jobs.
#[derive(Message)]
#[rtype(result = "()")]
pub struct WorkerJoined {
    /// Its registration.
    pub worker: WorkerId,
    /// Its name.
    pub name: Arc<str>,
    /// Its session.
    pub session: Addr<Session>,
    /// Slots it offers.
    pub slots: u32,
    /// Its labels.
    pub labels: Vec<String>,
    /// Attempts it still runs from an earlier registration.
    pub carried: Vec<CarriedAttempt>,
    /// Results it had not had acknowledged, handled before it is given anything.
    pub results: Vec<AttemptResult>,
}

impl Handler<WorkerJoined> for Scheduler {
    type Result = ();

    fn handle(&mut self, joined: WorkerJoined, ctx: &mut Context<Self>) {
        if !joined.results.is_empty() {
            // A job that succeeded while its worker was away must not start again, whatever
            // the Ledger makes of the result; if the Ledger cannot record it, it enqueues the
            // job afresh, which undoes this.
            self.pending.withdraw(
                joined
                    .results
                    .iter()
                    .filter(|result| result.outcome == Outcome::Succeeded)
                    .map(|result| result.job),
            );
            self.ledger.do_send(ResultsArrived {
                worker_name: joined.name.clone(),
                session: joined.session.clone(),
                results: joined.results,
            });
        }
        if !joined.carried.is_empty() {
            // After its results, so a job that finished is not taken for one still running.
            self.ledger.do_send(AttemptsCarried {
                worker_name: joined.name.clone(),
                carried: joined.carried.clone(),
            });
        }
        let carried: HashMap<Lease, (JobId, u32)> = joined
            .carried
            .into_iter()
            .map(|carried| (carried.lease, (carried.job, carried.slots)))
            .collect();
        // An earlier registration of the same worker, not yet found gone, must not report these
        // attempts lost when it is: they run here now.
        for other in self.workers.values_mut() {
            for lease in carried.keys() {
                if let Some((_, held)) = other
                    .running
                    .remove(lease)
                    .or_else(|| other.carried.remove(lease))
                {
                    other.free = other.free.saturating_add(held).min(other.total);
                }
            }
        }
        let busy = carried
            .values()
            .fold(0u32, |sum, (_, held)| sum.saturating_add(*held));
        self.workers.insert(
            joined.worker,
            WorkerSlots {
                name: joined.name,
                session: joined.session,
                labels: joined.labels.into_iter().collect(),
                total: joined.slots,
                free: joined.slots.saturating_sub(busy),
                draining: false,
                running: HashMap::new(),
                carried,
            },
        );
        self.queue_dispatch(ctx);
    }
}

/// A worker is gone (its connection closed or it went silent); its attempts are lost.
#[derive(Message)]
#[rtype(result = "()")]
pub struct WorkerGone {
    /// Its registration.
    pub worker: WorkerId,
    /// Why, in words.
    pub reason: String,
}

impl Handler<WorkerGone> for Scheduler {
    type Result = ();

    fn handle(&mut self, gone: WorkerGone, _ctx: &mut Context<Self>) {
        let Some(slots) = self.workers.remove(&gone.worker) else {
            return;
        };
        // Carried attempts too: the Ledger may have given their jobs back to them.
        let attempts: Vec<(JobId, Lease)> = slots
            .running
            .iter()
            .chain(slots.carried.iter())
            .map(|(lease, (job, _))| (*job, *lease))
            .collect();
        self.ledger.do_send(WorkerLost {
            worker_name: slots.name,
            attempts,
            reason: gone.reason,
        });
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

/// A worker reported finished attempts.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ResultsReported {
    /// The worker's registration.
    pub worker: WorkerId,
    /// Its session, for the acknowledgement.
    pub session: Addr<Session>,
    /// The results.
    pub results: Vec<AttemptResult>,
}

impl Handler<ResultsReported> for Scheduler {
    type Result = ();

    fn handle(&mut self, reported: ResultsReported, ctx: &mut Context<Self>) {
        let Some(slots) = self.workers.get_mut(&reported.worker) else {
            return;
        };
        let mut ended = Vec::with_capacity(reported.results.len());
        let mut late_successes = Vec::new();
        let mut forward = Vec::with_capacity(reported.results.len());
        let mut ack_now = Vec::new();
        for result in reported.results {
            // An attempt of this registration, or one it carried from an earlier one (the
            // Ledger may have given its job back to it, so every outcome goes there).
            let carried = !slots.running.contains_key(&result.lease);
            let holder = if carried {
                &mut slots.carried
            } else {
                &mut slots.running
            };
            if let Some(&(job, held)) = holder.get(&result.lease) {
                if job != result.job {
                    // A lease names one job: a result that pairs them otherwise is refused,
                    // and the attempt stays running until its true result or its loss.
                    tracing::warn!(worker = %slots.name, lease = result.lease, claimed = result.job, job, "result names the wrong job, ignored");
                    ack_now.push(result.lease);
                    continue;
                }
                // A result frees its slots once: repeats of a result free nothing.
                holder.remove(&result.lease);
                slots.free = slots.free.saturating_add(held).min(slots.total);
                ended.push((result.lease, result.outcome, result.duration_ms));
                if carried && result.outcome == Outcome::Succeeded {
                    // Its job may be pending again meanwhile; the first success is recorded.
                    late_successes.push(result.job);
                }
                forward.push(result);
                continue;
            }
            if result.outcome == Outcome::Succeeded {
                // Not an attempt of this registration: its job may be pending again meanwhile,
                // and the first success of a job is the one recorded.
                late_successes.push(result.job);
                forward.push(result);
            } else {
                // A failure of an attempt this worker no longer holds changes nothing.
                ack_now.push(result.lease);
            }
        }
        if !late_successes.is_empty() {
            self.pending.withdraw(late_successes);
        }
        if !ack_now.is_empty() {
            reported
                .session
                .do_send(Push(FromCoordinator::Acked(ack_now)));
        }
        self.registry.do_send(JobsEnded {
            worker: reported.worker,
            ended,
        });
        if !forward.is_empty() {
            self.ledger.do_send(ResultsArrived {
                worker_name: slots.name.clone(),
                session: reported.session,
                results: forward,
            });
        }
        self.queue_dispatch(ctx);
    }
}

/// Manifests for some worker to write (their own workers did not confirm them).
#[derive(Message)]
#[rtype(result = "()")]
pub struct PublishManifests(pub Vec<ManifestOrder>);

impl Handler<PublishManifests> for Scheduler {
    type Result = ();

    fn handle(&mut self, PublishManifests(orders): PublishManifests, _ctx: &mut Context<Self>) {
        // A different worker each time, so one that cannot write them does not hold them up.
        let candidates: Vec<&WorkerSlots> = self
            .workers
            .values()
            .filter(|slots| !slots.draining)
            .collect();
        if candidates.is_empty() {
            return;
        }
        let chosen = candidates[self.next_publisher % candidates.len()];
        self.next_publisher = self.next_publisher.wrapping_add(1);
        chosen
            .session
            .do_send(Push(FromCoordinator::WriteManifests(orders)));
    }
}
