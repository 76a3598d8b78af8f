//! The journal: the ledger's durable store, an SQLite database in WAL mode.
//!
//! All writes go through one thread that commits whatever has arrived together in one
//! transaction (group commit) and calls each writer back once it is on disk. Reads run on a
//! second connection and thread, so a long query never delays a commit. Nothing here runs on an
//! actor's event loop.
//!
//! Tables (open the file with any SQLite tool): `batches`, `jobs` (one row per job; the finished
//! ones are the completion log), `attempts` (attempts that ended without being the job's result),
//! and `meta` (the coordinator's epoch).

use crate::job::{BatchId, JobId, JobState, Lease, SpecBytes};
use crate::metrics::Metrics;
use rusqlite::{params, Connection, OptionalExtension};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;

/// Most writes committed in one transaction; bounds the latency of the first of a group.
const MAX_GROUP: usize = 4096;

/// The database file inside the data directory.
pub const LEDGER_FILE: &str = "ledger.sqlite";
/// Logged when the ledger's guard refuses to record a finished job again: that must never be
/// needed, and the chaos suite counts it.
pub const SECOND_RECORD_REFUSED: &str = "job already finished in the ledger, second record refused";

/// Why the journal failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum JournalError {
    /// SQLite reported an error (the disk is full, the file is damaged, ...).
    #[error("ledger database error: {0}")]
    Database(Arc<rusqlite::Error>),
    /// A stored job spec could not be decoded.
    #[error("ledger holds an unreadable job spec for job {0}")]
    CorruptSpec(JobId),
    /// The data directory could not be created.
    #[error("cannot create data directory {path}: {reason}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The journal thread is gone (the coordinator is shutting down).
    #[error("ledger is shut down")]
    Closed,
}

impl From<rusqlite::Error> for JournalError {
    fn from(error: rusqlite::Error) -> Self {
        JournalError::Database(Arc::new(error))
    }
}

/// One durable change.
#[derive(Debug, Clone)]
pub enum Write {
    /// A new batch and its jobs, ids `first_job..first_job + jobs.len()`.
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
    },
    /// A job reached a terminal state: its work order.
    Finish(Box<WorkOrder>),
    /// An attempt ended without being the job's result.
    Attempt(Box<AttemptRow>),
    /// Successful results that arrived after a job's first, as (job, lease): counted, never
    /// recorded; a resend of the recorded attempt's own result is not counted.
    Duplicates(Vec<(JobId, Lease)>),
    /// Jobs whose recorded attempt's manifest a worker confirmed writing.
    ManifestsWritten(Vec<JobId>),
    /// Jobs back to pending with their failures forgotten (a retry).
    Reopen {
        /// The jobs.
        jobs: Vec<JobId>,
    },
}

/// The record of a finished job.
#[derive(Debug, Clone)]
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
}

