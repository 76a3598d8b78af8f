//! Reading the ledger back when a coordinator's term begins: one consistent snapshot.
//!
//! Before it, the jobs finished without a cursor get theirs: those a coordinator of the release
//! before finished while it still led and this one, standing by, had already migrated the
//! schema (a rolling upgrade). They are numbered after every cursor on record, in the order
//! they finished, so that followers of results see them too.

use crate::job::{LeaseKey, LedgerId};
use crate::storage::spec_format;
use crate::storage::store::{Replay, ReplayedBatch, ReplayedJob, StoreError, Unpublished};
use std::collections::HashMap;
use std::sync::Arc;
use tokio_postgres::{Client, IsolationLevel};

/// What went wrong reading the ledger back.
#[derive(Debug)]
pub enum ReplayError {
    /// The database failed (it may be reachable again later).
    Database(tokio_postgres::Error),
    /// What it holds is not a whole ledger.
    Damaged(StoreError),
}

impl From<tokio_postgres::Error> for ReplayError {
    fn from(error: tokio_postgres::Error) -> Self {
        ReplayError::Database(error)
    }
}

impl From<StoreError> for ReplayError {
    fn from(error: StoreError) -> Self {
        ReplayError::Damaged(error)
    }
}

fn damaged(what: &str) -> ReplayError {
    ReplayError::Damaged(StoreError::Database(Arc::new(std::io::Error::other(
        what.to_string(),
    ))))
}

/// Gives the finished jobs without a cursor theirs, if the lease is still `epoch`'s (the lease
/// row is held shared meanwhile, so no other coordinator takes it before this is done). The
/// partial index `jobs_unnumbered` finds them without a scan: the lease row is held only as
/// long as there are jobs to number.
async fn number_unnumbered(client: &Client, epoch: u64) -> Result<u64, tokio_postgres::Error> {
    let numbered = client
        .execute(
            "WITH held AS (SELECT epoch FROM lease WHERE id = 1 AND epoch = $1 FOR SHARE),
             last AS (SELECT GREATEST(
                 (SELECT COALESCE(MAX(cursor), 0) FROM jobs),
                 (SELECT COALESCE(MAX(value), 0) FROM meta WHERE key = 'cleared_cursor'))
                 AS cursor),
             numbered AS (
                 SELECT j.id, last.cursor
                     + row_number() OVER (ORDER BY j.finished_at_ms, j.id) AS cursor
                 FROM jobs j, last, held
                 WHERE j.cursor IS NULL AND j.state <> 'pending')
             UPDATE jobs SET cursor = numbered.cursor FROM numbered
             WHERE jobs.id = numbered.id",
            &[&(epoch as i64)],
        )
        .await?;
    Ok(numbered)
}

