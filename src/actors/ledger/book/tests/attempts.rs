//! The rules of attempts and results: recording, retries, losses, restarts, manifests.

use super::*;

#[test]
fn a_success_is_recorded_once_on_disk_and_its_worker_told() {
    let mut book = book();
    let batch = submitted(&mut book, 1, 3);
    let w = worker(7);
    let started = book.attempts_started(&w, &[started(&book, 1, 100, 1)], T0);
    assert!(started.kill.is_empty());
    assert_eq!(counts(&book, batch.batch), (0, 1, 0, 0, 0));

    let effects = book.results(&w, &[result(1, 100, 1, Outcome::Succeeded)], T0);
    assert_eq!(finish_states(&effects), vec![(1, JobState::Succeeded)]);
    assert!(effects.notices.is_empty(), "told only once it is on disk");
    assert_eq!(book.phase(1), Some(Phase::Finishing));
    // It holds no slot while it is written: shown as succeeded, not running, and not done.
    assert_eq!(counts(&book, batch.batch), (0, 0, 1, 0, 0));
    assert!(!book.batch(batch.batch, T0).unwrap().done);
    // The same result again while it is written: nothing more, no answer yet.
    let again = book.results(&w, &[result(1, 100, 1, Outcome::Succeeded)], T0);
    assert!(again.commit.is_none() && again.notices.is_empty());

    let after = committed(&mut book, effects);
    assert_eq!(after.notices, vec![(7, Notice::Recorded(vec![100]))]);
    assert_eq!(book.phase(1), None, "a finished job leaves memory");
    assert_eq!(counts(&book, batch.batch), (0, 0, 1, 0, 0));
    assert_eq!(after.batches_done.len(), 1);
    assert!(after.batches_done[0].done);
}

#[test]
fn a_success_whose_write_fails_puts_its_job_back_unanswered() {
    let mut book = book();
    submitted(&mut book, 1, 3);
    let w = worker(1);
    let _ = book.attempts_started(&w, &[started(&book, 1, 100, 1)], T0);
    let effects = book.results(&w, &[result(1, 100, 1, Outcome::Succeeded)], T0);
    let after = commit(&mut book, effects, Err(disk_full()));
    assert!(after.notices.is_empty(), "the worker reports it again");
    assert_eq!(after.enqueue.len(), 1);
    assert_eq!(after.enqueue[0].attempt, 2, "number 1 is spent");
    assert_eq!(book.phase(1), Some(Phase::Queued));
    assert_eq!(counts(&book, 1), (1, 0, 0, 0, 0));
    // Reported again, it is recorded, and the queued job withdrawn.
    let effects = book.results(&w, &[result(1, 100, 1, Outcome::Succeeded)], T0);
    assert_eq!(effects.withdraw, vec![1]);
    assert_eq!(finish_states(&effects), vec![(1, JobState::Succeeded)]);
}

#[test]
fn the_first_success_wins_whichever_attempt_and_the_current_one_is_stopped() {
    let mut book = book();
    submitted(&mut book, 1, 3);
    let (a, b) = (worker(1), worker(2));
    let _ = book.attempts_started(&a, &[started(&book, 1, 100, 1)], T0);
    let lost = book.worker_lost(&a.name, &[lost(1, 100)], "silent", T0);
    let _ = committed(&mut book, lost);
    let _ = book.attempts_started(&b, &[started(&book, 1, 200, 2)], T0);
    // The lost worker's attempt finished after all.
    let effects = book.results(&a, &[result(1, 100, 1, Outcome::Succeeded)], T0);
    assert_eq!(effects.kill, vec![200]);
    assert_eq!(finish_states(&effects), vec![(1, JobState::Succeeded)]);
    // The stopped attempt's success, had it won the race, is a duplicate.
    let late = book.results(&b, &[result(1, 200, 2, Outcome::Succeeded)], T0);
    assert_eq!(late.notices, vec![(2, Notice::Acked(vec![200]))]);
    assert!(matches!(
        &late.commit.as_ref().unwrap().changes[..],
        [Change::Duplicates(duplicates)] if duplicates == &vec![(1, 200)]
    ));
}

