//! Writing changes: one transaction for a group of commits, fenced by the lease.
//!
//! The transaction first renews the lease by epoch and records the group's number in
//! `commit_marks`; if the lease's epoch is no longer this coordinator's, nothing is written.
//! The changes then go in as array statements (`... FROM unnest($1::bigint[], ...)`), one per
//! kind of change. `BEGIN`, the fence and every statement are sent together, without waiting
//! for any answer (the server runs them in the order sent), and `COMMIT` follows once the fence
//! is seen to hold: two round trips to the database per group, whatever its size.
//!
//! An array statement applies its rows at once, not one after another, so a group is cut into
//! *stages* in which no job is touched twice; within a stage the order of the rows cannot
//! matter, and the stages run in order. The result is what applying the changes one by one (as
//! the SQLite store does) gives: a job finished twice keeps its first record, a start after a
//! finish is not written, a reopen between two finishes lets the second in.

use crate::job::JobId;
use crate::storage::spec_format;
use crate::storage::store::{Change, StartRow};
use futures::future::{join_all, try_join_all};
use std::collections::HashSet;
use std::ops::Range;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Statement};

/// The statements a writer's connection prepares once.
pub struct Statements {
    fence: Statement,
    holder: Statement,
    renew: Statement,
    insert_batches: Statement,
    insert_jobs: Statement,
    finish: Statement,
    insert_attempts: Statement,
    count_attempts: Statement,
    start: Statement,
    reopen: Statement,
    duplicates: Statement,
    manifests: Statement,
    reserve: Statement,
}

