//! Finished jobs' results and cursors as the SQLite engine writes, reads and replays them.

use super::{apply, queries, replay, schema};
use crate::actors::ledger::MAX_RESULTS_PAGE_BYTES;
use crate::job::{JobId, JobSpec, JobState, SpecBytes};
use crate::storage::store::{Change, CompletionFilter, WorkOrder};
use rusqlite::Connection;
use std::path::Path;
use std::sync::Arc;

fn ledger() -> Connection {
    let mut conn = Connection::open_in_memory().unwrap();
    schema::prepare(&mut conn, Path::new(":memory:")).unwrap();
    conn
}

/// Batch `batch` with `jobs` jobs, the first of them `first_job`.
fn submit(batch: u64, first_job: JobId, jobs: usize) -> Change {
    let spec = SpecBytes::encode(&JobSpec::call("noop", Vec::new()));
    Change::Submit {
        batch,
        name: "b".into(),
        submitted_at_ms: 1,
        first_job,
        jobs: Arc::new(vec![(Some("named".into()), spec); jobs]),
        idempotency_key: None,
    }
}

fn finish(job: JobId, state: JobState, cursor: u64, result: Option<&[u8]>) -> Change {
    Change::Finish(Box::new(WorkOrder {
        job,
        state,
        lease: None,
        outputs: None,
        worker: Some("w1".into()),
        attempts: 1,
        lost_attempts: 0,
        failures: u32::from(state == JobState::Failed),
        started_at_ms: Some(10),
        finished_at_ms: 20 + cursor,
        duration_ms: Some(3),
        exit_code: Some(0),
        output_tail: Some(String::new()),
        error: None,
        result: result.map(Arc::from),
        cursor,
    }))
}

fn write(conn: &mut Connection, changes: Vec<Change>) {
    let applied = apply(conn, &[&changes]).unwrap();
    assert!(applied.refused_second_records.is_empty());
}

/// (cursor, job, result) of each record of a page.
fn page(conn: &Connection, batch: Option<u64>, after: u64) -> Vec<(u64, JobId, Option<Vec<u8>>)> {
    let filter = CompletionFilter {
        batch,
        after,
        limit: 100,
    };
    queries::completions(conn, filter)
        .unwrap()
        .into_iter()
        .map(|record| (record.record.cursor, record.record.id, record.result))
        .collect()
}

#[test]
fn finished_records_keep_their_result_and_cursor_and_a_retry_clears_both() {
    let mut conn = ledger();
    let binary = [0u8, 0xff, 0x80, b'\n'];
    write(&mut conn, vec![submit(1, 1, 2), submit(2, 3, 1)]);
    write(
        &mut conn,
        vec![
            finish(2, JobState::Succeeded, 1, Some(&binary)),
            finish(3, JobState::Succeeded, 2, Some(b"three")),
            finish(1, JobState::Failed, 3, None),
        ],
    );
    assert_eq!(
        page(&conn, None, 0),
        vec![
            (1, 2, Some(binary.to_vec())),
            (2, 3, Some(b"three".to_vec())),
            (3, 1, None)
        ]
    );
    assert_eq!(
        page(&conn, Some(1), 1),
        vec![(3, 1, None)],
        "one batch's, after a cursor"
    );
    let record = &queries::completions(
        &conn,
        CompletionFilter {
            batch: Some(1),
            after: 0,
            limit: 1,
        },
    )
    .unwrap()[0]
        .record;
    assert_eq!(
        (
            record.id,
            record.batch,
            record.name.as_deref(),
            record.state
        ),
        (2, 1, Some("named"), JobState::Succeeded)
    );
    let job = queries::job(&conn, 2).unwrap().unwrap();
    assert_eq!(job.result.as_deref(), Some(&binary[..]));
    assert_eq!(queries::job(&conn, 1).unwrap().unwrap().result, None);

    // The failed job, the last recorded, is retried: its cursor is gone, and is not drawn again
    // after a restart.
    write(&mut conn, vec![Change::Reopen(vec![1])]);
    assert_eq!(page(&conn, Some(1), 0), vec![(1, 2, Some(binary.to_vec()))]);
    assert_eq!(replay(&mut conn).unwrap().last_cursor, 3);
    write(
        &mut conn,
        vec![finish(1, JobState::Succeeded, 4, Some(b"again"))],
    );
    assert_eq!(page(&conn, None, 2), vec![(4, 1, Some(b"again".to_vec()))]);
    assert_eq!(replay(&mut conn).unwrap().last_cursor, 4);
}

