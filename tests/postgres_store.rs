//! The PostgreSQL ledger store against a real server: the same answers as SQLite for the same
//! changes (records, results and pages of finished jobs by cursor), the fence of the lease,
//! commits held while the database is away, and bad input.

mod common;

use common::postgres::{PgServer, PASSWORD};
use common::store::{
    attempt, commit, empty_cluster, finish, finished, lead, peer, started, submit, TTL,
};
use drover::ha::{Deposed, Leadership};
use drover::job::JobState;
use drover::metrics::Metrics;
use drover::storage::postgres::PgLeadership;
use drover::storage::sqlite::SqliteStore;
use drover::storage::store::{
    Change, CompletionFilter, JobFilter, LedgerStore, Replay, StoreError,
};
use futures::executor::block_on;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// A campaign's error, which must come without waiting.
fn refused(url: &str) -> String {
    let leadership = match PgLeadership::new(url, TTL, Arc::new(Metrics::default())) {
        Ok(leadership) => leadership,
        Err(error) => return error.to_string(),
    };
    let me = peer("127.0.0.1:1");
    let (cluster, _seen) = watch::channel(empty_cluster(&me));
    match block_on(leadership.campaign(me, cluster)) {
        Ok(_) => panic!("campaign on {url} succeeded"),
        Err(error) => error.to_string(),
    }
}

/// The changes the conformance test writes, in commits; the third holds, in one commit, the
/// cases where order within a group matters.
fn conformance_commits() -> Vec<Vec<Change>> {
    use JobState::*;
    vec![
        vec![submit(1, 1, 6, None), submit(2, 7, 3, None)],
        vec![started(&[
            (1, 101, 1, "w1"),
            (2, 102, 1, "w1"),
            (3, 103, 1, "w2"),
            (4, 104, 1, "w2"),
            (5, 105, 1, "w1"),
        ])],
        vec![
            finished(1, Succeeded, 101, 1, Some(b"result 1")),
            // A second record of job 1: refused (its cursor is a gap).
            finished(1, Failed, 999, 2, Some(b"not recorded")),
            attempt(2, 102, 1, "lost"),
            attempt(2, 106, 2, "failed"),
            started(&[(2, 107, 3, "w3")]),
            // Failed, retried and then succeeded, all in one group: recorded at its second
            // cursor, with its second result.
            finished(3, Failed, 103, 3, Some(b"first try")),
            Change::Reopen(vec![3]),
            finished(3, Succeeded, 108, 4, Some(&[0xff, 0x00, 0x80])),
            // Counted twice (two other leases), not for the recorded lease.
            Change::Duplicates(vec![(1, 101), (1, 555), (1, 556)]),
            // A start whose job ends in the same group is not written.
            started(&[(6, 110, 1, "w1")]),
            finished(6, Cancelled, 110, 5, None),
            finished(4, Succeeded, 104, 6, Some(b"")),
            Change::ManifestsWritten(vec![1]),
            Change::ManifestsAbandoned(vec![3]),
            finish(7, Failed, 111),
            // The last cursor, cleared by the retry in the next commit.
            finished(8, Failed, 112, 8, None),
        ],
        vec![
            attempt(5, 105, 1, "timed_out"),
            started(&[(9, 120, 1, "w2")]),
            attempt(9, 120, 1, "lost"),
            started(&[(9, 121, 2, "w4")]),
            Change::Reopen(vec![8]),
        ],
    ]
}

