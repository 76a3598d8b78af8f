//! The workers and the Scheduler's side of them, in the model: registrations, what each
//! worker process runs and reports, and the lies a worker may tell.

use super::*;

impl World {
    /// A worker process registers (again), carrying what it runs.
    pub(super) fn register(&mut self, process: usize) {
        let registration = self.next_registration;
        self.next_registration += 1;
        // The Scheduler refuses a claim on a lease another worker holds, and moves the rest off
        // any earlier registration of this one.
        let carried: Vec<CarriedAttempt> = self.processes[process]
            .running
            .iter()
            .filter(|(lease, _)| {
                !self
                    .registrations
                    .values()
                    .any(|other| other.process != process && other.held.contains_key(lease))
            })
            .map(|(lease, (job, attempt))| CarriedAttempt {
                lease: *lease,
                job: *job,
                attempt: *attempt,
                slots: 1,
                epoch: self.epoch_of(*lease),
            })
            .collect();
        for other in self.registrations.values_mut() {
            for attempt in &carried {
                other.held.remove(&attempt.lease);
                other.carried.remove(&attempt.lease);
            }
        }
        self.registrations.insert(
            registration,
            Registration {
                process,
                held: carried
                    .iter()
                    .map(|attempt| (attempt.lease, attempt.job))
                    .collect(),
                carried: carried.iter().map(|attempt| attempt.lease).collect(),
                acknowledged: carried.iter().map(|attempt| attempt.lease).collect(),
            },
        );
        self.processes[process].registration = Some(registration);
        if !carried.is_empty() {
            // As the Scheduler does: the jobs leave the line while the Ledger decides.
            self.queue.withdraw(
                carried
                    .iter()
                    .map(|attempt| attempt.job)
                    .collect::<Vec<_>>(),
            );
            let worker = self.worker_ref(registration);
            self.to_ledger.push_back(ToLedger::Carried(worker, carried));
        }
        self.report(process);
    }

    /// The book heard of an attempt: its number is no longer at risk if the book's count now
    /// covers it (or the job is finished). The book raises its count by at most one on a word
    /// it cannot check, so an attempt whose start never reached the disk may stay at risk: the
    /// README's exception. (A lie about a number is no word of its attempt.)
    pub(super) fn reported(&mut self, lease: Lease, job: JobId, attempt: u32) {
        let covered = self
            .book
            .jobs
            .get(&job)
            .is_none_or(|live| live.attempts >= attempt);
        if self.grace && covered && self.given.get(&lease).is_some_and(|given| given.0 == job) {
            if let Some(numbers) = self.at_risk.get_mut(&job) {
                numbers.remove(&attempt);
            }
        }
    }

    /// The epoch a worker says an attempt was handed out in: the true one for a lease given out
    /// (stolen ones too), the run before this one for a made-up lease (the likeliest to pass as
    /// an attempt whose start was lost).
    pub(super) fn epoch_of(&self, lease: Lease) -> u64 {
        self.given
            .get(&lease)
            .map_or(self.epoch.saturating_sub(1), |given| given.2)
    }

    /// The registration is declared lost: the Scheduler hands its leases to the Ledger.
    pub(super) fn lose(&mut self, registration: WorkerId) {
        let Some(gone) = self.registrations.remove(&registration) else {
            return;
        };
        if self.processes[gone.process].registration == Some(registration) {
            self.processes[gone.process].registration = None;
        }
        let attempts: Vec<LostAttempt> = gone
            .held
            .iter()
            .map(|(lease, job)| LostAttempt {
                job: *job,
                lease: *lease,
                started: gone.acknowledged.contains(lease),
            })
            .collect();
        if !attempts.is_empty() {
            self.to_ledger
                .push_back(ToLedger::Lost(process_name(gone.process), attempts));
        }
    }

    pub(super) fn end(&mut self, process: usize, lease: Lease, outcome: Outcome) {
        let Some((job, attempt)) = self.processes[process].running.remove(&lease) else {
            return;
        };
        let epoch = self.epoch_of(lease);
        let result = AttemptResult {
            epoch,
            lease,
            job,
            attempt,
            outcome,
            exit_code: Some(0),
            started_at_ms: self.now,
            duration_ms: 1,
            output_tail: String::new(),
            result: Vec::new(),
            error: None,
            outputs: Vec::new(),
            permanent: false,
        };
        self.processes[process].outbox.insert(lease, result);
    }

    pub(super) fn report(&mut self, process: usize) {
        let Some(registration) = self.processes[process].registration else {
            return;
        };
        let results: Vec<AttemptResult> =
            self.processes[process].outbox.values().cloned().collect();
        self.deliver(registration, results);
    }

    /// A registration's results reach the Scheduler, which frees what it held for them and
    /// passes them on.
    pub(super) fn deliver(&mut self, registration: WorkerId, results: Vec<AttemptResult>) {
        if results.is_empty() {
            return;
        }
        // The Scheduler frees what this registration held for them, and withdraws the jobs of
        // successes from attempts it did not start on this registration (their jobs may be
        // queued again meanwhile), as `ResultsReported` and `WorkerJoined` do.
        if let Some(held) = self.registrations.get_mut(&registration) {
            let mut elsewhere = Vec::new();
            for result in &results {
                let carried = held.carried.remove(&result.lease);
                let assigned_here = held.held.remove(&result.lease).is_some() && !carried;
                if result.outcome == Outcome::Succeeded && !assigned_here {
                    elsewhere.push(result.job);
                }
            }
            self.queue.withdraw(elsewhere);
        }
        let worker = self.worker_ref(registration);
        self.to_ledger.push_back(ToLedger::Results(worker, results));
    }

