//! The ledger on SQLite: one file in the data directory, in WAL mode, fsynced at every commit.
//!
//! All writes go through one thread that commits whatever has arrived together in one
//! transaction (group commit) and calls each writer back once it is on disk. Reads run on a
//! second connection and thread, so a long query never delays a commit. Nothing here runs on an
//! actor's event loop.
//!
//! Tables (open the file with any SQLite tool): `batches`, `jobs` (one row per job; the finished
//! ones are the completion log, each with its result and its cursor in recording order),
//! `attempts` (attempts that ended without being the job's result), and `meta` (the
//! coordinator's epoch, the ids reserved, the highest cursor drawn that no job has). Their version and migrations are in [`schema`].

mod apply;
pub(crate) mod queries;
mod replay;
pub mod schema;
#[cfg(test)]
mod tests;

use crate::job::{BatchId, JobId, Lease};
use crate::metrics::Metrics;
use crate::status::{AttemptRecord, Completion, JobInfo, Resulted};
use crate::storage::group::{self, WriterTask};
use crate::storage::store::{
    Change, CommitDone, CompletionFilter, FailedJob, FinishedJob, JobFilter, LedgerStore, Read,
    Replay, StoreError,
};
use rusqlite::{Connection, OpenFlags};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;

pub use apply::apply;
pub use replay::replay;

/// The database file inside the data directory.
pub const LEDGER_FILE: &str = "ledger.sqlite";
/// Logged when the ledger's guard refuses to record a finished job again: that must never be
/// needed, and the chaos suite counts it.
pub const SECOND_RECORD_REFUSED: &str = "job already finished in the ledger, second record refused";

type ReadTask = Box<dyn FnOnce(&Connection) + Send>;

enum ReaderTask {
    Read(ReadTask),
    Close(std::sync::mpsc::Sender<()>),
}

/// The file a coordinator holds locked while it uses a data directory.
pub const LOCK_FILE: &str = "ledger.lock";

/// The ledger in an SQLite file; cheap to share.
pub struct SqliteStore {
    epoch: u64,
    writes: mpsc::Sender<WriterTask>,
    reads: mpsc::Sender<ReaderTask>,
    /// Held for as long as the store lives: one coordinator per data directory.
    _lock: std::fs::File,
}

impl SqliteStore {
    /// Opens the ledger in `data_dir` (creating a new one if there is none), brings its schema
    /// to this version, replays it, and starts the store's threads. A file that is not a whole
    /// drover ledger of this or an earlier version is refused with what is wrong with it; a new
    /// ledger is never started over an existing file.
    pub fn open(
        data_dir: &Path,
        metrics: Arc<Metrics>,
    ) -> Result<(SqliteStore, Replay), StoreError> {
        let path = data_dir.join(LEDGER_FILE);
        let refuse = |reason: String| StoreError::Open {
            path: path.clone(),
            reason,
        };
        std::fs::create_dir_all(data_dir).map_err(|error| StoreError::Open {
            path: data_dir.to_path_buf(),
            reason: format!("cannot create its directory: {error}"),
        })?;
        let lock = lock(data_dir)?;
        match std::fs::metadata(&path) {
            Ok(found) if found.len() == 0 => {
                return Err(refuse(
                    "it is empty (0 bytes), and a ledger never is: it was truncated. Restore it \
                     from a backup, or move it away to start a new ledger"
                        .into(),
                ))
            }
            Ok(_) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                if wal_path(&path).exists() {
                    return Err(refuse(format!(
                        "it is missing, but its write-ahead log {} is there: restore the ledger \
                         file, or move the log away to start a new ledger",
                        wal_path(&path).display()
                    )));
                }
                create(&path)?;
            }
            Err(error) => return Err(refuse(error.to_string())),
        }
        // Nothing is written before the file is known to be a ledger this drover can read: it
        // is looked at through a read-only connection first.
        let found = {
            let looking = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY)
                .map_err(|error| refuse(schema::describe(&error)))?;
            schema::inspect(&looking, &path)?
        };
        if found == schema::Found::New {
            return Err(refuse(
                "it is a database with no tables, not a ledger; move it away to start a new \
                 ledger"
                    .into(),
            ));
        }
        let mut writer = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_WRITE)
            .map_err(|error| refuse(schema::describe(&error)))?;
        configure(&writer).map_err(|error| refuse(schema::describe(&error)))?;
        schema::migrate(&mut writer, &path, found)?;
        let replay = replay(&mut writer).map_err(|error| match error {
            StoreError::Database(_) => refuse(format!("cannot read it back: {error}")),
            other => refuse(other.to_string()),
        })?;
        let reader = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_WRITE)
            .map_err(|error| refuse(schema::describe(&error)))?;
        reader
            .busy_timeout(std::time::Duration::from_secs(5))
            .map_err(|error| refuse(schema::describe(&error)))?;

        let (write_tx, write_rx) = mpsc::channel::<WriterTask>();
        let (read_tx, read_rx) = mpsc::channel::<ReaderTask>();
        let reader_tx = read_tx.clone();
        std::thread::Builder::new()
            .name("drover-ledger-reads".into())
            .spawn(move || read_loop(reader, read_rx))
            .map_err(|error| refuse(format!("cannot start the reader thread: {error}")))?;
        std::thread::Builder::new()
            .name("drover-ledger".into())
            .spawn(move || write_loop(writer, write_rx, reader_tx, &metrics))
            .map_err(|error| refuse(format!("cannot start the writer thread: {error}")))?;
        Ok((
            SqliteStore {
                epoch: replay.epoch,
                writes: write_tx,
                reads: read_tx,
                _lock: lock,
            },
            replay,
        ))
    }

    /// Runs a query on the reader connection.
    fn read<T: Send + 'static>(
        &self,
        query: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Read<T> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task: ReadTask = Box::new(move |conn| {
            let _ = tx.send(query(conn));
        });
        let sent = self.reads.send(ReaderTask::Read(task));
        Box::pin(async move {
            sent.map_err(|_| StoreError::Closed)?;
            rx.await.map_err(|_| StoreError::Closed)?
        })
    }
}

