//! Unit tests of the book's rules, one rule at a time, with no store and no actors: each test
//! hands the book events and looks at the effects and the state that follow. Here: a client's
//! changes; attempts and results are in `attempts.rs`.

use super::*;
use crate::job::{CancelTarget, CarriedAttempt, JobSpec, Outcome, OutputObject, Outputs};
use crate::status::Submitted;
use crate::storage::store::{FailedJob, ReplayedBatch, ReplayedJob, Unpublished};

mod attempts;
mod keys;
mod results;
mod retry_job;
mod returned;
mod vouching;

const T0: u64 = 1_000_000;

fn limits() -> Limits {
    Limits {
        retry_backoff: Duration::from_secs(1),
        max_batch_jobs: 100,
        max_unfinished_jobs: 10,
        max_unfinished_bytes: 1 << 30,
        max_result_bytes: 64,
    }
}

fn book() -> Book {
    let replay = Replay {
        ledger: crate::job::LedgerId(0x5f0c),
        epoch: 1,
        lease_key: lease_key(),
        next_job: 1,
        ..Replay::default()
    };
    Book::new(replay, limits(), Arc::new(Metrics::new()))
}

/// The lease key of every book in these tests.
fn lease_key() -> LeaseKey {
    LeaseKey::new([0x5e; 32])
}

fn worker(id: WorkerId) -> WorkerRef {
    WorkerRef {
        id,
        name: Arc::from(format!("w{id}")),
    }
}

fn spec(max_attempts: u32) -> JobSpec {
    let mut spec = JobSpec::call("noop", Vec::new());
    spec.max_attempts = max_attempts;
    spec
}

/// Commits whatever the effects ask to commit, with `result`; returns what follows.
fn commit(book: &mut Book, effects: Effects, result: Result<(), StoreError>) -> Effects {
    let commit = effects.commit.expect("a commit");
    book.committed(commit.then, result, T0)
}

fn committed(book: &mut Book, effects: Effects) -> Effects {
    commit(book, effects, Ok(()))
}

fn disk_full() -> StoreError {
    StoreError::Database(Arc::new(std::io::Error::other("database or disk is full")))
}

/// A batch of `count` jobs with `max_attempts` each, accepted and on disk.
fn submitted(book: &mut Book, count: usize, max_attempts: u32) -> Submitted {
    let effects = book
        .submit("b".into(), vec![spec(max_attempts); count], None, T0)
        .unwrap();
    match committed(book, effects).answer {
        Some(Answer::Submitted(submitted)) => submitted,
        other => panic!("expected a submitted batch, got {other:?}"),
    }
}

fn result(job: JobId, lease: Lease, attempt: u32, outcome: Outcome) -> AttemptResult {
    AttemptResult {
        lease,
        job,
        attempt,
        outcome,
        exit_code: Some(if outcome == Outcome::Succeeded { 0 } else { 1 }),
        started_at_ms: T0,
        duration_ms: 5,
        output_tail: String::new(),
        result: Vec::new(),
        error: (outcome != Outcome::Succeeded).then(|| "exited with code 1".into()),
        outputs: Vec::new(),
        permanent: false,
        epoch: 1,
    }
}

/// An attempt lost with its worker after the worker said it started it.
fn lost(job: JobId, lease: Lease) -> LostAttempt {
    LostAttempt {
        job,
        lease,
        started: true,
    }
}

/// A start from the job's current turn in line.
fn started(book: &Book, job: JobId, lease: Lease, attempt: u32) -> Started {
    Started {
        job,
        lease,
        attempt,
        entry: book.jobs.get(&job).map_or(0, |job| job.queued_as),
    }
}

/// An unfinished job on record: its id, its attempts, and the start of the latest as (lease,
/// worker) if that had not ended on record.
type OnRecord<'a> = (JobId, u32, Option<(Lease, &'a str)>);

/// A book after a restart, holding these unfinished jobs.
fn restarted(unfinished: &[OnRecord]) -> Book {
    let replay = Replay {
        ledger: crate::job::LedgerId(0x5f0c),
        epoch: 2,
        lease_key: lease_key(),
        batches: vec![ReplayedBatch {
            id: 1,
            name: "b".into(),
            submitted_at_ms: T0,
            total: unfinished.len() as u64 + 1,
            succeeded: 1,
            failed: 0,
            cancelled: 0,
            started_at_ms: Some(T0),
            finished_at_ms: Some(T0),
            idempotency_key: None,
        }],
        unfinished: unfinished
            .iter()
            .map(|&(id, attempts, started)| ReplayedJob {
                id,
                batch: 1,
                spec: SpecBytes::encode(&spec(3)),
                attempts,
                lost_attempts: 0,
                failures: 0,
                lost_on: Vec::new(),
                started: started.map(|(lease, worker)| (lease, worker.to_string())),
            })
            .collect(),
        next_job: 10,
        unpublished: Vec::new(),
        last_cursor: 1,
    };
    Book::new(replay, limits(), Arc::new(Metrics::new()))
}

