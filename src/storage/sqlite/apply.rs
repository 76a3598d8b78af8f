//! Writing changes: one transaction for a group of commits.

use crate::job::JobId;
use crate::storage::spec_format;
use crate::storage::store::{Change, StoreError, WorkOrder};
use rusqlite::{params, params_from_iter, Connection, ToSql};
use std::collections::{HashMap, HashSet};

/// What a group of commits did beyond what was asked.
#[derive(Debug, Default)]
pub struct Applied {
    /// Jobs whose terminal record was refused because the ledger already has one.
    pub refused_second_records: Vec<JobId>,
}

/// Writes every commit of a group, in order, as one transaction: all of them or none.
pub fn apply(conn: &mut Connection, group: &[&[Change]]) -> Result<Applied, StoreError> {
    let mut applied = Applied::default();
    let all = || group.iter().flat_map(|changes| changes.iter());
    // Only unfinished jobs' starts are ever read back: a start whose job is finished in the
    // same group need not be written (short jobs often start and end within one).
    let mut finished: HashMap<JobId, &WorkOrder> = HashMap::new();
    for change in all() {
        if let Change::Finish(order) = change {
            finished.entry(order.job).or_insert(order);
        }
    }
    // A job submitted and finished in the same group (a call's, typically) is written once,
    // as it ends, not written pending and then updated: that spares the pages of the index of
    // pending jobs. Not a job with attempts counted in the group, which count onto its row.
    let counted: HashSet<JobId> = all()
        .filter_map(|change| match change {
            Change::Attempt(row) => Some(row.job),
            _ => None,
        })
        .collect();
    let mut written_finished: HashSet<JobId> = HashSet::new();
    let tx = conn.transaction()?;
    {
        // A submission written again (see `Change::Submit`) finds its rows there and leaves
        // them; another batch's idempotency key is still refused.
        let mut insert_batch = tx.prepare_cached(
            "INSERT INTO batches (id, name, submitted_at_ms, total, idempotency_key)
             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (id) DO NOTHING",
        )?;
        let mut insert_job = tx.prepare_cached(
            "INSERT INTO jobs (id, batch, name, spec, spec_format, state, queued_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?6) ON CONFLICT (id) DO NOTHING",
        )?;
        // Its record as `finish` takes it (see `Record`), then its submission.
        let mut insert_finished = tx.prepare_cached(
            "INSERT INTO jobs (id, state, worker, attempts, lost_attempts, failures,
                 started_at_ms, finished_at_ms, duration_ms, exit_code, output_tail, error, lease,
                 outputs, result, cursor, batch, name, spec, spec_format, queued_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17,
                 ?18, ?19, ?20, ?21)
             ON CONFLICT (id) DO NOTHING",
        )?;
        let mut finish = tx.prepare_cached(
            "UPDATE jobs SET state = ?2, worker = ?3, attempts = ?4, lost_attempts = ?5,
                 failures = ?6, started_at_ms = ?7, finished_at_ms = ?8, duration_ms = ?9,
                 exit_code = ?10, output_tail = ?11, error = ?12, lease = ?13, outputs = ?14,
                 result = ?15, cursor = ?16
             WHERE id = ?1 AND state = 'pending'",
        )?;
        let mut attempt = tx.prepare_cached(
            "INSERT INTO attempts (job, attempt, worker, outcome, started_at_ms, finished_at_ms,
                 exit_code, error) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?;
        let mut count_attempt = tx.prepare_cached(
            "UPDATE jobs SET attempts = MAX(attempts, ?2),
                 lost_attempts = lost_attempts + (?3 = 'lost'),
                 failures = failures + (?3 IN ('failed', 'timed_out')),
                 started_lease = CASE WHEN started_lease = ?4 THEN NULL ELSE started_lease END,
                 started_worker = CASE WHEN started_lease = ?4 THEN NULL ELSE started_worker END
             WHERE id = ?1",
        )?;
        let mut start = tx.prepare_cached(
            "UPDATE jobs SET attempts = MAX(attempts, ?2), started_lease = ?3, started_worker = ?4
             WHERE id = ?1 AND state = 'pending'",
        )?;
        // The highest cursor drawn is the highest a job has, or one that is on no job: cleared
        // by a retry (a follower may have passed it) or drawn for a second record the ledger
        // refused. Those are kept in meta, so none is drawn again.
        let mut keep_cursor = tx.prepare_cached(
            "INSERT INTO meta (key, value)
                 SELECT 'last_cursor', cursor FROM jobs
                 WHERE id = ?1 AND cursor IS NOT NULL AND state IN ('failed', 'cancelled')
             ON CONFLICT (key) DO UPDATE SET value = MAX(value, excluded.value)",
        )?;
        let mut keep_drawn_cursor = tx.prepare_cached(
            "INSERT INTO meta (key, value) VALUES ('last_cursor', ?1)
             ON CONFLICT (key) DO UPDATE SET value = MAX(value, excluded.value)",
        )?;
        let mut reopen = tx.prepare_cached(
            "UPDATE jobs SET state = 'pending', failures = 0, lost_attempts = 0, finished_at_ms = NULL,
                 error = NULL, lease = NULL, started_lease = NULL, started_worker = NULL,
                 result = NULL, cursor = NULL
             WHERE id = ?1 AND state IN ('failed', 'cancelled')",
        )?;
        let mut duplicate = tx.prepare_cached(
            "UPDATE jobs SET duplicates = duplicates + 1 WHERE id = ?1 AND lease IS NOT ?2",
        )?;
        // 1: written; 2: given up (too large for a frame). Replay asks again only for 0.
        let mut manifest_written =
            tx.prepare_cached("UPDATE jobs SET manifest_written = ?2 WHERE id = ?1")?;
        for change in group.iter().flat_map(|changes| changes.iter()) {
            match change {
                Change::Submit {
                    batch,
                    name,
                    submitted_at_ms,
                    first_job,
                    jobs,
                    idempotency_key,
                } => {
                    insert_batch.execute(params![
                        *batch as i64,
                        name,
                        *submitted_at_ms as i64,
                        jobs.len() as i64,
                        idempotency_key.as_deref()
                    ])?;
                    for (offset, (name, spec)) in jobs.iter().enumerate() {
                        let job = first_job + offset as u64;
                        let ends_here = finished.get(&job).filter(|_| !counted.contains(&job));
                        if let Some(order) = ends_here {
                            let record = Record::of(order);
                            let submission: [&dyn ToSql; 5] = [
                                &(*batch as i64),
                                name,
                                &spec.as_bytes(),
                                &spec_format::CURRENT,
                                &(*submitted_at_ms as i64),
                            ];
                            let inserted = insert_finished.execute(params_from_iter(
                                record.values().into_iter().chain(submission),
                            ))?;
                            // Already on disk (an earlier group wrote it pending): its finish
                            // is written as any other.
                            if inserted == 1 {
                                written_finished.insert(job);
                            }
                            continue;
                        }
                        insert_job.execute(params![
                            job as i64,
                            *batch as i64,
                            name,
                            spec.as_bytes(),
                            spec_format::CURRENT,
                            *submitted_at_ms as i64
                        ])?;
                    }
                }
                // Its first finish in the group was written with its submission.
                Change::Finish(order) if written_finished.remove(&order.job) => {}
                Change::Finish(order) => {
                    let changed = finish.execute(&Record::of(order).values()[..])?;
                    if changed != 1 {
                        applied.refused_second_records.push(order.job);
                        // Its cursor was drawn all the same: kept, so it is never drawn again.
                        keep_drawn_cursor.execute(params![order.cursor as i64])?;
                    }
                }
                Change::Attempt(row) => {
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
                    count_attempt.execute(params![
                        row.job as i64,
                        row.attempt,
                        row.outcome,
                        row.lease as i64
                    ])?;
                }
                Change::Started(starts) => {
                    for started in starts.iter().filter(|row| !finished.contains_key(&row.job)) {
                        start.execute(params![
                            started.job as i64,
                            started.attempt,
                            started.lease as i64,
                            started.worker
                        ])?;
                    }
                }
                Change::Reopen(jobs) => {
                    for job in jobs {
                        keep_cursor.execute(params![*job as i64])?;
                        reopen.execute(params![*job as i64])?;
                    }
                }
                Change::ManifestsWritten(jobs) => {
                    for job in jobs {
                        manifest_written.execute(params![*job as i64, 1])?;
                    }
                }
                Change::ManifestsAbandoned(jobs) => {
                    for job in jobs {
                        manifest_written.execute(params![*job as i64, 2])?;
                    }
                }
                Change::Duplicates(jobs) => {
                    for (job, lease) in jobs {
                        duplicate.execute(params![*job as i64, *lease as i64])?;
                    }
                }
                Change::ReserveJobs(below) => {
                    tx.prepare_cached(
                        "INSERT INTO meta (key, value) VALUES ('reserved_jobs', ?1)
                         ON CONFLICT (key) DO UPDATE SET value = MAX(value, excluded.value)",
                    )?
                    .execute(params![*below as i64])?;
                }
            }
        }
    }
    tx.commit()?;
    Ok(applied)
}