impl LedgerStore for SqliteStore {
    fn epoch(&self) -> u64 {
        self.epoch
    }

    fn commit(&self, changes: Vec<Change>, done: CommitDone) {
        if let Err(mpsc::SendError(WriterTask::Commit(_, done))) =
            self.writes.send(WriterTask::Commit(changes, done))
        {
            done(Err(StoreError::Closed));
        }
    }

    fn job(&self, id: JobId) -> Read<Option<Resulted<JobInfo>>> {
        self.read(move |conn| queries::job(conn, id))
    }

    fn completions(&self, filter: CompletionFilter) -> Read<Vec<Completion>> {
        self.read(move |conn| queries::completions(conn, filter))
    }

    fn history(&self, id: JobId) -> Read<Vec<AttemptRecord>> {
        self.read(move |conn| queries::history(conn, id))
    }

    fn jobs(&self, filter: JobFilter) -> Read<Vec<JobInfo>> {
        self.read(move |conn| queries::jobs(conn, filter))
    }

    fn failed_jobs(&self, batch: BatchId) -> Read<Vec<FailedJob>> {
        self.read(move |conn| queries::failed_jobs(conn, batch))
    }

    fn finished_job(&self, id: JobId) -> Read<Option<FinishedJob>> {
        self.read(move |conn| queries::finished_job(conn, id))
    }

    fn recorded_leases(&self, jobs: Vec<JobId>) -> Read<HashMap<JobId, Lease>> {
        self.read(move |conn| queries::recorded_leases(conn, &jobs))
    }

    fn close(&self) -> Read<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let sent = self.writes.send(WriterTask::Close(tx));
        Box::pin(async move {
            sent.map_err(|_| StoreError::Closed)?;
            rx.await.map_err(|_| StoreError::Closed)?
        })
    }
}

fn wal_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}

/// Takes the data directory's lock, or says who holds it: two coordinators on one ledger would
/// each take the other's acknowledged work for their own.
fn lock(data_dir: &Path) -> Result<std::fs::File, StoreError> {
    let path = data_dir.join(LOCK_FILE);
    let refuse = |reason: String| StoreError::Open {
        path: path.clone(),
        reason,
    };
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|error| refuse(format!("cannot open the data directory's lock: {error}")))?;
    use std::os::fd::AsRawFd;
    // SAFETY: flock(2) on a descriptor this function owns; no memory is involved.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let error = std::io::Error::last_os_error();
        return Err(refuse(if error.raw_os_error() == Some(libc::EWOULDBLOCK) {
            "another coordinator is using this data directory; stop it first, or give this one \
             another --data-dir"
                .into()
        } else {
            format!("cannot lock the data directory: {error}")
        }));
    }
    Ok(file)
}

