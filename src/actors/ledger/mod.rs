//! The Ledger actor: the source of truth for jobs.
//!
//! Its state and rules are the job [`book`]: each message becomes one event for the book, and
//! the actor carries out what the book returns. It sends changes to the store and hands what
//! they decided back to the book once the store says they are durable (so nothing is
//! acknowledged before it is on disk), sends jobs to the Scheduler, tells workers about their
//! results, and answers clients. It never waits: the store answers with a message.
//!
//! Client requests are served in `requests.rs`, workers' reports of their attempts in
//! `attempts.rs`.

mod attempts;
mod book;
pub mod error;
mod notes;
mod requests;
mod results;
mod stats;
mod unwritten;

pub use attempts::{
    AttemptsCarried, AttemptsReturned, AttemptsStarted, ManifestsWritten, ResultsArrived,
    WorkerLost,
};
pub use book::{
    manifest_order_size, LostAttempt, Started, WorkerRef, MAX_LOST_ATTEMPTS, MAX_SPEC_BYTES,
};
pub use error::{ErrorKind, LedgerError};
pub use requests::{
    CallAnswer, CallJob, Cancel, GetBatch, GetJob, ListBatches, ListJobs, ReadResults, Retry,
    RetryJob, SubmitBatch, WaitBatch, WaitingOutOfLine, MAX_JOBS_PER_BATCH, MAX_PAGE,
    MAX_RESULTS_PAGE_BYTES,
};
pub use results::CALL_BATCH;

use crate::actors::registry::WorkerDirectory;
use crate::actors::scheduler::{
    Behind, Enqueue, KillAttempts, PublishManifests, Scheduler, Withdraw,
};
use crate::actors::session::ToWorker;
use crate::ha::{Deposed, LeaseClock};
use crate::job::{now_ms, BatchId, JobId, Lease};
use crate::metrics::Metrics;
use crate::status::{BatchInfo, JobStatistics};
use crate::storage::store::{JobFilter, LedgerStore, Replay, StoreError};
use actix::prelude::*;
use book::{Answer, Book, Commit, Effects, Limits, Lookup, Notice, Pending};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{oneshot, watch};

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
    /// The most bytes of unfinished jobs' specs held; past it too, "queue full".
    pub max_unfinished_bytes: usize,
    /// After a restart, how long the replayed unfinished jobs wait before they are queued, so
    /// workers can reconnect and report the attempts they kept running: those are taken back
    /// as they are, not started again under the same number. Zero queues them at once.
    pub reconnect_grace: Duration,
    /// The lease this coordinator leads under: ended when it steps down, so the Scheduler
    /// assigns nothing more.
    pub lease: LeaseClock,
    /// Told why, when this coordinator steps down (another took the ledger's lease).
    pub stepped_down: Arc<watch::Sender<Option<Deposed>>>,
    /// The cursor of the last finished job's record on disk: set by the Ledger after every
    /// commit that finished jobs. Followers of results (sessions, the HTTP side) subscribe to
    /// it and read a page from the store when it moves.
    pub recorded: Arc<watch::Sender<u64>>,
    /// The most bytes of one attempt's result kept (`--max-result-bytes`): a longer result
    /// fails its attempt, saying to publish large results as outputs.
    pub max_result_bytes: usize,
    /// How long a call's submission, running unwritten, waits for the commit of its result to
    /// ride with before it is written on its own (see `unwritten`).
    pub call_write_delay: Duration,
}

/// The default of [`LedgerConfig::call_write_delay`]: longer than most short calls take, short
/// enough that a long call's job is on disk (and in every view read from disk) at once.
pub const DEFAULT_CALL_WRITE_DELAY: Duration = Duration::from_millis(20);

/// The default of [`LedgerConfig::max_unfinished_jobs`]: about 1.3 GiB of coordinator memory.
pub const DEFAULT_MAX_UNFINISHED_JOBS: usize = 5_000_000;

/// The default of [`LedgerConfig::max_unfinished_bytes`]: a GiB of specs.
pub const DEFAULT_MAX_UNFINISHED_BYTES: usize = 1024 * 1024 * 1024;

