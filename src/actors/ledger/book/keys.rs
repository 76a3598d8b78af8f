//! Idempotency keys: the same key again answers with the batch the key first made, never a
//! second batch. The book knows every key of the ledger (replayed at start, added as batches
//! are accepted). A repeat that arrives while the key's first batch is being written waits for
//! that commit: it is answered with the batch once it is on disk, or with the same refusal if
//! the commit fails, which frees the key for a later submission.

use super::{Answer, Book, Effects, Lookup};
use crate::actors::ledger::error::LedgerError;
use crate::job::{BatchId, JobId};
use crate::status::Submitted;
use crate::storage::store::StoreError;
use std::sync::Arc;

/// What the book knows of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Keyed {
    /// Its batch is being written; this many repeats wait for the commit.
    Writing { batch: BatchId, waiting: usize },
    /// Its batch is on disk: its first job, once known (a batch replayed from the store has
    /// it looked up the first time it is repeated).
    Written {
        batch: BatchId,
        first_job: Option<JobId>,
    },
}

impl Book {
    /// A submission under a key the book knows: answered with the key's batch, at once, after
    /// its first job is read, or once its commit ends. `None` for a new key.
    pub(super) fn repeat(&mut self, key: &Arc<str>) -> Option<Effects> {
        let keyed = self.keys.get_mut(key)?;
        Some(match keyed {
            Keyed::Writing { waiting, .. } => {
                *waiting += 1;
                Effects {
                    held: Some(key.clone()),
                    ..Effects::none()
                }
            }
            Keyed::Written {
                batch,
                first_job: Some(first_job),
            } => {
                let (batch, first_job) = (*batch, *first_job);
                Effects::answer(self.repeated(batch, first_job))
            }
            Keyed::Written {
                batch,
                first_job: None,
            } => Effects {
                lookup: Some(Lookup::FirstJob {
                    key: key.clone(),
                    batch: *batch,
                }),
                ..Effects::none()
            },
        })
    }

    /// The first job of a replayed key's batch, as read for a repeat.
    pub(crate) fn first_job_found(
        &mut self,
        key: Arc<str>,
        batch: BatchId,
        found: Result<Option<JobId>, StoreError>,
    ) -> Effects {
        match found {
            Ok(Some(first_job)) => {
                if let Some(Keyed::Written {
                    first_job: known, ..
                }) = self.keys.get_mut(&key)
                {
                    *known = Some(first_job);
                }
                Effects::answer(self.repeated(batch, first_job))
            }
            // A batch is written with its jobs, in one transaction.
            Ok(None) => Effects::answer(Answer::Refused(LedgerError::NoBatch(batch))),
            Err(error) => Effects::answer(Answer::Refused(LedgerError::Store {
                action: "read the batch of the idempotency key",
                error,
            })),
        }
    }

    /// The submission of a call whose job ran unwritten is on disk: its key's repeats, which
    /// waited, are answered (see `ledger::unwritten`).
    pub(crate) fn call_written(&mut self, key: Arc<str>, job: JobId) -> Effects {
        let mut effects = Effects::none();
        self.key_written(key, Ok(job), &mut effects);
        effects
    }

    /// A key's batch is being written.
    pub(super) fn key_writing(&mut self, key: Arc<str>, batch: BatchId) {
        self.keys.insert(key, Keyed::Writing { batch, waiting: 0 });
    }

    /// A key's batch was written (`Ok`, with its first job) or not: the repeats that waited
    /// are answered alike, and a key whose batch was not written is free again.
    pub(super) fn key_written(
        &mut self,
        key: Arc<str>,
        written: Result<JobId, LedgerError>,
        effects: &mut Effects,
    ) {
        let Some(Keyed::Writing { batch, waiting }) = self.keys.get(&key).copied() else {
            return;
        };
        let answer = match written {
            Ok(first_job) => {
                self.keys.insert(
                    key.clone(),
                    Keyed::Written {
                        batch,
                        first_job: Some(first_job),
                    },
                );
                self.repeated(batch, first_job)
            }
            Err(error) => {
                self.keys.remove(&key);
                Answer::Refused(error)
            }
        };
        if waiting > 0 {
            effects.repeats.push((key, answer));
        }
    }

    /// The answer to a repeat: the key's batch, as it was submitted.
    fn repeated(&self, batch: BatchId, first_job: JobId) -> Answer {
        let jobs = self.batches.get(&batch).map_or(0, |counts| counts.total);
        Answer::Submitted(Submitted {
            batch,
            first_job,
            jobs,
            unplaceable: Vec::new(),
            repeated: true,
        })
    }
}
