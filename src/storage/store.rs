//! The ledger's store: what the Ledger asks of durable storage, whatever the engine.
//!
//! The Ledger decides; the store only keeps. It writes a set of [`Change`]s as one transaction
//! (several sets arriving together may share one: group commit) and says when they are durable;
//! it answers the reads the views need; and, when opened, it hands back what it holds
//! ([`Replay`]). SQLite in the data directory ([`super::sqlite::SqliteStore`]) is the first
//! engine. The shape leaves room for a networked one: nothing here is synchronous, and every
//! commit can be refused as a whole.

use crate::job::{BatchId, JobId, JobState, Lease, LeaseKey, LedgerId, SpecBytes};
use crate::status::{AttemptRecord, Completion, JobInfo, Resulted};
use futures::future::BoxFuture;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

/// Why the store failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The engine reported an error (the disk is full, the file is damaged, ...).
    #[error("ledger database error: {0}")]
    Database(Arc<dyn std::error::Error + Send + Sync>),
    /// A stored job spec could not be read.
    #[error("ledger holds an unreadable job spec for job {job}: {reason}")]
    CorruptSpec {
        /// The job.
        job: JobId,
        /// Why.
        reason: String,
    },
    /// The ledger cannot be opened: it is damaged, foreign, newer, or its directory unusable.
    #[error("cannot open the ledger {path}: {reason}")]
    Open {
        /// The file or directory at fault.
        path: PathBuf,
        /// What is wrong, and what to do.
        reason: String,
    },
    /// The store is closed (the coordinator is shutting down).
    #[error("ledger is shut down")]
    Closed,
    /// Another coordinator holds the ledger's lease: nothing was committed, and nothing more
    /// will be by this one.
    #[error("{0}")]
    Deposed(crate::ha::Deposed),
    /// The ledger's database cannot be reached (it is down, failing over, or cut off).
    #[error("the ledger database is unreachable: {0}")]
    Unavailable(String),
}

impl From<rusqlite::Error> for StoreError {
    fn from(error: rusqlite::Error) -> Self {
        StoreError::Database(Arc::new(error))
    }
}

/// Two errors are the same when they say the same (the engine's errors compare no other way).
impl PartialEq for StoreError {
    fn eq(&self, other: &Self) -> bool {
        self.to_string() == other.to_string()
    }
}

/// One durable change.
#[derive(Debug, Clone)]
pub enum Change {
    /// A new batch and its jobs, ids `first_job..first_job + jobs.len()`. Written again (a call's
    /// submission rides with each commit about its job until one is durable), it changes
    /// nothing.
    Submit {
        /// The batch.
        batch: BatchId,
        /// Its name.
        name: String,
        /// When it was submitted.
        submitted_at_ms: u64,
        /// The id of its first job.
        first_job: JobId,
        /// The jobs: their names (a column of their own) and encoded specs.
        jobs: Arc<Vec<(Option<String>, SpecBytes)>>,
        /// The submitter's idempotency key, if it gave one: a second batch with the same key is
        /// refused by the store.
        idempotency_key: Option<Arc<str>>,
    },
    /// A job reached a terminal state: its work order. Refused by the store if the job is not
    /// pending there, so no job is ever recorded twice.
    Finish(Box<WorkOrder>),
    /// An attempt ended without being the job's result.
    Attempt(Box<AttemptRow>),
    /// Attempts started: each job's latest, with its number and worker.
    Started(Vec<StartRow>),
    /// Successful results that arrived after a job's first, as (job, lease): counted, never
    /// recorded; a resend of the recorded attempt's own result is not counted.
    Duplicates(Vec<(JobId, Lease)>),
    /// Jobs whose recorded attempt's manifest a worker confirmed writing.
    ManifestsWritten(Vec<JobId>),
    /// Jobs whose recorded attempt's manifest is too large to send to a worker: not asked for
    /// again.
    ManifestsAbandoned(Vec<JobId>),
    /// Failed or cancelled jobs back to pending with their failures forgotten (a retry): their
    /// records, results and cursors are cleared.
    Reopen(Vec<JobId>),
    /// Job ids below this one may be handed to workers before their submission is written (a
    /// call's job runs while it is; see `actors::ledger::unwritten`): a later run numbers its
    /// jobs from here at least, so no job of its own takes the id of one that ran unwritten.
    ReserveJobs(JobId),
}

