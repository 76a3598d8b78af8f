//! Read queries on the ledger, as the SQLite store answers them (see `sqlite::queries`).
//!
//! The database knows no `running` state; the ledger overlays what it holds in memory.

use crate::actors::ledger::MAX_RESULTS_PAGE_BYTES;
use crate::job::{BatchId, JobId, JobState, Lease};
use crate::status::{AttemptRecord, Completion, Finished, JobInfo, Resulted};
use crate::storage::spec_format;
use crate::storage::store::{CompletionFilter, FailedJob, FinishedJob, JobFilter, StoreError};
use std::collections::HashMap;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row};

/// A query's failure: the database's (sorted out by the caller) or the ledger's content.
#[derive(Debug)]
pub enum QueryError {
    /// The database failed.
    Database(tokio_postgres::Error),
    /// A row could not be read.
    Store(StoreError),
}

impl From<tokio_postgres::Error> for QueryError {
    fn from(error: tokio_postgres::Error) -> Self {
        QueryError::Database(error)
    }
}

impl From<StoreError> for QueryError {
    fn from(error: StoreError) -> Self {
        QueryError::Store(error)
    }
}

type Result<T> = std::result::Result<T, QueryError>;

const JOB_COLUMNS: &str = "id, batch, name, state, attempts, lost_attempts, worker, exit_code,
     duration_ms, queued_at_ms, started_at_ms, finished_at_ms, output_tail, error, duplicates, outputs";

fn job_from_row(row: &Row) -> JobInfo {
    let state: &str = row.get(3);
    JobInfo {
        id: row.get::<_, i64>(0) as u64,
        batch: row.get::<_, i64>(1) as u64,
        name: row.get(2),
        state: state.parse().unwrap_or(JobState::Pending),
        attempts: row.get::<_, i64>(4) as u32,
        lost_attempts: row.get::<_, i64>(5) as u32,
        worker: row.get(6),
        exit_code: row.get(7),
        duration_ms: row.get::<_, Option<i64>>(8).map(|ms| ms as u64),
        queued_at_ms: row.get::<_, i64>(9) as u64,
        started_at_ms: row.get::<_, Option<i64>>(10).map(|ms| ms as u64),
        finished_at_ms: row.get::<_, Option<i64>>(11).map(|ms| ms as u64),
        output_tail: row.get(12),
        error: row.get(13),
        duplicates: row.get::<_, i64>(14) as u32,
        outputs: row
            .get::<_, Option<&str>>(15)
            .and_then(|json| serde_json::from_str(json).ok())
            .unwrap_or_default(),
        history: Vec::new(),
        waiting: None,
    }
}

/// A stored result as the record has it: an attempt that returned nothing has none.
fn result_from(stored: Option<Vec<u8>>) -> Option<Vec<u8>> {
    stored.filter(|bytes| !bytes.is_empty())
}

/// One job with its attempt history and its result, if the id exists.
pub async fn job(client: &Client, id: JobId) -> Result<Option<Resulted<JobInfo>>> {
    let sql = format!("SELECT {JOB_COLUMNS}, result FROM jobs WHERE id = $1");
    let Some(row) = client.query_opt(&sql, &[&(id as i64)]).await? else {
        return Ok(None);
    };
    let mut info = job_from_row(&row);
    info.history = history(client, id).await?;
    Ok(Some(Resulted {
        record: info,
        result: result_from(row.get(16)),
    }))
}

/// Finished jobs' records with their results, in cursor order after `filter.after`: at most
/// `filter.limit` of them, and none after the one whose result takes the page past
/// [`MAX_RESULTS_PAGE_BYTES`]. The database sums the sizes (from the stored values' headers,
/// reading no result) and sends only the page, so a page of large results never crosses the
/// wire or sits in memory whole.
pub async fn completions(client: &Client, filter: CompletionFilter) -> Result<Vec<Completion>> {
    const COLUMNS: &str =
        "cursor, id, batch, name, state, exit_code, worker, duration_ms, finished_at_ms, error, \
         result";
    // Two texts, so that each is planned on its own index: (batch, cursor) or (cursor).
    let after = filter.after.min(i64::MAX as u64) as i64;
    let limit = i64::from(filter.limit);
    let cap = MAX_RESULTS_PAGE_BYTES as i64;
    let batch = filter.batch.map(|batch| batch as i64);
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![&after, &limit, &cap];
    let page = match &batch {
        Some(batch) => {
            params.push(batch);
            "WHERE cursor > $1 AND batch = $4"
        }
        None => "WHERE cursor > $1",
    };
    let sql = format!(
        "SELECT {COLUMNS} FROM (
             SELECT {COLUMNS}, sum(COALESCE(octet_length(result), 0))
                 OVER (ORDER BY cursor ROWS UNBOUNDED PRECEDING)
                 - COALESCE(octet_length(result), 0) AS before
             FROM (SELECT {COLUMNS} FROM jobs {page} ORDER BY cursor LIMIT $2) AS page
         ) AS summed
         WHERE before <= $3
         ORDER BY cursor"
    );
    let rows = client.query(&sql, &params).await?;
    Ok(rows
        .iter()
        .map(|row| {
            let state: &str = row.get(4);
            Resulted {
                record: Finished {
                    cursor: row.get::<_, i64>(0) as u64,
                    id: row.get::<_, i64>(1) as u64,
                    batch: row.get::<_, i64>(2) as u64,
                    name: row.get(3),
                    state: state.parse().unwrap_or(JobState::Pending),
                    exit_code: row.get(5),
                    worker: row.get(6),
                    duration_ms: row.get::<_, Option<i64>>(7).map(|ms| ms as u64),
                    finished_at_ms: row.get::<_, Option<i64>>(8).unwrap_or(0) as u64,
                    error: row.get(9),
                },
                result: result_from(row.get(10)),
            }
        })
        .collect())
}

