//! Read queries on the ledger: jobs, their work orders and their attempt histories.
//!
//! These run on the store's reader thread. The database knows no `running` state (running is
//! never written); the ledger overlays what it holds in memory for unfinished jobs.

use crate::actors::ledger::MAX_RESULTS_PAGE_BYTES;
use crate::job::{BatchId, JobId, JobState, Lease};
use crate::status::{AttemptRecord, Completion, Finished, JobInfo, Resulted};
use crate::storage::spec_format;
use crate::storage::store::{CompletionFilter, FailedJob, FinishedJob, JobFilter, StoreError};
use rusqlite::{params, Connection, OptionalExtension, Row};
use std::collections::HashMap;

const JOB_COLUMNS: &str = "id, batch, name, state, attempts, lost_attempts, worker, exit_code,
     duration_ms, queued_at_ms, started_at_ms, finished_at_ms, output_tail, error, duplicates, outputs";

fn job_from_row(row: &Row<'_>) -> rusqlite::Result<JobInfo> {
    let state: String = row.get(3)?;
    Ok(JobInfo {
        id: row.get::<_, i64>(0)? as u64,
        batch: row.get::<_, i64>(1)? as u64,
        name: row.get(2)?,
        state: state.parse().unwrap_or(JobState::Pending),
        attempts: row.get(4)?,
        lost_attempts: row.get(5)?,
        worker: row.get(6)?,
        exit_code: row.get(7)?,
        duration_ms: row.get::<_, Option<i64>>(8)?.map(|ms| ms as u64),
        queued_at_ms: row.get::<_, i64>(9)? as u64,
        started_at_ms: row.get::<_, Option<i64>>(10)?.map(|ms| ms as u64),
        finished_at_ms: row.get::<_, Option<i64>>(11)?.map(|ms| ms as u64),
        output_tail: row.get(12)?,
        error: row.get(13)?,
        duplicates: row.get(14)?,
        outputs: row
            .get::<_, Option<String>>(15)?
            .and_then(|json| serde_json::from_str(&json).ok())
            .unwrap_or_default(),
        history: Vec::new(),
        waiting: None,
    })
}

/// One job with its attempt history and its recorded result, if the id exists.
pub fn job(conn: &Connection, id: JobId) -> Result<Option<Resulted<JobInfo>>, StoreError> {
    let mut statement = conn.prepare_cached(&format!(
        "SELECT {JOB_COLUMNS}, result FROM jobs WHERE id = ?1"
    ))?;
    let Some(mut job) = statement
        .query_row(params![id as i64], |row| {
            Ok(Resulted {
                record: job_from_row(row)?,
                result: row
                    .get::<_, Option<Vec<u8>>>(16)?
                    .filter(|bytes| !bytes.is_empty()),
            })
        })
        .optional()?
    else {
        return Ok(None);
    };
    job.record.history = history(conn, id)?;
    Ok(Some(job))
}

const COMPLETION_COLUMNS: &str = "cursor, id, batch, name, state, exit_code, worker, duration_ms,
     finished_at_ms, error, result";

fn completion_from_row(row: &Row<'_>) -> rusqlite::Result<Completion> {
    let state: String = row.get(4)?;
    Ok(Resulted {
        record: Finished {
            cursor: row.get::<_, i64>(0)? as u64,
            id: row.get::<_, i64>(1)? as u64,
            batch: row.get::<_, i64>(2)? as u64,
            name: row.get(3)?,
            state: state.parse().unwrap_or(JobState::Failed),
            exit_code: row.get(5)?,
            worker: row.get(6)?,
            duration_ms: row.get::<_, Option<i64>>(7)?.map(|ms| ms as u64),
            finished_at_ms: row.get::<_, Option<i64>>(8)?.unwrap_or(0) as u64,
            error: row.get(9)?,
        },
        result: row
            .get::<_, Option<Vec<u8>>>(10)?
            .filter(|bytes| !bytes.is_empty()),
    })
}

/// Finished jobs' records in cursor order after `filter.after`: at most `filter.limit`, and
/// none after the one whose result takes the page past [`MAX_RESULTS_PAGE_BYTES`].
pub fn completions(
    conn: &Connection,
    filter: CompletionFilter,
) -> Result<Vec<Completion>, StoreError> {
    // Two statements, each with its index: every batch's records, or one batch's.
    let mut statement;
    let mut rows = match filter.batch {
        None => {
            statement = conn.prepare_cached(&format!(
                "SELECT {COMPLETION_COLUMNS} FROM jobs WHERE cursor > ?1 ORDER BY cursor LIMIT ?2"
            ))?;
            statement.query(params![filter.after as i64, filter.limit])?
        }
        Some(batch) => {
            statement = conn.prepare_cached(&format!(
                "SELECT {COMPLETION_COLUMNS} FROM jobs WHERE batch = ?1 AND cursor > ?2
                 ORDER BY cursor LIMIT ?3"
            ))?;
            statement.query(params![batch as i64, filter.after as i64, filter.limit])?
        }
    };
    let mut page = Vec::new();
    let mut bytes = 0;
    while let Some(row) = rows.next()? {
        let record = completion_from_row(row)?;
        bytes += record.result.as_ref().map_or(0, Vec::len);
        page.push(record);
        if bytes > MAX_RESULTS_PAGE_BYTES {
            break;
        }
    }
    Ok(page)
}