fn finish_states(effects: &Effects) -> Vec<(JobId, JobState)> {
    effects
        .commit
        .iter()
        .flat_map(|commit| commit.changes.iter())
        .filter_map(|change| match change {
            Change::Finish(order) => Some((order.job, order.state)),
            _ => None,
        })
        .collect()
}

/// The error a job is recorded with, in these effects.
fn finish_error(effects: &Effects) -> Option<String> {
    effects
        .commit
        .as_ref()?
        .changes
        .iter()
        .find_map(|change| match change {
            Change::Finish(order) => order.error.clone(),
            _ => None,
        })
}

fn counts(book: &Book, batch: BatchId) -> (u64, u64, u64, u64, u64) {
    let info = book.batch(batch, T0).unwrap();
    (
        info.pending,
        info.running,
        info.succeeded,
        info.failed,
        info.cancelled,
    )
}
#[test]
fn a_batch_joins_memory_and_the_queue_only_once_on_disk() {
    let mut book = book();
    let effects = book.submit("b".into(), vec![spec(3); 3], None, T0).unwrap();
    assert_eq!(book.unfinished(), 0, "nothing is held before the write");
    assert!(effects.enqueue.is_empty());
    let after = committed(&mut book, effects);
    assert_eq!(
        after.answer,
        Some(Answer::Submitted(Submitted {
            batch: 1,
            first_job: 1,
            jobs: 3,
            unplaceable: Vec::new(),
            repeated: false,
        }))
    );
    let queued: Vec<(JobId, u32)> = after
        .enqueue
        .iter()
        .map(|job| (job.job, job.attempt))
        .collect();
    assert_eq!(queued, vec![(1, 1), (2, 1), (3, 1)]);
    assert_eq!(counts(&book, 1), (3, 0, 0, 0, 0));
}

