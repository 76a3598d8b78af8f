//! Finished jobs' records: each gets the next cursor when the book decides it, and carries the
//! recorded attempt's result, which may not pass `--max-result-bytes` (64 bytes here).

use super::*;
use crate::storage::store::FinishedJob;

/// The (job, cursor, result) of each terminal record these effects commit.
fn records(effects: &Effects) -> Vec<(JobId, u64, Option<Vec<u8>>)> {
    effects
        .commit
        .iter()
        .flat_map(|commit| commit.changes.iter())
        .filter_map(|change| match change {
            Change::Finish(order) => Some((
                order.job,
                order.cursor,
                order.result.as_deref().map(<[u8]>::to_vec),
            )),
            _ => None,
        })
        .collect()
}

/// A result of the current attempt carrying `bytes`.
fn returning(job: JobId, lease: Lease, outcome: Outcome, bytes: &[u8]) -> AttemptResult {
    AttemptResult {
        result: bytes.to_vec(),
        ..result(job, lease, 1, outcome)
    }
}

#[test]
fn every_terminal_record_draws_the_next_cursor_whatever_decided_it() {
    let mut book = book();
    submitted(&mut book, 4, 1);
    let w = worker(1);
    let _ = book.attempts_started(
        &w,
        &[
            started(&book, 1, 100, 1),
            started(&book, 2, 200, 1),
            started(&book, 3, 300, 1),
        ],
        T0,
    );
    // Two results in one report: one cursor each, in the order reported.
    let effects = book.results(
        &w,
        &[
            result(2, 200, 1, Outcome::Succeeded),
            result(1, 100, 1, Outcome::Failed),
        ],
        T0,
    );
    assert_eq!(records(&effects), vec![(2, 1, None), (1, 2, None)]);
    let _ = committed(&mut book, effects);
    // A cancel draws too, for each job it finishes.
    let cancel = book.cancel(CancelTarget::Batch(1), T0).unwrap();
    assert_eq!(records(&cancel), vec![(3, 3, None), (4, 4, None)]);
}

#[test]
fn cursors_go_on_after_the_last_one_on_record_at_a_restart() {
    // The restarted book's ledger has its last record at cursor 1.
    let mut book = restarted(&[(2, 0, None)]);
    let _ = book.grace_over();
    let cancel = book.cancel(CancelTarget::Job(2), T0).unwrap();
    assert_eq!(records(&cancel), vec![(2, 2, None)]);
}

#[test]
fn a_commit_that_fails_leaves_a_gap_and_the_job_a_new_cursor_next_time() {
    let mut book = book();
    submitted(&mut book, 1, 3);
    let w = worker(1);
    let _ = book.attempts_started(&w, &[started(&book, 1, 100, 1)], T0);
    let effects = book.results(&w, &[result(1, 100, 1, Outcome::Succeeded)], T0);
    assert_eq!(records(&effects), vec![(1, 1, None)]);
    let _ = commit(&mut book, effects, Err(disk_full()));
    // Reported again, it is recorded under a cursor no follower can have seen.
    let again = book.results(&w, &[result(1, 100, 1, Outcome::Succeeded)], T0);
    assert_eq!(records(&again), vec![(1, 2, None)]);
}

#[test]
fn a_retried_job_finishes_again_under_a_new_cursor() {
    let mut book = book();
    submitted(&mut book, 1, 1);
    let w = worker(1);
    let _ = book.attempts_started(&w, &[started(&book, 1, 100, 1)], T0);
    let failed = book.results(&w, &[result(1, 100, 1, Outcome::Failed)], T0);
    assert_eq!(records(&failed), vec![(1, 1, None)]);
    let _ = committed(&mut book, failed);
    let _ = book.retry_job(1).unwrap();
    let found = FinishedJob {
        batch: 1,
        state: JobState::Failed,
        job: FailedJob {
            id: 1,
            spec: SpecBytes::encode(&spec(1)),
            attempts: 1,
        },
    };
    let reopen = book.finished_job_found(1, Ok(Some(found)));
    let _ = committed(&mut book, reopen);
    let _ = book.attempts_started(&w, &[started(&book, 1, 200, 2)], T0);
    let done = book.results(&w, &[returning(1, 200, Outcome::Succeeded, b"again")], T0);
    assert_eq!(records(&done), vec![(1, 2, Some(b"again".to_vec()))]);
}