/// Everything a store answers, as text to compare.
fn everything(store: &dyn LedgerStore, replay: &Replay) -> Vec<String> {
    let mut seen = vec![
        format!("batches {:?}", replay.batches),
        format!("unfinished {:?}", replay.unfinished),
        format!("next {}", replay.next_job),
        format!("last cursor {}", replay.last_cursor),
    ];
    let mut unpublished: Vec<String> = replay
        .unpublished
        .iter()
        .map(|job| format!("{} {} {}", job.job, job.lease, job.objects))
        .collect();
    unpublished.sort();
    seen.push(format!("unpublished {unpublished:?}"));
    for id in 0..=11 {
        seen.push(format!("job {id} {:?}", block_on(store.job(id)).unwrap()));
        seen.push(format!(
            "history {id} {:?}",
            block_on(store.history(id)).unwrap()
        ));
        seen.push(format!(
            "finished {id} {:?}",
            block_on(store.finished_job(id)).unwrap().map(|job| (
                job.batch,
                job.state,
                job.job.id,
                job.job.attempts
            ))
        ));
    }
    for batch in [None, Some(1), Some(2), Some(3)] {
        for state in [None, Some(JobState::Pending), Some(JobState::Failed)] {
            for (after, limit) in [(0, 100), (2, 3)] {
                let page = block_on(store.jobs(JobFilter {
                    batch,
                    state,
                    after,
                    limit,
                }))
                .unwrap();
                seen.push(format!("page {batch:?} {state:?} {after} {limit} {page:?}"));
            }
        }
    }
    for batch in [None, Some(1), Some(2), Some(3)] {
        for (after, limit) in [(0, 100), (1, 2), (5, 1), (8, 100)] {
            let page = block_on(store.completions(CompletionFilter {
                batch,
                after,
                limit,
            }))
            .unwrap();
            seen.push(format!("completions {batch:?} {after} {limit} {page:?}"));
        }
    }
    for batch in 1..=3 {
        let failed: Vec<_> = block_on(store.failed_jobs(batch))
            .unwrap()
            .into_iter()
            .map(|job| (job.id, job.attempts, job.spec.as_bytes().to_vec()))
            .collect();
        seen.push(format!("failed {batch} {failed:?}"));
    }
    let mut leases: Vec<_> = block_on(store.recorded_leases((0..=11).collect()))
        .unwrap()
        .into_iter()
        .collect();
    leases.sort();
    seen.push(format!("leases {leases:?}"));
    seen
}

#[test]
fn postgres_answers_as_sqlite_does_for_the_same_changes() {
    let server = PgServer::start();
    server.create_database("same");
    let dir = tempfile::tempdir().unwrap();
    let (sqlite, _) = SqliteStore::open(dir.path(), Arc::new(Metrics::default())).unwrap();
    let (term, _) = lead(&server.url("same"), peer("127.0.0.1:7701"));
    for changes in conformance_commits() {
        commit(&sqlite, changes.clone()).unwrap();
        commit(&*term.store, changes).unwrap();
    }
    block_on(sqlite.close()).unwrap();
    block_on(term.store.close()).unwrap();
    drop(sqlite);

    let (sqlite, sqlite_replay) =
        SqliteStore::open(dir.path(), Arc::new(Metrics::default())).unwrap();
    let (again, _) = lead(&server.url("same"), peer("127.0.0.1:7701"));
    assert_eq!(again.replay.epoch, term.replay.epoch + 1, "a new term");
    assert_eq!(again.replay.ledger, term.replay.ledger, "the same ledger");
    let expected = everything(&sqlite, &sqlite_replay);
    let found = everything(&*again.store, &again.replay);
    for (sqlite, postgres) in expected.iter().zip(&found) {
        assert_eq!(sqlite, postgres);
    }
    assert_eq!(expected.len(), found.len());
    // The cases themselves, so the comparison is known to cover them.
    let job1 = block_on(again.store.job(1)).unwrap().unwrap().record;
    assert_eq!((job1.state, job1.duplicates), (JobState::Succeeded, 2));
    let job3 = block_on(again.store.job(3)).unwrap().unwrap();
    assert_eq!(job3.record.state, JobState::Succeeded);
    assert_eq!(job3.result, Some(vec![0xff, 0x00, 0x80]));
    let recorded: Vec<(u64, u64)> = block_on(again.store.completions(CompletionFilter {
        batch: None,
        after: 0,
        limit: 100,
    }))
    .unwrap()
    .iter()
    .map(|completion| (completion.record.cursor, completion.record.id))
    .collect();
    assert_eq!(recorded, vec![(1, 1), (4, 3), (5, 6), (6, 4), (7, 7)]);
    assert_eq!(
        again.replay.last_cursor, 8,
        "the cleared cursor is not drawn again"
    );
    let job9 = again
        .replay
        .unfinished
        .iter()
        .find(|job| job.id == 9)
        .unwrap();
    assert_eq!(job9.started, Some((121, "w4".to_string())));
    assert_eq!(job9.lost_on, vec!["w1".to_string()]);
    assert!(again.replay.unfinished.iter().all(|job| job.id != 6));
}