/// The record of a finished job.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkOrder {
    /// The job.
    pub job: JobId,
    /// How it ended.
    pub state: JobState,
    /// The attempt whose result was recorded.
    pub lease: Option<Lease>,
    /// The recorded attempt's output manifest, as JSON.
    pub outputs: Option<String>,
    /// The worker whose result was recorded.
    pub worker: Option<String>,
    /// Attempts started.
    pub attempts: u32,
    /// Attempts lost to dead workers.
    pub lost_attempts: u32,
    /// Attempts that failed.
    pub failures: u32,
    /// When the recorded attempt started.
    pub started_at_ms: Option<u64>,
    /// When the job finished.
    pub finished_at_ms: u64,
    /// How long the recorded attempt ran.
    pub duration_ms: Option<u64>,
    /// Its exit code.
    pub exit_code: Option<i32>,
    /// The tail of its output.
    pub output_tail: Option<String>,
    /// Why it failed or was cancelled.
    pub error: Option<String>,
    /// The recorded attempt's result, byte for byte (none for a job cancelled or failed
    /// without one).
    pub result: Option<Arc<[u8]>>,
    /// Its place in recording order: drawn by the book, one more than the last finish it
    /// drew, so followers of finished jobs resume after a cursor (see [`LedgerStore::completions`]).
    pub cursor: u64,
}

/// An attempt that started.
#[derive(Debug, Clone, PartialEq)]
pub struct StartRow {
    /// The job.
    pub job: JobId,
    /// The attempt's lease.
    pub lease: Lease,
    /// The attempt's number.
    pub attempt: u32,
    /// The worker it went to (shared with the book, not copied per start).
    pub worker: Arc<str>,
}

/// An attempt that ended without being recorded as its job's result.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptRow {
    /// The job.
    pub job: JobId,
    /// The attempt's lease.
    pub lease: Lease,
    /// The attempt's number.
    pub attempt: u32,
    /// The worker.
    pub worker: String,
    /// `failed`, `timed_out`, `killed` or `lost`.
    pub outcome: &'static str,
    /// When it started.
    pub started_at_ms: u64,
    /// When it ended.
    pub finished_at_ms: u64,
    /// Its exit code.
    pub exit_code: Option<i32>,
    /// Why it failed.
    pub error: Option<String>,
}

/// What the ledger finds in its store when it opens.
#[derive(Debug, Default)]
pub struct Replay {
    /// The ledger's own id, drawn when it was created: outputs go under a directory named for
    /// it.
    pub ledger: LedgerId,
    /// This run's epoch: one more than the last run's on this ledger, so runs are told apart
    /// in logs and stores.
    pub epoch: u64,
    /// The ledger's secret lease key, drawn when it was created: leases are made with it.
    pub lease_key: LeaseKey,
    /// Every batch with its counts by state (running counts as pending).
    pub batches: Vec<ReplayedBatch>,
    /// Jobs not yet finished.
    pub unfinished: Vec<ReplayedJob>,
    /// The next free job id: above every job on record and every id reserved
    /// ([`Change::ReserveJobs`]).
    pub next_job: JobId,
    /// Recorded attempts whose manifest no worker has confirmed writing.
    pub unpublished: Vec<Unpublished>,
    /// The highest finish cursor on record (0 in a ledger with no finished job): the book
    /// draws the next ones after it.
    pub last_cursor: u64,
}

/// A recorded attempt whose manifest is not known to be written.
#[derive(Debug, Clone)]
pub struct Unpublished {
    /// The job.
    pub job: JobId,
    /// The recorded attempt.
    pub lease: Lease,
    /// The job's spec (its `outputs` say where the manifest goes).
    pub spec: SpecBytes,
    /// The recorded objects, as JSON.
    pub objects: String,
}

/// A batch as found in the store.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayedBatch {
    /// Its id.
    pub id: BatchId,
    /// Its name.
    pub name: String,
    /// When it was submitted.
    pub submitted_at_ms: u64,
    /// How many jobs it has.
    pub total: u64,
    /// Jobs succeeded.
    pub succeeded: u64,
    /// Jobs failed.
    pub failed: u64,
    /// Jobs cancelled.
    pub cancelled: u64,
    /// When its earliest recorded attempt started.
    pub started_at_ms: Option<u64>,
    /// When its last job finished.
    pub finished_at_ms: Option<u64>,
    /// The idempotency key it was submitted with, if any.
    pub idempotency_key: Option<Arc<str>>,
}

