//! Judging results: the first success of a job is recorded, later ones are duplicates; a
//! failure of the current attempt is retried with backoff until `max_attempts`, then recorded;
//! a failure the worker says another attempt would repeat (a command that cannot start, an
//! input that does not exist) is recorded at once.

use super::{
    backoff, work_order, Book, Claim, Commit, Effects, Lookup, Notice, Pending, Phase,
    RunningAttempt, WorkerRef,
};
use crate::job::{
    attempt_prefix, lies_under, AttemptResult, JobId, JobState, Lease, ManifestOrder, Outcome,
    WorkerId,
};
use crate::status::FailureInfo;
use crate::storage::store::{AttemptRow, Change, StoreError};
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

impl Book {
    /// A worker's results, in the order it reported them.
    pub(crate) fn results(
        &mut self,
        worker: &WorkerRef,
        results: &[AttemptResult],
        now: u64,
    ) -> Effects {
        let mut effects = Effects::none();
        let mut changes = Vec::new();
        let mut finishing = Vec::new();
        let mut ack_now = Vec::new();
        let mut acked = Vec::new();
        let mut recorded = Vec::new();
        let mut manifests = Vec::new();
        let mut duplicates = Vec::new();
        let mut late = Vec::new();
        // Counted in the statistics once written: a failed write sees these results again.
        let mut ran_ms = Vec::new();
        let mut failures = Vec::new();
        for reported in results {
            // What the Scheduler did with the job (a success's it took out of line) follows what
            // the worker reported; what the result means follows what the book makes of it.
            let succeeded = reported.outcome == Outcome::Succeeded;
            let vetted = self.vet_result_size(self.vet_outputs(reported));
            let result = vetted.as_ref();
            // An attempt that ended while the coordinator was down, for a job held back since:
            // that attempt is the job's, and its result counts as the job's own.
            // (A success's job the Scheduler took out of its line, so one in line is taken too.)
            let claim = Claim {
                job: result.job,
                lease: result.lease,
                attempt: result.attempt,
                epoch: result.epoch,
                started_at_ms: result.started_at_ms,
            };
            self.take_back(&claim, &worker.name, succeeded, now);
            if !self.jobs.contains_key(&result.job) {
                if succeeded && result.job < self.next_job {
                    // Finished: the store tells a resend of the recorded result from a
                    // duplicate.
                    late.push((result.job, result.lease));
                } else {
                    ack_now.push(result.lease);
                }
                continue;
            }
            if !self.vouched(result.job, result.lease, &worker.name) {
                // An attempt never given to this worker: a worker speaks for its own only.
                tracing::warn!(worker = %worker.name, job = result.job, lease = result.lease, "result for an attempt this worker was never given, refused");
                ack_now.push(result.lease);
                self.spend_if_issued(&claim, &worker.name);
                if succeeded {
                    self.back_in_line(result.job, &mut effects);
                }
                continue;
            }
            let stale = self
                .jobs
                .get(&result.job)
                .is_some_and(|job| !job.runs_or_ran(result.lease));
            if stale {
                // Heard from for the last time, whatever it says.
                self.forget_stale(result.job, result.lease);
            }
            let Some(job) = self.jobs.get_mut(&result.job) else {
                continue;
            };
            let current = job.runs(result.lease);
            if !job.runs_or_ran(result.lease) {
                // Its number is spent, whatever the result.
                job.spend(result.attempt);
            }
            match result.outcome {
                Outcome::Succeeded if job.phase != Phase::Finishing => {
                    // The first success wins, whichever attempt it comes from.
                    let mut beaten = None;
                    match job.phase {
                        Phase::Running if !current => {
                            beaten = job
                                .running
                                .as_ref()
                                .map(|running| (running.lease, running.worker.clone()));
                        }
                        Phase::Queued => effects.withdraw.push(result.job),
                        _ => {}
                    }
                    let before = job.phase;
                    job.begin_finishing();
                    ran_ms.push(result.duration_ms);
                    job.running = Some(Box::new(RunningAttempt {
                        lease: result.lease,
                        attempt: result.attempt,
                        started_at_ms: result.started_at_ms,
                        worker: worker.name.clone(),
                    }));
                    changes.push(work_order(
                        result.job,
                        job,
                        (JobState::Succeeded, self.cursors.draw()),
                        Some(result),
                        None,
                        now,
                    ));
                    finishing.push((result.job, JobState::Succeeded));
                    recorded.push(result.lease);
                    if !result.outputs.is_empty() {
                        if let Some(outputs) = job.spec.decode().ok().and_then(|spec| spec.outputs)
                        {
                            manifests.push(ManifestOrder {
                                job: result.job,
                                lease: result.lease,
                                outputs,
                                objects: result.outputs.clone(),
                                ledger: self.ledger,
                            });
                        }
                    }
                    let batch = job.batch;
                    self.recount(batch, before, Phase::Finishing);
                    self.recording(batch, JobState::Succeeded);
                    if let Some((lease, to)) = beaten {
                        // Stopped, it reports all the same.
                        effects.kill.push(lease);
                        self.keep_stale(result.job, lease, to);
                    }
                }
                Outcome::Failed | Outcome::TimedOut | Outcome::Killed if current => {
                    job.failures += 1;
                    ran_ms.push(result.duration_ms);
                    let finished_at_ms = result.started_at_ms.saturating_add(result.duration_ms);
                    failures.push(FailureInfo {
                        job: result.job,
                        batch: job.batch,
                        worker: worker.name.to_string(),
                        outcome: result.outcome.as_str().to_string(),
                        at_ms: finished_at_ms,
                        error: result.error.clone(),
                        output_tail: result.output_tail.clone(),
                    });
                    changes.push(Change::Attempt(Box::new(AttemptRow {
                        job: result.job,
                        lease: result.lease,
                        attempt: result.attempt,
                        worker: worker.name.to_string(),
                        outcome: result.outcome.as_str(),
                        started_at_ms: result.started_at_ms,
                        finished_at_ms,
                        exit_code: result.exit_code,
                        error: result.error.clone(),
                    })));
                    acked.push(result.lease);
                    let batch = job.batch;
                    let max_attempts = job.max_attempts();
                    let reason = result.error.as_deref().unwrap_or(result.outcome.as_str());
                    // Only a failure to run at all can be permanent: a timeout or a kill is not.
                    let for_good = result.permanent && result.outcome == Outcome::Failed;
                    if for_good || job.failures >= max_attempts {
                        job.begin_finishing();
                        let error = if for_good && job.failures < max_attempts {
                            format!(
                                "{reason}; not retried: it would fail the same way on every \
                                 attempt"
                            )
                        } else {
                            gave_up(job.failures, max_attempts, job.attempts, reason)
                        };
                        changes.push(work_order(
                            result.job,
                            job,
                            (JobState::Failed, self.cursors.draw()),
                            Some(result),
                            Some(error),
                            now,
                        ));
                        finishing.push((result.job, JobState::Failed));
                        if let Some(counts) = self.batches.get_mut(&batch) {
                            counts.recording(JobState::Failed);
                        }
                    } else {
                        job.phase = Phase::Backoff;
                        let delay = backoff(self.limits.retry_backoff, job.failures);
                        self.recount(batch, Phase::Running, Phase::Backoff);
                        effects.retry_after.push((result.job, delay));
                    }
                }
                _ if job.phase == Phase::Finishing && job.runs_or_ran(result.lease) => {
                    // A resend of the very result being written: it is answered when the
                    // write is on disk (the worker sends it again until then).
                }
                _ => {
                    // A failure of an attempt that is no longer current, or another success for
                    // a job whose terminal state is being written: nothing to record.
                    if result.outcome == Outcome::Succeeded {
                        duplicates.push((result.job, result.lease));
                        tracing::info!(job = result.job, lease = result.lease, worker = %worker.name, "late result for a finished job acknowledged, not recorded");
                    }
                    ack_now.push(result.lease);
                    if succeeded {
                        // Reported a success, taken for a failure.
                        self.back_in_line(result.job, &mut effects);
                    }
                }
            }
        }
        if !duplicates.is_empty() {
            self.duplicates += duplicates.len() as u64;
            changes.push(Change::Duplicates(duplicates));
        }
        if !late.is_empty() {
            effects.lookup = Some(Lookup::LateSuccesses {
                worker: worker.id,
                worker_name: worker.name.clone(),
                late,
            });
        }
        effects.notify(worker.id, Notice::Acked(ack_now));
        if !changes.is_empty() {
            effects.commit = Some(Commit {
                changes,
                then: Pending::Results {
                    worker: worker.id,
                    finishing,
                    acked,
                    recorded,
                    manifests,
                    ran_ms,
                    failures,
                },
            });
        }
        effects
    }

