//! Finished jobs' records as programs take them: a page after a cursor ([`ReadResults`]), and
//! one job submitted and answered with its record ([`CallJob`]).
//!
//! A call's answer is built from the terminal record the Ledger commits (the [`WorkOrder`]),
//! once that commit is durable: no store read on the way, so a call costs the two commits of
//! its job (queued, recorded) and little more. Its waiter is in place before the job can be
//! queued, so the record cannot go by unseen.

use super::book::{Answer, Commit, Pending, Phase};
use super::requests::{ready, CallAnswer, Reply};
use super::{CallJob, Ledger, LedgerError, ReadResults, MAX_PAGE, MAX_RESULTS_PAGE_BYTES};
use crate::job::{now_ms, BatchId, JobId};
use crate::status::{Completion, Finished, Resulted, ResultsPage};
use crate::storage::store::{Change, CompletionFilter, LedgerStore, StoreError, WorkOrder};
use actix::prelude::*;
use std::sync::Arc;
use tokio::sync::oneshot;

/// The name of the batch of one a call makes.
pub const CALL_BATCH: &str = "call";

/// Where a call's answer goes.
type CallRespond = oneshot::Sender<Result<Completion, LedgerError>>;

/// The calls waiting for one job's final record.
pub(super) struct CallWaiter {
    batch: BatchId,
    name: Option<String>,
    respond: Vec<CallRespond>,
    /// Its job's terminal record was being written when this waiter came (a repeated key): that
    /// commit carries nothing for it, so once its job has left memory its record is read.
    late: bool,
}

/// The records a commit carries for the calls waiting on its jobs, answered once it is durable.
pub(super) type CallRecords = Vec<(JobId, Completion)>;

/// A terminal record as a call (or a follower) is given it.
fn completion(order: &WorkOrder, batch: BatchId, name: Option<String>) -> Completion {
    Resulted {
        record: Finished {
            cursor: order.cursor,
            id: order.job,
            batch,
            name,
            state: order.state,
            exit_code: order.exit_code,
            worker: order.worker.clone(),
            duration_ms: order.duration_ms,
            finished_at_ms: order.finished_at_ms,
            error: order.error.clone(),
        },
        result: order.result.as_deref().map(<[u8]>::to_vec),
    }
}

impl Ledger {
    /// What a commit about to be sent means for followers and calls: the highest cursor it
    /// records, and the records of the jobs calls wait for.
    pub(super) fn records_in(&self, changes: &[Change]) -> (Option<u64>, CallRecords) {
        let mut last = None;
        let mut calls = Vec::new();
        for change in changes {
            let Change::Finish(order) = change else {
                continue;
            };
            last = last.max(Some(order.cursor));
            if let Some(waiter) = self.calls.get(&order.job).filter(|waiter| !waiter.late) {
                let record = completion(order, waiter.batch, waiter.name.clone());
                calls.push((order.job, record));
            }
        }
        (last, calls)
    }

    /// A commit is durable: followers hear of its last cursor, and calls get their records.
    pub(super) fn records_durable(&mut self, last: Option<u64>, calls: CallRecords) {
        if let Some(last) = last {
            self.recorded.send_if_modified(|recorded| {
                let moved = last > *recorded;
                *recorded = (*recorded).max(last);
                moved
            });
        }
        for (job, record) in calls {
            for respond in self
                .calls
                .remove(&job)
                .map_or(Vec::new(), |waiter| waiter.respond)
            {
                let _ = respond.send(Ok(record.clone()));
            }
        }
    }

    /// Calls that came while their job's record was being written: once that write ended, the
    /// record is read (the job left memory), or they wait for the next one (it failed).
    pub(super) fn answer_late_calls(&mut self, ctx: &mut Context<Self>) {
        if !self.calls.values().any(|waiter| waiter.late) {
            return;
        }
        let mut gone = Vec::new();
        for (job, waiter) in &mut self.calls {
            match self.book.phase(*job) {
                Some(Phase::Finishing) if waiter.late => {}
                Some(_) => waiter.late = false,
                None if waiter.late => gone.push(*job),
                None => {}
            }
        }
        for job in gone {
            if let Some(waiter) = self.calls.remove(&job) {
                self.read_call(ctx, job, waiter.batch, waiter.respond);
            }
        }
    }

    /// A call waits for `job`: answered from its terminal record when that commit is durable.
    fn await_call(
        &mut self,
        job: JobId,
        batch: BatchId,
        name: Option<String>,
        respond: CallRespond,
    ) {
        let late = self.book.phase(job) == Some(Phase::Finishing);
        let waiter = self.calls.entry(job).or_insert_with(|| CallWaiter {
            batch,
            name,
            respond: Vec::new(),
            late,
        });
        waiter.respond.push(respond);
    }

    /// A repeated key's job: waited for while it is unfinished, read once it is finished.
    fn follow_call(
        &mut self,
        ctx: &mut Context<Self>,
        job: JobId,
        batch: BatchId,
        respond: CallRespond,
    ) {
        match self.book.live_job(job) {
            Some(info) => self.await_call(job, info.batch, info.name, respond),
            None => self.read_call(ctx, job, batch, vec![respond]),
        }
    }

