//! The Ledger actor: the source of truth for jobs.
//!
//! It holds every unfinished job in memory, sends every change that must survive a crash to the
//! journal, and acts on it only once the journal says it is on disk: a submission is acknowledged,
//! a result is acknowledged to its worker, a finished job leaves memory. It decides what a result
//! means: the first success of a job is recorded, later ones are duplicates; a failure of the
//! current attempt is retried with backoff until `max_attempts`; an attempt lost with its worker
//! goes straight back to pending.
//!
//! Client requests are served in `ledger_client.rs`.

use crate::actors::ledger_stats::LedgerStats;
use crate::actors::queue::PendingJob;
use crate::actors::scheduler::{Enqueue, KillAttempts, PublishManifests, Scheduler, Withdraw};
use crate::actors::session::{Push, Session};
use crate::job::{now_ms, AttemptResult, BatchId, JobId, JobState, Lease, Outcome, SpecBytes};
use crate::metrics::Metrics;
use crate::net::protocol::{CarriedAttempt, FromCoordinator, ManifestOrder};
use crate::status::{BatchInfo, FailureInfo, JobCounts, JobStatistics};
use crate::storage::journal::{AttemptRow, Journal, JournalError, Replay, WorkOrder, Write};
use crate::storage::queries;
use actix::prelude::*;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// A job lost with this many workers is failed: it is probably what kills them.
pub const MAX_LOST_ATTEMPTS: u32 = 10;

/// The longest wait between attempts of a failing job.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Where an unfinished job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// In the Scheduler's queue.
    Queued,
    /// Waiting out its retry backoff.
    Backoff,
    /// On a worker.
    Running,
    /// Its terminal state is being written; it leaves memory on commit.
    Finishing,
}

/// An unfinished job. Kept small: a million pending jobs are a million of these.
pub(crate) struct LiveJob {
    pub(crate) spec: SpecBytes,
    pub(crate) batch: BatchId,
    /// The current attempt, while one runs (and while its result is being recorded).
    pub(crate) running: Option<Box<RunningAttempt>>,
    pub(crate) phase: Phase,
    pub(crate) attempts: u32,
    pub(crate) failures: u32,
    pub(crate) lost: u32,
}

/// The attempt a job is on.
pub(crate) struct RunningAttempt {
    pub(crate) lease: Lease,
    /// Its number (the job's `attempts` is the highest number spent, which may be later).
    pub(crate) attempt: u32,
    pub(crate) started_at_ms: u64,
    pub(crate) worker: Arc<str>,
}

impl LiveJob {
    /// A job waiting in the queue.
    pub(crate) fn queued(
        spec: SpecBytes,
        batch: BatchId,
        attempts: u32,
        failures: u32,
        lost: u32,
    ) -> LiveJob {
        LiveJob {
            spec,
            batch,
            running: None,
            phase: Phase::Queued,
            attempts,
            failures,
            lost,
        }
    }

    /// True when `lease` is the attempt this job is on (or whose result is being recorded).
    fn runs_or_ran(&self, lease: Lease) -> bool {
        self.running
            .as_ref()
            .is_some_and(|running| running.lease == lease)
    }

    /// True when `lease` is the attempt running now.
    fn runs(&self, lease: Lease) -> bool {
        self.phase == Phase::Running
            && self
                .running
                .as_ref()
                .is_some_and(|running| running.lease == lease)
    }

    pub(crate) fn worker_name(&self) -> Option<String> {
        self.running
            .as_ref()
            .map(|running| running.worker.to_string())
    }

    fn max_attempts(&self) -> u32 {
        self.spec
            .placement()
            .map_or(1, |placement| placement.max_attempts)
    }
}

/// A batch's counts; running includes jobs whose terminal state is not yet on disk.
pub(crate) struct BatchCounts {
    pub(crate) name: String,
    pub(crate) submitted_at_ms: u64,
    pub(crate) total: u64,
    pub(crate) pending: u64,
    pub(crate) running: u64,
    pub(crate) succeeded: u64,
    pub(crate) failed: u64,
    pub(crate) cancelled: u64,
    /// When its first attempt started.
    pub(crate) started_at_ms: Option<u64>,
    /// When it was last seen done; cleared when a retry reopens it.
    pub(crate) finished_at_ms: Option<u64>,
    /// Where its rate is measured from: (when, jobs finished by then). Set by the first start
    /// after submission, restart or retry, so neither a restart's gap nor a day between a run
    /// and its retry counts as time spent.
    pub(crate) rate_from: Option<(u64, u64)>,
}

impl BatchCounts {
    /// A batch with nothing counted yet.
    pub(crate) fn new(name: String, submitted_at_ms: u64) -> BatchCounts {
        BatchCounts {
            name,
            submitted_at_ms,
            total: 0,
            pending: 0,
            running: 0,
            succeeded: 0,
            failed: 0,
            cancelled: 0,
            started_at_ms: None,
            finished_at_ms: None,
            rate_from: None,
        }
    }

