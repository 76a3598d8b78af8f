//! Domain types of the job model: what a job is, its states, and what an attempt reports.
//!
//! These types are shared by the coordinator, the worker and the client; the wire protocol
//! carries them as they are (postcard), so a change here is a protocol change.

use serde::{Deserialize, Serialize};
use std::fmt;

mod attempt;
mod idempotency;
mod lease;
mod location;
mod spec_bytes;
pub mod wire_bytes;
pub use attempt::{
    most_result_bytes, object_size, Assignment, AttemptResult, CarriedAttempt, ManifestOrder,
    Outcome, DEFAULT_MAX_RESULT_BYTES, MAX_ERROR, MAX_MANIFEST_BYTES, MAX_OUTPUT_OBJECTS,
    MAX_OUTPUT_TAIL, RESULT_ROOM,
};
pub use idempotency::{check_idempotency_key, new_idempotency_key, MAX_IDEMPOTENCY_KEY};
pub use lease::LeaseKey;
pub use location::{
    attempt_name, attempt_prefix, check_relative, job_prefix, ledger_dir, lies_under,
    unscoped_job_prefix, with_slash, Location,
};
pub use spec_bytes::{Placement, SpecBytes};

/// A job's id, assigned by the coordinator, unique for the life of a data directory.
pub type JobId = u64;
/// A batch's id, assigned by the coordinator.
pub type BatchId = u64;
/// A registration of a worker; a worker that reconnects gets a new one.
pub type WorkerId = u64;
/// One assignment of a job to a worker: unique across coordinator restarts, so a result
/// always names exactly the attempt it belongs to (made with the ledger's [`LeaseKey`]).
pub type Lease = u64;

/// A ledger's own id: random, drawn when the ledger is created and kept in it for its life.
/// Job ids start at 1 in every ledger; outputs are published under a directory named for the
/// ledger ([`ledger_dir`]), so two ledgers writing to one prefix never meet.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LedgerId(pub u64);

/// Sixteen hex digits, as the ledger's output directory carries it.
impl fmt::Display for LedgerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// The default number of attempts a job may fail before it is marked failed.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;

/// What a job runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Task {
    /// A command run as a child process in a fresh scratch directory.
    Exec {
        /// The program and its arguments.
        cmd: Vec<String>,
        /// Extra environment variables.
        env: Vec<(String, String)>,
    },
    /// A handler registered with the worker library, called with a payload.
    Call {
        /// The handler's name (`noop` and `sleep` are built into the stock worker).
        handler: String,
        /// Bytes handed to the handler.
        payload: Vec<u8>,
    },
}

/// Everything a user says about one job.
///
/// The field order is part of the encoding that [`SpecBytes::placement`] relies on: the fields
/// the scheduler needs come first, so they decode without the rest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    /// Higher runs first.
    pub priority: i32,
    /// Slots of a worker this job occupies.
    pub slots: u32,
    /// Labels a worker must carry to take this job.
    pub requires: Vec<String>,
    /// Attempts that may fail before the job is failed.
    pub max_attempts: u32,
    /// Wall-clock limit of one attempt; the process is killed and the attempt retried.
    pub timeout_s: Option<u32>,
    /// An optional human name.
    pub name: Option<String>,
    /// What to run.
    pub task: Task,
    /// Objects fetched into the scratch directory before the job starts.
    pub inputs: Vec<Input>,
    /// A directory published after a successful run.
    pub outputs: Option<Outputs>,
}

/// An object (or, for a URL ending in `/`, every object under a prefix) to fetch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Input {
    /// `file:///path` (later `s3://bucket/key`).
    pub from: String,
    /// A path relative to the scratch directory.
    pub to: String,
}

/// Where a job's results go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outputs {
    /// A directory relative to the scratch directory.
    pub from: String,
    /// A prefix URL; the accepted outputs are found under `<to>ledger-<ledger id>/<job id>/`
    /// (see [`job_prefix`]).
    pub to: String,
}

/// One published output object, as the result's manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputObject {
    /// Its full URL.
    pub url: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its entity tag (for `file://`, the SHA-256 of its content).
    pub etag: String,
}

impl JobSpec {
    /// A call job with the default policy.
    pub fn call(handler: impl Into<String>, payload: impl Into<Vec<u8>>) -> Self {
        Self::with_task(Task::Call {
            handler: handler.into(),
            payload: payload.into(),
        })
    }

    /// An exec job with the default policy.
    pub fn exec<S: Into<String>>(cmd: impl IntoIterator<Item = S>) -> Self {
        Self::with_task(Task::Exec {
            cmd: cmd.into_iter().map(Into::into).collect(),
            env: Vec::new(),
        })
    }

    /// Checks what the job file parser also checks, for specs that arrive over the network.
    pub fn validate(&self) -> Result<(), String> {
        match &self.task {
            Task::Exec { cmd, .. } if cmd.is_empty() || cmd[0].is_empty() => {
                return Err("cmd: must name a program".into())
            }
            Task::Call { handler, .. } if handler.is_empty() => {
                return Err("handler: must not be empty".into())
            }
            _ => {}
        }
        if self.slots == 0 {
            return Err("slots: must be at least 1".into());
        }
        if self.max_attempts == 0 {
            return Err("max_attempts: must be at least 1".into());
        }
        if self.timeout_s == Some(0) {
            return Err("timeout_s: must be at least 1".into());
        }
        if self.requires.iter().any(|label| label.is_empty()) {
            return Err("requires: labels must not be empty".into());
        }
        for (index, input) in self.inputs.iter().enumerate() {
            Location::parse(&input.from)
                .map_err(|error| format!("inputs[{index}].from: {error}"))?;
            check_relative(&input.to).map_err(|error| format!("inputs[{index}].to: {error}"))?;
        }
        if let Some(outputs) = &self.outputs {
            check_relative(&outputs.from).map_err(|error| format!("outputs.from: {error}"))?;
            Location::parse(&outputs.to).map_err(|error| format!("outputs.to: {error}"))?;
        }
        Ok(())
    }

    fn with_task(task: Task) -> Self {
        JobSpec {
            name: None,
            task,
            requires: Vec::new(),
            slots: 1,
            priority: 0,
            timeout_s: None,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            inputs: Vec::new(),
            outputs: None,
        }
    }
}

/// The life of a job: `pending` → `running` → `succeeded` | `failed` | `cancelled`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Waiting for a worker (or for its retry backoff).
    Pending,
    /// Assigned to a worker.
    Running,
    /// A result was accepted.
    Succeeded,
    /// All attempts failed.
    Failed,
    /// Cancelled by a user.
    Cancelled,
}

impl JobState {
    /// All states, in display order.
    pub const ALL: [JobState; 5] = [
        JobState::Pending,
        JobState::Running,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Cancelled,
    ];

    /// The lowercase name used in the CLI, the JSON output and the ledger.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    /// True when the job will not run again unless retried.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled
        )
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for JobState {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        JobState::ALL
            .into_iter()
            .find(|state| state.as_str() == text)
            .ok_or_else(|| {
                format!("unknown state {text:?}: expected pending, running, succeeded, failed or cancelled")
            })
    }
}

/// What a cancel applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CancelTarget {
    /// Every unfinished job of a batch.
    Batch(BatchId),
    /// One job.
    Job(JobId),
}

/// Milliseconds since the Unix epoch, the timestamp unit everywhere in drover.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as u64)
        .unwrap_or(0)
}