/// Both stores, fresh, given the same commits and opened again: what each answers then.
fn both_after(
    server: &PgServer,
    database: &str,
    commits: Vec<Vec<Change>>,
) -> (Vec<String>, Vec<String>, Replay) {
    server.create_database(database);
    let dir = tempfile::tempdir().unwrap();
    let (sqlite, _) = SqliteStore::open(dir.path(), Arc::new(Metrics::default())).unwrap();
    let (term, _) = lead(&server.url(database), peer("127.0.0.1:7701"));
    for changes in commits {
        commit(&sqlite, changes.clone()).unwrap();
        commit(&*term.store, changes).unwrap();
    }
    block_on(sqlite.close()).unwrap();
    block_on(term.store.close()).unwrap();
    drop(sqlite);
    let (sqlite, sqlite_replay) =
        SqliteStore::open(dir.path(), Arc::new(Metrics::default())).unwrap();
    let (again, _) = lead(&server.url(database), peer("127.0.0.1:7701"));
    let expected = everything(&sqlite, &sqlite_replay);
    let found = everything(&*again.store, &again.replay);
    (expected, found, again.replay)
}

#[test]
fn a_calls_submission_written_again_changes_nothing_and_reserved_ids_stay_unused() {
    use JobState::*;
    let server = PgServer::start();
    let commits = vec![
        // Calls whose jobs ran while their submissions were written: one (with an idempotency
        // key) written alone and then again with its job's result (and ids reserved ahead), one
        // written twice in one commit around its job's start and result.
        vec![submit(3, 10, 1, Some("call-key"))],
        vec![
            submit(3, 10, 1, Some("call-key")),
            started(&[(10, 130, 1, "w1")]),
            finished(10, Succeeded, 130, 9, Some(b"call 10")),
            Change::ReserveJobs(40),
        ],
        vec![
            submit(4, 11, 1, None),
            started(&[(11, 131, 1, "w1")]),
            submit(4, 11, 1, None),
            finished(11, Succeeded, 131, 10, Some(b"call 11")),
            Change::ReserveJobs(30),
        ],
    ];
    let (expected, found, replay) = both_after(&server, "calls", commits);
    for (sqlite, postgres) in expected.iter().zip(&found) {
        assert_eq!(sqlite, postgres);
    }
    assert_eq!(expected.len(), found.len());
    // A submission written again is one batch of one job, recorded once with its result;
    // the next job is numbered above the highest reservation.
    for batch in [3, 4] {
        let replayed = replay.batches.iter().find(|b| b.id == batch).unwrap();
        assert_eq!(
            (replayed.total, replayed.succeeded),
            (1, 1),
            "batch {batch}"
        );
    }
    for (job, result) in [(10, "call 10"), (11, "call 11")] {
        let line = found
            .iter()
            .find(|line| line.starts_with(&format!("job {job} ")))
            .unwrap();
        assert!(line.contains("Succeeded"), "{line}");
        assert!(line.contains(&format!("{:?}", result.as_bytes())), "{line}");
    }
    assert_eq!(replay.next_job, 40);
    assert!(replay.unfinished.is_empty());
}

