//! The job book: the Ledger's state and rules, with no I/O and no actors.
//!
//! It holds every unfinished job, every batch's counts, the attempts jobs are on, the jobs held
//! back after a restart and the manifests waited for. Each method takes one event (a batch
//! accepted, attempts started, results, a worker lost, attempts carried, a cancel, a retry, a
//! commit's outcome, the grace over, a manifest confirmed) and returns the [`Effects`] that must
//! follow: changes to commit, answers, jobs to queue, withdraw or kill, notices to workers. The
//! Ledger actor carries those out; nothing here waits, sends or writes.
//!
//! The rules, in short: the first success of a job is recorded, later ones are duplicates; a
//! failure of the current attempt is retried with backoff until `max_attempts`; an attempt lost
//! with its worker goes straight back to pending (a job lost with [`MAX_LOST_ATTEMPTS`] workers
//! is failed); a job's terminal state leaves memory only once it is on disk, and a commit that
//! fails puts its jobs back to pending. Times are given by the caller, in ms since the epoch.

mod attempts;
mod batches;
mod commits;
mod effects;
mod keys;
mod manifests;
mod results;
mod submit;
mod views;

#[cfg(test)]
mod model;
#[cfg(test)]
mod tests;

pub(crate) use batches::BatchCounts;
pub(crate) use effects::{Answer, Commit, Effects, Lookup, Notice, Pending};
pub use manifests::order_size as manifest_order_size;
pub use submit::MAX_SPEC_BYTES;

use crate::actors::ledger::error::LedgerError;
use crate::actors::ledger::stats::LedgerStats;
use crate::actors::queue::PendingJob;
use crate::job::{
    AttemptResult, BatchId, JobId, JobState, Lease, LeaseKey, LedgerId, SpecBytes, WorkerId,
};
use crate::metrics::Metrics;
use crate::storage::store::{Change, Replay, StoreError, WorkOrder};
use keys::Keyed;
use manifests::Manifests;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// A job lost with this many workers (each of which had started it) is failed: it is probably
/// what kills them.
pub const MAX_LOST_ATTEMPTS: u32 = 10;

/// A job lost this many times in all, whatever the workers, is failed too: one worker that dies
/// each time it runs the job (and is restarted) must not loop on it for ever.
const MAX_LOST_IN_ALL: u32 = 3 * MAX_LOST_ATTEMPTS;

/// The longest wait between attempts of a failing job.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// How long past its `timeout_s` an attempt may still report before the coordinator takes it
/// back: its worker enforces the timeout itself, then reports (the larger of 10 s and a tenth of
/// the timeout).
pub(crate) fn timeout_margin(timeout: Duration) -> Duration {
    (timeout / 10).max(Duration::from_secs(10))
}

/// The book's limits and policy.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    /// The wait before the second attempt of a failed job; doubled for each failure after.
    pub(crate) retry_backoff: Duration,
    /// The most jobs one batch may have.
    pub(crate) max_batch_jobs: usize,
    /// The most unfinished (pending or running) jobs held.
    pub(crate) max_unfinished_jobs: usize,
    /// The most bytes of unfinished jobs' specs held.
    pub(crate) max_unfinished_bytes: usize,
    /// The most bytes of one attempt's result kept: a longer one fails its attempt.
    pub(crate) max_result_bytes: usize,
}

/// A worker as the Ledger's events name it: its registration, where answers go, and its name,
/// for the records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerRef {
    /// The registration.
    pub id: WorkerId,
    /// The name it registered with.
    pub name: Arc<str>,
}

/// An attempt the Scheduler started: which turn in line of which job it took, under which lease
/// and number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Started {
    /// The job.
    pub job: JobId,
    /// The attempt's lease.
    pub lease: Lease,
    /// The attempt's number.
    pub attempt: u32,
    /// The job's turn in line it came from ([`PendingJob::entry`]).
    pub entry: u16,
}

/// An attempt a worker names as its own (carried, or reported on), as a claim on its job.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Claim {
    pub(crate) job: JobId,
    pub(crate) lease: Lease,
    pub(crate) attempt: u32,
    /// The coordinator's epoch the worker says it was handed out in.
    pub(crate) epoch: u64,
    pub(crate) started_at_ms: u64,
}

