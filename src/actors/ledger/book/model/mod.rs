//! A property test of the book: random sequences of events, driven through the book with the
//! real store underneath (SQLite in memory, the same schema, writes, replay and reads) and the
//! real pending queue beside it, against a small model of the Scheduler and the workers. The
//! messages between the book and the Scheduler travel as the actors' do, in order and late: a
//! job may be handed to a worker while the book is already cancelling it, a commit may be on
//! disk before the book hears so. After every step it checks what the ledger promises:
//!
//! - a job is recorded at most once: the store never refuses a second terminal record, and a
//!   succeeded or cancelled job never changes again;
//! - a recorded job never returns to pending, nor to the book's memory;
//! - an unfinished job is pending (in line or on its way there, held back after a restart, or
//!   waiting out its backoff), held by exactly one live attempt, or being written;
//! - attempt numbers never repeat (but for the one exception the README gives: an attempt
//!   whose start had not reached the disk at a restart, and that no worker reports within the
//!   grace, is not on record);
//! - an attempt whose start was lost in a restart (the commit of its start had not reached the
//!   disk), carried back or reported by its worker while its job waits, takes the job back: the
//!   job is not run again;
//! - every attempt written of (started, ended, recorded) was given to that job and to the
//!   worker named, whatever workers lie about attempts they were not given;
//! - each batch's counts equal its jobs' states;
//! - a job whose current attempt failed in a way its worker says no attempt would escape is
//!   recorded failed at once, with no backoff and no other attempt;
//! - every terminal record has a cursor above every one written before it, across restarts,
//!   and its result is what the recorded attempt returned, never one above the limit;
//! - an idempotency key makes one batch: the store never refuses a second batch under a key,
//!   and every answer to a submission under a key (the first, a repeat at once, after a read,
//!   or after waiting for the first's commit) names the batch the store holds under it.
//!
//! After the random steps every fault heals and the run is driven to the end: every job must
//! then be finished, none stranded.
//!
//! `DROVER_MODEL_CASES` sets the number of cases (default 2,000).

use super::*;
use crate::actors::queue::PendingQueue;
use crate::job::{CancelTarget, CarriedAttempt, JobSpec, Outcome};
use crate::storage::sqlite::{apply, queries, replay, schema};
use proptest::prelude::*;
use rusqlite::Connection;
use std::collections::{BTreeMap, VecDeque};

mod checks;
mod steps;
mod workers;

use steps::{step, Lie, Returns, Step};

/// Worker processes in the model.
const WORKERS: usize = 3;

/// A worker process.
#[derive(Debug, Default)]
struct Process {
    /// Its registration now, if it is connected.
    registration: Option<WorkerId>,
    /// Attempts it runs: lease → (job, number).
    running: BTreeMap<Lease, (JobId, u32)>,
    /// Results not yet acknowledged.
    outbox: BTreeMap<Lease, AttemptResult>,
    /// Results it was told about, for duplicates.
    told: Vec<AttemptResult>,
}

/// The Scheduler's part of a registration: the leases it holds slots for (and which of them it
/// carried from an earlier one).
#[derive(Debug)]
struct Registration {
    process: usize,
    held: BTreeMap<Lease, JobId>,
    carried: HashSet<Lease>,
    /// Leases the worker said it started.
    acknowledged: HashSet<Lease>,
}

/// What the Ledger sends the Scheduler.
#[derive(Debug)]
enum ToScheduler {
    Enqueue(Vec<crate::actors::queue::PendingJob>),
    Withdraw(Vec<JobId>),
    Kill(Vec<Lease>),
    /// A job's read for its retry, sent back behind every start sent so far.
    Behind(JobId),
}

/// What the Scheduler sends the Ledger, in the order it saw it.
#[derive(Debug)]
enum ToLedger {
    Started(WorkerRef, Vec<Started>),
    Carried(WorkerRef, Vec<CarriedAttempt>),
    Results(WorkerRef, Vec<AttemptResult>),
    Lost(Arc<str>, Vec<LostAttempt>),
    /// Attempts a worker held and handed back unstarted, as (job, lease).
    Returned(WorkerRef, Vec<(JobId, Lease)>),
    /// A job's read for its retry, behind every start before it.
    Behind(JobId),
}