    /// The Scheduler hands the next job in line to a worker and tells the Ledger.
    pub(super) fn assign(&mut self, worker: usize) {
        let Some(registration) = self.processes[worker].registration else {
            return;
        };
        let Some((job, _slots)) = self.queue.pop_for(1, &HashSet::new()) else {
            return;
        };
        // As the Scheduler makes them: distinct, since no number is given out twice in a run.
        let lease = self
            .lease_key
            .lease(self.epoch, job.job, job.attempt, &process_name(worker));
        let given = self.numbers.entry(job.job).or_default();
        assert!(
            given.insert(job.attempt),
            "attempt {} of job {} given out twice",
            job.attempt,
            job.job
        );
        self.processes[worker]
            .running
            .insert(lease, (job.job, job.attempt));
        assert!(
            self.given
                .insert(lease, (job.job, worker, self.epoch))
                .is_none(),
            "lease {lease:#x} given out twice"
        );
        if let Some(held) = self.registrations.get_mut(&registration) {
            held.held.insert(lease, job.job);
        }
        let worker = self.worker_ref(registration);
        let started = Started {
            job: job.job,
            lease,
            attempt: job.attempt,
            entry: job.entry,
        };
        self.to_ledger
            .push_back(ToLedger::Started(worker, vec![started]));
    }

    /// A worker says it started what it was given.
    pub(super) fn acknowledge(&mut self, process: usize) {
        let Some(registration) = self.processes[process].registration else {
            return;
        };
        if let Some(held) = self.registrations.get_mut(&registration) {
            let leases: Vec<Lease> = held.held.keys().copied().collect();
            held.acknowledged.extend(leases);
        }
    }

    /// A worker hands back an attempt its registration holds that it had not said it started,
    /// as one held beyond its free slots is: it drops it, and the Scheduler frees it and tells
    /// the Ledger.
    pub(super) fn release(&mut self, process: usize, pick: usize) {
        let Some(registration) = self.processes[process].registration else {
            return;
        };
        let Some(held) = self.registrations.get_mut(&registration) else {
            return;
        };
        let mut unstarted: Vec<(Lease, JobId)> = held
            .held
            .iter()
            .filter(|(lease, _)| {
                !held.acknowledged.contains(lease) && !held.carried.contains(lease)
            })
            .map(|(lease, job)| (*lease, *job))
            .collect();
        if unstarted.is_empty() {
            return;
        }
        unstarted.sort_unstable();
        let (lease, job) = unstarted[pick % unstarted.len()];
        held.held.remove(&lease);
        self.processes[process].running.remove(&lease);
        let worker = self.worker_ref(registration);
        self.to_ledger
            .push_back(ToLedger::Returned(worker, vec![(job, lease)]));
    }

    pub(super) fn old_registration(&self) -> Option<WorkerId> {
        self.registrations
            .iter()
            .find(|(id, registration)| {
                self.processes[registration.process].registration != Some(**id)
            })
            .map(|(id, _)| *id)
    }

    /// A worker lies about a live job it was not given: it reports a result under another
    /// worker's lease of the job (as if that had leaked) or a made-up one, or claims to carry a
    /// made-up attempt of it, which it then "runs" and reports like any other.
    pub(super) fn lie(&mut self, process: usize, lie: &Lie) {
        let Some(registration) = self.processes[process].registration else {
            return;
        };
        let mut live: Vec<JobId> = self.book.jobs.keys().copied().collect();
        if live.is_empty() {
            return;
        }
        live.sort_unstable();
        let job = live[lie.pick % live.len()];
        self.lied_about.insert(job);
        let stolen = self
            .processes
            .iter()
            .enumerate()
            .filter(|(other, _)| *other != process)
            .flat_map(|(_, other)| other.running.iter())
            .find(|(_, (of, _))| *of == job)
            .map(|(lease, (_, attempt))| (*lease, *attempt))
            .filter(|_| lie.steal && !lie.carry);
        let (lease, attempt) = stolen.unwrap_or_else(|| {
            self.next_forged += 1;
            // Apart from every lease the model gives out.
            ((1 << 63) | self.next_forged, lie.attempt)
        });
        if lie.carry {
            self.processes[process]
                .running
                .insert(lease, (job, attempt));
            if let Some(held) = self.registrations.get_mut(&registration) {
                held.held.insert(lease, job);
                held.carried.insert(lease);
                held.acknowledged.insert(lease);
            }
            let claim = CarriedAttempt {
                lease,
                job,
                attempt,
                slots: 1,
                epoch: self.epoch_of(lease),
            };
            let worker = self.worker_ref(registration);
            // As the Scheduler does for any carried attempt.
            self.queue.withdraw([job]);
            self.to_ledger
                .push_back(ToLedger::Carried(worker, vec![claim]));
            return;
        }
        let outcome = if lie.success {
            Outcome::Succeeded
        } else {
            Outcome::Failed
        };
        // As if it had run it: the attempt ends at once and is reported.
        self.processes[process]
            .running
            .insert(lease, (job, attempt));
        self.end(process, lease, outcome);
        self.report(process);
    }
}