    /// Answers calls with their finished job's record, read from the store off the loop; a job
    /// reopened by a retry meanwhile is waited for again.
    fn read_call(
        &mut self,
        ctx: &mut Context<Self>,
        job: JobId,
        batch: BatchId,
        respond: Vec<CallRespond>,
    ) {
        let read = read_record(self.store.clone(), batch, job);
        ctx.spawn(read.into_actor(self).map(move |found, ledger, _ctx| {
            let answer = match found {
                Ok(Some(record)) => Ok(record),
                Ok(None) => match ledger.book.live_job(job) {
                    Some(info) => {
                        for respond in respond {
                            ledger.await_call(job, info.batch, info.name.clone(), respond);
                        }
                        return;
                    }
                    None => Err(LedgerError::NoJob(job)),
                },
                Err(error) => Err(LedgerError::Store {
                    action: "read the job's record",
                    error,
                }),
            };
            for respond in respond {
                let _ = respond.send(answer.clone());
            }
        }));
    }

    /// Calls nobody waits for any more are forgotten.
    pub(super) fn forget_abandoned_calls(&mut self) {
        self.calls.retain(|_, waiter| {
            waiter.respond.retain(|respond| !respond.is_closed());
            !waiter.respond.is_empty()
        });
    }

    /// Every waiting call is told that this coordinator answers no more.
    pub(super) fn refuse_calls(&mut self, error: LedgerError) {
        for (_, waiter) in self.calls.drain() {
            for respond in waiter.respond {
                let _ = respond.send(Err(error.clone()));
            }
        }
    }
}

/// A finished job's record with its result, from its batch's pages.
async fn read_record(
    store: Arc<dyn LedgerStore>,
    batch: BatchId,
    job: JobId,
) -> Result<Option<Completion>, StoreError> {
    let mut after = 0;
    loop {
        let filter = CompletionFilter {
            batch: Some(batch),
            after,
            limit: MAX_PAGE,
        };
        let page = store.completions(filter).await?;
        let Some(last) = page.last() else {
            return Ok(None);
        };
        after = last.record.cursor;
        if let Some(found) = page.into_iter().find(|record| record.record.id == job) {
            return Ok(Some(found));
        }
    }
}

impl Handler<CallJob> for Ledger {
    type Result = MessageResult<CallJob>;

    fn handle(&mut self, call: CallJob, ctx: &mut Context<Self>) -> Self::Result {
        let (call_tx, call_rx) = oneshot::channel();
        let answer = CallAnswer(call_rx);
        if let Some(refused) = self.refusal() {
            let _ = call_tx.send(Err(refused));
            return MessageResult(answer);
        }
        let name = call.spec.name.clone();
        let key = call.idempotency_key.as_deref();
        let mut effects = match self
            .book
            .submit(CALL_BATCH.into(), vec![call.spec], key, now_ms())
        {
            Ok(effects) => effects,
            Err(error) => {
                let _ = call_tx.send(Err(error));
                return MessageResult(answer);
            }
        };
        let mut repeat = Some(call_tx);
        // A new job is queued once this commit is durable, which this actor hears after this
        // handler, or at once when it runs unwritten (see `unwritten`): its waiter is in
        // place first either way.
        let new_job = match &effects.commit {
            Some(Commit {
                then: Pending::Submit {
                    batch, first_job, ..
                },
                ..
            }) => Some((*batch, *first_job)),
            _ => None,
        };
        // Taken only for a new job: a repeated key's call follows its job once answered.
        if let Some((batch, job)) = new_job {
            if let Some(respond) = repeat.take() {
                self.await_call(job, batch, name, respond);
            }
        }
        let (tx, rx) = oneshot::channel();
        let runs_now =
            new_job.filter(|(_, job)| !self.closing && self.unwritten.may_run_unwritten(*job));
        match (runs_now, effects.commit.take()) {
            // Its job runs at once, and its submission goes to disk with its result.
            (Some((_, job)), Some(Commit { changes, mut then })) => {
                // Its key stays "being written" until the submission is on disk: a repeat
                // (a batch under it too) is answered then.
                let key = match &mut then {
                    Pending::Submit { key, .. } => key.take(),
                    _ => None,
                };
                if let Some(submission) = changes.into_iter().next() {
                    self.unwritten.hold(job, submission, key);
                }
                self.carry_out(ctx, effects, None);
                let accepted = self.book.committed(then, Ok(()), now_ms());
                self.carry_out(ctx, accepted, Some(tx));
                self.write_calls_later(ctx);
            }
            (_, commit) => {
                effects.commit = commit;
                self.carry_out(ctx, effects, Some(tx));
            }
        }
        // The submission's answer is awaited here; the call's record goes from the waiter
        // straight to the caller, with no turn of this actor on the way.
        ctx.spawn(rx.into_actor(self).map(move |answer, ledger, ctx| {
            let refused = match answer {
                Ok(Answer::Submitted(submitted)) => {
                    // A repeated key: the job it made.
                    if let Some(respond) = repeat {
                        ledger.follow_call(ctx, submitted.first_job, submitted.batch, respond);
                    }
                    return;
                }
                Ok(Answer::Refused(error)) => error,
                _ => LedgerError::ShuttingDown,
            };
            let waiting = new_job
                .and_then(|(_, job)| ledger.calls.remove(&job))
                .map_or(Vec::new(), |waiter| waiter.respond);
            for respond in repeat.into_iter().chain(waiting) {
                let _ = respond.send(Err(refused.clone()));
            }
        }));
        MessageResult(answer)
    }
}

