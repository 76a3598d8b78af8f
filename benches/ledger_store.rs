//! How fast the ledger's stores commit, alone (no coordinator, no network but the database's):
//! 10,000 jobs submitted in one commit, their starts in commits of 100 rows, their results one
//! commit each (as they arrive from workers), all asked for at once so that group commit does
//! its work; and the round trip of one commit of one result, asked for one after another.
//!
//! `cargo bench --bench ledger_store` runs it on SQLite (a temporary directory) and on a
//! PostgreSQL server it starts itself (Debian's package, as the tests do; fsync on,
//! synchronous_commit on). Durability is never turned off.

#[path = "../tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;

use common::postgres::PgServer;
use drover::ha::{Cluster, Leadership, MemberRole, Peer};
use drover::job::{JobSpec, JobState, SpecBytes};
use drover::metrics::Metrics;
use drover::storage::postgres::PgLeadership;
use drover::storage::sqlite::SqliteStore;
use drover::storage::store::{Change, LedgerStore, StartRow, WorkOrder};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

const JOBS: u64 = 10_000;
const ROUND_TRIPS: usize = 500;

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let (sqlite, _) = SqliteStore::open(dir.path(), Arc::new(Metrics::default())).unwrap();
    run("sqlite", &sqlite);

    let server = PgServer::start();
    server.create_database("bench");
    let leadership = PgLeadership::new(
        &server.url("bench"),
        Duration::from_secs(2),
        Arc::new(Metrics::default()),
    )
    .unwrap();
    let me = Peer {
        address: "127.0.0.1:7700".into(),
        http: None,
    };
    let (cluster, _seen) = tokio::sync::watch::channel(Cluster {
        me: me.clone(),
        role: MemberRole::Standby,
        leader: None,
        members: vec![],
    });
    let term = futures::executor::block_on(leadership.campaign(me, cluster)).unwrap();
    run("postgres", &*term.store);
}

fn run(engine: &str, store: &dyn LedgerStore) {
    for round in 0..2 {
        let first = 1 + round * JOBS;
        let spec = SpecBytes::encode(&JobSpec::call("noop", b"".to_vec()));
        let jobs = Arc::new((0..JOBS).map(|_| (None, spec.clone())).collect());
        let began = Instant::now();
        wait(
            store,
            vec![vec![Change::Submit {
                batch: round + 1,
                name: "bench".into(),
                submitted_at_ms: 1,
                first_job: first,
                jobs,
                idempotency_key: None,
            }]],
        );
        let submitted = began.elapsed();
        let starts: Vec<Vec<Change>> = (first..first + JOBS)
            .collect::<Vec<_>>()
            .chunks(100)
            .map(|chunk| {
                vec![Change::Started(
                    chunk
                        .iter()
                        .map(|job| StartRow {
                            job: *job,
                            lease: job * 7,
                            attempt: 1,
                            worker: Arc::from("w1"),
                        })
                        .collect(),
                )]
            })
            .collect();
        let began = Instant::now();
        wait(store, starts);
        let started = began.elapsed();
        let finishes: Vec<Vec<Change>> =
            (first..first + JOBS).map(|job| vec![finish(job)]).collect();
        let began = Instant::now();
        wait(store, finishes);
        let finished = began.elapsed();
        let total = submitted + started + finished;
        println!(
            "{engine} (round {}): {JOBS} jobs submitted in {:.0} ms, started in {:.0} ms, \
             finished in {:.0} ms: {:.0} jobs/s through all three",
            round + 1,
            submitted.as_secs_f64() * 1000.0,
            started.as_secs_f64() * 1000.0,
            finished.as_secs_f64() * 1000.0,
            JOBS as f64 / total.as_secs_f64()
        );
    }
    let base = 1 + 2 * JOBS;
    let spec = SpecBytes::encode(&JobSpec::call("noop", b"".to_vec()));
    wait(
        store,
        vec![vec![Change::Submit {
            batch: 3,
            name: "round trips".into(),
            submitted_at_ms: 1,
            first_job: base,
            jobs: Arc::new((0..ROUND_TRIPS).map(|_| (None, spec.clone())).collect()),
            idempotency_key: None,
        }]],
    );
    let mut took: Vec<Duration> = (0..ROUND_TRIPS as u64)
        .map(|offset| {
            let began = Instant::now();
            wait(store, vec![vec![finish(base + offset)]]);
            began.elapsed()
        })
        .collect();
    took.sort();
    println!(
        "{engine}: one commit of one result, {ROUND_TRIPS} one after another: p50 {:.2} ms, \
         p99 {:.2} ms",
        took[took.len() / 2].as_secs_f64() * 1000.0,
        took[took.len() * 99 / 100].as_secs_f64() * 1000.0
    );
}

fn finish(job: u64) -> Change {
    Change::Finish(Box::new(WorkOrder {
        job,
        state: JobState::Succeeded,
        lease: Some(job * 7),
        outputs: None,
        worker: Some("w1".into()),
        attempts: 1,
        lost_attempts: 0,
        failures: 0,
        started_at_ms: Some(2),
        finished_at_ms: 3,
        duration_ms: Some(1),
        exit_code: Some(0),
        output_tail: None,
        error: None,
        result: None,
        cursor: job,
    }))
}

/// Asks for every commit at once and waits until all are durable.
fn wait(store: &dyn LedgerStore, commits: Vec<Vec<Change>>) {
    let (tx, rx) = mpsc::channel();
    let count = commits.len();
    for changes in commits {
        let tx = tx.clone();
        store.commit(
            changes,
            Box::new(move |result| {
                let _ = tx.send(result);
            }),
        );
    }
    for _ in 0..count {
        rx.recv().unwrap().unwrap();
    }
}
