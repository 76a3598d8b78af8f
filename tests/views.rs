//! The status views against a live cluster: `drover status`, `workers`, `watch` and `job`, the
//! HTTP API, `/metrics`, and the API's answers to bad input.

mod common;

use common::*;
use drover::status::{BatchInfo, ClusterStatus, WorkerInfo};
use serde_json::{json, Value};
use std::time::Duration;

/// Three quick jobs that succeed and one that fails for good.
fn mixed_jobs() -> Value {
    json!({
        "name": "mixed",
        "jobs": [
            {"cmd": ["sh", "-c", "sleep 0.2; echo one"], "name": "one"},
            {"cmd": ["sh", "-c", "sleep 0.2; echo two"]},
            {"cmd": ["sh", "-c", "sleep 0.2; echo three"]},
            {"cmd": ["sh", "-c", "echo doomed; exit 3"], "max_attempts": 1},
        ]
    })
}

async fn get(address: &str, path: &str) -> HttpResponse {
    http(address, "GET", path, &[], b"").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_cli_and_metrics_agree_on_a_live_batch() {
    let http_address = format!("127.0.0.1:{}", free_port());
    let mut cluster = Cluster::start(&["--http", &http_address]).await;
    cluster.start_worker("w1", 2, &[]);
    cluster.start_worker("w2", 2, &[]);
    cluster.wait_for_workers(2).await;

    // Submitted over HTTP (from loopback, no client secret configured).
    let body = serde_json::to_vec(&mixed_jobs()).unwrap();
    let created = http(
        &http_address,
        "POST",
        "/api/batches",
        &[("Content-Type", "application/json")],
        &body,
    )
    .await;
    assert_eq!(created.status, 201, "{created:?}");
    let created = created.json();
    let batch = created["batch"].as_u64().unwrap();
    let first_job = created["first_job"].as_u64().unwrap();
    assert_eq!(created["jobs"], 4);

    let mut client = cluster.client().await;
    let done = wait_batch_done(&mut client, batch, Duration::from_secs(30)).await;
    assert_eq!((done.succeeded, done.failed), (3, 1));
    assert!(done.started_at_ms.is_some() && done.finished_at_ms.is_some());
    assert_eq!(done.eta_s, None);

    // The batch over HTTP is the batch over the binary protocol.
    let over_http: BatchInfo = serde_json::from_str(
        &get(&http_address, &format!("/api/batches/{batch}"))
            .await
            .body,
    )
    .unwrap();
    assert_eq!(over_http, done);
    let listed: Vec<BatchInfo> =
        serde_json::from_str(&get(&http_address, "/api/batches").await.body).unwrap();
    assert_eq!(listed, vec![done.clone()]);
    let newest: Vec<BatchInfo> =
        serde_json::from_str(&get(&http_address, "/api/batches?limit=1").await.body).unwrap();
    assert_eq!(newest, vec![done.clone()]);
    assert_eq!(
        get(&http_address, "/api/batches?limit=lots").await.status,
        400
    );

    // The job with its record.
    let job = get(&http_address, &format!("/api/jobs/{first_job}")).await;
    assert_eq!(job.status, 200);
    let job = job.json();
    assert_eq!(job["state"], "succeeded");
    assert_eq!(job["name"], "one");
    assert_eq!(job["output_tail"], "one\n");

    // Status: counts, timings and the failure, the same through the API and the CLI.
    let status: ClusterStatus =
        serde_json::from_str(&get(&http_address, "/api/status").await.body).unwrap();
    let jobs = status.stats.jobs;
    assert_eq!(
        (jobs.pending, jobs.running, jobs.succeeded, jobs.failed),
        (0, 0, 3, 1)
    );
    assert_eq!(status.workers.idle, 2);
    assert_eq!(status.workers.slots, 4);
    assert_eq!(
        status.stats.run.count, 4,
        "every attempt's run time is counted"
    );
    assert!(
        (150..5_000).contains(&status.stats.run.p90_ms),
        "the sleeping jobs ran about 200 ms: {:?}",
        status.stats.run
    );
    assert_eq!(status.stats.wait.count, 4);
    assert_eq!(
        status
            .stats
            .per_second
            .iter()
            .map(|&n| u64::from(n))
            .sum::<u64>(),
        4
    );
    assert!(status.stats.busiest.is_empty(), "no batch is running");
    let failure = &status.stats.recent_failures[0];
    assert_eq!(failure.job, first_job + 3);
    assert_eq!(failure.outcome, "failed");
    assert!(failure.output_tail.contains("doomed"), "{failure:?}");

    let output = cluster.cli(&["status", "--json"]);
    assert!(output.status.success(), "{}", stderr_of(&output));
    let from_cli: ClusterStatus = serde_json::from_str(&stdout_of(&output)).unwrap();
    assert_eq!(from_cli.stats.jobs, status.stats.jobs);
    let text = stdout_of(&cluster.cli(&["status"]));
    assert!(
        text.contains("0 pending, 0 running, 3 succeeded, 1 failed"),
        "{text}"
    );
    assert!(text.contains("last failure: job"), "{text}");

    // Workers: who did how much, the same in both.
    let workers: Vec<WorkerInfo> =
        serde_json::from_str(&get(&http_address, "/api/workers").await.body).unwrap();
    assert_eq!(workers.len(), 2);
    let done_by_workers: u64 = workers.iter().map(|worker| worker.done).sum();
    let failed_by_workers: u64 = workers.iter().map(|worker| worker.failed).sum();
    assert_eq!((done_by_workers, failed_by_workers), (3, 1));
    assert!(workers
        .iter()
        .all(|worker| worker.state == "idle" && worker.current.is_empty()));
    let table = stdout_of(&cluster.cli(&["workers"]));
    assert!(
        table.contains("w1") && table.contains("w2") && table.contains("TIME/JOB"),
        "{table}"
    );

    // `drover job` tells which worker ran it and when.
    let shown = stdout_of(&cluster.cli(&["job", &first_job.to_string()]));
    assert!(shown.contains("started    20"), "{shown}");
    assert!(shown.contains("worker     w"), "{shown}");

    // The metrics page, in the Prometheus text format.
    let metrics = get(&http_address, "/metrics").await;
    assert_eq!(metrics.status, 200);
    let page = metrics.body;
    for line in [
        "drover_jobs{state=\"succeeded\"} 3",
        "drover_jobs{state=\"failed\"} 1",
        "drover_jobs{state=\"pending\"} 0",
        "drover_workers{state=\"idle\"} 2",
        "drover_jobs_finished_total{outcome=\"succeeded\"} 3",
        "drover_jobs_finished_total{outcome=\"failed\"} 1",
        "drover_job_run_seconds_count 4",
        "drover_job_wait_seconds_count 4",
    ] {
        assert!(
            page.lines().any(|got| got == line),
            "no {line:?} in:\n{page}"
        );
    }
    let commits = page
        .lines()
        .find_map(|line| line.strip_prefix("drover_ledger_commit_seconds_count "))
        .and_then(|count| count.parse::<u64>().ok())
        .expect("a commit count");
    assert!(
        commits >= 2,
        "the submission and the results were committed: {commits}"
    );

    // The newest batches only, as the dashboard asks.
    let second = client
        .submit(
            "second",
            vec![drover::job::JobSpec::call("noop", Vec::new())],
        )
        .await
        .unwrap()
        .batch;
    let newest: Vec<BatchInfo> =
        serde_json::from_str(&get(&http_address, "/api/batches?limit=1").await.body).unwrap();
    assert_eq!(
        newest.iter().map(|b| b.id).collect::<Vec<_>>(),
        vec![second]
    );
    let both: Vec<BatchInfo> =
        serde_json::from_str(&get(&http_address, "/api/batches?limit=5").await.body).unwrap();
    assert_eq!(
        both.iter().map(|b| b.id).collect::<Vec<_>>(),
        vec![batch, second]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_follows_a_batch_to_its_end() {
    let mut cluster = Cluster::start(&[]).await;
    cluster.start_worker("w1", 2, &[]);
    cluster.wait_for_workers(1).await;
    let jobs: Vec<String> = (0..6).map(|_| recording_job(0.3)).collect();
    let file = cluster.job_file("slow.jsonl", &jobs);
    let output = cluster.cli(&["submit", path_str(&file)]);
    assert!(output.status.success(), "{}", stderr_of(&output));
    let batch = stdout_of(&output).trim().to_string();

    let output = cluster.cli(&["watch", &batch, "--json", "--interval", "100ms"]);
    assert!(output.status.success(), "{}", stderr_of(&output));
    let frames: Vec<Value> = stdout_of(&output)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert!(
        frames.len() >= 3,
        "it redrew while the batch ran: {} frames",
        frames.len()
    );
    let finished: Vec<u64> = frames
        .iter()
        .map(|frame| {
            let batch = &frame["batch"];
            batch["succeeded"].as_u64().unwrap() + batch["failed"].as_u64().unwrap()
        })
        .collect();
    assert!(
        finished.windows(2).all(|pair| pair[0] <= pair[1]),
        "{finished:?}"
    );
    let last = frames.last().unwrap();
    assert_eq!(last["batch"]["done"], true);
    assert_eq!(last["batch"]["succeeded"], 6);
    assert!(frames
        .iter()
        .any(|frame| frame["workers"][0]["running"].as_u64() > Some(0)));

    // Without a batch, it watches until nothing is left, drawing text.
    let output = cluster.cli(&["watch", "--interval", "100ms"]);
    assert!(output.status.success(), "{}", stderr_of(&output));
    let text = stdout_of(&output);
    assert!(text.contains("6 succeeded"), "{text}");
    assert!(text.contains("w1"), "{text}");

    // A batch that is not there is an error, not a hang.
    let output = cluster.cli(&["watch", "99"]);
    assert!(!output.status.success());
    assert!(
        stderr_of(&output).contains("no batch 99"),
        "{}",
        stderr_of(&output)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_refuses_bad_input_and_changes_nothing() {
    let http_address = format!("127.0.0.1:{}", free_port());
    let mut cluster = Cluster::new(&["--http", &http_address]);
    cluster
        .coordinator_env
        .push(("DROVER_TOKEN".into(), "s3cret".into()));
    cluster.start_coordinator().await;
    let good = serde_json::to_vec(&json!({"jobs": [{"cmd": ["true"]}]})).unwrap();

    // Unknown ids and paths: 404 with a JSON error.
    for path in [
        "/api/batches/42",
        "/api/jobs/42",
        "/api/jobs/forty-two",
        "/api/nothing",
        "/nothing",
    ] {
        let response = get(&http_address, path).await;
        assert_eq!(response.status, 404, "{path}: {response:?}");
        assert!(response.json()["error"].is_string(), "{path}: {response:?}");
    }

    // No token, a wrong one, a malformed header: 401.
    let json = ("Content-Type", "application/json");
    for headers in [
        vec![json],
        vec![json, ("Authorization", "Bearer wrong")],
        vec![json, ("Authorization", "Basic czNjcmV0")],
        vec![json, ("Authorization", "Bearer s3cret-and-more")],
        vec![json, ("Authorization", "Bearer")],
    ] {
        let response = http(&http_address, "POST", "/api/batches", &headers, &good).await;
        assert_eq!(response.status, 401, "{headers:?}: {response:?}");
        assert!(response
            .headers
            .to_ascii_lowercase()
            .contains("www-authenticate: bearer"));
        let response = http(
            &http_address,
            "POST",
            "/api/batches/1/cancel",
            &headers,
            b"",
        )
        .await;
        assert_eq!(response.status, 401);
    }

    // The right token, but not said to be JSON (as a form on another site would send it): 415.
    let response = http(
        &http_address,
        "POST",
        "/api/batches",
        &[
            ("Authorization", "Bearer s3cret"),
            ("Content-Type", "text/plain"),
        ],
        &good,
    )
    .await;
    assert_eq!(response.status, 415, "{response:?}");

    // Malformed batches: 400 naming the field.
    let auth = [("Authorization", "bearer s3cret"), json];
    for (body, field) in [
        (
            r#"{"jobs": [{"cmd": ["true"]}, {"cmd": ["true"], "slots": "two"}]}"#,
            Some("jobs[1].slots"),
        ),
        (
            r#"{"jobs": [{"cmd": ["true"], "priority": 1.5}]}"#,
            Some("jobs[0].priority"),
        ),
        (r#"{"jobs": [{"cmd": []}]}"#, Some("jobs[0].cmd")),
        (
            r#"{"jobs": [{"cmd": ["true"], "bogus": 1}]}"#,
            Some("jobs[0].bogus"),
        ),
        (r#"{"jobs": "all of them"}"#, Some("jobs")),
        (
            r#"{"name": ["x"], "jobs": [{"cmd": ["true"]}]}"#,
            Some("name"),
        ),
        (r#"{"jobs": [{"cmd": ["true"]}]"#, None),
        ("\u{0}\u{1}garbage", None),
    ] {
        let response = http(
            &http_address,
            "POST",
            "/api/batches",
            &auth,
            body.as_bytes(),
        )
        .await;
        assert_eq!(response.status, 400, "{body}: {response:?}");
        let error = response.json();
        assert_eq!(error["field"].as_str(), field, "{body}: {error}");
        assert!(!error["error"].as_str().unwrap().is_empty());
    }

    // A huge body: 413, whether its length is declared up front or not.
    let huge = vec![b' '; drover::http::MAX_BODY_BYTES + 1];
    let response = http(&http_address, "POST", "/api/batches", &auth, &huge).await;
    assert_eq!(response.status, 413, "{:?}", response.body);
    assert!(response.json()["error"].as_str().unwrap().contains("limit"));
    let response = http_chunked(
        &http_address,
        "/api/batches",
        &auth,
        drover::http::MAX_BODY_BYTES + 1,
    )
    .await;
    assert_eq!(response.status, 413, "{:?}", response.body);

    // Nothing of that was submitted.
    let mut client = cluster.client_with("s3cret").await;
    assert!(client.batches().await.unwrap().is_empty());

    // The right token works.
    let response = http(&http_address, "POST", "/api/batches", &auth, &good).await;
    assert_eq!(response.status, 201, "{response:?}");
    assert_eq!(client.batches().await.unwrap().len(), 1);
    let response = http(&http_address, "POST", "/api/batches/1/cancel", &auth, b"").await;
    assert_eq!(response.status, 200, "{response:?}");
    let response = http(&http_address, "POST", "/api/batches/7/retry", &auth, b"").await;
    assert_eq!(response.status, 404, "{response:?}");

    // The dashboard is served with its assets, locked to its own origin.
    let page = get(&http_address, "/").await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("/assets/dashboard.js"));
    assert!(page
        .headers
        .to_ascii_lowercase()
        .contains("content-security-policy: default-src 'self'"));
    for asset in ["/assets/dashboard.js", "/assets/dashboard.css"] {
        assert_eq!(get(&http_address, asset).await.status, 200, "{asset}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_http_address_stops_the_coordinator_with_a_clear_message() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let data = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(COORDINATOR)
        .args(["--listen", "127.0.0.1:0", "--http", &address, "--data-dir"])
        .arg(data.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = stderr_of(&output);
    assert!(
        stderr.contains(&format!("cannot serve HTTP on {address}")),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_changes_come_from_loopback_by_their_own_name_only() {
    let http_address = format!("127.0.0.1:{}", free_port());
    let cluster = Cluster::start(&["--http", &http_address]).await;
    let good = serde_json::to_vec(&json!({"jobs": [{"cmd": ["true"]}]})).unwrap();
    let json = ("Content-Type", "application/json");

    // A page whose name was rebound to 127.0.0.1 sends its own name as the Host.
    let response = http(
        &http_address,
        "POST",
        "/api/batches",
        &[json, ("Host", "attacker.example")],
        &good,
    )
    .await;
    assert_eq!(response.status, 401, "{response:?}");
    // A form posted from another site cannot say JSON.
    let response = http(
        &http_address,
        "POST",
        "/api/batches",
        &[("Content-Type", "text/plain")],
        &good,
    )
    .await;
    assert_eq!(response.status, 415, "{response:?}");
    let mut client = cluster.client().await;
    assert!(
        client.batches().await.unwrap().is_empty(),
        "nothing was submitted"
    );

    let response = http(&http_address, "POST", "/api/batches", &[json], &good).await;
    assert_eq!(response.status, 201, "{response:?}");
    assert_eq!(client.batches().await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_stops_early_ends_the_output_quietly() {
    use std::io::Read;
    use std::os::unix::process::ExitStatusExt;
    let mut cluster = Cluster::start(&[]).await;
    cluster.start_worker("w", 8, &[]);
    let mut client = cluster.client().await;
    // Five thousand lines of jobs, far more than a pipe holds.
    let many = client
        .submit(
            "many",
            vec![drover::job::JobSpec::call("noop", Vec::new()); 5000],
        )
        .await
        .unwrap();
    wait_batch_done(&mut client, many.batch, Duration::from_secs(60)).await;
    for args in [&["jobs"][..], &["jobs", "--json"], &["log", "--batch", "1"]] {
        let mut child = std::process::Command::new(CLI)
            .args(args)
            .env("DROVER_COORDINATOR", &cluster.address)
            .env_remove("DROVER_TOKEN")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Like `head`: read a little, then close the pipe.
        let mut stdout = child.stdout.take().unwrap();
        let mut start = [0u8; 64];
        stdout
            .read_exact(&mut start)
            .unwrap_or_else(|error| panic!("{args:?}: {error}"));
        drop(stdout);
        let output = child.wait_with_output().unwrap();
        let said = stderr_of(&output);
        assert!(!said.contains("panicked"), "{args:?}: {said}");
        assert!(
            output.status.success() || output.status.signal() == Some(libc::SIGPIPE),
            "{args:?}: {:?} {said}",
            output.status
        );
    }
}

/// The number on a metrics line, if the page has it.
fn metric(page: &str, name: &str) -> Option<u64> {
    page.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_retry_the_views_agree_on_attempts_failures_and_rates() {
    let http_address = format!("127.0.0.1:{}", free_port());
    let mut cluster = Cluster::start(&["--http", &http_address, "--retry-backoff", "10ms"]).await;
    cluster.start_worker("w1", 2, &[]);
    cluster.wait_for_workers(1).await;
    let doomed = r#"{"cmd": ["sh", "-c", "echo doomed; exit 3"], "max_attempts": 2}"#.to_string();
    let file = cluster.job_file("doomed.jsonl", &[doomed.clone(), doomed]);
    let output = cluster.cli(&["submit", path_str(&file), "--wait", "--json"]);
    assert!(!output.status.success());
    let batch = serde_json::from_str::<Value>(&stdout_of(&output)).unwrap()["id"]
        .as_u64()
        .unwrap();
    let mut client = cluster.client().await;
    assert_eq!(client.retry(batch).await.unwrap(), 2);
    let info = wait_batch_done(&mut client, batch, Duration::from_secs(30)).await;
    assert_eq!(info.failed, 2);
    // Two jobs that ran and failed in well under a second: too quick for a rate.
    assert_eq!(info.jobs_per_s, 0.0);
    let shown = stdout_of(&cluster.cli(&["batch", &batch.to_string()]));
    assert!(!shown.contains("rate"), "{shown}");

    // The job: four attempts, all failed; the last apart from the earlier ones; an error that
    // says why it counts two of them.
    let job = client.job(1).await.unwrap();
    assert_eq!(job.attempts, 4);
    assert_eq!(job.history.len(), 4);
    let error = job.error.clone().unwrap();
    assert!(
        error.starts_with("failed 2 of 2 attempts (4 in all:")
            && error.contains("before a retry do not count"),
        "{error}"
    );
    let shown = stdout_of(&cluster.cli(&["job", "1"]));
    assert!(shown.contains("attempts   4 (4 failed)"), "{shown}");
    let (earlier, last) = shown.split_once("last attempt:").expect(&shown);
    let earlier = earlier.split_once("earlier attempts:").expect(&shown).1;
    for number in 1..=3 {
        assert!(earlier.contains(&format!("#{number} on w1")), "{shown}");
    }
    assert!(!earlier.contains("#4"), "{shown}");
    assert!(last.contains("#4 on w1"), "{shown}");

    // The metrics say what they count: jobs in each state now, times jobs ended (a retried job
    // ends twice), and attempts.
    let page = get(&http_address, "/metrics").await.body;
    assert_eq!(
        metric(&page, "drover_jobs{state=\"failed\"}"),
        Some(2),
        "{page}"
    );
    assert_eq!(
        metric(&page, "drover_jobs_finished_total{outcome=\"failed\"}"),
        Some(4),
        "{page}"
    );
    assert!(
        page.lines()
            .any(|line| line.starts_with("# HELP drover_jobs_finished")
                && line.contains("counts again")),
        "{page}"
    );
    assert_eq!(
        metric(&page, "drover_attempts_total{outcome=\"failed\"}"),
        Some(8),
        "{page}"
    );

    // Cancelling is not throughput: a thousand pending jobs cancelled add nothing to it.
    let before: ClusterStatus =
        serde_json::from_str(&get(&http_address, "/api/status").await.body).unwrap();
    let mut stuck = drover::job::JobSpec::exec(["true"]);
    stuck.requires = vec!["nowhere".into()];
    let pending = client.submit("stuck", vec![stuck; 1000]).await.unwrap();
    let cancelled = client
        .cancel(drover::net::protocol::CancelTarget::Batch(pending.batch))
        .await
        .unwrap();
    assert_eq!(cancelled, 1000);
    let info = wait_batch_done(&mut client, pending.batch, Duration::from_secs(30)).await;
    assert_eq!((info.cancelled, info.jobs_per_s), (1000, 0.0));
    let after: ClusterStatus =
        serde_json::from_str(&get(&http_address, "/api/status").await.body).unwrap();
    let sum = |status: &ClusterStatus| -> u64 {
        status.stats.per_second.iter().map(|&n| u64::from(n)).sum()
    };
    assert!(sum(&after) <= sum(&before), "{:?}", after.stats.per_second);
    assert!(after.stats.jobs_per_s <= before.stats.jobs_per_s);
    let shown = stdout_of(&cluster.cli(&["batches"]));
    let row = shown
        .lines()
        .find(|line| line.contains("stuck"))
        .expect(&shown);
    assert!(
        row.contains("  -  "),
        "no rate for a cancelled batch: {row}"
    );

    // The status says since when its timings count.
    let shown = stdout_of(&cluster.cli(&["status"]));
    assert!(
        shown.contains("(timings since the coordinator started, 20"),
        "{shown}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_sent_to_a_file_are_plain_text() {
    let data = tempfile::tempdir().unwrap();
    let log = data.path().join("coordinator.log");
    let mut child = std::process::Command::new(COORDINATOR)
        .args(["--listen", "127.0.0.1:0", "--http", "off", "--data-dir"])
        .arg(data.path().join("data"))
        .env("RUST_LOG", "info")
        .env_remove("NO_COLOR")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let text = wait_for(Duration::from_secs(30), "the coordinator to log", || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        async move { text.contains("coordinator listening").then_some(text) }
    })
    .await;
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !text.contains('\u{1b}'),
        "colour codes in a log file: {text:?}"
    );
    assert!(text.contains(" INFO "), "{text}");
}
