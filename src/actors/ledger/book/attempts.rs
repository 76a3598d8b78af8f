//! Attempts starting, carried through a reconnect or a restart, and lost with their worker;
//! jobs coming back from a backoff or the restart's grace.

use super::{
    line_up, timeout_margin, work_order, Book, Claim, Commit, Effects, LiveJob, LostAttempt,
    Pending, Phase, RunningAttempt, Started, TakenBack, WorkerRef, MAX_LOST_ATTEMPTS,
    MAX_LOST_IN_ALL,
};
use crate::job::{AttemptResult, CarriedAttempt, JobId, JobState, Lease, Outcome};
use crate::status::FailureInfo;
use crate::storage::store::{AttemptRow, Change, StartRow};
use std::sync::Arc;
use std::time::Duration;

impl Book {
    /// The Scheduler handed jobs to a worker. Only a job's current turn in line may start it: a
    /// start from an older turn (still on its way when the job was queued again), or for a job
    /// no longer waiting (cancelled or finished meanwhile), is stopped.
    pub(crate) fn attempts_started(
        &mut self,
        worker: &WorkerRef,
        started: &[Started],
        now: u64,
    ) -> Effects {
        let mut effects = Effects::none();
        let mut starts = Vec::new();
        for started in started {
            let id = started.job;
            let Some(job) = self.jobs.get_mut(&id) else {
                effects.kill.push(started.lease);
                continue;
            };
            let spent_before = job.attempts;
            // Its number is spent all the same: the worker may start it before the kill arrives.
            job.attempts = job.attempts.max(started.attempt);
            let current = started.entry == job.queued_as;
            if job.phase != Phase::Queued || !current {
                if current {
                    // The turn that left the line has arrived: its number is counted now.
                    job.left_line = false;
                }
                effects.kill.push(started.lease);
                // Stopped, it may have started all the same.
                self.keep_stale(id, started.lease, worker.name.clone());
                continue;
            }
            if started.attempt <= spent_before {
                // Its number was spent meanwhile by another attempt's word: it would repeat.
                effects.kill.push(started.lease);
                self.keep_stale(id, started.lease, worker.name.clone());
                self.enqueue(id, &mut effects);
                continue;
            }
            job.phase = Phase::Running;
            job.running = Some(Box::new(RunningAttempt {
                lease: started.lease,
                attempt: started.attempt,
                started_at_ms: now,
                worker: worker.name.clone(),
            }));
            if let Some(deadline) = job.deadline() {
                effects.deadlines.push((id, started.lease, deadline));
            }
            // On record, so a coordinator restarted meanwhile knows this attempt when its
            // worker carries it back, and gives its number to no other.
            starts.push(StartRow {
                job: id,
                lease: started.lease,
                attempt: started.attempt,
                worker: worker.name.clone(),
            });
            let batch = job.batch;
            self.recount(batch, Phase::Queued, Phase::Running);
            if let Some(counts) = self.batches.get_mut(&batch) {
                counts.started(now);
                if started.attempt == 1 {
                    let wait_ms = now.saturating_sub(counts.submitted_at_ms);
                    self.stats.first_start(wait_ms);
                }
            }
        }
        if !starts.is_empty() {
            effects.commit = Some(Commit {
                changes: vec![Change::Started(starts)],
                then: Pending::Note("attempt starts"),
            });
        }
        effects
    }

