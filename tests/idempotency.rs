//! Submissions that cannot happen twice, on real processes: a submission whose answer is lost,
//! or whose coordinator is killed under it, is sent again by the CLI under its idempotency key
//! and queued once; the same key given twice, from the CLI, over HTTP, or one of each, makes one
//! batch.

mod common;

use common::*;
use drover::net::protocol::FromCoordinator;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The batches the coordinator holds, as `drover batches --json` prints them.
fn batches(cluster: &Cluster) -> Vec<serde_json::Value> {
    let listed = cluster.cli(&["batches", "--json"]);
    assert!(listed.status.success(), "{}", stderr_of(&listed));
    serde_json::from_str(&stdout_of(&listed)).unwrap()
}

/// A proxy in front of the coordinator. Its first connection is cut, both ways, at the
/// coordinator's first answer to a request, which never reaches the client (as when the
/// coordinator's host dies right after the commit); the flag says it happened. Later
/// connections pass through.
async fn proxy_losing_the_first_answer(coordinator: String) -> (String, Arc<AtomicBool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let cut = Arc::new(AtomicBool::new(false));
    let cut_flag = cut.clone();
    tokio::spawn(async move {
        let mut first = true;
        while let Ok((mut client, _)) = listener.accept().await {
            let Ok(mut upstream) = TcpStream::connect(&coordinator).await else {
                continue;
            };
            if !std::mem::take(&mut first) {
                tokio::spawn(async move {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                });
                continue;
            }
            let cut = cut_flag.clone();
            tokio::spawn(async move {
                let (mut client_reads, mut client_writes) = client.into_split();
                let (mut upstream_reads, mut upstream_writes) = upstream.into_split();
                let forward = tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut client_reads, &mut upstream_writes).await;
                });
                // Frame by frame: a four-byte length, then a postcard message.
                loop {
                    let mut prefix = [0u8; 4];
                    if upstream_reads.read_exact(&mut prefix).await.is_err() {
                        break;
                    }
                    let mut body = vec![0u8; u32::from_be_bytes(prefix) as usize];
                    if upstream_reads.read_exact(&mut body).await.is_err() {
                        break;
                    }
                    let message: FromCoordinator = postcard::from_bytes(&body).unwrap();
                    if matches!(message, FromCoordinator::Response { .. }) {
                        cut.store(true, Ordering::SeqCst);
                        break;
                    }
                    let written = client_writes.write_all(&prefix).await;
                    if written.is_err() || client_writes.write_all(&body).await.is_err() {
                        break;
                    }
                }
                forward.abort();
            });
        }
    });
    (address, cut)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submission_whose_answer_is_lost_is_sent_again_and_queued_once() {
    let cluster = Cluster::start(&[]).await;
    let (proxy, cut) = proxy_losing_the_first_answer(cluster.address.clone()).await;
    let jobs = cluster.job_file(
        "three.jsonl",
        &vec![r#"{"handler": "noop"}"#.to_string(); 3],
    );
    let submitted = std::process::Command::new(CLI)
        .args(["submit", "--json"])
        .arg(&jobs)
        .env("DROVER_COORDINATOR", &proxy)
        .env_remove("DROVER_TOKEN")
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(submitted.status.success(), "{}", stderr_of(&submitted));
    assert!(
        cut.load(Ordering::SeqCst),
        "the first answer was not cut off"
    );
    // It said it lost the connection and sent the submission again...
    let said = stderr_of(&submitted);
    assert!(
        said.contains("lost the connection") && said.contains("same idempotency key"),
        "{said}"
    );
    // ...and its answer is the batch the first send made: no repeat to the user, one batch.
    let answer: serde_json::Value = serde_json::from_str(&stdout_of(&submitted)).unwrap();
    assert_eq!(answer["batch"], 1, "{answer}");
    assert_eq!(answer["jobs"], 3);
    assert_eq!(answer["repeated"], false);
    let batches = batches(&cluster);
    assert_eq!(batches.len(), 1, "{batches:?}");
    assert_eq!(batches[0]["total"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submission_under_a_killed_coordinator_ends_as_one_batch_after_its_restart() {
    let mut cluster = Cluster::start(&[]).await;
    // Large enough that the commit takes a while: the kill lands while it is being written or
    // just after, before the answer.
    let line = r#"{"handler": "noop", "payload": "0123456789abcdef"}"#.to_string();
    let jobs = cluster.job_file("many.jsonl", &vec![line; 100_000]);
    let wal = cluster
        .data_dir()
        .join(format!("{}-wal", drover::storage::sqlite::LEDGER_FILE));
    let wal_size = || std::fs::metadata(&wal).map_or(0, |meta| meta.len());
    let before = wal_size();
    let submitting = std::process::Command::new(CLI)
        .args(["submit", "--json"])
        .arg(&jobs)
        .env("DROVER_COORDINATOR", &cluster.address)
        .env_remove("DROVER_TOKEN")
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(
        Duration::from_secs(60),
        "the commit to reach the log",
        || async { (wal_size() > before + (1 << 20)).then_some(()) },
    )
    .await;
    cluster.restart_coordinator(Duration::from_secs(1)).await;
    let submitted = tokio::task::spawn_blocking(move || submitting.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(submitted.status.success(), "{}", stderr_of(&submitted));
    assert!(
        stderr_of(&submitted).contains("lost the connection"),
        "{}",
        stderr_of(&submitted)
    );
    let answer: serde_json::Value = serde_json::from_str(&stdout_of(&submitted)).unwrap();
    assert_eq!(answer["jobs"], 100_000, "{answer}");
    let batches = batches(&cluster);
    assert_eq!(batches.len(), 1, "exactly one batch: {batches:?}");
    assert_eq!(batches[0]["id"], answer["batch"]);
    assert_eq!(batches[0]["total"], 100_000);
    let log = cluster.coordinator_log();
    assert!(!log.contains("panicked"), "{log}");
    let queued_after_restart =
        std::fs::read_to_string(cluster.dir.path().join("coordinator-2.log"))
            .unwrap()
            .contains("batch queued");
    eprintln!(
        "the batch was {} the restart",
        if queued_after_restart {
            "not on disk at the kill: queued by the submission sent again after"
        } else {
            "on disk at the kill: the submission sent again was answered with it after"
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeat_while_the_first_is_being_written_is_answered_with_it() {
    let cluster = Cluster::start(&[]).await;
    let wal = cluster
        .data_dir()
        .join(format!("{}-wal", drover::storage::sqlite::LEDGER_FILE));
    let wal_size = || std::fs::metadata(&wal).map_or(0, |meta| meta.len());
    let before = wal_size();
    let mut first = cluster.client().await;
    let large = vec![drover::job::JobSpec::call("noop", vec![7; 16]); 150_000];
    let writing = tokio::spawn(async move { first.submit_with_key("large", large, "same").await });
    // The second submission under the key, sent as the first's commit is being written (or
    // just after): it is answered with the first batch, whichever.
    wait_for(
        Duration::from_secs(60),
        "the commit to reach the log",
        || async { (wal_size() > before + (1 << 20)).then_some(()) },
    )
    .await;
    let mut second = cluster.client().await;
    let small = vec![drover::job::JobSpec::call("noop", Vec::new())];
    let repeated = second
        .submit_with_key("small", small, "same")
        .await
        .unwrap();
    let first = writing.await.unwrap().unwrap();
    assert!(!first.repeated);
    assert!(repeated.repeated);
    assert_eq!(
        (repeated.batch, repeated.first_job, repeated.jobs),
        (first.batch, first.first_job, 150_000)
    );
    assert_eq!(batches(&cluster).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_key_twice_from_the_cli_makes_one_batch() {
    let cluster = Cluster::start(&[]).await;
    let jobs = cluster.job_file("two.jsonl", &vec![r#"{"handler": "noop"}"#.to_string(); 2]);
    let jobs = path_str(&jobs);
    let first = cluster.cli(&["submit", jobs, "--idempotency-key", "nightly-2026-12-01"]);
    assert!(first.status.success(), "{}", stderr_of(&first));
    assert_eq!(stdout_of(&first).trim(), "1");
    assert!(!stderr_of(&first).contains("already submitted"));

    // Again: the same batch id on standard output, and why on standard error.
    let again = cluster.cli(&["submit", jobs, "--idempotency-key", "nightly-2026-12-01"]);
    assert!(again.status.success(), "{}", stderr_of(&again));
    assert_eq!(stdout_of(&again).trim(), "1");
    assert!(
        stderr_of(&again)
            .contains("already submitted as batch 1 (idempotency key nightly-2026-12-01)"),
        "{}",
        stderr_of(&again)
    );
    let json = cluster.cli(&[
        "submit",
        jobs,
        "--json",
        "--idempotency-key",
        "nightly-2026-12-01",
    ]);
    let answer: serde_json::Value = serde_json::from_str(&stdout_of(&json)).unwrap();
    assert_eq!(
        answer,
        serde_json::json!({"batch": 1, "jobs": 2, "repeated": true})
    );
    assert_eq!(batches(&cluster).len(), 1);

    // Without a key, or with another, each submission is a batch of its own.
    for args in [
        vec!["submit", jobs],
        vec!["submit", jobs, "--idempotency-key", "other"],
    ] {
        let output = cluster.cli(&args);
        assert!(output.status.success(), "{}", stderr_of(&output));
    }
    assert_eq!(batches(&cluster).len(), 3);

    // A bad key is refused before anything is sent.
    for bad in ["", "two words", &"k".repeat(129)] {
        let refused = cluster.cli(&["submit", jobs, "--idempotency-key", bad]);
        assert!(!refused.status.success());
        let said = stderr_of(&refused);
        assert!(said.contains("idempotency key"), "{said}");
        assert!(!said.contains("panicked"), "{said}");
    }
    assert_eq!(batches(&cluster).len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_key_over_http_and_from_the_cli_is_one_key() {
    let http_address = format!("127.0.0.1:{}", free_port());
    let cluster = Cluster::start(&["--http", &http_address]).await;
    let body = serde_json::to_vec(&serde_json::json!({
        "name": "over-http",
        "jobs": [{"handler": "noop"}, {"handler": "noop"}],
    }))
    .unwrap();
    let json = ("Content-Type", "application/json");
    let post = |headers: Vec<(&'static str, &'static str)>, body: Vec<u8>| {
        let address = http_address.clone();
        async move { http(&address, "POST", "/api/batches", &headers, &body).await }
    };

    // The header, twice: created, then the same batch again.
    let created = post(vec![json, ("Idempotency-Key", "h-1")], body.clone()).await;
    assert_eq!(created.status, 201, "{created:?}");
    assert_eq!(created.json()["repeated"], false);
    let again = post(vec![json, ("Idempotency-Key", "h-1")], body.clone()).await;
    assert_eq!(again.status, 200, "{again:?}");
    let again = again.json();
    assert_eq!(
        (
            &again["batch"],
            &again["first_job"],
            &again["jobs"],
            &again["repeated"]
        ),
        (
            &created.json()["batch"],
            &created.json()["first_job"],
            &serde_json::json!(2),
            &serde_json::json!(true)
        )
    );
    // The body's field is the same key.
    let keyed_body = serde_json::to_vec(&serde_json::json!({
        "idempotency_key": "h-1",
        "jobs": [{"handler": "noop"}],
    }))
    .unwrap();
    let by_field = post(vec![json], keyed_body).await;
    assert_eq!(by_field.status, 200, "{by_field:?}");
    assert_eq!(by_field.json()["batch"], 1);
    assert_eq!(batches(&cluster).len(), 1);

    // A key from the CLI, then over HTTP: one key, one batch.
    let jobs = cluster.job_file("one.jsonl", &[r#"{"handler": "noop"}"#.into()]);
    let from_cli = cluster.cli(&["submit", path_str(&jobs), "--idempotency-key", "shared"]);
    assert!(from_cli.status.success(), "{}", stderr_of(&from_cli));
    assert_eq!(stdout_of(&from_cli).trim(), "2");
    let over_http = post(vec![json, ("Idempotency-Key", "shared")], body.clone()).await;
    assert_eq!(over_http.status, 200, "{over_http:?}");
    assert_eq!(over_http.json()["batch"], 2);
    assert_eq!(over_http.json()["jobs"], 1, "the first submission's jobs");
    // And over HTTP first, then from the CLI.
    let created = post(vec![json, ("Idempotency-Key", "http-first")], body.clone()).await;
    assert_eq!(created.status, 201);
    let from_cli = cluster.cli(&["submit", path_str(&jobs), "--idempotency-key", "http-first"]);
    assert_eq!(stdout_of(&from_cli).trim(), "3");
    assert!(stderr_of(&from_cli).contains("already submitted as batch 3"));
    assert_eq!(batches(&cluster).len(), 3);

    // Bad keys, and a header and field that disagree, are refused with what is wrong.
    let mixed = serde_json::to_vec(&serde_json::json!({
        "idempotency_key": "one",
        "jobs": [{"handler": "noop"}],
    }))
    .unwrap();
    let refused = post(vec![json, ("Idempotency-Key", "two")], mixed).await;
    assert_eq!(refused.status, 400, "{refused:?}");
    assert!(refused.body.contains("differ"), "{refused:?}");
    let spaced = post(vec![json, ("Idempotency-Key", "a b")], body.clone()).await;
    assert_eq!(spaced.status, 400, "{spaced:?}");
    assert!(spaced.body.contains("not printable ASCII"), "{spaced:?}");
    let long = Box::leak("k".repeat(200).into_boxed_str());
    let too_long = post(vec![json, ("Idempotency-Key", long)], body.clone()).await;
    assert_eq!(too_long.status, 400, "{too_long:?}");
    assert!(
        too_long.body.contains("above the limit of 128"),
        "{too_long:?}"
    );
    assert_eq!(batches(&cluster).len(), 3);
}