impl Default for LedgerConfig {
    fn default() -> Self {
        LedgerConfig {
            retry_backoff: Duration::from_secs(1),
            metrics: Arc::new(Metrics::new()),
            max_batch_jobs: MAX_JOBS_PER_BATCH,
            max_unfinished_jobs: DEFAULT_MAX_UNFINISHED_JOBS,
            max_unfinished_bytes: DEFAULT_MAX_UNFINISHED_BYTES,
            reconnect_grace: Duration::ZERO,
            lease: LeaseClock::forever(),
            stepped_down: Arc::new(watch::channel(None).0),
            recorded: Arc::new(watch::channel(0).0),
            max_result_bytes: crate::job::DEFAULT_MAX_RESULT_BYTES,
            call_write_delay: DEFAULT_CALL_WRITE_DELAY,
        }
    }
}

/// A timer this late means the coordinator stalled.
const LATE_TIMER: Duration = Duration::from_secs(1);
/// After a stall, how long an attempt's deadline waits for what was sent meanwhile to be read.
const STALL_GRACE: Duration = Duration::from_secs(5);

/// Where a client's answer goes, once there is one.
type Respond = oneshot::Sender<Answer>;

/// The source of truth for jobs.
pub struct Ledger {
    book: Book,
    store: Arc<dyn LedgerStore>,
    scheduler: Addr<Scheduler>,
    workers: WorkerDirectory,
    waiters: HashMap<BatchId, Vec<oneshot::Sender<BatchInfo>>>,
    reconnect_grace: Duration,
    /// The store is closing or closed: workers' reports are left unanswered (they are reported
    /// again to the next coordinator), and nothing new is written.
    closing: bool,
    /// Submissions repeating an idempotency key whose batch is being written: answered when
    /// the book says how that commit ended.
    held: HashMap<Arc<str>, Vec<Respond>>,
    /// The lease this coordinator leads under.
    lease: LeaseClock,
    /// Why this coordinator stepped down, once it has: it acknowledges nothing more.
    deposed: Option<Deposed>,
    stepped_down: Arc<watch::Sender<Option<Deposed>>>,
    /// Commits that decide nothing, waiting to go with the next that does (see
    /// [`Ledger::defer`]).
    notes: Vec<Commit>,
    /// A timer will send the notes.
    notes_due: bool,
    /// The cursor of the last finished job's record on disk, for followers of results.
    recorded: Arc<watch::Sender<u64>>,
    /// Calls waiting for their job's final record.
    calls: HashMap<JobId, results::CallWaiter>,
    /// Calls' submissions running before they are on disk, and the ids reserved for them.
    unwritten: unwritten::Unwritten,
    /// How long a call's submission waits for a commit about its job to ride with.
    call_write_delay: Duration,
}

impl Ledger {
    /// A ledger holding what the store replayed.
    pub fn new(
        store: Arc<dyn LedgerStore>,
        replay: Replay,
        scheduler: Addr<Scheduler>,
        workers: WorkerDirectory,
        config: LedgerConfig,
    ) -> Self {
        let limits = Limits {
            retry_backoff: config.retry_backoff,
            max_batch_jobs: config.max_batch_jobs,
            max_unfinished_jobs: config.max_unfinished_jobs,
            max_unfinished_bytes: config.max_unfinished_bytes,
            max_result_bytes: config.max_result_bytes,
        };
        let next_job = replay.next_job;
        Ledger {
            book: Book::new(replay, limits, config.metrics),
            store,
            scheduler,
            workers,
            waiters: HashMap::new(),
            reconnect_grace: config.reconnect_grace,
            closing: false,
            held: HashMap::new(),
            lease: config.lease,
            deposed: None,
            stepped_down: config.stepped_down,
            notes: Vec::new(),
            notes_due: false,
            recorded: config.recorded,
            calls: HashMap::new(),
            unwritten: unwritten::Unwritten::new(next_job),
            call_write_delay: config.call_write_delay,
        }
    }