    pub(crate) fn info(&self, id: BatchId) -> BatchInfo {
        let done = self.pending == 0 && self.running == 0;
        let finished = self.succeeded + self.failed + self.cancelled;
        let end_ms = match self.finished_at_ms {
            Some(finished_at_ms) if done => finished_at_ms,
            _ => now_ms(),
        };
        let jobs_per_s = match self.rate_from {
            Some((since_ms, base)) if end_ms > since_ms => {
                finished.saturating_sub(base) as f64 * 1000.0 / (end_ms - since_ms) as f64
            }
            _ => 0.0,
        };
        let left = self.pending + self.running;
        let eta_s = (!done && jobs_per_s > 0.0).then(|| (left as f64 / jobs_per_s).ceil() as u64);
        BatchInfo {
            id,
            name: self.name.clone(),
            total: self.total,
            pending: self.pending,
            running: self.running,
            succeeded: self.succeeded,
            failed: self.failed,
            cancelled: self.cancelled,
            done,
            submitted_at_ms: self.submitted_at_ms,
            started_at_ms: self.started_at_ms,
            finished_at_ms: self.finished_at_ms.filter(|_| done),
            jobs_per_s,
            eta_s,
        }
    }

    /// True while some job of the batch waits or runs.
    fn unfinished(&self) -> bool {
        self.pending > 0 || self.running > 0
    }

    fn count_terminal(&mut self, state: JobState) {
        match state {
            JobState::Succeeded => self.succeeded += 1,
            JobState::Failed => self.failed += 1,
            JobState::Cancelled => self.cancelled += 1,
            JobState::Pending | JobState::Running => {}
        }
    }
}

/// Tunables of the Ledger.
#[derive(Debug, Clone)]
pub struct LedgerConfig {
    /// The wait before the second attempt of a failed job; doubled for each failure after.
    pub retry_backoff: Duration,
    /// Where job counters and timings are exported.
    pub metrics: Arc<Metrics>,
    /// The most jobs one batch may have.
    pub max_batch_jobs: usize,
    /// The most unfinished (pending or running) jobs held; a submission that would pass it is
    /// refused with "queue full".
    pub max_unfinished_jobs: usize,
    /// After a restart, how long the replayed unfinished jobs wait before they are queued, so
    /// workers can reconnect and report the attempts they kept running: those are taken back
    /// as they are, not started again under the same number. Zero queues them at once.
    pub reconnect_grace: Duration,
}

/// The default of [`LedgerConfig::max_unfinished_jobs`]: about 1.3 GiB of coordinator memory.
pub const DEFAULT_MAX_UNFINISHED_JOBS: usize = 5_000_000;

impl Default for LedgerConfig {
    fn default() -> Self {
        LedgerConfig {
            retry_backoff: Duration::from_secs(1),
            metrics: Arc::new(Metrics::new()),
            max_batch_jobs: crate::actors::ledger_client::MAX_JOBS_PER_BATCH,
            max_unfinished_jobs: DEFAULT_MAX_UNFINISHED_JOBS,
            reconnect_grace: Duration::ZERO,
        }
    }
}

/// Unfinished batches listed as the busiest in a status.
const BUSIEST_BATCHES: usize = 5;

/// The source of truth for jobs.
pub struct Ledger {
    pub(crate) journal: Journal,
    pub(crate) scheduler: Addr<Scheduler>,
    config: LedgerConfig,
    pub(crate) jobs: HashMap<JobId, LiveJob>,
    pub(crate) batches: BTreeMap<BatchId, BatchCounts>,
    pub(crate) next_job: JobId,
    pub(crate) next_batch: BatchId,
    pub(crate) waiters: HashMap<BatchId, Vec<oneshot::Sender<BatchInfo>>>,
    duplicates: u64,
    /// Recorded attempts whose manifest no worker has confirmed writing, by lease.
    unpublished: HashMap<Lease, PendingManifest>,
    pub(crate) stats: LedgerStats,
    /// Jobs of submissions being written, counted against the pending limit.
    pub(crate) reserved: usize,
    /// Replayed jobs not yet queued: they wait out the reconnect grace after a restart.
    held_back: HashSet<JobId>,
}

/// A manifest to be written, and when it was last asked for.
struct PendingManifest {
    order: ManifestOrder,
    asked_at: Instant,
}

/// A manifest not confirmed this long after it was asked for is asked of another worker.
const MANIFEST_REPAIR_AFTER: Duration = Duration::from_secs(5);