#[test]
fn the_recorded_attempts_result_is_kept_byte_for_byte_and_nothing_is_no_result() {
    let mut book = book();
    submitted(&mut book, 3, 1);
    let w = worker(1);
    let _ = book.attempts_started(
        &w,
        &[
            started(&book, 1, 100, 1),
            started(&book, 2, 200, 1),
            started(&book, 3, 300, 1),
        ],
        T0,
    );
    let binary = [0u8, 0xff, 0x80, b'\n'];
    let effects = book.results(
        &w,
        &[
            returning(1, 100, Outcome::Succeeded, &binary),
            returning(2, 200, Outcome::Succeeded, b""),
            // A failure's output is its record's result too (what the job printed as it failed).
            returning(3, 300, Outcome::Failed, b"partial"),
        ],
        T0,
    );
    assert_eq!(
        records(&effects),
        vec![
            (1, 1, Some(binary.to_vec())),
            (2, 2, None),
            (3, 3, Some(b"partial".to_vec()))
        ]
    );
}

#[test]
fn a_result_above_the_limit_fails_its_job_for_good_saying_to_publish_it_as_outputs() {
    let mut book = book();
    submitted(&mut book, 2, 3);
    let w = worker(1);
    let _ = book.attempts_started(
        &w,
        &[started(&book, 1, 100, 1), started(&book, 2, 200, 1)],
        T0,
    );
    // At the limit it is kept; one byte more and the attempt failed, with no other attempt:
    // the job would write as much again (the worker says the same when it finds it so).
    let effects = book.results(
        &w,
        &[
            returning(1, 100, Outcome::Succeeded, &[7; 64]),
            returning(2, 200, Outcome::Succeeded, &[7; 65]),
        ],
        T0,
    );
    assert_eq!(
        records(&effects),
        vec![(1, 1, Some(vec![7; 64])), (2, 2, None)]
    );
    assert_eq!(
        finish_states(&effects),
        vec![(1, JobState::Succeeded), (2, JobState::Failed)]
    );
    assert!(effects.retry_after.is_empty());
    let message = "result of 65 bytes is above --max-result-bytes (64); publish large results \
                   as outputs";
    let attempt = effects
        .commit
        .as_ref()
        .unwrap()
        .changes
        .iter()
        .find_map(|change| match change {
            Change::Attempt(row) => Some((row.job, row.outcome, row.error.clone())),
            _ => None,
        });
    assert_eq!(attempt, Some((2, "failed", Some(message.to_string()))));
    let errors: Vec<Option<String>> = effects
        .commit
        .iter()
        .flat_map(|commit| commit.changes.iter())
        .filter_map(|change| match change {
            Change::Finish(order) => Some(order.error.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        errors,
        vec![
            None,
            Some(format!(
                "{message}; not retried: it would fail the same way on every attempt"
            ))
        ]
    );
    let after = committed(&mut book, effects);
    assert_eq!(
        after.notices,
        vec![
            (1, Notice::Acked(vec![200])),
            (1, Notice::Recorded(vec![100]))
        ],
        "the failed attempt is acknowledged, not recorded"
    );
}

#[test]
fn a_failure_above_the_limit_keeps_its_own_reason_but_not_its_result() {
    let mut book = book();
    submitted(&mut book, 1, 1);
    let w = worker(1);
    let _ = book.attempts_started(&w, &[started(&book, 1, 100, 1)], T0);
    let effects = book.results(&w, &[returning(1, 100, Outcome::Failed, &[1; 100])], T0);
    assert_eq!(records(&effects), vec![(1, 1, None)]);
    assert_eq!(
        finish_error(&effects).as_deref(),
        Some("failed 1 of 1 attempts; last: exited with code 1")
    );
}

#[test]
fn a_success_above_the_limit_for_a_job_in_line_gives_it_its_place_back() {
    let mut book = book();
    submitted(&mut book, 1, 3);
    let w = worker(1);
    let _ = book.attempts_started(&w, &[started(&book, 1, 100, 1)], T0);
    let lost = book.worker_lost(&w.name, &[lost(1, 100)], "silent", T0);
    let _ = committed(&mut book, lost);
    assert_eq!(book.phase(1), Some(Phase::Queued));
    // The lost worker's attempt reports a success, which the Scheduler took the job out of
    // line for; above the limit, it is no success, and the job must not be left out of line.
    let effects = book.results(&w, &[returning(1, 100, Outcome::Succeeded, &[7; 65])], T0);
    assert!(records(&effects).is_empty());
    let queued: Vec<(JobId, u32, bool)> = effects
        .enqueue
        .iter()
        .map(|job| (job.job, job.attempt, job.ahead))
        .collect();
    assert_eq!(
        queued,
        vec![(1, 3, true)],
        "at the head, under a new number"
    );
    assert_eq!(effects.notices, vec![(1, Notice::Acked(vec![100]))]);
}
