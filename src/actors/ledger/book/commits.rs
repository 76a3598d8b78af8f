//! What a commit decides once the store says it is on disk, or that it failed: answers and
//! notices go out only for what is durable, and what failed to be written is put back, so
//! nothing is lost (at worst something runs again).

use super::*;

impl Book {
    /// A commit ended: what it decided takes effect, or is undone so nothing is lost.
    pub(crate) fn committed(
        &mut self,
        pending: Pending,
        result: Result<(), StoreError>,
        now: u64,
    ) -> Effects {
        match pending {
            Pending::Submit {
                batch,
                name,
                submitted_at_ms,
                first_job,
                jobs,
                key,
            } => {
                self.reserved -= jobs.len();
                self.reserved_bytes -= spec_bytes(&jobs);
                let (mut effects, written) = match result {
                    Ok(()) => (
                        self.accept_batch(batch, name, submitted_at_ms, first_job, &jobs),
                        Ok(first_job),
                    ),
                    Err(error) => {
                        let refused = LedgerError::Store {
                            action: "queue the batch",
                            error,
                        };
                        (
                            Effects::answer(Answer::Refused(refused.clone())),
                            Err(refused),
                        )
                    }
                };
                if let Some(key) = key {
                    self.key_written(key, written, &mut effects);
                }
                effects
            }
            Pending::Results {
                worker,
                finishing,
                acked,
                recorded,
                manifests,
                ran_ms,
                failures,
            } => match result {
                Ok(()) => {
                    for run_ms in ran_ms {
                        self.stats.attempt_ended(run_ms);
                    }
                    for (_, state) in &finishing {
                        if *state == JobState::Succeeded {
                            self.stats.attempt_outcome("succeeded");
                        }
                    }
                    for failure in failures {
                        self.stats.attempt_outcome(&failure.outcome);
                        self.stats.failure(failure);
                    }
                    let mut effects = self.finished(finishing, now);
                    effects.notify(worker, Notice::Acked(acked));
                    effects.notify(worker, Notice::Recorded(recorded));
                    // The recording worker writes these now; until it confirms, they wait here.
                    self.manifests.asked(manifests, now);
                    effects
                }
                Err(error) => {
                    tracing::error!(%error, jobs = finishing.len(), "cannot record results; their jobs go back to pending");
                    self.unfinish(finishing)
                }
            },
            Pending::Lost {
                finishing,
                failures,
            } => match result {
                Ok(()) => {
                    for failure in failures {
                        self.stats.attempt_outcome(&failure.outcome);
                        self.stats.failure(failure);
                    }
                    self.finished(finishing, now)
                }
                Err(error) => {
                    tracing::error!(%error, "cannot record lost attempts");
                    self.unfinish(finishing)
                }
            },
            Pending::Cancel { finishing } => match result {
                Ok(()) => {
                    let count = finishing.len() as u64;
                    let mut effects = self.finished(finishing, now);
                    effects.answer = Some(Answer::Changed(count));
                    effects
                }
                Err(error) => {
                    // Not cancelled after all: the jobs run again.
                    let mut effects = self.unfinish(finishing);
                    effects.answer = Some(Answer::Refused(LedgerError::Store {
                        action: "cancel",
                        error,
                    }));
                    effects
                }
            },
            Pending::Reopen { batch, failed } => match result {
                Ok(()) => self.reopened(batch, failed),
                Err(error) => {
                    self.retrying.remove(&batch);
                    Effects::answer(Answer::Refused(LedgerError::Store {
                        action: "retry",
                        error,
                    }))
                }
            },
            Pending::ReopenJob(found) => match result {
                Ok(()) => self.job_reopened(found),
                Err(error) => {
                    self.retrying_jobs.remove(&found.job.id);
                    Effects::answer(Answer::Refused(LedgerError::Store {
                        action: "retry the job",
                        error,
                    }))
                }
            },
            Pending::Note(what) => {
                // Not fatal: a note lost is a count off by one, or a manifest written again.
                if let Err(error) = result {
                    tracing::warn!(%error, "cannot note {what}");
                }
                Effects::none()
            }
        }
    }

    /// Jobs whose terminal state is on disk leave memory; batches they finish are reported.
    fn finished(&mut self, jobs: Vec<(JobId, JobState)>, now: u64) -> Effects {
        let mut effects = Effects::none();
        let mut touched = Vec::new();
        let mut by_state: HashMap<JobState, u64> = HashMap::new();
        for (id, state) in jobs {
            let Some(job) = self.jobs.remove(&id) else {
                continue;
            };
            if !self.lost_on.is_empty() {
                self.lost_on.remove(&id);
            }
            if !self.stale.is_empty() {
                self.stale.remove(&id);
            }
            if !self.started_before.is_empty() {
                self.started_before.remove(&id);
            }
            // A job cancelled while held back after a restart is held no more: should a retry
            // reopen it before the grace ends, it is queued then, and the grace's end must not
            // queue it a second time under the same number.
            if !self.held_back.is_empty() {
                self.held_back.remove(&id);
            }
            self.unfinished_bytes -= job.spec.as_bytes().len();
            *by_state.entry(state).or_default() += 1;
            if let Some(counts) = self.batches.get_mut(&job.batch) {
                counts.recorded(state, true);
            }
            if touched.last() != Some(&job.batch) {
                touched.push(job.batch);
            }
        }
        for (state, count) in by_state {
            self.stats.jobs_finished(state, count);
        }
        touched.sort_unstable();
        touched.dedup();
        for batch in touched {
            let Some(counts) = self.batches.get_mut(&batch) else {
                continue;
            };
            if !counts.unfinished() {
                counts.finished_at_ms.get_or_insert(now);
                effects.batches_done.push(counts.info(batch, now));
            }
        }
        effects
    }

    /// Puts jobs whose terminal write failed back in the queue, so nothing is lost; their
    /// results were not acknowledged, so the workers report them again.
    fn unfinish(&mut self, jobs: Vec<(JobId, JobState)>) -> Effects {
        let mut effects = Effects::none();
        for (id, state) in jobs {
            let Some(job) = self.jobs.get_mut(&id) else {
                continue;
            };
            if job.phase != Phase::Finishing {
                continue;
            }
            job.phase = Phase::Queued;
            let running = job.running.take();
            // In line when it began finishing, its entry may have been handed to a worker
            // already (the start still on its way here): that number must not be the next's too.
            if std::mem::take(&mut job.left_line) {
                job.attempts = job.attempts.saturating_add(1);
            }
            let batch = job.batch;
            if let Some(counts) = self.batches.get_mut(&batch) {
                counts.recorded(state, false);
            }
            self.recount(batch, Phase::Finishing, Phase::Queued);
            // The attempt whose result was being written reports it again.
            if let Some(running) = running {
                self.keep_stale(id, running.lease, running.worker);
            }
            self.enqueue(id, &mut effects);
        }
        effects
    }
}
