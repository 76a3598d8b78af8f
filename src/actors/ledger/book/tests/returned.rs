//! Attempts a worker held beyond its free slots and handed back unstarted.

use super::*;

#[test]
fn a_handed_back_attempt_puts_its_job_at_the_head_of_its_line_under_a_new_number() {
    let mut book = book();
    submitted(&mut book, 2, 3);
    let w1 = worker(1);
    let _ = book.attempts_started(&w1, &[started(&book, 1, 11, 1)], T0);
    assert_eq!(counts(&book, 1), (1, 1, 0, 0, 0));

    let effects = book.attempts_returned(&w1, &[(1, 11)]);
    assert!(effects.commit.is_none(), "it never ran: nothing to write");
    assert!(effects.kill.is_empty());
    let queued: Vec<(JobId, u32, bool)> = effects
        .enqueue
        .iter()
        .map(|job| (job.job, job.attempt, job.ahead))
        .collect();
    assert_eq!(queued, vec![(1, 2, true)], "its number is spent");
    assert_eq!(counts(&book, 1), (2, 0, 0, 0, 0));

    // Handed back, it can report nothing: a result for it is no attempt of the job's.
    let late = book.results(&w1, &[result(1, 11, 1, Outcome::Succeeded)], T0);
    assert!(finish_states(&late).is_empty());
    // Its new turn starts it again, elsewhere, and that attempt's result is recorded.
    let w2 = worker(2);
    let _ = book.attempts_started(&w2, &[started(&book, 1, 21, 2)], T0);
    let effects = book.results(&w2, &[result(1, 21, 2, Outcome::Succeeded)], T0);
    assert_eq!(finish_states(&effects), vec![(1, JobState::Succeeded)]);
}

#[test]
fn only_the_current_attempt_of_the_worker_it_went_to_is_handed_back() {
    let mut book = book();
    submitted(&mut book, 3, 3);
    let (w1, w2) = (worker(1), worker(2));
    let _ = book.attempts_started(&w1, &[started(&book, 1, 11, 1)], T0);
    let _ = book.attempts_started(&w1, &[started(&book, 2, 12, 1)], T0);
    let _ = book.attempts_started(&w1, &[started(&book, 3, 13, 1)], T0);

    // Another worker cannot hand back what w1 holds, nor w1 a lease its job is not on.
    let effects = book.attempts_returned(&w2, &[(1, 11)]);
    assert!(effects.enqueue.is_empty());
    let effects = book.attempts_returned(&w1, &[(1, 99)]);
    assert!(effects.enqueue.is_empty());
    assert_eq!(counts(&book, 1), (0, 3, 0, 0, 0));

    // Cancelled while held: the hand-back that follows the kill changes nothing.
    let cancel = book.cancel(CancelTarget::Job(2), T0).unwrap();
    assert_eq!(cancel.kill, vec![12]);
    let effects = book.attempts_returned(&w1, &[(2, 12)]);
    assert!(effects.enqueue.is_empty());
    let _ = committed(&mut book, cancel);

    // Finished from its own result before the hand-back arrived: nothing either.
    let effects = book.results(&w1, &[result(3, 13, 1, Outcome::Succeeded)], T0);
    let returned = book.attempts_returned(&w1, &[(3, 13)]);
    assert!(returned.enqueue.is_empty());
    let _ = committed(&mut book, effects);
    assert_eq!(counts(&book, 1), (0, 1, 1, 0, 1));
}