    /// Stops leading: another coordinator holds the ledger's lease, so nothing this one would
    /// commit can be, and nothing more is acknowledged or assigned. Said once.
    fn step_down(&mut self, why: Deposed) {
        if self.deposed.is_some() {
            return;
        }
        tracing::error!(
            reason = %why,
            "stepping down: {why}; this coordinator acknowledges nothing more and takes no \
             connection (run it under a supervisor that restarts it: it comes back as a standby)"
        );
        self.lease.end();
        self.closing = true;
        self.deposed = Some(why.clone());
        self.refuse_calls(LedgerError::Store {
            action: "answer the call",
            error: StoreError::Deposed(why.clone()),
        });
        self.stepped_down.send_replace(Some(why));
    }

    /// Why a new submission cannot be taken now, if it cannot: this coordinator stepped down,
    /// or the store's database is away.
    fn refusal(&self) -> Option<LedgerError> {
        let error = match (&self.deposed, self.store.unavailable()) {
            (Some(why), _) => StoreError::Deposed(why.clone()),
            (None, Some(why)) => StoreError::Unavailable(why),
            (None, None) => return None,
        };
        Some(LedgerError::Store {
            action: "queue the batch",
            error,
        })
    }

    /// Does what the book decided. An answer goes to `respond`; a lookup or a commit that will
    /// decide the answer carries `respond` along.
    fn carry_out(&mut self, ctx: &mut Context<Self>, effects: Effects, respond: Option<Respond>) {
        let Effects {
            enqueue,
            withdraw,
            kill,
            notices,
            retry_after,
            deadlines,
            publish,
            batches_done,
            commit,
            lookup,
            answer,
            held,
            repeats,
        } = effects;
        let mut respond = respond;
        if let Some(key) = held {
            if let Some(respond) = respond.take() {
                self.held.entry(key).or_default().push(respond);
            }
        }
        self.answer_held(repeats);
        if !enqueue.is_empty() {
            self.scheduler.do_send(Enqueue(enqueue));
        }
        if !withdraw.is_empty() {
            self.scheduler.do_send(Withdraw(withdraw));
        }
        if !kill.is_empty() {
            self.scheduler.do_send(KillAttempts(kill));
        }
        if !publish.is_empty() {
            self.scheduler.do_send(PublishManifests(publish));
        }
        for (worker, notice) in notices {
            let message = match notice {
                Notice::Acked(leases) => ToWorker::Acked(leases),
                Notice::Recorded(leases) => ToWorker::Recorded(leases),
            };
            // A worker gone meanwhile reports its results again when it is back.
            self.workers.tell(worker, message);
        }
        for (job, delay) in retry_after {
            ctx.run_later(delay, move |ledger, ctx| {
                let effects = ledger.book.backoff_over(job);
                ledger.carry_out(ctx, effects, None);
            });
        }
        for (job, lease, delay) in deadlines {
            self.judge_after(ctx, job, lease, delay);
        }
        for info in batches_done {
            for waiter in self.waiters.remove(&info.id).unwrap_or_default() {
                let _ = waiter.send(info.clone());
            }
        }
        if let Some(answer) = answer {
            if let Some(respond) = respond.take() {
                let _ = respond.send(answer);
            }
        }
        if let Some(lookup) = lookup {
            self.look_up(ctx, lookup, respond.take());
        }
        if let Some(commit) = commit {
            if self.closing {
                // Nothing new is written: the client hears so, and the book puts back what the
                // commit would have decided.
                let effects = self
                    .book
                    .committed(commit.then, Err(StoreError::Closed), now_ms());
                let Effects {
                    answer, repeats, ..
                } = effects;
                if let (Some(answer), Some(respond)) = (answer, respond.take()) {
                    let _ = respond.send(answer);
                }
                self.answer_held(repeats);
            } else if matches!(commit.then, Pending::Note(_)) {
                self.defer(ctx, commit);
            } else {
                let commit = self.with_notes(commit);
                self.commit(commit, ctx.address(), respond.take());
            }
        }
    }

    /// Answers the submissions held on each key.
    fn answer_held(&mut self, repeats: Vec<(Arc<str>, Answer)>) {
        for (key, answer) in repeats {
            for respond in self.held.remove(&key).unwrap_or_default() {
                let _ = respond.send(answer.clone());
            }
        }
    }