/// The attempts of a job that were not recorded as its result, oldest first.
pub async fn history(client: &Client, id: JobId) -> Result<Vec<AttemptRecord>> {
    let rows = client
        .query(
            "SELECT attempt, worker, outcome, started_at_ms, finished_at_ms, exit_code, error
             FROM attempts WHERE job = $1 ORDER BY id",
            &[&(id as i64)],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| AttemptRecord {
            attempt: row.get::<_, i64>(0) as u32,
            worker: row.get(1),
            outcome: row.get(2),
            started_at_ms: row.get::<_, i64>(3) as u64,
            finished_at_ms: row.get::<_, i64>(4) as u64,
            exit_code: row.get(5),
            error: row.get(6),
        })
        .collect())
}

/// A page of jobs in id order (unfinished jobs appear as `pending`).
pub async fn jobs(client: &Client, filter: JobFilter) -> Result<Vec<JobInfo>> {
    let sql = format!(
        "SELECT {JOB_COLUMNS} FROM jobs
         WHERE id > $1 AND ($2::bigint IS NULL OR batch = $2) AND ($3::text IS NULL OR state = $3)
         ORDER BY id LIMIT $4"
    );
    let rows = client
        .query(
            &sql,
            &[
                &(filter.after as i64),
                &filter.batch.map(|batch| batch as i64),
                &filter.state.map(JobState::as_str),
                &i64::from(filter.limit),
            ],
        )
        .await?;
    Ok(rows.iter().map(job_from_row).collect())
}

/// A batch's failed jobs, for a retry.
pub async fn failed_jobs(client: &Client, batch: BatchId) -> Result<Vec<FailedJob>> {
    let rows = client
        .query(
            "SELECT id, spec, spec_format, attempts FROM jobs
             WHERE batch = $1 AND state = 'failed' ORDER BY id",
            &[&(batch as i64)],
        )
        .await?;
    let mut failed = Vec::with_capacity(rows.len());
    for row in rows {
        let id = row.get::<_, i64>(0) as u64;
        failed.push(FailedJob {
            id,
            spec: spec_format::load(id, row.get::<_, i32>(2) as u32, row.get(1))?,
            attempts: row.get::<_, i64>(3) as u32,
        });
    }
    Ok(failed)
}

/// One job as a retry of it needs it: its batch, state, spec and attempts.
pub async fn finished_job(client: &Client, id: JobId) -> Result<Option<FinishedJob>> {
    let Some(row) = client
        .query_opt(
            "SELECT batch, state, spec, spec_format, attempts FROM jobs WHERE id = $1",
            &[&(id as i64)],
        )
        .await?
    else {
        return Ok(None);
    };
    let state: &str = row.get(1);
    Ok(Some(FinishedJob {
        batch: row.get::<_, i64>(0) as u64,
        state: state.parse().unwrap_or(JobState::Pending),
        job: FailedJob {
            id,
            spec: spec_format::load(id, row.get::<_, i32>(3) as u32, row.get(2))?,
            attempts: row.get::<_, i64>(4) as u32,
        },
    }))
}

/// The lease recorded as each succeeded job's result (jobs not succeeded are left out).
pub async fn recorded_leases(client: &Client, jobs: &[JobId]) -> Result<HashMap<JobId, Lease>> {
    let ids: Vec<i64> = jobs.iter().map(|job| *job as i64).collect();
    let rows = client
        .query(
            "SELECT id, lease FROM jobs
             WHERE id = ANY($1) AND state = 'succeeded' AND lease IS NOT NULL",
            &[&ids],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| (row.get::<_, i64>(0) as u64, row.get::<_, i64>(1) as u64))
        .collect())
}