#[test]
fn a_second_record_is_refused_and_an_idempotency_key_taken_once() {
    let server = PgServer::start();
    server.create_database("once");
    let (term, _) = lead(&server.url("once"), peer("127.0.0.1:7702"));
    let store = &*term.store;
    commit(store, vec![submit(1, 1, 2, Some("key-1"))]).unwrap();
    commit(store, vec![finish(1, JobState::Succeeded, 11)]).unwrap();
    // Refused, not failed: the first record stays.
    commit(store, vec![finish(1, JobState::Failed, 12)]).unwrap();
    let job = block_on(store.job(1)).unwrap().unwrap().record;
    assert_eq!(job.state, JobState::Succeeded);
    assert_eq!(
        block_on(store.recorded_leases(vec![1, 2])).unwrap(),
        [(1, 11)].into_iter().collect()
    );
    // A second batch under the same key: the whole commit fails, nothing of it is written.
    let error = commit(store, vec![submit(2, 3, 1, Some("key-1"))]).unwrap_err();
    assert!(error.to_string().contains("idempotency_key"), "{error}");
    assert_eq!(block_on(store.job(3)).unwrap(), None);
    block_on(store.close()).unwrap();
    let (again, _) = lead(&server.url("once"), peer("127.0.0.1:7702"));
    assert_eq!(again.replay.batches.len(), 1);
    assert_eq!(
        again.replay.batches[0].idempotency_key.as_deref(),
        Some("key-1")
    );
    assert_eq!(again.replay.batches[0].succeeded, 1);
}

/// A TCP relay that can be paused: what passes through it stalls, as if its client froze.
struct Relay {
    port: u16,
    paused: watch::Sender<bool>,
    _runtime: tokio::runtime::Runtime,
}

impl Relay {
    fn to(port: u16) -> Relay {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let local = listener.local_addr().unwrap().port();
        let (paused, watching) = watch::channel(false);
        runtime.spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
                    continue;
                };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                for (mut from, mut to) in [(client_read, server_write), (server_read, client_write)]
                {
                    let mut paused = watching.clone();
                    tokio::spawn(async move {
                        let mut buffer = vec![0u8; 65536];
                        loop {
                            let n = match from.read(&mut buffer).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => n,
                            };
                            if paused.wait_for(|paused| !paused).await.is_err() {
                                return;
                            }
                            if to.write_all(&buffer[..n]).await.is_err() {
                                return;
                            }
                        }
                    });
                }
            }
        });
        Relay {
            port: local,
            paused,
            _runtime: runtime,
        }
    }
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "waited a minute for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_leader_cut_off_past_its_lease_is_fenced_and_commits_nothing() {
    let server = PgServer::start();
    server.create_database("fence");
    let relay = Relay::to(server.port());
    let through_relay = server.url("fence").replace(
        &format!(":{}/", server.port()),
        &format!(":{}/", relay.port),
    );
    let (first_peer, second_peer) = (peer("127.0.0.1:7711"), peer("127.0.0.1:7712"));
    let (first, _) = lead(&through_relay, first_peer.clone());
    commit(&*first.store, vec![submit(1, 1, 1, None)]).unwrap();

    // The second campaigns meanwhile, and sees the first lead.
    let second =
        PgLeadership::new(&server.url("fence"), TTL, Arc::new(Metrics::default())).unwrap();
    let (cluster, mut seen) = watch::channel(empty_cluster(&second_peer));
    let campaign = second.campaign(second_peer.clone(), cluster);
    let (won_tx, won) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = won_tx.send(block_on(campaign));
    });
    block_on(seen.wait_for(|cluster| {
        cluster.leader.as_ref().map(|leader| &leader.address) == Some(&first_peer.address)
            && cluster.members.len() == 2
    }))
    .unwrap();

    // The first is cut off from the database: it cannot renew, and the second takes over.
    relay.paused.send_replace(true);
    let second_term = won.recv().unwrap().unwrap();
    assert_eq!(second_term.replay.epoch, first.replay.epoch + 1);
    assert_eq!(second_term.replay.batches.len(), 1);
    assert!(
        !first.lease.is_valid(),
        "the first stopped assigning before the database let another take over"
    );

    // Back in touch, the first commits nothing, now or later, and knows why.
    relay.paused.send_replace(false);
    let superseded = Deposed::Superseded {
        holder: second_peer.address.clone(),
        epoch: second_term.replay.epoch,
        mine: first.replay.epoch,
    };
    for batch in [2, 3] {
        let error = commit(&*first.store, vec![submit(batch, batch, 1, None)]).unwrap_err();
        assert_eq!(error, StoreError::Deposed(superseded.clone()));
    }
    assert_eq!(block_on(first.deposed), superseded);
    assert_eq!(server.psql_in("fence", "SELECT count(*) FROM batches"), "1");
    // The new leader's commits go on.
    commit(&*second_term.store, vec![submit(2, 2, 1, None)]).unwrap();
    assert_eq!(server.psql_in("fence", "SELECT count(*) FROM batches"), "2");
}