/// Whether, and how, an attempt took its job back after a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TakenBack {
    /// It did not.
    No,
    /// Its start was on record.
    OnRecord,
    /// Its start never reached the disk; its lease says it was handed out all the same.
    Unrecorded,
}

/// An attempt lost with its worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LostAttempt {
    /// The job.
    pub job: JobId,
    /// The attempt's lease.
    pub lease: Lease,
    /// The worker had said it started it (an assignment it never took is no sign against
    /// the job).
    pub started: bool,
}

/// Where an unfinished job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// In the Scheduler's queue (or held back after a restart).
    Queued,
    /// Waiting out its retry backoff.
    Backoff,
    /// On a worker.
    Running,
    /// Its terminal state is being written; it leaves memory on commit.
    Finishing,
}

impl Phase {
    /// True while the job counts as pending (rather than running).
    fn waiting(self) -> bool {
        matches!(self, Phase::Queued | Phase::Backoff)
    }
}

/// An unfinished job. Kept small: a million pending jobs are a million of these.
#[derive(Debug)]
pub(crate) struct LiveJob {
    pub(crate) spec: SpecBytes,
    pub(crate) batch: BatchId,
    /// The current attempt, while one runs (and while its result is being recorded).
    pub(crate) running: Option<Box<RunningAttempt>>,
    pub(crate) phase: Phase,
    /// The highest attempt number spent.
    pub(crate) attempts: u32,
    pub(crate) failures: u32,
    pub(crate) lost: u32,
    /// It was in line when it began finishing: its entry may have been handed to a worker.
    pub(crate) left_line: bool,
    /// Which of its turns in line is the current one (see [`PendingJob::entry`]).
    pub(crate) queued_as: u16,
}

/// The attempt a job is on.
#[derive(Debug)]
pub(crate) struct RunningAttempt {
    pub(crate) lease: Lease,
    /// Its number (the job's `attempts` is the highest number spent, which may be later).
    pub(crate) attempt: u32,
    pub(crate) started_at_ms: u64,
    pub(crate) worker: Arc<str>,
}

impl LiveJob {
    fn queued(spec: SpecBytes, batch: BatchId, attempts: u32, failures: u32, lost: u32) -> LiveJob {
        LiveJob {
            spec,
            batch,
            running: None,
            phase: Phase::Queued,
            attempts,
            failures,
            lost,
            left_line: false,
            queued_as: 0,
        }
    }

    /// Its state as clients are told it: one whose terminal state is being written still runs.
    fn state(&self) -> JobState {
        if self.phase.waiting() {
            JobState::Pending
        } else {
            JobState::Running
        }
    }

    /// Its terminal state is being written from now on.
    fn begin_finishing(&mut self) {
        self.left_line = self.phase == Phase::Queued;
        self.phase = Phase::Finishing;
    }

    /// True when `lease` is the attempt this job is on (or whose result is being recorded).
    fn runs_or_ran(&self, lease: Lease) -> bool {
        self.running
            .as_ref()
            .is_some_and(|running| running.lease == lease)
    }

    /// True when `lease` is the attempt running now.
    fn runs(&self, lease: Lease) -> bool {
        self.phase == Phase::Running && self.runs_or_ran(lease)
    }

    fn worker_name(&self) -> Option<String> {
        self.running
            .as_ref()
            .map(|running| running.worker.to_string())
    }

    /// Counts `number` as spent by an attempt this run did not start (carried through a
    /// reconnect, or reported after one): at most one past the highest known, so a worker's
    /// word can leave a gap in the numbers but never push them to the end.
    fn spend(&mut self, number: u32) {
        self.attempts = self
            .attempts
            .max(number.min(self.attempts.saturating_add(1)));
    }

    fn max_attempts(&self) -> u32 {
        self.spec
            .placement()
            .map_or(1, |placement| placement.max_attempts)
    }

    /// When the coordinator looks again at an attempt of this job that started now: its
    /// timeout and the margin, if it has a timeout.
    fn deadline(&self) -> Option<Duration> {
        let timeout = Duration::from_secs(self.spec.placement().ok()?.timeout_s?.into());
        Some(timeout + timeout_margin(timeout))
    }
}