#[test]
fn failures_retry_with_doubling_backoff_then_fail_the_job() {
    let mut book = book();
    submitted(&mut book, 1, 3);
    let w = worker(1);
    for (attempt, wait_s) in [(1, 1), (2, 2)] {
        let lease = 100 + u64::from(attempt);
        let _ = book.attempts_started(&w, &[started(&book, 1, lease, attempt)], T0);
        let effects = book.results(&w, &[result(1, lease, attempt, Outcome::Failed)], T0);
        assert_eq!(effects.retry_after, vec![(1, Duration::from_secs(wait_s))]);
        assert!(finish_states(&effects).is_empty());
        assert_eq!(book.phase(1), Some(Phase::Backoff));
        assert_eq!(
            counts(&book, 1),
            (1, 0, 0, 0, 0),
            "waiting counts as pending"
        );
        let after = committed(&mut book, effects);
        assert_eq!(after.notices, vec![(1, Notice::Acked(vec![lease]))]);
        let back = book.backoff_over(1);
        assert_eq!(back.enqueue[0].attempt, attempt + 1);
    }
    let _ = book.attempts_started(&w, &[started(&book, 1, 103, 3)], T0);
    let effects = book.results(&w, &[result(1, 103, 3, Outcome::TimedOut)], T0);
    assert_eq!(finish_states(&effects), vec![(1, JobState::Failed)]);
    let error = effects
        .commit
        .as_ref()
        .unwrap()
        .changes
        .iter()
        .find_map(|change| match change {
            Change::Finish(order) => order.error.clone(),
            _ => None,
        });
    assert_eq!(
        error.as_deref(),
        Some("failed 3 of 3 attempts; last: exited with code 1")
    );
    let _ = committed(&mut book, effects);
    assert_eq!(counts(&book, 1), (0, 0, 0, 1, 0));
}

#[test]
fn a_failure_no_attempt_would_escape_fails_the_job_at_once_saying_why() {
    let mut book = book();
    submitted(&mut book, 2, 3);
    let w = worker(1);
    let _ = book.attempts_started(
        &w,
        &[started(&book, 1, 100, 1), started(&book, 2, 200, 1)],
        T0,
    );
    let mut cannot_start = result(1, 100, 1, Outcome::Failed);
    cannot_start.permanent = true;
    cannot_start.error = Some("cannot start \"nope\": No such file or directory".into());
    let effects = book.results(&w, &[cannot_start], T0);
    assert!(effects.retry_after.is_empty(), "no backoff, no retry");
    assert_eq!(finish_states(&effects), vec![(1, JobState::Failed)]);
    assert_eq!(
        finish_error(&effects).as_deref(),
        Some(
            "cannot start \"nope\": No such file or directory; not retried: it would fail the \
             same way on every attempt"
        )
    );
    let after = committed(&mut book, effects);
    assert_eq!(after.notices, vec![(1, Notice::Acked(vec![100]))]);
    assert_eq!(counts(&book, 1), (0, 1, 0, 1, 0));

    // Only a failure to run can be one: a timeout said to be permanent is retried all the same.
    let mut timed_out = result(2, 200, 1, Outcome::TimedOut);
    timed_out.permanent = true;
    let effects = book.results(&w, &[timed_out], T0);
    assert_eq!(effects.retry_after, vec![(2, Duration::from_secs(1))]);
    assert!(finish_states(&effects).is_empty());
}

#[test]
fn a_permanent_failure_of_an_attempt_no_longer_current_changes_nothing() {
    let mut book = book();
    submitted(&mut book, 1, 3);
    let (a, b) = (worker(1), worker(2));
    let _ = book.attempts_started(&a, &[started(&book, 1, 100, 1)], T0);
    let lost = book.worker_lost(&a.name, &[lost(1, 100)], "silent", T0);
    let _ = committed(&mut book, lost);
    let _ = book.attempts_started(&b, &[started(&book, 1, 200, 2)], T0);
    let mut late = result(1, 100, 1, Outcome::Failed);
    late.permanent = true;
    let effects = book.results(&a, &[late], T0);
    assert!(effects.commit.is_none());
    assert_eq!(book.phase(1), Some(Phase::Running));
}