impl Statements {
    /// Prepares them on `client`.
    pub async fn prepare(client: &Client) -> Result<Statements, tokio_postgres::Error> {
        let texts = [
            // The fence: the lease is renewed only by its holder's epoch, and the group's number
            // recorded with it. Not renewed: another coordinator holds the lease. Renewed but
            // not marked: this group was committed already, by a try whose answer was lost (a
            // try still running on a lost connection holds the lease row until it ends, so this
            // waits for it and sees what it did). Either way the statement fails (division by
            // zero), which aborts the transaction: the statements sent after it are skipped by
            // the server, so a deposed leader's rows never lock a job its successor writes.
            "WITH fence AS (
                 UPDATE lease SET expires_at = now() + $3::float8 * interval '1 millisecond'
                 WHERE id = 1 AND epoch = $1 RETURNING epoch),
             mark AS (
                 INSERT INTO commit_marks (epoch, seq) SELECT epoch, $2 FROM fence
                 ON CONFLICT (epoch) DO UPDATE SET seq = EXCLUDED.seq
                 WHERE commit_marks.seq < EXCLUDED.seq
                 RETURNING seq)
             SELECT 1 / (SELECT count(*) FROM mark)::int",
            // Why a fence did not hold, read after its transaction rolled back: who holds the
            // lease, and how far this coordinator's own commits got (a group whose mark is
            // there was committed, whoever leads now).
            "SELECT COALESCE(address, holder, '?'), epoch,
                 COALESCE((SELECT seq FROM commit_marks WHERE epoch = $1), 0)
             FROM lease WHERE id = 1",
            // The last statement of every group: the lease runs from the end of the
            // transaction, not its start (`now()`), so a long one never lets it lapse.
            "UPDATE lease SET expires_at = clock_timestamp() + $2::float8 * interval '1 millisecond'
             WHERE id = 1 AND epoch = $1",
            // A submission written again (see `Change::Submit`) finds its rows there and leaves
            // them; another batch's idempotency key is still refused.
            "INSERT INTO batches (id, name, submitted_at_ms, total, idempotency_key)
             SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::bigint[], $5::text[])
             ON CONFLICT (id) DO NOTHING",
            "INSERT INTO jobs (id, batch, name, spec, spec_format, state, queued_at_ms)
             SELECT u.id, u.batch, u.name, u.spec, $6, 'pending', u.queued
             FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::bytea[], $5::bigint[])
                 AS u(id, batch, name, spec, queued)
             ON CONFLICT (id) DO NOTHING",
            // A cursor of 0 is none drawn: the job is numbered when the next term begins.
            "UPDATE jobs j SET state = u.state, worker = u.worker, attempts = u.attempts,
                 lost_attempts = u.lost, failures = u.failures, started_at_ms = u.started,
                 finished_at_ms = u.finished, duration_ms = u.duration, exit_code = u.exit_code,
                 output_tail = u.tail, error = u.error, lease = u.lease, outputs = u.outputs,
                 result = u.result, cursor = NULLIF(u.cursor, 0)
             FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[], $5::bigint[],
                     $6::bigint[], $7::bigint[], $8::bigint[], $9::bigint[], $10::int[],
                     $11::text[], $12::text[], $13::bigint[], $14::text[], $15::bytea[],
                     $16::bigint[])
                 AS u(job, state, worker, attempts, lost, failures, started, finished, duration,
                      exit_code, tail, error, lease, outputs, result, cursor)
             WHERE j.id = u.job AND j.state = 'pending'
             RETURNING j.id",
            // In the order given: a job's history is read back in insertion order.
            "INSERT INTO attempts (job, attempt, worker, outcome, started_at_ms, finished_at_ms,
                 exit_code, error)
             SELECT u.job, u.attempt, u.worker, u.outcome, u.started, u.finished, u.exit_code,
                 u.error
             FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::bigint[],
                     $6::bigint[], $7::int[], $8::text[]) WITH ORDINALITY
                 AS u(job, attempt, worker, outcome, started, finished, exit_code, error, ord)
             ORDER BY u.ord",
            "UPDATE jobs j SET attempts = GREATEST(j.attempts, u.attempt),
                 lost_attempts = j.lost_attempts + (u.outcome = 'lost')::int,
                 failures = j.failures + (u.outcome IN ('failed', 'timed_out'))::int,
                 started_lease = CASE WHEN j.started_lease = u.lease THEN NULL
                                      ELSE j.started_lease END,
                 started_worker = CASE WHEN j.started_lease = u.lease THEN NULL
                                       ELSE j.started_worker END
             FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::bigint[])
                 AS u(job, attempt, outcome, lease)
             WHERE j.id = u.job",
            "UPDATE jobs j SET attempts = GREATEST(j.attempts, u.attempt),
                 started_lease = u.lease, started_worker = u.worker
             FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::text[])
                 AS u(job, attempt, lease, worker)
             WHERE j.id = u.job AND j.state = 'pending'",
            // The highest cursor cleared is kept (`meta` 'cleared_cursor'), so that a restart
            // never draws a cursor that a follower has already been given.
            "WITH reopened AS (
                 UPDATE jobs j SET state = 'pending', failures = 0, lost_attempts = 0,
                     finished_at_ms = NULL, error = NULL, lease = NULL, started_lease = NULL,
                     started_worker = NULL, result = NULL, cursor = NULL
                 FROM jobs before
                 WHERE j.id = before.id AND j.id = ANY($1::bigint[])
                     AND j.state IN ('failed', 'cancelled')
                 RETURNING before.cursor)
             INSERT INTO meta (key, value)
             SELECT 'cleared_cursor', max(cursor) FROM reopened HAVING max(cursor) IS NOT NULL
             ON CONFLICT (key) DO UPDATE SET value = GREATEST(meta.value, EXCLUDED.value)",
            "UPDATE jobs j SET duplicates = j.duplicates + 1
             FROM unnest($1::bigint[], $2::bigint[]) AS u(job, lease)
             WHERE j.id = u.job AND j.lease IS DISTINCT FROM u.lease",
            // 1: written; 2: given up (too large for a frame). Replay asks again only for 0.
            "UPDATE jobs j SET manifest_written = u.written
             FROM unnest($1::bigint[], $2::smallint[]) AS u(job, written)
             WHERE j.id = u.job",
            "INSERT INTO meta (key, value) VALUES ('reserved_jobs', $1)
             ON CONFLICT (key) DO UPDATE SET value = GREATEST(meta.value, EXCLUDED.value)",
        ];
        let mut prepared = try_join_all(texts.iter().map(|text| client.prepare(text)))
            .await?
            .into_iter();
        let mut next = || prepared.next().expect("one statement per text");
        Ok(Statements {
            fence: next(),
            holder: next(),
            renew: next(),
            insert_batches: next(),
            insert_jobs: next(),
            finish: next(),
            insert_attempts: next(),
            count_attempts: next(),
            start: next(),
            reopen: next(),
            duplicates: next(),
            manifests: next(),
            reserve: next(),
        })
    }
}

/// What a group of commits did beyond what was asked.
#[derive(Debug, Default)]
pub struct Applied {
    /// Jobs whose terminal record was refused because the ledger already has one.
    pub refused_second_records: Vec<JobId>,
}

/// Why a group was not written.
#[derive(Debug)]
pub enum NotApplied {
    /// Another coordinator holds the lease: (its address, its epoch); this group was not
    /// committed.
    Fenced(String, u64),
    /// This group was committed already (by a try whose answer was lost). The lease may have
    /// passed to another coordinator since: the group stays durable all the same.
    Done,
    /// Not written, for no reason that lasts: try again.
    Retry,
    /// The database said no, or could not be reached.
    Database(tokio_postgres::Error),
}