impl Ledger {
    /// A ledger holding what the journal replayed.
    pub fn new(
        journal: Journal,
        replay: Replay,
        scheduler: Addr<Scheduler>,
        config: LedgerConfig,
    ) -> Self {
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
        for job in replay.unfinished {
            batches
                .entry(job.batch)
                .or_insert_with(|| BatchCounts::new(String::new(), job.queued_at_ms));
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
        // Found on disk unconfirmed: ask for them as soon as a worker is there.
        let long_ago = Instant::now()
            .checked_sub(MANIFEST_REPAIR_AFTER)
            .unwrap_or_else(Instant::now);
        let unpublished = replay
            .unpublished
            .into_iter()
            .filter_map(|found| {
                let outputs = found.spec.decode().ok()?.outputs?;
                let objects = serde_json::from_str(&found.objects).ok()?;
                let order = ManifestOrder {
                    job: found.job,
                    lease: found.lease,
                    outputs,
                    objects,
                };
                Some((
                    found.lease,
                    PendingManifest {
                        order,
                        asked_at: long_ago,
                    },
                ))
            })
            .collect();
        Ledger {
            journal,
            scheduler,
            stats: LedgerStats::new(config.metrics.clone()),
            reserved: 0,
            config,
            jobs,
            batches,
            next_job: replay.next_job,
            next_batch,
            waiters: HashMap::new(),
            duplicates: 0,
            unpublished,
            held_back: HashSet::new(),
        }
    }

    /// The submission limits.
    pub(crate) fn limits(&self) -> &LedgerConfig {
        &self.config
    }

    /// Writes `writes` and, once they are on disk (or failed), runs `then` on the actor.
    pub(crate) fn commit(
        &self,
        ctx: &mut Context<Self>,
        writes: Vec<Write>,
        then: impl FnOnce(&mut Ledger, &mut Context<Ledger>, Result<(), JournalError>) + Send + 'static,
    ) {
        let ledger = ctx.address();
        self.journal.commit(writes, move |result| {
            ledger.do_send(AfterCommit(Box::new(move |actor, ctx| {
                then(actor, ctx, result)
            })));
        });
    }

    pub(crate) fn pending_job(&self, id: JobId, job: &LiveJob) -> PendingJob {
        PendingJob {
            job: id,
            batch: job.batch,
            attempt: job.attempts.saturating_add(1),
            spec: job.spec.clone(),
        }
    }

    /// Moves a job's count from one column to another.
    pub(crate) fn recount(&mut self, batch: BatchId, from: Phase, to: Phase) {
        let Some(counts) = self.batches.get_mut(&batch) else {
            return;
        };
        let waiting = |phase: Phase| matches!(phase, Phase::Queued | Phase::Backoff);
        match (waiting(from), waiting(to)) {
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

    /// Jobs whose terminal state is on disk leave memory; waiters on finished batches are told.
    pub(crate) fn finished(&mut self, jobs: Vec<(JobId, JobState)>) {
        let mut touched = Vec::new();
        let (mut succeeded, mut failed, mut cancelled) = (0, 0, 0);
        for (id, state) in jobs {
            let Some(job) = self.jobs.remove(&id) else {
                continue;
            };
            match state {
                JobState::Succeeded => succeeded += 1,
                JobState::Failed => failed += 1,
                JobState::Cancelled => cancelled += 1,
                JobState::Pending | JobState::Running => {}
            }
            if let Some(counts) = self.batches.get_mut(&job.batch) {
                counts.running = counts.running.saturating_sub(1);
                counts.count_terminal(state);
            }
            touched.push(job.batch);
        }
        self.stats.jobs_finished(JobState::Succeeded, succeeded);
        self.stats.jobs_finished(JobState::Failed, failed);
        self.stats.jobs_finished(JobState::Cancelled, cancelled);
        touched.dedup();
        for batch in touched {
            self.wake_waiters(batch);
        }
    }

    /// Notes when a batch is done and tells whoever waits for it.
    pub(crate) fn wake_waiters(&mut self, batch: BatchId) {
        let Some(counts) = self.batches.get_mut(&batch) else {
            return;
        };
        if counts.unfinished() {
            return;
        }
        counts.finished_at_ms.get_or_insert_with(now_ms);
        let info = counts.info(batch);
        for waiter in self.waiters.remove(&batch).unwrap_or_default() {
            let _ = waiter.send(info.clone());
        }
    }

    fn backoff(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(20);
        self.config
            .retry_backoff
            .saturating_mul(1 << doublings)
            .min(MAX_BACKOFF)
    }

    /// After the backoff the job rejoins the queue, unless it was cancelled meanwhile.
    fn retry_later(&mut self, ctx: &mut Context<Self>, id: JobId, delay: Duration) {
        ctx.run_later(delay, move |ledger, _ctx| {
            let Some(job) = ledger.jobs.get_mut(&id) else {
                return;
            };
            if job.phase != Phase::Backoff {
                return;
            }
            job.phase = Phase::Queued;
            let pending = ledger.pending_job(id, &ledger.jobs[&id]);
            ledger.enqueue(vec![pending]);
        });
    }

    fn work_order(
        id: JobId,
        job: &LiveJob,
        state: JobState,
        result: Option<&AttemptResult>,
        error: Option<String>,
    ) -> Write {
        Write::Finish(Box::new(WorkOrder {
            job: id,
            state,
            lease: result.map(|result| result.lease),
            worker: job.worker_name(),
            attempts: job.attempts,
            lost_attempts: job.lost,
            failures: job.failures,
            started_at_ms: result.map(|result| result.started_at_ms),
            finished_at_ms: now_ms(),
            duration_ms: result.map(|result| result.duration_ms),
            exit_code: result.and_then(|result| result.exit_code),
            output_tail: result.map(|result| result.output_tail.clone()),
            error: error.or_else(|| result.and_then(|result| result.error.clone())),
            outputs: result
                .filter(|result| !result.outputs.is_empty())
                .and_then(|result| serde_json::to_string(&result.outputs).ok()),
        }))
    }

    /// Successes for jobs that already finished: a resend of the recorded result is answered
    /// `Recorded` again (its worker may not have heard), any other is a duplicate.
    fn settle_late_successes(
        &mut self,
        ctx: &mut Context<Self>,
        late: Vec<(JobId, Lease)>,
        session: Addr<Session>,
        worker: Arc<str>,
    ) {
        let journal = self.journal.clone();
        let jobs: Vec<JobId> = late.iter().map(|(job, _)| *job).collect();
        let lookup = async move {
            journal
                .read(move |conn| queries::recorded_leases(conn, &jobs))
                .await
        };
        ctx.spawn(lookup.into_actor(self).map(move |found, ledger, ctx| {
            let recorded = found.unwrap_or_default();
            let mut again = Vec::new();
            let mut acked = Vec::new();
            let mut duplicates = Vec::new();
            for (job, lease) in late {
                if recorded.get(&job) == Some(&lease) {
                    again.push(lease);
                } else {
                    tracing::info!(job, lease, %worker, "late result for a finished job acknowledged, not recorded");
                    acked.push(lease);
                    duplicates.push((job, lease));
                }
            }
            if !again.is_empty() {
                session.do_send(Push(FromCoordinator::Recorded(again)));
            }
            if !acked.is_empty() {
                session.do_send(Push(FromCoordinator::Acked(acked)));
            }
            if !duplicates.is_empty() {
                ledger.duplicates += duplicates.len() as u64;
                ledger.commit(ctx, vec![Write::Duplicates(duplicates)], |_, _, result| {
                    if let Err(error) = result {
                        tracing::warn!(%error, "cannot count duplicate results");
                    }
                });
            }
        }));
    }

    /// Asks some worker to write the manifests their own workers did not confirm (one that died
    /// right after its result was recorded, say). Writing a manifest twice is harmless.
    fn repair_manifests(&mut self) {
        let now = Instant::now();
        let due: Vec<ManifestOrder> = self
            .unpublished
            .values_mut()
            .filter(|pending| now.duration_since(pending.asked_at) >= MANIFEST_REPAIR_AFTER)
            .map(|pending| {
                pending.asked_at = now;
                pending.order.clone()
            })
            .collect();
        if !due.is_empty() {
            tracing::info!(
                manifests = due.len(),
                "asking a worker to write unconfirmed manifests"
            );
            self.scheduler.do_send(PublishManifests(due));
        }
    }

    /// Puts jobs whose terminal write failed back in the queue, so nothing is lost; their
    /// results were not acknowledged, so the workers report them again.
    pub(crate) fn unfinish(&mut self, jobs: Vec<(JobId, JobState)>) {
        let mut requeue = Vec::new();
        for (id, _) in jobs {
            let Some(job) = self.jobs.get_mut(&id) else {
                continue;
            };
            job.phase = Phase::Queued;
            let batch = job.batch;
            self.recount(batch, Phase::Running, Phase::Queued);
            requeue.push(self.pending_job(id, &self.jobs[&id]));
        }
        if !requeue.is_empty() {
            self.enqueue(requeue);
        }
    }

    /// Gives a job held back since the restart to an attempt that ran through it, if the job
    /// still waits and the attempt is its latest: the job runs once, not twice, and no later
    /// attempt carries that number. Returns whether it did.
    fn take_back(
        &mut self,
        id: JobId,
        lease: Lease,
        attempt: u32,
        started_at_ms: u64,
        worker: &Arc<str>,
    ) -> bool {
        // Checked for every result: the common case, nothing held back, costs no hashing.
        if self.held_back.is_empty() || !self.held_back.contains(&id) {
            return false;
        }
        let Some(job) = self.jobs.get_mut(&id) else {
            return false;
        };
        if job.phase != Phase::Queued || attempt < job.attempts {
            return false;
        }
        self.held_back.remove(&id);
        job.phase = Phase::Running;
        job.attempts = attempt;
        job.running = Some(Box::new(RunningAttempt {
            lease,
            attempt,
            started_at_ms,
            worker: worker.clone(),
        }));
        let batch = job.batch;
        self.recount(batch, Phase::Queued, Phase::Running);
        self.batch_started(batch, now_ms());
        true
    }

    /// Notes that a batch has a job running: its first start, and where its rate counts from.
    fn batch_started(&mut self, batch: BatchId, now: u64) {
        if let Some(counts) = self.batches.get_mut(&batch) {
            counts.started_at_ms.get_or_insert(now);
            let finished = counts.succeeded + counts.failed + counts.cancelled;
            counts.rate_from.get_or_insert((now, finished));
        }
    }

    /// Hands jobs to the Scheduler's queue; a job held back since the restart is held no more.
    pub(crate) fn enqueue(&mut self, jobs: Vec<PendingJob>) {
        if !self.held_back.is_empty() {
            for job in &jobs {
                self.held_back.remove(&job.job);
            }
        }
        self.scheduler.do_send(Enqueue(jobs));
    }

    /// Queues the replayed jobs no worker took back during the reconnect grace.
    fn release_held_back(&mut self) {
        let held = std::mem::take(&mut self.held_back);
        let mut release: Vec<PendingJob> = held
            .into_iter()
            .filter_map(|id| {
                let job = self.jobs.get(&id)?;
                (job.phase == Phase::Queued).then(|| self.pending_job(id, job))
            })
            .collect();
        release.sort_by_key(|job| job.job);
        if !release.is_empty() {
            tracing::info!(
                jobs = release.len(),
                "reconnect grace over: replayed jobs no worker took back are queued"
            );
            self.scheduler.do_send(Enqueue(release));
        }
    }
}

impl Actor for Ledger {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(Duration::from_secs(1), |ledger, _ctx| {
            ledger.repair_manifests()
        });
        let mut replayed: Vec<PendingJob> = self
            .jobs
            .iter()
            .map(|(id, job)| self.pending_job(*id, job))
            .collect();
        replayed.sort_by_key(|job| job.job);
        if replayed.is_empty() {
            return;
        }
        let grace = self.config.reconnect_grace;
        if grace.is_zero() {
            tracing::info!(
                jobs = replayed.len(),
                "replayed unfinished jobs from the ledger"
            );
            self.scheduler.do_send(Enqueue(replayed));
            return;
        }
        // Some of these may still run on workers that are reconnecting: wait for them to say
        // so before starting anything again.
        tracing::info!(
            jobs = replayed.len(),
            grace = ?grace,
            "replayed unfinished jobs from the ledger; they wait for reconnecting workers to take back what they still run"
        );
        self.held_back = replayed.into_iter().map(|job| job.job).collect();
        ctx.run_later(grace, |ledger, _ctx| ledger.release_held_back());
    }
}

/// Runs a continuation on the actor once a journal commit has ended.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct AfterCommit(Continuation);

type Continuation = Box<dyn FnOnce(&mut Ledger, &mut Context<Ledger>) + Send>;

impl Handler<AfterCommit> for Ledger {
    type Result = ();

    fn handle(&mut self, AfterCommit(then): AfterCommit, ctx: &mut Context<Self>) {
        then(self, ctx);
    }
}

/// The Scheduler handed jobs to a worker: (job, lease, attempt number).
#[derive(Message)]
#[rtype(result = "()")]
pub struct AttemptsStarted {
    /// The worker's name.
    pub worker_name: Arc<str>,
    /// The attempts.
    pub started: Vec<(JobId, Lease, u32)>,
}

impl Handler<AttemptsStarted> for Ledger {
    type Result = ();

    fn handle(&mut self, started: AttemptsStarted, _ctx: &mut Context<Self>) {
        let now = now_ms();
        let mut unwanted = Vec::new();
        for (id, lease, attempt) in started.started {
            let Some(job) = self.jobs.get_mut(&id) else {
                unwanted.push(lease);
                continue;
            };
            if job.phase != Phase::Queued {
                // Cancelled or finished while it waited in the queue. Its number is spent all
                // the same: the worker may have started it before the kill arrives.
                job.attempts = job.attempts.max(attempt);
                unwanted.push(lease);
                continue;
            }
            job.phase = Phase::Running;
            job.attempts = job.attempts.max(attempt);
            job.running = Some(Box::new(RunningAttempt {
                lease,
                attempt,
                started_at_ms: now,
                worker: started.worker_name.clone(),
            }));
            let batch = job.batch;
            self.recount(batch, Phase::Queued, Phase::Running);
            self.batch_started(batch, now);
            if attempt == 1 {
                if let Some(counts) = self.batches.get(&batch) {
                    let wait_ms = now.saturating_sub(counts.submitted_at_ms);
                    self.stats.first_start(wait_ms);
                }
            }
        }
        if !unwanted.is_empty() {
            self.scheduler.do_send(KillAttempts(unwanted));
        }
    }
}

/// A worker registered with attempts it kept running across a reconnect or a coordinator restart.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AttemptsCarried {
    /// The worker's name.
    pub worker_name: Arc<str>,
    /// The attempts.
    pub carried: Vec<CarriedAttempt>,
}

impl Handler<AttemptsCarried> for Ledger {
    type Result = ();