    /// A worker registered with attempts it kept running across a reconnect or a restart. A
    /// pending job is taken back by its attempt: one whose start is on record, while the job is
    /// held back since the restart, or one an earlier run handed out whose start never reached
    /// the disk (its lease says so). An attempt of a finished job, or of one being recorded from
    /// another attempt, is stopped. The Scheduler took the carried attempts' jobs out of its
    /// line: a pending one not taken back is queued again.
    pub(crate) fn attempts_carried(
        &mut self,
        worker: &WorkerRef,
        carried: &[CarriedAttempt],
        now: u64,
    ) -> Effects {
        let mut effects = Effects::none();
        let mut taken_back = 0;
        let mut starts = Vec::new();
        for attempt in carried {
            let claim = Claim {
                job: attempt.job,
                lease: attempt.lease,
                attempt: attempt.attempt,
                epoch: attempt.epoch,
                started_at_ms: now,
            };
            let taken = self.take_back(&claim, &worker.name, true, now);
            if taken != TakenBack::No {
                taken_back += 1;
                if taken == TakenBack::Unrecorded {
                    // On record now, so a coordinator restarted again knows it too.
                    starts.push(StartRow {
                        job: attempt.job,
                        lease: attempt.lease,
                        attempt: attempt.attempt,
                        worker: worker.name.clone(),
                    });
                }
                // When it started is not known: its timeout counts from now.
                if let Some(deadline) = self.jobs.get(&attempt.job).and_then(LiveJob::deadline) {
                    effects
                        .deadlines
                        .push((attempt.job, attempt.lease, deadline));
                }
                continue;
            }
            if !self.jobs.contains_key(&attempt.job) {
                // Its job is finished: it can only end as a duplicate.
                effects.kill.push(attempt.lease);
                continue;
            }
            if !self.vouched(attempt.job, attempt.lease, &worker.name) {
                // Not one this worker was given (or one whose number a later attempt carries):
                // its result could count for nothing, so it is stopped.
                tracing::warn!(worker = %worker.name, job = attempt.job, lease = attempt.lease, "carried attempt this worker was never given, stopped");
                effects.kill.push(attempt.lease);
                self.spend_if_issued(&claim, &worker.name);
                continue;
            }
            let Some(job) = self.jobs.get_mut(&attempt.job) else {
                continue;
            };
            if job.phase == Phase::Finishing && !job.runs_or_ran(attempt.lease) {
                // Being recorded from another attempt.
                effects.kill.push(attempt.lease);
                continue;
            }
            // Its number is spent, whatever becomes of it; the first success still wins,
            // whichever attempt it comes from. (A new registration of the job's current
            // attempt's worker, the old one not yet found gone: the attempt runs there now,
            // under the same name.)
            job.spend(attempt.attempt);
        }
        // Pending jobs the Scheduler took out of its line for these attempts, not taken back,
        // get their place back at the head of their batch's line (a held-back one stays held).
        // Their turn may be on its way to the Scheduler still: the new one carries a new number.
        let mut again: Vec<JobId> = carried
            .iter()
            .map(|attempt| attempt.job)
            .filter(|id| self.phase(*id) == Some(Phase::Queued) && !self.held_back.contains(id))
            .collect();
        again.sort_unstable();
        again.dedup();
        for id in again {
            if let Some(job) = self.jobs.get_mut(&id) {
                job.attempts = job.attempts.saturating_add(1);
            }
            let before = effects.enqueue.len();
            self.enqueue(id, &mut effects);
            for queued in &mut effects.enqueue[before..] {
                queued.ahead = true;
            }
        }
        if taken_back > 0 {
            tracing::info!(worker = %worker.name, jobs = taken_back, "jobs taken back by the attempts their worker kept running");
        }
        if !starts.is_empty() {
            effects.commit = Some(Commit {
                changes: vec![Change::Started(starts)],
                then: Pending::Note("attempt starts taken back"),
            });
        }
        effects
    }

    /// Gives a pending job to an attempt that ran through a restart, so the job runs once, not
    /// twice: the attempt the store says the job started last, on that worker, while the job is
    /// held back since the restart; or one an earlier run handed to that worker whose start never
    /// reached the disk ([`Book::unrecorded_start`]), while the job is held back or, with
    /// `queued_too`, in line (the caller made sure the Scheduler took it out). Says which it was.
    pub(super) fn take_back(
        &mut self,
        claim: &Claim,
        worker: &Arc<str>,
        queued_too: bool,
        now: u64,
    ) -> TakenBack {
        // Asked for every result: the common case (nothing held back, a failure, or a job that
        // runs) costs a lookup at most, and no HMAC.
        let held = !self.held_back.is_empty() && self.held_back.contains(&claim.job);
        if !held && !queued_too {
            return TakenBack::No;
        }
        if self.phase(claim.job) != Some(Phase::Queued) {
            return TakenBack::No;
        }
        let on_record = held
            && self
                .started_before
                .get(&claim.job)
                .is_some_and(|(known, to)| *known == claim.lease && to == worker);
        let taken = if on_record {
            TakenBack::OnRecord
        } else if self.unrecorded_start(claim.job, claim.lease, claim.attempt, claim.epoch, worker)
        {
            TakenBack::Unrecorded
        } else {
            return TakenBack::No;
        };
        let id = claim.job;
        self.held_back.remove(&id);
        if let Some((lease, to)) = self.started_before.remove(&id) {
            if !on_record {
                // The attempt on record before this one may still report, to no effect but its
                // own end.
                self.keep_stale(id, lease, to);
            }
        }
        let Some(job) = self.jobs.get_mut(&id) else {
            return TakenBack::No;
        };
        job.phase = Phase::Running;
        let attempt = if taken == TakenBack::Unrecorded {
            // Its lease vouches for its number.
            job.attempts = claim.attempt;
            claim.attempt
        } else {
            job.spend(claim.attempt);
            claim.attempt.min(job.attempts)
        };
        job.running = Some(Box::new(RunningAttempt {
            lease: claim.lease,
            attempt,
            started_at_ms: claim.started_at_ms,
            worker: worker.clone(),
        }));
        let batch = job.batch;
        self.recount(batch, Phase::Queued, Phase::Running);
        if let Some(counts) = self.batches.get_mut(&batch) {
            counts.started(now);
        }
        taken
    }

