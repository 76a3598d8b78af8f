//! The ledger on PostgreSQL: any number of coordinators on one database, one of them leading.
//!
//! `--ledger postgres://USER:PASS@HOST1,HOST2/DB` (see [`connect`] for the URL and TLS). A
//! coordinator campaigns through [`PgLeadership`]: it waits as a standby until the lease row is
//! free, takes it with the next epoch, replays the ledger and leads; a renewer keeps the lease,
//! using the database's clock. Every group commit renews it again inside its own transaction,
//! by epoch, so a coordinator whose lease was taken commits, and so acknowledges, nothing.
//!
//! Semantics are the SQLite store's (see `storage::sqlite`): same tables and columns, same
//! refusals. The store runs on a runtime of its own (two threads): nothing waits for the
//! database on an actor's event loop. While the database is away, commits wait and are retried
//! through the multi-host URL (finding a promoted standby), reads fail, and
//! [`LedgerStore::unavailable`] says why once it has been a second.

mod apply;
mod connect;
mod leadership;
mod queries;
mod replay;
mod schema;
mod writer;

pub use connect::hide_password;
pub use leadership::PgLeadership;
pub use schema::SCHEMA_VERSION;

use crate::ha::{Deposed, LeaseClock};
use crate::job::{BatchId, JobId, Lease};
use crate::status::{AttemptRecord, Completion, JobInfo, Resulted};
use crate::storage::group::WriterTask;
use crate::storage::store::{
    Change, CommitDone, CompletionFilter, FailedJob, FinishedJob, JobFilter, LedgerStore, Read,
    StoreError,
};
use connect::{chain, classify, database, Failure, Target};
use queries::QueryError;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// How long the database may be away before new work is refused.
const UNAVAILABLE_AFTER: Duration = Duration::from_secs(1);

/// The store's own tokio runtime, on a thread of its own; it stops when the last store or
/// leadership holding it is dropped.
pub(crate) struct PgRuntime {
    handle: tokio::runtime::Handle,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl PgRuntime {
    fn start() -> Result<PgRuntime, String> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("drover-ledger-pg")
            .enable_all()
            .build()
            .map_err(|error| format!("cannot start the ledger's runtime: {error}"))?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("drover-ledger-pg".into())
            .spawn(move || {
                let _ = runtime.block_on(stopped);
                runtime.shutdown_timeout(Duration::from_secs(1));
            })
            .map_err(|error| format!("cannot start the ledger's thread: {error}"))?;
        Ok(PgRuntime {
            handle,
            _stop: stop,
        })
    }

    /// Runs `task` on the store's runtime; its answer comes back to any executor.
    fn run<T: Send + 'static>(
        &self,
        task: impl Future<Output = Result<T, StoreError>> + Send + 'static,
    ) -> Read<T> {
        let running = self.handle.spawn(task);
        Box::pin(async move { running.await.map_err(|_| StoreError::Closed)? })
    }
}

/// Which connection saw the database go away.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Link {
    Writer = 0,
    Lease = 1,
}

/// Since when each connection has found the database unreachable, and why.
#[derive(Default)]
pub(crate) struct Health {
    down: Mutex<[Option<(Instant, String)>; 2]>,
}

impl Health {
    fn down(&self, link: Link, reason: String) {
        let mut down = self
            .down
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let slot = &mut down[link as usize];
        match slot {
            Some((_, said)) => *said = reason,
            None => *slot = Some((Instant::now(), reason)),
        }
    }

    fn up(&self, link: Link) {
        let mut down = self
            .down
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        down[link as usize] = None;
    }

    fn reason(&self, link: Link) -> Option<String> {
        let down = self
            .down
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        down[link as usize]
            .as_ref()
            .map(|(_, reason)| reason.clone())
    }

    /// The database has been away for a while: since when, and why.
    fn away(&self) -> Option<(Duration, String)> {
        let down = self
            .down
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        down.iter()
            .flatten()
            .map(|(since, reason)| (since.elapsed(), reason.clone()))
            .filter(|(away, _)| *away >= UNAVAILABLE_AFTER)
            .max_by_key(|(away, _)| *away)
    }
}

/// What a term's writer, reader and renewer share.
pub(crate) struct Shared {
    target: Target,
    ttl: Duration,
    /// The lease's epoch, this term's.
    epoch: u64,
    clock: LeaseClock,
    deposed: watch::Sender<Option<Deposed>>,
    health: Health,
    /// The store is closing: stop renewing, and stop waiting for an absent database.
    closing: AtomicBool,
}

impl Shared {
    /// The margin kept between the lease's end here and its end by the database's clock.
    fn margin(&self) -> Duration {
        self.ttl / 4
    }

    /// A renewal sent at `sent` succeeded.
    fn renewed(&self, sent: Instant) {
        if self.deposed().is_none() && !self.closing.load(Ordering::Acquire) {
            self.clock.extend_to(sent + self.ttl - self.margin());
        }
    }

    fn deposed(&self) -> Option<Deposed> {
        self.deposed.borrow().clone()
    }

