//! A retry of one job: only a failed or cancelled one, once, and never twice with its batch's.

use super::*;
use crate::storage::store::FinishedJob;

/// Job `id` of batch 1 as the store holds it.
fn on_disk(id: JobId, state: JobState, attempts: u32) -> FinishedJob {
    FinishedJob {
        batch: 1,
        state,
        job: FailedJob {
            id,
            spec: SpecBytes::encode(&spec(1)),
            attempts,
        },
    }
}

/// Runs job `id`'s next attempt under `lease` and fails it, on disk.
fn fail(book: &mut Book, id: JobId, lease: Lease, attempt: u32) {
    let w = worker(1);
    let _ = book.attempts_started(&w, &[started(book, id, lease, attempt)], T0);
    let effects = book.results(&w, &[result(id, lease, attempt, Outcome::Failed)], T0);
    let _ = committed(book, effects);
}

#[test]
fn a_failed_or_cancelled_job_is_reopened_alone_and_anything_else_is_refused() {
    let mut book = book();
    submitted(&mut book, 3, 1);
    fail(&mut book, 1, 100, 1);
    let cancel = book.cancel(CancelTarget::Job(2), T0).unwrap();
    let _ = committed(&mut book, cancel);
    assert_eq!(counts(&book, 1), (1, 0, 0, 1, 1));

    assert_eq!(book.retry_job(99).unwrap_err(), LedgerError::NoJob(99));
    assert_eq!(book.retry_job(0).unwrap_err(), LedgerError::NoJob(0));
    assert_eq!(
        book.retry_job(3).unwrap_err(),
        LedgerError::NotRetryable {
            job: 3,
            state: JobState::Pending
        }
    );
    // Its record says what it is: succeeded is not retried.
    let _ = book.retry_job(1).unwrap();
    let refused = book.finished_job_found(1, Ok(Some(on_disk(1, JobState::Succeeded, 1))));
    assert_eq!(
        refused.answer,
        Some(Answer::Refused(LedgerError::NotRetryable {
            job: 1,
            state: JobState::Succeeded
        }))
    );
    assert!(refused.commit.is_none());

    let effects = book.retry_job(1).unwrap();
    assert_eq!(effects.lookup, Some(Lookup::FinishedJob(1)));
    // Asked again while it is read: nothing more.
    assert_eq!(book.retry_job(1).unwrap().answer, Some(Answer::Changed(0)));
    let effects = book.finished_job_found(1, Ok(Some(on_disk(1, JobState::Failed, 1))));
    assert!(matches!(
        &effects.commit.as_ref().unwrap().changes[..],
        [Change::Reopen(jobs)] if jobs == &vec![1]
    ));
    let after = committed(&mut book, effects);
    assert_eq!(after.answer, Some(Answer::Changed(1)));
    assert_eq!(after.enqueue.len(), 1);
    assert_eq!(after.enqueue[0].attempt, 2, "its numbers go on");
    assert_eq!(counts(&book, 1), (2, 0, 0, 0, 1));
    assert_eq!(
        book.retry_job(1).unwrap_err(),
        LedgerError::NotRetryable {
            job: 1,
            state: JobState::Pending
        }
    );

    let _ = book.retry_job(2).unwrap();
    let effects = book.finished_job_found(2, Ok(Some(on_disk(2, JobState::Cancelled, 0))));
    let after = committed(&mut book, effects);
    assert_eq!(after.answer, Some(Answer::Changed(1)));
    // Cancelled in line, its turn may have been handed out as it was: number 1 is not reused.
    assert_eq!(after.enqueue[0].attempt, 2);
    assert_eq!(counts(&book, 1), (3, 0, 0, 0, 0));
    assert!(!book.batch(1, T0).unwrap().done);

    // A write that fails reopens nothing, and the job can be retried again.
    fail(&mut book, 2, 101, 2);
    let _ = book.retry_job(2).unwrap();
    let effects = book.finished_job_found(2, Ok(Some(on_disk(2, JobState::Failed, 2))));
    let after = commit(&mut book, effects, Err(disk_full()));
    assert!(matches!(
        after.answer,
        Some(Answer::Refused(LedgerError::Store { .. }))
    ));
    assert_eq!(counts(&book, 1), (2, 0, 0, 1, 0));
    assert_eq!(
        book.retry_job(2).unwrap().lookup,
        Some(Lookup::FinishedJob(2))
    );
}