/// The Ledger's state and rules.
pub(crate) struct Book {
    limits: Limits,
    /// The ledger's id: its jobs' outputs go under its directory.
    ledger: LedgerId,
    /// The ledger's lease key and this run's epoch: an attempt of an earlier run whose start
    /// never reached the disk is known by its lease (see [`Book::unrecorded_start`]).
    lease_key: LeaseKey,
    epoch: u64,
    jobs: HashMap<JobId, LiveJob>,
    batches: BTreeMap<BatchId, BatchCounts>,
    next_job: JobId,
    next_batch: BatchId,
    /// Jobs of submissions being written, counted against the pending limit.
    reserved: usize,
    /// Bytes of the specs of unfinished jobs held, and of submissions being written.
    unfinished_bytes: usize,
    reserved_bytes: usize,
    /// Replayed jobs not yet queued: they wait out the reconnect grace after a restart.
    held_back: HashSet<JobId>,
    /// Batches whose retry is being read or written.
    retrying: HashSet<BatchId>,
    /// Jobs whose retry of their own is being read or written, each true once a retry of its
    /// batch has reopened it meanwhile (what that read found is out of date).
    retrying_jobs: HashMap<JobId, bool>,
    manifests: Manifests,
    /// The workers each job was lost with (having started it), for jobs that were.
    lost_on: HashMap<JobId, Vec<Arc<str>>>,
    /// Attempts of live jobs that are no longer current but may still report (their worker
    /// was lost, or they were stopped), with the worker each went to: only these, and each
    /// job's current attempt, may report a result.
    stale: HashMap<JobId, Vec<(Lease, Arc<str>)>>,
    /// The latest attempt each replayed job started before the restart, as the store says:
    /// the one attempt that may take the job back during the grace.
    started_before: HashMap<JobId, (Lease, Arc<str>)>,
    duplicates: u64,
    stats: LedgerStats,
    /// Every idempotency key of the ledger, with its batch.
    keys: HashMap<Arc<str>, Keyed>,
    /// Where finished jobs' records go in recording order.
    cursors: Cursors,
}

/// Draws the cursors of finished jobs' records: each one more than the last drawn, so they
/// grow in the order their commits are asked for, which is the order they reach the disk. A
/// commit that fails leaves a gap, which followers skip.
#[derive(Debug)]
pub(crate) struct Cursors {
    last: u64,
}

impl Cursors {
    /// The next cursor.
    pub(crate) fn draw(&mut self) -> u64 {
        self.last += 1;
        self.last
    }
}

impl Book {
    /// The id the next job submitted gets.
    pub(crate) fn next_job(&self) -> JobId {
        self.next_job
    }

    /// A book holding what the store replayed.
    pub(crate) fn new(replay: Replay, limits: Limits, metrics: Arc<Metrics>) -> Book {
        let keys = replay
            .batches
            .iter()
            .filter_map(|batch| {
                let key = batch.idempotency_key.clone()?;
                let written = Keyed::Written {
                    batch: batch.id,
                    first_job: None,
                };
                Some((key, written))
            })
            .collect();
        let mut batches: BTreeMap<BatchId, BatchCounts> = replay
            .batches
            .into_iter()
            .map(|batch| {
                let finished = batch.succeeded + batch.failed + batch.cancelled;
                let counts = BatchCounts {
                    total: batch.total,
                    pending: batch.total.saturating_sub(finished),
                    succeeded: batch.succeeded,
                    failed: batch.failed,
                    cancelled: batch.cancelled,
                    started_at_ms: batch.started_at_ms,
                    finished_at_ms: (finished == batch.total)
                        .then_some(batch.finished_at_ms)
                        .flatten(),
                    ..BatchCounts::new(batch.name, batch.submitted_at_ms)
                };
                (batch.id, counts)
            })
            .collect();
        let mut jobs = HashMap::with_capacity(replay.unfinished.len());
        let mut lost_on = HashMap::new();
        let mut started_before = HashMap::new();
        let unfinished_bytes = replay
            .unfinished
            .iter()
            .map(|job| job.spec.as_bytes().len())
            .sum();
        for job in replay.unfinished {
            if let Some((lease, worker)) = &job.started {
                started_before.insert(job.id, (*lease, Arc::from(worker.as_str())));
            }
            if !job.lost_on.is_empty() {
                lost_on.insert(
                    job.id,
                    job.lost_on
                        .iter()
                        .map(|name| Arc::from(name.as_str()))
                        .collect(),
                );
            }
            batches
                .entry(job.batch)
                .or_insert_with(|| BatchCounts::new(String::new(), 0));
            jobs.insert(
                job.id,
                LiveJob::queued(
                    job.spec,
                    job.batch,
                    job.attempts,
                    job.failures,
                    job.lost_attempts,
                ),
            );
        }
        let next_batch = batches.keys().next_back().map_or(1, |last| last + 1);
        Book {
            limits,
            ledger: replay.ledger,
            lease_key: replay.lease_key,
            epoch: replay.epoch,
            jobs,
            batches,
            next_job: replay.next_job,
            next_batch,
            reserved: 0,
            unfinished_bytes,
            reserved_bytes: 0,
            held_back: HashSet::new(),
            retrying: HashSet::new(),
            retrying_jobs: HashMap::new(),
            manifests: Manifests::replayed(replay.unpublished, replay.ledger),
            lost_on,
            stale: HashMap::new(),
            started_before,
            duplicates: 0,
            stats: LedgerStats::new(metrics),
            keys,
            cursors: Cursors {
                last: replay.last_cursor,
            },
        }
    }

