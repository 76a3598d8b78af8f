//! What clients ask the Ledger: submissions, progress, job records, cancel and retry. Each is a
//! message of its own with a typed answer; the Session and the HTTP side translate their
//! protocols to these.

use super::book::{Answer, Effects};
use super::{Ledger, LedgerError};
use crate::job::{now_ms, BatchId, CancelTarget, JobId, JobSpec, JobState};
use crate::status::{BatchInfo, Completion, JobInfo, Resulted, ResultsPage, Submitted, Waiting};
use crate::storage::store::JobFilter;
use actix::prelude::*;
use std::time::Duration;
use tokio::sync::oneshot;

/// The most jobs one batch may hold.
pub const MAX_JOBS_PER_BATCH: usize = 1_000_000;

/// The most jobs one page of [`ListJobs`] returns: with bounded output tails and errors, a page
/// stays below the frame size limit.
pub const MAX_PAGE: u32 = 1_000;

pub(super) type Reply<T> = ResponseActFuture<Ledger, Result<T, LedgerError>>;

pub(super) fn ready<T: 'static>(answer: Result<T, LedgerError>) -> Reply<T> {
    Box::pin(actix::fut::ready(answer))
}

/// Waits for the answer the book gives once its commit (or lookup) is done, and takes from it
/// what this request answers with.
fn awaiting<T: 'static>(
    rx: oneshot::Receiver<Answer>,
    pick: impl FnOnce(Answer) -> Option<T> + 'static,
) -> Reply<T> {
    Box::pin(actix::fut::wrap_future(async move {
        match rx.await {
            Ok(Answer::Refused(error)) => Err(error),
            Ok(answer) => pick(answer).ok_or(LedgerError::ShuttingDown),
            Err(_) => Err(LedgerError::ShuttingDown),
        }
    }))
}

/// Queue a batch; answered once it is on disk. Under an idempotency key that made a batch
/// already, answered with that batch (`repeated`), once it is on disk.
#[derive(Message)]
#[rtype(result = "Result<Submitted, LedgerError>")]
pub struct SubmitBatch {
    /// Its name.
    pub name: String,
    /// Its jobs.
    pub jobs: Vec<JobSpec>,
    /// The submitter's name for this submission, if it gave one.
    pub idempotency_key: Option<String>,
}

impl Handler<SubmitBatch> for Ledger {
    type Result = Reply<Submitted>;

    fn handle(&mut self, submit: SubmitBatch, ctx: &mut Context<Self>) -> Self::Result {
        if let Some(refused) = self.refusal() {
            return ready(Err(refused));
        }
        let key = submit.idempotency_key.as_deref();
        let effects = match self.book.submit(submit.name, submit.jobs, key, now_ms()) {
            Ok(effects) => effects,
            Err(error) => return ready(Err(error)),
        };
        let (tx, rx) = oneshot::channel();
        self.carry_out(ctx, effects, Some(tx));
        awaiting(rx, |answer| match answer {
            Answer::Submitted(submitted) => Some(submitted),
            _ => None,
        })
    }
}

/// Finished jobs' records after a cursor, in recording order: one page, read from the store
/// off the actor's loop, answered at once (waiting for the next record is the asker's
/// business: see [`LedgerConfig::recorded`](super::LedgerConfig::recorded)). An unknown batch
/// is [`LedgerError::NoBatch`]; a cursor past the last one drawn is
/// [`LedgerError::CursorBeyondEnd`]. A page holds at most `limit` records (capped at
/// [`MAX_PAGE`]) and stops early once its results pass [`MAX_RESULTS_PAGE_BYTES`] (always
/// holding at least one record). `done` is set when the batch is done and this page holds
/// its last records.
#[derive(Message)]
#[rtype(result = "Result<ResultsPage, LedgerError>")]
pub struct ReadResults {
    /// Only this batch's jobs.
    pub batch: Option<BatchId>,
    /// Only records after this cursor.
    pub after: u64,
    /// At most this many.
    pub limit: u32,
}

/// The most bytes of results one page of [`ReadResults`] gathers before it stops (a page
/// always holds one record, so one result of `--max-result-bytes` passes).
pub const MAX_RESULTS_PAGE_BYTES: usize = 4 * 1024 * 1024;