impl From<tokio_postgres::Error> for NotApplied {
    fn from(error: tokio_postgres::Error) -> Self {
        NotApplied::Database(error)
    }
}

/// Writes every commit of a group, in order, as one transaction fenced by the lease of
/// `epoch`: all of them or none.
pub async fn apply(
    client: &mut Client,
    statements: &Statements,
    epoch: u64,
    seq: u64,
    ttl_ms: f64,
    group: &[&[Change]],
) -> Result<Applied, NotApplied> {
    // Only unfinished jobs' starts are ever read back: a start whose job is finished in the
    // same group need not be written.
    let finished: HashSet<JobId> = group
        .iter()
        .flat_map(|changes| changes.iter())
        .filter_map(|change| match change {
            Change::Finish(order) => Some(order.job),
            _ => None,
        })
        .collect();
    let mut stages = Stages(vec![Stage::default()]);
    for change in group.iter().flat_map(|changes| changes.iter()) {
        stages.add(change, &finished);
    }

    let format = spec_format::CURRENT as i32;
    let sent: Vec<Sent> = stages
        .0
        .iter()
        .flat_map(|stage| stage.statements(statements, &format))
        .collect();
    let epoch = epoch as i64;
    let params = [&epoch as &(dyn ToSql + Sync), &(seq as i64), &ttl_ms];
    // Polled in order, so sent in order: BEGIN, the fence, the stages one after another, and
    // the last renewal.
    let (begun, fence, answers, renewed) = futures::future::join4(
        client.batch_execute("BEGIN"),
        client.query_one(&statements.fence, &params),
        join_all(
            sent.iter()
                .map(|sent| client.query(sent.statement, &sent.params)),
        ),
        client.execute(&statements.renew, &[&epoch, &ttl_ms]),
    )
    .await;
    let fence_failed =
        matches!(&fence, Err(error) if error.code() == Some(&SqlState::DIVISION_BY_ZERO));
    let outcome = begun.map_err(NotApplied::from).and_then(|()| {
        if fence_failed {
            // Told apart below, once rolled back: the statements after it were skipped.
            return Err(NotApplied::Fenced(String::new(), 0));
        }
        fence?;
        let mut applied = Applied::default();
        for (sent, answer) in sent.iter().zip(answers) {
            let rows = answer?;
            if let Some(jobs) = sent.finishing {
                let recorded: HashSet<i64> = rows.iter().map(|row| row.get(0)).collect();
                applied.refused_second_records.extend(
                    jobs.iter()
                        .filter(|job| !recorded.contains(job))
                        .map(|job| *job as u64),
                );
            }
        }
        // Last: after a failed statement it fails too, saying only that the transaction is
        // aborted.
        renewed?;
        Ok(applied)
    });
    match outcome {
        Ok(applied) => {
            client.batch_execute("COMMIT").await?;
            Ok(applied)
        }
        Err(not_applied) => {
            if !client.is_closed() {
                client.batch_execute("ROLLBACK").await?;
            }
            match not_applied {
                NotApplied::Fenced(..) => {
                    let row = client.query_one(&statements.holder, &[&epoch]).await?;
                    let (holder, leading, mark): (String, i64, i64) =
                        (row.get(0), row.get(1), row.get(2));
                    if mark >= seq as i64 {
                        Err(NotApplied::Done)
                    } else if leading != epoch {
                        Err(NotApplied::Fenced(holder, leading as u64))
                    } else {
                        // Neither: the fence failed under this epoch's lease with the group
                        // unmarked. It cannot; trying again is the safe answer if it does.
                        Err(NotApplied::Retry)
                    }
                }
                other => Err(other),
            }
        }
    }
}

/// One statement of a group, with its parameters.
struct Sent<'a> {
    statement: &'a Statement,
    params: Vec<&'a (dyn ToSql + Sync)>,
    /// For the finish statement: the jobs it was given (those it did not return were refused).
    finishing: Option<&'a [i64]>,
}

/// Changes that touch each job at most once, each kind gathered into columns.
#[derive(Default)]
struct Stage<'a> {
    touched: HashSet<JobId>,
    submitted: Vec<Range<JobId>>,
    batches: Batches<'a>,
    jobs: Jobs<'a>,
    finish: Finishes<'a>,
    attempts: Attempts<'a>,
    starts: (Vec<i64>, Vec<i64>, Vec<i64>, Vec<&'a str>),
    reopen: Vec<i64>,
    duplicates: (Vec<i64>, Vec<i64>),
    manifests: (Vec<i64>, Vec<i16>),
    /// The highest job id reserved in this stage, if any.
    reserve: Option<i64>,
}

