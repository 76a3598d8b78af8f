//! Group commit, the same for every engine: the commits that arrived while the last transaction
//! was written go into the next one together, and each is told how it went.

use crate::storage::store::{Change, CommitDone, StoreError};
use tokio::sync::oneshot;

/// Most commits written in one transaction; bounds the latency of the first of a group.
pub const MAX_GROUP: usize = 4096;

/// What a store asks of its writer.
pub enum WriterTask {
    /// Write these changes as (part of) one transaction, then say so.
    Commit(Vec<Change>, CommitDone),
    /// Finish what came before, close, and stop.
    Close(oneshot::Sender<Result<(), StoreError>>),
}

/// Commits to be written as one transaction, each with whom to tell.
pub type Group = Vec<(Vec<Change>, CommitDone)>;

/// Adds to `group` the commits already waiting (`try_next` gives them without waiting), up to
/// [`MAX_GROUP`]. A close met on the way is handed back: it runs after the group.
pub fn gather(
    group: &mut Group,
    mut try_next: impl FnMut() -> Option<WriterTask>,
) -> Option<WriterTask> {
    while group.len() < MAX_GROUP {
        match try_next()? {
            WriterTask::Commit(changes, done) => group.push((changes, done)),
            close @ WriterTask::Close(_) => return Some(close),
        }
    }
    None
}

/// The group's changes, commit by commit, as the engines apply them.
pub fn changes(group: &Group) -> Vec<&[Change]> {
    group.iter().map(|(changes, _)| &changes[..]).collect()
}

/// Tells every commit of a written group how it went.
pub fn answer(group: Group, result: &Result<(), StoreError>) {
    for (changes, done) in group {
        // Release the changes first: a writer may take its data back once told.
        drop(changes);
        done(result.clone());
    }
}

/// Answers a task that came after the store closed: refused, and said so.
pub fn refuse(task: WriterTask) {
    match task {
        WriterTask::Commit(_, done) => done(Err(StoreError::Closed)),
        WriterTask::Close(closed) => {
            let _ = closed.send(Ok(()));
        }
    }
}