impl Handler<ReadResults> for Ledger {
    type Result = Reply<ResultsPage>;

    fn handle(&mut self, read: ReadResults, _ctx: &mut Context<Self>) -> Self::Result {
        // Done before the read: every record of the batch is on disk, and the read sees it.
        let done_before = match read.batch {
            Some(batch) => match self.book.batch(batch, now_ms()) {
                Ok(info) => info.done,
                Err(error) => return ready(Err(error)),
            },
            None => false,
        };
        let last = *self.recorded.borrow();
        if read.after > last {
            return ready(Err(LedgerError::CursorBeyondEnd {
                cursor: read.after,
                last,
            }));
        }
        let limit = read.limit.clamp(1, MAX_PAGE);
        // One more than the page holds: whether anything is left after it.
        let filter = CompletionFilter {
            batch: read.batch,
            after: read.after,
            limit: limit + 1,
        };
        let found = self.store.completions(filter);
        Box::pin(actix::fut::wrap_future(async move {
            let found = found.await.map_err(|error| LedgerError::Store {
                action: "read the results",
                error,
            })?;
            Ok(page(found, read.after, limit as usize, done_before))
        }))
    }
}

/// A page of what was read (which is at most one record more than `limit`, and at most one
/// record past [`MAX_RESULTS_PAGE_BYTES`] of results): up to `limit` records, stopping before
/// the record whose result would take it past the bytes, but always holding one.
fn page(mut found: Vec<Completion>, after: u64, limit: usize, done_before: bool) -> ResultsPage {
    let mut bytes = 0;
    let mut kept = 0;
    for record in found.iter().take(limit) {
        let size = record.result.as_ref().map_or(0, Vec::len);
        if kept > 0 && bytes + size > MAX_RESULTS_PAGE_BYTES {
            break;
        }
        bytes += size;
        kept += 1;
    }
    let rest = found.len() > kept;
    found.truncate(kept);
    ResultsPage {
        cursor: found.last().map_or(after, |record| record.record.cursor),
        results: found,
        // A page of one result past the bytes may have had more after it, unread.
        done: done_before && !rest && bytes <= MAX_RESULTS_PAGE_BYTES,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::JobState;

    fn record(cursor: u64, bytes: usize) -> Completion {
        Resulted {
            record: Finished {
                cursor,
                id: cursor,
                batch: 1,
                name: None,
                state: JobState::Succeeded,
                exit_code: Some(0),
                worker: None,
                duration_ms: None,
                finished_at_ms: 0,
                error: None,
            },
            result: (bytes > 0).then(|| vec![0; bytes]),
        }
    }

    fn cursors(page: &ResultsPage) -> Vec<u64> {
        page.results
            .iter()
            .map(|record| record.record.cursor)
            .collect()
    }

    #[test]
    fn a_page_holds_its_limit_and_is_the_last_only_if_nothing_was_left() {
        let read = vec![record(3, 0), record(5, 0), record(9, 0)];
        let full = page(read.clone(), 2, 2, true);
        assert_eq!(
            (cursors(&full), full.cursor, full.done),
            (vec![3, 5], 5, false)
        );
        let last = page(read[2..].to_vec(), 5, 2, true);
        assert_eq!((cursors(&last), last.cursor, last.done), (vec![9], 9, true));
        let not_done = page(read[2..].to_vec(), 5, 2, false);
        assert!(
            !not_done.done,
            "a batch not done before the read may have more"
        );
        let empty = page(Vec::new(), 9, 2, true);
        assert_eq!(
            (cursors(&empty), empty.cursor, empty.done),
            (vec![], 9, true)
        );
    }

    #[test]
    fn a_page_stops_before_the_result_that_passes_its_bytes_but_holds_one() {
        let half = MAX_RESULTS_PAGE_BYTES / 2;
        let read = vec![record(1, half), record(2, half), record(3, 1)];
        let first = page(read, 0, 10, true);
        assert_eq!((cursors(&first), first.done), (vec![1, 2], false));
        let huge = vec![record(4, MAX_RESULTS_PAGE_BYTES + 1), record(5, 1)];
        let alone = page(huge.clone(), 3, 10, true);
        assert_eq!((cursors(&alone), alone.done), (vec![4], false));
        // Read alone, past the bytes: what came after was not read, so not the last.
        let alone = page(huge[..1].to_vec(), 3, 10, true);
        assert_eq!((cursors(&alone), alone.done), (vec![4], false));
    }
}