#[test]
fn after_a_retry_the_failure_says_how_its_attempts_add_up() {
    let mut book = book();
    submitted(&mut book, 1, 1);
    let w = worker(1);
    let _ = book.attempts_started(&w, &[started(&book, 1, 100, 1)], T0);
    let effects = book.results(&w, &[result(1, 100, 1, Outcome::Failed)], T0);
    assert_eq!(
        finish_error(&effects).as_deref(),
        Some("failed 1 of 1 attempts; last: exited with code 1")
    );
    let _ = committed(&mut book, effects);
    let _ = book.retry(1).unwrap();
    let found = vec![FailedJob {
        id: 1,
        spec: SpecBytes::encode(&spec(1)),
        attempts: 1,
    }];
    let reopen = book.failed_jobs_found(1, Ok(found));
    let _ = committed(&mut book, reopen);
    let _ = book.attempts_started(&w, &[started(&book, 1, 200, 2)], T0);
    let effects = book.results(&w, &[result(1, 200, 2, Outcome::Failed)], T0);
    // The job shows 2 attempts; its error says why only one counted.
    assert_eq!(
        finish_error(&effects).as_deref(),
        Some(
            "failed 1 of 1 attempts (2 in all: those lost with their worker or made before a \
             retry do not count); last: exited with code 1"
        )
    );
}

#[test]
fn a_failure_of_an_attempt_no_longer_current_changes_nothing() {
    let mut book = book();
    submitted(&mut book, 1, 3);
    let (a, b) = (worker(1), worker(2));
    let _ = book.attempts_started(&a, &[started(&book, 1, 100, 1)], T0);
    let lost = book.worker_lost(&a.name, &[lost(1, 100)], "silent", T0);
    let _ = committed(&mut book, lost);
    let _ = book.attempts_started(&b, &[started(&book, 1, 200, 2)], T0);
    let effects = book.results(&a, &[result(1, 100, 1, Outcome::Failed)], T0);
    assert!(effects.commit.is_none());
    assert_eq!(effects.notices, vec![(1, Notice::Acked(vec![100]))]);
    assert_eq!(book.phase(1), Some(Phase::Running));
}

#[test]
fn a_success_for_a_finished_job_is_looked_up_recorded_again_or_a_duplicate() {
    let mut book = book();
    submitted(&mut book, 2, 3);
    let w = worker(3);
    let _ = book.attempts_started(
        &w,
        &[started(&book, 1, 100, 1), started(&book, 2, 101, 1)],
        T0,
    );
    let effects = book.results(
        &w,
        &[
            result(1, 100, 1, Outcome::Succeeded),
            result(2, 101, 1, Outcome::Succeeded),
        ],
        T0,
    );
    let _ = committed(&mut book, effects);
    let late = book.results(
        &w,
        &[
            result(1, 100, 1, Outcome::Succeeded),
            result(2, 555, 2, Outcome::Succeeded),
            result(9, 556, 1, Outcome::Succeeded),
        ],
        T0,
    );
    // Job 9 was never given out: nothing to look up.
    assert_eq!(late.notices, vec![(3, Notice::Acked(vec![556]))]);
    let Some(Lookup::LateSuccesses {
        worker,
        worker_name,
        late,
    }) = late.lookup
    else {
        panic!("expected a lookup");
    };
    assert_eq!(late, vec![(1, 100), (2, 555)]);
    let recorded = HashMap::from([(1, 100), (2, 101)]);
    let effects = book.late_successes_found(worker, &worker_name, late.clone(), Ok(recorded));
    assert_eq!(
        effects.notices,
        vec![
            (3, Notice::Recorded(vec![100])),
            (3, Notice::Acked(vec![555]))
        ]
    );
    assert!(matches!(
        &effects.commit.as_ref().unwrap().changes[..],
        [Change::Duplicates(duplicates)] if duplicates == &vec![(2, 555)]
    ));
    // The store could not say: nothing is answered, the worker asks again.
    let unanswered = book.late_successes_found(worker, &worker_name, late, Err(disk_full()));
    assert!(unanswered.notices.is_empty() && unanswered.commit.is_none());
}

