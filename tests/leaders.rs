//! More than one coordinator: peers given a list find the one that leads; a standby sends them
//! there and serves nothing (the real front, driven by a leadership that never leads); a leader
//! assigns only under its lease and steps down when deposed.

mod common;

use common::*;
use drover::client::Client;
use drover::coordinator::{self, CoordinatorConfig, CoordinatorHandle};
use drover::ha::{Cluster as Coordinators, Deposed, Leadership, LeaseClock, Member};
use drover::ha::{MemberRole, Peer, Term};
use drover::job::{JobSpec, JobState};
use drover::metrics::Metrics;
use drover::net::auth::Secret;
use drover::net::connect::{self, ConnectError};
use drover::net::protocol::Role;
use drover::storage::sqlite::SqliteStore;
use drover::storage::store::{
    Change, CommitDone, FailedJob, FinishedJob, JobFilter, LedgerStore, Read, StoreError,
};
use futures::future::BoxFuture;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, watch};

/// A leadership that never leads: it says who does (or that nobody does), as a standby of a
/// PostgreSQL ledger would, and campaigns for ever.
struct NeverLeads {
    leader: Option<Peer>,
}

impl Leadership for NeverLeads {
    fn campaign(
        &self,
        me: Peer,
        cluster: watch::Sender<Coordinators>,
    ) -> BoxFuture<'static, Result<Term, StoreError>> {
        let mut members = vec![Member {
            peer: me.clone(),
            role: MemberRole::Standby,
            last_seen_ms: 0,
        }];
        if let Some(leader) = &self.leader {
            members.insert(
                0,
                Member {
                    peer: leader.clone(),
                    role: MemberRole::Leader,
                    last_seen_ms: 200,
                },
            );
        }
        cluster.send_replace(Coordinators {
            me,
            role: MemberRole::Standby,
            leader: self.leader.clone(),
            members,
        });
        Box::pin(async move {
            let _publishing = cluster;
            futures::future::pending().await
        })
    }
}

/// A leadership that leads a SQLite ledger under a lease the test holds, until the test says
/// another coordinator took it.
struct LeadsUntilDeposed {
    data_dir: PathBuf,
    lease: LeaseClock,
    deposed: Mutex<Option<oneshot::Receiver<Deposed>>>,
}

impl Leadership for LeadsUntilDeposed {
    fn campaign(
        &self,
        me: Peer,
        cluster: watch::Sender<Coordinators>,
    ) -> BoxFuture<'static, Result<Term, StoreError>> {
        cluster.send_replace(Coordinators {
            me: me.clone(),
            role: MemberRole::Leader,
            leader: Some(me.clone()),
            members: vec![Member {
                peer: me,
                role: MemberRole::Leader,
                last_seen_ms: 0,
            }],
        });
        let opened = SqliteStore::open(&self.data_dir, Arc::new(Metrics::new()));
        let lease = self.lease.clone();
        let deposed = self.deposed.lock().unwrap().take().expect("one campaign");
        Box::pin(async move {
            let (store, replay) = opened?;
            Ok(Term {
                store: Arc::new(store),
                replay,
                lease,
                deposed: Box::pin(async move {
                    match deposed.await {
                        Ok(why) => why,
                        Err(_) => futures::future::pending().await,
                    }
                }),
            })
        })
    }
}

/// A SQLite store whose database the test says is away: it answers as a networked store does
/// while its database cannot be reached, and works as SQLite otherwise.
struct AwayAtWill {
    sqlite: SqliteStore,
    away: Arc<Mutex<Option<String>>>,
}

impl LedgerStore for AwayAtWill {
    fn epoch(&self) -> u64 {
        self.sqlite.epoch()
    }
    fn commit(&self, changes: Vec<Change>, done: CommitDone) {
        self.sqlite.commit(changes, done)
    }
    fn job(&self, id: u64) -> Read<Option<drover::status::Resulted<drover::status::JobInfo>>> {
        self.sqlite.job(id)
    }
    fn completions(
        &self,
        filter: drover::storage::store::CompletionFilter,
    ) -> Read<Vec<drover::status::Completion>> {
        self.sqlite.completions(filter)
    }
    fn history(&self, id: u64) -> Read<Vec<drover::status::AttemptRecord>> {
        self.sqlite.history(id)
    }
    fn jobs(&self, filter: JobFilter) -> Read<Vec<drover::status::JobInfo>> {
        self.sqlite.jobs(filter)
    }
    fn failed_jobs(&self, batch: u64) -> Read<Vec<FailedJob>> {
        self.sqlite.failed_jobs(batch)
    }
    fn finished_job(&self, id: u64) -> Read<Option<FinishedJob>> {
        self.sqlite.finished_job(id)
    }
    fn recorded_leases(
        &self,
        jobs: Vec<u64>,
    ) -> Read<std::collections::HashMap<u64, drover::job::Lease>> {
        self.sqlite.recorded_leases(jobs)
    }
    fn unavailable(&self) -> Option<String> {
        self.away.lock().unwrap().clone()
    }
    fn close(&self) -> Read<()> {
        self.sqlite.close()
    }
}