/// A terminal record's values as both ways of writing it take them: `?1` the job, `?2` to
/// `?16` the record.
struct Record<'a> {
    order: &'a WorkOrder,
    job: i64,
    state: &'static str,
    started_at_ms: Option<i64>,
    finished_at_ms: i64,
    duration_ms: Option<i64>,
    lease: Option<i64>,
    result: Option<&'a [u8]>,
    cursor: i64,
}

impl<'a> Record<'a> {
    fn of(order: &'a WorkOrder) -> Self {
        Record {
            order,
            job: order.job as i64,
            state: order.state.as_str(),
            started_at_ms: order.started_at_ms.map(|ms| ms as i64),
            finished_at_ms: order.finished_at_ms as i64,
            duration_ms: order.duration_ms.map(|ms| ms as i64),
            lease: order.lease.map(|lease| lease as i64),
            result: order.result.as_deref(),
            cursor: order.cursor as i64,
        }
    }

    fn values(&self) -> [&dyn ToSql; 16] {
        let order = self.order;
        [
            &self.job,
            &self.state,
            &order.worker,
            &order.attempts,
            &order.lost_attempts,
            &order.failures,
            &self.started_at_ms,
            &self.finished_at_ms,
            &self.duration_ms,
            &order.exit_code,
            &order.output_tail,
            &order.error,
            &self.lease,
            &order.outputs,
            &self.result,
            &self.cursor,
        ]
    }
}
