//! Jobs flow end to end through real processes: spread over workers, recorded once, labels,
//! cancel, retry, drain, and the CLI's JSON contract.

mod common;

use common::*;
use drover::job::{JobSpec, JobState};
use drover::net::protocol::CancelTarget;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_spreads_over_workers_and_each_job_is_recorded_once() {
    let mut cluster = Cluster::start(&[]).await;
    for name in ["w1", "w2", "w3"] {
        cluster.start_worker(name, 2, &[]);
    }
    cluster.wait_for_workers(3).await;
    let lines: Vec<String> = (0..30).map(|_| recording_job(0.1)).collect();
    let file = cluster.job_file("spread.jsonl", &lines);

    let output = cluster.cli(&["submit", path_str(&file), "--wait", "--json"]);
    assert!(output.status.success(), "{}", stderr_of(&output));
    let summary: serde_json::Value = serde_json::from_str(&stdout_of(&output)).unwrap();
    assert_eq!(summary["total"], 30);
    assert_eq!(summary["succeeded"], 30);
    assert_eq!(summary["done"], true);
    let batch = summary["id"].as_u64().unwrap();

    let mut client = cluster.client().await;
    let jobs = client.jobs(Some(batch), None).await.unwrap();
    assert_eq!(jobs.len(), 30);
    let ids: HashSet<u64> = jobs.iter().map(|job| job.id).collect();
    assert_eq!(ids.len(), 30, "every job appears once");
    let mut per_worker: HashMap<String, usize> = HashMap::new();
    for job in &jobs {
        assert_eq!(job.state, JobState::Succeeded);
        assert_eq!(job.exit_code, Some(0));
        assert_eq!(
            cluster.runs_of(job.id),
            1,
            "job {} ran exactly once",
            job.id
        );
        *per_worker.entry(job.worker.clone().unwrap()).or_default() += 1;
    }
    assert_eq!(
        per_worker.len(),
        3,
        "all three workers took jobs: {per_worker:?}"
    );

    // The workers table agrees with the completion log.
    let workers = client.workers().await.unwrap();
    for worker in &workers {
        assert_eq!(worker.done as usize, per_worker[&worker.name], "{worker:?}");
        assert_eq!(worker.running, 0);
    }

    // The log export has one line per finished job.
    let log = cluster.cli(&["log", "--batch", &batch.to_string(), "--format", "jsonl"]);
    assert!(log.status.success());
    assert_eq!(stdout_of(&log).lines().count(), 30);
    let csv = cluster.cli(&["log", "--batch", &batch.to_string(), "--format", "csv"]);
    assert_eq!(stdout_of(&csv).lines().count(), 31, "header and 30 records");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_json_follows_the_interface_contract() {
    let mut cluster = Cluster::start(&[]).await;
    cluster.start_worker("solo", 1, &[]);
    cluster.wait_for_workers(1).await;
    let file = cluster.job_file(
        "one.jsonl",
        &[r#"{"cmd": ["sh", "-c", "echo hello"], "name": "greet"}"#.to_string()],
    );
    let submitted = cluster.cli(&["submit", path_str(&file), "--batch", "greetings", "--json"]);
    assert!(submitted.status.success(), "{}", stderr_of(&submitted));
    let submitted: serde_json::Value = serde_json::from_str(&stdout_of(&submitted)).unwrap();
    assert_eq!(submitted["jobs"], 1);
    let batch = submitted["batch"].as_u64().unwrap().to_string();
    let mut client = cluster.client().await;
    wait_batch_done(&mut client, batch.parse().unwrap(), Duration::from_secs(30)).await;

    let info: serde_json::Value =
        serde_json::from_str(&stdout_of(&cluster.cli(&["batch", &batch, "--json"]))).unwrap();
    for field in [
        "id",
        "name",
        "total",
        "pending",
        "running",
        "succeeded",
        "failed",
        "cancelled",
        "done",
    ] {
        assert!(
            info.get(field).is_some(),
            "batch --json lacks {field}: {info}"
        );
    }
    assert_eq!(info["name"], "greetings");

    let jobs: serde_json::Value = serde_json::from_str(&stdout_of(
        &cluster.cli(&["jobs", "--batch", &batch, "--json"]),
    ))
    .unwrap();
    let job_id = jobs[0]["id"].as_u64().unwrap().to_string();
    let job: serde_json::Value =
        serde_json::from_str(&stdout_of(&cluster.cli(&["job", &job_id, "--json"]))).unwrap();
    for field in [
        "id",
        "batch",
        "name",
        "state",
        "attempts",
        "worker",
        "exit_code",
        "duration_ms",
    ] {
        assert!(job.get(field).is_some(), "job --json lacks {field}: {job}");
    }
    assert_eq!(job["state"], "succeeded");
    assert_eq!(job["worker"], "solo");
    assert_eq!(job["output_tail"], "hello\n");

    let workers: serde_json::Value =
        serde_json::from_str(&stdout_of(&cluster.cli(&["workers", "--json"]))).unwrap();
    for field in [
        "name",
        "slots",
        "running",
        "done",
        "failed",
        "last_seen_ms",
        "state",
    ] {
        assert!(
            workers[0].get(field).is_some(),
            "workers --json lacks {field}: {workers}"
        );
    }
    assert_eq!(workers[0]["done"], 1);

    let table = stdout_of(&cluster.cli(&["workers"]));
    assert!(table.starts_with("NAME"), "{table}");
    assert!(table.contains("solo"), "{table}");

    // Waited for, it is the same object with the batch's counts beside it.
    let waited = cluster.cli(&["submit", path_str(&file), "--wait", "--json"]);
    assert!(waited.status.success(), "{}", stderr_of(&waited));
    let waited: serde_json::Value = serde_json::from_str(&stdout_of(&waited)).unwrap();
    assert_eq!(waited["jobs"], 1, "{waited}");
    assert!(
        waited["batch"].as_u64().unwrap() > batch.parse().unwrap(),
        "{waited}"
    );
    assert_eq!(waited["batch"], waited["id"], "{waited}");
    assert_eq!(
        (&waited["succeeded"], &waited["done"]),
        (&1.into(), &true.into()),
        "{waited}"
    );

    let run = cluster.cli(&["run", "--", "sh", "-c", "echo ran; exit 7"]);
    assert_eq!(run.status.code(), Some(7), "{}", stderr_of(&run));
    assert_eq!(stdout_of(&run), "ran\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_labels_are_respected() {
    let mut cluster = Cluster::start(&[]).await;
    cluster.start_worker("plain", 1, &[]);
    cluster.start_worker("gpu-box", 1, &["--label", "gpu"]);
    cluster.wait_for_workers(2).await;
    let mut client = cluster.client().await;
    let mut gpu_job = JobSpec::exec(["true"]);
    gpu_job.requires = vec!["gpu".into()];
    let submitted = client
        .submit("labels", vec![gpu_job.clone(), gpu_job.clone(), gpu_job])
        .await
        .unwrap();
    wait_batch_done(&mut client, submitted.batch, Duration::from_secs(30)).await;
    for job in client.jobs(Some(submitted.batch), None).await.unwrap() {
        assert_eq!(job.worker.as_deref(), Some("gpu-box"), "{job:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_jobs_retry_with_backoff_then_fail_and_can_be_retried() {
    let mut cluster = Cluster::start(&["--retry-backoff", "50ms"]).await;
    cluster.start_worker("w", 2, &[]);
    cluster.wait_for_workers(1).await;
    let marker = cluster.out_dir().join("allow");
    let line = format!(
        r#"{{"cmd": ["sh", "-c", "echo $DROVER_ATTEMPT >> \"$OUT/$DROVER_JOB_ID\"; test -f {}"], "max_attempts": 3}}"#,
        marker.display()
    );
    let file = cluster.job_file("flaky.jsonl", &[line.clone(), line]);
    let output = cluster.cli(&["submit", path_str(&file), "--wait", "--json"]);
    assert!(
        !output.status.success(),
        "--wait exits non-zero when a job failed"
    );
    let summary: serde_json::Value = serde_json::from_str(&stdout_of(&output)).unwrap();
    assert_eq!(summary["failed"], 2);
    let batch = summary["id"].as_u64().unwrap();

    let mut client = cluster.client().await;
    let jobs = client
        .jobs(Some(batch), Some(JobState::Failed))
        .await
        .unwrap();
    assert_eq!(jobs.len(), 2);
    for job in &jobs {
        assert_eq!(cluster.runs_of(job.id), 3, "three attempts each");
        let detail = client.job(job.id).await.unwrap();
        assert_eq!(detail.attempts, 3);
        assert_eq!(detail.history.len(), 3);
        assert!(detail
            .history
            .iter()
            .all(|attempt| attempt.outcome == "failed"));
        assert!(
            detail
                .error
                .as_deref()
                .unwrap()
                .contains("failed 3 of 3 attempts"),
            "{detail:?}"
        );
    }

    std::fs::write(&marker, "").unwrap();
    let retry = cluster.cli(&["retry", "--batch", &batch.to_string(), "--json"]);
    assert!(retry.status.success(), "{}", stderr_of(&retry));
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&stdout_of(&retry)).unwrap()["retried"],
        2
    );
    let info = wait_batch_done(&mut client, batch, Duration::from_secs(30)).await;
    assert_eq!((info.succeeded, info.failed), (2, 0));
    for job in &jobs {
        assert_eq!(cluster.runs_of(job.id), 4);
        assert_eq!(client.job(job.id).await.unwrap().attempts, 4);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_failed_or_cancelled_job_is_retried_alone_from_the_cli_and_over_http() {
    let http_address = format!("127.0.0.1:{}", free_port());
    let mut cluster = Cluster::new(&["--http", &http_address]);
    cluster
        .coordinator_env
        .push(("DROVER_TOKEN".into(), "retry-token".into()));
    cluster.start_coordinator().await;
    cluster.start_worker("w", 2, &[]);
    cluster.wait_for_workers(1).await;
    let marker = cluster.out_dir().join("allow");
    let flaky = format!(
        r#"{{"cmd": ["sh", "-c", "test -f {}"], "max_attempts": 1}}"#,
        marker.display()
    );
    // Runs for a minute the first time; then until it is let go.
    let long = r#"{"cmd": ["sh", "-c", "if test -f \"$OUT/ran\"; then until test -f \"$OUT/go\"; do sleep 0.05; done; else touch \"$OUT/ran\"; sleep 60; fi"]}"#;
    let file = cluster.job_file(
        "three.jsonl",
        &[flaky, r#"{"cmd": ["true"]}"#.into(), long.into()],
    );
    let output = cluster.cli(&["submit", path_str(&file), "--json"]);
    assert!(output.status.success(), "{}", stderr_of(&output));
    let batch = serde_json::from_str::<serde_json::Value>(&stdout_of(&output)).unwrap()["batch"]
        .as_u64()
        .unwrap();
    let mut client = cluster.client().await;
    let jobs = client.jobs(Some(batch), None).await.unwrap();
    let (flaky, fine, long) = (jobs[0].id, jobs[1].id, jobs[2].id);
    wait_running(&mut client, long, Duration::from_secs(30)).await;
    // Cancelled only once its first run has marked itself, or the retry would be the first run.
    let ran = cluster.out_dir().join("ran");
    wait_for(
        Duration::from_secs(30),
        "the long job's first run",
        || async { ran.exists().then_some(()) },
    )
    .await;
    let cancel = cluster.cli(&["cancel", "--job", &long.to_string()]);
    assert!(cancel.status.success(), "{}", stderr_of(&cancel));
    let info = wait_batch_done(&mut client, batch, Duration::from_secs(30)).await;
    assert_eq!((info.succeeded, info.failed, info.cancelled), (1, 1, 1));

    // Refusals say why, and change nothing.
    let missing = cluster.cli(&["retry", "--job", "999"]);
    assert!(!missing.status.success());
    assert!(
        stderr_of(&missing).contains("no job 999"),
        "{}",
        stderr_of(&missing)
    );
    let succeeded = cluster.cli(&["retry", "--job", &fine.to_string()]);
    assert!(!succeeded.status.success());
    assert!(
        stderr_of(&succeeded).contains(&format!(
            "job {fine} succeeded: only a failed or cancelled job can be retried"
        )),
        "{}",
        stderr_of(&succeeded)
    );
    let neither = cluster.cli(&["retry"]);
    assert!(!neither.status.success());
    assert!(
        stderr_of(&neither).contains("--job"),
        "{}",
        stderr_of(&neither)
    );
    assert_eq!(client.batch(batch).await.unwrap(), info);

    // The failed job, from the CLI: it alone runs again, and now passes.
    std::fs::write(&marker, "").unwrap();
    let retry = cluster.cli(&["retry", "--job", &flaky.to_string(), "--json"]);
    assert!(retry.status.success(), "{}", stderr_of(&retry));
    let said: serde_json::Value = serde_json::from_str(&stdout_of(&retry)).unwrap();
    assert_eq!(said["retried"], 1);
    let again = wait_batch_done(&mut client, batch, Duration::from_secs(30)).await;
    assert_eq!((again.succeeded, again.failed, again.cancelled), (2, 0, 1));
    let job = client.job(flaky).await.unwrap();
    assert_eq!((job.state, job.attempts), (JobState::Succeeded, 2));

    // The cancelled job, over HTTP: with the client token, as JSON, as other changes.
    let path = format!("/api/jobs/{long}/retry");
    let json = ("Content-Type", "application/json");
    let auth = ("Authorization", "Bearer retry-token");
    let response = http(&http_address, "POST", &path, &[json], b"").await;
    assert_eq!(response.status, 401, "{response:?}");
    let response = http(&http_address, "POST", &path, &[auth], b"").await;
    assert_eq!(response.status, 415, "{response:?}");
    let response = http(&http_address, "POST", &path, &[auth, json], b"").await;
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.json()["retried"], 1);
    // Back in the queue or running: not retried twice.
    let response = http(&http_address, "POST", &path, &[auth, json], b"").await;
    assert_eq!(response.status, 409, "{response:?}");
    let error = response.json()["error"].as_str().unwrap().to_string();
    assert!(
        error.starts_with(&format!("job {long} is "))
            && error.contains("only a failed or cancelled"),
        "{error}"
    );
    let response = http(
        &http_address,
        "POST",
        "/api/jobs/999/retry",
        &[auth, json],
        b"",
    )
    .await;
    assert_eq!(response.status, 404, "{response:?}");
    std::fs::write(cluster.out_dir().join("go"), "").unwrap();
    let done = wait_batch_done(&mut client, batch, Duration::from_secs(30)).await;
    assert_eq!((done.succeeded, done.failed, done.cancelled), (3, 0, 0));
    assert_eq!(
        client.job(fine).await.unwrap().attempts,
        1,
        "the others did not run again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_running_and_pending_jobs() {
    let mut cluster = Cluster::start(&[]).await;
    cluster.start_worker("w", 1, &[]);
    cluster.wait_for_workers(1).await;
    let mut client = cluster.client().await;
    let submitted = client
        .submit("long", vec![JobSpec::exec(["sleep", "60"]); 3])
        .await
        .unwrap();
    wait_running(&mut client, submitted.first_job, Duration::from_secs(30)).await;
    let cancelled = client
        .cancel(CancelTarget::Batch(submitted.batch))
        .await
        .unwrap();
    assert_eq!(cancelled, 3);
    let info = wait_batch_done(&mut client, submitted.batch, Duration::from_secs(10)).await;
    assert_eq!(info.cancelled, 3);
    // The worker is free again: a new job runs at once.
    let next = client
        .submit("after", vec![JobSpec::exec(["true"])])
        .await
        .unwrap();
    let info = wait_batch_done(&mut client, next.batch, Duration::from_secs(10)).await;
    assert_eq!(info.succeeded, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_a_worker() {
    let mut cluster = Cluster::start(&[]).await;
    cluster.start_worker("drainer", 1, &[]);
    cluster.wait_for_workers(1).await;
    let mut client = cluster.client().await;
    let submitted = client
        .submit(
            "drain",
            vec![JobSpec::exec(["sleep", "1"]), JobSpec::exec(["true"])],
        )
        .await
        .unwrap();
    wait_running(&mut client, submitted.first_job, Duration::from_secs(30)).await;
    // The status counts what the worker list shows, without listing it.
    let counts = client.status().await.unwrap().workers;
    assert_eq!(
        (counts.idle, counts.busy, counts.slots, counts.running),
        (0, 1, 1, 1),
        "{counts:?}"
    );
    cluster.signal_worker("drainer", libc::SIGTERM);
    let status = cluster
        .wait_worker_exit("drainer", Duration::from_secs(30))
        .await;
    assert!(
        status.success(),
        "worker exits cleanly after draining: {status:?}"
    );
    let first = client.job(submitted.first_job).await.unwrap();
    assert_eq!(
        first.state,
        JobState::Succeeded,
        "the running job finished and was recorded"
    );
    let second = client.job(submitted.first_job + 1).await.unwrap();
    assert_eq!(
        second.state,
        JobState::Pending,
        "a draining worker takes no new job"
    );
    let workers = client.workers().await.unwrap();
    assert!(
        workers.iter().all(|worker| worker.state == "left"
            && worker.gone_at_ms.is_some()
            && worker.lost == 0),
        "a drained worker is listed as left, having lost nothing: {workers:?}"
    );
    let counts = client.status().await.unwrap().workers;
    assert_eq!(
        counts,
        drover::status::WorkerCounts::default(),
        "one that left is not counted as lost"
    );
    // Said plainly, as a goodbye rather than a loss.
    let table = stdout_of(&cluster.cli(&["workers"]));
    let row = table
        .lines()
        .find(|line| line.contains("drainer"))
        .expect(&table);
    assert!(row.contains("left ") && row.contains(" ago"), "{table}");
    assert!(!row.contains("lost ") && !row.contains("gone"), "{table}");
}

/// Every file and directory under `dir`, as paths relative to it.
fn tree(dir: &std::path::Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(at) = stack.pop() {
        for entry in std::fs::read_dir(&at).into_iter().flatten().flatten() {
            let path = entry.path();
            found.push(path.strip_prefix(dir).unwrap().display().to_string());
            if path.is_dir() {
                stack.push(path);
            }
        }
    }
    found.sort();
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_with_the_default_scratch_directory_leave_nothing_behind() {
    let cluster = Cluster::start(&[]).await;
    let tmp = cluster.dir.path().join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let worker = |name: &str| {
        std::process::Command::new(WORKER)
            .args([
                "--coordinator",
                &cluster.address,
                "--name",
                name,
                "--slots",
                "1",
            ])
            .env("TMPDIR", &tmp)
            .env_remove("DROVER_SCRATCH_DIR")
            .env_remove("DROVER_WORKER_TOKEN")
            .env("NO_COLOR", "1")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    // SAFETY: getuid(2) cannot fail and touches no memory.
    let scratch = tmp.join(format!("drover-scratch-{}", unsafe { libc::getuid() }));
    let mut client = cluster.client().await;

    // A worker killed mid-attempt leaves that attempt's directory.
    let mut killed = worker("killed");
    cluster.wait_for_workers(1).await;
    let long = client
        .submit("long", vec![JobSpec::exec(["sleep", "60"])])
        .await
        .unwrap();
    wait_running(&mut client, long.first_job, Duration::from_secs(30)).await;
    // The coordinator counts the job running once it is sent; the worker makes the attempt's
    // directory a moment later.
    let attempt_dir = format!("job-{}-attempt-1-", long.first_job);
    wait_for(
        Duration::from_secs(30),
        "the attempt's directory",
        || async {
            tree(&scratch)
                .iter()
                .any(|path| path.contains(&attempt_dir))
                .then_some(())
        },
    )
    .await;
    killed.kill().unwrap();
    killed.wait().unwrap();
    let left = tree(&scratch);
    assert!(
        left.iter().any(|path| path.contains(&attempt_dir)),
        "{left:?}"
    );
    client
        .cancel(CancelTarget::Batch(long.batch))
        .await
        .unwrap();

    // The next worker clears it, runs its jobs, and leaves nothing when it stops.
    let mut next = worker("next");
    let quick = client
        .submit(
            "quick",
            vec![JobSpec::exec(["sh", "-c", "echo hi > here"]); 3],
        )
        .await
        .unwrap();
    let info = wait_batch_done(&mut client, quick.batch, Duration::from_secs(30)).await;
    assert_eq!(info.succeeded, 3);
    // SAFETY: kill(2) on a child process we started; no memory is involved.
    assert_eq!(unsafe { libc::kill(next.id() as i32, libc::SIGTERM) }, 0);
    assert!(next.wait().unwrap().success());
    assert_eq!(
        tree(&scratch),
        vec!["attempts".to_string(), "uploads".to_string()],
        "only the two empty directories of the one scratch directory stay"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_past_its_timeout_is_killed_and_retried_then_failed() {
    let mut cluster = Cluster::start(&["--retry-backoff", "10ms"]).await;
    cluster.start_worker("w", 1, &[]);
    cluster.wait_for_workers(1).await;
    let mut client = cluster.client().await;
    let mut slow = JobSpec::exec(["sh", "-c", "echo started; sleep 30"]);
    slow.timeout_s = Some(1);
    slow.max_attempts = 2;
    let submitted = client.submit("slow", vec![slow]).await.unwrap();
    let info = wait_batch_done(&mut client, submitted.batch, Duration::from_secs(30)).await;
    assert_eq!(info.failed, 1);
    let job = client.job(submitted.first_job).await.unwrap();
    assert_eq!(job.attempts, 2);
    assert_eq!(job.history.len(), 2);
    for attempt in &job.history {
        assert_eq!(attempt.outcome, "timed_out", "{attempt:?}");
        assert_eq!(
            attempt.error.as_deref(),
            Some("timed out after 1s and was killed")
        );
    }
    assert_eq!(job.output_tail.as_deref(), Some("started\n"));
    // The worker is free again, and nothing of the killed jobs is left running.
    let next = client
        .submit("next", vec![JobSpec::exec(["true"])])
        .await
        .unwrap();
    assert_eq!(
        wait_batch_done(&mut client, next.batch, Duration::from_secs(10))
            .await
            .succeeded,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drover_toml_sets_defaults_below_flags_and_environment() {
    let mut cluster = Cluster::start(&[]).await;
    let config = cluster.dir.path().join("drover.toml");
    std::fs::write(
        &config,
        format!(
            "[client]\ncoordinator = \"{}\"\n\n[worker]\nlabels = [\"from-file\", \"gpu\"]\n",
            cluster.address
        ),
    )
    .unwrap();
    // The worker reads the file DROVER_CONFIG names.
    cluster.start_worker_with_env(
        "configured",
        1,
        &[],
        &[("DROVER_CONFIG", path_str(&config))],
    );
    let workers = cluster.wait_for_workers(1).await;
    assert_eq!(
        workers[0].labels,
        vec!["from-file".to_string(), "gpu".to_string()]
    );

    // The CLI finds ./drover.toml with no flag and no environment variable.
    let output = std::process::Command::new(CLI)
        .args(["workers", "--json"])
        .env_remove("DROVER_COORDINATOR")
        .env_remove("DROVER_CONFIG")
        .current_dir(cluster.dir.path())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr_of(&output));
    assert!(stdout_of(&output).contains("configured"));

    // A flag beats the file: this address is closed, so the command fails.
    let output = std::process::Command::new(CLI)
        .args([
            "workers",
            "--coordinator",
            &format!("127.0.0.1:{}", free_port()),
        ])
        .env_remove("DROVER_COORDINATOR")
        .current_dir(cluster.dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success());

    // A mistake in the file is named, not ignored.
    std::fs::write(&config, "[client]\ncoordinater = \"x\"\n").unwrap();
    let output = std::process::Command::new(CLI)
        .args(["batches"])
        .current_dir(cluster.dir.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr_of(&output).contains("drover.toml: [client] has no setting \"coordinater\""),
        "{}",
        stderr_of(&output)
    );
}

/// The soft and hard open-files limits in a process's `/proc/PID/limits`.
fn open_files_of(pid: u32) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .unwrap();
    let figures: Vec<u64> = line
        .split_whitespace()
        .filter_map(|word| word.parse().ok())
        .collect();
    (figures[0], figures[1])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_runs_with_the_open_files_limit_its_worker_was_started_with() {
    // A soft limit below the hard one, which the worker will raise (lowering is always
    // allowed; half the hard limit leaves the other tests here plenty).
    let (soft, hard) = open_files_of(std::process::id());
    let lowered = libc::rlimit {
        rlim_cur: soft.min(hard / 2),
        rlim_max: hard,
    };
    // SAFETY: setrlimit only reads the struct passed by pointer.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lowered) }, 0);
    let started_with = open_files_of(std::process::id());
    let mut cluster = Cluster::start(&[]).await;
    cluster.start_worker("w", 1, &[]);
    cluster.wait_for_workers(1).await;
    // The worker raised its own limit for its connections and outputs...
    let (soft, hard) = open_files_of(cluster.worker_pid("w"));
    assert_eq!(soft, hard, "the worker raised its limit to its hard limit");
    assert!(soft > started_with.0 && hard >= started_with.1);
    // ...and its job got back the limits the worker inherited from this test.
    let mut client = cluster.client().await;
    let called = client
        .call(JobSpec::exec(["sh", "-c", "ulimit -Sn; ulimit -Hn"]))
        .await
        .unwrap();
    assert_eq!(called.record.state, JobState::Succeeded);
    let printed = format!("{}\n{}\n", started_with.0, started_with.1);
    assert_eq!(
        String::from_utf8_lossy(called.result.as_deref().unwrap_or_default()),
        printed
    );
}