    /// Hands an attempt back to the book once its deadline has passed. A timer that fires late
    /// means the coordinator itself stalled: the attempt's result may be waiting unread in its
    /// socket, so it is judged a little later, once that has been read.
    fn judge_after(&self, ctx: &mut Context<Self>, job: JobId, lease: Lease, delay: Duration) {
        let due_ms = now_ms().saturating_add(delay.as_millis() as u64);
        ctx.run_later(delay, move |ledger, ctx| {
            if ledger.closing {
                return;
            }
            let now = now_ms();
            if now.saturating_sub(due_ms) > LATE_TIMER.as_millis() as u64 {
                ledger.judge_after(ctx, job, lease, STALL_GRACE);
                return;
            }
            let effects = ledger.book.deadline_passed(job, lease, now);
            ledger.carry_out(ctx, effects, None);
        });
    }

    /// Sends a commit to the store; its outcome comes back as a message, in commit order.
    fn commit(&mut self, commit: Commit, ledger: Addr<Ledger>, respond: Option<Respond>) {
        let carry = match commit.then {
            Pending::Note(_) => unwritten::Carry::Nothing,
            _ => unwritten::Carry::Touched,
        };
        self.commit_with(commit, carry, ledger, respond);
    }

    /// Sends a commit with the calls' submissions it must carry (see [`unwritten`]).
    fn commit_with(
        &mut self,
        commit: Commit,
        carry: unwritten::Carry,
        ledger: Addr<Ledger>,
        respond: Option<Respond>,
    ) {
        let Commit { mut changes, then } = commit;
        let carried = self
            .unwritten
            .carry(&mut changes, carry, self.book.next_job());
        let (last_cursor, calls) = self.records_in(&changes);
        self.store.commit(
            changes,
            Box::new(move |result| {
                ledger.do_send(Committed {
                    then,
                    result,
                    respond,
                    last_cursor,
                    calls,
                    carried,
                })
            }),
        );
    }

    /// Reads what the book needs and hands it back.
    fn look_up(&self, ctx: &mut Context<Self>, lookup: Lookup, respond: Option<Respond>) {
        match lookup {
            Lookup::LateSuccesses {
                worker,
                worker_name,
                late,
            } => {
                let read = self
                    .store
                    .recorded_leases(late.iter().map(|(job, _)| *job).collect());
                ctx.spawn(read.into_actor(self).map(move |found, ledger, ctx| {
                    let effects =
                        ledger
                            .book
                            .late_successes_found(worker, &worker_name, late, found);
                    ledger.carry_out(ctx, effects, respond);
                }));
            }
            Lookup::FailedJobs(batch) => {
                let read = self.store.failed_jobs(batch);
                ctx.spawn(read.into_actor(self).map(move |found, ledger, ctx| {
                    let effects = ledger.book.failed_jobs_found(batch, found);
                    ledger.carry_out(ctx, effects, respond);
                }));
            }
            Lookup::FirstJob { key, batch } => {
                let first = JobFilter {
                    batch: Some(batch),
                    state: None,
                    after: 0,
                    limit: 1,
                };
                let read = self.store.jobs(first);
                ctx.spawn(read.into_actor(self).map(move |found, ledger, ctx| {
                    let found = found.map(|page| page.first().map(|job| job.id));
                    let effects = ledger.book.first_job_found(key, batch, found);
                    ledger.carry_out(ctx, effects, respond);
                }));
            }
            Lookup::FinishedJob(job) => {
                // Read behind every start the Scheduler sent so far: a cancelled job's turn in
                // line may have been handed out just before the cancel, and its start must
                // find the job gone, not back in line under the same numbers.
                self.scheduler
                    .do_send(Behind(ReadFinishedJob { job, respond }));
            }
        }
    }
}