impl ToLedger {
    fn mentions(&self, lease: Lease) -> bool {
        match self {
            ToLedger::Started(_, started) => started.iter().any(|s| s.lease == lease),
            ToLedger::Carried(_, carried) => carried.iter().any(|a| a.lease == lease),
            ToLedger::Results(_, results) => results.iter().any(|r| r.lease == lease),
            ToLedger::Lost(_, attempts) => attempts.iter().any(|a| a.lease == lease),
            ToLedger::Returned(_, returned) => returned.iter().any(|(_, known)| *known == lease),
            ToLedger::Behind(_) => false,
        }
    }

    fn starts(&self, job: JobId) -> bool {
        matches!(self, ToLedger::Started(_, started) if started.iter().any(|s| s.job == job))
    }

    /// A carried attempt of the job: the Scheduler withdrew the job for it.
    fn carries(&self, job: JobId) -> bool {
        matches!(self, ToLedger::Carried(_, carried) if carried.iter().any(|a| a.job == job))
    }

    /// A success for the job: the Scheduler may have withdrawn the job for it.
    fn succeeds(&self, job: JobId) -> bool {
        matches!(self, ToLedger::Results(_, results)
            if results.iter().any(|r| r.job == job && r.outcome == Outcome::Succeeded))
    }
}

struct World {
    book: Book,
    db: Connection,
    epoch: u64,
    /// The ledger's lease key, as the Scheduler has it.
    lease_key: LeaseKey,
    queue: PendingQueue,
    to_scheduler: VecDeque<ToScheduler>,
    to_ledger: VecDeque<ToLedger>,
    /// Commits asked for, not yet on disk (or failed).
    in_flight: VecDeque<Commit>,
    /// Commits that ended, not yet handed back to the book.
    ended: VecDeque<(Pending, Result<(), StoreError>)>,
    reads: VecDeque<Lookup>,
    backoffs: VecDeque<JobId>,
    deadlines: VecDeque<(JobId, Lease)>,
    grace: bool,
    processes: Vec<Process>,
    registrations: BTreeMap<WorkerId, Registration>,
    next_registration: WorkerId,
    /// Attempt numbers given out, per job.
    numbers: HashMap<JobId, HashSet<u32>>,
    /// Every lease given out: to which job and worker process, in which epoch.
    given: HashMap<Lease, (JobId, usize, u64)>,
    /// Jobs lying workers spoke of: a lie may take the number an attempt whose start was lost
    /// needs to take its job back once the job is in line again (the book cannot tell which word
    /// is true, and errs on the side of a number never repeated).
    lied_about: HashSet<JobId>,
    /// Made-up leases so far, for lying workers.
    next_forged: u64,
    /// Numbers above what the store had when the coordinator restarted, not yet covered by the
    /// book's count.
    at_risk: HashMap<JobId, HashSet<u32>>,
    /// The highest cursor written so far.
    last_cursor: u64,
    now: u64,
}

/// What the attempt under `lease` returns: its lease's bytes, `times` over (more than once is
/// above the model's limit).
fn returned(lease: Lease, times: usize) -> Vec<u8> {
    lease.to_le_bytes().repeat(times)
}

fn process_name(process: usize) -> Arc<str> {
    Arc::from(format!("worker-{process}"))
}

fn limits() -> Limits {
    Limits {
        retry_backoff: Duration::from_millis(100),
        max_batch_jobs: 100,
        max_unfinished_jobs: 50,
        max_unfinished_bytes: 1 << 30,
        max_result_bytes: 16,
    }
}