    /// A worker handed back attempts it held and never started (another worker was idle, or
    /// they waited too long): their jobs go back to the head of their batch's line, under a new
    /// number. Nothing is written: the attempt never ran, and a start of it on record (the
    /// store's last start of the job) is replaced by the job's next.
    pub(crate) fn attempts_returned(
        &mut self,
        worker: &WorkerRef,
        returned: &[(JobId, Lease)],
    ) -> Effects {
        let mut effects = Effects::none();
        for (id, lease) in returned {
            let Some(job) = self.jobs.get_mut(id) else {
                continue;
            };
            // Only the job's current attempt, on the worker it went to: one stopped meanwhile
            // (a cancel, a timeout) decided its job already.
            let went_to = job.running.as_ref().map(|running| running.worker.clone());
            if !job.runs(*lease) || went_to.as_deref() != Some(&*worker.name) {
                continue;
            }
            job.phase = Phase::Queued;
            job.running = None;
            let batch = job.batch;
            self.recount(batch, Phase::Running, Phase::Queued);
            let before = effects.enqueue.len();
            self.enqueue(*id, &mut effects);
            for queued in &mut effects.enqueue[before..] {
                queued.ahead = true;
            }
        }
        effects
    }

    /// A worker is gone; its attempts are lost and their jobs go back to pending at once (or,
    /// lost with too many workers that had started them, are failed). An attempt the worker
    /// never said it started counts for nothing but its number.
    pub(crate) fn worker_lost(
        &mut self,
        worker_name: &Arc<str>,
        attempts: &[LostAttempt],
        reason: &str,
        now: u64,
    ) -> Effects {
        let mut effects = Effects::none();
        let mut changes = Vec::new();
        let mut finishing = Vec::new();
        let mut failures = Vec::new();
        for lost in attempts {
            let id = lost.job;
            let Some(job) = self.jobs.get_mut(&id) else {
                continue;
            };
            // Only the worker the attempt went to can lose it (another may have claimed it).
            let went_to = job.running.as_ref().map(|running| running.worker.clone());
            if !job.runs(lost.lease) || went_to.as_deref() != Some(&**worker_name) {
                continue;
            }
            let (attempt, started_at_ms) =
                job.running.as_ref().map_or((job.attempts, now), |running| {
                    (running.attempt, running.started_at_ms)
                });
            let (outcome, error) = if lost.started {
                job.lost += 1;
                let workers = self.lost_on.entry(id).or_default();
                if !workers.contains(worker_name) {
                    workers.push(worker_name.clone());
                }
                ("lost", reason.to_string())
            } else {
                (
                    "unstarted",
                    format!("lost before the worker said it had started it: {reason}"),
                )
            };
            failures.push(FailureInfo {
                job: id,
                batch: job.batch,
                worker: worker_name.to_string(),
                outcome: outcome.into(),
                at_ms: now,
                error: Some(error.clone()),
                output_tail: String::new(),
            });
            changes.push(Change::Attempt(Box::new(AttemptRow {
                job: id,
                lease: lost.lease,
                attempt,
                worker: worker_name.to_string(),
                outcome,
                started_at_ms,
                finished_at_ms: now,
                exit_code: None,
                error: Some(error),
            })));
            let batch = job.batch;
            let workers = self.lost_on.get(&id).map_or(0, Vec::len) as u32;
            if workers >= MAX_LOST_ATTEMPTS || job.lost >= MAX_LOST_IN_ALL {
                job.begin_finishing();
                let error = format!(
                    "lost {} times, with {workers} workers; last: {reason}",
                    job.lost
                );
                changes.push(work_order(
                    id,
                    job,
                    (JobState::Failed, self.cursors.draw()),
                    None,
                    Some(error),
                    now,
                ));
                finishing.push((id, JobState::Failed));
                if let Some(counts) = self.batches.get_mut(&batch) {
                    counts.recording(JobState::Failed);
                }
            } else {
                job.phase = Phase::Queued;
                job.running = None;
                self.recount(batch, Phase::Running, Phase::Queued);
                self.enqueue(id, &mut effects);
            }
            // A worker lost to the coordinator may live on, and report it yet.
            self.keep_stale(id, lost.lease, worker_name.clone());
        }
        if !effects.enqueue.is_empty() {
            tracing::info!(worker = %worker_name, jobs = effects.enqueue.len(), "jobs of a lost worker back to pending");
        }
        if !changes.is_empty() {
            effects.commit = Some(Commit {
                changes,
                then: Pending::Lost {
                    finishing,
                    failures,
                },
            });
        }
        effects
    }