/// The attempts of a job that were not recorded as its result, oldest first.
pub fn history(conn: &Connection, id: JobId) -> Result<Vec<AttemptRecord>, StoreError> {
    let mut statement = conn.prepare_cached(
        "SELECT attempt, worker, outcome, started_at_ms, finished_at_ms, exit_code, error
         FROM attempts WHERE job = ?1 ORDER BY rowid",
    )?;
    let rows = statement.query_map(params![id as i64], |row| {
        Ok(AttemptRecord {
            attempt: row.get(0)?,
            worker: row.get(1)?,
            outcome: row.get(2)?,
            started_at_ms: row.get::<_, i64>(3)? as u64,
            finished_at_ms: row.get::<_, i64>(4)? as u64,
            exit_code: row.get(5)?,
            error: row.get(6)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// A page of jobs in id order, from the database's point of view (unfinished jobs appear as
/// `pending`).
pub fn jobs(conn: &Connection, filter: JobFilter) -> Result<Vec<JobInfo>, StoreError> {
    let sql = format!(
        "SELECT {JOB_COLUMNS} FROM jobs
         WHERE id > ?1 AND (?2 IS NULL OR batch = ?2) AND (?3 IS NULL OR state = ?3)
         ORDER BY id LIMIT ?4"
    );
    let mut statement = conn.prepare_cached(&sql)?;
    let rows = statement.query_map(
        params![
            filter.after as i64,
            filter.batch.map(|batch| batch as i64),
            filter.state.map(JobState::as_str),
            filter.limit
        ],
        job_from_row,
    )?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// A batch's failed jobs, for a retry.
pub fn failed_jobs(conn: &Connection, batch: BatchId) -> Result<Vec<FailedJob>, StoreError> {
    let mut statement = conn.prepare_cached(
        "SELECT id, spec, spec_format, attempts FROM jobs
         WHERE batch = ?1 AND state = 'failed' ORDER BY id",
    )?;
    let mut rows = statement.query(params![batch as i64])?;
    let mut failed = Vec::new();
    while let Some(row) = rows.next()? {
        let id = row.get::<_, i64>(0)? as u64;
        let bytes = row.get_ref(1)?.as_blob().map_err(rusqlite::Error::from)?;
        failed.push(FailedJob {
            id,
            spec: spec_format::load(id, row.get(2)?, bytes)?,
            attempts: row.get(3)?,
        });
    }
    Ok(failed)
}

/// One job as a retry of it needs it: its batch, state, spec and attempts.
pub fn finished_job(conn: &Connection, id: JobId) -> Result<Option<FinishedJob>, StoreError> {
    let mut statement = conn.prepare_cached(
        "SELECT batch, state, spec, spec_format, attempts FROM jobs WHERE id = ?1",
    )?;
    let mut rows = statement.query(params![id as i64])?;
    let Some(row) = rows.next()? else {
        return Ok(None);
    };
    let state: String = row.get(1)?;
    let bytes = row.get_ref(2)?.as_blob().map_err(rusqlite::Error::from)?;
    Ok(Some(FinishedJob {
        batch: row.get::<_, i64>(0)? as u64,
        state: state.parse().unwrap_or(JobState::Pending),
        job: FailedJob {
            id,
            spec: spec_format::load(id, row.get(3)?, bytes)?,
            attempts: row.get(4)?,
        },
    }))
}

/// The lease recorded as each succeeded job's result (jobs not succeeded are left out).
pub fn recorded_leases(
    conn: &Connection,
    jobs: &[JobId],
) -> Result<HashMap<JobId, Lease>, StoreError> {
    let mut statement = conn.prepare_cached(
        "SELECT lease FROM jobs WHERE id = ?1 AND state = 'succeeded' AND lease IS NOT NULL",
    )?;
    let mut found = HashMap::new();
    for job in jobs {
        if let Some(lease) = statement
            .query_row(params![*job as i64], |row| row.get::<_, i64>(0))
            .optional()?
        {
            found.insert(*job, lease as u64);
        }
    }
    Ok(found)
}
