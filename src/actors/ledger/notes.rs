//! Commits that decide nothing (attempt starts, counts of duplicates, manifests written) wait
//! for the next commit that does, and go in it.
//!
//! Nothing waits for them to be durable: a start is known again after a restart by its lease
//! (see `book::unrecorded_start`), and a count off by one, or a manifest written again, is
//! harmless. Written with the next commit that decides something (a short job's result soon
//! is), one job's round trip waits for two flushes to disk, not three, and a stream of short
//! jobs writes its starts with its results (the store skips the start of a job finished in the
//! same transaction). Order is kept: the notes go first, in the same commit.

use super::{Commit, Ledger};
use crate::storage::store::Change;
use actix::prelude::*;
use std::time::Duration;

/// The longest a note waits for a commit to go with; then it goes on its own.
const NOTE_DELAY: Duration = Duration::from_millis(20);

impl Ledger {
    /// Holds a commit that decides nothing until the next that does, or [`NOTE_DELAY`].
    pub(super) fn defer(&mut self, ctx: &mut Context<Self>, commit: Commit) {
        self.notes.push(commit);
        if !self.notes_due {
            self.notes_due = true;
            ctx.run_later(NOTE_DELAY, |ledger, ctx| {
                ledger.notes_due = false;
                ledger.send_notes(ctx);
            });
        }
    }

    /// A commit that decides something, with the notes waiting put first: in a commit of their
    /// own, the store could begin writing them before this one arrived, and this one would wait
    /// a flush more.
    pub(super) fn with_notes(&mut self, commit: Commit) -> Commit {
        if self.notes.is_empty() {
            return commit;
        }
        let mut changes: Vec<Change> = std::mem::take(&mut self.notes)
            .into_iter()
            .flat_map(|note| note.changes)
            .collect();
        changes.extend(commit.changes);
        Commit {
            changes,
            then: commit.then,
        }
    }

    /// Sends the waiting notes to the store (or drops them once it is closing: they decide
    /// nothing).
    pub(super) fn send_notes(&mut self, ctx: &mut Context<Self>) {
        let notes = std::mem::take(&mut self.notes);
        if self.closing {
            return;
        }
        for note in notes {
            self.commit(note, ctx.address(), None);
        }
    }
}
