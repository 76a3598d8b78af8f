//! Read-side views: what the coordinator tells clients about batches, jobs and workers.
//!
//! Field names are part of the interface contract (DESIGN.md): scripts read them from
//! `--json` output, so rename nothing.

use crate::job::{BatchId, JobId, JobState};
use serde::{Deserialize, Serialize};

/// Progress of one batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchInfo {
    /// The batch id.
    pub id: BatchId,
    /// The name given at submission (or the file name).
    pub name: String,
    /// Jobs in the batch.
    pub total: u64,
    /// Jobs waiting for a worker.
    pub pending: u64,
    /// Jobs on a worker now.
    pub running: u64,
    /// Jobs with an accepted result.
    pub succeeded: u64,
    /// Jobs that used up their attempts.
    pub failed: u64,
    /// Jobs cancelled by a user.
    pub cancelled: u64,
    /// True when no job of the batch is pending or running.
    pub done: bool,
    /// When the batch was submitted (ms since the Unix epoch).
    pub submitted_at_ms: u64,
}

impl BatchInfo {
    /// Jobs that reached a terminal state.
    pub fn finished(&self) -> u64 {
        self.succeeded + self.failed + self.cancelled
    }
}

/// One ended attempt of a job, for its history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// The attempt's number, from 1.
    pub attempt: u32,
    /// The worker it ran on.
    pub worker: String,
    /// `succeeded`, `failed`, `timed_out`, `killed` or `lost`.
    pub outcome: String,
    /// When it started (ms since the Unix epoch).
    pub started_at_ms: u64,
    /// When it ended.
    pub finished_at_ms: u64,
    /// The process's exit code, if it exited.
    pub exit_code: Option<i32>,
    /// Why it failed.
    pub error: Option<String>,
}

/// A job and, once it ended, its work order: who ran it, when, and how it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobInfo {
    /// The job id.
    pub id: JobId,
    /// Its batch.
    pub batch: BatchId,
    /// Its name, if it has one.
    pub name: Option<String>,
    /// Where it is in its life.
    pub state: JobState,
    /// Attempts started so far.
    pub attempts: u32,
    /// Attempts lost to a dead or silent worker (counted apart from failures).
    pub lost_attempts: u32,
    /// The worker running it, or the one whose result was recorded.
    pub worker: Option<String>,
    /// The recorded exit code.
    pub exit_code: Option<i32>,
    /// How long the recorded attempt ran.
    pub duration_ms: Option<u64>,
    /// When it was submitted.
    pub queued_at_ms: u64,
    /// When the current or recorded attempt started.
    pub started_at_ms: Option<u64>,
    /// When it reached a terminal state.
    pub finished_at_ms: Option<u64>,
    /// The tail of the recorded attempt's output.
    pub output_tail: Option<String>,
    /// Why the job failed or was cancelled.
    pub error: Option<String>,
    /// Successful results that arrived after the recorded one (acknowledged, not recorded).
    pub duplicates: u32,
    /// The recorded attempt's published outputs; `<to>/<job id>/_manifest.json` lists the same.
    pub outputs: Vec<crate::job::OutputObject>,
    /// Attempts that ended without being recorded as the job's result.
    pub history: Vec<AttemptRecord>,
}

/// A connected worker and what it is doing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerInfo {
    /// The name it registered with.
    pub name: String,
    /// Its address as the coordinator sees it.
    pub address: String,
    /// Slots it offers.
    pub slots: u32,
    /// Labels it carries.
    pub labels: Vec<String>,
    /// Attempts it is running now.
    pub running: u32,
    /// The jobs it is running now.
    pub jobs: Vec<JobId>,
    /// Attempts it finished successfully since it registered.
    pub done: u64,
    /// Attempts that failed or timed out on it.
    pub failed: u64,
    /// Total run time of its finished attempts.
    pub busy_ms: u64,
    /// Milliseconds since it was last heard from.
    pub last_seen_ms: u64,
    /// When it registered (ms since the Unix epoch).
    pub connected_at_ms: u64,
    /// `idle`, `busy` or `draining`.
    pub state: String,
}