impl World {
    fn new() -> World {
        let mut db = Connection::open_in_memory().unwrap();
        schema::prepare(&mut db, std::path::Path::new(":memory:")).unwrap();
        // A key of its own, as each ledger has, but the same in every case: leases order the
        // attempts a worker runs, and a failing case must shrink to one that fails the same way.
        db.execute(
            "UPDATE meta SET value = ?1 WHERE key = 'lease_key'",
            [vec![0x4bu8; 32]],
        )
        .unwrap();
        let replayed = replay(&mut db).unwrap();
        let epoch = replayed.epoch;
        let lease_key = replayed.lease_key.clone();
        let mut book = Book::new(replayed, limits(), Arc::new(Metrics::new()));
        let (effects, _) = book.start(false);
        let mut world = World {
            book,
            db,
            epoch,
            lease_key,
            queue: PendingQueue::default(),
            to_scheduler: VecDeque::new(),
            to_ledger: VecDeque::new(),
            in_flight: VecDeque::new(),
            ended: VecDeque::new(),
            reads: VecDeque::new(),
            backoffs: VecDeque::new(),
            deadlines: VecDeque::new(),
            grace: false,
            processes: (0..WORKERS).map(|_| Process::default()).collect(),
            registrations: BTreeMap::new(),
            next_registration: 1,
            numbers: HashMap::new(),
            given: HashMap::new(),
            lied_about: HashSet::new(),
            next_forged: 0,
            at_risk: HashMap::new(),
            last_cursor: 0,
            now: 1_000_000,
        };
        world.carry_out(effects);
        for process in 0..WORKERS {
            world.register(process);
        }
        world
    }

    fn worker_ref(&self, registration: WorkerId) -> WorkerRef {
        WorkerRef {
            id: registration,
            name: process_name(self.registrations[&registration].process),
        }
    }

    /// What the Ledger actor does with effects: messages to the Scheduler go on their way,
    /// notices reach the workers' sessions, commits and reads go to the store.
    fn carry_out(&mut self, effects: Effects) {
        if !effects.enqueue.is_empty() {
            self.to_scheduler
                .push_back(ToScheduler::Enqueue(effects.enqueue));
        }
        if !effects.withdraw.is_empty() {
            self.to_scheduler
                .push_back(ToScheduler::Withdraw(effects.withdraw));
        }
        if !effects.kill.is_empty() {
            self.to_scheduler.push_back(ToScheduler::Kill(effects.kill));
        }
        for (registration, notice) in effects.notices {
            let Some(process) = self
                .processes
                .iter_mut()
                .find(|process| process.registration == Some(registration))
            else {
                continue;
            };
            for lease in notice.leases() {
                if let Some(result) = process.outbox.remove(lease) {
                    process.told.push(result);
                }
            }
        }
        self.backoffs
            .extend(effects.retry_after.into_iter().map(|(job, _)| job));
        self.deadlines.extend(
            effects
                .deadlines
                .into_iter()
                .map(|(job, lease, _)| (job, lease)),
        );
        for (key, answer) in &effects.repeats {
            self.check_answer_to_key(key, Some(answer));
        }
        self.in_flight.extend(effects.commit);
        match effects.lookup {
            // As the Ledger actor does: read behind every start the Scheduler sent so far.
            Some(Lookup::FinishedJob(job)) => self.to_scheduler.push_back(ToScheduler::Behind(job)),
            lookup => self.reads.extend(lookup),
        }
    }

    /// The Scheduler reads the oldest message from the Ledger.
    fn scheduler_reads(&mut self) {
        let Some(message) = self.to_scheduler.pop_front() else {
            return;
        };
        match message {
            ToScheduler::Enqueue(jobs) => {
                for job in jobs {
                    self.queue.push(job);
                }
            }
            ToScheduler::Withdraw(jobs) => self.queue.withdraw(jobs),
            ToScheduler::Behind(job) => self.to_ledger.push_back(ToLedger::Behind(job)),
            ToScheduler::Kill(leases) => {
                for lease in leases {
                    // Only a registration holding the lease is told, and only a connected one
                    // hears it.
                    let holder = self
                        .registrations
                        .iter()
                        .find(|(_, registration)| registration.held.contains_key(&lease))
                        .map(|(id, registration)| (*id, registration.process));
                    if let Some((registration, process)) = holder {
                        if self.processes[process].registration == Some(registration) {
                            self.end(process, lease, Outcome::Killed);
                        }
                    }
                }
            }
        }
    }

