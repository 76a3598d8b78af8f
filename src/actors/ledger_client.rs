//! The Ledger's answers to clients: submissions, progress, job records, cancel and retry.

use crate::actors::ledger::{BatchCounts, Ledger, LiveJob, Phase};
use crate::actors::queue::PendingJob;
use crate::actors::scheduler::{Enqueue, KillAttempts, Withdraw};
use crate::job::{now_ms, BatchId, JobId, JobSpec, JobState, SpecBytes};
use crate::net::protocol::{CancelTarget, ClientRequest, ClientResponse};
use crate::status::JobInfo;
use crate::storage::journal::{JournalError, WorkOrder, Write};
use crate::storage::queries;
use actix::prelude::*;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

/// The most jobs one batch may hold.
pub const MAX_JOBS_PER_BATCH: usize = 1_000_000;

/// The largest encoded job spec accepted, in bytes (the job file's line limit, and some).
pub const MAX_SPEC_BYTES: usize = 1024 * 1024 + 4096;

/// The most jobs one page of `Jobs` returns: with bounded output tails and errors, a page stays
/// below the frame size limit.
pub const MAX_PAGE: u32 = 1_000;

/// A client's request, answered when it can be.
#[derive(Message)]
#[rtype(result = "ClientResponse")]
pub struct ClientCall(pub ClientRequest);

type Answer = ResponseActFuture<Ledger, ClientResponse>;

fn ready(response: ClientResponse) -> Answer {
    Box::pin(actix::fut::ready(response))
}

fn answer_from(rx: oneshot::Receiver<ClientResponse>) -> Answer {
    Box::pin(
        async move {
            rx.await.unwrap_or_else(|_| {
                ClientResponse::Error("the coordinator is shutting down".into())
            })
        }
        .into_actor_free(),
    )
}

/// `into_actor` without an actor reference, for futures that need none.
trait IntoActorFree: std::future::Future + Sized {
    fn into_actor_free(self) -> actix::fut::future::FutureWrap<Self, Ledger> {
        actix::fut::wrap_future(self)
    }
}

impl<F: std::future::Future> IntoActorFree for F {}

impl Handler<ClientCall> for Ledger {
    type Result = Answer;

    fn handle(&mut self, ClientCall(request): ClientCall, ctx: &mut Context<Self>) -> Answer {
        match request {
            ClientRequest::Submit { name, jobs } => self.submit(ctx, name, jobs),
            ClientRequest::Batch(id) => ready(self.batch(id)),
            ClientRequest::Batches => ready(ClientResponse::Batches(
                self.batches
                    .iter()
                    .map(|(id, counts)| counts.info(*id))
                    .collect(),
            )),
            ClientRequest::WaitBatch { batch, timeout_ms } => self.wait_batch(batch, timeout_ms),
            ClientRequest::Job(id) => self.job(id),
            ClientRequest::Jobs {
                batch,
                state,
                after,
                limit,
            } => self.jobs_page(batch, state, after, limit.min(MAX_PAGE)),
            ClientRequest::Status => ready(ClientResponse::Error(
                "the status is put together by the session, not the ledger".into(),
            )),
            ClientRequest::Workers => ready(ClientResponse::Error(
                "workers are listed by the registry, not the ledger".into(),
            )),
            ClientRequest::Cancel(target) => self.cancel(ctx, target),
            ClientRequest::Retry(batch) => self.retry(batch),
        }
    }
}

/// The newest batches, oldest of them first: what a dashboard polls, at a cost that does not
/// grow with the history.
#[derive(Message)]
#[rtype(result = "Vec<crate::status::BatchInfo>")]
pub struct RecentBatches(pub usize);

impl Handler<RecentBatches> for Ledger {
    type Result = MessageResult<RecentBatches>;

    fn handle(
        &mut self,
        RecentBatches(count): RecentBatches,
        _ctx: &mut Context<Self>,
    ) -> Self::Result {
        let mut recent: Vec<_> = self
            .batches
            .iter()
            .rev()
            .take(count)
            .map(|(id, counts)| counts.info(*id))
            .collect();
        recent.reverse();
        MessageResult(recent)
    }
}

impl Ledger {
    fn batch(&self, id: BatchId) -> ClientResponse {
        match self.batches.get(&id) {
            Some(counts) => ClientResponse::Batch(counts.info(id)),
            None => ClientResponse::Error(format!("no batch {id}")),
        }
    }

