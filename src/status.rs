//! Read-side views: what the coordinator tells clients about batches, jobs and workers.
//!
//! Field names are part of the interface contract (DESIGN.md): scripts read them from
//! `--json` output, so rename nothing.

use crate::ha::{Cluster, MemberRole};
use crate::job::{BatchId, JobId, JobState};
use serde::{Deserialize, Serialize};

mod pools;
mod results;
pub use pools::PoolInfo;
pub use results::{Completion, Finished, Resulted, ResultsPage};

/// Progress of one batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    /// Jobs with an accepted result (counted here from the moment it is accepted; `done`
    /// waits until it is on disk).
    pub succeeded: u64,
    /// Jobs that used up their attempts.
    pub failed: u64,
    /// Jobs cancelled by a user.
    pub cancelled: u64,
    /// True when no job of the batch is pending or running.
    pub done: bool,
    /// When the batch was submitted (ms since the Unix epoch).
    pub submitted_at_ms: u64,
    /// When its first attempt started.
    pub started_at_ms: Option<u64>,
    /// When it was last seen done.
    pub finished_at_ms: Option<u64>,
    /// Jobs that ran to an end (succeeded or failed; cancelled ones are no work done) per
    /// second since it started, to its end once done; 0 while too few jobs or too little time
    /// make a rate that means anything (fewer than 3 jobs, or under a second).
    pub jobs_per_s: f64,
    /// Seconds left at that rate, while it runs.
    pub eta_s: Option<u64>,
    /// Its pending jobs by why they wait (`drover batch`, `/api/batches/{id}`; empty in lists
    /// and in the answer to a wait).
    #[serde(default)]
    pub waiting: Vec<Waiting>,
}

/// Pending jobs that wait for the same reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waiting {
    /// How many.
    pub jobs: u64,
    /// Why, in words: `no connected worker has label tpu`, `waiting for a free slot`.
    pub reason: String,
    /// No connected worker can take them: they wait for one that can to connect.
    pub blocked: bool,
}

impl BatchInfo {
    /// Jobs that reached a terminal state.
    pub fn finished(&self) -> u64 {
        self.succeeded + self.failed + self.cancelled
    }
}

/// A batch the coordinator has durably queued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Submitted {
    /// Its id.
    pub batch: BatchId,
    /// Its first job's id; the others follow in order.
    pub first_job: JobId,
    /// How many jobs it has.
    pub jobs: u64,
    /// Its jobs that no worker connected when it was queued can take, by why: they stay
    /// queued until one that can connects.
    #[serde(default)]
    pub unplaceable: Vec<Waiting>,
    /// True when this answers a repeat: its idempotency key had made this batch already, and
    /// nothing new was queued.
    #[serde(default)]
    pub repeated: bool,
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
    /// Attempts it has had, numbered on across retries (the highest attempt number given out).
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
    /// Attempts that ended without success, oldest first, across retries (a recorded success
    /// is the job's own fields). For a failed job the last of them is the one that failed it.
    pub history: Vec<AttemptRecord>,
    /// Why it waits, while it is pending: `no connected worker has label tpu`, `needs 4 slots;
    /// the largest worker has 2`, `waiting for a free slot (12 ahead)`, `retrying after
    /// backoff ...`.
    #[serde(default)]
    pub waiting: Option<String>,
}

/// An attempt a worker is running.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CurrentJob {
    /// The job.
    pub job: JobId,
    /// When the worker was given it (ms since the Unix epoch).
    pub since_ms: u64,
}

/// A worker, connected or recently gone, and what it is doing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerInfo {
    /// Its registration, unique among this coordinator's registrations since it started (a
    /// worker that reconnects is a new registration).
    pub id: u64,
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
    /// Total run time of its succeeded and failed attempts.
    pub busy_ms: u64,
    /// Milliseconds since it was last heard from.
    pub last_seen_ms: u64,
    /// When it registered (ms since the Unix epoch).
    pub connected_at_ms: u64,
    /// `idle`, `busy`, `draining`, or for a worker that is gone, `lost` or `left`.
    pub state: String,
    /// Attempts lost with it (it died or went silent while running them), under this name,
    /// over the last hour.
    pub lost: u64,
    /// What it runs now, with since when.
    pub current: Vec<CurrentJob>,
    /// When it went away, for a worker that is gone.
    pub gone_at_ms: Option<u64>,
}

impl WorkerInfo {
    /// Mean run time of its finished attempts.
    pub fn mean_job_ms(&self) -> Option<u64> {
        let finished = self.done + self.failed;
        (finished > 0).then(|| self.busy_ms / finished)
    }
}

/// p50, p90 and p99 of a duration, in milliseconds, over `count` samples.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Samples seen.
    pub count: u64,
    /// Median.
    pub p50_ms: u64,
    /// 90th percentile.
    pub p90_ms: u64,
    /// 99th percentile.
    pub p99_ms: u64,
}

/// Jobs by state, over every batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobCounts {
    /// Waiting for a worker (including a retry's backoff): the queue depth.
    pub pending: u64,
    /// On a worker.
    pub running: u64,
    /// Succeeded.
    pub succeeded: u64,
    /// Failed for good.
    pub failed: u64,
    /// Cancelled.
    pub cancelled: u64,
}