    fn handle(&mut self, carried: AttemptsCarried, _ctx: &mut Context<Self>) {
        let now = now_ms();
        let mut kill = Vec::new();
        let mut taken_back = 0;
        for attempt in carried.carried {
            if self.take_back(
                attempt.job,
                attempt.lease,
                attempt.attempt,
                now,
                &carried.worker_name,
            ) {
                taken_back += 1;
                continue;
            }
            match self.jobs.get_mut(&attempt.job) {
                // Finished, or being recorded from another attempt: this one can only end as a
                // duplicate, so it is stopped and its slots freed.
                None => kill.push(attempt.lease),
                Some(job) if job.phase == Phase::Finishing && !job.runs_or_ran(attempt.lease) => {
                    kill.push(attempt.lease)
                }
                Some(job) => {
                    // Its number is spent, whatever becomes of it; the first success still
                    // wins, whichever attempt it comes from.
                    job.attempts = job.attempts.max(attempt.attempt);
                    // The same attempt, reported by a new registration of its worker before the
                    // old one was declared lost: it runs there now.
                    if job.runs(attempt.lease) {
                        if let Some(running) = job.running.as_mut() {
                            running.worker = carried.worker_name.clone();
                        }
                    }
                }
            }
        }
        if taken_back > 0 {
            tracing::info!(worker = %carried.worker_name, jobs = taken_back, "jobs taken back by the attempts their worker kept running");
        }
        if !kill.is_empty() {
            self.scheduler.do_send(KillAttempts(kill));
        }
    }
}

/// A worker's results, in the order the Scheduler saw them.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ResultsArrived {
    /// The worker's name.
    pub worker_name: Arc<str>,
    /// Its session, for the acknowledgement.
    pub session: Addr<Session>,
    /// The results.
    pub results: Vec<AttemptResult>,
}