#[test]
fn a_job_retried_alone_and_with_its_batch_is_reopened_once() {
    let mut book = book();
    submitted(&mut book, 2, 1);
    fail(&mut book, 1, 100, 1);
    fail(&mut book, 2, 101, 1);

    // The job's own retry is read first: its batch's leaves it out.
    let _ = book.retry_job(1).unwrap();
    let _ = book.retry(1).unwrap();
    let failed = vec![
        on_disk(1, JobState::Failed, 1).job,
        on_disk(2, JobState::Failed, 1).job,
    ];
    let batch_retry = book.failed_jobs_found(1, Ok(failed));
    assert!(matches!(
        &batch_retry.commit.as_ref().unwrap().changes[..],
        [Change::Reopen(jobs)] if jobs == &vec![2]
    ));
    let job_retry = book.finished_job_found(1, Ok(Some(on_disk(1, JobState::Failed, 1))));
    let _ = committed(&mut book, batch_retry);
    let after = committed(&mut book, job_retry);
    assert_eq!(after.answer, Some(Answer::Changed(1)));
    assert_eq!(counts(&book, 1), (2, 0, 0, 0, 0));

    // The batch's retry is read first and written meanwhile: the job's read is out of date.
    fail(&mut book, 1, 102, 2);
    let _ = book.retry(1).unwrap();
    let batch_retry = book.failed_jobs_found(1, Ok(vec![on_disk(1, JobState::Failed, 2).job]));
    let _ = book.retry_job(1).unwrap();
    let after = committed(&mut book, batch_retry);
    assert_eq!(after.answer, Some(Answer::Changed(1)));
    let stale = on_disk(1, JobState::Failed, 2);
    let refused = book.finished_job_found(1, Ok(Some(stale.clone())));
    assert_eq!(
        refused.answer,
        Some(Answer::Refused(LedgerError::NotRetryable {
            job: 1,
            state: JobState::Pending
        }))
    );
    // Or once it has failed again and left memory: what was read (3 attempts) is out of date.
    fail(&mut book, 1, 103, 3);
    let _ = book.retry(1).unwrap();
    let batch_retry = book.failed_jobs_found(1, Ok(vec![on_disk(1, JobState::Failed, 3).job]));
    let _ = book.retry_job(1).unwrap();
    let _ = committed(&mut book, batch_retry);
    fail(&mut book, 1, 104, 4);
    let late = book.finished_job_found(1, Ok(Some(on_disk(1, JobState::Failed, 3))));
    assert_eq!(late.answer, Some(Answer::Changed(0)));
    assert!(late.commit.is_none());
    assert_eq!(counts(&book, 1), (1, 0, 0, 1, 0));
}

#[test]
fn a_job_cancelled_while_held_back_and_retried_is_queued_once_when_the_grace_ends() {
    // Replayed after a restart, held back for a worker that may come back with it.
    let mut book = restarted(&[(2, 0, None)]);
    let (_, held) = book.start(true);
    assert!(held);
    let cancel = book.cancel(CancelTarget::Job(2), T0).unwrap();
    let _ = committed(&mut book, cancel);
    let _ = book.retry_job(2).unwrap();
    let effects = book.finished_job_found(2, Ok(Some(on_disk(2, JobState::Cancelled, 0))));
    let after = committed(&mut book, effects);
    assert_eq!(after.answer, Some(Answer::Changed(1)));
    let queued: Vec<(JobId, u32)> = after
        .enqueue
        .iter()
        .map(|job| (job.job, job.attempt))
        .collect();
    assert_eq!(queued, vec![(2, 2)]);
    // Reopened by the retry, it is in line, not held back: the grace's end queues no second
    // turn with the same number.
    assert_eq!(book.live_job(2).unwrap().waiting, None);
    assert!(book.waiting(Some(1)).is_empty());
    assert!(book.grace_over().enqueue.is_empty());
}