#[test]
fn a_lost_attempt_requeues_its_job_at_once_and_ten_losses_fail_it() {
    let mut book = book();
    submitted(&mut book, 1, 3);
    for loss in 1..=MAX_LOST_ATTEMPTS {
        let w = worker(u64::from(loss));
        let lease = 1000 + u64::from(loss);
        let _ = book.attempts_started(&w, &[started(&book, 1, lease, loss)], T0);
        // A lease this worker no longer holds is not lost with it.
        let stale = book.worker_lost(&w.name, &[lost(1, lease - 1)], "gone", T0);
        assert!(stale.commit.is_none() && stale.enqueue.is_empty());
        let effects = book.worker_lost(&w.name, &[lost(1, lease)], "connection closed", T0);
        let rows: Vec<&str> = effects
            .commit
            .as_ref()
            .unwrap()
            .changes
            .iter()
            .filter_map(|change| match change {
                Change::Attempt(row) => Some(row.outcome),
                _ => None,
            })
            .collect();
        assert_eq!(rows, vec!["lost"]);
        if loss < MAX_LOST_ATTEMPTS {
            assert_eq!(
                effects.enqueue.len(),
                1,
                "back in the queue before the write"
            );
            assert_eq!(effects.enqueue[0].attempt, loss + 1);
            let _ = committed(&mut book, effects);
        } else {
            assert!(effects.enqueue.is_empty());
            assert_eq!(finish_states(&effects), vec![(1, JobState::Failed)]);
            let _ = committed(&mut book, effects);
        }
    }
    assert_eq!(counts(&book, 1), (0, 0, 0, 1, 0));
}

#[test]
fn after_a_restart_jobs_wait_for_their_attempts_to_be_taken_back() {
    // Job 2 started attempt 1 on w1, job 3 attempt 2; job 4's latest is not on record.
    let mut book = restarted(&[
        (2, 1, Some((50, "w1"))),
        (3, 2, Some((60, "w1"))),
        (4, 2, None),
    ]);
    let (effects, held) = book.start(true);
    assert!(held && effects.enqueue.is_empty());
    assert_eq!(counts(&book, 1), (3, 0, 1, 0, 0));
    let w = worker(1);
    // Job 2's attempt ran through the restart; job 9 finished before it.
    let carried = [
        CarriedAttempt {
            lease: 50,
            job: 2,
            attempt: 1,
            slots: 1,
            epoch: 1,
        },
        CarriedAttempt {
            lease: 51,
            job: 1,
            attempt: 1,
            slots: 1,
            epoch: 1,
        },
    ];
    let effects = book.attempts_carried(&w, &carried, T0);
    assert_eq!(
        effects.kill,
        vec![51],
        "the finished job's attempt is stopped"
    );
    assert_eq!(book.phase(2), Some(Phase::Running));
    // Job 3's second attempt ended during the outage: its result is the job's.
    let effects = book.results(&w, &[result(3, 60, 2, Outcome::Succeeded)], T0);
    assert_eq!(finish_states(&effects), vec![(3, JobState::Succeeded)]);
    // An attempt the store does not say the job started takes nothing back, and is stopped (its
    // result could not count); nor does another worker take back job 2's.
    let stranger = book.attempts_carried(
        &w,
        &[CarriedAttempt {
            lease: 70,
            job: 4,
            attempt: 1,
            slots: 1,
            epoch: 1,
        }],
        T0,
    );
    assert_eq!(stranger.kill, vec![70]);
    assert_eq!(book.phase(4), Some(Phase::Queued));
    let over = book.grace_over();
    let queued: Vec<(JobId, u32)> = over
        .enqueue
        .iter()
        .map(|job| (job.job, job.attempt))
        .collect();
    assert_eq!(queued, vec![(4, 3)], "only what nobody took back");
    assert!(book.grace_over().enqueue.is_empty());
}

#[test]
fn without_a_grace_replayed_jobs_are_queued_at_once() {
    let mut book = restarted(&[(2, 0, None), (3, 4, None)]);
    let (effects, held) = book.start(false);
    assert!(!held);
    let queued: Vec<(JobId, u32)> = effects
        .enqueue
        .iter()
        .map(|job| (job.job, job.attempt))
        .collect();
    assert_eq!(queued, vec![(2, 1), (3, 5)]);
}

