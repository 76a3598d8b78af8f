//! Why a pending job waits, as every view says it (CLI text and JSON, the HTTP API), and the
//! warning a submission gives at once when no connected worker can take some of its jobs.

mod common;

use common::*;
use drover::job::JobState;
use serde_json::Value;
use std::io::BufRead;
use std::time::Duration;

const NO_TPU: &str = "no connected worker has label tpu";
const TOO_WIDE: &str = "needs 4 slots; the largest worker has 2";

/// A job that holds its slot until `$OUT/go` exists.
fn held_job() -> String {
    r#"{"cmd": ["sh", "-c", "until test -f \"$OUT/go\"; do sleep 0.05; done"]}"#.to_string()
}

fn json_of(output: &std::process::Output) -> Value {
    assert!(output.status.success(), "{}", stderr_of(output));
    serde_json::from_str(&stdout_of(output))
        .unwrap_or_else(|error| panic!("not JSON ({error}): {}", stdout_of(output)))
}

/// The reasons in a `waiting` array, as (jobs, reason).
fn groups(waiting: &Value) -> Vec<(u64, String)> {
    waiting
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {waiting}"))
        .iter()
        .map(|group| {
            (
                group["jobs"].as_u64().unwrap(),
                group["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_view_says_why_a_pending_job_waits_and_submit_warns_at_once() {
    let http_address = format!("127.0.0.1:{}", free_port());
    let mut cluster = Cluster::start(&["--http", &http_address, "--retry-backoff", "10m"]).await;
    cluster.start_worker("w1", 2, &[]);
    cluster.start_worker("w2", 2, &[]);
    cluster.wait_for_workers(2).await;

    // No worker has the label, none has 4 slots; a job that fails once and backs off; four
    // that fill every slot; two that wait their turn behind them.
    let mut lines = vec![
        r#"{"cmd": ["true"], "requires": ["tpu"]}"#.to_string(),
        r#"{"cmd": ["true"], "slots": 4}"#.to_string(),
        r#"{"cmd": ["false"], "max_attempts": 2}"#.to_string(),
    ];
    lines.extend((0..6).map(|_| held_job()));
    let file = cluster.job_file("mixed.jsonl", &lines);
    let output = cluster.cli(&["submit", path_str(&file)]);
    assert!(output.status.success(), "{}", stderr_of(&output));
    let warned = stderr_of(&output);
    assert!(
        warned.contains(&format!(
            "warning: 1 job of batch 1 cannot start on any connected worker ({NO_TPU})"
        )) && warned.contains(&format!("({TOO_WIDE})")),
        "{warned}"
    );
    assert_eq!(warned.lines().count(), 2, "{warned}");
    let batch: u64 = stdout_of(&output).trim().parse().unwrap();
    let (tpu, wide, failing) = (1, 2, 3);
    let (next, behind) = (8, 9);

    let mut client = cluster.client().await;
    wait_for(
        Duration::from_secs(30),
        "every slot taken and the failure backing off",
        || async {
            let info = cluster.try_client().await?.batch(batch).await.ok()?;
            let job = cluster.try_client().await?.job(failing).await.ok()?;
            (info.running == 4 && job.attempts == 1 && job.state == JobState::Pending).then_some(())
        },
    )
    .await;

    // `drover job`: the words, on a line of their own; its JSON has them as `waiting`.
    let text = stdout_of(&cluster.cli(&["job", &tpu.to_string()]));
    assert!(
        text.contains(&format!("\n  waiting    {NO_TPU}\n")),
        "{text}"
    );
    let wide_json = json_of(&cluster.cli(&["job", &wide.to_string(), "--json"]));
    assert_eq!(wide_json["waiting"], TOO_WIDE);
    let failed_once = json_of(&cluster.cli(&["job", &failing.to_string(), "--json"]));
    assert_eq!(
        failed_once["waiting"],
        "retrying after backoff (1 of 2 attempts failed)"
    );
    let last = json_of(&cluster.cli(&["job", &behind.to_string(), "--json"]));
    assert_eq!(last["waiting"], "waiting for a free slot (1 ahead)");

    // `drover jobs`: a column for it, and in JSON each pending job has it.
    let table = stdout_of(&cluster.cli(&["jobs", "--batch", &batch.to_string()]));
    assert!(
        table.lines().next().unwrap().ends_with("WAITING"),
        "{table}"
    );
    for said in [
        NO_TPU,
        TOO_WIDE,
        "waiting for a free slot (next in line)",
        "waiting for a free slot (1 ahead)",
    ] {
        assert!(table.contains(said), "no {said:?} in\n{table}");
    }
    let pending = json_of(&cluster.cli(&[
        "jobs",
        "--batch",
        &batch.to_string(),
        "--state",
        "pending",
        "--json",
    ]));
    let reasons: Vec<(u64, &str)> = pending
        .as_array()
        .unwrap()
        .iter()
        .map(|job| {
            (
                job["id"].as_u64().unwrap(),
                job["waiting"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        reasons,
        vec![
            (tpu, NO_TPU),
            (wide, TOO_WIDE),
            (failing, "retrying after backoff (1 of 2 attempts failed)"),
            (next, "waiting for a free slot (next in line)"),
            (behind, "waiting for a free slot (1 ahead)"),
        ]
    );
    let running = json_of(&cluster.cli(&["job", "4", "--json"]));
    assert_eq!(running["state"], "running");
    assert_eq!(
        running["waiting"],
        Value::Null,
        "a running job does not wait"
    );

    // `drover batch` and `drover status`: the pending jobs by reason.
    let expected = vec![
        (1, NO_TPU.to_string()),
        (1, TOO_WIDE.to_string()),
        (2, "waiting for a free slot".to_string()),
        (1, "retrying after backoff".to_string()),
    ];
    let info = json_of(&cluster.cli(&["batch", &batch.to_string(), "--json"]));
    assert_eq!(groups(&info["waiting"]), expected);
    assert_eq!(info["waiting"][0]["blocked"], true);
    assert_eq!(info["waiting"][2]["blocked"], false);
    let text = stdout_of(&cluster.cli(&["batch", &batch.to_string()]));
    assert!(
        text.contains(&format!(
            "  waiting    1 job: {NO_TPU}\n             1 job: {TOO_WIDE}\n             2 jobs: waiting for a free slot\n"
        )),
        "{text}"
    );
    let status = json_of(&cluster.cli(&["status", "--json"]));
    assert_eq!(groups(&status["waiting"]), expected);
    let text = stdout_of(&cluster.cli(&["status"]));
    assert!(
        text.contains(&format!("\nwaiting    1 job: {NO_TPU}\n")),
        "{text}"
    );

    // The HTTP API answers the same JSON.
    let job = http(&http_address, "GET", &format!("/api/jobs/{tpu}"), &[], b"").await;
    assert_eq!(job.json()["waiting"], NO_TPU);
    let job = http(
        &http_address,
        "GET",
        &format!("/api/jobs/{behind}"),
        &[],
        b"",
    )
    .await;
    assert_eq!(job.json()["waiting"], "waiting for a free slot (1 ahead)");
    let over_http = http(
        &http_address,
        "GET",
        &format!("/api/batches/{batch}"),
        &[],
        b"",
    )
    .await;
    assert_eq!(groups(&over_http.json()["waiting"]), expected);
    let over_http = http(&http_address, "GET", "/api/status", &[], b"").await;
    assert_eq!(groups(&over_http.json()["waiting"]), expected);

    // A submission over HTTP says it too; `submit --wait` warns before it waits.
    let body = br#"{"jobs": [{"cmd": ["true"], "requires": ["tpu"]}]}"#;
    let created = http(
        &http_address,
        "POST",
        "/api/batches",
        &[("Content-Type", "application/json")],
        body,
    )
    .await;
    assert_eq!(created.status, 201, "{created:?}");
    assert_eq!(
        created.json()["unplaceable"],
        serde_json::json!([{"jobs": 1, "reason": NO_TPU, "blocked": true}])
    );
    let tpu_only = cluster.job_file(
        "tpu.jsonl",
        &[r#"{"cmd": ["true"], "requires": ["tpu"]}"#.into()],
    );
    let mut waiting = std::process::Command::new(CLI)
        .args(["submit", path_str(&tpu_only), "--wait"])
        .env("DROVER_COORDINATOR", &cluster.address)
        .env_remove("DROVER_TOKEN")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = waiting.stderr.take().unwrap();
    let (said_tx, said_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = said_tx.send(line);
        }
    });
    let warning = wait_for(Duration::from_secs(30), "submit --wait to warn", || {
        let line = said_rx.try_recv().ok();
        async move { line.filter(|line| line.contains("warning")) }
    })
    .await;
    assert!(warning.contains(NO_TPU), "{warning}");
    assert!(waiting.try_wait().unwrap().is_none(), "it still waits");

    // Workers may come later: a worker with the label, one wide enough, and the slots let go.
    cluster.start_worker("tpu-box", 1, &["--label", "tpu"]);
    cluster.start_worker("wide", 4, &[]);
    std::fs::write(cluster.out_dir().join("go"), "").unwrap();
    let status = wait_for(Duration::from_secs(30), "submit --wait to end", || {
        let exited = waiting.try_wait().unwrap();
        async move { exited }
    })
    .await;
    assert!(status.success(), "submit --wait ends once its job ran");
    for job in [tpu, wide, next, behind] {
        cluster
            .wait_for_job(job, "the job to succeed", |info| {
                info.state == JobState::Succeeded
            })
            .await;
    }
    let info = json_of(&cluster.cli(&["batch", &batch.to_string(), "--json"]));
    assert_eq!(
        info["pending"], 1,
        "only the failure backing off is left: {info}"
    );
    assert_eq!(
        groups(&info["waiting"]),
        vec![(1, "retrying after backoff".to_string())]
    );
    let info = client.batch(batch).await.unwrap();
    assert_eq!(info.waiting.len(), 1, "{info:?}");
}