    fn submit(&mut self, ctx: &mut Context<Self>, name: String, jobs: Vec<JobSpec>) -> Answer {
        if jobs.is_empty() {
            return ready(ClientResponse::Error("the batch has no jobs".into()));
        }
        let limits = self.limits();
        if jobs.len() > limits.max_batch_jobs {
            return ready(ClientResponse::Error(format!(
                "the batch has {} jobs, more than the limit of {}; split it",
                jobs.len(),
                limits.max_batch_jobs
            )));
        }
        // Unfinished jobs live in memory: past the limit, submissions are refused, not buffered.
        // Batches still being written count too, or concurrent submissions would all pass.
        let unfinished = self.jobs.len() + self.reserved;
        if unfinished.saturating_add(jobs.len()) > limits.max_unfinished_jobs {
            return ready(ClientResponse::Error(format!(
                "queue full: {unfinished} jobs are unfinished and the batch has {}, above the \
                 limit of {} (--max-pending-jobs); submit again once some have finished",
                jobs.len(),
                limits.max_unfinished_jobs
            )));
        }
        for (index, spec) in jobs.iter().enumerate() {
            if let Err(error) = spec.validate() {
                return ready(ClientResponse::Error(format!("job {}: {error}", index + 1)));
            }
        }
        // From here on the coordinator keeps each spec as the bytes it stores and sends.
        let mut encoded = Vec::with_capacity(jobs.len());
        for (index, spec) in jobs.into_iter().enumerate() {
            let bytes = SpecBytes::encode(&spec);
            if bytes.as_bytes().len() > MAX_SPEC_BYTES {
                return ready(ClientResponse::Error(format!(
                    "job {}: its spec is {} bytes, above the limit of {MAX_SPEC_BYTES}",
                    index + 1,
                    bytes.as_bytes().len()
                )));
            }
            encoded.push((spec.name, bytes));
        }
        let jobs = Arc::new(encoded);
        let batch = self.next_batch;
        self.next_batch += 1;
        let first_job = self.next_job;
        self.next_job += jobs.len() as u64;
        let submitted_at_ms = now_ms();
        let write = Write::Submit {
            batch,
            name: name.clone(),
            submitted_at_ms,
            first_job,
            jobs: jobs.clone(),
        };
        let (tx, rx) = oneshot::channel();
        let reserved = jobs.len();
        self.reserved += reserved;
        self.commit(ctx, vec![write], move |ledger, _ctx, result| {
            ledger.reserved -= reserved;
            let response = match result {
                Ok(()) => ledger.accept_batch(batch, name, submitted_at_ms, first_job, jobs),
                Err(error) => ClientResponse::Error(format!("cannot queue the batch: {error}")),
            };
            let _ = tx.send(response);
        });
        answer_from(rx)
    }

    /// The batch is on disk: its jobs join memory and the queue.
    fn accept_batch(
        &mut self,
        batch: BatchId,
        name: String,
        submitted_at_ms: u64,
        first_job: JobId,
        jobs: Arc<Vec<(Option<String>, SpecBytes)>>,
    ) -> ClientResponse {
        let count = jobs.len() as u64;
        self.jobs.reserve(jobs.len());
        let mut queued = Vec::with_capacity(jobs.len());
        for (offset, (_name, spec)) in jobs.iter().enumerate() {
            let id = first_job + offset as u64;
            queued.push(PendingJob {
                job: id,
                batch,
                attempt: 1,
                spec: spec.clone(),
            });
            self.jobs
                .insert(id, LiveJob::queued(spec.clone(), batch, 0, 0, 0));
        }
        tracing::info!(batch, %name, jobs = count, "batch queued");
        self.batches.insert(
            batch,
            BatchCounts {
                total: count,
                pending: count,
                ..BatchCounts::new(name, submitted_at_ms)
            },
        );
        self.scheduler.do_send(Enqueue(queued));
        ClientResponse::Submitted {
            batch,
            first_job,
            jobs: count,
        }
    }

    fn wait_batch(&mut self, batch: BatchId, timeout_ms: u64) -> Answer {
        let Some(counts) = self.batches.get(&batch) else {
            return ready(ClientResponse::Error(format!("no batch {batch}")));
        };
        let info = counts.info(batch);
        if info.done {
            return ready(ClientResponse::Batch(info));
        }
        let (tx, rx) = oneshot::channel();
        self.waiters.entry(batch).or_default().push(tx);
        let timeout = Duration::from_millis(timeout_ms);
        Box::pin(
            async move { tokio::time::timeout(timeout, rx).await }
                .into_actor(self)
                .map(move |waited, ledger, _ctx| match waited {
                    Ok(Ok(info)) => ClientResponse::Batch(info),
                    _ => {
                        // This waiter gave up: forget it, and any other that did.
                        if let Some(waiters) = ledger.waiters.get_mut(&batch) {
                            waiters.retain(|waiter| !waiter.is_closed());
                        }
                        ledger.batch(batch)
                    }
                }),
        )
    }