    /// Another coordinator took the lease: assign nothing more, commit nothing more.
    fn depose(&self, deposed: Deposed) {
        self.clock.end();
        self.deposed.send_if_modified(|slot| {
            if slot.is_some() {
                return false;
            }
            tracing::error!(%deposed, "this coordinator no longer leads");
            *slot = Some(deposed.clone());
            true
        });
    }
}

/// The ledger in PostgreSQL, as one term of one coordinator sees it; cheap to share.
pub struct PostgresStore {
    shared: Arc<Shared>,
    writes: mpsc::UnboundedSender<WriterTask>,
    reader: Arc<Reader>,
    runtime: Arc<PgRuntime>,
}

impl LedgerStore for PostgresStore {
    fn epoch(&self) -> u64 {
        self.shared.epoch
    }

    fn commit(&self, changes: Vec<Change>, done: CommitDone) {
        if let Err(mpsc::error::SendError(WriterTask::Commit(_, done))) =
            self.writes.send(WriterTask::Commit(changes, done))
        {
            done(Err(StoreError::Closed));
        }
    }

    fn job(&self, id: JobId) -> Read<Option<Resulted<JobInfo>>> {
        let reader = self.reader.clone();
        self.runtime.run(async move {
            let client = reader.client().await?;
            reader.answer(queries::job(&client, id).await)
        })
    }

    fn completions(&self, filter: CompletionFilter) -> Read<Vec<Completion>> {
        let reader = self.reader.clone();
        self.runtime.run(async move {
            let client = reader.client().await?;
            reader.answer(queries::completions(&client, filter).await)
        })
    }

    fn history(&self, id: JobId) -> Read<Vec<AttemptRecord>> {
        let reader = self.reader.clone();
        self.runtime.run(async move {
            let client = reader.client().await?;
            reader.answer(queries::history(&client, id).await)
        })
    }

    fn jobs(&self, filter: JobFilter) -> Read<Vec<JobInfo>> {
        let reader = self.reader.clone();
        self.runtime.run(async move {
            let client = reader.client().await?;
            reader.answer(queries::jobs(&client, filter).await)
        })
    }

    fn failed_jobs(&self, batch: BatchId) -> Read<Vec<FailedJob>> {
        let reader = self.reader.clone();
        self.runtime.run(async move {
            let client = reader.client().await?;
            reader.answer(queries::failed_jobs(&client, batch).await)
        })
    }

    fn finished_job(&self, id: JobId) -> Read<Option<FinishedJob>> {
        let reader = self.reader.clone();
        self.runtime.run(async move {
            let client = reader.client().await?;
            reader.answer(queries::finished_job(&client, id).await)
        })
    }

    fn recorded_leases(&self, jobs: Vec<JobId>) -> Read<HashMap<JobId, Lease>> {
        let reader = self.reader.clone();
        self.runtime.run(async move {
            let client = reader.client().await?;
            reader.answer(queries::recorded_leases(&client, &jobs).await)
        })
    }

    fn unavailable(&self) -> Option<String> {
        self.shared.health.away().map(|(away, reason)| {
            format!(
                "the ledger database {} has been unreachable for {}s ({reason}); nothing new is \
                 accepted until it is back",
                self.shared.target.shown,
                away.as_secs().max(1)
            )
        })
    }

    fn close(&self) -> Read<()> {
        self.shared.closing.store(true, Ordering::Release);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let sent = self.writes.send(WriterTask::Close(tx));
        Box::pin(async move {
            sent.map_err(|_| StoreError::Closed)?;
            rx.await.map_err(|_| StoreError::Closed)?
        })
    }
}

/// The connection reads go through, made again when lost.
struct Reader {
    shared: Arc<Shared>,
    client: tokio::sync::Mutex<Option<Arc<tokio_postgres::Client>>>,
}

impl Reader {
    async fn client(&self) -> Result<Arc<tokio_postgres::Client>, StoreError> {
        if let Some((_, reason)) = self.shared.health.away() {
            return Err(StoreError::Unavailable(reason));
        }
        let mut slot = self.client.lock().await;
        if let Some(client) = slot.as_ref().filter(|client| !client.is_closed()) {
            return Ok(client.clone());
        }
        let client =
            Arc::new(self.shared.target.connect().await.map_err(|error| {
                match classify(&error, &self.shared.target) {
                    Failure::Unreachable(reason) => StoreError::Unavailable(reason),
                    Failure::Refused(reason) => StoreError::Unavailable(reason),
                }
            })?);
        *slot = Some(client.clone());
        Ok(client)
    }

    fn answer<T>(&self, answer: Result<T, QueryError>) -> Result<T, StoreError> {
        answer.map_err(|error| match error {
            QueryError::Store(error) => error,
            QueryError::Database(error) => {
                if error.is_closed()
                    || matches!(
                        classify(&error, &self.shared.target),
                        Failure::Unreachable(_)
                    )
                {
                    StoreError::Unavailable(chain(&error))
                } else {
                    database(error)
                }
            }
        })
    }
}
