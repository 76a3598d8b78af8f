//! Worker names and registrations: one live worker per name, a default name that differs between
//! workers on one machine, an id per registration, and a worker's attempts its own whatever
//! another one is called.

mod common;

use common::*;
use drover::job::{AttemptResult, CarriedAttempt, JobState, Outcome};
use drover::net::connect::{connect, next, Connection};
use drover::net::protocol::{FromCoordinator, Role, ToCoordinator};
use drover::status::WorkerInfo;
use futures::SinkExt;
use std::process::{Command, Stdio};
use std::time::Duration;

fn register(name: &str, instance: u64, carried: Vec<CarriedAttempt>) -> ToCoordinator {
    ToCoordinator::Register {
        name: name.into(),
        instance,
        slots: 1,
        labels: Vec::new(),
        carried,
        results: Vec::new(),
        member: None,
    }
}

/// The next message that is not a heartbeat's business, within 10 s.
async fn answer(connection: &mut Connection) -> FromCoordinator {
    tokio::time::timeout(Duration::from_secs(10), next(connection))
        .await
        .expect("an answer within 10s")
        .expect("the connection stays open")
}

/// The connected workers as `drover workers --json` prints them.
fn workers_json(cluster: &Cluster) -> Vec<serde_json::Value> {
    let output = cluster.cli(&["workers", "--json"]);
    assert!(output.status.success(), "{}", stderr_of(&output));
    let workers: Vec<serde_json::Value> = serde_json::from_str(&stdout_of(&output)).unwrap();
    workers
        .into_iter()
        .filter(|worker| worker["gone_at_ms"].is_null())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_live_workers_never_share_a_name_nor_take_each_others_attempts() {
    let mut cluster = Cluster::start(&["--heartbeat-timeout", "2s"]).await;
    cluster.start_worker("twin", 1, &[]);
    cluster.wait_for_workers(1).await;
    // Runs a while on the first twin, and says its scratch directory (which holds its lease).
    let line = r#"{"cmd": ["sh", "-c", "echo ${DROVER_SCRATCH##*/} >> \"$OUT/$DROVER_JOB_ID\"; sleep 4"]}"#;
    let mut client = cluster.client().await;
    let submitted = client
        .submit("twins", vec![drover::jobfile::parse_line(1, line).unwrap()])
        .await
        .unwrap();
    let job = submitted.first_job;
    wait_running(&mut client, job, Duration::from_secs(30)).await;
    let lease = wait_for(Duration::from_secs(10), "the job's lease", || async {
        let line = cluster.output_lines(job).into_iter().next()?;
        u64::from_str_radix(line.rsplit('-').next()?, 16).ok()
    })
    .await;

    // Another process under the same name, claiming the first one's attempt by its real lease
    // and reporting it done: refused before anything it says is heard.
    let mut other = connect(&cluster.address, Role::Worker, None).await.unwrap();
    let carried = vec![CarriedAttempt {
        lease,
        job,
        attempt: 1,
        slots: 1,
        epoch: 1,
    }];
    other
        .send(register("twin", rand::random(), carried))
        .await
        .unwrap();
    let _ = other
        .send(ToCoordinator::Results(vec![AttemptResult {
            lease,
            job,
            attempt: 1,
            outcome: Outcome::Succeeded,
            exit_code: Some(0),
            started_at_ms: 0,
            duration_ms: 1,
            output_tail: "forged".into(),
            result: Vec::new(),
            error: None,
            outputs: Vec::new(),
            permanent: false,
            epoch: 1,
        }]))
        .await;
    match answer(&mut other).await {
        FromCoordinator::Refused { reason, permanent } => {
            assert!(
                reason.starts_with(
                    "the name \"twin\" is taken by a live worker (registration 1, at 127.0.0.1:"
                ),
                "{reason}"
            );
            assert!(
                reason.contains("give this worker another name with --name"),
                "{reason}"
            );
            // The holder may be a dead worker not yet found silent: the newcomer may try again.
            assert!(!permanent, "{reason}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    drop(other);

    // A second worker process given the same name gives up, saying why, once the holder is
    // plainly alive (heard from long after the first refusal).
    let mut command = Command::new(WORKER);
    command
        .args([
            "--coordinator",
            &cluster.address,
            "--name",
            "twin",
            "--slots",
            "1",
        ])
        .arg("--scratch-dir")
        .arg(cluster.dir.path().join("scratch-second"))
        .env_remove("DROVER_WORKER_TOKEN")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    let second = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::task::spawn_blocking(move || command.output()),
    )
    .await
    .expect("the second twin gives up within 60s")
    .unwrap()
    .unwrap();
    assert_eq!(second.status.code(), Some(1));
    let message = stderr_of(&second);
    let last = message.trim().lines().last().unwrap_or_default();
    assert!(
        last.starts_with(
            "drover-worker: the name \"twin\" is taken by a live worker (registration 1"
        ),
        "{message}"
    );
    assert!(
        last.ends_with("give this worker another name with --name"),
        "{message}"
    );
    assert!(
        cluster
            .coordinator_log()
            .contains("the name \"twin\" is taken by a live worker"),
        "{}",
        cluster.coordinator_log()
    );

    // The job is the first twin's: run once, recorded from it, nothing lost.
    let info = cluster
        .wait_for_job(job, "the job to finish", |job| {
            job.state == JobState::Succeeded
        })
        .await;
    assert_eq!(info.worker.as_deref(), Some("twin"));
    assert_eq!((info.attempts, info.lost_attempts), (1, 0), "{info:?}");
    assert_eq!(info.output_tail.as_deref().unwrap_or_default(), "");
    assert_eq!(cluster.runs_of(job), 1);
    let connected = workers_json(&cluster);
    assert_eq!(connected.len(), 1, "{connected:?}");
    assert_eq!(connected[0]["name"], "twin");
    assert_eq!(connected[0]["id"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_back_before_its_old_connection_is_found_gone_keeps_its_attempts() {
    let cluster = Cluster::start(&[]).await;
    let instance = rand::random();
    let mut first = connect(&cluster.address, Role::Worker, None).await.unwrap();
    first
        .send(register("back", instance, Vec::new()))
        .await
        .unwrap();
    assert!(matches!(
        answer(&mut first).await,
        FromCoordinator::Registered { .. }
    ));
    let mut client = cluster.client().await;
    let submitted = client
        .submit("back", vec![drover::job::JobSpec::call("noop", Vec::new())])
        .await
        .unwrap();
    let assignment = loop {
        if let FromCoordinator::Assign(mut given) = answer(&mut first).await {
            break given.remove(0);
        }
    };
    first
        .send(ToCoordinator::Started(vec![assignment.lease]))
        .await
        .unwrap();
    wait_running(&mut client, submitted.first_job, Duration::from_secs(10)).await;

    // The same process on a new connection, while the old one still looks alive: it takes
    // its attempt along, and its old connection is let go.
    let mut second = connect(&cluster.address, Role::Worker, None).await.unwrap();
    let carried = vec![CarriedAttempt {
        lease: assignment.lease,
        job: assignment.job,
        attempt: assignment.attempt,
        slots: 1,
        epoch: assignment.epoch,
    }];
    second
        .send(register("back", instance, carried))
        .await
        .unwrap();
    assert!(matches!(
        answer(&mut second).await,
        FromCoordinator::Registered { .. }
    ));
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        while next(&mut first).await.is_ok() {}
    })
    .await;
    assert!(closed.is_ok(), "the old connection is closed");
    let workers = cluster.client().await.workers().await.unwrap();
    let named: Vec<&WorkerInfo> = workers.iter().filter(|w| w.name == "back").collect();
    assert_eq!(
        named.len(),
        1,
        "listed once, not as a lost one too: {workers:?}"
    );
    assert_eq!(named[0].id, 2, "a new registration: {workers:?}");
    assert_eq!(named[0].jobs, vec![submitted.first_job]);

    // Its result is its job's: one attempt, nothing lost.
    second
        .send(ToCoordinator::Results(vec![AttemptResult {
            lease: assignment.lease,
            job: assignment.job,
            attempt: assignment.attempt,
            outcome: Outcome::Succeeded,
            exit_code: None,
            started_at_ms: drover::job::now_ms(),
            duration_ms: 1,
            output_tail: String::new(),
            result: Vec::new(),
            error: None,
            outputs: Vec::new(),
            permanent: false,
            epoch: assignment.epoch,
        }]))
        .await
        .unwrap();
    let info = cluster
        .wait_for_job(submitted.first_job, "the result recorded", |job| {
            job.state == JobState::Succeeded
        })
        .await;
    assert_eq!((info.attempts, info.lost_attempts), (1, 0), "{info:?}");
    assert!(
        cluster
            .coordinator_log()
            .contains("worker reconnected; its earlier connection is closed"),
        "{}",
        cluster.coordinator_log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_on_one_machine_get_names_of_their_own_and_show_their_labels() {
    let cluster = Cluster::start(&[]).await;
    let start = |labels: &[&str]| {
        let mut command = Command::new(WORKER);
        command
            .args(["--coordinator", &cluster.address, "--slots", "1"])
            .arg("--scratch-dir")
            .arg(cluster.dir.path().join(format!("scratch-{}", labels.len())))
            .env_remove("DROVER_WORKER_TOKEN")
            .env_remove("DROVER_WORKER_NAME")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for label in labels {
            command.args(["--label", label]);
        }
        Reaped(command.spawn().unwrap())
    };
    let plain = start(&[]);
    let labelled = start(&["gpu", "big"]);
    let workers = cluster.wait_for_workers(2).await;
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let mut names: Vec<String> = workers.iter().map(|worker| worker.name.clone()).collect();
    names.sort();
    let mut expected = vec![
        format!("{}-{}", host.trim(), plain.0.id()),
        format!("{}-{}", host.trim(), labelled.0.id()),
    ];
    expected.sort();
    assert_eq!(names, expected);
    let mut ids: Vec<u64> = workers_json(&cluster)
        .iter()
        .map(|worker| worker["id"].as_u64().expect("an id"))
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 2, "each registration its own id");

    let table = stdout_of(&cluster.cli(&["workers"]));
    assert!(table.lines().next().unwrap().contains("LABELS"), "{table}");
    let row = |pid: u32| {
        table
            .lines()
            .find(|line| line.starts_with(&format!("{}-{pid} ", host.trim())))
            .unwrap_or_else(|| panic!("no row for {pid}:\n{table}"))
            .to_string()
    };
    assert!(row(labelled.0.id()).contains(" gpu,big "), "{table}");
    assert!(row(plain.0.id()).contains(" - "), "{table}");
}

/// A child process killed when the test ends.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