impl Handler<ResultsArrived> for Ledger {
    type Result = ();

    fn handle(&mut self, arrived: ResultsArrived, ctx: &mut Context<Self>) {
        let mut writes = Vec::new();
        let mut finishing: Vec<(JobId, JobState)> = Vec::new();
        let mut ack_now = Vec::new();
        let mut ack_on_commit = Vec::new();
        let mut kill = Vec::new();
        let mut withdraw = Vec::new();
        let mut duplicates = Vec::new();
        let mut record_on_commit = Vec::new();
        let mut manifests = Vec::new();
        let mut late = Vec::new();
        // Counted in the statistics once written: a failed write sees these results again.
        let mut ran = Vec::new();
        let mut failed_attempts = Vec::new();
        for result in &arrived.results {
            // An attempt that ended while the coordinator was down, for a job held back since:
            // that attempt is the job's, and its result counts as the job's own.
            self.take_back(
                result.job,
                result.lease,
                result.attempt,
                result.started_at_ms,
                &arrived.worker_name,
            );
            let Some(job) = self.jobs.get_mut(&result.job) else {
                if result.outcome == Outcome::Succeeded && result.job < self.next_job {
                    // Finished: the journal tells a resend of the recorded result from a
                    // duplicate.
                    late.push((result.job, result.lease));
                } else {
                    ack_now.push(result.lease);
                }
                continue;
            };
            // Its number is spent, whatever the result.
            job.attempts = job.attempts.max(result.attempt);
            let current = job.runs(result.lease);
            match result.outcome {
                Outcome::Succeeded if job.phase != Phase::Finishing => {
                    // The first success wins, whichever attempt it comes from.
                    match job.phase {
                        Phase::Running if !current => {
                            kill.extend(job.running.as_ref().map(|running| running.lease))
                        }
                        Phase::Queued => withdraw.push(result.job),
                        _ => {}
                    }
                    let before = job.phase;
                    job.phase = Phase::Finishing;
                    ran.push(result.duration_ms);
                    job.running = Some(Box::new(RunningAttempt {
                        lease: result.lease,
                        attempt: result.attempt,
                        started_at_ms: result.started_at_ms,
                        worker: arrived.worker_name.clone(),
                    }));
                    writes.push(Self::work_order(
                        result.job,
                        job,
                        JobState::Succeeded,
                        Some(result),
                        None,
                    ));
                    finishing.push((result.job, JobState::Succeeded));
                    record_on_commit.push(result.lease);
                    if !result.outputs.is_empty() {
                        if let Some(outputs) = job.spec.decode().ok().and_then(|spec| spec.outputs)
                        {
                            manifests.push(ManifestOrder {
                                job: result.job,
                                lease: result.lease,
                                outputs,
                                objects: result.outputs.clone(),
                            });
                        }
                    }
                    let batch = job.batch;
                    self.recount(batch, before, Phase::Finishing);
                }
                Outcome::Failed | Outcome::TimedOut | Outcome::Killed if current => {
                    job.failures += 1;
                    ran.push(result.duration_ms);
                    failed_attempts.push(FailureInfo {
                        job: result.job,
                        batch: job.batch,
                        worker: arrived.worker_name.to_string(),
                        outcome: result.outcome.as_str().to_string(),
                        at_ms: result.started_at_ms.saturating_add(result.duration_ms),
                        error: result.error.clone(),
                        output_tail: result.output_tail.clone(),
                    });
                    writes.push(Write::Attempt(Box::new(AttemptRow {
                        job: result.job,
                        attempt: result.attempt,
                        worker: arrived.worker_name.to_string(),
                        outcome: result.outcome.as_str(),
                        started_at_ms: result.started_at_ms,
                        finished_at_ms: result.started_at_ms.saturating_add(result.duration_ms),
                        exit_code: result.exit_code,
                        error: result.error.clone(),
                    })));
                    ack_on_commit.push(result.lease);
                    let batch = job.batch;
                    let max_attempts = job.max_attempts();
                    if job.failures >= max_attempts {
                        job.phase = Phase::Finishing;
                        let error = format!(
                            "failed {} of {} attempts; last: {}",
                            job.failures,
                            max_attempts,
                            result.error.as_deref().unwrap_or(result.outcome.as_str())
                        );
                        writes.push(Self::work_order(
                            result.job,
                            job,
                            JobState::Failed,
                            Some(result),
                            Some(error),
                        ));
                        finishing.push((result.job, JobState::Failed));
                    } else {
                        job.phase = Phase::Backoff;
                        let failures = job.failures;
                        let delay = self.backoff(failures);
                        self.recount(batch, Phase::Running, Phase::Backoff);
                        self.retry_later(ctx, result.job, delay);
                    }
                }
                _ if job.phase == Phase::Finishing && job.runs_or_ran(result.lease) => {
                    // A resend of the very result being written: it is acknowledged when the
                    // write is on disk (the worker sends it again until then).
                }
                _ => {
                    // A failure of an attempt that is no longer current, or another success for
                    // a job whose terminal state is being written: nothing to record.
                    if result.outcome == Outcome::Succeeded {
                        duplicates.push((result.job, result.lease));
                        tracing::info!(job = result.job, lease = result.lease, worker = %arrived.worker_name, "late result for a finished job acknowledged, not recorded");
                    }
                    ack_now.push(result.lease);
                }
            }
        }
        if !duplicates.is_empty() {
            self.duplicates += duplicates.len() as u64;
            writes.push(Write::Duplicates(duplicates));
        }
        if !late.is_empty() {
            self.settle_late_successes(
                ctx,
                late,
                arrived.session.clone(),
                arrived.worker_name.clone(),
            );
        }
        if !kill.is_empty() {
            self.scheduler.do_send(KillAttempts(kill));
        }
        if !withdraw.is_empty() {
            self.scheduler.do_send(Withdraw(withdraw));
        }
        if !ack_now.is_empty() {
            arrived
                .session
                .do_send(Push(FromCoordinator::Acked(ack_now)));
        }
        if writes.is_empty() {
            return;
        }
        let session = arrived.session;
        self.commit(ctx, writes, move |ledger, _ctx, result| match result {
            Ok(()) => {
                for run_ms in ran {
                    ledger.stats.attempt_ended(run_ms);
                }
                for failure in failed_attempts {
                    ledger.stats.failure(failure);
                }
                ledger.finished(finishing);
                if !ack_on_commit.is_empty() {
                    session.do_send(Push(FromCoordinator::Acked(ack_on_commit)));
                }
                if !record_on_commit.is_empty() {
                    session.do_send(Push(FromCoordinator::Recorded(record_on_commit)));
                }
                // The recording worker writes these now; until it confirms, they wait here.
                let now = Instant::now();
                for order in manifests {
                    ledger.unpublished.insert(order.lease, PendingManifest { order, asked_at: now });
                }
            }
            Err(error) => {
                tracing::error!(%error, jobs = finishing.len(), "cannot record results; their jobs go back to pending");
                ledger.unfinish(finishing);
            }
        });
    }
}