    fn live_info(&self, id: JobId, job: &LiveJob) -> JobInfo {
        let state = match job.phase {
            Phase::Queued | Phase::Backoff => JobState::Pending,
            Phase::Running | Phase::Finishing => JobState::Running,
        };
        JobInfo {
            id,
            batch: job.batch,
            name: job.spec.decode().ok().and_then(|spec| spec.name),
            state,
            attempts: job.attempts,
            lost_attempts: job.lost,
            worker: job.worker_name(),
            exit_code: None,
            duration_ms: None,
            queued_at_ms: self
                .batches
                .get(&job.batch)
                .map_or(0, |counts| counts.submitted_at_ms),
            started_at_ms: job.running.as_ref().map(|running| running.started_at_ms),
            finished_at_ms: None,
            output_tail: None,
            error: None,
            duplicates: 0,
            outputs: Vec::new(),
            history: Vec::new(),
        }
    }

    fn job(&mut self, id: JobId) -> Answer {
        let live = self.jobs.get(&id).map(|job| self.live_info(id, job));
        let journal = self.journal.clone();
        Box::pin(
            async move {
                match live {
                    Some(mut info) => {
                        info.history = journal.read(move |conn| queries::history(conn, id)).await?;
                        Ok(Some(info))
                    }
                    None => journal.read(move |conn| queries::job(conn, id)).await,
                }
            }
            .into_actor_free()
            .map(
                move |found: Result<Option<JobInfo>, JournalError>, _ledger, _ctx| match found {
                    Ok(Some(info)) => ClientResponse::Job(Box::new(info)),
                    Ok(None) => ClientResponse::Error(format!("no job {id}")),
                    Err(error) => ClientResponse::Error(error.to_string()),
                },
            ),
        )
    }

    fn jobs_page(
        &mut self,
        batch: Option<BatchId>,
        state: Option<JobState>,
        after: JobId,
        limit: u32,
    ) -> Answer {
        if let Some(batch) = batch {
            if !self.batches.contains_key(&batch) {
                return ready(ClientResponse::Error(format!("no batch {batch}")));
            }
        }
        if let Some(wanted @ (JobState::Pending | JobState::Running)) = state {
            // Unfinished jobs live in memory only.
            // Unfinished jobs live in memory only. Choose the page by id first and describe
            // only its jobs: a million pending jobs must not all be decoded for one page.
            let waiting = wanted == JobState::Pending;
            let mut ids: Vec<JobId> = self
                .jobs
                .iter()
                .filter(|(id, job)| {
                    **id > after
                        && batch.is_none_or(|batch| job.batch == batch)
                        && matches!(job.phase, Phase::Queued | Phase::Backoff) == waiting
                })
                .map(|(id, _)| *id)
                .collect();
            let limit = (limit as usize).min(ids.len());
            if limit > 0 {
                ids.select_nth_unstable(limit - 1);
            }
            ids.truncate(limit);
            ids.sort_unstable();
            let page = ids
                .iter()
                .map(|id| self.live_info(*id, &self.jobs[id]))
                .collect();
            return ready(ClientResponse::Jobs(page));
        }
        let journal = self.journal.clone();
        Box::pin(
            async move {
                journal
                    .read(move |conn| queries::jobs(conn, batch, state, after, limit))
                    .await
            }
            .into_actor(self)
            .map(|page, ledger, _ctx| match page {
                Ok(mut page) => {
                    // The database sees unfinished jobs as pending; memory knows better.
                    for info in page.iter_mut() {
                        if let Some(job) = ledger.jobs.get(&info.id) {
                            *info = ledger.live_info(info.id, job);
                        }
                    }
                    ClientResponse::Jobs(page)
                }
                Err(error) => ClientResponse::Error(error.to_string()),
            }),
        )
    }

