//! The Scheduler actor: holds the pending queue and every worker's free slots, and pushes a job to
//! a matching idle slot the moment both exist.
//!
//! It owns what a worker has to give: its slots, the leases of the attempts it runs (and since
//! when), and whether it is draining. It is also the one road from workers to the Ledger:
//! assignments and results pass through it in order, so the Ledger always learns of an
//! attempt's start before its result or its loss.

use crate::actors::ledger::{AttemptsStarted, Ledger, ReadFinishedJob, ResultsArrived, Started};
use crate::actors::queue::{PendingJob, PendingQueue};
use crate::actors::registry::{AttemptsEnded, Registry, WorkerDirectory};
use crate::actors::session::ToWorker;
use crate::ha::LeaseClock;
use crate::job::{
    now_ms, Assignment, AttemptResult, JobId, Lease, LeaseKey, LedgerId, ManifestOrder, Outcome,
    WorkerId,
};
use crate::status::CurrentJob;
use actix::prelude::*;
use std::collections::{BTreeMap, HashMap};

mod fleet;
mod hold;
mod loads;
mod slots;
mod waiting;
mod workers;

pub use fleet::{Demand, DrainIdle, FleetView, PoolWorker, Retire, ViewForFleet};
pub use hold::AttemptsReleased;
pub use loads::{CountLoads, ListLoads, LoadCount};
use slots::WorkerSlots;
pub use waiting::{blocker_among, Unplaceable, WaitingInLine, WhyWaiting};
pub use workers::{AttemptsAcknowledged, StopAssigning, WorkerGone, WorkerJoined};

/// Spec bytes per `Assign` frame, far below the frame limit (one spec alone is bounded by the
/// submission frame it came in).
const ASSIGN_FRAME_BYTES: usize = 4 * 1024 * 1024;
/// How often assignment held for the ledger's lease checks it again.
const LEASE_RECHECK: std::time::Duration = std::time::Duration::from_millis(50);
/// Bytes of manifest orders per `WriteManifests` frame.
const MANIFEST_FRAME_BYTES: usize = 4 * 1024 * 1024;

/// What a worker is doing, as the Scheduler knows it: the worker list joins this with the
/// Registry's part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerLoad {
    /// Slots it offers.
    pub slots: u32,
    /// True while it drains.
    pub draining: bool,
    /// What it runs, with since when, by job.
    pub current: Vec<CurrentJob>,
}

/// What became of a worker the Registry gave up on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Departure {
    /// Slots it offered.
    pub slots: u32,
    /// It was draining.
    pub draining: bool,
    /// Attempts it held, now lost.
    pub attempts: usize,
}

/// Matches pending jobs to free slots.
pub struct Scheduler {
    ledger: Addr<Ledger>,
    registry: Addr<Registry>,
    directory: WorkerDirectory,
    /// The ledger's id, which every assignment carries: outputs go under its directory.
    ledger_id: LedgerId,
    /// The ledger's lease key and this run's epoch: an attempt's lease is made from them, its
    /// job, number and worker, so a restarted coordinator can check it without the journal.
    lease_key: LeaseKey,
    epoch: u64,
    pending: PendingQueue,
    /// Ordered so assignment visits workers in a stable order.
    workers: BTreeMap<WorkerId, WorkerSlots>,
    dispatch_queued: bool,
    /// Turns of workers asked to write manifests.
    next_publisher: usize,
    /// Where the last dispatch pass started, so slots are filled round-robin across workers.
    next_first_worker: WorkerId,
    /// The ledger's lease: work is assigned only while it runs.
    lease: LeaseClock,
    /// Assignment waits for the lease to be renewed (said once in the log).
    paused: bool,
    /// Machines the fleet is terminating: a worker of one that registers takes nothing.
    retired: fleet::Retired,
}

impl Scheduler {
    /// A scheduler that reaches workers through `directory`, for the jobs of the ledger
    /// `ledger_id`, handing out leases made with `lease_key` in `epoch` while `lease` (the
    /// ledger's) runs.
    pub fn new(
        ledger: Addr<Ledger>,
        registry: Addr<Registry>,
        directory: WorkerDirectory,
        ledger_id: LedgerId,
        lease_key: LeaseKey,
        epoch: u64,
        lease: LeaseClock,
    ) -> Self {
        Scheduler {
            ledger,
            registry,
            directory,
            ledger_id,
            lease_key,
            epoch,
            pending: PendingQueue::default(),
            workers: BTreeMap::new(),
            dispatch_queued: false,
            next_publisher: 0,
            next_first_worker: 0,
            lease,
            paused: false,
            retired: fleet::Retired::default(),
        }
    }

