//! A worker speaks for the attempts it was given and for nothing else: results, carried
//! attempts and outputs from anyone else are turned away without changing a job's course.

use super::*;

#[test]
fn results_for_attempts_a_worker_was_not_given_are_acknowledged_and_change_nothing() {
    let mut book = book();
    submitted(&mut book, 2, 1);
    let (honest, liar) = (worker(1), worker(2));
    let _ = book.attempts_started(&honest, &[started(&book, 1, 100, 1)], T0);

    // The running attempt's own lease, from the wrong worker, and a made-up one: job 1 has
    // `max_attempts` 1, so a failure taken for its own would fail it.
    let effects = book.results(
        &liar,
        &[
            result(1, 100, 1, Outcome::Succeeded),
            result(1, 101, 1, Outcome::Failed),
        ],
        T0,
    );
    assert_eq!(effects.notices, vec![(2, Notice::Acked(vec![100, 101]))]);
    assert!(effects.commit.is_none() && effects.kill.is_empty());
    assert_eq!(book.phase(1), Some(Phase::Running));

    // A success for a job still in line: the Scheduler withdrew it for the result, so it goes
    // back in line, under a number neither the forged result nor the turn it replaces (which
    // may be on its way to a worker) had: 1 is spent, 2 skipped.
    let effects = book.results(&liar, &[result(2, 7, 1, Outcome::Succeeded)], T0);
    assert!(effects.commit.is_none());
    let queued: Vec<(JobId, u32)> = effects
        .enqueue
        .iter()
        .map(|job| (job.job, job.attempt))
        .collect();
    assert_eq!(queued, vec![(2, 3)]);
    assert!(
        effects.enqueue[0].ahead,
        "its place back, at the head of the line"
    );
    assert_eq!(book.phase(2), Some(Phase::Queued));

    // The worker that was given job 1 is heard.
    let effects = book.results(&honest, &[result(1, 100, 1, Outcome::Succeeded)], T0);
    assert_eq!(finish_states(&effects), vec![(1, JobState::Succeeded)]);
}

#[test]
fn an_attempt_carried_by_a_worker_it_was_not_given_to_is_stopped() {
    let mut book = book();
    submitted(&mut book, 1, 3);
    let (honest, liar) = (worker(1), worker(2));
    let _ = book.attempts_started(&honest, &[started(&book, 1, 100, 1)], T0);
    let claim = |lease| CarriedAttempt {
        lease,
        job: 1,
        attempt: 1,
        slots: 1,
    };
    let effects = book.attempts_carried(&liar, &[claim(100), claim(555)], T0);
    assert_eq!(effects.kill, vec![100, 555]);
    let job = book.live_job(1).unwrap();
    assert_eq!(job.worker.as_deref(), Some("w1"), "{job:?}");
    // Its loss is not the job's: the attempt that runs it is elsewhere.
    let lost = book.worker_lost(&liar.name, &[lost(1, 100)], "silent", T0);
    assert!(lost.commit.is_none() && lost.enqueue.is_empty());
    assert_eq!(book.phase(1), Some(Phase::Running));
}

#[test]
fn after_a_restart_only_the_worker_on_record_takes_a_job_back() {
    let mut book = restarted(&[(2, 1, Some((50, "w1")))]);
    let _ = book.start(true);
    let carried = [CarriedAttempt {
        lease: 50,
        job: 2,
        attempt: 1,
        slots: 1,
    }];
    let effects = book.attempts_carried(&worker(2), &carried, T0);
    assert_eq!(effects.kill, vec![50]);
    assert_eq!(book.phase(2), Some(Phase::Queued), "still held for w1");
    let effects = book.attempts_carried(&worker(1), &carried, T0);
    assert!(effects.kill.is_empty());
    assert_eq!(book.phase(2), Some(Phase::Running));
}

#[test]
fn outputs_named_outside_the_attempts_own_prefix_fail_the_attempt() {
    let to = "s3://bucket/out/";
    let mut with_outputs = spec(2);
    with_outputs.outputs = Some(Outputs {
        from: "out".into(),
        to: to.into(),
    });
    let mut book = book();
    let effects = book.submit("b".into(), vec![with_outputs], T0).unwrap();
    let _ = committed(&mut book, effects);
    let w = worker(1);
    let _ = book.attempts_started(&w, &[started(&book, 1, 0xab, 1)], T0);
    let own = crate::job::attempt_prefix(to, book.ledger, 1, 0xab).unwrap();
    let mut success = result(1, 0xab, 1, Outcome::Succeeded);
    success.outputs = vec![
        OutputObject {
            url: format!("{own}r.csv"),
            size: 1,
            etag: "e".into(),
        },
        OutputObject {
            url: format!("{own}../{}/r.csv", crate::job::attempt_name(0xac)),
            size: 1,
            etag: "e".into(),
        },
    ];
    let effects = book.results(&w, &[success], T0);
    assert!(finish_states(&effects).is_empty(), "retried, not recorded");
    assert_eq!(effects.retry_after.len(), 1);
    let error = effects
        .commit
        .as_ref()
        .unwrap()
        .changes
        .iter()
        .find_map(|change| match change {
            Change::Attempt(row) => row.error.clone(),
            _ => None,
        })
        .unwrap();
    assert!(
        error.contains(&crate::job::attempt_name(0xac)) && error.contains(&own),
        "{error}"
    );
}
