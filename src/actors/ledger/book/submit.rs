//! A client's changes: a batch submitted, jobs cancelled, failed jobs retried.

use super::{
    line_up, spec_bytes, Answer, BatchCounts, Book, Commit, Effects, LiveJob, Lookup, Pending,
    Phase,
};
use crate::actors::ledger::error::LedgerError;
use crate::job::{
    check_idempotency_key, BatchId, CancelTarget, JobId, JobSpec, JobState, SpecBytes,
};
use crate::status::Submitted;
use crate::storage::store::{Change, FailedJob, FinishedJob, StoreError, WorkOrder};
use std::sync::Arc;

/// The largest encoded job spec accepted, in bytes (the job file's line limit, and some).
pub const MAX_SPEC_BYTES: usize = 1024 * 1024 + 4096;

impl Book {
    /// A batch is submitted: checked against the limits, given ids, and written; its jobs join
    /// the queue once it is on disk ([`Book::committed`]). Under an idempotency key the book
    /// knows, it is a repeat: answered with the key's batch, and nothing is queued.
    pub(crate) fn submit(
        &mut self,
        name: String,
        specs: Vec<JobSpec>,
        key: Option<&str>,
        now: u64,
    ) -> Result<Effects, LedgerError> {
        let key: Option<Arc<str>> = match key {
            Some(key) => {
                check_idempotency_key(key).map_err(LedgerError::BadIdempotencyKey)?;
                Some(Arc::from(key))
            }
            None => None,
        };
        // Before any limit: a repeat of a batch on disk is answered even with the queue full.
        if let Some(repeat) = key.as_ref().and_then(|key| self.repeat(key)) {
            return Ok(repeat);
        }
        if specs.is_empty() {
            return Err(LedgerError::EmptyBatch);
        }
        if specs.len() > self.limits.max_batch_jobs {
            return Err(LedgerError::BatchTooLarge {
                jobs: specs.len(),
                limit: self.limits.max_batch_jobs,
            });
        }
        // Unfinished jobs live in memory: past the limit, submissions are refused, not buffered.
        // Batches still being written count too, or concurrent submissions would all pass.
        let unfinished = self.jobs.len() + self.reserved;
        if unfinished.saturating_add(specs.len()) > self.limits.max_unfinished_jobs {
            return Err(LedgerError::QueueFull {
                unfinished,
                jobs: specs.len(),
                limit: self.limits.max_unfinished_jobs,
            });
        }
        for (index, spec) in specs.iter().enumerate() {
            spec.validate().map_err(|reason| LedgerError::InvalidJob {
                index: index + 1,
                reason,
            })?;
        }
        // From here on the coordinator keeps each spec as the bytes it stores and sends.
        let mut encoded = Vec::with_capacity(specs.len());
        for (index, spec) in specs.into_iter().enumerate() {
            let bytes = SpecBytes::encode(&spec);
            if bytes.as_bytes().len() > MAX_SPEC_BYTES {
                return Err(LedgerError::SpecTooLarge {
                    index: index + 1,
                    size: bytes.as_bytes().len(),
                    limit: MAX_SPEC_BYTES,
                });
            }
            encoded.push((spec.name, bytes));
        }
        // Specs live in memory until their jobs finish: a budget of bytes, as of jobs.
        let bytes = spec_bytes(&encoded);
        let held = self.unfinished_bytes + self.reserved_bytes;
        if held.saturating_add(bytes) > self.limits.max_unfinished_bytes {
            return Err(LedgerError::QueueFullBytes {
                unfinished: held,
                batch: bytes,
                limit: self.limits.max_unfinished_bytes,
            });
        }
        let jobs = Arc::new(encoded);
        let batch = self.next_batch;
        self.next_batch += 1;
        let first_job = self.next_job;
        self.next_job += jobs.len() as u64;
        self.reserved += jobs.len();
        self.reserved_bytes += bytes;
        let change = Change::Submit {
            batch,
            name: name.clone(),
            submitted_at_ms: now,
            first_job,
            jobs: jobs.clone(),
            idempotency_key: key.clone(),
        };
        if let Some(key) = &key {
            self.key_writing(key.clone(), batch);
        }
        Ok(Effects {
            commit: Some(Commit {
                changes: vec![change],
                then: Pending::Submit {
                    batch,
                    name,
                    submitted_at_ms: now,
                    first_job,
                    jobs,
                    key,
                },
            }),
            ..Effects::none()
        })
    }

