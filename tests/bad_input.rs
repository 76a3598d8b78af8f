//! Bad input gets a clear message and changes nothing: malformed job files, wrong tokens, hostile
//! bytes, silent connections, connection floods, an unreachable coordinator.

mod common;

use common::*;
use drover::client::{Client, ClientError};
use drover::job::JobSpec;
use drover::net::auth::Secret;
use drover::net::connect::ConnectError;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until the peer closes; panics if it stays open past `within`.
async fn expect_closed(stream: &mut TcpStream, within: Duration) {
    let mut sink = [0u8; 1024];
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut sink)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(_)) => continue,
            Err(_) => panic!("connection still open after {within:?}"),
        }
    }
}

/// The coordinator still serves: a batch goes through on a fresh client.
async fn still_serving(cluster: &Cluster) {
    let mut client = cluster.client().await;
    assert!(
        client.batches().await.unwrap().is_empty(),
        "no state was changed"
    );
    assert!(client
        .workers()
        .await
        .unwrap()
        .iter()
        .all(|worker| worker.name == "w"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_job_file_names_line_and_field_and_submits_nothing() {
    let cluster = Cluster::start(&[]).await;
    let file = cluster.job_file(
        "bad.jsonl",
        &[
            r#"{"cmd": ["true"]}"#.to_string(),
            r#"{"cmd": ["true"], "max_attempts": "three"}"#.to_string(),
        ],
    );
    let output = cluster.cli(&["submit", common::path_str(&file)]);
    assert_eq!(output.status.code(), Some(1));
    let message = stderr_of(&output);
    assert!(
        message.contains("line 2, field \"max_attempts\": expected a positive integer"),
        "{message}"
    );
    assert!(message.contains("nothing was submitted"), "{message}");
    assert_eq!(
        message.trim().lines().count(),
        1,
        "one line, no backtrace: {message}"
    );
    still_serving(&cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_file_mistakes_read_plainly_and_standard_input_is_a_job_file() {
    let cluster = Cluster::start(&[]).await;
    let refused = |name: &str, text: &str| {
        let path = cluster.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let output = cluster.cli(&["submit", common::path_str(&path)]);
        assert_eq!(output.status.code(), Some(1));
        let message = stderr_of(&output);
        assert_eq!(message.trim().lines().count(), 1, "{message}");
        message
    };
    // A misspelt field, with the one that was meant.
    let message = refused("typo.jsonl", "{\"cmd\": [\"true\"], \"timeout\": 30}\n");
    assert!(
        message.contains("line 1, field \"timeout\": unknown field; did you mean `timeout_s`?"),
        "{message}"
    );
    // An empty file is no line's fault.
    let message = refused("empty.jsonl", "\n\n");
    assert!(
        message.ends_with("nothing was submitted: the file holds no jobs\n"),
        "{message}"
    );
    assert!(!message.contains("line"), "{message}");
    // Broken JSON names its own line, once: the column within it, not serde's "line 1".
    let message = refused(
        "broken.jsonl",
        "{\"cmd\": [\"true\"]}\n{\"cmd\": [\"true\"], \"slots\": }\n",
    );
    assert!(
        message.contains("line 2: not valid JSON at column 28: expected value"),
        "{message}"
    );
    assert_eq!(message.matches("line").count(), 1, "{message}");

    // `submit --help` lists the fields a job may have.
    let help = cluster.cli(&["submit", "--help"]);
    let help = stdout_of(&help);
    for field in [
        "cmd",
        "env",
        "handler",
        "payload",
        "payload_base64",
        "name",
        "requires",
        "slots",
        "priority",
        "timeout_s",
        "max_attempts",
        "inputs",
        "outputs",
    ] {
        assert!(help.contains(&format!("\n  {field} ")), "{field}:\n{help}");
    }

    // `-` is standard input.
    use std::io::Write;
    let mut child = std::process::Command::new(CLI)
        .args(["submit", "-", "--json"])
        .env("DROVER_COORDINATOR", &cluster.address)
        .env_remove("DROVER_TOKEN")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"{\"cmd\": [\"true\"]}\n{\"handler\": \"noop\"}\n")
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", stderr_of(&output));
    let submitted: serde_json::Value = serde_json::from_str(&stdout_of(&output)).unwrap();
    assert_eq!(submitted["jobs"], 2, "{submitted}");
    let batches = cluster.client().await.batches().await.unwrap();
    assert_eq!(batches.len(), 1);
    assert_eq!(batches[0].name, "stdin");
    assert_eq!(batches[0].total, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_tokens_are_refused_and_change_nothing() {
    let mut cluster = Cluster::new(&[]);
    cluster.coordinator_env = vec![
        ("DROVER_TOKEN".into(), "client-secret".into()),
        ("DROVER_WORKER_TOKEN".into(), "worker-secret".into()),
    ];
    cluster.start_coordinator().await;

    // A client with the wrong secret, or the worker's secret, is refused.
    for wrong in ["guess", "worker-secret"] {
        match Client::connect(&cluster.address, Secret::from_text(wrong).as_ref()).await {
            Err(ClientError::Connect(ConnectError::Refused(reason))) => {
                assert!(
                    reason.contains("authentication failed: wrong client token"),
                    "{reason}"
                )
            }
            Err(other) => panic!("expected a refusal, got {other}"),
            Ok(_) => panic!("a wrong client token was accepted"),
        }
    }
    // The CLI says so in one line.
    let file = cluster.job_file("ok.jsonl", &[r#"{"cmd": ["true"]}"#.to_string()]);
    let output = std::process::Command::new(CLI)
        .args([
            "submit",
            common::path_str(&file),
            "--coordinator",
            &cluster.address,
        ])
        .env("DROVER_TOKEN", "guess")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let message = stderr_of(&output);
    assert!(message.contains("wrong client token"), "{message}");
    assert_eq!(message.trim().lines().count(), 1, "{message}");

    // A worker with the wrong secret gives up with a clear message instead of retrying forever.
    cluster.start_worker_with_env("intruder", 1, &[], &[("DROVER_WORKER_TOKEN", "guess")]);
    let status = cluster
        .wait_worker_exit("intruder", Duration::from_secs(30))
        .await;
    assert!(!status.success());
    assert!(
        cluster
            .worker_log("intruder")
            .contains("wrong worker token"),
        "{}",
        cluster.worker_log("intruder")
    );

    // The right secrets work, and nothing from the refused attempts is there.
    let mut client = cluster.client_with("client-secret").await;
    assert!(client.batches().await.unwrap().is_empty());
    assert!(client.workers().await.unwrap().is_empty());
    // The worker's environment holds secrets (a process pool gives it its token so); its jobs
    // do not see them.
    cluster.start_worker_with_env(
        "w",
        1,
        &[],
        &[
            ("DROVER_WORKER_TOKEN", "worker-secret"),
            ("DROVER_TOKEN", "client-secret"),
            ("DROVER_READ_TOKEN_FILE", "/dev/null"),
        ],
    );
    let submitted = client
        .submit(
            "ok",
            vec![JobSpec::exec(["sh", "-c", "! env | grep TOKEN"])],
        )
        .await
        .unwrap();
    let info = wait_batch_done(&mut client, submitted.batch, Duration::from_secs(30)).await;
    assert_eq!(info.succeeded, 1, "a job saw a token: {info:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_bytes_close_only_their_connection() {
    let mut cluster =
        Cluster::start(&["--handshake-timeout", "1s", "--max-frame-bytes", "8388608"]).await;
    cluster.start_worker("w", 1, &[]);
    cluster.wait_for_workers(1).await;

    // Garbage that is not a frame of the protocol.
    let mut garbage = TcpStream::connect(&cluster.address).await.unwrap();
    garbage
        .write_all(&[0, 0, 0, 8, 0xde, 0xad, 0xbe, 0xef, 0xff, 0xff, 0xff, 0xff])
        .await
        .unwrap();
    expect_closed(&mut garbage, Duration::from_secs(5)).await;

    // A length prefix far above the limit: refused before anything is buffered.
    let mut oversized = TcpStream::connect(&cluster.address).await.unwrap();
    oversized.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
    expect_closed(&mut oversized, Duration::from_secs(5)).await;

    // A frame cut short by the peer closing.
    let mut truncated = TcpStream::connect(&cluster.address).await.unwrap();
    truncated.write_all(&[0, 0, 0, 100, 1, 2, 3]).await.unwrap();
    truncated.shutdown().await.unwrap();
    expect_closed(&mut truncated, Duration::from_secs(5)).await;

    // A connection that never speaks is closed at the handshake deadline.
    let mut silent = TcpStream::connect(&cluster.address).await.unwrap();
    expect_closed(&mut silent, Duration::from_secs(10)).await;

    // A peer that skips the handshake and sends a request straight away.
    let mut rude = TcpStream::connect(&cluster.address).await.unwrap();
    let mut frame = bytes::BytesMut::new();
    drover::net::codec::encode_frame(
        &drover::net::protocol::ToCoordinator::Request {
            id: 1,
            body: drover::net::protocol::ClientRequest::Submit {
                name: "sneaky".into(),
                jobs: vec![JobSpec::exec(["true"])],
                idempotency_key: None,
            },
        },
        &mut frame,
        1 << 20,
    )
    .unwrap();
    rude.write_all(&frame).await.unwrap();
    expect_closed(&mut rude, Duration::from_secs(5)).await;

    let log = cluster.coordinator_log();
    for expected in [
        "malformed frame",
        "exceeds the limit",
        "no handshake within",
        "unexpected message during the handshake",
    ] {
        assert!(
            log.contains(expected),
            "coordinator log lacks {expected:?}:\n{log}"
        );
    }
    assert!(!log.contains("panicked"), "{log}");
    still_serving(&cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_connections_is_capped_and_the_coordinator_keeps_serving() {
    let mut cluster =
        Cluster::start(&["--max-connections", "16", "--handshake-timeout", "1s"]).await;
    cluster.start_worker("w", 1, &[]);
    cluster.wait_for_workers(1).await;
    let mut flood = Vec::new();
    for _ in 0..64 {
        flood.push(TcpStream::connect(&cluster.address).await.unwrap());
    }
    // Every one of them is closed: the extras at once, the rest at the handshake deadline.
    for stream in &mut flood {
        expect_closed(stream, Duration::from_secs(10)).await;
    }
    assert!(cluster
        .coordinator_log()
        .contains("connection limit reached"));
    // The worker kept its session through all this, and clients get in again.
    still_serving(&cluster).await;
    let mut client = cluster.client().await;
    let submitted = client
        .submit("after-flood", vec![JobSpec::exec(["true"])])
        .await
        .unwrap();
    assert_eq!(
        wait_batch_done(&mut client, submitted.batch, Duration::from_secs(30))
            .await
            .succeeded,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_specs_over_the_wire_are_refused_whole() {
    let cluster = Cluster::start(&[]).await;
    let mut client = cluster.client().await;
    let mut zero_slots = JobSpec::exec(["true"]);
    zero_slots.slots = 0;
    match client
        .submit("bad", vec![JobSpec::exec(["true"]), zero_slots])
        .await
    {
        Err(ClientError::Coordinator(message)) => {
            assert_eq!(message, "job 2: slots: must be at least 1")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    match client.submit("empty", Vec::new()).await {
        Err(ClientError::Coordinator(message)) => assert_eq!(message, "the batch has no jobs"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(client.batches().await.unwrap().is_empty());
    match client.job(12345).await {
        Err(ClientError::Coordinator(message)) => assert_eq!(message, "no job 12345"),
        other => panic!("expected an error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_pending_limit_submissions_are_refused_as_queue_full_until_jobs_finish() {
    let http_address = format!("127.0.0.1:{}", free_port());
    let mut cluster = Cluster::start(&[
        "--max-pending-jobs",
        "5",
        "--max-batch-jobs",
        "4",
        "--http",
        &http_address,
    ])
    .await;
    let mut client = cluster.client().await;
    let noop = || JobSpec::call("noop", Vec::new());
    let refusal = |result: Result<_, ClientError>| match result {
        Err(ClientError::Coordinator(message)) => message,
        other => panic!("expected a refusal, got {other:?}"),
    };

    let message = refusal(client.submit("big", vec![noop(); 5]).await);
    assert!(message.contains("more than the limit of 4"), "{message}");
    // Two at once: the second counts the first even before it is on disk.
    let mut other = cluster.client().await;
    let (one, two) = futures::join!(
        client.submit("a", vec![noop(); 3]),
        other.submit("a", vec![noop(); 3])
    );
    let (first, refused) = match (one, two) {
        (Ok(first), Err(refused)) | (Err(refused), Ok(first)) => (first, refused),
        (one, two) => panic!("exactly one of two batches fits: {one:?} {two:?}"),
    };
    assert!(refused.to_string().starts_with("queue full"), "{refused}");
    let message = refusal(client.submit("b", vec![noop(); 3]).await);
    assert!(
        message.starts_with("queue full: 3 jobs are unfinished"),
        "{message}"
    );
    assert!(message.contains("--max-pending-jobs"), "{message}");
    let second = client.submit("c", vec![noop(); 2]).await.unwrap();
    // Full to the job, over HTTP too: 503 with the same words.
    let response = http(
        &http_address,
        "POST",
        "/api/batches",
        &[("Content-Type", "application/json")],
        br#"{"jobs": [{"handler": "noop"}]}"#,
    )
    .await;
    assert_eq!(response.status, 503, "{response:?}");
    assert!(response.json()["error"]
        .as_str()
        .unwrap()
        .starts_with("queue full"));
    assert_eq!(
        client.batches().await.unwrap().len(),
        2,
        "nothing else was queued"
    );

    // Once jobs finish there is room again.
    cluster.start_worker("w", 4, &[]);
    for batch in [first.batch, second.batch] {
        let done = wait_batch_done(&mut client, batch, Duration::from_secs(30)).await;
        assert_eq!(done.succeeded, done.total);
    }
    let again = client.submit("d", vec![noop(); 4]).await.unwrap();
    assert_eq!(again.jobs, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_disconnected_not_buffered() {
    use drover::job::JobState;
    use drover::net::protocol::ClientRequest;
    let cluster = Cluster::start(&["--max-write-buffer-bytes", "1048576"]).await;
    // A thousand pending jobs with long names: a page of them is a 4 MB answer.
    let mut named = JobSpec::call("noop", Vec::new());
    named.name = Some("n".repeat(4000));
    let batch = cluster
        .client()
        .await
        .submit("wordy", vec![named; 1000])
        .await
        .unwrap()
        .batch;
    // Asks for pages and never reads one. Without the high-water mark, the coordinator would
    // hold every answer: 4 MB each.
    cluster
        .ask_without_reading(|_| ClientRequest::Jobs {
            batch: Some(batch),
            state: Some(JobState::Pending),
            after: 0,
            limit: 1000,
        })
        .await;
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", cluster.coordinator_pid())).unwrap();
    let peak_kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .unwrap();
    assert!(
        peak_kib < 150 * 1024,
        "the coordinator's memory stayed small: peak {peak_kib} KiB"
    );
    // A client that reads is served the same pages under the same limit: only what is left
    // unread counts against it, and that is nothing here.
    let mut client = cluster.client().await;
    for _ in 0..3 {
        let pages = client
            .jobs(Some(batch), Some(JobState::Pending))
            .await
            .unwrap();
        assert_eq!(pages.len(), 1000);
    }
    assert_eq!(
        cluster.coordinator_log().matches("not reading:").count(),
        1,
        "only the client that stopped reading was cut off"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_piling_up_requests_is_cut_off() {
    use drover::net::protocol::{ClientRequest, Role, ToCoordinator};
    use futures::SinkExt;
    let cluster = Cluster::start(&[]).await;
    // No worker: the batch stays pending, so waits for it are answered only after a minute.
    let batch = cluster
        .client()
        .await
        .submit("waiting", vec![JobSpec::call("noop", Vec::new())])
        .await
        .unwrap()
        .batch;
    let mut connection = drover::net::connect::connect(&cluster.address, Role::Client, None)
        .await
        .unwrap();
    let requests: Vec<_> = (1..=1100u64)
        .map(|id| {
            Ok(ToCoordinator::Request {
                id,
                body: ClientRequest::WaitBatch {
                    batch,
                    timeout_ms: 60_000,
                },
            })
        })
        .collect();
    let _ = connection
        .send_all(&mut futures::stream::iter(requests))
        .await;
    wait_for(
        Duration::from_secs(10),
        "the refusal in the log",
        || async {
            cluster
                .coordinator_log()
                .contains("more than 1024 requests waiting for their answers")
                .then_some(())
        },
    )
    .await;
    let mut client = cluster.client().await;
    assert_eq!(client.batch(batch).await.unwrap().pending, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_names_and_outputs_are_shown_escaped_and_clipped_and_json_stays_exact() {
    let mut cluster = Cluster::start(&[]).await;
    cluster.start_worker("w", 2, &[]);
    let hostile = "\u{1b}]0;pwned\u{7}\u{1b}[2J";
    let mut retitle = JobSpec::exec(["printf", "%s", &format!("{hostile}done\r\nmore\n")]);
    retitle.name = Some(hostile.to_string());
    let mut wide = JobSpec::call("noop", b"x".to_vec());
    wide.name = Some("n".repeat(30_000));
    let mut formula = JobSpec::exec(["sh", "-c", "exit 3"]);
    formula.name = Some("=HYPERLINK(\"http://evil.example\")".into());
    formula.max_attempts = 1;
    let mut client = cluster.client().await;
    let submitted = client
        .submit("hostile\r\nbatch", vec![retitle, wide, formula])
        .await
        .unwrap();
    wait_batch_done(&mut client, submitted.batch, Duration::from_secs(30)).await;
    let batch = submitted.batch.to_string();
    let first = submitted.first_job.to_string();

    let readable = |args: &[&str]| {
        let output = cluster.cli(args);
        assert!(output.status.success(), "{args:?}: {}", stderr_of(&output));
        let shown = stdout_of(&output);
        let start: String = shown.chars().take(400).collect();
        assert!(
            !shown.contains(['\u{1b}', '\u{7}', '\r']),
            "{args:?} printed raw control characters: {start:?}"
        );
        shown
    };
    let table = readable(&["jobs", "--batch", &batch]);
    assert!(table.contains("\\x1b]0;pwned\\x07"), "{table:.400}");
    assert_eq!(table.lines().count(), 4, "one line per job: {table:.400}");
    assert!(
        table.lines().all(|line| line.chars().count() < 200),
        "a long name does not widen the table: {table:.400}"
    );
    let job = readable(&["job", &first]);
    assert!(job.contains("\\x1b]0;pwned\\x07\\x1b[2Jdone\\r"), "{job}");
    assert!(
        job.contains("    more"),
        "lines of the output stay lines: {job}"
    );
    readable(&["batches"]);
    readable(&["batch", &batch]);
    readable(&["status"]);
    readable(&["workers"]);

    // JSON is exact.
    let exact: serde_json::Value =
        serde_json::from_str(&readable(&["job", &first, "--json"])).unwrap();
    assert_eq!(exact["name"], hostile);

    // A spreadsheet takes no formula from the completion log.
    let csv = readable(&["log", "--batch", &batch, "--format", "csv"]);
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    let names: Vec<String> = reader
        .records()
        .map(|record| record.unwrap()[2].to_string())
        .collect();
    assert_eq!(names[2], "'=HYPERLINK(\"http://evil.example\")", "{csv}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_that_take_jobs_and_vanish_fail_nothing_and_slots_are_capped() {
    use drover::net::connect::{connect, next};
    use drover::net::protocol::{FromCoordinator, Role, ToCoordinator};
    use futures::SinkExt;
    let mut cluster = Cluster::start(&["--max-worker-slots", "64"]).await;
    let register = |slots: u32| ToCoordinator::Register {
        name: "taker".into(),
        instance: rand::random(),
        slots,
        labels: Vec::new(),
        carried: Vec::new(),
        results: Vec::new(),
        member: None,
    };

    // More slots than the cap: refused, with the reason.
    let mut greedy = connect(&cluster.address, Role::Worker, None).await.unwrap();
    greedy.send(register(u32::MAX)).await.unwrap();
    match next(&mut greedy).await {
        Ok(FromCoordinator::Refused { reason, permanent }) => {
            assert!(permanent);
            assert!(reason.contains("more than the 64"), "{reason}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }

    // Twelve registrations, one after another, each takes every job and vanishes without
    // saying it started any.
    let mut client = cluster.client().await;
    let batch = client
        .submit("taken", vec![JobSpec::call("noop", Vec::new()); 20])
        .await
        .unwrap();
    for _ in 0..12 {
        let mut taker = connect(&cluster.address, Role::Worker, None).await.unwrap();
        taker.send(register(64)).await.unwrap();
        let mut taken = 0;
        while taken < 20 {
            match tokio::time::timeout(Duration::from_secs(10), next(&mut taker)).await {
                Ok(Ok(FromCoordinator::Assign(assignments))) => taken += assignments.len(),
                Ok(Ok(_)) => {}
                other => panic!("no assignments: {other:?}"),
            }
        }
        drop(taker);
        wait_for(
            Duration::from_secs(10),
            "the jobs back in the queue",
            || async {
                let info = cluster.try_client().await?.batch(batch.batch).await.ok()?;
                (info.pending == 20).then_some(())
            },
        )
        .await;
    }
    let info = client.batch(batch.batch).await.unwrap();
    assert_eq!(info.failed, 0, "{info:?}");
    let job = client.job(batch.first_job).await.unwrap();
    assert_eq!(job.lost_attempts, 0, "{job:?}");
    assert!(job
        .history
        .iter()
        .all(|attempt| attempt.outcome == "unstarted"));

    // A real worker runs them all.
    cluster.start_worker("honest", 4, &[]);
    let info = wait_batch_done(&mut client, batch.batch, Duration::from_secs(60)).await;
    assert_eq!(info.succeeded, 20, "{info:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_pending_bytes_submissions_are_refused_as_queue_full_until_jobs_finish() {
    let mut cluster = Cluster::start(&["--max-pending-bytes", "100000"]).await;
    let mut client = cluster.client().await;
    let heavy = JobSpec::call("noop", vec![7u8; 1000]);
    // Sixty jobs of a kilobyte: held.
    let first = client
        .submit("held", vec![heavy.clone(); 60])
        .await
        .unwrap();
    // Sixty more would pass 100,000 bytes of specs.
    let refused = client.submit("more", vec![heavy.clone(); 60]).await;
    let message = match refused {
        Err(ClientError::Coordinator(message)) => message,
        other => panic!("expected a refusal, got {other:?}"),
    };
    assert!(message.starts_with("queue full:"), "{message}");
    assert!(message.contains("--max-pending-bytes"), "{message}");
    assert_eq!(
        client.batches().await.unwrap().len(),
        1,
        "nothing of it was kept"
    );
    // Once the held jobs have run, the same batch is taken.
    cluster.start_worker("w", 4, &[]);
    wait_batch_done(&mut client, first.batch, Duration::from_secs(30)).await;
    let later = client.submit("more", vec![heavy; 60]).await.unwrap();
    assert_eq!(later.jobs, 60);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_speaks_only_for_the_attempts_it_was_given() {
    use drover::job::{AttemptResult, CarriedAttempt, JobState, Outcome, OutputObject};
    use drover::net::connect::{connect, next};
    use drover::net::protocol::{FromCoordinator, Role, ToCoordinator};
    use futures::SinkExt;
    let mut cluster = Cluster::start(&[]).await;
    cluster.start_worker("honest", 1, &[]);
    cluster.wait_for_workers(1).await;
    let published = cluster.dir.path().join("published");
    let lines = [
        // Nobody can run it: it must stay pending whatever is said of it.
        r#"{"cmd": ["true"], "requires": ["tpu"]}"#.to_string(),
        // Runs on the honest worker for a while, and says its scratch directory (which holds its
        // lease): the liar may know a real lease.
        r#"{"cmd": ["sh", "-c", "echo ${DROVER_SCRATCH##*/} >> \"$OUT/$DROVER_JOB_ID\"; sleep 3"]}"#
            .to_string(),
        // Only the liar can take it (its label), with outputs.
        format!(
            r#"{{"cmd": ["sh", "-c", "mkdir -p out && echo ok > out/r"], "requires": ["liar"], "outputs": {{"from": "out", "to": "file://{}/"}}, "max_attempts": 1}}"#,
            published.display()
        ),
    ];
    let mut client = cluster.client().await;
    let submitted = client
        .submit("forged", drover::jobfile::parse(&lines.join("\n")).unwrap())
        .await
        .unwrap();
    let (unplaceable, running, given) = (
        submitted.first_job,
        submitted.first_job + 1,
        submitted.first_job + 2,
    );
    wait_running(&mut client, running, Duration::from_secs(30)).await;
    let honest_lease = wait_for(
        Duration::from_secs(10),
        "the running job's lease",
        || async {
            let line = cluster.output_lines(running).into_iter().next()?;
            u64::from_str_radix(line.rsplit('-').next()?, 16).ok()
        },
    )
    .await;

    let forged = |job: u64, lease: u64, outputs: Vec<OutputObject>| AttemptResult {
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
        outputs,
        permanent: false,
        epoch: 1,
    };
    let mut liar = connect(&cluster.address, Role::Worker, None).await.unwrap();
    liar.send(ToCoordinator::Register {
        name: "liar".into(),
        instance: rand::random(),
        // One slot for the made-up attempt until it is let go, one for its own job.
        slots: 2,
        labels: vec!["liar".into()],
        // Claims the running job's attempt as its own, by its real lease, and an attempt of the
        // job nobody can run by a made-up one.
        carried: vec![
            CarriedAttempt {
                lease: honest_lease,
                job: running,
                attempt: 1,
                slots: 1,
                epoch: 1,
            },
            CarriedAttempt {
                lease: 0x0123_4567_89ab_cdef,
                job: unplaceable,
                attempt: 1,
                slots: 1,
                epoch: 1,
            },
        ],
        results: Vec::new(),
        member: None,
    })
    .await
    .unwrap();
    // Its own job, and what it says of it and of the others.
    let lease = loop {
        match tokio::time::timeout(Duration::from_secs(10), next(&mut liar)).await {
            Ok(Ok(FromCoordinator::Assign(assignments))) => break assignments[0].lease,
            Ok(Ok(_)) => {}
            other => panic!("no assignment: {other:?}\n{}", cluster.coordinator_log()),
        }
    };
    liar.send(ToCoordinator::Started(vec![lease]))
        .await
        .unwrap();
    let stray = OutputObject {
        url: "file:///etc/shadow".into(),
        size: 1,
        etag: "forged".into(),
    };
    liar.send(ToCoordinator::Results(vec![
        forged(unplaceable, 42, Vec::new()),
        forged(running, honest_lease, Vec::new()),
        forged(given, lease, vec![stray]),
    ]))
    .await
    .unwrap();
    // Acknowledged, one and all, and then it is gone.
    wait_for(
        Duration::from_secs(10),
        "the forged results to be turned away",
        || async {
            cluster
                .coordinator_log()
                .matches("result for an attempt this worker was never given, refused")
                .count()
                .eq(&2)
                .then_some(())
        },
    )
    .await;
    drop(liar);

    let job = cluster
        .wait_for_job(given, "the stray outputs to fail the attempt", |job| {
            job.state == JobState::Failed
        })
        .await;
    let error = job.error.unwrap_or_default();
    assert!(
        error.contains("outside the attempt's own prefix"),
        "{error}"
    );
    let mut client = cluster.client().await;
    assert_eq!(
        client.job(unplaceable).await.unwrap().state,
        JobState::Pending
    );
    // The running job is the honest worker's still: recorded from it, run once.
    let info = wait_for(
        Duration::from_secs(30),
        "the running job to finish",
        || async {
            let job = cluster.try_client().await?.job(running).await.ok()?;
            (job.state == JobState::Succeeded).then_some(job)
        },
    )
    .await;
    assert_eq!(info.worker.as_deref(), Some("honest"), "{info:?}");
    assert_eq!(info.lost_attempts, 0, "{info:?}");
    assert_eq!(cluster.runs_of(running), 1);
    let log = cluster.coordinator_log();
    assert!(
        log.contains("carried attempts held by other workers, refused"),
        "{log}"
    );
    assert!(
        log.contains("carried attempt this worker was never given, stopped"),
        "{log}"
    );
}

#[test]
fn a_default_scratch_directory_someone_else_could_write_to_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    // SAFETY: getuid(2) cannot fail and touches no memory.
    let uid = unsafe { libc::getuid() };
    let planted = tmp.path().join(format!("drover-scratch-{uid}"));
    std::fs::create_dir(&planted).unwrap();
    std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o777)).unwrap();
    let output = std::process::Command::new(WORKER)
        .args(["--coordinator", "127.0.0.1:1"])
        .env("TMPDIR", tmp.path())
        .env_remove("DROVER_SCRATCH_DIR")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = stderr_of(&output);
    assert!(
        stderr.contains(&format!(
            "scratch directory {} is not a directory of this user's that only it can write to",
            planted.display()
        )),
        "{stderr}"
    );
    // Nothing was made in it.
    assert_eq!(std::fs::read_dir(&planted).unwrap().count(), 0);
}

#[test]
fn a_ledger_url_that_names_no_ledger_stops_the_coordinator_before_it_listens() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let port = free_port();
    for (flag, url, says) in [
        (
            true,
            "mysql://root:hunter2@db/drover",
            "keeps no ledger in \"mysql\" databases",
        ),
        (
            false,
            "mysql://root:hunter2@db/drover",
            "keeps no ledger in \"mysql\" databases",
        ),
        (true, "db.example:5432/drover", "not a ledger URL"),
        (true, "://root:hunter2@db/drover", "the scheme is missing"),
        (
            true,
            "sqlite:///var/lib/drover",
            "a SQLite ledger lives in --data-dir",
        ),
    ] {
        let mut command = std::process::Command::new(COORDINATOR);
        command
            .args(["--listen", &format!("127.0.0.1:{port}"), "--http", "off"])
            .arg("--data-dir")
            .arg(&data_dir)
            .env_remove("DROVER_LEDGER");
        match flag {
            true => command.args(["--ledger", url]),
            false => command.env("DROVER_LEDGER", url),
        };
        let output = command.output().unwrap();
        assert!(!output.status.success(), "{url}");
        let stderr = stderr_of(&output);
        assert!(stderr.contains(says), "{url}: {stderr}");
        assert!(stderr.contains("--ledger"), "{url}: {stderr}");
        assert!(
            !stderr.contains("hunter2"),
            "the password is masked: {stderr}"
        );
        if !url.starts_with("sqlite") {
            assert!(
                stderr.contains("give postgres://USER:PASSWORD@HOST"),
                "{url}: {stderr}"
            );
        }
    }
    // It never started, as leader of an empty ledger or otherwise.
    assert!(!data_dir.exists());
}