    /// An attempt's timeout and margin have passed: if it still runs, without a word from its
    /// worker, the coordinator takes it back as timed out (retried as any failure) and has it
    /// stopped, so a worker that only heartbeats cannot hold a job.
    pub(crate) fn deadline_passed(&mut self, id: JobId, lease: Lease, now: u64) -> Effects {
        let Some(job) = self.jobs.get(&id) else {
            return Effects::none();
        };
        let (Some(running), true) = (job.running.as_ref(), job.runs(lease)) else {
            return Effects::none();
        };
        let timeout_s = job
            .spec
            .placement()
            .ok()
            .and_then(|placement| placement.timeout_s)
            .unwrap_or(0);
        let margin = timeout_margin(Duration::from_secs(timeout_s.into()));
        let verdict = AttemptResult {
            lease,
            job: id,
            attempt: running.attempt,
            outcome: Outcome::TimedOut,
            exit_code: None,
            started_at_ms: running.started_at_ms,
            duration_ms: now.saturating_sub(running.started_at_ms),
            output_tail: String::new(),
            result: Vec::new(),
            error: Some(format!(
                "no result within its timeout of {timeout_s}s and a margin of {}s: taken back by \
                 the coordinator",
                margin.as_secs()
            )),
            outputs: Vec::new(),
            permanent: false,
            // Of no account: the book judges it as its current attempt's.
            epoch: 0,
        };
        // Judged as the worker's own report would be; the worker is no one to answer.
        let coordinator = WorkerRef {
            id: 0,
            name: running.worker.clone(),
        };
        tracing::warn!(job = id, lease, worker = %running.worker, timeout_s, "attempt past its timeout and margin, taken back");
        let mut effects = self.results(&coordinator, &[verdict], now);
        effects.kill.push(lease);
        effects.notices.clear();
        // Its worker may still report on it, to no effect but its end.
        self.keep_stale(id, lease, coordinator.name);
        effects
    }

    /// A failed job's backoff is over: it rejoins the queue, unless something else became of
    /// it meanwhile (a cancel, a late success).
    pub(crate) fn backoff_over(&mut self, id: JobId) -> Effects {
        let mut effects = Effects::none();
        let Some(job) = self.jobs.get_mut(&id) else {
            return effects;
        };
        if job.phase != Phase::Backoff {
            return effects;
        }
        job.phase = Phase::Queued;
        let batch = job.batch;
        self.recount(batch, Phase::Backoff, Phase::Queued);
        self.enqueue(id, &mut effects);
        effects
    }

    /// The reconnect grace is over: the replayed jobs no worker took back are queued.
    pub(crate) fn grace_over(&mut self) -> Effects {
        let held = std::mem::take(&mut self.held_back);
        // An attempt not taken back may still report, from a worker slower to come back.
        for (id, (lease, worker)) in std::mem::take(&mut self.started_before) {
            if self.jobs.contains_key(&id) {
                self.keep_stale(id, lease, worker);
            }
        }
        let mut release: Vec<_> = held
            .into_iter()
            .filter_map(|id| {
                let job = self.jobs.get_mut(&id)?;
                (job.phase == Phase::Queued).then(|| line_up(id, job))
            })
            .collect();
        release.sort_by_key(|job| job.job);
        if !release.is_empty() {
            tracing::info!(
                jobs = release.len(),
                "reconnect grace over: replayed jobs no worker took back are queued"
            );
        }
        Effects {
            enqueue: release,
            ..Effects::none()
        }
    }
}
