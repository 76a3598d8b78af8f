//! Attempts: what a worker is given, what it carries across a reconnect, and what it reports.
//!
//! Like the rest of [`crate::job`], these travel on the wire as they are (postcard).

use super::{BatchId, JobId, Lease, LedgerId, OutputObject, Outputs, SpecBytes};
use serde::{Deserialize, Serialize};

/// One job handed to a worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    /// Names this attempt in the result.
    pub lease: Lease,
    /// The job.
    pub job: JobId,
    /// Its batch.
    pub batch: BatchId,
    /// The attempt's number, from 1 (`DROVER_ATTEMPT`).
    pub attempt: u32,
    /// What to run, as the coordinator keeps it (see [`SpecBytes`]).
    pub spec: SpecBytes,
    /// The ledger the job is in: its outputs go under that ledger's own directory.
    pub ledger: LedgerId,
    /// The coordinator's epoch it was handed out in: with the job, the number and the worker,
    /// what its lease is made of, so a restarted coordinator can check it.
    pub epoch: u64,
}

/// An attempt a worker kept running across a reconnect (or a coordinator restart).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CarriedAttempt {
    /// The attempt's lease.
    pub lease: Lease,
    /// Its job.
    pub job: JobId,
    /// Its number.
    pub attempt: u32,
    /// The slots it holds.
    pub slots: u32,
    /// The coordinator's epoch it was handed out in (see [`Assignment::epoch`]).
    pub epoch: u64,
}

/// A recorded attempt's manifest, for any worker to write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestOrder {
    /// The job.
    pub job: JobId,
    /// The recorded attempt.
    pub lease: Lease,
    /// Where the job's outputs go.
    pub outputs: Outputs,
    /// The recorded attempt's objects.
    pub objects: Vec<OutputObject>,
    /// The ledger the job is in (a manifest of an attempt recorded before ledgers had ids goes
    /// where its objects say: see [`crate::worker::data::publish_manifest`]).
    pub ledger: LedgerId,
}

/// How one attempt ended, as the worker saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Exit code 0, or the handler returned Ok.
    Succeeded,
    /// Non-zero exit, a signal, a handler error, or the job could not start.
    Failed,
    /// The attempt ran past `timeout_s` and was killed.
    TimedOut,
    /// Killed because the job was cancelled.
    Killed,
}

impl Outcome {
    /// The lowercase name used in logs and output.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
            Outcome::TimedOut => "timed_out",
            Outcome::Killed => "killed",
        }
    }
}

/// What a worker reports for one attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptResult {
    /// The attempt this result belongs to.
    pub lease: Lease,
    /// The job.
    pub job: JobId,
    /// The attempt's number.
    pub attempt: u32,
    /// How it ended.
    pub outcome: Outcome,
    /// The process's exit code, when it exited normally.
    pub exit_code: Option<i32>,
    /// When the attempt started on the worker (ms since the Unix epoch).
    pub started_at_ms: u64,
    /// How long it ran.
    pub duration_ms: u64,
    /// The last few KiB of stdout and stderr (or a handler's output).
    pub output_tail: String,
    /// The attempt's result, byte for byte: a call handler's returned bytes, an exec job's
    /// standard output. At most the coordinator's `--max-result-bytes` (told the worker in
    /// [`Registered`](crate::net::protocol::FromCoordinator::Registered)); past it the worker
    /// fails the attempt instead, and the coordinator fails a longer one it is sent.
    #[serde(with = "crate::job::wire_bytes")]
    pub result: Vec<u8>,
    /// Why it failed, in words.
    pub error: Option<String>,
    /// What a successful attempt published, under its own attempt prefix.
    pub outputs: Vec<OutputObject>,
    /// A failure that another attempt would repeat (the command cannot be started, an input
    /// does not exist): the job fails now rather than after `max_attempts`. False for failures
    /// that may pass next time (a non-zero exit, a timeout, a transient error).
    pub permanent: bool,
    /// The coordinator's epoch the attempt was handed out in (see [`Assignment::epoch`]).
    pub epoch: u64,
}

/// The default of `--max-result-bytes`: the most bytes of one attempt's result kept.
pub const DEFAULT_MAX_RESULT_BYTES: usize = 1024 * 1024;

/// The most bytes a frame holding one attempt's result needs besides the result itself: the
/// fixed fields, the output tail, the error and the outputs manifest at their limits (as
/// [`AttemptResult::encoded_size`] counts them), and the frame's own tag and length. A result
/// of `--max-result-bytes` with this room must fit in one frame, or a worker holding it could
/// never report it.
pub const RESULT_ROOM: usize = 128 + MAX_OUTPUT_TAIL + MAX_ERROR + MAX_MANIFEST_BYTES + 16;

/// The most bytes of one result that frames of `max_frame` bytes carry whatever else the
/// result holds: the largest `--max-result-bytes` those frames allow.
pub fn most_result_bytes(max_frame: usize) -> usize {
    max_frame.saturating_sub(RESULT_ROOM)
}

/// The most bytes of output tail the coordinator keeps per attempt.
pub const MAX_OUTPUT_TAIL: usize = 16 * 1024;
/// The most bytes of an error message the coordinator keeps.
pub const MAX_ERROR: usize = 4 * 1024;

/// The most objects one attempt's outputs may list: its manifest travels in a frame.
pub const MAX_OUTPUT_OBJECTS: usize = 20_000;
/// The most bytes one attempt's manifest may take (an estimate, see
/// [`AttemptResult::encoded_size`]); past either limit the attempt fails before it publishes.
pub const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;

/// The encoded size of one output object in a manifest, at most (its URL and entity tag, with
/// room for its size and the encoding's lengths).
pub fn object_size(url: &str, etag: &str) -> usize {
    url.len() + etag.len() + 24
}

impl AttemptResult {
    /// Its size on the wire, at most: what frames of results are filled by.
    pub fn encoded_size(&self) -> usize {
        128 + self.output_tail.len()
            + self.result.len()
            + self.error.as_ref().map_or(0, String::len)
            + self
                .outputs
                .iter()
                .map(|object| object_size(&object.url, &object.etag))
                .sum::<usize>()
    }

    /// Cuts the worker's texts to what the coordinator keeps: the end of the output, the start
    /// of the error.
    pub fn bound(&mut self) {
        if self.output_tail.len() > MAX_OUTPUT_TAIL {
            let mut cut = self.output_tail.len() - MAX_OUTPUT_TAIL;
            while !self.output_tail.is_char_boundary(cut) {
                cut += 1;
            }
            self.output_tail.drain(..cut);
        }
        if let Some(error) = &mut self.error {
            if error.len() > MAX_ERROR {
                let mut cut = MAX_ERROR;
                while !error.is_char_boundary(cut) {
                    cut -= 1;
                }
                error.truncate(cut);
            }
        }
    }
}