#[test]
fn a_commit_waits_for_the_database_to_come_back() {
    let mut server = PgServer::start();
    server.create_database("away");
    let (term, _) = lead(&server.url("away"), peer("127.0.0.1:7721"));
    let store = term.store.clone();
    commit(&*store, vec![submit(1, 1, 1, None)]).unwrap();
    assert_eq!(store.unavailable(), None);

    server.stop();
    let (done_tx, done) = mpsc::channel();
    store.commit(
        vec![submit(2, 2, 3, None)],
        Box::new(move |result| {
            let _ = done_tx.send(result);
        }),
    );
    wait_until("the store to say the database is away", || {
        store.unavailable().is_some()
    });
    let said = store.unavailable().unwrap();
    assert!(said.contains("unreachable"), "{said}");
    assert!(!said.contains(PASSWORD), "{said}");
    assert!(matches!(
        block_on(store.job(1)),
        Err(StoreError::Unavailable(_))
    ));
    assert!(done.try_recv().is_err(), "held, neither done nor failed");

    server.restart();
    done.recv().unwrap().unwrap();
    wait_until("the store to say the database is back", || {
        store.unavailable().is_none()
    });
    assert_eq!(block_on(store.job(4)).unwrap().unwrap().record.batch, 2);
    assert_eq!(server.psql_in("away", "SELECT count(*) FROM jobs"), "4");
}

#[test]
fn bad_ledgers_are_refused_with_what_is_wrong() {
    let mut server = PgServer::start();
    let said = refused("postgres://drover:secret@127.0.0.1:notaport/db");
    assert!(said.contains("malformed URL"), "{said}");
    assert!(!said.contains("secret"), "{said}");

    server.create_database("ledger");
    let said = refused(&server.url("ledger").replace(PASSWORD, "wrong"));
    assert!(
        said.contains("refused user \"drover\"") && said.contains("password"),
        "{said}"
    );

    let said = refused(&server.url("nosuch"));
    assert!(said.contains("\"nosuch\" does not exist"), "{said}");

    let locked = server.create_role_without_create_rights("reader", "reader-pw", "ledger");
    let said = refused(&locked);
    assert!(
        said.contains("user \"reader\" lacks the rights") && said.contains("CREATE"),
        "{said}"
    );

    server.create_database("other");
    server.psql_in("other", "CREATE TABLE jobs (id int)");
    let said = refused(&server.url("other"));
    assert!(said.contains("another program's"), "{said}");

    server.create_database("newer");
    let (term, _) = lead(&server.url("newer"), peer("127.0.0.1:7731"));
    block_on(term.store.close()).unwrap();
    server.psql_in(
        "newer",
        "UPDATE meta SET value = value + 1 WHERE key = 'schema_version'",
    );
    let said = refused(&server.url("newer"));
    assert!(said.contains("written by a newer drover"), "{said}");

    // An unreachable database is waited for, and the campaign goes on once it answers.
    server.stop();
    let leadership =
        PgLeadership::new(&server.url("ledger"), TTL, Arc::new(Metrics::default())).unwrap();
    let me = peer("127.0.0.1:7732");
    let (cluster, _seen) = watch::channel(empty_cluster(&me));
    let campaign = leadership.campaign(me, cluster);
    let (won_tx, won) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = won_tx.send(block_on(campaign));
    });
    std::thread::sleep(Duration::from_secs(2));
    assert!(won.try_recv().is_err(), "still waiting for the database");
    server.restart();
    let term = won.recv().unwrap().unwrap();
    assert_eq!(term.replay.epoch, 1);
}