    /// The replayed jobs, queued at once or, with `hold_back`, held for the reconnect grace
    /// (some may still run on workers that are reconnecting). Returns whether any are held.
    pub(crate) fn start(&mut self, hold_back: bool) -> (Effects, bool) {
        let mut replayed: Vec<PendingJob> = self
            .jobs
            .iter_mut()
            .map(|(id, job)| line_up(*id, job))
            .collect();
        replayed.sort_by_key(|job| job.job);
        if hold_back {
            self.held_back = replayed.iter().map(|job| job.job).collect();
            return (Effects::none(), !self.held_back.is_empty());
        }
        let effects = Effects {
            enqueue: replayed,
            ..Effects::none()
        };
        (effects, false)
    }

    /// Moves a job's count from one column to another.
    fn recount(&mut self, batch: BatchId, from: Phase, to: Phase) {
        let Some(counts) = self.batches.get_mut(&batch) else {
            return;
        };
        match (from == Phase::Backoff, to == Phase::Backoff) {
            (true, false) => counts.backoff = counts.backoff.saturating_sub(1),
            (false, true) => counts.backoff += 1,
            _ => {}
        }
        match (from.waiting(), to.waiting()) {
            (true, false) => {
                counts.pending = counts.pending.saturating_sub(1);
                counts.running += 1;
            }
            (false, true) => {
                counts.running = counts.running.saturating_sub(1);
                counts.pending += 1;
            }
            _ => {}
        }
    }

    /// A job's terminal state is being written: it shows under that state from now on.
    fn recording(&mut self, batch: BatchId, state: JobState) {
        if let Some(counts) = self.batches.get_mut(&batch) {
            counts.recording(state);
        }
    }

    /// An attempt of a live job that is no longer its current one, but may still report.
    fn keep_stale(&mut self, job: JobId, lease: Lease, worker: Arc<str>) {
        let stale = self.stale.entry(job).or_default();
        if !stale.iter().any(|(known, _)| *known == lease) {
            stale.push((lease, worker));
        }
    }

    /// True when `worker` may report on this attempt of a live job: the job's current attempt,
    /// gone to that worker, or an earlier one that went to it and may still report. Leases
    /// cannot be guessed; this also keeps a worker from reporting on another's attempt.
    fn vouched(&self, id: JobId, lease: Lease, worker: &str) -> bool {
        let current = self.jobs.get(&id).and_then(|job| job.running.as_ref());
        if current.is_some_and(|running| running.lease == lease && &*running.worker == worker) {
            return true;
        }
        self.stale.get(&id).is_some_and(|stale| {
            stale
                .iter()
                .any(|(known, to)| *known == lease && &**to == worker)
        })
    }

