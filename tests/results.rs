//! Results as programs and people receive them, through the binary protocol: following a
//! batch while it runs (`Client::follow`, `drover results`, `drover submit --follow`),
//! resuming from a cursor across a coordinator killed and started again, a call answered in
//! one request (`Client::call`, `drover run`) and one lost with its coordinator before it was
//! written, and what bad cursors, unknown batches and followers that stop reading get.

mod common;

use common::*;
use drover::job::{JobSpec, JobState};
use drover::status::Completion;
use futures::StreamExt;
use std::collections::HashSet;
use std::time::Duration;

/// A job that prints `job-<id>` once `$OUT/<gate>` exists (at once without a gate).
fn printing_job(gate: Option<&str>) -> JobSpec {
    let wait = gate.map_or(String::new(), |gate| {
        format!("while [ ! -f \"$OUT/{gate}\" ]; do sleep 0.02; done; ")
    });
    JobSpec::exec(["sh", "-c", &format!("{wait}echo job-$DROVER_JOB_ID")])
}

fn open_gate(cluster: &Cluster, gate: &str) {
    std::fs::write(cluster.out_dir().join(gate), b"").unwrap();
}

/// Cursors grow, and each job is there once.
fn assert_once_in_order(records: &[Completion]) {
    let cursors: Vec<u64> = records.iter().map(|record| record.record.cursor).collect();
    assert!(
        cursors.windows(2).all(|pair| pair[0] < pair[1]),
        "cursors grow: {cursors:?}"
    );
    let ids: HashSet<u64> = records.iter().map(|record| record.record.id).collect();
    assert_eq!(ids.len(), records.len(), "each job once: {records:?}");
}