    /// Holds assignment while the ledger's lease is not renewed: a leader that may have lost
    /// it must not hand out work another coordinator may hand out too. Checked again shortly.
    fn hold(&mut self, ctx: &mut Context<Self>) {
        if !self.paused {
            tracing::warn!(
                pending = self.pending.len(),
                "assignment paused: the ledger's lease is not renewed (the ledger database is \
                 slow or away, or another coordinator is taking over)"
            );
            self.paused = true;
        }
        self.dispatch_queued = true;
        ctx.run_later(LEASE_RECHECK, |scheduler, ctx| {
            scheduler.dispatch_queued = false;
            scheduler.queue_dispatch(ctx);
        });
    }

    /// Runs a dispatch pass once the messages already in the mailbox are handled, so a burst of
    /// events costs one pass. With nothing in line, a pass still asks back held attempts for
    /// workers that have slots free.
    fn queue_dispatch(&mut self, ctx: &mut Context<Self>) {
        let work = !self.pending.is_empty() || self.workers.values().any(|slots| slots.held() > 0);
        if !self.dispatch_queued && work {
            self.dispatch_queued = true;
            ctx.notify(Dispatch);
        }
    }

    /// Fills free slots, one job per worker per round so work spreads across the fleet; then,
    /// with jobs still in line, lets workers whose jobs are short hold some beyond their slots.
    /// Held attempts another worker could run now are asked back for it.
    fn dispatch(&mut self) {
        let now = now_ms();
        let mut assigned: HashMap<WorkerId, Vec<(Assignment, u16)>> = HashMap::new();
        self.fill(&mut assigned, false, now);
        if !self.pending.is_empty() {
            self.fill(&mut assigned, true, now);
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
                .map(|(assignment, entry)| Started {
                    job: assignment.job,
                    lease: assignment.lease,
                    attempt: assignment.attempt,
                    entry: *entry,
                })
                .collect::<Vec<_>>();
            self.ledger.do_send(AttemptsStarted {
                worker: slots.worker_ref(worker),
                started,
            });
            // Specs can be large: keep each frame well below the size limit.
            let mut frame = Vec::new();
            let mut frame_bytes = 0;
            for (assignment, _) in assignments {
                let size = assignment.spec.as_bytes().len();
                if !frame.is_empty() && frame_bytes + size > ASSIGN_FRAME_BYTES {
                    let full = std::mem::take(&mut frame);
                    self.directory.tell(worker, ToWorker::Assign(full));
                    frame_bytes = 0;
                }
                frame_bytes += size;
                frame.push(assignment);
            }
            self.directory.tell(worker, ToWorker::Assign(frame));
        }
        self.ask_back_for_idle();
    }

    /// One pass of assignment over the workers with room: free slots, or with `hold`, room to
    /// hold jobs beyond them.
    fn fill(
        &mut self,
        assigned: &mut HashMap<WorkerId, Vec<(Assignment, u16)>>,
        hold: bool,
        now: u64,
    ) {
        let mut active: Vec<WorkerId> = self
            .workers
            .range(self.next_first_worker..)
            .chain(self.workers.range(..self.next_first_worker))
            .filter(|(_, slots)| slots.has_room(hold))
            .map(|(id, _)| *id)
            .collect();
        while !active.is_empty() && !self.pending.is_empty() {
            active.retain(|worker| {
                let Some(slots) = self.workers.get_mut(worker) else {
                    return false;
                };
                // A held job starts once slots free: it must fit the worker, not its free slots.
                let room = if hold { slots.total } else { slots.free };
                let Some((job, shape)) = self.pending.pop_for(room, &slots.labels) else {
                    return false;
                };
                // Unique: a job's attempt number is handed out once per run.
                let lease = self
                    .lease_key
                    .lease(self.epoch, job.job, job.attempt, &slots.name);
                slots.assign(lease, job.job, shape, hold, now);
                let assignment = Assignment {
                    lease,
                    job: job.job,
                    batch: job.batch,
                    attempt: job.attempt,
                    spec: job.spec,
                    ledger: self.ledger_id,
                    epoch: self.epoch,
                };
                assigned
                    .entry(*worker)
                    .or_default()
                    .push((assignment, job.entry));
                slots.has_room(hold)
            });
        }
    }
}

impl Actor for Scheduler {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(hold::SWEEP, |scheduler, _ctx| scheduler.ask_back_stale());
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct Dispatch;

impl Handler<Dispatch> for Scheduler {
    type Result = ();