/// A worker is gone; its attempts are lost and their jobs go back to pending at once.
#[derive(Message)]
#[rtype(result = "()")]
pub struct WorkerLost {
    /// The worker's name.
    pub worker_name: Arc<str>,
    /// Its attempts: (job, lease).
    pub attempts: Vec<(JobId, Lease)>,
    /// Why it was declared lost.
    pub reason: String,
}

impl Handler<WorkerLost> for Ledger {
    type Result = ();

    fn handle(&mut self, lost: WorkerLost, ctx: &mut Context<Self>) {
        let now = now_ms();
        let mut writes = Vec::new();
        let mut requeue = Vec::new();
        let mut finishing = Vec::new();
        let mut lost_attempts = Vec::new();
        for (id, lease) in lost.attempts {
            let Some(job) = self.jobs.get_mut(&id) else {
                continue;
            };
            if !job.runs(lease) {
                continue;
            }
            let (attempt, started_at_ms) =
                job.running.as_ref().map_or((job.attempts, now), |running| {
                    (running.attempt, running.started_at_ms)
                });
            job.lost += 1;
            lost_attempts.push(FailureInfo {
                job: id,
                batch: job.batch,
                worker: lost.worker_name.to_string(),
                outcome: "lost".into(),
                at_ms: now,
                error: Some(lost.reason.clone()),
                output_tail: String::new(),
            });
            writes.push(Write::Attempt(Box::new(AttemptRow {
                job: id,
                attempt,
                worker: lost.worker_name.to_string(),
                outcome: "lost",
                started_at_ms,
                finished_at_ms: now,
                exit_code: None,
                error: Some(lost.reason.clone()),
            })));
            let batch = job.batch;
            if job.lost >= MAX_LOST_ATTEMPTS {
                job.phase = Phase::Finishing;
                let error = format!("lost with {} workers; last: {}", job.lost, lost.reason);
                writes.push(Self::work_order(
                    id,
                    job,
                    JobState::Failed,
                    None,
                    Some(error),
                ));
                finishing.push((id, JobState::Failed));
            } else {
                job.phase = Phase::Queued;
                job.running = None;
                self.recount(batch, Phase::Running, Phase::Queued);
                requeue.push(self.pending_job(id, &self.jobs[&id]));
            }
        }
        if !requeue.is_empty() {
            tracing::info!(worker = %lost.worker_name, jobs = requeue.len(), "jobs of a lost worker back to pending");
            self.enqueue(requeue);
        }
        if !writes.is_empty() {
            self.commit(ctx, writes, move |ledger, _ctx, result| match result {
                Ok(()) => {
                    for failure in lost_attempts {
                        ledger.stats.failure(failure);
                    }
                    ledger.finished(finishing)
                }
                Err(error) => {
                    tracing::error!(%error, "cannot record lost attempts");
                    ledger.unfinish(finishing);
                }
            });
        }
    }
}