#[test]
fn a_start_for_a_job_no_longer_queued_is_stopped_and_its_number_spent() {
    let mut book = book();
    submitted(&mut book, 1, 3);
    let cancel = book.cancel(CancelTarget::Job(1), T0).unwrap();
    let effects = book.attempts_started(&worker(1), &[started(&book, 1, 100, 1)], T0);
    assert_eq!(effects.kill, vec![100]);
    let refused = commit(&mut book, cancel, Err(disk_full()));
    assert_eq!(refused.enqueue[0].attempt, 2, "number 1 may have run");
    let gone = book.attempts_started(&worker(1), &[started(&book, 5, 101, 1)], T0);
    assert_eq!(gone.kill, vec![101]);
}
#[test]
fn a_recorded_attempts_manifest_is_asked_again_until_written() {
    let mut book = book();
    let mut with_outputs = spec(3);
    with_outputs.outputs = Some(Outputs {
        from: "out".into(),
        to: "file:///tmp/o/".into(),
    });
    let effects = book
        .submit("b".into(), vec![with_outputs], None, T0)
        .unwrap();
    let _ = committed(&mut book, effects);
    let w = worker(1);
    let _ = book.attempts_started(&w, &[started(&book, 1, 100, 1)], T0);
    let mut success = result(1, 100, 1, Outcome::Succeeded);
    success.outputs = vec![OutputObject {
        url: format!(
            "{}x",
            crate::job::attempt_prefix("file:///tmp/o/", book.ledger, 1, 100).unwrap()
        ),
        size: 1,
        etag: "e".into(),
    }];
    let effects = book.results(&w, &[success], T0);
    let _ = committed(&mut book, effects);
    assert!(book.manifests_due(T0 + 1_000).publish.is_empty());
    let due = book.manifests_due(T0 + manifests::REPAIR_AFTER_MS);
    assert_eq!(due.publish.len(), 1);
    assert_eq!(due.publish[0].job, 1);
    assert!(book
        .manifests_due(T0 + manifests::REPAIR_AFTER_MS + 1)
        .publish
        .is_empty());
    let written = book.manifests_written(&[100]);
    assert!(matches!(
        &written.commit.as_ref().unwrap().changes[..],
        [Change::ManifestsWritten(jobs)] if jobs == &vec![1]
    ));
    assert!(book.manifests_written(&[100]).commit.is_none());
    assert!(book.manifests_due(T0 + 60_000).publish.is_empty());
}

#[test]
fn manifests_found_unconfirmed_on_disk_are_due_at_once() {
    let mut with_outputs = spec(3);
    with_outputs.outputs = Some(Outputs {
        from: "out".into(),
        to: "file:///tmp/o/".into(),
    });
    let replay = Replay {
        epoch: 2,
        next_job: 2,
        unpublished: vec![Unpublished {
            job: 1,
            lease: 100,
            spec: SpecBytes::encode(&with_outputs),
            objects: r#"[{"url":"file:///tmp/o/1/attempt-100/x","size":1,"etag":"e"}]"#.into(),
        }],
        ..Replay::default()
    };
    let mut book = Book::new(replay, limits(), Arc::new(Metrics::new()));
    assert_eq!(book.manifests_due(T0).publish.len(), 1);
}

#[test]
fn a_start_from_an_older_turn_in_line_is_stopped_and_its_number_never_repeats() {
    let mut book = book();
    submitted(&mut book, 1, 3);
    // The Scheduler hands the job's turn to a worker while the book cancels it; the cancel's
    // write fails, so the job is queued again before the start arrives.
    let stale = started(&book, 1, 100, 1);
    let cancel = book.cancel(CancelTarget::Job(1), T0).unwrap();
    let again = commit(&mut book, cancel, Err(disk_full()));
    assert_eq!(again.enqueue.len(), 1);
    assert_eq!(again.enqueue[0].attempt, 2, "number 1 may be running");
    let late = book.attempts_started(&worker(1), &[stale], T0);
    assert_eq!(late.kill, vec![100], "the older turn's attempt is stopped");
    assert_eq!(book.phase(1), Some(Phase::Queued));
    // The current turn starts the job.
    let current = book.attempts_started(&worker(2), &[started(&book, 1, 101, 2)], T0);
    assert!(current.kill.is_empty());
    assert_eq!(book.phase(1), Some(Phase::Running));
}

