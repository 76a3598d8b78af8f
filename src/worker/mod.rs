//! The worker runtime: registers with the coordinator, heartbeats, runs what it is assigned, and
//! reconnects on its own when the connection breaks.
//!
//! Attempts keep running across a reconnect; their results wait in an outbox until the
//! coordinator acknowledges them, and are sent again after a reconnect or when an acknowledgement
//! is slow, so a result finished while the coordinator was down is reported when it returns.

pub mod attempt;
pub mod data;
pub mod handlers;
mod held;
pub mod orphans;
mod outgoing;
mod register;
mod result;
pub mod scratch;
pub mod spot;
mod tail;

pub use handlers::{CallContext, CallError, Handlers, JsonHandler};

use crate::storage::s3::S3Settings;
use data::Stores;

use crate::job::{AttemptResult, Lease, LedgerId, Outputs};
use crate::net::auth::Secret;
use crate::net::connect::{self, ConnectError, Connection};
use crate::net::protocol::{Assignment, FromCoordinator, ManifestOrder, PoolMember, ToCoordinator};
use futures::SinkExt;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// Where, under the scratch directory, multipart uploads in flight are written down (see
/// [`crate::storage::uploads::UploadJournal`]).
pub const UPLOADS_DIR: &str = "uploads";

/// The first wait before reconnecting; doubled up to [`MAX_RECONNECT_DELAY`].
const FIRST_RECONNECT_DELAY: Duration = Duration::from_millis(100);
/// The longest wait between tries to reconnect.
pub const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(3);
/// The longest wait between tries when several coordinators are listed: one of them is taking
/// over, and a worker that comes back to the new leader soon loses little.
const MAX_RECONNECT_DELAY_OF_MANY: Duration = Duration::from_secs(1);
/// Silence from the coordinator, in heartbeats, after which a worker given several coordinators
/// leaves it for the others (it answers every heartbeat; one that does not is frozen or cut
/// off, and another may lead by now); never less than [`MIN_SILENCE`].
const SILENT_HEARTBEATS: u32 = 5;
/// The shortest silence a worker leaves a coordinator for.
const MIN_SILENCE: Duration = Duration::from_secs(3);
/// Results per frame, and bytes: a frame of results stays far below the coordinator's size limit
/// (16 MiB by default), whatever the results hold.
const RESULTS_PER_FRAME: usize = 256;
const RESULT_FRAME_BYTES: usize = 4 * 1024 * 1024 + 64 * 1024;
/// A result not acknowledged this long after it was sent is sent again.
const RESEND_AFTER: Duration = Duration::from_secs(5);

/// How a worker runs.
#[derive(Clone)]
pub struct WorkerConfig {
    /// The coordinator's address (`host:port`), or several separated by commas: the worker
    /// registers with the one that leads.
    pub coordinator: String,
    /// The name people see.
    pub name: String,
    /// How many slots it offers.
    pub slots: u32,
    /// Labels jobs may require.
    pub labels: Vec<String>,
    /// Where attempts get their scratch directories.
    pub scratch_dir: PathBuf,
    /// The worker role's secret.
    pub secret: Option<Secret>,
    /// The call handlers it offers.
    pub handlers: Handlers,
    /// How to reach S3 for job data.
    pub s3: S3Settings,
    /// TLS to the coordinator, if it speaks TLS.
    pub tls: Option<crate::net::tls::ClientTls>,
    /// The pool and machine it was started for, when the fleet started it (`--pool`,
    /// `--machine-id`).
    pub member: Option<PoolMember>,
}