    /// The Ledger reads the oldest message from the Scheduler.
    fn ledger_reads(&mut self) {
        let Some(message) = self.to_ledger.pop_front() else {
            return;
        };
        let mut heard = Vec::new();
        let effects = match message {
            ToLedger::Started(worker, started) => {
                self.book.attempts_started(&worker, &started, self.now)
            }
            ToLedger::Carried(worker, carried) => {
                heard.extend(carried.iter().map(|a| (a.lease, a.job, a.attempt)));
                let claims: Vec<_> = carried
                    .iter()
                    .map(|a| (a.lease, a.job, a.attempt, true))
                    .collect();
                let take_back = self.to_take_back(&worker, &claims);
                let effects = self.book.attempts_carried(&worker, &carried, self.now);
                self.check_taken_back(&take_back);
                effects
            }
            ToLedger::Results(worker, results) => {
                heard.extend(results.iter().map(|r| (r.lease, r.job, r.attempt)));
                let claims: Vec<_> = results
                    .iter()
                    .map(|r| (r.lease, r.job, r.attempt, r.outcome == Outcome::Succeeded))
                    .collect();
                let take_back = self.to_take_back(&worker, &claims);
                let for_good = self.failing_for_good(&worker, &results);
                let effects = self.book.results(&worker, &results, self.now);
                self.check_failed_for_good(&for_good, &effects);
                self.check_taken_back(&take_back);
                effects
            }
            ToLedger::Lost(name, attempts) => {
                self.book
                    .worker_lost(&name, &attempts, "lost in the model", self.now)
            }
            ToLedger::Returned(worker, returned) => self.book.attempts_returned(&worker, &returned),
            ToLedger::Behind(job) => {
                self.reads.push_back(Lookup::FinishedJob(job));
                Effects::none()
            }
        };
        for (lease, job, attempt) in heard {
            self.reported(lease, job, attempt);
        }
        self.carry_out(effects);
    }

    fn step(&mut self, step: &Step) {
        self.now += 10;
        match *step {
            Step::Submit {
                jobs,
                max_attempts,
                timeout,
                key,
            } => {
                let mut spec = JobSpec::call("noop", Vec::new());
                spec.max_attempts = max_attempts;
                spec.timeout_s = timeout.then_some(1);
                let key = key.map(|key| format!("key-{key}"));
                let submitted =
                    self.book
                        .submit("b".into(), vec![spec; jobs], key.as_deref(), self.now);
                if let Ok(effects) = submitted {
                    if let Some(key) = &key {
                        self.check_answer_to_key(key, effects.answer.as_ref());
                    }
                    self.carry_out(effects);
                }
            }
            Step::Assign { worker } => self.assign(worker),
            Step::SchedulerReads => self.scheduler_reads(),
            Step::LedgerReads => self.ledger_reads(),
            Step::Finish {
                worker,
                pick,
                success,
                permanent,
                returns,
            } => {
                let running = &self.processes[worker].running;
                if running.is_empty() {
                    return;
                }
                let lease = *running.keys().nth(pick % running.len()).unwrap();
                let outcome = if success {
                    Outcome::Succeeded
                } else {
                    Outcome::Failed
                };
                self.end(worker, lease, outcome);
                if let Some(result) = self.processes[worker].outbox.get_mut(&lease) {
                    result.permanent = permanent && !success;
                    result.result = match returns {
                        Returns::Nothing => Vec::new(),
                        Returns::Result => returned(lease, 1),
                        Returns::TooLong => returned(lease, 3),
                    };
                }
            }
            Step::Report { worker } => self.report(worker),
            Step::Acknowledge { worker } => self.acknowledge(worker),
            Step::Release { worker, pick } => self.release(worker, pick),
            Step::Duplicate { worker, pick } => {
                let process = &self.processes[worker];
                let (Some(registration), false) = (process.registration, process.told.is_empty())
                else {
                    return;
                };
                let result = process.told[pick % process.told.len()].clone();
                self.deliver(registration, vec![result]);
            }
            Step::Disconnect { worker } => {
                if let Some(registration) = self.processes[worker].registration {
                    self.lose(registration);
                }
            }
            Step::Reconnect { worker } => {
                // A registration it still has is left for the Registry to find gone later.
                self.register(worker);
            }
            Step::ExpireOld => {
                if let Some(old) = self.old_registration() {
                    self.lose(old);
                }
            }
            Step::Kill { worker } => {
                let process = &mut self.processes[worker];
                process.running.clear();
                process.outbox.clear();
                let registrations: Vec<WorkerId> = self
                    .registrations
                    .iter()
                    .filter(|(_, registration)| registration.process == worker)
                    .map(|(id, _)| *id)
                    .collect();
                for registration in registrations {
                    self.lose(registration);
                }
            }
            Step::Commit { ok } => self.end_commit(ok),
            Step::HandBack => self.hand_back(),
            Step::Read => self.answer_read(),
            Step::DeadlinePassed => {
                if let Some((job, lease)) = self.deadlines.pop_front() {
                    let effects = self.book.deadline_passed(job, lease, self.now);
                    self.carry_out(effects);
                }
            }
            Step::BackoffOver => {
                if let Some(job) = self.backoffs.pop_front() {
                    let effects = self.book.backoff_over(job);
                    self.carry_out(effects);
                }
            }
            Step::Cancel { pick, whole } => {
                let mut live: Vec<JobId> = self.book.jobs.keys().copied().collect();
                if live.is_empty() {
                    return;
                }
                live.sort_unstable();
                let id = live[pick % live.len()];
                let target = if whole {
                    CancelTarget::Batch(self.book.jobs[&id].batch)
                } else {
                    CancelTarget::Job(id)
                };
                if let Ok(effects) = self.book.cancel(target, self.now) {
                    self.carry_out(effects);
                }
            }
            Step::Retry { pick } => {
                let batches: Vec<BatchId> = self.book.batches.keys().copied().collect();
                if batches.is_empty() {
                    return;
                }
                if let Ok(effects) = self.book.retry(batches[pick % batches.len()]) {
                    self.carry_out(effects);
                }
            }
            Step::RetryJob { pick } => {
                let known = self.book.next_job.saturating_sub(1);
                if known == 0 {
                    return;
                }
                if let Ok(effects) = self.book.retry_job(1 + pick as u64 % known) {
                    self.carry_out(effects);
                }
            }
            Step::Restart { kept } => self.restart(kept),
            Step::GraceOver => self.grace_over(),
            Step::Lie { worker, ref lie } => self.lie(worker, lie),
        }
    }