/// A worker wrote the manifests of these recorded attempts.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ManifestsWritten(pub Vec<Lease>);

impl Handler<ManifestsWritten> for Ledger {
    type Result = ();

    fn handle(&mut self, ManifestsWritten(leases): ManifestsWritten, ctx: &mut Context<Self>) {
        let jobs: Vec<JobId> = leases
            .iter()
            .filter_map(|lease| self.unpublished.remove(lease))
            .map(|pending| pending.order.job)
            .collect();
        if jobs.is_empty() {
            return;
        }
        self.commit(ctx, vec![Write::ManifestsWritten(jobs)], |_, _, result| {
            // Not fatal: the manifest is written; a restart would only write it once more.
            if let Err(error) = result {
                tracing::warn!(%error, "cannot note written manifests");
            }
        });
    }
}

/// The Ledger's statistics, for a status.
#[derive(Message)]
#[rtype(result = "JobStatistics")]
pub struct Statistics;

impl Handler<Statistics> for Ledger {
    type Result = MessageResult<Statistics>;

    fn handle(&mut self, _: Statistics, _ctx: &mut Context<Self>) -> Self::Result {
        let mut jobs = JobCounts::default();
        for counts in self.batches.values() {
            jobs.pending += counts.pending;
            jobs.running += counts.running;
            jobs.succeeded += counts.succeeded;
            jobs.failed += counts.failed;
            jobs.cancelled += counts.cancelled;
        }
        let mut busiest: Vec<(&BatchId, &BatchCounts)> = self
            .batches
            .iter()
            .filter(|(_, counts)| counts.unfinished())
            .collect();
        busiest.sort_by_key(|(id, counts)| {
            (
                std::cmp::Reverse(counts.running),
                std::cmp::Reverse(counts.pending),
                **id,
            )
        });
        MessageResult(JobStatistics {
            jobs,
            jobs_per_s: self.stats.jobs_per_s(),
            per_second: self.stats.per_second(120),
            run: self.stats.run(),
            wait: self.stats.wait(),
            duplicates: self.duplicates,
            recent_failures: self.stats.recent_failures(),
            busiest: busiest
                .into_iter()
                .take(BUSIEST_BATCHES)
                .map(|(id, counts)| counts.info(*id))
                .collect(),
            batches: self.batches.len() as u64,
            started_at_ms: self.stats.started_at_ms(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_running_batch_has_a_rate_and_an_eta_a_done_one_keeps_its_end() {
        let now = now_ms();
        let mut counts = BatchCounts {
            total: 100,
            pending: 40,
            running: 10,
            succeeded: 45,
            failed: 5,
            started_at_ms: Some(now - 60_000),
            // Measured from the start of this run (after a restart, say): 50 finished before.
            rate_from: Some((now - 10_000, 0)),
            ..BatchCounts::new("b".into(), now - 20_000)
        };
        let info = counts.info(7);
        assert!(!info.done);
        // 50 finished in 10 s: 5 a second, 50 left, so about 10 s to go.
        assert!((4.9..=5.1).contains(&info.jobs_per_s), "{info:?}");
        assert!((10..=11).contains(&info.eta_s.unwrap()), "{info:?}");
        assert_eq!(info.finished_at_ms, None);

        counts.pending = 0;
        counts.running = 0;
        counts.succeeded = 95;
        counts.finished_at_ms = Some(now - 5_000);
        let info = counts.info(7);
        assert!(info.done);
        assert_eq!(info.eta_s, None);
        assert_eq!(info.finished_at_ms, Some(now - 5_000));
        // Measured from start to end, not to now.
        assert!((19.9..=20.1).contains(&info.jobs_per_s), "{info:?}");

        // A retry a day later: its rate counts from its own start, not yesterday's.
        counts.finished_at_ms = None;
        counts.failed = 0;
        counts.rate_from = Some((now - 1_000, 95));
        counts.succeeded = 97;
        counts.pending = 3;
        let info = counts.info(7);
        assert!((1.9..=2.1).contains(&info.jobs_per_s), "{info:?}");
        assert!((1..=2).contains(&info.eta_s.unwrap()), "{info:?}");

        let fresh = BatchCounts {
            total: 3,
            pending: 3,
            ..BatchCounts::new("c".into(), now)
        };
        let info = fresh.info(8);
        assert_eq!(
            (info.jobs_per_s, info.eta_s, info.started_at_ms),
            (0.0, None, None)
        );
    }
}