#[test]
fn a_page_stops_after_the_result_that_passes_its_bytes() {
    let mut conn = ledger();
    write(&mut conn, vec![submit(1, 1, 4)]);
    let third = vec![1u8; MAX_RESULTS_PAGE_BYTES / 3 + 1];
    write(
        &mut conn,
        (1..=4)
            .map(|job| finish(job, JobState::Succeeded, job, Some(&third)))
            .collect(),
    );
    let read = page(&conn, None, 0);
    assert_eq!(
        read.len(),
        3,
        "the third passes the bytes and ends the page"
    );
    assert_eq!(page(&conn, None, 3).len(), 1);
}

#[test]
fn pages_read_by_their_indexes() {
    let conn = ledger();
    let plan = |sql: &str| -> String {
        let mut statement = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let rows = statement
            .query_map([], |row| row.get::<_, String>(3))
            .unwrap();
        rows.collect::<Result<Vec<_>, _>>().unwrap().join("; ")
    };
    let every = plan("SELECT id FROM jobs WHERE cursor > 5 ORDER BY cursor LIMIT 10");
    assert!(every.contains("jobs_by_cursor"), "{every}");
    let one = plan("SELECT id FROM jobs WHERE batch = 2 AND cursor > 5 ORDER BY cursor LIMIT 10");
    assert!(one.contains("jobs_by_batch_cursor"), "{one}");
}

/// Every column of every job, in id order.
fn job_rows(conn: &Connection) -> Vec<Vec<rusqlite::types::Value>> {
    let mut statement = conn.prepare("SELECT * FROM jobs ORDER BY id").unwrap();
    let columns = statement.column_count();
    statement
        .query_map([], |row| {
            (0..columns)
                .map(|column| row.get::<_, rusqlite::types::Value>(column))
                .collect()
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn failed_attempt(job: JobId) -> Change {
    Change::Attempt(Box::new(crate::storage::store::AttemptRow {
        job,
        lease: 7,
        attempt: 1,
        worker: "w1".into(),
        outcome: "failed",
        started_at_ms: 5,
        finished_at_ms: 6,
        exit_code: Some(1),
        error: Some("exit 1".into()),
    }))
}

#[test]
fn jobs_submitted_and_finished_in_one_group_are_written_as_in_two_and_once() {
    // Job 1 ends in the group, job 2 too after a failed attempt counted there, job 3 stays
    // pending; job 1 is reported twice.
    let ends = || {
        vec![
            failed_attempt(2),
            finish(1, JobState::Succeeded, 1, Some(b"one")),
            finish(2, JobState::Succeeded, 2, None),
            finish(1, JobState::Failed, 3, None),
        ]
    };
    let mut apart = ledger();
    write(&mut apart, vec![submit(1, 1, 3)]);
    let applied = apply(&mut apart, &[&ends()]).unwrap();
    assert_eq!(applied.refused_second_records, vec![1]);

    let mut together = ledger();
    let submission = [submit(1, 1, 3)];
    let applied = apply(&mut together, &[&submission, &ends()]).unwrap();
    assert_eq!(applied.refused_second_records, vec![1]);
    assert_eq!(job_rows(&together), job_rows(&apart));
    let pending: i64 = together
        .query_row(
            "SELECT COUNT(*) FROM jobs INDEXED BY jobs_unfinished WHERE state = 'pending'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(pending, 1);

    // Submitted again with its finish (a call's submission rides with every commit about its
    // job until one is durable): what is on disk stays, and the finish is refused as a second.
    let again = [submit(1, 1, 3), finish(1, JobState::Succeeded, 4, None)];
    let applied = apply(&mut together, &[&again]).unwrap();
    assert_eq!(applied.refused_second_records, vec![1]);
    assert_eq!(job_rows(&together), job_rows(&apart));
    assert_eq!(replay(&mut together).unwrap().last_cursor, 4);
}