/// Why a worker stopped for good.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The coordinator refused it (a wrong token, a bad registration), or the address is not a
    /// coordinator's protocol port; retrying cannot help.
    #[error("{0}")]
    Refused(String),
    /// The scratch directory is unusable.
    #[error("cannot use scratch directory {path}: {source}")]
    Scratch {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

struct RunningAttempt {
    job: crate::job::JobId,
    attempt: u32,
    slots: u32,
    /// The coordinator's epoch it was handed out in, carried back with it.
    epoch: u64,
    kill: Option<oneshot::Sender<()>>,
}

struct Outgoing {
    result: AttemptResult,
    sent_at: Option<Instant>,
}

/// An ended attempt, with where its job's outputs go (and in which ledger).
type Finished = (AttemptResult, Option<(Outputs, LedgerId)>);

/// The worker's state across connections.
struct Worker {
    config: WorkerConfig,
    /// Its own place in the scratch directory, removed when it stops.
    scratch: scratch::Scratch,
    running: HashMap<Lease, RunningAttempt>,
    /// Assignments waiting for slots.
    held: held::Held,
    /// Attempts started since the coordinator was last told.
    started: Vec<Lease>,
    /// Held assignments handed back since the coordinator was last told.
    released: Vec<Lease>,
    outbox: BTreeMap<Lease, Outgoing>,
    /// Results in the outbox not sent yet, in the order they came.
    unsent: Vec<Lease>,
    /// Where each attempt's outputs go, for the manifest once its result is recorded.
    outputs_of: HashMap<Lease, (Outputs, LedgerId)>,
    /// Confirmations of written manifests, for the coordinator.
    written_tx: mpsc::UnboundedSender<Lease>,
    written_rx: mpsc::UnboundedReceiver<Lease>,
    /// Manifests being written; awaited before the worker exits.
    publishing: tokio::task::JoinSet<()>,
    stores: Stores,
    finished_tx: mpsc::UnboundedSender<Finished>,
    finished_rx: mpsc::UnboundedReceiver<Finished>,
    draining: bool,
    /// How often to heartbeat, as the coordinator asked at registration.
    heartbeat: Duration,
    /// The most bytes of a result the coordinator keeps, as it said at registration (and at
    /// most what this worker's frames carry): an attempt with a longer one fails.
    max_result_bytes: usize,
    /// Drawn once per run: the coordinator tells this worker coming back from another process
    /// of the same name by it.
    instance: u64,
    /// Whether several coordinators are listed: then a silent one is left for the others.
    several: bool,
    /// The coordinator whose session ended last: dialled last next time, so a frozen one (which
    /// takes connections and never answers) does not hold up finding the new leader.
    last_lost: Option<String>,
}

/// Why a session with the coordinator ended.
enum SessionEnd {
    /// The connection broke; reconnect.
    Broken(String),
    /// Drained: nothing runs and every result is acknowledged.
    Drained,
}

/// Runs a worker until `shutdown` resolves and its running attempts are finished and reported.
pub async fn run(
    config: WorkerConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), WorkerError> {
    // What a worker killed on this machine left running goes before this one takes work (and
    // before the directories it ran in).
    let swept = tokio::task::spawn_blocking(orphans::sweep)
        .await
        .unwrap_or(0);
    if swept > 0 {
        tracing::warn!(
            processes = swept,
            "killed processes left running by workers that died"
        );
    }
    let scratch = scratch::Scratch::take(&config.scratch_dir)
        .await
        .map_err(|source| WorkerError::Scratch {
            path: config.scratch_dir.clone(),
            source,
        })?;
    let (finished_tx, finished_rx) = mpsc::unbounded_channel();
    let (written_tx, written_rx) = mpsc::unbounded_channel();
    let stores = Stores::for_worker(config.s3.clone(), &config.scratch_dir.join(UPLOADS_DIR)).await;
    let mut worker = Worker {
        held: held::Held::new(config.slots),
        config,
        scratch,
        stores,
        running: HashMap::new(),
        started: Vec::new(),
        released: Vec::new(),
        outbox: BTreeMap::new(),
        unsent: Vec::new(),
        outputs_of: HashMap::new(),
        publishing: tokio::task::JoinSet::new(),
        written_tx,
        written_rx,
        finished_tx,
        finished_rx,
        draining: false,
        heartbeat: Duration::from_secs(1),
        max_result_bytes: crate::job::DEFAULT_MAX_RESULT_BYTES,
        instance: rand::random(),
        several: false,
        last_lost: None,
    };
    tokio::pin!(shutdown);
    worker.several = match crate::net::address::parse_list(&worker.config.coordinator) {
        Ok(list) => list.len() > 1,
        Err(error) => return Err(WorkerError::Refused(error)),
    };
    let max_delay = if worker.several {
        MAX_RECONNECT_DELAY_OF_MANY
    } else {
        MAX_RECONNECT_DELAY
    };
    let mut delay = FIRST_RECONNECT_DELAY;
    let mut announced_failure: Option<String> = None;
    loop {
        if worker.draining && worker.running.is_empty() && worker.outbox.is_empty() {
            while worker.publishing.join_next().await.is_some() {}
            return Ok(());
        }
        match worker.connect().await {
            Ok((connection, coordinator)) => {
                if announced_failure.take().is_some() {
                    tracing::info!(%coordinator, "reconnected");
                }
                delay = FIRST_RECONNECT_DELAY;
                match worker.session(connection, &mut shutdown).await {
                    SessionEnd::Drained => {
                        // The manifests of recorded results are part of those results.
                        while worker.publishing.join_next().await.is_some() {}
                        return Ok(());
                    }
                    SessionEnd::Broken(reason) => {
                        tracing::warn!(%reason, running = worker.running.len(), "connection to the coordinator lost, reconnecting");
                        worker.last_lost = Some(coordinator);
                    }
                }
            }
            Err(ConnectError::Refused(reason)) => return Err(WorkerError::Refused(reason)),
            Err(error) if error.is_permanent() => {
                return Err(WorkerError::Refused(error.to_string()))
            }
            Err(error) => {
                // Each new reason is said once, not every try.
                let reason = error.to_string();
                if announced_failure.as_deref() != Some(reason.as_str()) {
                    tracing::warn!(error = %reason, "cannot connect, retrying with backoff");
                    announced_failure = Some(reason);
                }
            }
        }
        // Wait before the next try, still collecting results and watching for shutdown.
        let wait = tokio::time::sleep(delay);
        tokio::pin!(wait);
        loop {
            tokio::select! {
                _ = &mut wait => break,
                Some((result, outputs)) = worker.finished_rx.recv() => worker.finished(result, outputs),
                _ = &mut shutdown, if !worker.draining => {
                    tracing::info!("draining: finishing running jobs, taking no new ones");
                    worker.draining = true;
                }
            }
        }
        delay = (delay * 2).min(max_delay);
    }
}

impl Worker {
    fn finished(&mut self, mut result: AttemptResult, outputs: Option<(Outputs, LedgerId)>) {
        // Sent as the coordinator keeps it: the end of the output, the start of the error.
        result.bound();
        if let (Some(outputs), false) = (outputs, result.outputs.is_empty()) {
            self.outputs_of.insert(result.lease, outputs);
        }
        if let Some(ended) = self.running.remove(&result.lease) {
            self.held.ended(ended.slots);
            self.start_held();
        }
        self.unsent.push(result.lease);
        self.outbox.insert(
            result.lease,
            Outgoing {
                result,
                sent_at: None,
            },
        );
    }

    /// Starts the held assignments that have their slots now.
    fn start_held(&mut self) {
        for (assignment, slots) in self.held.startable() {
            self.started.push(assignment.lease);
            self.start(assignment, slots);
        }
    }

    /// The coordinator recorded this attempt's result: its outputs become the job's.
    fn recorded(&mut self, lease: Lease) {
        let outgoing = self.outbox.remove(&lease);
        let outputs = self.outputs_of.remove(&lease);
        let (Some(outgoing), Some((outputs, ledger))) = (outgoing, outputs) else {
            return;
        };
        if outgoing.result.outputs.is_empty() {
            return;
        }
        self.write_manifest(ManifestOrder {
            job: outgoing.result.job,
            lease,
            outputs,
            objects: outgoing.result.outputs,
            ledger,
        });
    }

    /// Writes a recorded attempt's manifest and confirms it to the coordinator; an unconfirmed
    /// one is asked of some worker again, so a failure here only costs time.
    fn write_manifest(&mut self, order: ManifestOrder) {
        while self.publishing.try_join_next().is_some() {}
        let stores = self.stores.clone();
        let written = self.written_tx.clone();
        self.publishing.spawn(async move {
            match data::publish_manifest(&stores, &order).await {
                Ok(()) => {
                    let _ = written.send(order.lease);
                }
                Err(error) => {
                    tracing::error!(job = order.job, %error, "cannot write the outputs manifest")
                }
            }
        });
    }

    fn start(&mut self, assignment: Assignment, slots: u32) {
        let (kill, killed) = oneshot::channel();
        self.running.insert(
            assignment.lease,
            RunningAttempt {
                job: assignment.job,
                attempt: assignment.attempt,
                epoch: assignment.epoch,
                slots,
                kill: Some(kill),
            },
        );
        let finished = self.finished_tx.clone();
        let around = attempt::Surroundings {
            scratch_root: self.scratch.dir().to_path_buf(),
            handlers: self.config.handlers.clone(),
            stores: self.stores.clone(),
            max_result_bytes: self.max_result_bytes,
        };
        let (lease, job, number) = (assignment.lease, assignment.job, assignment.attempt);
        let (ledger, epoch) = (assignment.ledger, assignment.epoch);
        tokio::spawn(async move {
            let started_at_ms = crate::job::now_ms();
            // A handler that panics must still end its attempt, or its job would run forever.
            let attempt = tokio::spawn(attempt::run_for_outputs(assignment, around, killed));
            let done = attempt
                .await
                .map(|(result, outputs)| (result, outputs.map(|outputs| (outputs, ledger))));
            let done = done.unwrap_or_else(|failure| {
                let result = AttemptResult {
                    lease,
                    job,
                    attempt: number,
                    outcome: crate::job::Outcome::Failed,
                    exit_code: None,
                    started_at_ms,
                    duration_ms: crate::job::now_ms().saturating_sub(started_at_ms),
                    output_tail: String::new(),
                    result: Vec::new(),
                    error: Some(format!("the job's handler panicked: {failure}")),
                    outputs: Vec::new(),
                    permanent: false,
                    epoch,
                };
                (result, None)
            });
            let _ = finished.send(done);
        });
    }

    async fn session(
        &mut self,
        mut connection: Connection,
        shutdown: &mut (impl std::future::Future<Output = ()> + Unpin),
    ) -> SessionEnd {
        let end = self.serve(&mut connection, shutdown).await;
        // What this registration held and never started is handed back with it: the coordinator
        // takes it back as never started, and it must not start here under another.
        let dropped = self.held.release_all();
        self.started.clear();
        self.released.clear();
        if !dropped.is_empty() {
            tracing::info!(
                jobs = dropped.len(),
                "held jobs left to the coordinator with the session"
            );
        }
        end
    }

    async fn serve(
        &mut self,
        connection: &mut Connection,
        shutdown: &mut (impl std::future::Future<Output = ()> + Unpin),
    ) -> SessionEnd {
        if self.draining {
            if let Err(error) = connection.send(ToCoordinator::Draining).await {
                return SessionEnd::Broken(error.to_string());
            }
        }
        let mut heartbeat = tokio::time::interval(self.heartbeat);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let silence = (self.heartbeat * SILENT_HEARTBEATS).max(MIN_SILENCE);
        // Silence is counted from the oldest heartbeat sent and not answered since: a worker
        // that stalled itself (starved, or blocked sending to a slow reader) sent none.
        let mut unanswered_since: Option<Instant> = None;
        // Results sent and not acknowledged are looked at again on the heartbeat's tick.
        let mut resend = false;
        loop {
            if let Err(error) = self.tell(connection, std::mem::take(&mut resend)).await {
                return SessionEnd::Broken(error);
            }
            while self.publishing.try_join_next().is_some() {}
            if self.draining
                && self.running.is_empty()
                && self.held.is_empty()
                && self.outbox.is_empty()
                && self.publishing.is_empty()
            {
                tracing::info!("drained: every job finished and reported");
                return SessionEnd::Drained;
            }
            tokio::select! {
                // Messages first: one already read must count before a heartbeat's tick.
                biased;
                message = connect::next(connection) => match message.inspect(|_| unanswered_since = None) {
                    Ok(FromCoordinator::Assign(assignments)) => {
                        self.held.push(assignments);
                        self.start_held();
                        if self.draining {
                            // Crossed the word that it drains: what would wait goes back.
                            self.released.extend(self.held.release_all());
                        }
                    }
                    Ok(FromCoordinator::Kill(leases)) => {
                        for lease in &leases {
                            if let Some(kill) = self.running.get_mut(lease).and_then(|attempt| attempt.kill.take()) {
                                let _ = kill.send(());
                            }
                        }
                        self.released.extend(self.held.release(&leases));
                    }
                    Ok(FromCoordinator::Release(leases)) => {
                        self.released.extend(self.held.release(&leases));
                    }
                    Ok(FromCoordinator::Acked(leases)) => {
                        for lease in leases {
                            self.outbox.remove(&lease);
                            self.outputs_of.remove(&lease);
                        }
                    }
                    Ok(FromCoordinator::Recorded(leases)) => {
                        for lease in leases {
                            self.recorded(lease);
                        }
                    }
                    Ok(FromCoordinator::WriteManifests(orders)) => {
                        for order in orders {
                            self.write_manifest(order);
                        }
                    }
                    Ok(FromCoordinator::Drain { reason }) => {
                        if !self.draining {
                            if let Err(error) = self.drain(connection, &format!("the coordinator asked: {reason}")).await {
                                return SessionEnd::Broken(error);
                            }
                        }
                    }
                    Ok(FromCoordinator::Refused { reason, .. }) => return SessionEnd::Broken(format!("coordinator closed the session: {reason}")),
                    Ok(_) => {}
                    Err(reason) => return SessionEnd::Broken(reason),
                },
                Some(lease) = self.written_rx.recv() => {
                    let mut written = vec![lease];
                    while let Ok(more) = self.written_rx.try_recv() {
                        written.push(more);
                    }
                    if let Err(error) = connection.send(ToCoordinator::ManifestsWritten(written)).await {
                        return SessionEnd::Broken(error.to_string());
                    }
                }
                Some((result, outputs)) = self.finished_rx.recv() => {
                    self.finished(result, outputs);
                    // Gather whatever else finished meanwhile into the same frame.
                    while let Ok((more, outputs)) = self.finished_rx.try_recv() {
                        self.finished(more, outputs);
                    }
                }
                _ = heartbeat.tick() => {
                    let waited = unanswered_since.map_or(Duration::ZERO, |since| since.elapsed());
                    if self.several && waited > silence {
                        return SessionEnd::Broken(format!(
                            "the coordinator said nothing for {:.1}s (a leader answers every \
                             heartbeat): looking for the leader among the others",
                            waited.as_secs_f64()
                        ));
                    }
                    if let Err(error) = connection.send(ToCoordinator::Heartbeat).await {
                        return SessionEnd::Broken(error.to_string());
                    }
                    unanswered_since.get_or_insert_with(Instant::now);
                    resend = true;
                }
                _ = &mut *shutdown, if !self.draining => {
                    if let Err(error) = self.drain(connection, "asked to stop").await {
                        return SessionEnd::Broken(error);
                    }
                }
            }
        }
    }

    /// Takes nothing new from now on: held jobs go back at once, before the word that it
    /// drains; what runs finishes and is reported, and then the worker exits.
    async fn drain(&mut self, connection: &mut Connection, reason: &str) -> Result<(), String> {
        tracing::info!(running = self.running.len(), %reason, "draining: finishing running jobs, taking no new ones");
        self.draining = true;
        let held = self.held.release_all();
        if !held.is_empty() {
            connection
                .send(ToCoordinator::Released(held))
                .await
                .map_err(|error| error.to_string())?;
        }
        connection
            .send(ToCoordinator::Draining)
            .await
            .map_err(|error| error.to_string())
    }
}

/// Results in frames of at most [`RESULTS_PER_FRAME`] results and [`RESULT_FRAME_BYTES`].
fn frames_of(results: Vec<AttemptResult>) -> Vec<Vec<AttemptResult>> {
    let mut frames: Vec<Vec<AttemptResult>> = Vec::new();
    let mut bytes = 0;
    for result in results {
        let size = result.encoded_size();
        let full = frames.last().is_none_or(|frame| {
            frame.len() == RESULTS_PER_FRAME || bytes + size > RESULT_FRAME_BYTES
        });
        if full {
            frames.push(Vec::new());
            bytes = 0;
        }
        bytes += size;
        if let Some(frame) = frames.last_mut() {
            frame.push(result);
        }
    }
    frames
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{Outcome, OutputObject};
    use crate::net::codec::DEFAULT_MAX_FRAME;

    fn result(lease: Lease, objects: usize) -> AttemptResult {
        AttemptResult {
            lease,
            job: lease,
            attempt: 1,
            outcome: Outcome::Succeeded,
            exit_code: Some(0),
            started_at_ms: 0,
            duration_ms: 0,
            output_tail: String::new(),
            result: Vec::new(),
            error: None,
            outputs: (0..objects)
                .map(|index| OutputObject {
                    url: format!("s3://bucket/{}/{index}", "p".repeat(1000)),
                    size: 1,
                    etag: "e".repeat(64),
                })
                .collect(),
            permanent: false,
            epoch: 1,
        }
    }

    #[test]
    fn frames_of_results_stay_below_their_bytes_and_count() {
        // Forty results of a large manifest each, three hundred small ones.
        let mut results: Vec<AttemptResult> = (0..40).map(|lease| result(lease, 3_000)).collect();
        results.extend((40..340).map(|lease| result(lease, 0)));
        let frames = frames_of(results);
        let mut seen = 0;
        for frame in &frames {
            let bytes: usize = frame.iter().map(AttemptResult::encoded_size).sum();
            assert!(frame.len() <= RESULTS_PER_FRAME);
            assert!(bytes <= RESULT_FRAME_BYTES || frame.len() == 1, "{bytes}");
            let encoded = postcard::to_allocvec(&ToCoordinator::Results(frame.clone())).unwrap();
            assert!(
                encoded.len() <= bytes + 16,
                "the estimate is an upper bound"
            );
            seen += frame.len();
        }
        assert_eq!(seen, 340, "nothing lost, nothing doubled");
        assert!(frames.len() >= 30);
    }

    /// A result at every limit at once: its bytes, its tail, its error and its manifest.
    fn largest(lease: Lease, result_bytes: usize) -> AttemptResult {
        let mut largest = result(lease, 0);
        largest.result = vec![0xff; result_bytes];
        largest.output_tail = "t".repeat(crate::job::MAX_OUTPUT_TAIL);
        largest.error = Some("e".repeat(crate::job::MAX_ERROR));
        let object = OutputObject {
            url: format!("s3://bucket/{}", "p".repeat(1000)),
            size: u64::MAX,
            etag: "e".repeat(64),
        };
        let each = crate::job::object_size(&object.url, &object.etag);
        largest.outputs = vec![object; crate::job::MAX_MANIFEST_BYTES / each];
        largest
    }

    #[test]
    fn frames_of_results_of_a_mebibyte_stay_within_the_frame_limit() {
        let mebibyte = crate::job::DEFAULT_MAX_RESULT_BYTES;
        let results: Vec<AttemptResult> = (0..20)
            .map(|lease| {
                let mut full = result(lease, 0);
                full.result = vec![lease as u8; mebibyte];
                full.output_tail = "t".repeat(crate::job::MAX_OUTPUT_TAIL);
                full
            })
            .collect();
        let frames = frames_of(results.clone());
        assert!(frames.len() >= 5, "several results share a frame, not all");
        let mut sent = Vec::new();
        for frame in frames {
            let mut bytes = bytes::BytesMut::new();
            crate::net::codec::encode_frame(
                &ToCoordinator::Results(frame.clone()),
                &mut bytes,
                RESULT_FRAME_BYTES + 16,
            )
            .expect("a frame of results fits its own limit, far below the frame limit");
            sent.extend(frame);
        }
        assert!(sent == results, "every result whole, in order");
    }

    #[test]
    fn the_largest_result_a_coordinator_allows_fits_one_frame() {
        let most = crate::job::most_result_bytes(DEFAULT_MAX_FRAME);
        let mut frames = frames_of(vec![largest(1, most), largest(2, most)]);
        assert_eq!(frames.len(), 2, "one each");
        let mut bytes = bytes::BytesMut::new();
        crate::net::codec::encode_frame(
            &ToCoordinator::Results(frames.remove(0)),
            &mut bytes,
            DEFAULT_MAX_FRAME,
        )
        .expect("the largest result fits the largest frame");
        assert!(
            bytes.len() > DEFAULT_MAX_FRAME - 64 * 1024,
            "the bound is close"
        );
    }
}
