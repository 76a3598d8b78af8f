//! The wire messages between the coordinator and its peers (workers and clients).
//!
//! A connection starts with a handshake: the peer sends [`Hello`](ToCoordinator::Hello) with the
//! protocol version, its role and a nonce; the coordinator answers with a
//! [`Challenge`](FromCoordinator::Challenge); the peer proves it holds the role's secret with an
//! HMAC over both nonces ([`Proof`](ToCoordinator::Proof)); the coordinator answers
//! [`Welcome`](FromCoordinator::Welcome) with a proof of its own, or
//! [`Refused`](FromCoordinator::Refused) and closes. A standby (a coordinator that does not hold
//! the ledger's lease) answers a good proof with [`NotLeader`](FromCoordinator::NotLeader)
//! instead of the welcome, and closes: only a holder of a secret learns where the leader is.

pub use crate::job::{Assignment, CancelTarget, CarriedAttempt, ManifestOrder};
use crate::job::{AttemptResult, BatchId, JobId, JobSpec, JobState, Lease};
use crate::status::{
    BatchInfo, ClusterStatus, Completion, JobInfo, PoolInfo, Resulted, ResultsPage, Waiting,
    WorkerInfo,
};
use serde::{Deserialize, Serialize};

/// Bumped on every incompatible change to these types.
pub const PROTOCOL_VERSION: u16 = 8;

/// Size of the nonces exchanged in the handshake.
pub const NONCE_LEN: usize = 32;

/// Which secret a peer proves it holds, and so what it may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// Submits and inspects work (`drover`, the Rust client).
    Client,
    /// Runs work (`drover-worker`).
    Worker,
}

impl Role {
    /// The role's name in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Client => "client",
            Role::Worker => "worker",
        }
    }
}

/// Everything a peer sends to the coordinator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToCoordinator {
    /// Opens the handshake.
    Hello {
        /// The peer's [`PROTOCOL_VERSION`].
        version: u16,
        /// The role it asks for.
        role: Role,
        /// The peer's half of the challenge.
        nonce: [u8; NONCE_LEN],
    },
    /// The peer's answer to the challenge.
    Proof {
        /// HMAC-SHA256 of the transcript under the role's secret.
        mac: [u8; 32],
    },
    /// A worker announces itself (after the handshake).
    Register {
        /// A name for people to read, and the name the ledger records its attempts under: one
        /// live worker holds a name at a time.
        name: String,
        /// Drawn at random when the worker process starts and kept across its reconnections: it
        /// tells the same worker coming back (which may take its name and attempts back) from
        /// another process given the same name. Never shown, so no other worker can claim it.
        instance: u64,
        /// How many slots it offers.
        slots: u32,
        /// Labels jobs may require.
        labels: Vec<String>,
        /// Attempts it kept running across a reconnect: their results free their slots when
        /// they arrive, and a job waiting for a new attempt gets this one back instead.
        carried: Vec<CarriedAttempt>,
        /// Results not yet acknowledged, reported before any new job is assigned, so a job
        /// finished while disconnected is not started again.
        results: Vec<AttemptResult>,
        /// The pool and machine it was started for, when the fleet started it (`--pool`,
        /// `--machine-id`).
        member: Option<PoolMember>,
    },
    /// A worker is alive. The coordinator answers each with an empty
    /// [`Acked`](FromCoordinator::Acked), so that a worker given several coordinators can tell
    /// one that stopped answering (frozen, cut off) and look for the leader elsewhere.
    Heartbeat,
    /// A worker started these attempts. It sends this for every attempt it is assigned, when
    /// the attempt starts: at once into a free slot, or later for one it held (see
    /// [`Release`](FromCoordinator::Release)).
    Started(Vec<Lease>),
    /// A worker finished attempts.
    Results(Vec<AttemptResult>),
    /// A worker is shutting down: send it nothing new.
    Draining,
    /// A worker wrote the manifests of these recorded attempts.
    ManifestsWritten(Vec<Lease>),
    /// A client's request, answered by a [`Response`](FromCoordinator::Response) with the same id.
    Request {
        /// Chosen by the client to match the response.
        id: u64,
        /// What it asks.
        body: ClientRequest,
    },
    /// A worker hands back attempts it held and never started, and never will: asked to by
    /// [`Release`](FromCoordinator::Release) or [`Kill`](FromCoordinator::Kill), or because it
    /// is draining. Their jobs may go to another worker.
    Released(Vec<Lease>),
}

