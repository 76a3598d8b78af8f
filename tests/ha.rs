//! High availability, end to end, on real servers: coordinators sharing a PostgreSQL ledger
//! (started by the test from Debian's package, see tests/common/postgres.rs), workers and the CLI
//! given the list of coordinators, and the failures the issue names: the leader killed with
//! SIGKILL mid-batch, the leader frozen past its lease and thawed, the database's primary killed
//! and its synchronous standby promoted. Afterwards every acknowledged job is there, finished,
//! and recorded once.

mod common;

use common::ha::{cli_within, Coordinators};
use common::postgres::{multi_host_url, PgServer};
use common::*;
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a coordinator logs when asked to record a finished job again (SQLite's words; the
/// PostgreSQL store's guard is checked for the same words).
const SECOND_RECORD: &str = "second record refused";

/// Coordinators on one ledger, workers given their list, and the test's directory.
struct Ha {
    // Dropped first: the workers end before the coordinators.
    cluster: Cluster,
    coordinators: Coordinators,
}

impl Ha {
    /// `coordinators` coordinators on `ledger` (the first one leads), and `workers` workers of
    /// `slots` slots given the list, all registered.
    async fn start(ledger: &str, coordinators: usize, workers: usize, slots: u32) -> Ha {
        let mut cluster = Cluster::new(&[]);
        let mut set = Coordinators::on_loopback(cluster.dir.path(), ledger, coordinators);
        cluster.address = set.list();
        set.start(0).await;
        assert_eq!(
            set.wait_leader(&[], Duration::from_secs(60)).await,
            0,
            "the first coordinator leads"
        );
        for i in 1..coordinators {
            set.start(i).await;
        }
        let mut ha = Ha {
            cluster,
            coordinators: set,
        };
        ha.wait_members(coordinators).await;
        for w in 0..workers {
            ha.cluster.start_worker(&format!("w{w}"), slots, &[]);
        }
        ha.wait_workers(workers).await;
        ha
    }

    /// Runs the CLI against the list; panics if it has not ended within a minute.
    fn cli(&self, args: &[&str]) -> Output {
        cli_within(&self.cluster.address, &[], args, Duration::from_secs(60)).unwrap_or_else(|| {
            panic!(
                "`drover {}` did not end within a minute:\n{}",
                args.join(" "),
                self.coordinators.log_tails(30)
            )
        })
    }

    /// `drover ARGS`, asked again for up to 30 s while it says the ledger's database is
    /// unreachable: for a moment after a database failover the coordinator still refuses reads
    /// (it says so, and the client is to try again) until its lease keeper, which tries four
    /// times a second while the database is away, has reached the promoted standby.
    fn cli_read(&self, args: &[&str]) -> Output {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let output = self.cli(args);
            let refused = !output.status.success()
                && stderr_of(&output).contains("the ledger database is unreachable");
            if !refused || Instant::now() > deadline {
                return output;
            }
            eprintln!(
                "`drover {}` refused, asked again: {}",
                args.join(" "),
                stderr_of(&output).trim()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The CLI's JSON answer, or None if it failed or took more than `within`.
    fn json(&self, args: &[&str], within: Duration) -> Option<Value> {
        let output = cli_within(&self.cluster.address, &[], args, within)?;
        if !output.status.success() {
            return None;
        }
        serde_json::from_slice(&output.stdout).ok()
    }

    /// `drover status --json` through the list.
    fn status(&self) -> Option<Value> {
        self.json(&["status", "--json"], Duration::from_secs(10))
    }

    /// Waits until the leader lists `count` coordinators, one of them the leader.
    async fn wait_members(&self, count: usize) {
        wait_for(
            Duration::from_secs(60),
            "every coordinator to be listed",
            || async {
                let status = self.status()?;
                let members = status.get("coordinators")?.as_array()?;
                let leaders = members
                    .iter()
                    .filter(|member| member.get("role").and_then(Value::as_str) == Some("leader"))
                    .count();
                (members.len() >= count && leaders == 1).then_some(())
            },
        )
        .await;
    }

    /// Waits until `count` workers are connected to the leader.
    async fn wait_workers(&self, count: usize) {
        wait_for(
            Duration::from_secs(60),
            "the workers to register with the leader",
            || async {
                let workers = self.json(&["workers", "--json"], Duration::from_secs(10))?;
                let connected = workers
                    .as_array()?
                    .iter()
                    .filter(|worker| worker.get("gone_at_ms").is_none_or(Value::is_null))
                    .count();
                (connected >= count).then_some(())
            },
        )
        .await;
    }

    /// Submits a job file through the list; the batch id.
    fn submit(&self, file: &std::path::Path) -> u64 {
        let output = self.cli(&["submit", path_str(file), "--json"]);
        assert!(
            output.status.success(),
            "submit failed: {}\n{}",
            stderr_of(&output),
            self.coordinators.log_tails(30)
        );
        submitted_batch(&output)
            .unwrap_or_else(|| panic!("submit printed no batch: {}", stdout_of(&output)))
    }

    /// A batch's progress (`drover batch ID --json`), or None while no leader answers.
    fn batch(&self, batch: u64) -> Option<Value> {
        self.json(
            &["batch", &batch.to_string(), "--json"],
            Duration::from_secs(10),
        )
    }

    /// Waits until a batch is done, and returns its progress.
    async fn wait_done(&self, batch: u64, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            if let Some(info) = self.batch(batch).filter(|info| info["done"] == true) {
                return info;
            }
            assert!(
                Instant::now() < deadline,
                "batch {batch} not done within {within:?}: {:?}\n{}",
                self.batch(batch),
                self.coordinators.log_tails(40)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until `count` of a batch's jobs have succeeded.
    async fn wait_succeeded(&self, batch: u64, count: u64) {
        wait_for(
            Duration::from_secs(120),
            &format!("{count} jobs of batch {batch} to succeed"),
            || async {
                let info = self.batch(batch)?;
                (info["succeeded"].as_u64()? >= count).then_some(())
            },
        )
        .await;
    }

    /// Checks that every one of a batch's `total` jobs is there, succeeded, and recorded once:
    /// the batch's counts, its job list and its completion log agree, no job twice in either.
    fn assert_recorded_once(&self, batch: u64, total: u64) {
        let info = self.batch(batch).expect("the batch's progress");
        assert_eq!(info["total"], total, "batch {batch}: {info}");
        assert_eq!(info["succeeded"], total, "batch {batch}: {info}");
        assert_eq!(info["failed"], 0, "batch {batch}: {info}");

        let jobs = self.cli_read(&["jobs", "--batch", &batch.to_string(), "--json"]);
        assert!(jobs.status.success(), "drover jobs: {}", stderr_of(&jobs));
        let jobs: Vec<Value> = serde_json::from_slice(&jobs.stdout).expect("a JSON array");
        let listed: BTreeSet<u64> = jobs.iter().map(|job| job["id"].as_u64().unwrap()).collect();
        assert_eq!(jobs.len() as u64, total, "batch {batch}: jobs listed");
        assert_eq!(
            listed.len() as u64,
            total,
            "batch {batch}: a job listed twice"
        );
        let not_succeeded: Vec<&Value> = jobs
            .iter()
            .filter(|job| job["state"] != "succeeded")
            .collect();
        assert!(
            not_succeeded.is_empty(),
            "batch {batch}: {} jobs not succeeded, e.g. {}",
            not_succeeded.len(),
            not_succeeded[0]
        );

        let log = self.cli_read(&["log", "--batch", &batch.to_string(), "--format", "jsonl"]);
        assert!(log.status.success(), "drover log: {}", stderr_of(&log));
        let mut times: HashMap<u64, usize> = HashMap::new();
        for line in stdout_of(&log).lines() {
            let entry: Value = serde_json::from_str(line)
                .unwrap_or_else(|error| panic!("log line not JSON ({error}): {line}"));
            *times.entry(entry["id"].as_u64().unwrap()).or_default() += 1;
        }
        let twice: Vec<u64> = times
            .iter()
            .filter(|(_, count)| **count > 1)
            .map(|(id, _)| *id)
            .collect();
        assert!(twice.is_empty(), "batch {batch}: logged twice: {twice:?}");
        let logged: BTreeSet<u64> = times.keys().copied().collect();
        assert_eq!(
            logged, listed,
            "batch {batch}: the log and the job list differ"
        );
    }

    /// No coordinator was asked to record a finished job again.
    fn assert_no_second_record(&self) {
        for i in 0..self.coordinators.members.len() {
            let log = self.coordinators.log(i);
            assert!(
                !log.contains(SECOND_RECORD),
                "coordinator {i} was asked to record a finished job again:\n{}",
                log.lines()
                    .filter(|line| line.contains(SECOND_RECORD))
                    .take(5)
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
    }
}

/// The database itself holds each of a batch's `total` jobs once, succeeded.
fn assert_ledger_holds(database: &PgServer, batch: u64, total: u64) {
    let counts = database.psql_in(
        "drover",
        &format!(
            "SELECT count(*), count(DISTINCT id), count(*) FILTER (WHERE state = 'succeeded') \
             FROM jobs WHERE batch = {batch}"
        ),
    );
    assert_eq!(
        counts,
        format!("{total}|{total}|{total}"),
        "batch {batch} in the database: jobs, distinct jobs, succeeded"
    );
}

/// The batch id `drover submit --json` printed.
fn submitted_batch(output: &Output) -> Option<u64> {
    let printed: Value = serde_json::from_slice(&output.stdout).ok()?;
    printed.get("batch")?.as_u64()
}

/// `count` jobs of the stock worker's `noop` handler.
fn noop_jobs(count: usize) -> Vec<String> {
    vec![r#"{"handler": "noop"}"#.to_string(); count]
}

/// `count` jobs of the stock worker's `sleep` handler, `ms` each.
fn sleep_jobs(count: usize, ms: u64) -> Vec<String> {
    vec![format!(r#"{{"handler": "sleep", "payload": "{ms}"}}"#); count]
}

/// A fresh PostgreSQL server with an empty database `drover`, and its URL.
fn database() -> (PgServer, String) {
    let server = PgServer::start();
    server.create_database("drover");
    let url = server.url("drover");
    (server, url)
}

/// Says a figure outside the test harness's capture and keeps it in `target/tmp/<file>`.
fn announce(file: &str, text: &str) {
    eprintln!("\n{text}");
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(file);
    let _ = std::fs::write(path, format!("{text}\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_killed_mid_batch_is_replaced_and_every_job_is_recorded_once() {
    const JOBS: u64 = 10_000;
    let (database, ledger) = database();
    let mut ha = Ha::start(&ledger, 2, 4, 8).await;
    let file = ha.cluster.job_file("jobs.jsonl", &noop_jobs(JOBS as usize));
    let batch = ha.submit(&file);
    // Killed with part of the batch recorded and the rest pending or running.
    ha.wait_succeeded(batch, JOBS / 10).await;
    let before = ha.batch(batch).expect("progress before the kill");
    let killed = Instant::now();
    ha.coordinators.kill(0);
    assert_ne!(
        before["done"], true,
        "the batch finished before the kill: nothing to take over ({before})"
    );

    // The new leader accepts a submission, and assigns its job: the takeover a user sees.
    let probe = ha.cluster.job_file(
        "probe.jsonl",
        &[r#"{"handler": "noop", "name": "probe"}"#.into()],
    );
    let probe_batch = loop {
        let output = cli_within(
            &ha.cluster.address,
            &[],
            &["submit", path_str(&probe), "--json"],
            Duration::from_secs(30),
        );
        if let Some(batch) = output.as_ref().and_then(submitted_batch) {
            break batch;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(120),
            "no coordinator took a submission within 2 minutes of the kill:\n{}",
            ha.coordinators.log_tails(40)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let accepted = killed.elapsed();
    wait_for(
        Duration::from_secs(120),
        "the probe job to be assigned",
        || async {
            let jobs = ha.json(
                &["jobs", "--batch", &probe_batch.to_string(), "--json"],
                Duration::from_secs(10),
            )?;
            let state = jobs
                .as_array()?
                .first()?
                .get("state")?
                .as_str()?
                .to_string();
            (state == "running" || state == "succeeded").then_some(())
        },
    )
    .await;
    let assigned = killed.elapsed();
    let leader = ha
        .coordinators
        .wait_leader(&[], Duration::from_secs(30))
        .await;
    assert_eq!(leader, 1, "the standby leads");
    announce(
        "ha-takeover.txt",
        &format!(
            "HA takeover (tests/ha.rs, lease TTL {}, {} of {JOBS} jobs recorded at the kill): \
             from kill -9 of the leader to the standby accepting a submission {:.2}s, to it \
             assigning that job {:.2}s",
            common::ha::LEASE_TTL,
            before["succeeded"],
            accepted.as_secs_f64(),
            assigned.as_secs_f64()
        ),
    );

    ha.wait_workers(4).await;
    ha.wait_done(batch, Duration::from_secs(300)).await;
    ha.assert_recorded_once(batch, JOBS);
    ha.assert_recorded_once(probe_batch, 1);
    ha.assert_no_second_record();
    assert_ledger_holds(&database, batch, JOBS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_leader_is_replaced_and_steps_down_when_thawed_recording_nothing_twice() {
    const JOBS: u64 = 2_000;
    let (database, ledger) = database();
    let mut ha = Ha::start(&ledger, 2, 2, 4).await;
    let file = ha
        .cluster
        .job_file("jobs.jsonl", &sleep_jobs(JOBS as usize, 20));
    let batch = ha.submit(&file);
    ha.wait_succeeded(batch, JOBS / 10).await;

    ha.coordinators.signal(0, libc::SIGSTOP);
    let frozen = Instant::now();
    // The standby, asked alone, names itself leader once the frozen one's lease has run out.
    let standby = ha.coordinators.members[1].address.clone();
    let deadline = frozen + Duration::from_secs(60);
    while ha
        .coordinators
        .serves(1, None, Duration::from_secs(5))
        .await
        != Some(true)
    {
        assert!(
            Instant::now() < deadline,
            "the standby did not take the lease from the frozen leader within a minute; the \
             database's sessions:\n{}\n{}",
            database.psql(
                "SELECT pid, application_name, state, wait_event_type, wait_event, \
                 left(query, 80) FROM pg_stat_activity WHERE datname = 'drover'"
            ),
            ha.coordinators.log_tails(20)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took_over = frozen.elapsed();
    // It serves: a submission to it alone is taken, and the fleet's work goes on there while
    // the old leader is still frozen.
    let probe = ha
        .cluster
        .job_file("probe.jsonl", &[r#"{"handler": "noop"}"#.into()]);
    let output = cli_within(
        &standby,
        &[],
        &["submit", path_str(&probe), "--json"],
        Duration::from_secs(60),
    )
    .expect("the new leader answers");
    let probe_batch = submitted_batch(&output).unwrap_or_else(|| {
        panic!(
            "the new leader refused a submission: {}\n{}",
            stderr_of(&output),
            ha.coordinators.log_tails(30)
        )
    });
    // The work goes on at the new leader while the old one is still frozen: the workers leave
    // it. (Checked at the end, so that the rest is checked whatever happens here.)
    let at_standby = |args: &[&str]| {
        cli_within(&standby, &[], args, Duration::from_secs(10))
            .filter(|output| output.status.success())
            .and_then(|output| serde_json::from_slice::<Value>(&output.stdout).ok())
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut during_freeze = None;
    let mut back_at_work = None;
    while Instant::now() < deadline {
        if back_at_work.is_none() {
            let probe = at_standby(&["jobs", "--batch", &probe_batch.to_string(), "--json"]);
            let state = probe
                .as_ref()
                .and_then(|jobs| jobs.get(0)?.get("state")?.as_str());
            if matches!(state, Some("running" | "succeeded")) {
                back_at_work = Some(frozen.elapsed());
            }
        }
        during_freeze = at_standby(&["batch", &batch.to_string(), "--json"]).or(during_freeze);
        if back_at_work.is_some()
            && during_freeze
                .as_ref()
                .is_some_and(|info: &Value| info["done"] == true)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let probe_during_freeze = at_standby(&["jobs", "--batch", &probe_batch.to_string(), "--json"])
        .and_then(|jobs| jobs.get(0)?.get("state")?.as_str().map(str::to_string));
    assert!(
        ha.coordinators.running(0),
        "the frozen leader is still there"
    );

    // Thawed, the old leader finds its lease gone: it commits nothing, steps down and says why.
    ha.coordinators.signal(0, libc::SIGCONT);
    let status = ha
        .coordinators
        .wait_exit(0, Duration::from_secs(60))
        .await
        .unwrap_or_else(|| {
            panic!(
                "the thawed old leader did not step down within a minute:\n{}",
                ha.coordinators.log_tails(30)
            )
        });
    assert_eq!(
        status.code(),
        Some(3),
        "{status}\n{}",
        ha.coordinators.log(0)
    );
    let log = ha.coordinators.log(0).to_lowercase();
    assert!(
        log.contains("deposed") || log.contains("lease"),
        "the old leader's log says why it stepped down:\n{}",
        ha.coordinators.log(0)
    );
    eprintln!(
        "frozen leader: the standby led {:.2}s after SIGSTOP, and a worker ran a job it was \
         given {} after (lease TTL {})",
        took_over.as_secs_f64(),
        back_at_work.map_or("not within a minute".into(), |at| format!(
            "{:.2}s",
            at.as_secs_f64()
        )),
        common::ha::LEASE_TTL
    );

    ha.wait_done(probe_batch, Duration::from_secs(60)).await;
    ha.wait_done(batch, Duration::from_secs(120)).await;
    ha.assert_recorded_once(batch, JOBS);
    ha.assert_recorded_once(probe_batch, 1);
    ha.assert_no_second_record();
    assert_ledger_holds(&database, batch, JOBS);
    assert!(
        during_freeze
            .as_ref()
            .is_some_and(|info| info["done"] == true),
        "the batch did not finish at the new leader while the old one was frozen (the workers \
         stayed with the frozen leader?); the probe job was {probe_during_freeze:?}, the batch \
         {during_freeze:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_primary_killed_and_its_standby_promoted_loses_nothing_acknowledged() {
    const PER_BATCH: u64 = 20;
    let (mut primary, standby) = PgServer::primary_with_sync_standby();
    primary.create_database("drover");
    let ledger = multi_host_url(&[&primary, &standby], "drover");
    let ha = Arc::new(Ha::start(&ledger, 2, 2, 4).await);

    // Submissions one after another, throughout: what the CLI acknowledged (printed a batch
    // for) must all be there in the end.
    let acknowledged = Arc::new(Mutex::new(Vec::<u64>::new()));
    let refusals = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let file = ha
        .cluster
        .job_file("jobs.jsonl", &sleep_jobs(PER_BATCH as usize, 50));
    let submitter = {
        let (address, acknowledged, refusals, stop) = (
            ha.cluster.address.clone(),
            acknowledged.clone(),
            refusals.clone(),
            stop.clone(),
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let output = cli_within(
                    &address,
                    &[],
                    &["submit", path_str(&file), "--json"],
                    Duration::from_secs(120),
                );
                match output.as_ref().and_then(submitted_batch) {
                    Some(batch) => acknowledged.lock().unwrap().push(batch),
                    None => {
                        refusals.lock().unwrap().push(match &output {
                            Some(output) => stderr_of(output).trim().to_string(),
                            None => "no answer within 2 minutes".into(),
                        });
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        })
    };
    let acknowledged_count = || acknowledged.lock().unwrap().len();
    wait_for(Duration::from_secs(60), "a few submissions", || async {
        (acknowledged_count() >= 5).then_some(())
    })
    .await;

    // The primary's machine dies; a second later its standby is promoted, as a failover
    // manager would.
    let before = acknowledged_count();
    primary.kill();
    tokio::time::sleep(Duration::from_secs(1)).await;
    standby.promote();
    let promoted = Instant::now();
    wait_for(
        Duration::from_secs(120),
        "submissions acknowledged after the promotion",
        || async { (acknowledged_count() >= before + 5).then_some(()) },
    )
    .await;
    eprintln!(
        "database failover: {} submissions acknowledged before the kill, {} more within {:.1}s \
         of the promotion; refused meanwhile: {:?}",
        before,
        acknowledged_count() - before,
        promoted.elapsed().as_secs_f64(),
        refusals.lock().unwrap()
    );
    stop.store(true, Ordering::Relaxed);
    submitter.join().unwrap();

    let batches = acknowledged.lock().unwrap().clone();
    let distinct: BTreeSet<u64> = batches.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        batches.len(),
        "a batch id acknowledged twice"
    );
    for &batch in &batches {
        ha.wait_done(batch, Duration::from_secs(120)).await;
        ha.assert_recorded_once(batch, PER_BATCH);
        assert_ledger_holds(&standby, batch, PER_BATCH);
    }
    ha.assert_no_second_record();
    // What was acknowledged is on the promoted server, which is now the only one.
    assert!(
        !standby.psql("SELECT pg_is_in_recovery()").contains('t'),
        "the promoted standby serves writes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_stays_away_refuses_submissions_and_loses_no_result() {
    let (mut database, ledger) = database();
    let ha = Ha::start(&ledger, 1, 1, 2).await;
    let file = ha.cluster.job_file("slow.jsonl", &sleep_jobs(1, 3000));
    let batch = ha.submit(&file);
    wait_for(Duration::from_secs(30), "the job running", || async {
        ha.batch(batch)
            .filter(|info| info["running"] == 1)
            .map(|_| ())
    })
    .await;

    // The database goes away while the job runs, and stays away past the job's end.
    database.stop();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let refused = cli_within(
        &ha.cluster.address,
        &[],
        &["submit", path_str(&file), "--json"],
        Duration::from_secs(60),
    )
    .expect("the CLI answers while the database is away");
    assert!(
        !refused.status.success(),
        "a submission taken with no database"
    );
    let said = stderr_of(&refused);
    assert!(
        said.contains("the ledger database is unreachable"),
        "the refusal says why: {said}"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Back: the result the worker kept is recorded, once, and the refused batch never was.
    database.restart();
    let done = ha.wait_done(batch, Duration::from_secs(60)).await;
    assert_eq!(done["succeeded"], 1, "{done}");
    ha.assert_recorded_once(batch, 1);
    assert_ledger_holds(&database, batch, 1);
    let batches: Value =
        serde_json::from_slice(&ha.cli(&["batches", "--json"]).stdout).expect("batches as JSON");
    assert_eq!(
        batches.as_array().map(Vec::len),
        Some(1),
        "only the first batch: {batches}"
    );
    ha.assert_no_second_record();
}