    /// The Scheduler withdraws a job in line for a success it passes on; if the book did not
    /// take it, the job gets its place back, at the head of its batch's line. Its current turn
    /// may be on its way to a worker already: the new one carries a new number. (A job held
    /// back since a restart has no turn yet, and keeps its count for the attempt that may still
    /// take it back.)
    fn back_in_line(&mut self, id: JobId, effects: &mut Effects) {
        if self.phase(id) != Some(Phase::Queued) {
            return;
        }
        let held = self.held_back.contains(&id);
        if let (false, Some(job)) = (held, self.jobs.get_mut(&id)) {
            job.attempts = job.attempts.saturating_add(1);
        }
        let before = effects.enqueue.len();
        self.enqueue(id, effects);
        for queued in &mut effects.enqueue[before..] {
            queued.ahead = true;
        }
    }

    /// A success whose outputs name objects outside its attempt's own prefix (a worker that lies,
    /// or is broken) is taken for a failure: its manifest would point other readers, and the
    /// workers that write it, anywhere.
    fn vet_outputs<'a>(&self, result: &'a AttemptResult) -> Cow<'a, AttemptResult> {
        if result.outcome != Outcome::Succeeded || result.outputs.is_empty() {
            return Cow::Borrowed(result);
        }
        let outputs = self
            .jobs
            .get(&result.job)
            .and_then(|job| job.spec.decode().ok())
            .and_then(|spec| spec.outputs);
        let prefix = outputs.as_ref().and_then(|outputs| {
            attempt_prefix(&outputs.to, self.ledger, result.job, result.lease).ok()
        });
        let stray = match &prefix {
            Some(prefix) => result
                .outputs
                .iter()
                .find(|object| !lies_under(&object.url, prefix))
                .map(|object| object.url.clone()),
            // Outputs for a job that has none, or is not here to say: nothing to vet against.
            None if outputs.is_none() && self.jobs.contains_key(&result.job) => {
                result.outputs.first().map(|object| object.url.clone())
            }
            None => None,
        };
        let Some(stray) = stray else {
            return Cow::Borrowed(result);
        };
        tracing::warn!(job = result.job, lease = result.lease, url = %stray, "result names an output outside its attempt's prefix, taken for a failure");
        let mut failed = result.clone();
        failed.outcome = Outcome::Failed;
        failed.outputs.clear();
        failed.error = Some(format!(
            "its outputs name {stray}, outside the attempt's own prefix {}",
            prefix.as_deref().unwrap_or("(the job has no outputs)")
        ));
        failed.bound();
        Cow::Owned(failed)
    }

    /// A result longer than `--max-result-bytes` (from a worker that lies, or is broken: a
    /// worker checks the limit itself) is not kept: a success becomes a failure that says to
    /// publish large results as outputs, for good (the job would write as much again), as the
    /// worker would have said; a failure keeps its own reason.
    fn vet_result_size<'a>(&self, result: Cow<'a, AttemptResult>) -> Cow<'a, AttemptResult> {
        let limit = self.limits.max_result_bytes;
        if result.result.len() <= limit {
            return result;
        }
        let size = result.result.len();
        tracing::warn!(
            job = result.job,
            lease = result.lease,
            size,
            limit,
            "result above --max-result-bytes, not kept"
        );
        let mut failed = result.into_owned();
        failed.result = Vec::new();
        if failed.outcome == Outcome::Succeeded {
            failed.outcome = Outcome::Failed;
            failed.outputs.clear();
            failed.error = None;
            failed.permanent = true;
        }
        failed
            .error
            .get_or_insert_with(|| result_too_large(size, limit));
        Cow::Owned(failed)
    }

    /// Successes for jobs that had left memory, with the lease the store recorded for each: a
    /// resend of the recorded result is answered `Recorded` again (its worker may not have
    /// heard), any other is a duplicate. If the store could not say, nothing is answered and the
    /// worker asks again.
    pub(crate) fn late_successes_found(
        &mut self,
        worker: WorkerId,
        worker_name: &Arc<str>,
        late: Vec<(JobId, Lease)>,
        recorded: Result<HashMap<JobId, Lease>, StoreError>,
    ) -> Effects {
        let mut effects = Effects::none();
        let recorded = match recorded {
            Ok(recorded) => recorded,
            Err(error) => {
                tracing::warn!(%error, worker = %worker_name, "cannot look up late results; the worker reports them again");
                return effects;
            }
        };
        let mut again = Vec::new();
        let mut acked = Vec::new();
        let mut duplicates = Vec::new();
        for (job, lease) in late {
            if recorded.get(&job) == Some(&lease) {
                again.push(lease);
            } else {
                tracing::info!(job, lease, worker = %worker_name, "late result for a finished job acknowledged, not recorded");
                acked.push(lease);
                duplicates.push((job, lease));
            }
        }
        effects.notify(worker, Notice::Recorded(again));
        effects.notify(worker, Notice::Acked(acked));
        if !duplicates.is_empty() {
            self.duplicates += duplicates.len() as u64;
            effects.commit = Some(Commit {
                changes: vec![Change::Duplicates(duplicates)],
                then: Pending::Note("duplicate results"),
            });
        }
        effects
    }

    /// A worker wrote the manifests of these recorded attempts.
    pub(crate) fn manifests_written(&mut self, leases: &[Lease]) -> Effects {
        let jobs = self.manifests.written(leases);
        if jobs.is_empty() {
            return Effects::none();
        }
        Effects {
            commit: Some(Commit {
                changes: vec![Change::ManifestsWritten(jobs)],
                then: Pending::Note("written manifests"),
            }),
            ..Effects::none()
        }
    }

    /// Manifests their own workers did not confirm in time (one that died right after its
    /// result was recorded, say), for some other worker to write.
    pub(crate) fn manifests_due(&mut self, now: u64) -> Effects {
        let (due, abandoned) = self.manifests.due(now);
        if !due.is_empty() {
            tracing::info!(
                manifests = due.len(),
                "asking a worker to write unconfirmed manifests"
            );
        }
        Effects {
            publish: due,
            commit: (!abandoned.is_empty()).then(|| Commit {
                changes: vec![Change::ManifestsAbandoned(abandoned)],
                then: Pending::Note("manifests given up"),
            }),
            ..Effects::none()
        }
    }
}

/// Why an attempt whose result is longer than `--max-result-bytes` failed (the worker says the
/// same when it finds so itself).
pub(crate) fn result_too_large(size: usize, limit: usize) -> String {
    format!(
        "result of {size} bytes is above --max-result-bytes ({limit}); publish large results as \
         outputs"
    )
}

/// Why a job failed for good: `failures` of its `max_attempts`. Its `attempts` (every attempt it
/// had, numbered on across retries, as `drover job` shows them) may be more: attempts lost with
/// their worker are counted apart, and a retry counts failures afresh. The message says so
/// rather than show two counts that seem to disagree.
fn gave_up(failures: u32, max_attempts: u32, attempts: u32, last: &str) -> String {
    if attempts <= failures {
        format!("failed {failures} of {max_attempts} attempts; last: {last}")
    } else {
        format!(
            "failed {failures} of {max_attempts} attempts ({attempts} in all: those lost with \
             their worker or made before a retry do not count); last: {last}"
        )
    }
}