    /// True when an attempt a worker names is one an earlier run of this coordinator handed to
    /// that worker, and whose start the ledger never heard of (it had not reached the disk when
    /// the coordinator died): its lease is the one the ledger's key makes for that epoch, job,
    /// number and worker, the epoch is past, and the number is above every one known for the
    /// job (so no attempt since has carried it).
    fn unrecorded_start(
        &self,
        id: JobId,
        lease: Lease,
        attempt: u32,
        epoch: u64,
        worker: &str,
    ) -> bool {
        let Some(job) = self.jobs.get(&id) else {
            return false;
        };
        epoch < self.epoch
            && attempt > job.attempts
            && self.lease_key.verifies(lease, epoch, id, attempt, worker)
    }

    /// An attempt a worker names, which the book does not hear (not the job's, nor one it may
    /// still hear from), may have run under its number all the same if this coordinator handed
    /// it out (in an earlier run, whose record of it was lost): if its lease says so, no later
    /// attempt takes that number. A made-up one spends nothing.
    fn spend_if_issued(&mut self, claim: &Claim, worker: &str) {
        let issued = claim.epoch <= self.epoch
            && self
                .lease_key
                .verifies(claim.lease, claim.epoch, claim.job, claim.attempt, worker);
        if let (true, Some(job)) = (issued, self.jobs.get_mut(&claim.job)) {
            job.attempts = job.attempts.max(claim.attempt);
        }
    }

    /// An earlier attempt reported: it is heard from for the last time.
    fn forget_stale(&mut self, id: JobId, lease: Lease) {
        if let Some(stale) = self.stale.get_mut(&id) {
            stale.retain(|(known, _)| *known != lease);
            if stale.is_empty() {
                self.stale.remove(&id);
            }
        }
    }

    /// Hands a job to the Scheduler's queue. A job held back since the restart stays held until
    /// the grace ends or an attempt of it is taken back: it may still run on a worker that is on
    /// its way back.
    fn enqueue(&mut self, id: JobId, effects: &mut Effects) {
        if !self.held_back.is_empty() && self.held_back.contains(&id) {
            return;
        }
        if let Some(job) = self.jobs.get_mut(&id) {
            effects.enqueue.push(line_up(id, job));
        }
    }
}

/// The wait after a job's `failures`-th failure: the first backoff, doubled for each failure
/// after the first, up to [`MAX_BACKOFF`].
fn backoff(first: Duration, failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(20);
    first.saturating_mul(1 << doublings).min(MAX_BACKOFF)
}

/// Bytes of a batch's encoded specs.
fn spec_bytes(jobs: &[(Option<String>, SpecBytes)]) -> usize {
    jobs.iter().map(|(_, spec)| spec.as_bytes().len()).sum()
}

/// A live job's next turn in line, as the Scheduler's queue takes it: its attempt's number is
/// the next unspent, and the turn is the job's current one from now on.
fn line_up(id: JobId, job: &mut LiveJob) -> PendingJob {
    job.queued_as = job.queued_as.wrapping_add(1);
    PendingJob {
        job: id,
        batch: job.batch,
        attempt: job.attempts.saturating_add(1),
        entry: job.queued_as,
        spec: job.spec.clone(),
        ahead: false,
    }
}

/// A job's terminal record, from the result that decided it (if one did), at its place in
/// recording order.
fn work_order(
    id: JobId,
    job: &LiveJob,
    (state, cursor): (JobState, u64),
    result: Option<&AttemptResult>,
    error: Option<String>,
    now: u64,
) -> Change {
    Change::Finish(Box::new(WorkOrder {
        job: id,
        state,
        lease: result.map(|result| result.lease),
        worker: job.worker_name(),
        attempts: job.attempts,
        lost_attempts: job.lost,
        failures: job.failures,
        started_at_ms: result.map(|result| result.started_at_ms),
        finished_at_ms: now,
        duration_ms: result.map(|result| result.duration_ms),
        exit_code: result.and_then(|result| result.exit_code),
        output_tail: result.map(|result| result.output_tail.clone()),
        // An attempt that returned nothing has no result.
        result: result
            .filter(|result| !result.result.is_empty())
            .map(|result| Arc::from(result.result.as_slice())),
        cursor,
        error: error.or_else(|| result.and_then(|result| result.error.clone())),
        outputs: result
            .filter(|result| !result.outputs.is_empty())
            .and_then(|result| serde_json::to_string(&result.outputs).ok()),
    }))
}