/// Everything the coordinator sends to a peer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum FromCoordinator {
    /// The coordinator's half of the challenge.
    Challenge {
        /// Random bytes.
        nonce: [u8; NONCE_LEN],
    },
    /// The peer is authenticated; the coordinator proves it holds the secret too.
    Welcome {
        /// HMAC-SHA256 of the transcript, from the coordinator's side.
        mac: [u8; 32],
    },
    /// This coordinator is a standby: it serves nothing, and closes after this. Sent instead of
    /// [`Welcome`](FromCoordinator::Welcome), once the peer's proof is good.
    NotLeader {
        /// The leader's protocol address (`host:port`) as it advertises itself, if one is known.
        leader: Option<String>,
    },
    /// The connection is refused; it closes after this.
    Refused {
        /// Why, in words meant for the person running the peer.
        reason: String,
        /// True when trying again cannot help (a wrong token, a bad registration); false for
        /// passing conditions (an overloaded coordinator missing the handshake deadline).
        permanent: bool,
    },
    /// A worker's registration was accepted.
    Registered {
        /// How often the worker should heartbeat.
        heartbeat_interval_ms: u64,
        /// The most bytes of one attempt's result the coordinator keeps (`--max-result-bytes`):
        /// an attempt with a longer result fails, saying to publish it as outputs instead.
        max_result_bytes: u64,
    },
    /// Jobs for a worker to run.
    Assign(Vec<Assignment>),
    /// Attempts a worker should stop (their jobs were cancelled).
    Kill(Vec<Lease>),
    /// Manifests to write for recorded attempts whose own worker did not confirm writing them.
    WriteManifests(Vec<ManifestOrder>),
    /// Results the worker may forget: failures on disk, duplicates, stale attempts.
    Acked(Vec<Lease>),
    /// Successes recorded on disk as their jobs' results: the worker may forget them, and
    /// publishes their outputs' manifests.
    Recorded(Vec<Lease>),
    /// The answer to a client's request.
    Response {
        /// The request's id.
        id: u64,
        /// The answer.
        body: ClientResponse,
    },
    /// Attempts to hand back if they have not started. A worker may be assigned more than its
    /// free slots take (it starts the rest as slots free, in order); another worker is idle
    /// now, or they waited too long. The worker answers
    /// [`Released`](ToCoordinator::Released) for those it had not started; one it started
    /// runs on and reports as usual.
    Release(Vec<Lease>),
    /// The worker should take nothing new, finish what it runs, and exit: the fleet scales its
    /// pool in (or its machine is going away). It answers [`Draining`](ToCoordinator::Draining).
    Drain {
        /// Why, for the worker's log.
        reason: String,
    },
}

/// A worker the fleet started: its pool and the provider's id for its machine.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PoolMember {
    /// The pool's name.
    pub pool: String,
    /// The provider's id for the machine (an instance id, `process-<pid>`).
    pub machine: String,
}

/// What a client can ask.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientRequest {
    /// Queue a batch of jobs; answered once they are on disk.
    Submit {
        /// The batch's name.
        name: String,
        /// Its jobs.
        jobs: Vec<JobSpec>,
        /// The client's name for this submission (at most 128 bytes of printable ASCII): sent
        /// again, it is answered with the batch it made first, and nothing new is queued.
        idempotency_key: Option<String>,
    },
    /// One batch's progress.
    Batch(BatchId),
    /// Every batch's progress.
    Batches,
    /// Answered when the batch is done, or after `timeout_ms` with its progress so far.
    WaitBatch {
        /// The batch.
        batch: BatchId,
        /// The longest to wait.
        timeout_ms: u64,
    },
    /// One job with its history.
    Job(JobId),
    /// Jobs in id order, a page at a time.
    Jobs {
        /// Only this batch.
        batch: Option<BatchId>,
        /// Only this state.
        state: Option<JobState>,
        /// Only ids above this one.
        after: JobId,
        /// At most this many.
        limit: u32,
    },
    /// Connected workers.
    Workers,
    /// Cancel a batch's or a job's pending and running jobs.
    Cancel(CancelTarget),
    /// Put a batch's failed jobs back to pending with fresh attempts.
    Retry(BatchId),
    /// The whole cluster at a glance.
    Status,
    /// Put one failed or cancelled job back to pending with fresh attempts.
    RetryJob(JobId),
    /// Finished jobs' records in the order they were recorded, after a cursor: answered at
    /// once when there are some (or the batch is done), else when the next is recorded, or
    /// after `wait_ms` with none.
    Results {
        /// Only this batch's jobs; every batch's without.
        batch: Option<BatchId>,
        /// Only records after this cursor (0: from the start).
        after: u64,
        /// At most this many (and at most a few MiB of results).
        limit: u32,
        /// How long to wait for a record when there is none yet (0: answer at once).
        wait_ms: u64,
    },
    /// Queue one job and answer with its final record, result included, once it is recorded:
    /// a submission and its result in one request.
    Call {
        /// The job.
        spec: JobSpec,
        /// As for [`Submit`](ClientRequest::Submit): sent again, it waits for the job the key
        /// made first rather than queueing another.
        idempotency_key: Option<String>,
    },
    /// The elastic fleet's pools.
    Pools,
}

/// The coordinator's answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ClientResponse {
    /// The batch is durably queued.
    Submitted {
        /// Its id.
        batch: BatchId,
        /// Its first job id; the others follow in order.
        first_job: JobId,
        /// How many jobs it has.
        jobs: u64,
        /// Its jobs no connected worker can take, by why.
        unplaceable: Vec<Waiting>,
        /// The idempotency key had made this batch already: nothing new was queued.
        repeated: bool,
    },
    /// One batch.
    Batch(BatchInfo),
    /// Many batches.
    Batches(Vec<BatchInfo>),
    /// One job, with its recorded result.
    Job(Box<Resulted<JobInfo>>),
    /// A page of jobs.
    Jobs(Vec<JobInfo>),
    /// Connected workers.
    Workers(Vec<WorkerInfo>),
    /// How many jobs a cancel or retry changed.
    Changed(u64),
    /// The request could not be served.
    Error(String),
    /// The cluster at a glance.
    Status(Box<ClusterStatus>),
    /// A page of finished jobs' records, in recording order.
    Results(ResultsPage),
    /// The called job's final record.
    Called(Box<Completion>),
    /// The elastic fleet's pools.
    Pools(Vec<PoolInfo>),
}