    /// The batch is on disk: its jobs join memory and the queue.
    pub(super) fn accept_batch(
        &mut self,
        batch: BatchId,
        name: String,
        submitted_at_ms: u64,
        first_job: JobId,
        jobs: &[(Option<String>, SpecBytes)],
    ) -> Effects {
        let count = jobs.len() as u64;
        self.jobs.reserve(jobs.len());
        let mut effects = Effects::none();
        effects.enqueue.reserve(jobs.len());
        for (offset, (_name, spec)) in jobs.iter().enumerate() {
            let id = first_job + offset as u64;
            let mut job = LiveJob::queued(spec.clone(), batch, 0, 0, 0);
            effects.enqueue.push(line_up(id, &mut job));
            self.unfinished_bytes += spec.as_bytes().len();
            self.jobs.insert(id, job);
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
        effects.answer = Some(Answer::Submitted(Submitted {
            batch,
            first_job,
            jobs: count,
            unplaceable: Vec::new(),
            repeated: false,
        }));
        effects
    }

    /// A batch's or a job's unfinished jobs are cancelled: withdrawn from the queue or killed,
    /// and recorded `cancelled`; they leave memory once that is on disk.
    pub(crate) fn cancel(
        &mut self,
        target: CancelTarget,
        now: u64,
    ) -> Result<Effects, LedgerError> {
        let chosen: Vec<JobId> = match target {
            CancelTarget::Batch(batch) => {
                if !self.batches.contains_key(&batch) {
                    return Err(LedgerError::NoBatch(batch));
                }
                let mut chosen: Vec<JobId> = self
                    .jobs
                    .iter()
                    .filter(|(_, job)| job.batch == batch && job.phase != Phase::Finishing)
                    .map(|(id, _)| *id)
                    .collect();
                chosen.sort_unstable();
                chosen
            }
            CancelTarget::Job(id) => match self.jobs.get(&id) {
                Some(job) if job.phase != Phase::Finishing => vec![id],
                Some(_) => vec![],
                None if id < self.next_job => vec![],
                None => return Err(LedgerError::NoJob(id)),
            },
        };
        if chosen.is_empty() {
            return Ok(Effects::answer(Answer::Changed(0)));
        }
        let mut effects = Effects::none();
        let mut changes = Vec::with_capacity(chosen.len());
        let mut finishing = Vec::with_capacity(chosen.len());
        for id in chosen {
            let Some(job) = self.jobs.get_mut(&id) else {
                continue;
            };
            let mut stopped = None;
            match job.phase {
                Phase::Queued => effects.withdraw.push(id),
                Phase::Running => {
                    stopped = job
                        .running
                        .as_ref()
                        .map(|running| (running.lease, running.worker.clone()));
                }
                Phase::Backoff | Phase::Finishing => {}
            }
            let before = job.phase;
            job.begin_finishing();
            changes.push(Change::Finish(Box::new(WorkOrder {
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
                result: None,
                cursor: self.cursors.draw(),
            })));
            finishing.push((id, JobState::Cancelled));
            let batch = job.batch;
            self.recount(batch, before, Phase::Finishing);
            self.recording(batch, JobState::Cancelled);
            if let Some((lease, to)) = stopped {
                // Stopped, it reports all the same (and, should the cancel's write fail, its
                // success still counts).
                effects.kill.push(lease);
                self.keep_stale(id, lease, to);
            }
        }
        effects.commit = Some(Commit {
            changes,
            then: Pending::Cancel { finishing },
        });
        Ok(effects)
    }

    /// A retry of a batch's failed jobs: they are read from the store first
    /// ([`Book::failed_jobs_found`]). One retry of a batch at a time, from that read to its
    /// commit, so no job is reopened twice; another asked meanwhile changes nothing.
    pub(crate) fn retry(&mut self, batch: BatchId) -> Result<Effects, LedgerError> {
        if !self.batches.contains_key(&batch) {
            return Err(LedgerError::NoBatch(batch));
        }
        if !self.retrying.insert(batch) {
            return Ok(Effects::answer(Answer::Changed(0)));
        }
        Ok(Effects {
            lookup: Some(Lookup::FailedJobs(batch)),
            ..Effects::none()
        })
    }

    /// A batch's failed jobs, as read for a retry, go back to pending with fresh attempts once
    /// that is on disk.
    pub(crate) fn failed_jobs_found(
        &mut self,
        batch: BatchId,
        found: Result<Vec<FailedJob>, StoreError>,
    ) -> Effects {
        // A job whose own retry is under way is left to it.
        let found = found.map(|mut failed| {
            if !self.retrying_jobs.is_empty() {
                failed.retain(|job| !self.retrying_jobs.contains_key(&job.id));
            }
            failed
        });
        let failed = match found {
            Ok(failed) if !failed.is_empty() => failed,
            Ok(_) => {
                self.retrying.remove(&batch);
                return Effects::answer(Answer::Changed(0));
            }
            Err(error) => {
                self.retrying.remove(&batch);
                return Effects::answer(Answer::Refused(LedgerError::Store {
                    action: "retry",
                    error,
                }));
            }
        };
        let ids = failed.iter().map(|job| job.id).collect();
        Effects {
            commit: Some(Commit {
                changes: vec![Change::Reopen(ids)],
                then: Pending::Reopen { batch, failed },
            }),
            ..Effects::none()
        }
    }

    /// The retry is on disk: the jobs join memory and the queue.
    pub(super) fn reopened(&mut self, batch: BatchId, failed: Vec<FailedJob>) -> Effects {
        self.retrying.remove(&batch);
        let mut effects = Effects::none();
        for found in failed {
            // Failed on disk when read, and only this retry reopens it: it has left memory (a
            // failure being written then was written before the reopen, and told first). A
            // retry of the job alone asked since then learns that this one reopened it.
            if let Some(superseded) = self.retrying_jobs.get_mut(&found.id) {
                *superseded = true;
            }
            if self.jobs.contains_key(&found.id) {
                continue;
            }
            let mut job = LiveJob::queued(found.spec, batch, found.attempts, 0, 0);
            effects.enqueue.push(line_up(found.id, &mut job));
            self.unfinished_bytes += job.spec.as_bytes().len();
            self.jobs.insert(found.id, job);
        }
        let count = effects.enqueue.len() as u64;
        if let Some(counts) = self.batches.get_mut(&batch) {
            counts.failed = counts.failed.saturating_sub(count);
            counts.pending += count;
            if count > 0 {
                counts.finished_at_ms = None;
                counts.rate_from = None;
            }
        }
        tracing::info!(batch, jobs = count, "failed jobs retried");
        effects.answer = Some(Answer::Changed(count));
        effects
    }
}

impl Book {
    /// A retry of one failed or cancelled job: it is read from the store first
    /// ([`Book::finished_job_found`]). One retry of a job at a time, from that read to its
    /// commit; another asked meanwhile changes nothing.
    pub(crate) fn retry_job(&mut self, id: JobId) -> Result<Effects, LedgerError> {
        if id == 0 || id >= self.next_job {
            return Err(LedgerError::NoJob(id));
        }
        if let Some(job) = self.jobs.get(&id) {
            return Err(LedgerError::NotRetryable {
                job: id,
                state: job.state(),
            });
        }
        if self.retrying_jobs.contains_key(&id) {
            return Ok(Effects::answer(Answer::Changed(0)));
        }
        self.retrying_jobs.insert(id, false);
        Ok(Effects {
            lookup: Some(Lookup::FinishedJob(id)),
            ..Effects::none()
        })
    }