#[test]
fn a_batch_whose_write_fails_is_refused_and_holds_no_place() {
    let mut book = book();
    let effects = book.submit("b".into(), vec![spec(3); 8], None, T0).unwrap();
    // Being written, it counts against the limit of 10.
    let refused = book
        .submit("c".into(), vec![spec(3); 3], None, T0)
        .unwrap_err();
    assert!(
        matches!(refused, LedgerError::QueueFull { unfinished: 8, .. }),
        "{refused}"
    );
    let after = commit(&mut book, effects, Err(disk_full()));
    match after.answer {
        Some(Answer::Refused(LedgerError::Store { action, .. })) => {
            assert_eq!(action, "queue the batch")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(after.enqueue.is_empty());
    assert!(book.batch(1, T0).is_err());
    // Its place is free again.
    submitted(&mut book, 10, 3);
}

#[test]
fn bad_batches_are_refused_naming_the_job() {
    let mut book = book();
    assert_eq!(
        book.submit("b".into(), Vec::new(), None, T0).unwrap_err(),
        LedgerError::EmptyBatch
    );
    assert!(matches!(
        book.submit("b".into(), vec![spec(1); 101], None, T0)
            .unwrap_err(),
        LedgerError::BatchTooLarge {
            jobs: 101,
            limit: 100
        }
    ));
    let mut bad = spec(1);
    bad.slots = 0;
    let error = book
        .submit("b".into(), vec![spec(1), bad], None, T0)
        .unwrap_err();
    assert_eq!(error.to_string(), "job 2: slots: must be at least 1");
    let mut huge = spec(1);
    huge.task = crate::job::Task::Call {
        handler: "noop".into(),
        payload: vec![0; MAX_SPEC_BYTES],
    };
    assert!(matches!(
        book.submit("b".into(), vec![huge], None, T0).unwrap_err(),
        LedgerError::SpecTooLarge { index: 1, .. }
    ));
    assert_eq!(book.unfinished(), 0);
}
#[test]
fn cancel_withdraws_queued_kills_running_and_records_once_on_disk() {
    let mut book = book();
    submitted(&mut book, 3, 3);
    let w = worker(1);
    let _ = book.attempts_started(
        &w,
        &[started(&book, 1, 100, 1), started(&book, 2, 101, 1)],
        T0,
    );
    let failed = book.results(&w, &[result(2, 101, 1, Outcome::Failed)], T0);
    let _ = committed(&mut book, failed);
    assert_eq!(book.phase(2), Some(Phase::Backoff));
    let effects = book.cancel(CancelTarget::Batch(1), T0).unwrap();
    assert_eq!(effects.kill, vec![100]);
    assert_eq!(effects.withdraw, vec![3]);
    assert_eq!(finish_states(&effects).len(), 3);
    // While written, they show as cancelled: a cancel of many pending jobs is not that many
    // running. The batch is done only once it is on disk.
    assert_eq!(counts(&book, 1), (0, 0, 0, 0, 3));
    assert!(!book.batch(1, T0).unwrap().done);
    // Cancelled again while written: nothing more to do.
    assert_eq!(
        book.cancel(CancelTarget::Job(1), T0).unwrap().answer,
        Some(Answer::Changed(0))
    );
    let after = committed(&mut book, effects);
    assert_eq!(after.answer, Some(Answer::Changed(3)));
    assert_eq!(counts(&book, 1), (0, 0, 0, 0, 3));
    // The backoff ends for a job no longer there.
    assert!(book.backoff_over(2).enqueue.is_empty());
    assert_eq!(
        book.cancel(CancelTarget::Job(2), T0).unwrap().answer,
        Some(Answer::Changed(0))
    );
    assert_eq!(
        book.cancel(CancelTarget::Job(99), T0).unwrap_err(),
        LedgerError::NoJob(99)
    );
    assert_eq!(
        book.cancel(CancelTarget::Batch(9), T0).unwrap_err(),
        LedgerError::NoBatch(9)
    );
}

#[test]
fn a_cancel_whose_write_fails_runs_the_jobs_again() {
    let mut book = book();
    submitted(&mut book, 1, 3);
    let effects = book.cancel(CancelTarget::Job(1), T0).unwrap();
    let after = commit(&mut book, effects, Err(disk_full()));
    assert!(matches!(
        after.answer,
        Some(Answer::Refused(LedgerError::Store {
            action: "cancel",
            ..
        }))
    ));
    assert_eq!(after.enqueue.len(), 1);
    assert_eq!(counts(&book, 1), (1, 0, 0, 0, 0));
}

#[test]
fn a_retry_reopens_the_failed_jobs_once_with_their_numbers_going_on() {
    let mut book = book();
    submitted(&mut book, 2, 1);
    let w = worker(1);
    let _ = book.attempts_started(
        &w,
        &[started(&book, 1, 100, 1), started(&book, 2, 101, 1)],
        T0,
    );
    let effects = book.results(
        &w,
        &[
            result(1, 100, 1, Outcome::Failed),
            result(2, 101, 1, Outcome::Succeeded),
        ],
        T0,
    );
    let _ = committed(&mut book, effects);
    assert_eq!(counts(&book, 1), (0, 0, 1, 1, 0));
    assert_eq!(book.retry(9).unwrap_err(), LedgerError::NoBatch(9));
    let effects = book.retry(1).unwrap();
    assert_eq!(effects.lookup, Some(Lookup::FailedJobs(1)));
    // A second retry while the first is read: it changes nothing.
    assert_eq!(book.retry(1).unwrap().answer, Some(Answer::Changed(0)));
    let failed = vec![FailedJob {
        id: 1,
        spec: SpecBytes::encode(&spec(1)),
        attempts: 1,
    }];
    let effects = book.failed_jobs_found(1, Ok(failed));
    assert!(matches!(
        &effects.commit.as_ref().unwrap().changes[..],
        [Change::Reopen(jobs)] if jobs == &vec![1]
    ));
    let after = committed(&mut book, effects);
    assert_eq!(after.answer, Some(Answer::Changed(1)));
    assert_eq!(after.enqueue[0].attempt, 2);
    assert_eq!(counts(&book, 1), (1, 0, 1, 0, 0));
    assert!(!book.batch(1, T0).unwrap().done);
    // The retry is over: another reads again.
    assert_eq!(book.retry(1).unwrap().lookup, Some(Lookup::FailedJobs(1)));
    assert_eq!(
        book.failed_jobs_found(1, Ok(Vec::new())).answer,
        Some(Answer::Changed(0))
    );
}

#[test]
fn the_book_says_why_the_jobs_it_holds_out_of_line_wait() {
    let waiting = |book: &Book, batch| -> Vec<(u64, String)> {
        book.waiting(batch)
            .into_iter()
            .map(|group| (group.jobs, group.reason))
            .collect()
    };
    // Held back after a restart, until the grace ends.
    let mut replayed = restarted(&[(2, 0, None), (3, 1, None)]);
    let _ = replayed.start(true);
    let held = "held back after the coordinator restarted, for a reconnecting worker that may \
                still run it";
    assert_eq!(replayed.live_job(2).unwrap().waiting.as_deref(), Some(held));
    assert_eq!(waiting(&replayed, None), vec![(2, held.to_string())]);
    assert_eq!(waiting(&replayed, Some(7)), vec![]);
    let _ = replayed.grace_over();
    assert_eq!(
        replayed.live_job(2).unwrap().waiting,
        None,
        "in line: the Scheduler's to say"
    );
    assert!(waiting(&replayed, None).is_empty());

    // Waiting out a backoff after a failure, until it ends.
    let mut book = book();
    submitted(&mut book, 2, 3);
    let w = worker(1);
    let _ = book.attempts_started(&w, &[started(&book, 1, 100, 1)], T0);
    let failed = book.results(&w, &[result(1, 100, 1, Outcome::Failed)], T0);
    let _ = committed(&mut book, failed);
    assert_eq!(
        book.live_job(1).unwrap().waiting.as_deref(),
        Some("retrying after backoff (1 of 3 attempts failed)")
    );
    assert_eq!(book.live_job(2).unwrap().waiting, None);
    assert_eq!(
        waiting(&book, Some(1)),
        vec![(1, "retrying after backoff".to_string())]
    );
    let _ = book.backoff_over(1);
    assert!(waiting(&book, Some(1)).is_empty());
    assert_eq!(book.live_job(1).unwrap().waiting, None);
}
