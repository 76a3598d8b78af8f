//! Reading the ledger back at startup, and starting a new epoch.

use crate::job::{LeaseKey, LedgerId};
use crate::storage::spec_format;
use crate::storage::store::{Replay, ReplayedBatch, ReplayedJob, StoreError, Unpublished};
use rusqlite::{params, Connection, OptionalExtension};
use std::sync::Arc;

/// Reads what the ledger holds and takes the next epoch, in one transaction.
pub fn replay(conn: &mut Connection) -> Result<Replay, StoreError> {
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
    // Drawn by the schema's migration to version 3, for new ledgers and old ones alike.
    let ledger = tx
        .query_row(
            "SELECT value FROM meta WHERE key = 'ledger_id'",
            [],
            |row| row.get::<_, i64>(0),
        )
        .optional()?
        .map(|id| LedgerId(id as u64))
        .ok_or_else(|| {
            StoreError::Database(std::sync::Arc::new(std::io::Error::other(
                "the ledger has no id (meta 'ledger_id'): it is damaged",
            )))
        })?;
    // Drawn by the same migration.
    let lease_key = tx
        .query_row(
            "SELECT value FROM meta WHERE key = 'lease_key'",
            [],
            |row| row.get::<_, Vec<u8>>(0),
        )
        .optional()?
        .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
        .map(LeaseKey::new)
        .ok_or_else(|| {
            StoreError::Database(std::sync::Arc::new(std::io::Error::other(
                "the ledger has no lease key of 32 bytes (meta 'lease_key'): it is damaged",
            )))
        })?;

    let mut batches = Vec::new();
    {
        let mut statement = tx.prepare(
            "SELECT b.id, b.name, b.submitted_at_ms, b.total,
                    COALESCE(SUM(j.state = 'succeeded'), 0),
                    COALESCE(SUM(j.state = 'failed'), 0),
                    COALESCE(SUM(j.state = 'cancelled'), 0),
                    MIN(j.started_at_ms), MAX(j.finished_at_ms), b.idempotency_key
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
                idempotency_key: row.get::<_, Option<String>>(9)?.map(Arc::from),
            })
        })?;
        for batch in rows {
            batches.push(batch?);
        }
    }

    let mut unfinished = Vec::new();
    {
        let mut statement = tx.prepare(
            "SELECT id, batch, spec, spec_format, attempts, lost_attempts, failures,
                    started_lease, started_worker
             FROM jobs WHERE state = 'pending' ORDER BY id",
        )?;
        let mut rows = statement.query([])?;
        while let Some(row) = rows.next()? {
            let id = row.get::<_, i64>(0)? as u64;
            let bytes = row.get_ref(2)?.as_blob().map_err(rusqlite::Error::from)?;
            unfinished.push(ReplayedJob {
                id,
                batch: row.get::<_, i64>(1)? as u64,
                spec: spec_format::load(id, row.get(3)?, bytes)?,
                attempts: row.get(4)?,
                lost_attempts: row.get(5)?,
                failures: row.get(6)?,
                lost_on: Vec::new(),
                started: match (
                    row.get::<_, Option<i64>>(7)?,
                    row.get::<_, Option<String>>(8)?,
                ) {
                    (Some(lease), Some(worker)) => Some((lease as u64, worker)),
                    _ => None,
                },
            });
        }
    }
    lost_on(&tx, &mut unfinished)?;
    // Above every job on record, and every id an earlier run may have handed out unwritten.
    let next_job = tx.query_row(
        "SELECT MAX(COALESCE((SELECT MAX(id) FROM jobs), 0) + 1,
                    COALESCE((SELECT value FROM meta WHERE key = 'reserved_jobs'), 0))",
        [],
        |row| row.get::<_, i64>(0),
    )? as u64;
    // Every cursor drawn is below this (the jobs' own, or one a retry cleared since).
    let last_cursor = tx.query_row(
        "SELECT MAX(COALESCE((SELECT value FROM meta WHERE key = 'last_cursor'), 0),
                    COALESCE((SELECT MAX(cursor) FROM jobs), 0))",
        [],
        |row| row.get::<_, i64>(0),
    )? as u64;
    let mut unpublished = Vec::new();
    {
        let mut statement = tx.prepare(
            "SELECT id, lease, spec, spec_format, outputs FROM jobs
             WHERE outputs IS NOT NULL AND manifest_written = 0 AND lease IS NOT NULL",
        )?;
        let mut rows = statement.query([])?;
        while let Some(row) = rows.next()? {
            let job = row.get::<_, i64>(0)? as u64;
            let bytes = row.get_ref(2)?.as_blob().map_err(rusqlite::Error::from)?;
            // A finished job: a damaged spec costs its manifest's repair, not the start.
            let spec = match spec_format::load(job, row.get(3)?, bytes) {
                Ok(spec) => spec,
                Err(error) => {
                    tracing::warn!(%error, "its manifest will not be written again");
                    continue;
                }
            };
            unpublished.push(Unpublished {
                job,
                lease: row.get::<_, i64>(1)? as u64,
                spec,
                objects: row.get(4)?,
            });
        }
    }
    tx.commit()?;
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

/// The workers each unfinished job was lost with: its last `lost_attempts` losses (a retry
/// starts the count again), each worker once.
fn lost_on(conn: &Connection, unfinished: &mut [ReplayedJob]) -> Result<(), StoreError> {
    let mut statement = conn.prepare(
        "SELECT a.job, a.worker FROM attempts a JOIN jobs j ON j.id = a.job
         WHERE j.state = 'pending' AND j.lost_attempts > 0 AND a.outcome = 'lost'
         ORDER BY a.job, a.rowid DESC",
    )?;
    let mut by_job: std::collections::HashMap<u64, Vec<String>> = Default::default();
    let mut rows = statement.query([])?;
    while let Some(row) = rows.next()? {
        by_job
            .entry(row.get::<_, i64>(0)? as u64)
            .or_default()
            .push(row.get(1)?);
    }
    for job in unfinished.iter_mut() {
        let Some(newest_first) = by_job.remove(&job.id) else {
            continue;
        };
        for worker in newest_first.into_iter().take(job.lost_attempts as usize) {
            if !job.lost_on.contains(&worker) {
                job.lost_on.push(worker);
            }
        }
    }
    Ok(())
}