#[derive(Default)]
struct Batches<'a> {
    id: Vec<i64>,
    name: Vec<&'a str>,
    submitted: Vec<i64>,
    total: Vec<i64>,
    key: Vec<Option<&'a str>>,
}

#[derive(Default)]
struct Jobs<'a> {
    id: Vec<i64>,
    batch: Vec<i64>,
    name: Vec<Option<&'a str>>,
    spec: Vec<&'a [u8]>,
    queued: Vec<i64>,
}

#[derive(Default)]
struct Finishes<'a> {
    job: Vec<i64>,
    state: Vec<&'static str>,
    worker: Vec<Option<&'a str>>,
    attempts: Vec<i64>,
    lost: Vec<i64>,
    failures: Vec<i64>,
    started: Vec<Option<i64>>,
    finished: Vec<i64>,
    duration: Vec<Option<i64>>,
    exit_code: Vec<Option<i32>>,
    tail: Vec<Option<&'a str>>,
    error: Vec<Option<&'a str>>,
    lease: Vec<Option<i64>>,
    outputs: Vec<Option<&'a str>>,
    result: Vec<Option<&'a [u8]>>,
    cursor: Vec<i64>,
}

#[derive(Default)]
struct Attempts<'a> {
    job: Vec<i64>,
    attempt: Vec<i64>,
    worker: Vec<&'a str>,
    outcome: Vec<&'static str>,
    started: Vec<i64>,
    finished: Vec<i64>,
    exit_code: Vec<Option<i32>>,
    error: Vec<Option<&'a str>>,
    lease: Vec<i64>,
}

/// A group's changes cut into stages, row by row: a row goes into the last stage unless that
/// stage touches its job already, and then into a new one. Rows of one job stay in order.
struct Stages<'a>(Vec<Stage<'a>>);

impl<'a> Stages<'a> {
    /// The stage for a row of `job`: the last one, or a new one if the last touches `job`.
    fn of(&mut self, job: JobId) -> &mut Stage<'a> {
        let last = self.0.last().expect("never empty");
        if last.touched.contains(&job) || last.submitted.iter().any(|range| range.contains(&job)) {
            self.0.push(Stage::default());
        }
        let stage = self.0.last_mut().expect("never empty");
        stage.touched.insert(job);
        stage
    }

    fn add(&mut self, change: &'a Change, finished: &HashSet<JobId>) {
        match change {
            Change::Submit {
                batch,
                name,
                submitted_at_ms,
                first_job,
                jobs,
                idempotency_key,
            } => {
                // New jobs, unless this is a call's submission written again: then in a stage
                // after the one that touched them (or wrote them) last.
                let count = jobs.len() as u64;
                let range = *first_job..first_job + count;
                let last = self.0.last().expect("never empty");
                let again = range.clone().any(|job| last.touched.contains(&job))
                    || last
                        .submitted
                        .iter()
                        .any(|written| written.start < range.end && range.start < written.end);
                if again {
                    self.0.push(Stage::default());
                }
                let stage = self.0.last_mut().expect("never empty");
                stage.submitted.push(range);
                stage.batches.id.push(*batch as i64);
                stage.batches.name.push(name);
                stage.batches.submitted.push(*submitted_at_ms as i64);
                stage.batches.total.push(count as i64);
                stage.batches.key.push(idempotency_key.as_deref());
                for (offset, (name, spec)) in jobs.iter().enumerate() {
                    stage.jobs.id.push((first_job + offset as u64) as i64);
                    stage.jobs.batch.push(*batch as i64);
                    stage.jobs.name.push(name.as_deref());
                    stage.jobs.spec.push(spec.as_bytes());
                    stage.jobs.queued.push(*submitted_at_ms as i64);
                }
            }
            Change::Finish(order) => {
                let f = &mut self.of(order.job).finish;
                f.job.push(order.job as i64);
                f.state.push(order.state.as_str());
                f.worker.push(order.worker.as_deref());
                f.attempts.push(order.attempts.into());
                f.lost.push(order.lost_attempts.into());
                f.failures.push(order.failures.into());
                f.started.push(order.started_at_ms.map(|ms| ms as i64));
                f.finished.push(order.finished_at_ms as i64);
                f.duration.push(order.duration_ms.map(|ms| ms as i64));
                f.exit_code.push(order.exit_code);
                f.tail.push(order.output_tail.as_deref());
                f.error.push(order.error.as_deref());
                f.lease.push(order.lease.map(|lease| lease as i64));
                f.outputs.push(order.outputs.as_deref());
                f.result.push(order.result.as_deref());
                f.cursor.push(order.cursor as i64);
            }
            Change::Attempt(row) => {
                let a = &mut self.of(row.job).attempts;
                a.job.push(row.job as i64);
                a.attempt.push(row.attempt.into());
                a.worker.push(&row.worker);
                a.outcome.push(row.outcome);
                a.started.push(row.started_at_ms as i64);
                a.finished.push(row.finished_at_ms as i64);
                a.exit_code.push(row.exit_code);
                a.error.push(row.error.as_deref());
                a.lease.push(row.lease as i64);
            }
            Change::Started(rows) => {
                for StartRow {
                    job,
                    lease,
                    attempt,
                    worker,
                } in rows.iter().filter(|row| !finished.contains(&row.job))
                {
                    let s = &mut self.of(*job).starts;
                    s.0.push(*job as i64);
                    s.1.push((*attempt).into());
                    s.2.push(*lease as i64);
                    s.3.push(worker);
                }
            }
            Change::Reopen(jobs) => {
                for job in jobs {
                    self.of(*job).reopen.push(*job as i64);
                }
            }
            Change::ManifestsWritten(jobs) => {
                for job in jobs {
                    let m = &mut self.of(*job).manifests;
                    m.0.push(*job as i64);
                    m.1.push(1);
                }
            }
            Change::ManifestsAbandoned(jobs) => {
                for job in jobs {
                    let m = &mut self.of(*job).manifests;
                    m.0.push(*job as i64);
                    m.1.push(2);
                }
            }
            Change::Duplicates(pairs) => {
                for (job, lease) in pairs {
                    let d = &mut self.of(*job).duplicates;
                    d.0.push(*job as i64);
                    d.1.push(*lease as i64);
                }
            }
            Change::ReserveJobs(below) => {
                let stage = self.0.last_mut().expect("never empty");
                stage.reserve = stage.reserve.max(Some(*below as i64));
            }
        }
    }
}