/// Reads what the ledger holds, in one REPEATABLE READ snapshot; `epoch` is the lease's.
pub async fn replay(client: &mut Client, epoch: u64) -> Result<Replay, ReplayError> {
    let numbered = number_unnumbered(client, epoch).await?;
    if numbered > 0 {
        tracing::info!(
            jobs = numbered,
            "finished jobs without a cursor (finished by an older drover) numbered after the others"
        );
    }
    let tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    // Rows are decoded between the queries: a large ledger may keep this snapshot idle longer
    // than the lease's TTL, which ends the writer's idle transactions (see
    // `Target::end_idle_transactions_after`); this one locks nothing.
    tx.batch_execute("SET LOCAL idle_in_transaction_session_timeout = 0")
        .await?;
    let ledger = tx
        .query_opt("SELECT value FROM meta WHERE key = 'ledger_id'", &[])
        .await?
        .and_then(|row| row.get::<_, Option<i64>>(0))
        .map(|id| LedgerId(id as u64))
        .ok_or_else(|| damaged("the ledger has no id (meta 'ledger_id'): it is damaged"))?;
    let lease_key = tx
        .query_opt("SELECT bytes FROM meta WHERE key = 'lease_key'", &[])
        .await?
        .and_then(|row| row.get::<_, Option<Vec<u8>>>(0))
        .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
        .map(LeaseKey::new)
        .ok_or_else(|| {
            damaged("the ledger has no lease key of 32 bytes (meta 'lease_key'): it is damaged")
        })?;

    let batches = tx
        .query(
            "SELECT b.id, b.name, b.submitted_at_ms, b.total,
                    COALESCE(SUM((j.state = 'succeeded')::int), 0)::bigint,
                    COALESCE(SUM((j.state = 'failed')::int), 0)::bigint,
                    COALESCE(SUM((j.state = 'cancelled')::int), 0)::bigint,
                    MIN(j.started_at_ms), MAX(j.finished_at_ms), b.idempotency_key
             FROM batches b LEFT JOIN jobs j ON j.batch = b.id
             GROUP BY b.id ORDER BY b.id",
            &[],
        )
        .await?
        .iter()
        .map(|row| ReplayedBatch {
            id: row.get::<_, i64>(0) as u64,
            name: row.get(1),
            submitted_at_ms: row.get::<_, i64>(2) as u64,
            total: row.get::<_, i64>(3) as u64,
            succeeded: row.get::<_, i64>(4) as u64,
            failed: row.get::<_, i64>(5) as u64,
            cancelled: row.get::<_, i64>(6) as u64,
            started_at_ms: row.get::<_, Option<i64>>(7).map(|ms| ms as u64),
            finished_at_ms: row.get::<_, Option<i64>>(8).map(|ms| ms as u64),
            idempotency_key: row.get::<_, Option<&str>>(9).map(Arc::from),
        })
        .collect();

    let mut unfinished = Vec::new();
    for row in tx
        .query(
            "SELECT id, batch, spec, spec_format, attempts, lost_attempts, failures,
                    started_lease, started_worker
             FROM jobs WHERE state = 'pending' ORDER BY id",
            &[],
        )
        .await?
    {
        let id = row.get::<_, i64>(0) as u64;
        unfinished.push(ReplayedJob {
            id,
            batch: row.get::<_, i64>(1) as u64,
            spec: spec_format::load(id, row.get::<_, i32>(3) as u32, row.get(2))?,
            attempts: row.get::<_, i64>(4) as u32,
            lost_attempts: row.get::<_, i64>(5) as u32,
            failures: row.get::<_, i64>(6) as u32,
            lost_on: Vec::new(),
            started: match (
                row.get::<_, Option<i64>>(7),
                row.get::<_, Option<String>>(8),
            ) {
                (Some(lease), Some(worker)) => Some((lease as u64, worker)),
                _ => None,
            },
        });
    }

    // The workers each unfinished job was lost with: its last `lost_attempts` losses (a retry
    // starts the count again), each worker once.
    let mut lost: HashMap<u64, Vec<String>> = HashMap::new();
    for row in tx
        .query(
            "SELECT a.job, a.worker FROM attempts a JOIN jobs j ON j.id = a.job
             WHERE j.state = 'pending' AND j.lost_attempts > 0 AND a.outcome = 'lost'
             ORDER BY a.job, a.id DESC",
            &[],
        )
        .await?
    {
        lost.entry(row.get::<_, i64>(0) as u64)
            .or_default()
            .push(row.get(1));
    }
    for job in unfinished.iter_mut() {
        let Some(newest_first) = lost.remove(&job.id) else {
            continue;
        };
        for worker in newest_first.into_iter().take(job.lost_attempts as usize) {
            if !job.lost_on.contains(&worker) {
                job.lost_on.push(worker);
            }
        }
    }

    // Above every job on record, and every id an earlier leader may have handed out unwritten.
    let next_job = tx
        .query_one(
            "SELECT GREATEST((SELECT COALESCE(MAX(id), 0) + 1 FROM jobs),
                 (SELECT COALESCE(MAX(value), 0) FROM meta WHERE key = 'reserved_jobs'))",
            &[],
        )
        .await?
        .get::<_, i64>(0) as u64;

    // A cursor cleared by a retry was given to followers: the next drawn must be above it too.
    let last_cursor = tx
        .query_one(
            "SELECT GREATEST(
                 (SELECT COALESCE(MAX(cursor), 0) FROM jobs),
                 (SELECT COALESCE(MAX(value), 0) FROM meta WHERE key = 'cleared_cursor'))",
            &[],
        )
        .await?
        .get::<_, i64>(0) as u64;

    let mut unpublished = Vec::new();
    for row in tx
        .query(
            "SELECT id, lease, spec, spec_format, outputs FROM jobs
             WHERE outputs IS NOT NULL AND manifest_written = 0 AND lease IS NOT NULL
             ORDER BY id",
            &[],
        )
        .await?
    {
        let job = row.get::<_, i64>(0) as u64;
        // A finished job: a damaged spec costs its manifest's repair, not the start.
        let spec = match spec_format::load(job, row.get::<_, i32>(3) as u32, row.get(2)) {
            Ok(spec) => spec,
            Err(error) => {
                tracing::warn!(%error, "its manifest will not be written again");
                continue;
            }
        };
        unpublished.push(Unpublished {
            job,
            lease: row.get::<_, i64>(1) as u64,
            spec,
            objects: row.get(4),
        });
    }
    tx.commit().await?;
    Ok(Replay {
        ledger,
        epoch,
        lease_key,
        batches,
        unfinished,
        next_job,
        unpublished,
        last_cursor,
    })
}
