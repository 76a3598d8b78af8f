//! The writer: group commits, held while the database is away, fenced by the lease.

use super::apply::{apply, NotApplied, Statements};
use super::connect::{chain, classify, database, Failure};
use super::{Link, Shared};
use crate::ha::Deposed;
use crate::metrics::Metrics;
use crate::storage::group::{self, WriterTask};
use crate::storage::sqlite::SECOND_RECORD_REFUSED;
use crate::storage::store::{Change, StoreError};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_postgres::Client;

/// How long one attempt at a group may take before the connection is given up for another
/// (a frozen or cut-off server answers nothing, and TCP may not notice for a while).
const COMMIT_TIMEOUT: Duration = Duration::from_secs(15);

/// The longest wait between two attempts to reach the database.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// The writer's connection and its prepared statements.
pub struct Connection {
    client: Client,
    statements: Statements,
}

impl Connection {
    /// Prepares the writer's statements on `client`.
    pub async fn new(client: Client) -> Result<Connection, tokio_postgres::Error> {
        // Each group's arrays have their own length: planned with it, a few rows are found by
        // index and thousands by one pass, where one generic plan would do either for both.
        //
        // No sequential scans: every statement finds its jobs by id. The planner guesses how
        // many jobs are pending from statistics taken before the last batch came in; after a
        // batch of 100,000 on a ledger of finished ones it guessed none, scanned the whole table
        // once per finished job, and one commit ran for minutes (seen in `drover bench`).
        //
        // And a statement that runs past the commit timeout is ended by the server: a
        // connection the writer gave up on must not hold the lease row's lock (a transaction
        // left idle is ended after the lease's TTL, for every connection: see `connect`).
        let limit = COMMIT_TIMEOUT.as_millis();
        client
            .batch_execute(&format!(
                "SET plan_cache_mode = force_custom_plan; SET enable_seqscan = off;
                 SET statement_timeout = {limit}"
            ))
            .await?;
        let statements = Statements::prepare(&client).await?;
        Ok(Connection { client, statements })
    }
}

/// Runs the writer until it is closed or the store is dropped.
pub async fn run(
    shared: Arc<Shared>,
    mut connection: Option<Connection>,
    mut tasks: mpsc::UnboundedReceiver<WriterTask>,
    metrics: Arc<Metrics>,
) {
    let mut seq = 0u64;
    let mut next = None;
    loop {
        let first = match next.take() {
            Some(task) => task,
            None => match tasks.recv().await {
                Some(task) => task,
                None => return,
            },
        };
        let mut group = match first {
            WriterTask::Commit(changes, done) => vec![(changes, done)],
            WriterTask::Close(closed) => {
                let _ = closed.send(close(&shared, connection.take()).await);
                tasks.close();
                while let Some(task) = tasks.recv().await {
                    group::refuse(task);
                }
                return;
            }
        };
        next = group::gather(&mut group, || tasks.try_recv().ok());
        seq += 1;
        let began = Instant::now();
        let result = commit(&shared, &mut connection, seq, &group::changes(&group)).await;
        metrics.ledger_committed(began.elapsed());
        if let Err(error) = &result {
            tracing::error!(%error, commits = group.len(), "ledger commit failed");
        }
        group::answer(group, &result);
    }
}

/// Commits one group, retrying through lost connections until it is known to be written (or
/// the lease is lost, or the database refuses it).
async fn commit(
    shared: &Shared,
    connection: &mut Option<Connection>,
    seq: u64,
    group: &[&[Change]],
) -> Result<(), StoreError> {
    if let Some(deposed) = shared.deposed() {
        return Err(StoreError::Deposed(deposed));
    }
    let ttl_ms = shared.ttl.as_secs_f64() * 1000.0;
    let mut backoff = Duration::from_millis(50);
    loop {
        if connection.is_none() {
            match shared.target.connect().await {
                Ok(client) => match Connection::new(client).await {
                    Ok(ready) => *connection = Some(ready),
                    Err(error) => shared.health.down(Link::Writer, chain(&error)),
                },
                Err(error) => shared.health.down(Link::Writer, reason(shared, &error)),
            }
        }
        let Some(ready) = connection.as_mut() else {
            if shared.closing.load(Ordering::Acquire) {
                return Err(StoreError::Unavailable(
                    shared.health.reason(Link::Writer).unwrap_or_default(),
                ));
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
            continue;
        };
        let sent = Instant::now();
        let outcome = tokio::time::timeout(
            COMMIT_TIMEOUT,
            apply(
                &mut ready.client,
                &ready.statements,
                shared.epoch,
                seq,
                ttl_ms,
                group,
            ),
        )
        .await;
        match outcome {
            Ok(Ok(applied)) => {
                shared.health.up(Link::Writer);
                shared.renewed(sent);
                for job in applied.refused_second_records {
                    // The guard against recording a job twice held; say so loudly.
                    tracing::error!(job, "{SECOND_RECORD_REFUSED}");
                }
                return Ok(());
            }
            Ok(Err(NotApplied::Fenced(holder, epoch))) => {
                let deposed = Deposed::Superseded {
                    holder,
                    epoch,
                    mine: shared.epoch,
                };
                shared.depose(deposed.clone());
                return Err(StoreError::Deposed(deposed));
            }
            Ok(Err(NotApplied::Done)) => {
                // Written by an earlier try whose answer was lost with its connection. This
                // try renewed nothing (it rolled back), so the lease clock stays where it was.
                shared.health.up(Link::Writer);
                return Ok(());
            }
            Ok(Err(NotApplied::Retry)) => {
                tracing::warn!("a ledger commit's fence failed under this coordinator's own lease; trying again");
            }
            Ok(Err(NotApplied::Database(error))) => {
                if !matches!(classify(&error, &shared.target), Failure::Unreachable(_))
                    && !error.is_closed()
                {
                    return Err(database(error));
                }
                tracing::warn!(error = %chain(&error), "ledger database connection lost; the commit waits for it");
                shared.health.down(Link::Writer, reason(shared, &error));
            }
            Err(_) => {
                tracing::warn!("the ledger database did not answer a commit within {COMMIT_TIMEOUT:?}; connecting again");
                shared.health.down(
                    Link::Writer,
                    format!("no answer within {}s", COMMIT_TIMEOUT.as_secs()),
                );
            }
        }
        // Whether that try was written is told by the next: its fence finds the group's mark.
        *connection = None;
    }
}

fn reason(shared: &Shared, error: &tokio_postgres::Error) -> String {
    match classify(error, &shared.target) {
        Failure::Unreachable(reason) | Failure::Refused(reason) => reason,
    }
}

/// Gives the lease up, so a standby takes over without waiting for it to expire.
async fn close(shared: &Shared, connection: Option<Connection>) -> Result<(), StoreError> {
    shared.clock.end();
    if let (Some(connection), None) = (connection, shared.deposed()) {
        let released = connection
            .client
            .execute(
                "UPDATE lease SET expires_at = now() WHERE id = 1 AND epoch = $1",
                &[&(shared.epoch as i64)],
            )
            .await;
        if let Err(error) = released {
            tracing::warn!(error = %chain(&error), "could not give the ledger's lease up; it expires by itself");
        }
    }
    tracing::info!("ledger closed");
    Ok(())
}
