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
    // back in line, under a number the turn it replaces (which may be on its way to a worker)
    // did not have: 1 skipped, 2 next. The forged result spends no number of its own.
    let effects = book.results(&liar, &[result(2, 7, 1, Outcome::Succeeded)], T0);
    assert!(effects.commit.is_none());
    let queued: Vec<(JobId, u32)> = effects
        .enqueue
        .iter()
        .map(|job| (job.job, job.attempt))
        .collect();
    assert_eq!(queued, vec![(2, 2)]);
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
        epoch: 1,
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
        epoch: 1,
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
    let effects = book
        .submit("b".into(), vec![with_outputs], None, T0)
        .unwrap();
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

/// An attempt of `job` carried back by a worker, handed out in `epoch`.
fn carried_from(epoch: u64, job: JobId, lease: Lease, attempt: u32) -> CarriedAttempt {
    CarriedAttempt {
        lease,
        job,
        attempt,
        slots: 1,
        epoch,
    }
}

/// The starts a commit journals, as (job, lease, attempt, worker).
fn starts(effects: &Effects) -> Vec<(JobId, Lease, u32, String)> {
    effects
        .commit
        .iter()
        .flat_map(|commit| commit.changes.iter())
        .filter_map(|change| match change {
            Change::Started(rows) => Some(rows),
            _ => None,
        })
        .flatten()
        .map(|row| (row.job, row.lease, row.attempt, row.worker.to_string()))
        .collect()
}

#[test]
fn an_attempt_whose_start_was_lost_in_a_restart_takes_its_job_back_by_its_lease() {
    // Before the restart (epoch 1) jobs 2 and 3 went to w1 as their first attempts; the
    // coordinator died before either start reached the disk.
    let mut book = restarted(&[(2, 0, None), (3, 0, None)]);
    let (_, held) = book.start(true);
    assert!(held);
    let key = lease_key();
    let lease = key.lease(1, 2, 1, "w1");
    // Not another worker's to claim, nor a made-up lease's, nor one naming a run to come.
    for (who, claim) in [
        (worker(2), carried_from(1, 2, lease, 1)),
        (worker(1), carried_from(1, 2, lease ^ 1, 1)),
        (worker(1), carried_from(3, 2, key.lease(3, 2, 1, "w1"), 1)),
    ] {
        let effects = book.attempts_carried(&who, &[claim], T0);
        assert_eq!(effects.kill, vec![claim.lease]);
        assert_eq!(book.phase(2), Some(Phase::Queued), "{claim:?}");
        assert_eq!(book.jobs[&2].attempts, 0, "a lie spends no number");
    }
    // Its own worker takes it back: the job runs there, and the start is journaled now.
    let effects = book.attempts_carried(&worker(1), &[carried_from(1, 2, lease, 1)], T0);
    assert!(effects.kill.is_empty() && effects.enqueue.is_empty());
    assert_eq!(book.phase(2), Some(Phase::Running));
    assert_eq!(starts(&effects), vec![(2, lease, 1, "w1".to_string())]);
    assert_eq!(book.live_job(2).unwrap().worker.as_deref(), Some("w1"));
    // Job 3's attempt ended during the outage: its result is the job's.
    let mut ended = result(3, key.lease(1, 3, 1, "w1"), 1, Outcome::Succeeded);
    ended.epoch = 1;
    let effects = book.results(&worker(1), &[ended], T0);
    assert_eq!(finish_states(&effects), vec![(3, JobState::Succeeded)]);
    // Nothing is left to run again when the grace ends.
    assert!(book.grace_over().enqueue.is_empty());
}

#[test]
fn a_lost_start_takes_back_a_job_in_line_but_not_a_number_a_later_attempt_has() {
    let key = lease_key();
    // Job 2 started attempt 1 on record, then attempt 2 on w1 whose start was lost; job 3's
    // attempt 1 on w2 was lost, and the job's attempt 1 of this run came after it.
    let mut book = restarted(&[(2, 1, Some((50, "w9"))), (3, 0, None)]);
    let _ = book.start(true);
    let released = book.grace_over();
    assert_eq!(released.enqueue.len(), 2, "both in line after the grace");
    let again = book.attempts_started(&worker(5), &[started(&book, 3, 300, 1)], T0);
    assert!(again.kill.is_empty());
    // A worker slower than the grace comes back: the Scheduler took job 2 out of its line, and
    // the attempt takes it back.
    let late = key.lease(1, 2, 2, "w1");
    let effects = book.attempts_carried(&worker(1), &[carried_from(1, 2, late, 2)], T0);
    assert!(effects.kill.is_empty() && effects.enqueue.is_empty());
    assert_eq!(book.phase(2), Some(Phase::Running));
    assert_eq!(starts(&effects), vec![(2, late, 2, "w1".to_string())]);
    // Job 3's number 1 runs on w5 now: the lost start's attempt of the same number is stopped.
    let old = key.lease(1, 3, 1, "w2");
    let effects = book.attempts_carried(&worker(2), &[carried_from(1, 3, old, 1)], T0);
    assert_eq!(effects.kill, vec![old]);
    assert_eq!(book.live_job(3).unwrap().worker.as_deref(), Some("w5"));
}

#[test]
fn a_pending_job_a_carried_attempt_does_not_take_back_gets_its_place_back() {
    let mut book = restarted(&[(2, 0, None)]);
    let _ = book.start(true);
    let released = book.grace_over();
    assert_eq!(released.enqueue[0].attempt, 1);
    // A made-up attempt: the Scheduler took the job out of its line for it, and the book puts
    // it back, at the head, under a new number (its turn may be on its way to a worker).
    let effects = book.attempts_carried(&worker(1), &[carried_from(1, 2, 77, 1)], T0);
    assert_eq!(effects.kill, vec![77]);
    assert_eq!(effects.enqueue.len(), 1);
    assert!(effects.enqueue[0].ahead);
    assert_eq!(effects.enqueue[0].attempt, 2);
}