    fn handle(&mut self, _: Dispatch, ctx: &mut Context<Self>) {
        self.dispatch_queued = false;
        if !self.lease.is_valid() {
            return self.hold(ctx);
        }
        if self.paused {
            tracing::info!("assignment resumed: the ledger's lease is renewed");
            self.paused = false;
        }
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
        for (worker, slots) in &self.workers {
            let mine: Vec<Lease> = leases
                .iter()
                .copied()
                .filter(|lease| {
                    slots.running.contains_key(lease) || slots.carried.contains_key(lease)
                })
                .collect();
            if !mine.is_empty() {
                self.directory.tell(*worker, ToWorker::Kill(mine));
            }
        }
    }
}

/// A worker reported finished attempts (with its registration, or in frames of their own).
#[derive(Message)]
#[rtype(result = "()")]
pub struct ResultsReported {
    /// The worker's registration.
    pub worker: WorkerId,
    /// The results.
    pub results: Vec<AttemptResult>,
}

impl Handler<ResultsReported> for Scheduler {
    type Result = ();

    fn handle(&mut self, reported: ResultsReported, ctx: &mut Context<Self>) {
        let now = now_ms();
        let Some(slots) = self.workers.get_mut(&reported.worker) else {
            return;
        };
        let mut ended = Vec::with_capacity(reported.results.len());
        let mut successes_elsewhere = Vec::new();
        let mut forward = Vec::with_capacity(reported.results.len());
        let mut mismatched = Vec::new();
        for result in reported.results {
            let held = slots
                .running
                .get(&result.lease)
                .or_else(|| slots.carried.get(&result.lease))
                .copied();
            match held {
                Some(held) if held.job != result.job => {
                    // A lease names one job: a result that pairs them otherwise is refused,
                    // and the attempt stays running until its true result or its loss.
                    tracing::warn!(worker = %slots.name, lease = result.lease, claimed = result.job, job = held.job, "result names the wrong job, ignored");
                    mismatched.push(result.lease);
                    continue;
                }
                Some(held) => {
                    // A result frees its slots once: repeats of a result free nothing.
                    let carried = slots.carried.contains_key(&result.lease);
                    slots.release(result.lease, now);
                    slots.ran(result.duration_ms);
                    ended.push((result.outcome, result.duration_ms));
                    if carried && result.outcome == Outcome::Succeeded {
                        // Its job may be queued again meanwhile; the first success is recorded.
                        successes_elsewhere.push(held.job);
                    }
                }
                None if result.outcome == Outcome::Succeeded => {
                    // Not an attempt of this registration (an earlier one's, reported after a
                    // reconnect): its job may be queued again meanwhile, and must not start.
                    successes_elsewhere.push(result.job);
                }
                None => {}
            }
            // Whatever it is, the Ledger judges it: the first success of a job is recorded, and
            // an attempt that ended while the coordinator was down is its job's own.
            forward.push(result);
        }
        if !successes_elsewhere.is_empty() {
            self.pending.withdraw(successes_elsewhere);
        }
        if !mismatched.is_empty() {
            self.directory
                .tell(reported.worker, ToWorker::Acked(mismatched));
        }
        if !ended.is_empty() {
            self.registry.do_send(AttemptsEnded {
                worker: reported.worker,
                ended,
            });
        }
        if !forward.is_empty() {
            self.ledger.do_send(ResultsArrived {
                worker: slots.worker_ref(reported.worker),
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
        let candidates: Vec<WorkerId> = self
            .workers
            .iter()
            .filter(|(_, slots)| !slots.draining)
            .map(|(id, _)| *id)
            .collect();
        if candidates.is_empty() {
            return;
        }
        let chosen = candidates[self.next_publisher % candidates.len()];
        self.next_publisher = self.next_publisher.wrapping_add(1);
        // In frames well below the size limit (each order fits one: the Ledger gives up larger).
        let mut frame = Vec::new();
        let mut bytes = 0;
        for order in orders {
            let size = crate::actors::ledger::manifest_order_size(&order);
            if !frame.is_empty() && bytes + size > MANIFEST_FRAME_BYTES {
                self.directory
                    .tell(chosen, ToWorker::WriteManifests(std::mem::take(&mut frame)));
                bytes = 0;
            }
            bytes += size;
            frame.push(order);
        }
        if !frame.is_empty() {
            self.directory.tell(chosen, ToWorker::WriteManifests(frame));
        }
    }
}

/// Handed back to the Ledger as it is, behind every start the Scheduler sent it before.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Behind(pub ReadFinishedJob);

impl Handler<Behind> for Scheduler {
    type Result = ();

    fn handle(&mut self, Behind(read): Behind, _ctx: &mut Context<Self>) {
        self.ledger.do_send(read);
    }
}