impl Actor for Ledger {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(Duration::from_secs(1), |ledger, ctx| {
            ledger.forget_abandoned_calls();
            let effects = ledger.book.manifests_due(now_ms());
            ledger.carry_out(ctx, effects, None);
        });
        let grace = self.reconnect_grace;
        let (effects, held) = self.book.start(!grace.is_zero());
        let replayed = self.book.unfinished();
        if held {
            // Some of these may still run on workers that are reconnecting: wait for them to
            // say so before starting anything again.
            tracing::info!(
                jobs = replayed,
                grace = ?grace,
                "replayed unfinished jobs from the ledger; they wait for reconnecting workers to take back what they still run"
            );
            ctx.run_later(grace, |ledger, ctx| {
                let effects = ledger.book.grace_over();
                ledger.carry_out(ctx, effects, None);
            });
        } else if replayed > 0 {
            tracing::info!(jobs = replayed, "replayed unfinished jobs from the ledger");
        }
        self.carry_out(ctx, effects, None);
    }
}

/// Reads a job for its retry, once every start the Scheduler sent before has arrived (it comes
/// back from the Scheduler, [`Behind`] them).
#[derive(Message)]
#[rtype(result = "()")]
pub struct ReadFinishedJob {
    job: JobId,
    respond: Option<Respond>,
}

impl Handler<ReadFinishedJob> for Ledger {
    type Result = ();

    fn handle(&mut self, read: ReadFinishedJob, ctx: &mut Context<Self>) {
        let ReadFinishedJob { job, respond } = read;
        let found = self.store.finished_job(job);
        ctx.spawn(found.into_actor(self).map(move |found, ledger, ctx| {
            let effects = ledger.book.finished_job_found(job, found);
            ledger.carry_out(ctx, effects, respond);
        }));
    }
}

/// A commit ended; what it decided is handed back to the book.
#[derive(Message)]
#[rtype(result = "()")]
struct Committed {
    then: Pending,
    result: Result<(), StoreError>,
    respond: Option<Respond>,
    /// The highest cursor the commit records, if it finishes jobs.
    last_cursor: Option<u64>,
    /// The records of the jobs calls wait for.
    calls: results::CallRecords,
    /// The calls' submissions and the reservation it carried.
    carried: unwritten::Carried,
}

impl Handler<Committed> for Ledger {
    type Result = ();

    fn handle(&mut self, committed: Committed, ctx: &mut Context<Self>) {
        if let Err(StoreError::Deposed(why)) = &committed.result {
            self.step_down(why.clone());
        }
        if committed.result.is_ok() {
            // Followers and calls first: theirs is the latency that counts.
            self.records_durable(committed.last_cursor, committed.calls);
        }
        let ended = self
            .unwritten
            .ended(committed.carried, committed.result.is_ok());
        for (key, job) in ended.keys_written {
            let effects = self.book.call_written(key, job);
            self.answer_held(effects.repeats);
        }
        if ended.uncarried {
            self.write_calls_later(ctx);
        }
        let effects = self
            .book
            .committed(committed.then, committed.result, now_ms());
        self.carry_out(ctx, effects, committed.respond);
        self.answer_late_calls(ctx);
    }
}

/// The Ledger's statistics, for a status.
#[derive(Message)]
#[rtype(result = "JobStatistics")]
pub struct Statistics;

impl Handler<Statistics> for Ledger {
    type Result = MessageResult<Statistics>;

    fn handle(&mut self, _: Statistics, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(self.book.statistics(now_ms()))
    }
}

/// Another coordinator took the ledger's lease: this one steps down.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StepDown(pub Deposed);

impl Handler<StepDown> for Ledger {
    type Result = ();

    fn handle(&mut self, StepDown(why): StepDown, _ctx: &mut Context<Self>) {
        self.step_down(why);
    }
}

/// Closes the store once every commit asked for so far is durable (a clean shutdown).
#[derive(Message)]
#[rtype(result = "Result<(), StoreError>")]
pub struct CloseStore;

impl Handler<CloseStore> for Ledger {
    type Result = ResponseFuture<Result<(), StoreError>>;

    fn handle(&mut self, _: CloseStore, ctx: &mut Context<Self>) -> Self::Result {
        self.send_notes(ctx);
        self.closing = true;
        self.refuse_calls(LedgerError::ShuttingDown);
        self.store.close()
    }
}