    /// The job, as read for its retry, goes back to pending with fresh attempts once that is
    /// on disk, if it is failed or cancelled.
    pub(crate) fn finished_job_found(
        &mut self,
        id: JobId,
        found: Result<Option<FinishedJob>, StoreError>,
    ) -> Effects {
        let superseded = self.retrying_jobs.remove(&id).unwrap_or(false);
        let refuse = |error| Effects::answer(Answer::Refused(error));
        let found = match found {
            Ok(Some(found)) => found,
            Ok(None) => return refuse(LedgerError::NoJob(id)),
            Err(error) => {
                return refuse(LedgerError::Store {
                    action: "retry the job",
                    error,
                })
            }
        };
        // Reopened by a retry of its batch since it was read: what was read is out of date.
        if let Some(job) = self.jobs.get(&id) {
            return refuse(LedgerError::NotRetryable {
                job: id,
                state: job.state(),
            });
        }
        if superseded {
            return Effects::answer(Answer::Changed(0));
        }
        if !matches!(found.state, JobState::Failed | JobState::Cancelled) {
            return refuse(LedgerError::NotRetryable {
                job: id,
                state: found.state,
            });
        }
        // Held until the commit, so a retry of its batch meanwhile leaves it to this one.
        self.retrying_jobs.insert(id, false);
        Effects {
            commit: Some(Commit {
                changes: vec![Change::Reopen(vec![id])],
                then: Pending::ReopenJob(found),
            }),
            ..Effects::none()
        }
    }

    /// The job's retry is on disk: it joins memory and the queue.
    pub(super) fn job_reopened(&mut self, found: FinishedJob) -> Effects {
        let id = found.job.id;
        self.retrying_jobs.remove(&id);
        if self.jobs.contains_key(&id) {
            // A retry of its batch, written just before, reopened it already.
            return Effects::answer(Answer::Changed(0));
        }
        // A job cancelled in line may have had its turn handed out as it was cancelled (the
        // start, arriving after, was stopped): that number is spent, if not on record.
        let attempts = match found.state {
            JobState::Cancelled => found.job.attempts.saturating_add(1),
            _ => found.job.attempts,
        };
        let mut effects = Effects::none();
        let mut job = LiveJob::queued(found.job.spec, found.batch, attempts, 0, 0);
        effects.enqueue.push(line_up(id, &mut job));
        self.unfinished_bytes += job.spec.as_bytes().len();
        self.jobs.insert(id, job);
        if let Some(counts) = self.batches.get_mut(&found.batch) {
            let column = match found.state {
                JobState::Cancelled => &mut counts.cancelled,
                _ => &mut counts.failed,
            };
            *column = column.saturating_sub(1);
            counts.pending += 1;
            counts.finished_at_ms = None;
            counts.rate_from = None;
        }
        tracing::info!(job = id, batch = found.batch, was = %found.state, "job retried");
        effects.answer = Some(Answer::Changed(1));
        effects
    }
}
