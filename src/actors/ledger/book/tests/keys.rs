//! Idempotency keys: the same key again answers with the first batch, never makes a second.

use super::*;

fn keyed(book: &mut Book, count: usize, key: &str) -> Result<Effects, LedgerError> {
    book.submit("b".into(), vec![spec(3); count], Some(key), T0)
}

fn submitted_of(answer: Option<Answer>) -> Submitted {
    match answer {
        Some(Answer::Submitted(submitted)) => submitted,
        other => panic!("expected a submitted batch, got {other:?}"),
    }
}

fn first(batch: BatchId, first_job: JobId, jobs: u64, repeated: bool) -> Submitted {
    Submitted {
        batch,
        first_job,
        jobs,
        unplaceable: Vec::new(),
        repeated,
    }
}

#[test]
fn a_key_repeated_after_its_batch_is_on_disk_answers_with_that_batch() {
    let mut book = book();
    let effects = keyed(&mut book, 3, "nightly").unwrap();
    match &effects.commit.as_ref().unwrap().changes[0] {
        Change::Submit {
            idempotency_key, ..
        } => assert_eq!(idempotency_key.as_deref(), Some("nightly"), "stored"),
        other => panic!("{other:?}"),
    }
    let accepted = submitted_of(committed(&mut book, effects).answer);
    assert_eq!(accepted, first(1, 1, 3, false));

    // Again, with other jobs even: the first batch, nothing written or queued.
    let again = keyed(&mut book, 2, "nightly").unwrap();
    assert!(again.commit.is_none() && again.enqueue.is_empty());
    assert_eq!(submitted_of(again.answer), first(1, 1, 3, true));
    assert_eq!(book.unfinished(), 3);
    assert_eq!(book.batches(None, T0).len(), 1);

    // Another key, or none, is another batch.
    let other = keyed(&mut book, 1, "weekly").unwrap();
    assert_eq!(
        submitted_of(committed(&mut book, other).answer),
        first(2, 4, 1, false)
    );
    let none = book.submit("b".into(), vec![spec(3)], None, T0).unwrap();
    assert_eq!(submitted_of(committed(&mut book, none).answer).batch, 3);
}

#[test]
fn a_repeat_is_answered_even_when_the_queue_is_full() {
    let mut book = book();
    let effects = keyed(&mut book, 10, "fills-it").unwrap();
    let _ = committed(&mut book, effects);
    assert!(matches!(
        book.submit("b".into(), vec![spec(3)], None, T0),
        Err(LedgerError::QueueFull { .. })
    ));
    let again = keyed(&mut book, 10, "fills-it").unwrap();
    assert_eq!(submitted_of(again.answer), first(1, 1, 10, true));
}

#[test]
fn a_repeat_while_the_first_is_written_waits_for_that_commit() {
    let mut book = book();
    let effects = keyed(&mut book, 2, "k").unwrap();
    // Twice more before the commit ends: each is held on the key; nothing else is written.
    for _ in 0..2 {
        let again = keyed(&mut book, 2, "k").unwrap();
        assert_eq!(again.held.as_deref(), Some("k"));
        assert!(again.answer.is_none() && again.commit.is_none());
    }
    let after = committed(&mut book, effects);
    assert_eq!(submitted_of(after.answer), first(1, 1, 2, false));
    assert_eq!(
        after.repeats,
        vec![(Arc::from("k"), Answer::Submitted(first(1, 1, 2, true)))],
        "every held request is answered with the first batch"
    );
    assert_eq!(book.batches(None, T0).len(), 1);
    assert_eq!(
        submitted_of(keyed(&mut book, 2, "k").unwrap().answer),
        first(1, 1, 2, true)
    );
}

#[test]
fn a_failed_commit_frees_its_key_and_refuses_the_held_repeats() {
    let mut book = book();
    let effects = keyed(&mut book, 2, "k").unwrap();
    let held = keyed(&mut book, 2, "k").unwrap();
    assert_eq!(held.held.as_deref(), Some("k"));
    let after = commit(&mut book, effects, Err(disk_full()));
    let refused = Answer::Refused(LedgerError::Store {
        action: "queue the batch",
        error: disk_full(),
    });
    assert_eq!(after.answer, Some(refused.clone()));
    assert_eq!(after.repeats, vec![(Arc::from("k"), refused)]);
    // The key is free: the next submission under it makes its batch.
    let retried = keyed(&mut book, 2, "k").unwrap();
    assert!(retried.held.is_none());
    assert_eq!(
        submitted_of(committed(&mut book, retried).answer),
        first(2, 3, 2, false)
    );
}

