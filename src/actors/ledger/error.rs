//! Why the Ledger refused a request: one enum, and the one place where each kind is given its
//! words (for the CLI and every client, through `Display`) and its HTTP status.

use crate::job::{BatchId, JobId, JobState};
use crate::storage::store::StoreError;

/// Why the Ledger did not do what it was asked.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LedgerError {
    /// No batch has this id.
    #[error("no batch {0}")]
    NoBatch(BatchId),
    /// No job has this id.
    #[error("no job {0}")]
    NoJob(JobId),
    /// A results cursor past the last record drawn (cursors come from a page or an event).
    #[error("cursor {cursor} is beyond the end: the last record is at {last}; resume from a cursor a page or an event gave")]
    CursorBeyondEnd {
        /// The cursor asked for.
        cursor: u64,
        /// The last cursor drawn.
        last: u64,
    },
    /// A batch must have jobs.
    #[error("the batch has no jobs")]
    EmptyBatch,
    /// More jobs in one batch than allowed.
    #[error("the batch has {jobs} jobs, more than the limit of {limit}; split it")]
    BatchTooLarge {
        /// Jobs in the batch.
        jobs: usize,
        /// The limit (`--max-batch-jobs`).
        limit: usize,
    },
    /// Taking the batch would pass the limit of unfinished jobs.
    #[error(
        "queue full: {unfinished} jobs are unfinished and the batch has {jobs}, above the limit \
         of {limit} (--max-pending-jobs); submit again once some have finished"
    )]
    QueueFull {
        /// Jobs pending or running, or being written.
        unfinished: usize,
        /// Jobs in the batch.
        jobs: usize,
        /// The limit.
        limit: usize,
    },
    /// Taking the batch would pass the limit of bytes of unfinished jobs' specs.
    #[error(
        "queue full: {} MiB of job specs are unfinished and the batch adds {} MiB, above the \
         limit of {} MiB (--max-pending-bytes); submit again once some have finished, or keep \
         large data in inputs rather than in the jobs",
        mib(*unfinished),
        mib(*batch),
        mib(*limit)
    )]
    QueueFullBytes {
        /// Bytes of specs held.
        unfinished: usize,
        /// Bytes of the batch's specs.
        batch: usize,
        /// The limit.
        limit: usize,
    },
    /// A job of the batch is not valid (counted from 1).
    #[error("job {index}: {reason}")]
    InvalidJob {
        /// Which job.
        index: usize,
        /// What is wrong with it, starting with the field.
        reason: String,
    },
    /// A job's encoded spec is too large.
    #[error("job {index}: its spec is {size} bytes, above the limit of {limit}")]
    SpecTooLarge {
        /// Which job (from 1).
        index: usize,
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The submission's idempotency key is not one drover takes.
    #[error("{0}")]
    BadIdempotencyKey(String),
    /// Only a failed or cancelled job can be retried.
    #[error(
        "job {job} {}: only a failed or cancelled job can be retried",
        as_found(*state)
    )]
    NotRetryable {
        /// The job.
        job: JobId,
        /// Its state.
        state: JobState,
    },
    /// The store could not make the change durable (or read what it needed), so it was not made.
    #[error("cannot {action}: {error}")]
    Store {
        /// What could not be done ("queue the batch", "cancel", ...).
        action: &'static str,
        /// Why.
        error: StoreError,
    },
    /// The coordinator is stopping.
    #[error("the coordinator is shutting down")]
    ShuttingDown,
}

/// What kind of refusal an error is, for protocols that say so with a code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The thing asked about does not exist (HTTP 404).
    NotFound,
    /// The request itself is wrong (HTTP 400).
    Invalid,
    /// The thing asked about is not in a state that allows it (HTTP 409).
    Conflict,
    /// The coordinator cannot do it now; the same request may succeed later (HTTP 503).
    Unavailable,
}

impl LedgerError {
    /// What kind of refusal this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            LedgerError::NoBatch(_) | LedgerError::NoJob(_) => ErrorKind::NotFound,
            LedgerError::EmptyBatch
            | LedgerError::BatchTooLarge { .. }
            | LedgerError::InvalidJob { .. }
            | LedgerError::SpecTooLarge { .. }
            | LedgerError::BadIdempotencyKey(_)
            | LedgerError::CursorBeyondEnd { .. } => ErrorKind::Invalid,
            LedgerError::NotRetryable { .. } => ErrorKind::Conflict,
            LedgerError::QueueFull { .. }
            | LedgerError::QueueFullBytes { .. }
            | LedgerError::Store { .. }
            | LedgerError::ShuttingDown => ErrorKind::Unavailable,
        }
    }

    /// The HTTP status of this refusal.
    pub fn http_status(&self) -> u16 {
        match self.kind() {
            ErrorKind::NotFound => 404,
            ErrorKind::Invalid => 400,
            ErrorKind::Conflict => 409,
            ErrorKind::Unavailable => 503,
        }
    }
}

/// A job's state as a sentence says it: "is pending", "succeeded".
fn as_found(state: JobState) -> String {
    match state {
        JobState::Pending | JobState::Running => format!("is {state}"),
        done => done.to_string(),
    }
}

/// Bytes in MiB, to one decimal.
fn mib(bytes: usize) -> String {
    format!("{:.1}", bytes as f64 / (1024.0 * 1024.0))
}

impl From<actix::MailboxError> for LedgerError {
    fn from(_: actix::MailboxError) -> Self {
        LedgerError::ShuttingDown
    }
}