/// Queue one job and answer with its final record once it is recorded: a batch of one (named
/// `call`), under the idempotency key if one is given. A key that made a job already waits for
/// that job (or answers at once with its record if it is finished). Refused as a submission
/// would be.
#[derive(Message)]
#[rtype(result = "CallAnswer")]
pub struct CallJob {
    /// The job.
    pub spec: JobSpec,
    /// The caller's name for this call.
    pub idempotency_key: Option<String>,
}

/// A call's answer, to be awaited ([`CallAnswer::recv`]) outside the Ledger: its record is
/// sent to the caller the moment its commit is durable.
pub struct CallAnswer(pub(super) oneshot::Receiver<Result<Completion, LedgerError>>);

impl CallAnswer {
    /// The job's final record, or why the call was refused.
    pub async fn recv(self) -> Result<Completion, LedgerError> {
        self.0.await.unwrap_or(Err(LedgerError::ShuttingDown))
    }
}

/// One batch's progress.
#[derive(Message)]
#[rtype(result = "Result<BatchInfo, LedgerError>")]
pub struct GetBatch(pub BatchId);

impl Handler<GetBatch> for Ledger {
    type Result = Result<BatchInfo, LedgerError>;

    fn handle(&mut self, GetBatch(id): GetBatch, _ctx: &mut Context<Self>) -> Self::Result {
        self.book.batch(id, now_ms())
    }
}

/// Every batch, oldest first; with `newest`, only that many of the newest (what a dashboard
/// polls, at a cost that does not grow with the history).
#[derive(Message)]
#[rtype(result = "Vec<BatchInfo>")]
pub struct ListBatches {
    /// Only this many of the newest.
    pub newest: Option<usize>,
}

impl Handler<ListBatches> for Ledger {
    type Result = MessageResult<ListBatches>;

    fn handle(&mut self, list: ListBatches, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(self.book.batches(list.newest, now_ms()))
    }
}

/// Answered when the batch is done, or after `timeout` with its progress so far.
#[derive(Message)]
#[rtype(result = "Result<BatchInfo, LedgerError>")]
pub struct WaitBatch {
    /// The batch.
    pub batch: BatchId,
    /// The longest to wait.
    pub timeout: Duration,
}

impl Handler<WaitBatch> for Ledger {
    type Result = Reply<BatchInfo>;

    fn handle(&mut self, wait: WaitBatch, _ctx: &mut Context<Self>) -> Self::Result {
        let batch = wait.batch;
        let info = match self.book.batch(batch, now_ms()) {
            Ok(info) => info,
            Err(error) => return ready(Err(error)),
        };
        if info.done {
            return ready(Ok(info));
        }
        let (tx, rx) = oneshot::channel();
        self.waiters.entry(batch).or_default().push(tx);
        Box::pin(
            async move { tokio::time::timeout(wait.timeout, rx).await }
                .into_actor(self)
                .map(move |waited, ledger, _ctx| match waited {
                    Ok(Ok(info)) => Ok(info),
                    _ => {
                        // This waiter gave up: forget it, and any other that did.
                        if let Some(waiters) = ledger.waiters.get_mut(&batch) {
                            waiters.retain(|waiter| !waiter.is_closed());
                        }
                        ledger.book.batch(batch, now_ms())
                    }
                }),
        )
    }
}

/// One job with its history and its recorded result.
#[derive(Message)]
#[rtype(result = "Result<Resulted<JobInfo>, LedgerError>")]
pub struct GetJob(pub JobId);

impl Handler<GetJob> for Ledger {
    type Result = Reply<Resulted<JobInfo>>;

    fn handle(&mut self, GetJob(id): GetJob, _ctx: &mut Context<Self>) -> Self::Result {
        let live = self.book.live_job(id);
        let store = self.store.clone();
        let read = async move {
            match live {
                Some(mut info) => {
                    info.history = store.history(id).await?;
                    Ok(Some(Resulted::bare(info)))
                }
                None => store.job(id).await,
            }
        };
        Box::pin(read.into_actor(self).map(move |found, ledger, _ctx| {
            match found {
                Ok(Some(mut job)) => {
                    // It may have finished or started while its record was read.
                    ledger.book.overlay(std::slice::from_mut(&mut job.record));
                    Ok(job)
                }
                Ok(None) => Err(LedgerError::NoJob(id)),
                Err(error) => Err(LedgerError::Store {
                    action: "read the job",
                    error,
                }),
            }
        }))
    }
}

