//! The PostgreSQL ledger's results against a real server: finished jobs read back in recording
//! order with their results, and a ledger made by the release before (schema version 1, see
//! tests/fixtures/make-postgres-v1.sh) numbered in finish order on first connect and going on.

mod common;

use common::ha::Coordinators;
use common::postgres::PgServer;
use common::store::{commit, finished, lead, peer, submit};
use common::{wait_batch_done, Cluster};
use drover::actors::ledger::MAX_RESULTS_PAGE_BYTES;
use drover::job::{JobSpec, JobState};
use drover::status::{Completion, Finished};
use drover::storage::store::{Change, CompletionFilter, LedgerStore};
use futures::executor::block_on;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A page of completions.
fn page(store: &dyn LedgerStore, batch: Option<u64>, after: u64, limit: u32) -> Vec<Completion> {
    block_on(store.completions(CompletionFilter {
        batch,
        after,
        limit,
    }))
    .unwrap()
}

/// (cursor, job) of each record of a page.
fn cursors(page: &[Completion]) -> Vec<(u64, u64)> {
    page.iter()
        .map(|completion| (completion.record.cursor, completion.record.id))
        .collect()
}

/// A job's stored result.
fn result(store: &dyn LedgerStore, job: u64) -> Option<Vec<u8>> {
    block_on(store.job(job)).unwrap().unwrap().result
}

#[test]
fn finished_jobs_are_read_back_in_recording_order_with_their_results() {
    use JobState::*;
    let server = PgServer::start();
    server.create_database("results");
    let (term, _) = lead(&server.url("results"), peer("127.0.0.1:7751"));
    let store = &*term.store;
    assert_eq!(term.replay.last_cursor, 0);
    commit(store, vec![submit(1, 1, 4, None), submit(2, 5, 2, None)]).unwrap();
    let binary: &[u8] = &[0xff, 0x00, 0x80];
    commit(
        store,
        vec![
            finished(2, Succeeded, 12, 1, Some(b"two")),
            finished(5, Succeeded, 15, 2, Some(binary)),
            finished(1, Failed, 11, 3, None),
            finished(3, Cancelled, 13, 4, None),
            // A second record of job 2, refused: its cursor is a gap.
            finished(2, Failed, 99, 5, Some(b"not this")),
        ],
    )
    .unwrap();
    // Job 1 retried and finished again: found under its new cursor only.
    commit(
        store,
        vec![
            Change::Reopen(vec![1]),
            finished(1, Succeeded, 21, 6, Some(b"one again")),
        ],
    )
    .unwrap();
    commit(store, vec![finished(4, Failed, 14, 7, Some(b""))]).unwrap();

    let all = page(store, None, 0, 100);
    assert_eq!(cursors(&all), vec![(1, 2), (2, 5), (4, 3), (6, 1), (7, 4)]);
    let results: Vec<Option<&[u8]>> = all.iter().map(|c| c.result.as_deref()).collect();
    assert_eq!(
        results,
        vec![
            Some(&b"two"[..]),
            Some(binary),
            None,
            Some(&b"one again"[..]),
            // An attempt that returned nothing has no result.
            None
        ]
    );
    assert_eq!(
        all[3].record,
        Finished {
            cursor: 6,
            id: 1,
            batch: 1,
            name: None,
            state: Succeeded,
            exit_code: Some(0),
            worker: Some("w1".into()),
            duration_ms: Some(1_000),
            finished_at_ms: 3_001,
            error: None,
        }
    );
    assert_eq!(all[4].record.error.as_deref(), Some("error 4"));
    // Pages of a batch, and of every batch, after a cursor.
    assert_eq!(cursors(&page(store, Some(1), 0, 2)), vec![(1, 2), (4, 3)]);
    assert_eq!(cursors(&page(store, Some(1), 4, 2)), vec![(6, 1), (7, 4)]);
    assert_eq!(cursors(&page(store, Some(1), 7, 2)), vec![]);
    assert_eq!(cursors(&page(store, Some(2), 0, 100)), vec![(2, 5)]);
    assert_eq!(cursors(&page(store, Some(3), 0, 100)), vec![]);
    assert_eq!(cursors(&page(store, None, 2, 2)), vec![(4, 3), (6, 1)]);
    // One job's record carries its result too.
    assert_eq!(result(store, 5).as_deref(), Some(binary));
    assert_eq!(result(store, 2).as_deref(), Some(&b"two"[..]));
    assert_eq!(result(store, 4), None);
    assert_eq!(result(store, 3), None);
    assert_eq!(result(store, 6), None);

    // The last record retried: it leaves the pages, and its cursor is never drawn again.
    commit(store, vec![Change::Reopen(vec![4])]).unwrap();
    assert_eq!(result(store, 4), None);
    assert_eq!(cursors(&page(store, Some(1), 4, 100)), vec![(6, 1)]);
    block_on(store.close()).unwrap();
    drop(term);
    let (term, _) = lead(&server.url("results"), peer("127.0.0.1:7751"));
    let store = &*term.store;
    assert_eq!(term.replay.last_cursor, 7);
    assert_eq!(cursors(&page(store, None, 0, 100)), cursors(&all[..4]));

    // Large results: a page ends with the record whose result takes it past its budget.
    let half = vec![7u8; MAX_RESULTS_PAGE_BYTES / 2];
    let sizes = [half.as_slice(), &half, b"x", b"y"];
    commit(store, vec![submit(3, 7, 4, None)]).unwrap();
    commit(
        store,
        (7..11)
            .zip(sizes)
            .map(|(job, result)| finished(job, Succeeded, job, job + 1, Some(result)))
            .collect(),
    )
    .unwrap();
    let first = page(store, Some(3), 0, 100);
    // Two halves fill it, not past it: the third passes it and is the last.
    assert_eq!(cursors(&first), vec![(8, 7), (9, 8), (10, 9)]);
    assert_eq!(first[1].result.as_deref(), Some(&half[..]));
    assert_eq!(cursors(&page(store, Some(3), 10, 100)), vec![(11, 10)]);
    assert_eq!(cursors(&page(store, Some(3), 0, 1)), vec![(8, 7)]);
}