/// Connected workers by state, and recently gone ones.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerCounts {
    /// Connected with nothing to do.
    pub idle: u64,
    /// Connected and running jobs.
    pub busy: u64,
    /// Finishing their jobs before leaving.
    pub draining: u64,
    /// Gone without saying so (dead or silent) in the last hour, and not back.
    pub lost: u64,
    /// Slots of connected workers.
    pub slots: u64,
    /// Attempts running on connected workers.
    pub running: u64,
}

impl WorkerCounts {
    /// The counts of a worker list: connected workers by state with their slots and what they
    /// run, and the lost among the recently gone.
    pub fn of(workers: &[WorkerInfo]) -> WorkerCounts {
        let mut counts = WorkerCounts::default();
        for worker in workers {
            match worker.state.as_str() {
                "idle" => counts.idle += 1,
                "busy" => counts.busy += 1,
                "draining" => counts.draining += 1,
                "lost" => counts.lost += 1,
                _ => {}
            }
            if worker.gone_at_ms.is_none() {
                counts.slots += u64::from(worker.slots);
                counts.running += u64::from(worker.running);
            }
        }
        counts
    }
}

/// An attempt that failed, for the list of recent failures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureInfo {
    /// The job.
    pub job: JobId,
    /// Its batch.
    pub batch: BatchId,
    /// The worker it ran on.
    pub worker: String,
    /// `failed`, `timed_out`, `killed` or `lost`.
    pub outcome: String,
    /// When it ended (ms since the Unix epoch).
    pub at_ms: u64,
    /// Why it failed.
    pub error: Option<String>,
    /// The last lines of its output.
    pub output_tail: String,
}

/// What the Ledger knows of all jobs, kept as events happen.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobStatistics {
    /// Jobs by state.
    pub jobs: JobCounts,
    /// Jobs that ran to an end (succeeded or failed, not cancelled) per second over the last
    /// minute.
    pub jobs_per_s: f64,
    /// Jobs that ran to an end in each of the last seconds, oldest first, the current one last.
    pub per_second: Vec<u32>,
    /// Run time of attempts that ended since this coordinator started (`started_at_ms`).
    pub run: Percentiles,
    /// Time from submission to first start, of jobs started since this coordinator started.
    pub wait: Percentiles,
    /// Successful results that arrived after a job's recorded one.
    pub duplicates: u64,
    /// The most recent failed attempts, newest first.
    pub recent_failures: Vec<FailureInfo>,
    /// Unfinished batches, the busiest first (most running, then most pending).
    pub busiest: Vec<BatchInfo>,
    /// Batches on record.
    pub batches: u64,
    /// When this coordinator started (ms since the Unix epoch).
    pub started_at_ms: u64,
    /// The ledger's own id (16 hex digits): jobs' outputs go under `<to>ledger-<id>/<job id>/`.
    pub ledger: String,
}

/// The whole cluster at a glance: `drover status`, `/api/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// When this was taken (ms since the Unix epoch).
    pub at_ms: u64,
    /// How long the coordinator has run.
    pub uptime_ms: u64,
    /// Workers by state.
    pub workers: WorkerCounts,
    /// Jobs, throughput and timings.
    pub stats: JobStatistics,
    /// Pending jobs by why they wait.
    #[serde(default)]
    pub waiting: Vec<Waiting>,
    /// The leading coordinator's protocol address, if one is known.
    #[serde(default)]
    pub leader: Option<String>,
    /// Every coordinator seen on the ledger: the leader and its standbys.
    #[serde(default)]
    pub coordinators: Vec<CoordinatorInfo>,
    /// The elastic fleet's pools (none unless `[[pool]]` tables are configured).
    #[serde(default)]
    pub pools: Vec<PoolInfo>,
}

/// A coordinator as `drover status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoordinatorInfo {
    /// Its protocol address (`host:port`).
    pub address: String,
    /// Its HTTP address, if it serves HTTP.
    pub http: Option<String>,
    /// `leader` or `standby`.
    pub role: MemberRole,
    /// How long ago it was last heard from, by the ledger database's clock.
    pub last_seen_ms: u64,
}

impl ClusterStatus {
    /// Puts the Ledger's statistics, the worker list and why jobs wait together.
    pub fn assemble(
        stats: JobStatistics,
        workers: &[WorkerInfo],
        waiting: Vec<Waiting>,
    ) -> ClusterStatus {
        ClusterStatus::with_counts(stats, WorkerCounts::of(workers), waiting)
    }

    /// Puts the Ledger's statistics, the workers' counts and why jobs wait together.
    pub fn with_counts(
        stats: JobStatistics,
        workers: WorkerCounts,
        waiting: Vec<Waiting>,
    ) -> ClusterStatus {
        let at_ms = crate::job::now_ms();
        ClusterStatus {
            at_ms,
            uptime_ms: at_ms.saturating_sub(stats.started_at_ms),
            workers,
            stats,
            waiting,
            leader: None,
            coordinators: Vec::new(),
            pools: Vec::new(),
        }
    }

    /// Adds who leads and which coordinators there are, as the coordinator knows it now.
    pub fn with_cluster(mut self, cluster: &Cluster) -> ClusterStatus {
        self.leader = cluster.leader.as_ref().map(|leader| leader.address.clone());
        self.coordinators = cluster
            .members
            .iter()
            .map(|member| CoordinatorInfo {
                address: member.peer.address.clone(),
                http: member.peer.http.clone(),
                role: member.role,
                last_seen_ms: member.last_seen_ms,
            })
            .collect();
        self
    }
}