/// Leads at once, on a store whose database is away when the test says so.
struct LeadsOnAwayAtWill {
    data_dir: PathBuf,
    away: Arc<Mutex<Option<String>>>,
}

impl Leadership for LeadsOnAwayAtWill {
    fn campaign(
        &self,
        me: Peer,
        cluster: watch::Sender<Coordinators>,
    ) -> BoxFuture<'static, Result<Term, StoreError>> {
        cluster.send_replace(Coordinators {
            me: me.clone(),
            role: MemberRole::Leader,
            leader: Some(me),
            members: Vec::new(),
        });
        let opened = SqliteStore::open(&self.data_dir, Arc::new(Metrics::new()));
        let away = self.away.clone();
        Box::pin(async move {
            let (sqlite, replay) = opened?;
            Ok(Term {
                store: Arc::new(AwayAtWill { sqlite, away }),
                replay,
                lease: LeaseClock::forever(),
                deposed: Box::pin(futures::future::pending()),
            })
        })
    }
}

/// Starts a coordinator's front on a thread of its own, campaigning through `leadership` for
/// ever; answers its protocol and HTTP addresses.
fn start_campaigning(
    config: CoordinatorConfig,
    leadership: Arc<dyn Leadership>,
) -> (String, Option<String>) {
    let (started_tx, started) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        actix_rt::System::new().block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let front = coordinator::start_front(listener, config).expect("front starts");
            let addresses = (
                front.local_addr().to_string(),
                front.http_addr().map(|address| address.to_string()),
            );
            started_tx.send(addresses).unwrap();
            let _never = front.lead(leadership).await;
        })
    });
    started.recv().expect("the front started")
}

/// Starts a coordinator on `address` that leads through `leadership`, on a thread of its own.
fn start_leading(
    address: &str,
    config: CoordinatorConfig,
    leadership: Arc<dyn Leadership>,
) -> CoordinatorHandle {
    let (started_tx, started) = std::sync::mpsc::channel();
    let address = address.to_string();
    std::thread::spawn(move || {
        let system = actix_rt::System::new();
        system.block_on(async move {
            let listener = tokio::net::TcpListener::bind(address).await.unwrap();
            let led = coordinator::start_with(listener, config, leadership).await;
            started_tx.send(led.expect("it leads")).unwrap();
        });
        system.run().unwrap();
    });
    started.recv().expect("the coordinator started")
}