/// A ledger of schema version 1, dumped by the release before (see
/// tests/fixtures/make-postgres-v1.sh).
fn fixture_v1() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/postgres-v1.sql")
}

/// A fresh server holding the fixture in database `v1`, not yet opened by this drover.
fn server_with_v1() -> PgServer {
    let server = PgServer::start();
    server.create_database("v1");
    server.psql_file("v1", &fixture_v1());
    assert_eq!(schema_version(&server), "1");
    server
}

fn schema_version(server: &PgServer) -> String {
    server.psql_in("v1", "SELECT value FROM meta WHERE key = 'schema_version'")
}

/// The finished jobs of the fixture in the order they finished, as it recorded them.
fn finish_order(server: &PgServer) -> Vec<u64> {
    server
        .psql_in(
            "v1",
            "SELECT id FROM jobs WHERE state <> 'pending' ORDER BY finished_at_ms, id",
        )
        .lines()
        .map(|id| id.parse().unwrap())
        .collect()
}

#[test]
fn a_postgres_ledger_of_schema_version_1_is_numbered_in_finish_order_and_goes_on() {
    use JobState::*;
    let server = server_with_v1();
    let order = finish_order(&server);
    // Job 1 slept: it finished after jobs submitted with it, so this order is not the ids'.
    assert_eq!(order, vec![2, 3, 4, 1, 7]);

    let (term, _) = lead(&server.url("v1"), peer("127.0.0.1:7761"));
    let store = &*term.store;
    assert_eq!(schema_version(&server), "2");
    assert_eq!(term.replay.last_cursor, 5);
    let unfinished: Vec<u64> = term.replay.unfinished.iter().map(|job| job.id).collect();
    assert_eq!(unfinished, vec![5, 6]);
    assert_eq!(term.replay.next_job, 8);

    // Every finished job has its cursor, in the order they finished, and no result.
    let old = page(store, None, 0, 100);
    let numbered: Vec<(u64, u64)> = (1..).zip(order.iter().copied()).collect();
    assert_eq!(cursors(&old), numbered);
    assert!(old.iter().all(|completion| completion.result.is_none()));
    let states: Vec<JobState> = old.iter().map(|c| c.record.state).collect();
    assert_eq!(
        states,
        vec![Succeeded, Failed, Cancelled, Succeeded, Cancelled]
    );
    assert_eq!(old[1].record.exit_code, Some(3));
    assert_eq!(old[1].record.worker.as_deref(), Some("fixture-worker"));
    let job1 = block_on(store.job(1)).unwrap().unwrap();
    assert_eq!(job1.record.output_tail.as_deref(), Some("ok-1\n"));
    assert_eq!(job1.result, None);
    assert_eq!(cursors(&page(store, Some(2), 0, 100)), vec![(5, 7)]);

    // One waiting job finishes after them, and new batches go on from there.
    commit(
        store,
        vec![
            finished(5, Succeeded, 50, 6, Some(b"w-1")),
            submit(3, 8, 1, None),
        ],
    )
    .unwrap();
    commit(store, vec![finished(8, Failed, 80, 7, Some(b"new"))]).unwrap();
    assert_eq!(cursors(&page(store, Some(2), 0, 100)), vec![(5, 7), (6, 5)]);
    assert_eq!(cursors(&page(store, None, 5, 100)), vec![(6, 5), (7, 8)]);
    assert_eq!(result(store, 5).as_deref(), Some(&b"w-1"[..]));
    block_on(store.close()).unwrap();
    drop(term);

    // The other finished by a coordinator of the release before, which went on leading while
    // this one migrated the schema (a rolling upgrade): as it writes a record, with no cursor.
    server.psql_in(
        "v1",
        "UPDATE jobs SET state = 'succeeded', worker = 'old-worker', attempts = 1,
             started_at_ms = 2000000000000, finished_at_ms = 2000000000001, duration_ms = 1,
             exit_code = 0, output_tail = 'waiting-2', error = NULL
         WHERE id = 6 AND state = 'pending'",
    );

    // Opened again: nothing is migrated twice, every cursor stays where it was, and the job
    // finished meanwhile is numbered after them.
    let (term, _) = lead(&server.url("v1"), peer("127.0.0.1:7761"));
    assert_eq!(term.replay.last_cursor, 8);
    assert_eq!(
        cursors(&page(&*term.store, None, 0, 100)),
        vec![
            (1, 2),
            (2, 3),
            (3, 4),
            (4, 1),
            (5, 7),
            (6, 5),
            (7, 8),
            (8, 6)
        ]
    );
    assert!(term.replay.unfinished.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_on_a_postgres_ledger_of_schema_version_1_gives_its_records_and_goes_on() {
    let server = server_with_v1();
    let order = finish_order(&server);
    let mut cluster = Cluster::new(&[]);
    let mut coordinators = Coordinators::on_loopback(cluster.dir.path(), &server.url("v1"), 1);
    cluster.address = coordinators.list();
    coordinators.start(0).await;
    coordinators.wait_leader(&[], Duration::from_secs(60)).await;
    let mut client = cluster.client().await;
    let counts: Vec<_> = client
        .batches()
        .await
        .unwrap()
        .iter()
        .map(|batch| (batch.id, batch.name.clone(), batch.total, batch.done))
        .collect();
    assert_eq!(
        counts,
        vec![
            (1, "finished".to_string(), 4, true),
            (2, "waiting".to_string(), 3, false)
        ]
    );
    // The records of before, in the order they finished, through the coordinator.
    let before = client.results(None, 0, 100, Duration::ZERO).await.unwrap();
    assert_eq!(
        cursors(&before.results),
        (1..).zip(order.iter().copied()).collect::<Vec<_>>()
    );
    assert_eq!(before.cursor, 5);
    let finished = client
        .results(Some(1), 0, 100, Duration::ZERO)
        .await
        .unwrap();
    assert!(finished.done, "batch 1 was done before the upgrade");
    assert_eq!(finished.results.len(), 4);

    // The waiting jobs run, new ones are taken, and their records follow with their results.
    cluster.start_worker("upgraded", 2, &[]);
    let waiting = wait_batch_done(&mut client, 2, Duration::from_secs(60)).await;
    assert_eq!((waiting.succeeded, waiting.cancelled), (2, 1));
    let called = client
        .call(JobSpec::call("noop", b"after".to_vec()))
        .await
        .unwrap();
    assert_eq!(
        (called.record.id, called.record.batch, called.record.cursor),
        (8, 3, 8)
    );
    assert_eq!(called.result.as_deref(), Some(&b"after"[..]));
    let after = client.results(None, 5, 100, Duration::ZERO).await.unwrap();
    let mut new_jobs: Vec<u64> = cursors(&after.results)
        .iter()
        .map(|(_, job)| *job)
        .collect();
    assert_eq!(
        cursors(&after.results)
            .iter()
            .map(|(cursor, _)| *cursor)
            .collect::<Vec<_>>(),
        vec![6, 7, 8]
    );
    new_jobs.sort();
    assert_eq!(new_jobs, vec![5, 6, 8]);
    let result_of = |job: u64| {
        after
            .results
            .iter()
            .find(|completion| completion.record.id == job)
            .and_then(|completion| completion.result.clone())
    };
    assert_eq!(result_of(5).as_deref(), Some(&b"w-1"[..]));
    assert_eq!(result_of(6).as_deref(), Some(&b"waiting-2\n"[..]));
    assert_eq!(schema_version(&server), "2");
    assert!(coordinators.log(0).contains("ledger schema migrated"));
}