/// The pending jobs of one batch, or of all, that the Ledger holds out of line (waiting out a
/// retry's backoff, or held back after a restart), by why they wait.
#[derive(Message)]
#[rtype(result = "Vec<Waiting>")]
pub struct WaitingOutOfLine {
    /// Only this batch's.
    pub batch: Option<BatchId>,
}

impl Handler<WaitingOutOfLine> for Ledger {
    type Result = MessageResult<WaitingOutOfLine>;

    fn handle(&mut self, asked: WaitingOutOfLine, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(self.book.waiting(asked.batch))
    }
}

/// Jobs in id order, a page at a time.
#[derive(Message)]
#[rtype(result = "Result<Vec<JobInfo>, LedgerError>")]
pub struct ListJobs {
    /// Only this batch.
    pub batch: Option<BatchId>,
    /// Only this state.
    pub state: Option<JobState>,
    /// Only ids above this one.
    pub after: JobId,
    /// At most this many (no more than [`MAX_PAGE`]).
    pub limit: u32,
}

impl Handler<ListJobs> for Ledger {
    type Result = Reply<Vec<JobInfo>>;

    fn handle(&mut self, list: ListJobs, _ctx: &mut Context<Self>) -> Self::Result {
        let limit = list.limit.min(MAX_PAGE);
        if let Some(batch) = list.batch {
            if let Err(error) = self.book.batch(batch, now_ms()) {
                return ready(Err(error));
            }
        }
        if let Some(wanted @ (JobState::Pending | JobState::Running)) = list.state {
            // Unfinished jobs live in memory only.
            let waiting = wanted == JobState::Pending;
            return ready(Ok(self.book.unfinished_page(
                list.batch,
                waiting,
                list.after,
                limit as usize,
            )));
        }
        let filter = JobFilter {
            batch: list.batch,
            state: list.state,
            after: list.after,
            limit,
        };
        Box::pin(
            self.store
                .jobs(filter)
                .into_actor(self)
                .map(|page, ledger, _ctx| match page {
                    Ok(mut page) => {
                        ledger.book.overlay(&mut page);
                        Ok(page)
                    }
                    Err(error) => Err(LedgerError::Store {
                        action: "read the jobs",
                        error,
                    }),
                }),
        )
    }
}

/// Cancel a batch's or a job's pending and running jobs; answered with how many, once that is
/// on disk.
#[derive(Message)]
#[rtype(result = "Result<u64, LedgerError>")]
pub struct Cancel(pub CancelTarget);

impl Handler<Cancel> for Ledger {
    type Result = Reply<u64>;

    fn handle(&mut self, Cancel(target): Cancel, ctx: &mut Context<Self>) -> Self::Result {
        let effects = self.book.cancel(target, now_ms());
        self.changed(ctx, effects)
    }
}

/// Put a batch's failed jobs back to pending with fresh attempts; answered with how many, once
/// that is on disk.
#[derive(Message)]
#[rtype(result = "Result<u64, LedgerError>")]
pub struct Retry(pub BatchId);

impl Handler<Retry> for Ledger {
    type Result = Reply<u64>;

    fn handle(&mut self, Retry(batch): Retry, ctx: &mut Context<Self>) -> Self::Result {
        let effects = self.book.retry(batch);
        self.changed(ctx, effects)
    }
}

/// Put one failed or cancelled job back to pending with fresh attempts; answered with 1 once
/// that is on disk (0 if a retry of it was under way already).
#[derive(Message)]
#[rtype(result = "Result<u64, LedgerError>")]
pub struct RetryJob(pub JobId);

impl Handler<RetryJob> for Ledger {
    type Result = Reply<u64>;

    fn handle(&mut self, RetryJob(job): RetryJob, ctx: &mut Context<Self>) -> Self::Result {
        let effects = self.book.retry_job(job);
        self.changed(ctx, effects)
    }
}

impl Ledger {
    /// Carries out a change to jobs and answers with how many it changed, once that is on disk.
    fn changed(
        &mut self,
        ctx: &mut Context<Self>,
        effects: Result<Effects, LedgerError>,
    ) -> Reply<u64> {
        let effects = match effects {
            Ok(effects) => effects,
            Err(error) => return ready(Err(error)),
        };
        let (tx, rx) = oneshot::channel();
        self.carry_out(ctx, effects, Some(tx));
        awaiting(rx, |answer| match answer {
            Answer::Changed(count) => Some(count),
            _ => None,
        })
    }
}
