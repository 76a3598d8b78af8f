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

    pub(super) fn recorded_attempts(&self) -> HashMap<JobId, u32> {
        let mut statement = self.db.prepare("SELECT id, attempts FROM jobs").unwrap();
        statement
            .query_map([], |row| Ok((row.get::<_, i64>(0)? as JobId, row.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    /// The promises, checked after every step.
    pub(super) fn check(&self) {
        let states = self.states();
        let finishing: HashSet<JobId> = self
            .in_flight
            .iter()
            .flat_map(|commit| match &commit.then {
                Pending::Results { finishing, .. }
                | Pending::Lost { finishing, .. }
                | Pending::Cancel { finishing } => finishing.clone(),
                _ => Vec::new(),
            })
            .map(|(job, _)| job)
            .collect();
        for (id, (state, _)) in &states {
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
            assert_eq!(
                states.get(id).map(|(state, _)| state.as_str()),
                Some("pending"),
                "job {id} is in the book but not pending on disk"
            );
            match job.phase {
                Phase::Queued => assert!(
                    self.queue.holds(*id) || self.book.held_back.contains(id),
                    "job {id} is queued in the book but neither in line nor held back"
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
                    assert_eq!(
                        holders.len(),
                        1,
                        "job {id} runs as lease {lease}, held by {} registrations",
                        holders.len()
                    );
                    let process = &self.processes[holders[0].process];
                    assert!(
                        process.running.contains_key(&lease) || process.outbox.contains_key(&lease),
                        "job {id} runs as lease {lease} on a worker that neither runs it nor has its result"
                    );
                }
                Phase::Finishing => assert!(
                    finishing.contains(id),
                    "job {id} is being written but no write is in flight"
                ),
            }
        }
        for (batch, counts) in &self.book.batches {
            let mut expected = (0, 0, 0, 0, 0, 0);
            for job in self.book.jobs.values() {
                if job.batch == *batch {
                    if job.phase.waiting() {
                        expected.0 += 1;
                    } else {
                        expected.1 += 1;
                    }
                }
            }
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
        }
    }

    /// Heals every fault and runs everything to its end: every job must finish.
    pub(super) fn settle(&mut self) {
        for _ in 0..10_000 {
            let before = self.progress_marker();
            self.complete_commit(true);
            self.answer_read();
            self.grace_over();
            if let Some(job) = self.backoffs.pop_front() {
                let effects = self.book.backoff_over(job);
                self.carry_out(effects);
            }
            for process in 0..WORKERS {
                if self.processes[process].registration.is_none() {
                    self.register(process);
                }
                self.step(&Step::Assign { worker: process });
                let leases: Vec<Lease> = self.processes[process].running.keys().copied().collect();
                for lease in leases {
                    self.end(process, lease, Outcome::Succeeded);
                }
                self.report(process);
            }
            while let Some(old) = self
                .registrations
                .iter()
                .find(|(id, registration)| {
                    self.processes[registration.process].registration != Some(**id)
                })
                .map(|(id, _)| *id)
            {
                self.lose(old);
            }
            self.check();
            if self.progress_marker() == before
                && self.in_flight.is_empty()
                && self.reads.is_empty()
            {
                break;
            }
        }
        let unfinished: Vec<JobId> = self.book.jobs.keys().copied().collect();
        assert!(unfinished.is_empty(), "jobs never finished: {unfinished:?}");
        assert!(
            self.processes
                .iter()
                .all(|process| process.outbox.is_empty()),
            "results never acknowledged"
        );
    }

    pub(super) fn progress_marker(&self) -> (usize, usize, usize) {
        (
            self.book.jobs.len(),
            self.queue.len(),
            self.processes
                .iter()
                .map(|process| process.outbox.len() + process.running.len())
                .sum(),
        )
    }
}