/// Creates a new ledger: written under a temporary name and linked into place once its schema
/// is on disk, so a ledger file is never found empty or half made.
fn create(path: &Path) -> Result<(), StoreError> {
    let refuse = |reason: String| StoreError::Open {
        path: path.to_path_buf(),
        reason,
    };
    let mut staging = path.as_os_str().to_owned();
    staging.push(".new");
    let staging = PathBuf::from(staging);
    for leftover in [staging.clone(), wal_path(&staging)] {
        let _ = std::fs::remove_file(leftover);
    }
    {
        let mut conn =
            Connection::open(&staging).map_err(|error| refuse(schema::describe(&error)))?;
        configure(&conn).map_err(|error| refuse(schema::describe(&error)))?;
        schema::prepare(&mut conn, path)?;
        conn.close()
            .map_err(|(_, error)| refuse(schema::describe(&error)))?;
    }
    // Linked into place rather than renamed: a link never replaces a file that appeared
    // meanwhile.
    std::fs::File::open(&staging)
        .and_then(|file| file.sync_all())
        .and_then(|()| std::fs::hard_link(&staging, path))
        .and_then(|()| std::fs::remove_file(&staging))
        .and_then(|()| match path.parent() {
            Some(dir) => std::fs::File::open(dir).and_then(|dir| dir.sync_all()),
            None => Ok(()),
        })
        .map_err(|error| refuse(format!("cannot create it: {error}")))?;
    tracing::info!(path = %path.display(), "new ledger created");
    Ok(())
}

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    // WAL with synchronous=FULL: every commit is fsynced before it returns.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(())
}

fn read_loop(reader: Connection, tasks: mpsc::Receiver<ReaderTask>) {
    for task in tasks {
        match task {
            ReaderTask::Read(read) => read(&reader),
            ReaderTask::Close(closed) => {
                drop(reader);
                let _ = closed.send(());
                return;
            }
        }
    }
}

fn write_loop(
    mut conn: Connection,
    tasks: mpsc::Receiver<WriterTask>,
    reader: mpsc::Sender<ReaderTask>,
    metrics: &Metrics,
) {
    let mut next = None;
    loop {
        let first = match next.take() {
            Some(task) => task,
            None => match tasks.recv() {
                Ok(task) => task,
                Err(_) => return,
            },
        };
        let mut group = match first {
            WriterTask::Commit(changes, done) => vec![(changes, done)],
            WriterTask::Close(closed) => {
                // Stop the reader, checkpoint, close; whatever still comes is refused.
                let _ = closed.send(close(conn, &reader));
                tasks.into_iter().for_each(group::refuse);
                return;
            }
        };
        next = group::gather(&mut group, || tasks.try_recv().ok());
        let began = std::time::Instant::now();
        let result = apply(&mut conn, &group::changes(&group));
        metrics.ledger_committed(began.elapsed());
        let result = match result {
            Ok(applied) => {
                for job in applied.refused_second_records {
                    // The guard against recording a job twice held; say so loudly.
                    tracing::error!(job, "{SECOND_RECORD_REFUSED}");
                }
                Ok(())
            }
            Err(error) => {
                tracing::error!(%error, commits = group.len(), "ledger commit failed");
                Err(error)
            }
        };
        group::answer(group, &result);
    }
}

/// Closes the ledger tidily: the reader first, then a checkpoint folds the write-ahead log into
/// the file, and closing the last connection removes the log.
fn close(conn: Connection, reader: &mpsc::Sender<ReaderTask>) -> Result<(), StoreError> {
    let (closed_tx, closed_rx) = mpsc::channel();
    if reader.send(ReaderTask::Close(closed_tx)).is_ok() {
        let _ = closed_rx.recv();
    }
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    conn.close().map_err(|(_, error)| StoreError::from(error))?;
    tracing::info!("ledger closed");
    Ok(())
}