/// An attempt that ended without being recorded as its job's result.
#[derive(Debug, Clone)]
pub struct AttemptRow {
    /// The job.
    pub job: JobId,
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

/// What the ledger finds on disk at startup.
#[derive(Debug, Default)]
pub struct Replay {
    /// This run's epoch: leases of earlier runs can never collide with this run's.
    pub epoch: u64,
    /// Every batch with its counts by state (running counts as pending).
    pub batches: Vec<ReplayedBatch>,
    /// Jobs not yet finished.
    pub unfinished: Vec<ReplayedJob>,
    /// The next free job id.
    pub next_job: JobId,
    /// Recorded attempts whose manifest no worker has confirmed writing.
    pub unpublished: Vec<Unpublished>,
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

/// A batch as found on disk.
#[derive(Debug)]
pub struct ReplayedBatch {
    /// Its id.
    pub id: BatchId,
    /// Its name.
    pub name: String,
    /// When it was submitted.
    pub submitted_at_ms: u64,
    /// How many jobs it has.
    pub total: u64,
    /// Jobs finished, by state.
    pub succeeded: u64,
    /// Jobs failed.
    pub failed: u64,
    /// Jobs cancelled.
    pub cancelled: u64,
    /// When its earliest recorded attempt started.
    pub started_at_ms: Option<u64>,
    /// When its last job finished.
    pub finished_at_ms: Option<u64>,
}

/// An unfinished job as found on disk.
#[derive(Debug)]
pub struct ReplayedJob {
    /// Its id.
    pub id: JobId,
    /// Its batch.
    pub batch: BatchId,
    /// What it runs.
    pub spec: SpecBytes,
    /// Attempts started before.
    pub attempts: u32,
    /// Attempts lost before.
    pub lost_attempts: u32,
    /// Attempts failed before.
    pub failures: u32,
    /// When it was submitted.
    pub queued_at_ms: u64,
}

type Callback = Box<dyn FnOnce(Result<(), JournalError>) + Send>;
type ReadTask = Box<dyn FnOnce(&Connection) + Send>;

struct Commit {
    writes: Vec<Write>,
    done: Callback,
}

/// A handle on the journal's threads; cheap to clone.
#[derive(Clone)]
pub struct Journal {
    writes: mpsc::Sender<Commit>,
    reads: mpsc::Sender<ReadTask>,
}

impl Journal {
    /// Opens (or creates) the ledger in `data_dir`, replays it, and starts the journal threads.
    pub fn open(data_dir: &Path, metrics: Arc<Metrics>) -> Result<(Journal, Replay), JournalError> {
        std::fs::create_dir_all(data_dir).map_err(|error| JournalError::DataDir {
            path: data_dir.to_path_buf(),
            reason: error.to_string(),
        })?;
        let path = data_dir.join(LEDGER_FILE);
        let mut writer = Connection::open(&path)?;
        configure(&writer)?;
        create_schema(&writer)?;
        let replay = replay(&mut writer)?;
        let reader = Connection::open(&path)?;
        reader.busy_timeout(std::time::Duration::from_secs(5))?;

        let (write_tx, write_rx) = mpsc::channel::<Commit>();
        std::thread::Builder::new()
            .name("drover-journal".into())
            .spawn(move || write_loop(writer, write_rx, &metrics))
            .map_err(|error| JournalError::DataDir {
                path: path.clone(),
                reason: format!("cannot start the journal thread: {error}"),
            })?;
        let (read_tx, read_rx) = mpsc::channel::<ReadTask>();
        std::thread::Builder::new()
            .name("drover-journal-reads".into())
            .spawn(move || {
                for task in read_rx {
                    task(&reader);
                }
            })
            .map_err(|error| JournalError::DataDir {
                path: path.clone(),
                reason: format!("cannot start the journal reader thread: {error}"),
            })?;
        Ok((
            Journal {
                writes: write_tx,
                reads: read_tx,
            },
            replay,
        ))
    }

    /// Queues writes for the next group commit; `done` runs on the journal thread once they are
    /// on disk, or failed.
    pub fn commit(
        &self,
        writes: Vec<Write>,
        done: impl FnOnce(Result<(), JournalError>) + Send + 'static,
    ) {
        let commit = Commit {
            writes,
            done: Box::new(done),
        };
        if let Err(mpsc::SendError(commit)) = self.writes.send(commit) {
            (commit.done)(Err(JournalError::Closed));
        }
    }

    /// Runs a query on the reader connection.
    pub async fn read<T: Send + 'static>(
        &self,
        query: impl FnOnce(&Connection) -> Result<T, JournalError> + Send + 'static,
    ) -> Result<T, JournalError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task: ReadTask = Box::new(move |conn| {
            let _ = tx.send(query(conn));
        });
        self.reads.send(task).map_err(|_| JournalError::Closed)?;
        rx.await.map_err(|_| JournalError::Closed)?
    }
}

fn configure(conn: &Connection) -> Result<(), JournalError> {
    // WAL with synchronous=FULL: every commit is fsynced before it returns.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(())
}

fn create_schema(conn: &Connection) -> Result<(), JournalError> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
         CREATE TABLE IF NOT EXISTS batches (
             id INTEGER PRIMARY KEY,
             name TEXT NOT NULL,
             submitted_at_ms INTEGER NOT NULL,
             total INTEGER NOT NULL);
         CREATE TABLE IF NOT EXISTS jobs (
             id INTEGER PRIMARY KEY,
             batch INTEGER NOT NULL,
             name TEXT,
             spec BLOB NOT NULL,
             state TEXT NOT NULL,
             attempts INTEGER NOT NULL DEFAULT 0,
             lost_attempts INTEGER NOT NULL DEFAULT 0,
             failures INTEGER NOT NULL DEFAULT 0,
             queued_at_ms INTEGER NOT NULL,
             worker TEXT,
             started_at_ms INTEGER,
             finished_at_ms INTEGER,
             duration_ms INTEGER,
             exit_code INTEGER,
             output_tail TEXT,
             error TEXT,
             duplicates INTEGER NOT NULL DEFAULT 0,
             lease INTEGER,
             outputs TEXT,
             manifest_written INTEGER NOT NULL DEFAULT 0);
         CREATE INDEX IF NOT EXISTS jobs_by_batch ON jobs (batch, id);
         CREATE INDEX IF NOT EXISTS jobs_unfinished ON jobs (id) WHERE state = 'pending';
         CREATE TABLE IF NOT EXISTS attempts (
             job INTEGER NOT NULL,
             attempt INTEGER NOT NULL,
             worker TEXT NOT NULL,
             outcome TEXT NOT NULL,
             started_at_ms INTEGER NOT NULL,
             finished_at_ms INTEGER NOT NULL,
             exit_code INTEGER,
             error TEXT);
         CREATE INDEX IF NOT EXISTS attempts_by_job ON attempts (job);",
    )?;
    Ok(())
}