/// The records `drover results ... --json` prints, one a line.
fn cli_records(cluster: &Cluster, args: &[&str]) -> Vec<Completion> {
    let mut all = vec!["results", "--json"];
    all.extend_from_slice(args);
    let output = cluster.cli(&all);
    assert!(output.status.success(), "{args:?}: {}", stderr_of(&output));
    stdout_of(&output)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|error| panic!("{error}: {line}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_gets_every_record_of_a_running_batch_once_in_cursor_order() {
    let mut cluster = Cluster::start(&[]).await;
    cluster.start_worker("w1", 2, &[]);
    cluster.start_worker("w2", 2, &[]);
    cluster.wait_for_workers(2).await;
    let mut client = cluster.client().await;
    // Twelve that finish at once, then twelve held until the follower has seen the first
    // twelve, and one that fails: the follower reads while the batch runs.
    let mut jobs: Vec<JobSpec> = (0..12).map(|_| printing_job(None)).collect();
    jobs.extend((0..12).map(|_| printing_job(Some("go"))));
    let mut failing = JobSpec::exec(["sh", "-c", "echo doomed; exit 3"]);
    failing.max_attempts = 1;
    failing.name = Some("doomed".into());
    jobs.push(failing);
    let submitted = client.submit("followed", jobs).await.unwrap();
    let batch = submitted.batch;

    let mut follower = cluster.client().await;
    let mut records = Vec::new();
    {
        let stream = follower.follow(Some(batch), 0);
        let mut stream = std::pin::pin!(stream);
        while records.len() < 12 {
            records.push(stream.next().await.expect("a record").unwrap());
        }
        assert!(
            !client.batch(batch).await.unwrap().done,
            "the batch still runs"
        );
        open_gate(&cluster, "go");
        while let Some(record) = stream.next().await {
            records.push(record.unwrap());
        }
    }
    assert_eq!(records.len(), 25, "the stream ended after the last record");
    assert_once_in_order(&records);
    let ids: HashSet<u64> = records.iter().map(|record| record.record.id).collect();
    let expected: HashSet<u64> = (submitted.first_job..submitted.first_job + 25).collect();
    assert_eq!(ids, expected);
    for record in &records {
        assert_eq!(record.record.batch, batch);
        if record.record.name.as_deref() == Some("doomed") {
            assert_eq!(record.record.state, JobState::Failed);
            assert_eq!(record.record.exit_code, Some(3));
            assert_eq!(record.result.as_deref(), Some(&b"doomed\n"[..]));
        } else {
            assert_eq!(record.record.state, JobState::Succeeded);
            let printed = format!("job-{}\n", record.record.id);
            assert_eq!(record.result.as_deref(), Some(printed.as_bytes()));
        }
    }

    // The CLI reads the same records, and from a cursor the rest of them.
    let batch_arg = batch.to_string();
    assert_eq!(cli_records(&cluster, &["--batch", &batch_arg]), records);
    let tenth = records[9].record.cursor.to_string();
    assert_eq!(
        cli_records(&cluster, &["--batch", &batch_arg, "--after", &tenth]),
        records[10..]
    );
    // Following a batch that is done prints what it has and ends.
    assert_eq!(
        cli_records(&cluster, &["--batch", &batch_arg, "--follow"]),
        records
    );
    // Every batch's, for people: a header and a line per job, the results shown.
    let people = cluster.cli(&["results"]);
    assert!(people.status.success(), "{}", stderr_of(&people));
    let shown = stdout_of(&people);
    assert_eq!(shown.lines().count(), 26, "{shown}");
    assert!(shown.lines().next().unwrap().contains("RESULT"), "{shown}");
    let first = records[0].record.id;
    assert!(shown.contains(&format!("job-{first}")), "{shown}");
    assert!(shown.contains("failed"), "{shown}");

    // A page of every batch is never the last: more batches may come.
    let page = client.results(None, 0, 1000, Duration::ZERO).await.unwrap();
    assert_eq!(page.results, records);
    assert!(!page.done);
    assert_eq!(page.cursor, records[24].record.cursor);
    // A long poll with nothing new answers empty after its wait, where it was asked.
    let waited = client
        .results(None, page.cursor, 1000, Duration::from_millis(200))
        .await
        .unwrap();
    assert!(waited.results.is_empty());
    assert_eq!(waited.cursor, page.cursor);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn following_and_calling_resume_across_a_coordinator_killed_and_started_again() {
    let mut cluster = Cluster::start(&["--heartbeat-timeout", "2s"]).await;
    cluster.start_worker("w1", 1, &[]);
    cluster.start_worker("w2", 1, &[]);
    cluster.wait_for_workers(2).await;
    let mut client = cluster.client().await;
    let mut jobs: Vec<JobSpec> = (0..6).map(|_| printing_job(None)).collect();
    jobs.extend((0..6).map(|_| printing_job(Some("go"))));
    let submitted = client.submit("resumed", jobs).await.unwrap();
    let batch = submitted.batch;

    // A call whose job waits for the same gate, answered after the restart.
    let call_cluster_address = cluster.address.clone();
    let calling = tokio::spawn(async move {
        let mut caller = drover::client::Client::connect(&call_cluster_address, None)
            .await
            .unwrap();
        caller.call(printing_job(Some("go"))).await
    });
    wait_for(Duration::from_secs(30), "the call's batch", || async {
        let batches = cluster.try_client().await?.batches().await.ok()?;
        batches
            .iter()
            .any(|batch| batch.name == "call")
            .then_some(())
    })
    .await;

    let mut follower = cluster.client().await;
    let mut records = Vec::new();
    {
        let stream = follower.follow(Some(batch), 0);
        let mut stream = std::pin::pin!(stream);
        while records.len() < 6 {
            records.push(stream.next().await.expect("a record").unwrap());
        }
        let seen = records[5].record.cursor;
        cluster
            .restart_coordinator(Duration::from_millis(300))
            .await;
        open_gate(&cluster, "go");
        // The same stream goes on from its cursor on a new connection.
        while let Some(record) = stream.next().await {
            records.push(record.unwrap());
        }
        // A reader that kept only the cursor gets the rest, from the CLI.
        let rest = cli_records(
            &cluster,
            &["--batch", &batch.to_string(), "--after", &seen.to_string()],
        );
        assert_eq!(rest, records[6..]);
    }
    assert_eq!(records.len(), 12);
    assert_once_in_order(&records);
    let ids: HashSet<u64> = records.iter().map(|record| record.record.id).collect();
    assert_eq!(
        ids,
        (submitted.first_job..submitted.first_job + 12).collect::<HashSet<u64>>()
    );

    // The call was sent again under its key: one job, and its record.
    let called = calling
        .await
        .unwrap()
        .unwrap_or_else(|error| panic!("{error}: {}", cluster.coordinator_log()));
    assert_eq!(called.record.state, JobState::Succeeded);
    let printed = format!("job-{}\n", called.record.id);
    assert_eq!(called.result.as_deref(), Some(printed.as_bytes()));
    let batches = cluster.client().await.batches().await.unwrap();
    assert_eq!(
        batches.iter().filter(|batch| batch.name == "call").count(),
        1,
        "{batches:?}"
    );
}

/// A call's job runs while its submission is written, which goes to disk with the job's result.
/// A coordinator killed in between loses that run and nothing else: the job's id is given to no
/// job of the next run (a worker carrying the lost run back would be taken for that job's), and
/// the call, sent again, is answered by a job of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_whose_coordinator_died_before_writing_it_runs_again_under_a_new_id() {
    // A call's submission waits a minute for its result, so the kill comes before it is written.
    let mut cluster =
        Cluster::start(&["--heartbeat-timeout", "2s", "--call-write-delay", "60s"]).await;
    cluster.start_worker("w1", 1, &[]);
    cluster.wait_for_workers(1).await;
    // The first call of a run reserves job ids on disk; calls after it run unwritten.
    let mut client = cluster.client().await;
    let first = client.call(JobSpec::call("noop", "")).await.unwrap();
    assert_eq!(first.record.state, JobState::Succeeded);
    let address = cluster.address.clone();
    let calling = tokio::spawn(async move {
        let mut caller = drover::client::Client::connect(&address, None)
            .await
            .unwrap();
        caller.call(printing_job(Some("go"))).await
    });
    let lost = wait_for(Duration::from_secs(30), "the call's job to run", || async {
        let workers = cluster.try_client().await?.workers().await.ok()?;
        workers.iter().flat_map(|worker| worker.jobs.clone()).next()
    })
    .await;
    assert!(lost > first.record.id);

    cluster
        .restart_coordinator(Duration::from_millis(300))
        .await;
    let mut client = cluster.client().await;
    let unknown = client.job(lost).await;
    assert!(
        unknown.is_err(),
        "job {lost} was never written: {unknown:?}"
    );
    open_gate(&cluster, "go");
    let called = calling
        .await
        .unwrap()
        .unwrap_or_else(|error| panic!("{error}: {}", cluster.coordinator_log()));
    assert_eq!(called.record.state, JobState::Succeeded);
    assert!(
        called.record.id > lost,
        "job {lost} ran unwritten; the call sent again got job {}",
        called.record.id
    );
    let printed = format!("job-{}\n", called.record.id);
    assert_eq!(called.result.as_deref(), Some(printed.as_bytes()));
    // The lost run reported too, once the gate opened, and is recorded nowhere.
    wait_for(Duration::from_secs(30), "the worker to be idle", || async {
        let workers = cluster.try_client().await?.workers().await.ok()?;
        workers
            .iter()
            .all(|worker| worker.jobs.is_empty())
            .then_some(())
    })
    .await;
    assert!(cluster.client().await.job(lost).await.is_err());
    let batches = cluster.client().await.batches().await.unwrap();
    assert_eq!(
        batches.iter().filter(|batch| batch.name == "call").count(),
        2,
        "{batches:?}"
    );
}

/// A call's idempotency key is acknowledged to no one before the call's submission is on disk:
/// a batch submitted under it while the call's job runs unwritten waits, and is answered with
/// the call's batch once that is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_calls_key_is_acknowledged_only_once_its_submission_is_on_disk() {
    let mut cluster = Cluster::start(&["--call-write-delay", "60s"]).await;
    cluster.start_worker("w1", 1, &[]);
    cluster.wait_for_workers(1).await;
    let mut client = cluster.client().await;
    // The first call of a run reserves job ids on disk; calls after it run unwritten.
    client.call(JobSpec::call("noop", "")).await.unwrap();
    let address = cluster.address.clone();
    let calling = tokio::spawn(async move {
        let mut caller = drover::client::Client::connect(&address, None)
            .await
            .unwrap();
        caller
            .call_with_key(printing_job(Some("go")), "one-key")
            .await
    });
    wait_for(Duration::from_secs(30), "the call's job to run", || async {
        let workers = cluster.try_client().await?.workers().await.ok()?;
        workers
            .iter()
            .any(|worker| !worker.jobs.is_empty())
            .then_some(())
    })
    .await;
    let address = cluster.address.clone();
    let submitting = tokio::spawn(async move {
        let mut submitter = drover::client::Client::connect(&address, None)
            .await
            .unwrap();
        submitter
            .submit_with_key("again", vec![JobSpec::call("noop", "")], "one-key")
            .await
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !submitting.is_finished(),
        "a batch under the key was answered before the call's submission was written"
    );
    open_gate(&cluster, "go");
    let called = calling.await.unwrap().unwrap();
    let submitted = submitting.await.unwrap().unwrap();
    assert!(submitted.repeated);
    assert_eq!(
        (submitted.batch, submitted.first_job),
        (called.record.batch, called.record.id)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_follow_prints_each_job_as_it_finishes() {
    let mut cluster = Cluster::start(&[]).await;
    cluster.start_worker("w1", 2, &[]);
    cluster.wait_for_workers(1).await;
    let lines = vec![
        r#"{"cmd": ["sh", "-c", "echo one"], "name": "one"}"#.to_string(),
        r#"{"handler": "noop", "payload": "two", "name": "two"}"#.to_string(),
        r#"{"cmd": ["sh", "-c", "exit 4"], "name": "three", "max_attempts": 1}"#.to_string(),
    ];
    let file = cluster.job_file("three.jsonl", &lines);
    let output = cluster.cli(&["submit", path_str(&file), "--follow", "--json"]);
    assert_eq!(output.status.code(), Some(1), "a job failed");
    let records: Vec<serde_json::Value> = stdout_of(&output)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(records.len(), 3, "{}", stdout_of(&output));
    let by_name = |name: &str| {
        records
            .iter()
            .find(|record| record["name"] == name)
            .unwrap_or_else(|| panic!("{name} in {records:?}"))
    };
    assert_eq!(by_name("one")["result"], "one\n");
    assert_eq!(by_name("two")["result"], "two");
    assert_eq!(by_name("three")["state"], "failed");
    assert_eq!(by_name("three")["exit_code"], 4);
    for field in [
        "cursor",
        "id",
        "batch",
        "worker",
        "duration_ms",
        "finished_at_ms",
    ] {
        assert!(by_name("one").get(field).is_some(), "{field}: {records:?}");
    }

    // For people: the lines, then the batch as --wait shows it.
    let lines = vec![r#"{"cmd": ["sh", "-c", "echo fine"]}"#.to_string(); 2];
    let file = cluster.job_file("fine.jsonl", &lines);
    let output = cluster.cli(&["submit", path_str(&file), "--wait", "--follow"]);
    assert!(output.status.success(), "{}", stderr_of(&output));
    let shown = stdout_of(&output);
    let lines = shown.lines().filter(|line| line.ends_with(" fine"));
    assert_eq!(lines.count(), 2, "{shown}");
    assert!(shown.contains("succeeded"), "{shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drover_run_is_one_call_showing_the_commands_own_output_and_exit() {
    let mut cluster = Cluster::start(&[]).await;
    cluster.start_worker("w1", 1, &[]);
    cluster.wait_for_workers(1).await;

    // Standard output as the command wrote it, bytes that are not UTF-8 too.
    let run = cluster.cli(&[
        "run",
        "--",
        "sh",
        "-c",
        "printf 'out\\n\\377'; echo err >&2",
    ]);
    assert!(run.status.success(), "{}", stderr_of(&run));
    assert_eq!(run.stdout, b"out\n\xff");
    // A command that printed nothing prints nothing, whatever it said on standard error.
    let run = cluster.cli(&["run", "--", "sh", "-c", "echo quiet >&2"]);
    assert!(run.status.success(), "{}", stderr_of(&run));
    assert_eq!(run.stdout, b"");
    // A failure shows its output's tail, says why, and exits with the command's code.
    let run = cluster.cli(&["run", "--", "sh", "-c", "echo ran; echo oops >&2; exit 7"]);
    assert_eq!(run.status.code(), Some(7));
    let tail = stdout_of(&run);
    assert!(tail.contains("ran\n") && tail.contains("oops\n"), "{tail}");
    assert!(
        stderr_of(&run).contains("failed: failed 1 of 1 attempts; last: exited with code 7"),
        "{}",
        stderr_of(&run)
    );
    // With --json, the job as `drover job --json` shows it, its result with it.
    let run = cluster.cli(&["run", "--json", "--", "printf", "a\\nb"]);
    assert!(run.status.success(), "{}", stderr_of(&run));
    let job: serde_json::Value = serde_json::from_str(&stdout_of(&run)).unwrap();
    assert_eq!(job["result"], "a\nb", "{job}");
    assert_eq!(job["attempts"], 1, "{job}");
    assert_eq!(job["state"], "succeeded", "{job}");
    let shown = cluster.cli(&["job", &job["id"].to_string(), "--json"]);
    let shown: serde_json::Value = serde_json::from_str(&stdout_of(&shown)).unwrap();
    assert_eq!(shown["result"], "a\nb");
    let runs = cluster.client().await.batches().await.unwrap();
    assert_eq!(runs.len(), 4, "one batch of one job per run: {runs:?}");

    // A job no connected worker can take is waited for, and said to be.
    let mut waiting = std::process::Command::new(CLI)
        .args(["run", "--requires", "tpu", "--", "true"])
        .env("DROVER_COORDINATOR", &cluster.address)
        .env_remove("DROVER_TOKEN")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = waiting.stderr.take().unwrap();
    let said = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stderr), &mut line).unwrap();
        line
    })
    .await
    .unwrap();
    assert!(waiting.try_wait().unwrap().is_none(), "it still waits");
    waiting.kill().unwrap();
    waiting.wait().unwrap();
    assert_eq!(
        said.trim_end(),
        "drover: warning: the job cannot start on any connected worker (no connected worker \
         has label tpu); it waits until one that can connects"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_cursors_and_unknown_batches_are_refused_clearly() {
    let mut cluster = Cluster::start(&[]).await;
    cluster.start_worker("w1", 1, &[]);
    cluster.wait_for_workers(1).await;
    let mut client = cluster.client().await;
    let batch = client
        .submit("one", vec![JobSpec::call("noop", "x")])
        .await
        .unwrap()
        .batch;
    wait_batch_done(&mut client, batch, Duration::from_secs(30)).await;
    let last = client
        .results(None, 0, 10, Duration::ZERO)
        .await
        .unwrap()
        .cursor;

    let unknown = cluster.cli(&["results", "--batch", "99"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert_eq!(stderr_of(&unknown), "drover: no batch 99\n");
    let beyond = (last + 5).to_string();
    let beyond_end = cluster.cli(&["results", "--after", &beyond]);
    assert_eq!(beyond_end.status.code(), Some(1));
    assert!(
        stderr_of(&beyond_end).contains(&format!(
            "cursor {beyond} is beyond the end: the last record is at {last}"
        )),
        "{}",
        stderr_of(&beyond_end)
    );
    let malformed = cluster.cli(&["results", "--after", "abc"]);
    assert_eq!(malformed.status.code(), Some(2));
    assert!(
        stderr_of(&malformed).contains("invalid value 'abc' for '--after <CURSOR>'"),
        "{}",
        stderr_of(&malformed)
    );
    // The library says the same, and a follower's stream ends with the refusal.
    let refused = std::pin::pin!(client.follow(Some(99), 0))
        .next()
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(refused.to_string(), "no batch 99");
    // At the end exactly: nothing yet, which is no error.
    let at_end = cluster.cli(&["results", "--after", &last.to_string()]);
    assert!(at_end.status.success(), "{}", stderr_of(&at_end));
    assert_eq!(stdout_of(&at_end), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_that_stops_reading_large_results_is_cut_off_not_buffered() {
    use drover::net::protocol::ClientRequest;
    let mut cluster = Cluster::start(&["--max-write-buffer-bytes", "1048576"]).await;
    cluster.start_worker("w1", 4, &[]);
    cluster.wait_for_workers(1).await;
    let mut client = cluster.client().await;
    // Forty results of 512 KiB: a page of them is 4 MiB.
    let jobs = vec![JobSpec::exec(["sh", "-c", "head -c 524288 /dev/zero | tr '\\0' r"]); 40];
    let batch = client.submit("large", jobs).await.unwrap().batch;
    wait_batch_done(&mut client, batch, Duration::from_secs(60)).await;

    cluster
        .ask_without_reading(|_| ClientRequest::Results {
            batch: Some(batch),
            after: 0,
            limit: 1000,
            wait_ms: 0,
        })
        .await;
    // A follower that reads gets every record, in pages under the same limit.
    let records: Vec<Completion> = client
        .follow(Some(batch), 0)
        .map(|record| record.unwrap())
        .collect()
        .await;
    assert_eq!(records.len(), 40);
    let expected = vec![b'r'; 512 * 1024];
    assert!(records
        .iter()
        .all(|record| record.result.as_ref() == Some(&expected)));
    assert_eq!(
        cluster.coordinator_log().matches("not reading:").count(),
        1,
        "only the follower that stopped reading was cut off"
    );
}