#[test]
fn a_failed_commit_with_no_repeat_waiting_answers_only_its_own_request() {
    let mut book = book();
    let effects = keyed(&mut book, 1, "k").unwrap();
    let after = commit(&mut book, effects, Err(disk_full()));
    assert!(after.repeats.is_empty());
    let again = keyed(&mut book, 1, "k").unwrap();
    let ok = committed(&mut book, again);
    assert!(ok.repeats.is_empty());
}

/// A book replayed from a store whose batch 1 was submitted under `key`.
fn replayed_with_key(key: &str) -> Book {
    let replay = Replay {
        ledger: crate::job::LedgerId(0x5f0c),
        epoch: 2,
        lease_key: lease_key(),
        batches: vec![
            ReplayedBatch {
                id: 1,
                name: "b".into(),
                submitted_at_ms: T0,
                total: 4,
                succeeded: 4,
                failed: 0,
                cancelled: 0,
                started_at_ms: Some(T0),
                finished_at_ms: Some(T0),
                idempotency_key: Some(Arc::from(key)),
            },
            ReplayedBatch {
                id: 2,
                name: "no key".into(),
                submitted_at_ms: T0,
                total: 1,
                succeeded: 1,
                failed: 0,
                cancelled: 0,
                started_at_ms: Some(T0),
                finished_at_ms: Some(T0),
                idempotency_key: None,
            },
        ],
        next_job: 6,
        ..Replay::default()
    };
    Book::new(replay, limits(), Arc::new(Metrics::new()))
}

#[test]
fn keys_come_back_with_the_replay_and_their_first_job_is_read_once() {
    let mut book = replayed_with_key("before-restart");
    let again = keyed(&mut book, 1, "before-restart").unwrap();
    assert!(again.commit.is_none() && again.answer.is_none());
    let Some(Lookup::FirstJob { key, batch }) = again.lookup else {
        panic!("expected the batch's first job to be read: {again:?}");
    };
    assert_eq!((&*key, batch), ("before-restart", 1));
    let found = book.first_job_found(key, batch, Ok(Some(1)));
    assert_eq!(submitted_of(found.answer), first(1, 1, 4, true));
    // Known from now on.
    let third = keyed(&mut book, 1, "before-restart").unwrap();
    assert!(third.lookup.is_none());
    assert_eq!(submitted_of(third.answer), first(1, 1, 4, true));
    // A new key after the replay is a new batch, after the replayed ones.
    let new = keyed(&mut book, 1, "after-restart").unwrap();
    assert_eq!(
        submitted_of(committed(&mut book, new).answer),
        first(3, 6, 1, false)
    );
}

#[test]
fn a_repeat_whose_batch_cannot_be_read_is_refused_and_read_again_next_time() {
    let mut book = replayed_with_key("k");
    let Some(Lookup::FirstJob { key, batch }) = keyed(&mut book, 1, "k").unwrap().lookup else {
        panic!("expected a read");
    };
    let refused = book.first_job_found(key, batch, Err(disk_full()));
    assert!(matches!(
        refused.answer,
        Some(Answer::Refused(LedgerError::Store { .. }))
    ));
    assert!(keyed(&mut book, 1, "k").unwrap().lookup.is_some());
    assert_eq!(book.batches(None, T0).len(), 2, "and nothing new is queued");
}

#[test]
fn a_bad_key_is_refused_with_what_is_wrong() {
    let mut book = book();
    for (key, says) in [
        ("", "empty"),
        ("a key", "not printable ASCII"),
        (&"k".repeat(129)[..], "129 bytes"),
    ] {
        let error = keyed(&mut book, 1, key).unwrap_err();
        assert!(
            matches!(&error, LedgerError::BadIdempotencyKey(reason) if reason.contains(says)),
            "{key:?}: {error}"
        );
    }
    assert_eq!(book.batches(None, T0).len(), 0);
}