fn replay(conn: &mut Connection) -> Result<Replay, JournalError> {
    let tx = conn.transaction()?;
    let epoch: u64 = tx
        .query_row("SELECT value FROM meta WHERE key = 'epoch'", [], |row| {
            row.get::<_, i64>(0)
        })
        .optional()?
        .map(|epoch| epoch as u64 + 1)
        .unwrap_or(1);
    tx.execute(
        "INSERT INTO meta (key, value) VALUES ('epoch', ?1)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        params![epoch as i64],
    )?;

    let mut batches = Vec::new();
    {
        let mut statement = tx.prepare(
            "SELECT b.id, b.name, b.submitted_at_ms, b.total,
                    COALESCE(SUM(j.state = 'succeeded'), 0),
                    COALESCE(SUM(j.state = 'failed'), 0),
                    COALESCE(SUM(j.state = 'cancelled'), 0),
                    MIN(j.started_at_ms), MAX(j.finished_at_ms)
             FROM batches b LEFT JOIN jobs j ON j.batch = b.id
             GROUP BY b.id ORDER BY b.id",
        )?;
        let rows = statement.query_map([], |row| {
            Ok(ReplayedBatch {
                id: row.get::<_, i64>(0)? as u64,
                name: row.get(1)?,
                submitted_at_ms: row.get::<_, i64>(2)? as u64,
                total: row.get::<_, i64>(3)? as u64,
                succeeded: row.get::<_, i64>(4)? as u64,
                failed: row.get::<_, i64>(5)? as u64,
                cancelled: row.get::<_, i64>(6)? as u64,
                started_at_ms: row.get::<_, Option<i64>>(7)?.map(|ms| ms as u64),
                finished_at_ms: row.get::<_, Option<i64>>(8)?.map(|ms| ms as u64),
            })
        })?;
        for batch in rows {
            batches.push(batch?);
        }
    }

    let mut unfinished = Vec::new();
    {
        let mut statement = tx.prepare(
            "SELECT id, batch, spec, attempts, lost_attempts, failures, queued_at_ms
             FROM jobs WHERE state = 'pending' ORDER BY id",
        )?;
        let mut rows = statement.query([])?;
        while let Some(row) = rows.next()? {
            let id = row.get::<_, i64>(0)? as u64;
            let spec =
                SpecBytes::from_bytes(row.get_ref(2)?.as_blob().map_err(rusqlite::Error::from)?);
            // Checked now, so a damaged ledger is reported at startup, not at assignment.
            spec.placement()
                .map_err(|_| JournalError::CorruptSpec(id))?;
            unfinished.push(ReplayedJob {
                id,
                batch: row.get::<_, i64>(1)? as u64,
                spec,
                attempts: row.get::<_, i64>(3)? as u32,
                lost_attempts: row.get::<_, i64>(4)? as u32,
                failures: row.get::<_, i64>(5)? as u32,
                queued_at_ms: row.get::<_, i64>(6)? as u64,
            });
        }
    }
    let next_job = tx.query_row("SELECT COALESCE(MAX(id), 0) + 1 FROM jobs", [], |row| {
        row.get::<_, i64>(0)
    })? as u64;
    let mut unpublished = Vec::new();
    {
        let mut statement = tx.prepare(
            "SELECT id, lease, spec, outputs FROM jobs
             WHERE outputs IS NOT NULL AND manifest_written = 0 AND lease IS NOT NULL",
        )?;
        let mut rows = statement.query([])?;
        while let Some(row) = rows.next()? {
            unpublished.push(Unpublished {
                job: row.get::<_, i64>(0)? as u64,
                lease: row.get::<_, i64>(1)? as u64,
                spec: SpecBytes::from_bytes(
                    row.get_ref(2)?.as_blob().map_err(rusqlite::Error::from)?,
                ),
                objects: row.get(3)?,
            });
        }
    }
    tx.commit()?;
    Ok(Replay {
        epoch,
        batches,
        unfinished,
        next_job,
        unpublished,
    })
}

fn write_loop(mut conn: Connection, commits: mpsc::Receiver<Commit>, metrics: &Metrics) {
    while let Ok(first) = commits.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match commits.try_recv() {
                Ok(next) => group.push(next),
                Err(_) => break,
            }
        }
        let began = std::time::Instant::now();
        let result = apply(&mut conn, &group);
        metrics.ledger_committed(began.elapsed());
        if let Err(error) = &result {
            tracing::error!(%error, writes = group.len(), "ledger commit failed");
        }
        for Commit { writes, done } in group {
            // Release the writes first: a writer may take its data back once told.
            drop(writes);
            done(result.clone());
        }
    }
}