    /// The oldest commit reaches the disk (checked, see [`World::write`]) or fails.
    fn end_commit(&mut self, ok: bool) {
        let Some(commit) = self.in_flight.pop_front() else {
            return;
        };
        let result = if ok {
            self.write(&commit.changes);
            Ok(())
        } else {
            Err(StoreError::Database(Arc::new(std::io::Error::other(
                "disk full in the model",
            ))))
        };
        self.ended.push_back((commit.then, result));
    }

    fn hand_back(&mut self) {
        let Some((then, result)) = self.ended.pop_front() else {
            return;
        };
        let key = match &then {
            Pending::Submit { key, .. } => key.clone(),
            _ => None,
        };
        let effects = self.book.committed(then, result, self.now);
        if let Some(key) = key {
            self.check_answer_to_key(&key, effects.answer.as_ref());
        }
        self.carry_out(effects);
    }

    /// Writes to the store, checking that no terminal record is refused, that a succeeded job
    /// never changes nor a cancelled one but by a retry, and that every attempt written of was
    /// given to that job and the worker named.
    fn write(&mut self, changes: &[Change]) {
        for change in changes {
            match change {
                Change::Finish(order) => {
                    if let Some(lease) = order.lease {
                        self.check_given(order.job, lease, order.worker.as_deref());
                    }
                    self.check_record(order);
                }
                Change::Attempt(row) => self.check_given(row.job, row.lease, Some(&row.worker)),
                Change::Started(rows) => {
                    for row in rows {
                        self.check_given(row.job, row.lease, Some(&*row.worker));
                    }
                }
                _ => {}
            }
        }
        let before = self.states();
        let cursors_before = self.cursors();
        let applied = apply(&mut self.db, &[changes]).unwrap();
        assert!(
            applied.refused_second_records.is_empty(),
            "the store refused a second record of jobs {:?}",
            applied.refused_second_records
        );
        let after = self.states();
        let reopened: HashSet<JobId> = changes
            .iter()
            .flat_map(|change| match change {
                Change::Reopen(jobs) => jobs.clone(),
                _ => Vec::new(),
            })
            .collect();
        for (job, (state, lease)) in &before {
            let kept = match state.as_str() {
                "succeeded" => true,
                "cancelled" => !reopened.contains(job),
                _ => false,
            };
            if kept {
                assert_eq!(
                    after.get(job),
                    Some(&(state.clone(), *lease)),
                    "job {job} changed after it was recorded {state}"
                );
                assert_eq!(
                    self.cursors().get(job),
                    cursors_before.get(job),
                    "job {job}'s cursor changed after it was recorded {state}"
                );
            }
        }
    }