/// A CA and a certificate it signed for `names`, as PEM: (CA, certificate, key).
fn certificates(names: &[&str]) -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|name| name.to_string()).collect();
    let cert = CertificateParams::new(names)
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    (ca.pem(), cert.pem(), key.serialize_pem())
}

#[test]
fn tls_is_used_when_the_url_asks_and_the_server_is_checked_when_told_to() {
    let server = PgServer::start();
    server.create_database("tls");
    // The server's certificate and key, readable by it alone (it runs as `postgres`).
    let files = tempfile::tempdir_in("/tmp").unwrap();
    let (ca, cert, key) = certificates(&["127.0.0.1", "localhost"]);
    let (other_ca, _, _) = certificates(&["127.0.0.1"]);
    let write = |name: &str, text: &str| {
        let path = files.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let (cert_file, key_file) = (write("server.pem", &cert), write("server.key", &key));
    let (ca_file, other_ca_file) = (write("ca.pem", &ca), write("other-ca.pem", &other_ca));
    let name = std::ffi::CString::new("postgres").unwrap();
    // SAFETY: getpwnam with a valid C string, the record read at once.
    let record = unsafe { libc::getpwnam(name.as_ptr()) };
    if !record.is_null() && unsafe { libc::geteuid() } == 0 {
        // SAFETY: checked non-null.
        let (uid, gid) = unsafe { ((*record).pw_uid, (*record).pw_gid) };
        for path in [files.path(), &cert_file, &key_file] {
            std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
        }
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::set_permissions(files.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    server.psql(&format!(
        "ALTER SYSTEM SET ssl_cert_file = '{}'",
        cert_file.display()
    ));
    server.psql(&format!(
        "ALTER SYSTEM SET ssl_key_file = '{}'",
        key_file.display()
    ));
    server.psql("ALTER SYSTEM SET ssl = on");
    server.psql("SELECT pg_reload_conf()");
    wait_until("the server to offer TLS", || {
        server.psql("SHOW ssl") == "on"
    });

    let url = server.url("tls");
    let (term, _) = lead(&format!("{url}?sslmode=require"), peer("127.0.0.1:7741"));
    commit(&*term.store, vec![submit(1, 1, 1, None)]).unwrap();
    let encrypted = server.psql(
        "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
         WHERE a.application_name = 'drover-coordinator' AND s.ssl",
    );
    assert_ne!(encrypted, "0", "the coordinator's connections use TLS");
    block_on(term.store.close()).unwrap();
    drop(term);

    let verified = format!(
        "{url}?sslmode=verify-full&sslrootcert={}",
        ca_file.display()
    );
    let (term, _) = lead(&verified, peer("127.0.0.1:7741"));
    assert_eq!(term.replay.batches.len(), 1);
    block_on(term.store.close()).unwrap();
    drop(term);

    let said = refused(&format!(
        "{url}?sslmode=verify-ca&sslrootcert={}",
        other_ca_file.display()
    ));
    assert!(said.contains("TLS"), "{said}");
    // A root file that cannot be read is named.
    let said = refused(&format!(
        "{url}?sslmode=require&sslrootcert={}",
        files.path().join("missing.pem").display()
    ));
    assert!(said.contains("sslrootcert"), "{said}");
}