#[test]
fn a_manifest_too_large_for_a_frame_is_given_up_not_sent() {
    let mut with_outputs = spec(3);
    with_outputs.outputs = Some(Outputs {
        from: "out".into(),
        to: "file:///tmp/o/".into(),
    });
    let object = format!(
        r#"{{"url":"file:///tmp/o/1/attempt-100/{}","size":1,"etag":"e"}}"#,
        "x".repeat(1000)
    );
    let objects = format!("[{}]", vec![object; 5_000].join(","));
    let replay = Replay {
        epoch: 2,
        next_job: 2,
        unpublished: vec![Unpublished {
            job: 1,
            lease: 100,
            spec: SpecBytes::encode(&with_outputs),
            objects,
        }],
        ..Replay::default()
    };
    let mut book = Book::new(replay, limits(), Arc::new(Metrics::new()));
    let due = book.manifests_due(T0);
    assert!(due.publish.is_empty());
    assert!(matches!(
        &due.commit.as_ref().unwrap().changes[..],
        [Change::ManifestsAbandoned(jobs)] if jobs == &vec![1]
    ));
    assert!(
        book.manifests_due(T0 + 60_000).commit.is_none(),
        "given up once"
    );
}

#[test]
fn only_workers_that_started_a_job_count_against_it_each_once() {
    let mut book = book();
    submitted(&mut book, 1, 3);
    let mut lease = 1000;
    let mut lose = |book: &mut Book, name: &str, said_started: bool| {
        lease += 1;
        let w = WorkerRef {
            id: lease,
            name: Arc::from(name),
        };
        let attempt = book.jobs[&1].attempts + 1;
        let _ = book.attempts_started(&w, &[started(book, 1, lease, attempt)], T0);
        let attempt = LostAttempt {
            job: 1,
            lease,
            started: said_started,
        };
        let effects = book.worker_lost(&w.name, &[attempt], "connection closed", T0);
        let rows: Vec<&str> = effects
            .commit
            .as_ref()
            .unwrap()
            .changes
            .iter()
            .filter_map(|change| match change {
                Change::Attempt(row) => Some(row.outcome),
                _ => None,
            })
            .collect();
        let failed = !finish_states(&effects).is_empty();
        let _ = committed(book, effects);
        (rows, failed)
    };
    // Twenty registrations that took the job and never said they started it: no sign against
    // the job.
    for taker in 0..20 {
        let (rows, failed) = lose(&mut book, &format!("taker-{taker}"), false);
        assert_eq!(rows, vec!["unstarted"]);
        assert!(!failed);
    }
    assert_eq!(book.jobs[&1].lost, 0);
    // One worker that dies each time it runs the job: it counts once among workers...
    for _ in 0..(MAX_LOST_ATTEMPTS - 1) {
        assert!(!lose(&mut book, "crashy", true).1);
    }
    // ... and the job fails after nine others lost it too.
    for other in 1..MAX_LOST_ATTEMPTS - 1 {
        assert!(!lose(&mut book, &format!("other-{other}"), true).1);
    }
    let (rows, failed) = lose(&mut book, "the-tenth", true);
    assert_eq!(rows, vec!["lost"]);
    assert!(failed, "ten workers lost it");
}

#[test]
fn an_attempt_still_running_past_its_timeout_and_margin_is_taken_back() {
    let mut book = book();
    let mut timed = spec(2);
    timed.timeout_s = Some(30);
    let effects = book.submit("b".into(), vec![timed], None, T0).unwrap();
    let _ = committed(&mut book, effects);
    let w = worker(1);
    let started = book.attempts_started(&w, &[started(&book, 1, 100, 1)], T0);
    assert_eq!(
        started.deadlines,
        vec![(1, 100, Duration::from_secs(30 + 10))],
        "its timeout and a margin of at least 10 s"
    );
    let taken = book.deadline_passed(1, 100, T0 + 40_000);
    assert_eq!(taken.kill, vec![100]);
    assert_eq!(taken.retry_after.len(), 1, "retried as any failure");
    let rows: Vec<(&str, Option<String>)> = taken
        .commit
        .as_ref()
        .unwrap()
        .changes
        .iter()
        .filter_map(|change| match change {
            Change::Attempt(row) => Some((row.outcome, row.error.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(rows[0].0, "timed_out");
    assert!(rows[0]
        .1
        .as_deref()
        .unwrap()
        .contains("taken back by the coordinator"));
    // Its worker's own word, later, changes nothing.
    let _ = committed(&mut book, taken);
    let late = book.results(&w, &[result(1, 100, 1, Outcome::TimedOut)], T0 + 41_000);
    assert!(late.commit.is_none());
    // An attempt that reported in time is not judged.
    assert!(book.deadline_passed(1, 100, T0 + 50_000).commit.is_none());
}