    fn cancel(&mut self, ctx: &mut Context<Self>, target: CancelTarget) -> Answer {
        let chosen: Vec<JobId> = match target {
            CancelTarget::Batch(batch) => {
                if !self.batches.contains_key(&batch) {
                    return ready(ClientResponse::Error(format!("no batch {batch}")));
                }
                self.jobs
                    .iter()
                    .filter(|(_, job)| job.batch == batch && job.phase != Phase::Finishing)
                    .map(|(id, _)| *id)
                    .collect()
            }
            CancelTarget::Job(id) => match self.jobs.get(&id) {
                Some(job) if job.phase != Phase::Finishing => vec![id],
                Some(_) => vec![],
                None if id < self.next_job => return ready(ClientResponse::Changed(0)),
                None => return ready(ClientResponse::Error(format!("no job {id}"))),
            },
        };
        let mut writes = Vec::with_capacity(chosen.len());
        let mut withdraw = Vec::new();
        let mut kill = Vec::new();
        let mut finishing = Vec::with_capacity(chosen.len());
        let now = now_ms();
        for id in chosen {
            let Some(job) = self.jobs.get_mut(&id) else {
                continue;
            };
            match job.phase {
                Phase::Queued => withdraw.push(id),
                Phase::Running => kill.extend(job.running.as_ref().map(|running| running.lease)),
                Phase::Backoff | Phase::Finishing => {}
            }
            let before = job.phase;
            job.phase = Phase::Finishing;
            writes.push(Write::Finish(Box::new(WorkOrder {
                job: id,
                state: JobState::Cancelled,
                lease: None,
                outputs: None,
                worker: job.worker_name(),
                attempts: job.attempts,
                lost_attempts: job.lost,
                failures: job.failures,
                started_at_ms: None,
                finished_at_ms: now,
                duration_ms: None,
                exit_code: None,
                output_tail: None,
                error: Some("cancelled by a user".into()),
            })));
            finishing.push((id, JobState::Cancelled));
            let batch = job.batch;
            self.recount(batch, before, Phase::Finishing);
        }
        if !withdraw.is_empty() {
            self.scheduler.do_send(Withdraw(withdraw));
        }
        if !kill.is_empty() {
            self.scheduler.do_send(KillAttempts(kill));
        }
        let count = finishing.len() as u64;
        if count == 0 {
            return ready(ClientResponse::Changed(0));
        }
        let (tx, rx) = oneshot::channel();
        self.commit(ctx, writes, move |ledger, _ctx, result| {
            let response = match result {
                Ok(()) => {
                    ledger.finished(finishing);
                    ClientResponse::Changed(count)
                }
                Err(error) => {
                    // Not cancelled after all: the jobs run again.
                    ledger.unfinish(finishing);
                    ClientResponse::Error(format!("cannot cancel: {error}"))
                }
            };
            let _ = tx.send(response);
        });
        answer_from(rx)
    }

    fn retry(&mut self, batch: BatchId) -> Answer {
        if !self.batches.contains_key(&batch) {
            return ready(ClientResponse::Error(format!("no batch {batch}")));
        }
        let journal = self.journal.clone();
        Box::pin(
            async move {
                journal
                    .read(move |conn| queries::failed_jobs(conn, batch))
                    .await
            }
            .into_actor(self)
            .then(move |found, ledger, ctx| {
                let (tx, rx) = oneshot::channel();
                match found {
                    Ok(failed) => ledger.reopen(ctx, batch, failed, tx),
                    Err(error) => {
                        let _ = tx.send(ClientResponse::Error(error.to_string()));
                    }
                }
                answer_from(rx)
            }),
        )
    }

    /// Puts failed jobs back to pending with fresh attempts, once that is on disk.
    fn reopen(
        &mut self,
        ctx: &mut Context<Self>,
        batch: BatchId,
        failed: Vec<queries::FailedJob>,
        tx: oneshot::Sender<ClientResponse>,
    ) {
        if failed.is_empty() {
            let _ = tx.send(ClientResponse::Changed(0));
            return;
        }
        let ids: Vec<JobId> = failed.iter().map(|job| job.id).collect();
        self.commit(
            ctx,
            vec![Write::Reopen { jobs: ids }],
            move |ledger, _ctx, result| {
                if let Err(error) = result {
                    let _ = tx.send(ClientResponse::Error(format!("cannot retry: {error}")));
                    return;
                }
                let mut queued = Vec::with_capacity(failed.len());
                for found in failed {
                    let id = found.id;
                    if ledger.jobs.contains_key(&id) {
                        continue;
                    }
                    let job = LiveJob::queued(found.spec, batch, found.attempts, 0, 0);
                    queued.push(ledger.pending_job(id, &job));
                    ledger.jobs.insert(id, job);
                }
                let count = queued.len() as u64;
                if let Some(counts) = ledger.batches.get_mut(&batch) {
                    counts.failed = counts.failed.saturating_sub(count);
                    counts.pending += count;
                    if count > 0 {
                        counts.finished_at_ms = None;
                        counts.rate_from = None;
                    }
                }
                tracing::info!(batch, jobs = count, "failed jobs retried");
                ledger.scheduler.do_send(Enqueue(queued));
                let _ = tx.send(ClientResponse::Changed(count));
            },
        );
    }
}
