//! What the job book asks for after an event: messages to send, a commit to make, an answer to
//! give. The book decides; the Ledger actor carries these out.

use crate::actors::ledger::error::LedgerError;
use crate::actors::queue::PendingJob;
use crate::job::{BatchId, JobId, JobState, Lease, ManifestOrder, SpecBytes, WorkerId};
use crate::status::{BatchInfo, FailureInfo, Submitted};
use crate::storage::store::{Change, FailedJob, FinishedJob};
use std::sync::Arc;
use std::time::Duration;

/// Everything that must follow an event.
#[derive(Debug, Default)]
#[must_use = "the book's decisions take effect only when carried out"]
pub(crate) struct Effects {
    /// Jobs for the Scheduler's queue.
    pub(crate) enqueue: Vec<PendingJob>,
    /// Queued jobs that must not start.
    pub(crate) withdraw: Vec<JobId>,
    /// Attempts to stop on their workers.
    pub(crate) kill: Vec<Lease>,
    /// What to tell workers about their results.
    pub(crate) notices: Vec<(WorkerId, Notice)>,
    /// Jobs to hand back to [`super::Book::backoff_over`] after a wait.
    pub(crate) retry_after: Vec<(JobId, Duration)>,
    /// Attempts to hand back to [`super::Book::deadline_passed`] after a wait: still running
    /// then, they are past their timeout.
    pub(crate) deadlines: Vec<(JobId, Lease, Duration)>,
    /// Manifests for some worker to write.
    pub(crate) publish: Vec<ManifestOrder>,
    /// Batches that just finished, for whoever waits on them.
    pub(crate) batches_done: Vec<BatchInfo>,
    /// Changes to make durable, and what they decide once they are (or are not).
    pub(crate) commit: Option<Commit>,
    /// Records to read before the book can decide the rest.
    pub(crate) lookup: Option<Lookup>,
    /// The answer to the client whose request this was.
    pub(crate) answer: Option<Answer>,
    /// The request repeats a key whose batch is being written: its answer waits for that
    /// commit (it comes in [`Effects::repeats`]).
    pub(crate) held: Option<Arc<str>>,
    /// Answers for every request held on a key.
    pub(crate) repeats: Vec<(Arc<str>, Answer)>,
}

impl Effects {
    /// Nothing follows.
    pub(crate) fn none() -> Effects {
        Effects::default()
    }

    /// Only an answer follows.
    pub(crate) fn answer(answer: Answer) -> Effects {
        Effects {
            answer: Some(answer),
            ..Effects::default()
        }
    }

    /// Tells a worker something, if there is anything to tell.
    pub(crate) fn notify(&mut self, worker: WorkerId, notice: Notice) {
        if !notice.leases().is_empty() {
            self.notices.push((worker, notice));
        }
    }
}

/// What a worker is told about its results.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Notice {
    /// It may forget these: failures on disk, duplicates, stale attempts.
    Acked(Vec<Lease>),
    /// These are recorded as their jobs' results: it may forget them and writes their manifests.
    Recorded(Vec<Lease>),
}

impl Notice {
    /// The results it is about.
    pub(crate) fn leases(&self) -> &[Lease] {
        match self {
            Notice::Acked(leases) | Notice::Recorded(leases) => leases,
        }
    }
}

/// Changes to make durable as one, and what follows once they are.
#[derive(Debug)]
pub(crate) struct Commit {
    /// The changes.
    pub(crate) changes: Vec<Change>,
    /// Handed back to [`super::Book::committed`] with the outcome.
    pub(crate) then: Pending,
}

/// What a commit decides, waiting for it to be durable.
#[derive(Debug)]
pub(crate) enum Pending {
    /// A batch: once on disk its jobs join the queue, and the client is told.
    Submit {
        batch: BatchId,
        name: String,
        submitted_at_ms: u64,
        first_job: JobId,
        jobs: Arc<Vec<(Option<String>, SpecBytes)>>,
        /// Its idempotency key: repeats of it wait for this commit.
        key: Option<Arc<str>>,
    },
    /// A worker's results: the jobs they finish leave memory, the worker is told.
    Results {
        worker: WorkerId,
        finishing: Vec<(JobId, JobState)>,
        acked: Vec<Lease>,
        recorded: Vec<Lease>,
        manifests: Vec<ManifestOrder>,
        /// Run times of the attempts, counted in the statistics once written.
        ran_ms: Vec<u64>,
        failures: Vec<FailureInfo>,
    },
    /// Attempts lost with their worker; jobs lost too often are failed.
    Lost {
        finishing: Vec<(JobId, JobState)>,
        failures: Vec<FailureInfo>,
    },
    /// A cancel: the jobs leave memory, the client is told how many.
    Cancel { finishing: Vec<(JobId, JobState)> },
    /// A retry: the failed jobs join memory and the queue again.
    Reopen {
        batch: BatchId,
        failed: Vec<FailedJob>,
    },
    /// A retry of one job: it joins memory and the queue again.
    ReopenJob(FinishedJob),
    /// A note for the record (duplicates, written manifests); nothing follows.
    Note(&'static str),
}

/// Records the book needs read before it decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// Successes for jobs that have left memory: which of them is the recorded result (told
    /// `Recorded` again) and which a duplicate. Handed to
    /// [`super::Book::late_successes_found`].
    LateSuccesses {
        worker: WorkerId,
        worker_name: Arc<str>,
        late: Vec<(JobId, Lease)>,
    },
    /// A batch's failed jobs, for a retry. Handed to [`super::Book::failed_jobs_found`].
    FailedJobs(BatchId),
    /// One job, for a retry of it alone, read once every start the Scheduler sent before is
    /// in (a cancelled job's turn in line may have been handed out just before the cancel).
    /// Handed to [`super::Book::finished_job_found`].
    FinishedJob(JobId),
    /// The first job of a batch replayed with an idempotency key, for a repeat of the key.
    /// Handed to [`super::Book::first_job_found`].
    FirstJob { key: Arc<str>, batch: BatchId },
}

/// The answer to a client's change.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Answer {
    /// The batch is on disk.
    Submitted(Submitted),
    /// This many jobs were cancelled or retried.
    Changed(u64),
    /// It was not done.
    Refused(LedgerError),
}