    fn check_given(&self, job: JobId, lease: Lease, worker: Option<&str>) {
        let given = self.given.get(&lease);
        assert!(
            given.is_some_and(|(to_job, process, _)| *to_job == job
                && worker.is_none_or(|worker| *process_name(*process) == *worker)),
            "job {job}: an attempt written of (lease {lease:#x}, worker {worker:?}) was not \
             given to it and that worker ({given:?})"
        );
    }

    fn answer_read(&mut self) {
        let Some(lookup) = self.reads.pop_front() else {
            return;
        };
        let effects = match lookup {
            Lookup::LateSuccesses {
                worker,
                worker_name,
                late,
            } => {
                let jobs: Vec<JobId> = late.iter().map(|(job, _)| *job).collect();
                let found = queries::recorded_leases(&self.db, &jobs);
                self.book
                    .late_successes_found(worker, &worker_name, late, found)
            }
            Lookup::FailedJobs(batch) => {
                let found = queries::failed_jobs(&self.db, batch);
                self.book.failed_jobs_found(batch, found)
            }
            Lookup::FinishedJob(id) => {
                let found = queries::finished_job(&self.db, id);
                self.book.finished_job_found(id, found)
            }
            Lookup::FirstJob { key, batch } => {
                let first = crate::storage::store::JobFilter {
                    batch: Some(batch),
                    state: None,
                    after: 0,
                    limit: 1,
                };
                let found =
                    queries::jobs(&self.db, first).map(|page| page.first().map(|job| job.id));
                let effects = self.book.first_job_found(key.clone(), batch, found);
                self.check_answer_to_key(&key, effects.answer.as_ref());
                effects
            }
        };
        self.carry_out(effects);
    }

    fn restart(&mut self, kept: usize) {
        for commit in self.in_flight.drain(..).take(kept).collect::<Vec<_>>() {
            self.write(&commit.changes);
        }
        self.ended.clear();
        self.reads.clear();
        self.backoffs.clear();
        self.deadlines.clear();
        self.to_scheduler.clear();
        self.to_ledger.clear();
        self.queue = PendingQueue::default();
        self.registrations.clear();
        for process in &mut self.processes {
            process.registration = None;
        }
        let replayed = replay(&mut self.db).unwrap();
        assert!(
            replayed.last_cursor >= self.last_cursor,
            "replayed the last cursor as {}, but {} was written",
            replayed.last_cursor,
            self.last_cursor
        );
        self.epoch = replayed.epoch;
        assert_eq!(
            replayed.lease_key, self.lease_key,
            "the key outlives a restart"
        );
        // Numbers above what the store has are not on record: at risk until reported.
        let recorded: HashMap<JobId, u32> = self.recorded_attempts();
        for (job, numbers) in &self.numbers {
            let on_record = recorded.get(job).copied().unwrap_or(0);
            let above: HashSet<u32> = numbers.iter().copied().filter(|n| *n > on_record).collect();
            if !above.is_empty() {
                self.at_risk.entry(*job).or_default().extend(above);
            }
        }
        self.book = Book::new(replayed, limits(), Arc::new(Metrics::new()));
        let (effects, held) = self.book.start(true);
        self.grace = held;
        self.carry_out(effects);
    }

    fn grace_over(&mut self) {
        if !self.grace {
            return;
        }
        self.grace = false;
        // What nobody reported within the grace is the README's exception: its number may be
        // given again.
        for (job, numbers) in self.at_risk.drain() {
            if let Some(given) = self.numbers.get_mut(&job) {
                for number in numbers {
                    given.remove(&number);
                }
            }
        }
        let effects = self.book.grace_over();
        self.carry_out(effects);
    }
}

fn cases() -> u32 {
    std::env::var("DROVER_MODEL_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(2_000)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn the_ledger_keeps_its_promises_through_any_sequence_of_events(
        steps in prop::collection::vec(step(), 1..100)
    ) {
        let mut world = World::new();
        for step in &steps {
            world.step(step);
            world.check();
        }
        world.settle();
    }
}