/// An unfinished job as found in the store.
#[derive(Debug, Clone)]
pub struct ReplayedJob {
    /// Its id.
    pub id: JobId,
    /// Its batch.
    pub batch: BatchId,
    /// What it runs.
    pub spec: SpecBytes,
    /// The highest attempt number on record.
    pub attempts: u32,
    /// Attempts lost before.
    pub lost_attempts: u32,
    /// Attempts failed before.
    pub failures: u32,
    /// The workers it was lost with (since its last retry), each once.
    pub lost_on: Vec<String>,
    /// Its latest attempt's start, if that attempt has not ended on record: (lease, worker).
    pub started: Option<(Lease, String)>,
}

/// A failed job, as a retry needs it.
#[derive(Debug, Clone)]
pub struct FailedJob {
    /// The job.
    pub id: JobId,
    /// What it runs.
    pub spec: SpecBytes,
    /// The highest attempt number it had.
    pub attempts: u32,
}

/// A finished job as a retry of it alone finds it.
#[derive(Debug, Clone)]
pub struct FinishedJob {
    /// Its batch.
    pub batch: BatchId,
    /// Its state on record (a terminal one, or `pending` while unfinished).
    pub state: JobState,
    /// What a retry needs of it.
    pub job: FailedJob,
}

/// Which jobs a page of [`LedgerStore::jobs`] holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobFilter {
    /// Only this batch.
    pub batch: Option<BatchId>,
    /// Only this state, as the store knows it (unfinished jobs are `pending` there).
    pub state: Option<JobState>,
    /// Only ids above this one.
    pub after: JobId,
    /// At most this many.
    pub limit: u32,
}

/// Which finished jobs' records a page of [`LedgerStore::completions`] holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompletionFilter {
    /// Only this batch.
    pub batch: Option<BatchId>,
    /// Only records with a cursor above this one.
    pub after: u64,
    /// At most this many.
    pub limit: u32,
}

/// Called once a commit is durable, or has failed; may run on any thread.
pub type CommitDone = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

/// A read's answer, later.
pub type Read<T> = BoxFuture<'static, Result<T, StoreError>>;

/// Durable storage for the Ledger.
pub trait LedgerStore: Send + Sync {
    /// This run's epoch, from the [`Replay`]: it grows at every open.
    fn epoch(&self) -> u64;

    /// Writes `changes` as one transaction, in the order given and after every earlier commit;
    /// `done` is told once they are durable, or that none of them is.
    fn commit(&self, changes: Vec<Change>, done: CommitDone);

    /// One job's record with its attempt history and its recorded result, if the id exists.
    fn job(&self, id: JobId) -> Read<Option<Resulted<JobInfo>>>;

    /// Finished jobs' records with their results in cursor order (the order they were
    /// recorded), after `filter.after`. A job retried and finished again is found under its
    /// new cursor only. A page stops after the record whose result takes its results past
    /// [`MAX_RESULTS_PAGE_BYTES`](crate::actors::ledger::MAX_RESULTS_PAGE_BYTES), so a page of
    /// large results is never read whole into memory.
    fn completions(&self, filter: CompletionFilter) -> Read<Vec<Completion>>;

    /// The attempts of a job that were not recorded as its result, oldest first.
    fn history(&self, id: JobId) -> Read<Vec<AttemptRecord>>;

    /// A page of job records in id order.
    fn jobs(&self, filter: JobFilter) -> Read<Vec<JobInfo>>;

    /// A batch's failed jobs, for a retry.
    fn failed_jobs(&self, batch: BatchId) -> Read<Vec<FailedJob>>;

    /// One job as a retry of it needs it, if the id exists.
    fn finished_job(&self, id: JobId) -> Read<Option<FinishedJob>>;

    /// The lease recorded as each succeeded job's result (jobs not succeeded are left out).
    fn recorded_leases(&self, jobs: Vec<JobId>) -> Read<HashMap<JobId, Lease>>;

    /// Why the store cannot commit now, if it cannot: its database has been unreachable for a
    /// while (commits asked for wait for it; new work should be refused with this). `None` for a
    /// store that is working, and always for SQLite.
    fn unavailable(&self) -> Option<String> {
        None
    }

    /// Finishes every commit already asked for, then closes, leaving the store tidy (for
    /// SQLite: checkpointed, with no write-ahead log left). Commits after this fail.
    fn close(&self) -> Read<()>;
}