fn apply(conn: &mut Connection, group: &[Commit]) -> Result<(), JournalError> {
    let tx = conn.transaction()?;
    {
        let mut insert_batch = tx.prepare_cached(
            "INSERT INTO batches (id, name, submitted_at_ms, total) VALUES (?1, ?2, ?3, ?4)",
        )?;
        let mut insert_job = tx.prepare_cached(
            "INSERT INTO jobs (id, batch, name, spec, state, queued_at_ms)
             VALUES (?1, ?2, ?3, ?4, 'pending', ?5)",
        )?;
        let mut finish = tx.prepare_cached(
            "UPDATE jobs SET state = ?2, worker = ?3, attempts = ?4, lost_attempts = ?5,
                 failures = ?6, started_at_ms = ?7, finished_at_ms = ?8, duration_ms = ?9,
                 exit_code = ?10, output_tail = ?11, error = ?12, lease = ?13, outputs = ?14
             WHERE id = ?1 AND state = 'pending'",
        )?;
        let mut attempt = tx.prepare_cached(
            "INSERT INTO attempts (job, attempt, worker, outcome, started_at_ms, finished_at_ms,
                 exit_code, error) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?;
        let mut count_attempt = tx.prepare_cached(
            "UPDATE jobs SET attempts = MAX(attempts, ?2),
                 lost_attempts = lost_attempts + (?3 = 'lost'),
                 failures = failures + (?3 IN ('failed', 'timed_out'))
             WHERE id = ?1",
        )?;
        let mut reopen = tx.prepare_cached(
            "UPDATE jobs SET state = 'pending', failures = 0, lost_attempts = 0, finished_at_ms = NULL,
                 error = NULL, lease = NULL
             WHERE id = ?1 AND state = 'failed'",
        )?;
        let mut duplicate = tx.prepare_cached(
            "UPDATE jobs SET duplicates = duplicates + 1 WHERE id = ?1 AND lease IS NOT ?2",
        )?;
        let mut manifest_written =
            tx.prepare_cached("UPDATE jobs SET manifest_written = 1 WHERE id = ?1")?;
        for commit in group {
            for write in &commit.writes {
                match write {
                    Write::Submit {
                        batch,
                        name,
                        submitted_at_ms,
                        first_job,
                        jobs,
                    } => {
                        insert_batch.execute(params![
                            *batch as i64,
                            name,
                            *submitted_at_ms as i64,
                            jobs.len() as i64
                        ])?;
                        for (offset, (name, spec)) in jobs.iter().enumerate() {
                            insert_job.execute(params![
                                (first_job + offset as u64) as i64,
                                *batch as i64,
                                name,
                                spec.as_bytes(),
                                *submitted_at_ms as i64
                            ])?;
                        }
                    }
                    Write::Finish(order) => {
                        let changed = finish.execute(params![
                            order.job as i64,
                            order.state.as_str(),
                            order.worker,
                            order.attempts,
                            order.lost_attempts,
                            order.failures,
                            order.started_at_ms.map(|ms| ms as i64),
                            order.finished_at_ms as i64,
                            order.duration_ms.map(|ms| ms as i64),
                            order.exit_code,
                            order.output_tail,
                            order.error,
                            order.lease.map(|lease| lease as i64),
                            order.outputs
                        ])?;
                        if changed != 1 {
                            // The guard against recording a job twice held; say so loudly.
                            tracing::error!(job = order.job, "{SECOND_RECORD_REFUSED}");
                        }
                    }
                    Write::Attempt(row) => {
                        attempt.execute(params![
                            row.job as i64,
                            row.attempt,
                            row.worker,
                            row.outcome,
                            row.started_at_ms as i64,
                            row.finished_at_ms as i64,
                            row.exit_code,
                            row.error
                        ])?;
                        count_attempt.execute(params![row.job as i64, row.attempt, row.outcome])?;
                    }
                    Write::Reopen { jobs } => {
                        for job in jobs {
                            reopen.execute(params![*job as i64])?;
                        }
                    }
                    Write::ManifestsWritten(jobs) => {
                        for job in jobs {
                            manifest_written.execute(params![*job as i64])?;
                        }
                    }
                    Write::Duplicates(jobs) => {
                        for (job, lease) in jobs {
                            duplicate.execute(params![*job as i64, *lease as i64])?;
                        }
                    }
                }
            }
        }
    }
    tx.commit()?;
    Ok(())
}

/// Encodes a lease from the coordinator's epoch and a counter: leases of different runs differ.
pub fn lease(epoch: u64, counter: u64) -> Lease {
    (epoch << 40) | (counter & ((1 << 40) - 1))
}