fn noop_jobs(cluster: &Cluster, count: usize) -> String {
    let lines = vec![r#"{"handler": "noop", "payload": "hi"}"#.to_string(); count];
    let path = cluster.job_file("jobs.jsonl", &lines);
    path_str(&path).to_string()
}

#[tokio::test]
async fn peers_given_a_list_get_past_a_dead_address_and_say_what_each_answered() {
    let mut cluster = Cluster::start(&[]).await;
    let dead = format!("127.0.0.1:{}", free_port());
    let list = format!("{dead},{}", cluster.address);
    cluster.start_worker_at(&list, "w1", 2, &[]);
    cluster.wait_for_workers(1).await;

    let jobs = noop_jobs(&cluster, 3);
    let submitted = cluster.cli_via(&list, &["submit", &jobs, "--wait", "--json"]);
    assert!(submitted.status.success(), "{}", stderr_of(&submitted));
    let json: serde_json::Value = serde_json::from_str(&stdout_of(&submitted)).unwrap();
    assert_eq!(json["jobs"], 3);
    assert_eq!(json["succeeded"], 3, "{json}");

    let also_dead = format!("127.0.0.1:{}", free_port());
    let nobody = cluster.cli_via(&format!("{dead},{also_dead}"), &["status"]);
    assert!(!nobody.status.success());
    let said = stderr_of(&nobody);
    assert!(
        said.contains(&format!(
            "none of {dead}, {also_dead} answered as the leader"
        )),
        "{said}"
    );
    assert!(said.contains("connection refused"), "{said}");
}

#[tokio::test]
async fn a_standby_sends_workers_clients_and_http_to_the_leader_and_queues_nothing() {
    let http = format!("127.0.0.1:{}", free_port());
    let mut cluster = Cluster::start(&["--http", &http]).await;
    let leader = Peer {
        address: cluster.address.clone(),
        http: Some(http.clone()),
    };
    let config = CoordinatorConfig {
        http: Some("127.0.0.1:0".into()),
        ..CoordinatorConfig::new(cluster.dir.path().join("standby"))
    };
    let (standby, standby_http) = start_campaigning(
        config,
        Arc::new(NeverLeads {
            leader: Some(leader),
        }),
    );
    let standby_http = standby_http.unwrap();

    // The standby answers the handshake with the leader's address, and the peer goes there.
    let (_connection, answered) = connect::connect_to_leader(&standby, Role::Client, None, None)
        .await
        .expect("a connection to the leader");
    assert_eq!(answered, cluster.address);

    // HTTP: reads and changes alike are redirected, path and query kept; nothing is queued.
    for (method, path, body) in [
        ("GET", "/api/batches?limit=5", &b""[..]),
        ("GET", "/api/pools", &b""[..]),
        (
            "POST",
            "/api/batches",
            &br#"{"jobs": [{"handler": "noop"}]}"#[..],
        ),
        ("GET", "/", &b""[..]),
    ] {
        let headers = [("Content-Type", "application/json")];
        let answer = common::http(&standby_http, method, path, &headers, body).await;
        assert_eq!(answer.status, 307, "{method} {path}: {answer:?}");
        let location = format!("location: http://{http}{path}\r\n");
        assert!(
            answer.headers.to_ascii_lowercase().contains(&location),
            "{method} {path}: {answer:?}"
        );
    }
    let mut client = cluster.client().await;
    assert!(client.batches().await.unwrap().is_empty());

    // A worker and the CLI given the standby first end up on the leader, and jobs run.
    let list = format!("{standby},{}", cluster.address);
    cluster.start_worker_at(&list, "w1", 2, &[]);
    cluster.wait_for_workers(1).await;
    let jobs = noop_jobs(&cluster, 4);
    let submitted = cluster.cli_via(&list, &["submit", &jobs, "--wait", "--json"]);
    assert!(submitted.status.success(), "{}", stderr_of(&submitted));
    let json: serde_json::Value = serde_json::from_str(&stdout_of(&submitted)).unwrap();
    assert_eq!(json["succeeded"], 4, "{json}");
    assert!(
        cluster
            .worker_log("w1")
            .contains(&format!("coordinator={}", cluster.address)),
        "{}",
        cluster.worker_log("w1")
    );
}

#[tokio::test]
async fn status_names_the_leader_and_the_coordinators() {
    let http = format!("127.0.0.1:{}", free_port());
    let cluster = Cluster::start(&["--http", &http]).await;
    let out = cluster.cli(&["status", "--json"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let status: serde_json::Value = serde_json::from_str(&stdout_of(&out)).unwrap();
    assert_eq!(status["leader"], cluster.address.as_str(), "{status}");
    assert_eq!(
        status["coordinators"],
        serde_json::json!([{
            "address": cluster.address,
            "http": http,
            "role": "leader",
            "last_seen_ms": 0,
        }])
    );
    let over_http = common::http(&http, "GET", "/api/status", &[], b"").await;
    assert_eq!(over_http.json()["leader"], cluster.address.as_str());
    let text = cluster.cli(&["status"]);
    assert!(
        stdout_of(&text).contains(&format!("leader     {} (no standby)", cluster.address)),
        "{}",
        stdout_of(&text)
    );
}

#[tokio::test]
async fn a_standby_tells_only_holders_of_a_secret_and_says_when_no_one_leads() {
    let dir = tempfile::tempdir().unwrap();
    let config = CoordinatorConfig {
        client_secret: Secret::from_text("s3cret"),
        http: Some("127.0.0.1:0".into()),
        ..CoordinatorConfig::new(dir.path())
    };
    let (standby, standby_http) = start_campaigning(config, Arc::new(NeverLeads { leader: None }));
    let standby_http = standby_http.unwrap();

    let refused = connect::connect_with(&standby, Role::Client, None, None)
        .await
        .err()
        .expect("refused");
    assert!(matches!(refused, ConnectError::Refused(_)), "{refused}");
    assert!(
        refused.to_string().contains("no client token was given"),
        "{refused}"
    );

    let secret = Secret::from_text("s3cret");
    let nobody = connect::connect_with(&standby, Role::Client, secret.as_ref(), None)
        .await
        .err()
        .expect("no leader");
    assert!(
        matches!(nobody, ConnectError::Standby { leader: None, .. }),
        "{nobody}"
    );
    assert!(
        nobody
            .to_string()
            .contains("no coordinator leads the ledger yet"),
        "{nobody}"
    );

    // Over HTTP, who may do what is checked first; then there is no leader to send anyone to.
    let json = [("Content-Type", "application/json")];
    let change = common::http(&standby_http, "POST", "/api/batches", &json, b"{}").await;
    assert_eq!(change.status, 401, "{change:?}");
    let bearer = [("Authorization", "Bearer s3cret")];
    let read = common::http(&standby_http, "GET", "/api/status", &bearer, b"").await;
    assert_eq!(read.status, 503, "{read:?}");
    assert_eq!(read.json()["leader"], serde_json::Value::Null);
    let error = read.json()["error"].as_str().unwrap().to_string();
    assert!(error.contains("no leader yet"), "{error}");
}

#[tokio::test]
async fn a_leader_assigns_only_under_its_lease_and_steps_down_when_deposed() {
    let mut cluster = Cluster::new(&[]);
    let lease = LeaseClock::until(Instant::now());
    let (depose, deposed) = oneshot::channel();
    let handle = start_leading(
        &cluster.address,
        CoordinatorConfig::new(cluster.data_dir()),
        Arc::new(LeadsUntilDeposed {
            data_dir: cluster.data_dir(),
            lease: lease.clone(),
            deposed: Mutex::new(Some(deposed)),
        }),
    );
    cluster.start_worker("w1", 1, &[]);
    cluster.wait_for_workers(1).await;
    let mut client = cluster.client().await;
    let submitted = client
        .submit("held", vec![JobSpec::call("noop", "x")])
        .await
        .expect("a lapsed lease still takes submissions");
    // A worker is idle and the job is queued, but the lease has lapsed: nothing is assigned.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let job = client.job(submitted.first_job).await.unwrap();
    assert_eq!(job.state, JobState::Pending);
    assert_eq!(job.attempts, 0);

    lease.extend_to(Instant::now() + Duration::from_secs(3600));
    cluster
        .wait_for_job(submitted.first_job, "the job to run once renewed", |job| {
            job.state == JobState::Succeeded
        })
        .await;

    let why = Deposed::Superseded {
        holder: "other:7700".into(),
        epoch: 8,
        mine: 7,
    };
    depose.send(why.clone()).unwrap();
    let stepped_down = tokio::time::timeout(Duration::from_secs(10), handle.stepped_down())
        .await
        .expect("it steps down");
    assert_eq!(stepped_down, why);
    assert_eq!(handle.cluster.borrow().role, MemberRole::Standby);
    let refused = client
        .submit("late", vec![JobSpec::call("noop", "y")])
        .await
        .expect_err("a deposed leader takes no submission");
    assert!(
        refused
            .to_string()
            .contains("deposed: coordinator other:7700 took the ledger's lease at epoch 8"),
        "{refused}"
    );
    wait_for(Duration::from_secs(10), "the port to close", || async {
        Client::connect(&cluster.address, None)
            .await
            .err()
            .map(drop)
    })
    .await;
}

#[tokio::test]
async fn a_leader_whose_database_is_away_refuses_submissions_saying_why() {
    let cluster = Cluster::new(&[]);
    let away = Arc::new(Mutex::new(None));
    let http = format!("127.0.0.1:{}", free_port());
    let config = CoordinatorConfig {
        http: Some(http.clone()),
        ..CoordinatorConfig::new(cluster.data_dir())
    };
    let _handle = start_leading(
        &cluster.address,
        config,
        Arc::new(LeadsOnAwayAtWill {
            data_dir: cluster.data_dir(),
            away: away.clone(),
        }),
    );
    let why = "no answer from db-1:5432 for 3s (connection refused)";
    *away.lock().unwrap() = Some(why.to_string());

    let mut client = cluster.client().await;
    let refused = client
        .submit("away", vec![JobSpec::call("noop", "x")])
        .await
        .expect_err("refused while the database is away");
    assert_eq!(
        refused.to_string(),
        format!("cannot queue the batch: the ledger database is unreachable: {why}")
    );
    let jobs = br#"{"jobs": [{"handler": "noop"}]}"#;
    let json = [("Content-Type", "application/json")];
    let over_http = common::http(&http, "POST", "/api/batches", &json, jobs).await;
    assert_eq!(over_http.status, 503, "{over_http:?}");
    let error = over_http.json()["error"].as_str().unwrap().to_string();
    assert!(error.contains(why), "{error}");
    assert!(client.batches().await.unwrap().is_empty());

    *away.lock().unwrap() = None;
    client
        .submit("back", vec![JobSpec::call("noop", "x")])
        .await
        .expect("taken once the database is back");
}
