//! What the property test checks after every step, and the run to the end after the last.

use super::*;

impl World {
    pub(super) fn states(&self) -> HashMap<JobId, (String, Option<i64>)> {
        let mut statement = self
            .db
            .prepare_cached("SELECT id, state, lease FROM jobs")
            .unwrap();
        statement
            .query_map([], |row| {
                Ok((
                    row.get::<_, i64>(0)? as JobId,
                    (row.get::<_, String>(1)?, row.get::<_, Option<i64>>(2)?),
                ))
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    /// Each finished job's cursor.
    pub(super) fn cursors(&self) -> HashMap<JobId, i64> {
        let mut statement = self
            .db
            .prepare_cached("SELECT id, cursor FROM jobs WHERE cursor IS NOT NULL")
            .unwrap();
        statement
            .query_map([], |row| Ok((row.get::<_, i64>(0)? as JobId, row.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    /// A terminal record about to be written comes after every one before it, and holds what
    /// its recorded attempt returned, if that was within the limit.
    pub(super) fn check_record(&mut self, order: &WorkOrder) {
        assert!(
            order.cursor > self.last_cursor,
            "job {} recorded at cursor {}, after {} was written",
            order.job,
            order.cursor,
            self.last_cursor
        );
        self.last_cursor = order.cursor;
        if let Some(result) = &order.result {
            let lease = order.lease.expect("a result comes with its attempt");
            assert_eq!(
                &result[..],
                &returned(lease, 1)[..],
                "job {} recorded with another result than its attempt's, or one above the limit",
                order.job
            );
        }
    }

    pub(super) fn recorded_attempts(&self) -> HashMap<JobId, u32> {
        let mut statement = self.db.prepare("SELECT id, attempts FROM jobs").unwrap();
        statement
            .query_map([], |row| Ok((row.get::<_, i64>(0)? as JobId, row.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    /// An answer to a submission under `key` that says a batch was queued names the one batch
    /// the store holds under that key.
    pub(super) fn check_answer_to_key(&self, key: &str, answer: Option<&Answer>) {
        let Some(Answer::Submitted(submitted)) = answer else {
            return;
        };
        let stored: Vec<(BatchId, JobId)> = self
            .db
            .prepare(
                "SELECT b.id, MIN(j.id) FROM batches b JOIN jobs j ON j.batch = b.id
                 WHERE b.idempotency_key = ?1 GROUP BY b.id",
            )
            .unwrap()
            .query_map([key], |row| {
                Ok((row.get::<_, i64>(0)? as u64, row.get::<_, i64>(1)? as u64))
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            stored,
            vec![(submitted.batch, submitted.first_job)],
            "key {key:?} was answered with {submitted:?}"
        );
    }

    /// Jobs whose change is on disk but not yet handed back to the book: for them the store
    /// is a step ahead of memory, as it is in the coordinator between a commit and its message.
    fn ahead_on_disk(&self) -> HashSet<JobId> {
        let mut ahead = HashSet::new();
        for (then, result) in &self.ended {
            if result.is_err() {
                continue;
            }
            match then {
                Pending::Submit {
                    first_job, jobs, ..
                } => ahead.extend(*first_job..*first_job + jobs.len() as u64),
                Pending::Results { finishing, .. }
                | Pending::Lost { finishing, .. }
                | Pending::Cancel { finishing } => {
                    ahead.extend(finishing.iter().map(|(job, _)| *job))
                }
                Pending::Reopen { failed, .. } => ahead.extend(failed.iter().map(|job| job.id)),
                Pending::ReopenJob(found) => {
                    ahead.insert(found.job.id);
                }
                Pending::Note(_) => {}
            }
        }
        ahead
    }

    /// The promises, checked after every step.
    pub(super) fn check(&self) {
        let states = self.states();
        let ahead = self.ahead_on_disk();
        let finishing: HashSet<JobId> = self
            .in_flight
            .iter()
            .map(|commit| &commit.then)
            .chain(self.ended.iter().map(|(then, _)| then))
            .flat_map(|then| match then {
                Pending::Results { finishing, .. }
                | Pending::Lost { finishing, .. }
                | Pending::Cancel { finishing } => finishing.clone(),
                _ => Vec::new(),
            })
            .map(|(job, _)| job)
            .collect();
        for (id, (state, _)) in &states {
            if ahead.contains(id) {
                continue;
            }
            let live = self.book.jobs.get(id);
            match state.as_str() {
                "pending" => assert!(
                    live.is_some(),
                    "job {id} is pending on disk but not in the book"
                ),
                terminal => assert!(
                    live.is_none(),
                    "job {id} is {terminal} on disk but back in the book as {:?}",
                    live.map(|job| job.phase)
                ),
            }
        }
        for (id, job) in &self.book.jobs {
            if !ahead.contains(id) {
                assert_eq!(
                    states.get(id).map(|(state, _)| state.as_str()),
                    Some("pending"),
                    "job {id} is in the book but not pending on disk"
                );
            }
            match job.phase {
                Phase::Queued => assert!(
                    self.queue.holds(*id)
                        || self.book.held_back.contains(id)
                        || self.to_scheduler.iter().any(|message| matches!(
                            message,
                            ToScheduler::Enqueue(jobs) if jobs.iter().any(|job| job.job == *id)
                        ))
                        || self.to_ledger.iter().any(|message| message.starts(*id))
                        || self.to_ledger.iter().any(|message| message.succeeds(*id))
                        || self.to_ledger.iter().any(|message| message.carries(*id)),
                    "job {id} is queued in the book but neither in line, on its way there, \
                     starting, held back, nor withdrawn for a success or a carried attempt on \
                     its way"
                ),
                Phase::Backoff => assert!(
                    self.backoffs.contains(id),
                    "job {id} waits out a backoff nobody will end"
                ),
                Phase::Running => {
                    let lease = job.running.as_ref().map(|running| running.lease).unwrap();
                    let holders: Vec<&Registration> = self
                        .registrations
                        .values()
                        .filter(|registration| registration.held.get(&lease) == Some(id))
                        .collect();
                    assert!(
                        holders.len() <= 1,
                        "job {id} runs as lease {lease}, held by {} registrations",
                        holders.len()
                    );
                    match holders.first() {
                        Some(holder) => {
                            let process = &self.processes[holder.process];
                            assert!(
                                process.running.contains_key(&lease)
                                    || process.outbox.contains_key(&lease),
                                "job {id} runs as lease {lease} on a worker that neither runs \
                                 it nor has its result"
                            );
                        }
                        None => assert!(
                            self.to_ledger.iter().any(|message| message.mentions(lease)),
                            "job {id} runs as lease {lease}, which nobody holds and nothing \
                             on its way mentions"
                        ),
                    }
                }
                Phase::Finishing => assert!(
                    finishing.contains(id),
                    "job {id} is being written but no write is in flight"
                ),
            }
        }
        if self.ended.is_empty() {
            self.check_counts();
        }
        let held: usize = self
            .book
            .jobs
            .values()
            .map(|job| job.spec.as_bytes().len())
            .sum();
        assert_eq!(
            self.book.unfinished_bytes, held,
            "bytes of unfinished specs"
        );
    }

    /// The jobs whose current attempt these results say failed for good, from its own worker.
    pub(super) fn failing_for_good(
        &self,
        worker: &WorkerRef,
        results: &[AttemptResult],
    ) -> Vec<JobId> {
        results
            .iter()
            .filter(|r| r.permanent && r.outcome == Outcome::Failed)
            .filter(|r| {
                self.book.jobs.get(&r.job).is_some_and(|job| {
                    job.runs(r.lease)
                        && job
                            .running
                            .as_ref()
                            .is_some_and(|running| running.worker == worker.name)
                })
            })
            .map(|r| r.job)
            .collect()
    }

    /// The pending jobs these attempts must take back: each was given to this worker by an
    /// earlier run, its start never reached the disk (its number is above the book's count), and
    /// the job waits for it (held back, or out of the Scheduler's line: a carried attempt's or a
    /// success's job is).
    pub(super) fn to_take_back(
        &self,
        worker: &WorkerRef,
        claims: &[(Lease, JobId, u32, bool)],
    ) -> Vec<JobId> {
        claims
            .iter()
            .filter(|(lease, job, attempt, out_of_line)| {
                let given = self
                    .given
                    .get(lease)
                    .is_some_and(|(to_job, process, epoch)| {
                        to_job == job
                            && process_name(*process) == worker.name
                            && *epoch < self.epoch
                    });
                let held = self.book.held_back.contains(job);
                given
                    && (held || (*out_of_line && !self.lied_about.contains(job)))
                    && self
                        .book
                        .jobs
                        .get(job)
                        .is_some_and(|live| live.phase == Phase::Queued && *attempt > live.attempts)
            })
            .map(|(_, job, _, _)| *job)
            .collect()
    }

    /// Jobs an attempt that ran through a restart took back are pending no more: they are not
    /// run again.
    pub(super) fn check_taken_back(&self, jobs: &[JobId]) {
        for job in jobs {
            let phase = self.book.jobs.get(job).map(|job| job.phase);
            assert_ne!(
                phase,
                Some(Phase::Queued),
                "job {job}: an attempt whose start was lost in the restart came back, yet the                  job waits to run again"
            );
        }
    }

    /// Jobs that failed for good are being recorded failed: no backoff, no other attempt.
    pub(super) fn check_failed_for_good(&self, jobs: &[JobId], effects: &Effects) {
        for job in jobs {
            let phase = self.book.jobs.get(job).map(|job| job.phase);
            assert!(
                matches!(phase, Some(Phase::Finishing)),
                "job {job} failed in a way no attempt would escape, yet is {phase:?} rather \
                 than being recorded failed"
            );
            assert!(
                !effects.retry_after.iter().any(|(id, _)| id == job),
                "job {job} failed for good, yet waits to be tried again"
            );
        }
    }

    /// Each batch's counts equal its jobs' states (in memory for unfinished jobs, on disk for
    /// finished ones).
    fn check_counts(&self) {
        for (batch, counts) in &self.book.batches {
            let mut expected = (0, 0, 0, 0, 0, 0);
            let mut being_written = 0;
            let mut backoff = 0;
            for job in self.book.jobs.values() {
                if job.batch == *batch {
                    being_written += u64::from(job.phase == Phase::Finishing);
                    if job.phase.waiting() {
                        expected.0 += 1;
                    } else {
                        expected.1 += 1;
                    }
                    if job.phase == Phase::Backoff {
                        backoff += 1;
                    }
                }
            }
            assert_eq!(counts.backoff, backoff, "batch {batch}'s jobs in backoff");
            let mut statement = self
                .db
                .prepare_cached("SELECT state, COUNT(*) FROM jobs WHERE batch = ?1 GROUP BY state")
                .unwrap();
            let rows: Vec<(String, u64)> = statement
                .query_map([*batch as i64], |row| {
                    Ok((row.get(0)?, row.get::<_, i64>(1)? as u64))
                })
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            for (state, count) in rows {
                expected.5 += count;
                match state.as_str() {
                    "succeeded" => expected.2 += count,
                    "failed" => expected.3 += count,
                    "cancelled" => expected.4 += count,
                    _ => {}
                }
            }
            let actual = (
                counts.pending,
                counts.running,
                counts.succeeded,
                counts.failed,
                counts.cancelled,
                counts.total,
            );
            assert_eq!(
                actual, expected,
                "batch {batch}'s counts (pending, running, succeeded, failed, cancelled, total)"
            );
            assert_eq!(
                counts.recording.iter().sum::<u64>(),
                being_written,
                "batch {batch}'s jobs shown under the outcome being written"
            );
        }
    }

    /// Heals every fault and runs everything to its end: every job must finish.
    pub(super) fn settle(&mut self) {
        let mut rounds = 0;
        while !self.quiet() {
            rounds += 1;
            assert!(rounds < 1_000, "the run never settled");
            self.settle_round();
        }
        let unfinished: Vec<JobId> = self.book.jobs.keys().copied().collect();
        assert!(unfinished.is_empty(), "jobs never finished: {unfinished:?}");
    }

    /// One round of a run with no faults: every message read, every commit on disk and handed
    /// back, every worker connected and succeeding.
    pub(super) fn settle_round(&mut self) {
        {
            while !self.to_scheduler.is_empty() || !self.to_ledger.is_empty() {
                self.scheduler_reads();
                self.ledger_reads();
            }
            self.end_commit(true);
            self.hand_back();
            self.answer_read();
            self.grace_over();
            if let Some(job) = self.backoffs.pop_front() {
                let effects = self.book.backoff_over(job);
                self.carry_out(effects);
            }
            while let Some(old) = self.old_registration() {
                self.lose(old);
            }
            for process in 0..WORKERS {
                if self.processes[process].registration.is_none() {
                    self.register(process);
                }
                self.assign(process);
                let leases: Vec<Lease> = self.processes[process].running.keys().copied().collect();
                for lease in leases {
                    self.end(process, lease, Outcome::Succeeded);
                }
                self.report(process);
            }
            self.check();
        }
    }

    /// Nothing left to happen: no message, commit, read, timer, queued job, attempt or
    /// result anywhere, and no worker disconnected.
    fn quiet(&self) -> bool {
        self.to_scheduler.is_empty()
            && self.to_ledger.is_empty()
            && self.in_flight.is_empty()
            && self.ended.is_empty()
            && self.reads.is_empty()
            && self.backoffs.is_empty()
            && !self.grace
            && self.queue.is_empty()
            && self.old_registration().is_none()
            && self.processes.iter().all(|process| {
                process.registration.is_some()
                    && process.running.is_empty()
                    && process.outbox.is_empty()
            })
    }
}