impl<'a> Stage<'a> {
    /// The stage's statements, one per kind of change it holds.
    fn statements(&'a self, statements: &'a Statements, format: &'a i32) -> Vec<Sent<'a>> {
        let mut sent: Vec<(&Statement, Vec<&(dyn ToSql + Sync)>)> = Vec::new();
        if !self.batches.id.is_empty() {
            let b = &self.batches;
            sent.push((
                &statements.insert_batches,
                vec![&b.id, &b.name, &b.submitted, &b.total, &b.key],
            ));
            let j = &self.jobs;
            sent.push((
                &statements.insert_jobs,
                vec![&j.id, &j.batch, &j.name, &j.spec, &j.queued, format],
            ));
        }
        let f = &self.finish;
        let finishing = !f.job.is_empty();
        if finishing {
            sent.push((
                &statements.finish,
                vec![
                    &f.job,
                    &f.state,
                    &f.worker,
                    &f.attempts,
                    &f.lost,
                    &f.failures,
                    &f.started,
                    &f.finished,
                    &f.duration,
                    &f.exit_code,
                    &f.tail,
                    &f.error,
                    &f.lease,
                    &f.outputs,
                    &f.result,
                    &f.cursor,
                ],
            ));
        }
        let a = &self.attempts;
        if !a.job.is_empty() {
            sent.push((
                &statements.insert_attempts,
                vec![
                    &a.job,
                    &a.attempt,
                    &a.worker,
                    &a.outcome,
                    &a.started,
                    &a.finished,
                    &a.exit_code,
                    &a.error,
                ],
            ));
            sent.push((
                &statements.count_attempts,
                vec![&a.job, &a.attempt, &a.outcome, &a.lease],
            ));
        }
        let s = &self.starts;
        if !s.0.is_empty() {
            sent.push((&statements.start, vec![&s.0, &s.1, &s.2, &s.3]));
        }
        if !self.reopen.is_empty() {
            sent.push((&statements.reopen, vec![&self.reopen]));
        }
        let d = &self.duplicates;
        if !d.0.is_empty() {
            sent.push((&statements.duplicates, vec![&d.0, &d.1]));
        }
        let m = &self.manifests;
        if !m.0.is_empty() {
            sent.push((&statements.manifests, vec![&m.0, &m.1]));
        }
        if let Some(below) = &self.reserve {
            sent.push((&statements.reserve, vec![below]));
        }
        sent.into_iter()
            .map(|(statement, params)| Sent {
                statement,
                params,
                finishing: std::ptr::eq(statement, &statements.finish).then_some(&f.job[..]),
            })
            .collect()
    }
}
