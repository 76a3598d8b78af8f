//! Job data on `file://`: inputs fetched into the scratch directory, outputs published per
//! attempt, and the recorded attempt's manifest at `<to>ledger-<id>/<job id>/_manifest.json`.

mod common;

use common::*;
use drover::job::{JobSpec, JobState};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inputs_arrive_and_the_recorded_attempts_outputs_are_listed_in_a_manifest() {
    let mut cluster = Cluster::start(&[]).await;
    cluster.start_worker("w1", 2, &[]);
    cluster.start_worker("w2", 2, &[]);
    cluster.wait_for_workers(2).await;
    let inputs = cluster.dir.path().join("inputs");
    let results = cluster.dir.path().join("results");
    std::fs::create_dir_all(&inputs).unwrap();
    let texts = ["one", "two words", "and now three"];
    let mut lines = Vec::new();
    for (index, text) in texts.iter().enumerate() {
        let file = inputs.join(format!("text-{index}.txt"));
        std::fs::write(&file, text).unwrap();
        lines.push(format!(
            r#"{{"cmd": ["sh", "-c", "mkdir -p out && wc -w < in/text.txt | tr -d ' ' > out/count.txt"], "inputs": [{{"from": "file://{}", "to": "in/text.txt"}}], "outputs": {{"from": "out", "to": "file://{}/"}}}}"#,
            file.display(),
            results.display()
        ));
    }
    // A missing input fails its job with the URL and the reason, and harms nothing else.
    lines.push(format!(
        r#"{{"cmd": ["true"], "max_attempts": 1, "inputs": [{{"from": "file://{}/missing.txt", "to": "x"}}]}}"#,
        inputs.display()
    ));
    let file = cluster.job_file("count.jsonl", &lines);
    let output = cluster.cli(&["submit", path_str(&file), "--wait", "--json"]);
    let summary: serde_json::Value = serde_json::from_str(&stdout_of(&output)).unwrap();
    assert_eq!(summary["succeeded"], 3, "{}", stderr_of(&output));
    assert_eq!(summary["failed"], 1);

    let mut client = cluster.client().await;
    let jobs = client
        .jobs(Some(summary["id"].as_u64().unwrap()), None)
        .await
        .unwrap();
    let published = cluster.outputs_dir(&results).await;
    for (job, text) in jobs.iter().zip(texts) {
        assert_eq!(job.state, JobState::Succeeded);
        assert_eq!(job.outputs.len(), 1, "{job:?}");
        let object = &job.outputs[0];
        let path = object.url.strip_prefix("file://").unwrap();
        let expected = format!("{}\n", text.split_whitespace().count());
        assert_eq!(std::fs::read_to_string(path).unwrap(), expected);
        assert_eq!(object.size, expected.len() as u64);
        let job_dir = published.join(job.id.to_string());
        assert!(
            path.starts_with(&format!("{}/attempt-", job_dir.display())),
            "{path}"
        );
        // The manifest is written once the result is recorded.
        let manifest_path = job_dir.join("_manifest.json");
        let manifest = wait_for(Duration::from_secs(10), "the manifest", || async {
            std::fs::read(&manifest_path).ok()
        })
        .await;
        let manifest: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
        assert_eq!(manifest["job"], job.id);
        assert_eq!(manifest["objects"][0]["url"], object.url);
        assert_eq!(manifest["objects"][0]["etag"], object.etag);
    }
    let missing = &jobs[3];
    assert_eq!(missing.state, JobState::Failed);
    let error = missing.error.as_deref().unwrap();
    assert!(
        error.contains("cannot fetch input file://") && error.contains("missing.txt"),
        "{error}"
    );
    assert!(error.contains("No such file or directory"), "{error}");
    // Nothing is left in the workers' scratch directories.
    for worker in ["w1", "w2"] {
        let scratch = cluster.dir.path().join("scratch").join(worker);
        let left = attempt_dirs_left(&scratch);
        assert!(left.is_empty(), "scratch of {worker} not cleaned: {left:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_writes_no_outputs_succeeds_at_once_and_publishes_nothing() {
    let mut cluster = Cluster::start(&[]).await;
    cluster.start_worker("w1", 2, &[]);
    cluster.wait_for_workers(1).await;
    let results = cluster.dir.path().join("results");
    let lines = [
        // Never touches its outputs directory.
        format!(
            r#"{{"cmd": ["true"], "outputs": {{"from": "out/deep", "to": "file://{}/"}}}}"#,
            results.display()
        ),
        // Writes into it without making it first.
        format!(
            r#"{{"cmd": ["sh", "-c", "echo made > out/made.txt"], "outputs": {{"from": "out", "to": "file://{}/"}}}}"#,
            results.display()
        ),
    ];
    let file = cluster.job_file("quiet.jsonl", &lines);
    let output = cluster.cli(&["submit", path_str(&file), "--wait", "--json"]);
    let summary: serde_json::Value = serde_json::from_str(&stdout_of(&output)).unwrap();
    let batch = summary["id"].as_u64().unwrap().to_string();
    let shown = cluster.cli(&["jobs", "--batch", &batch, "--json"]);
    let jobs: Vec<serde_json::Value> = serde_json::from_str(&stdout_of(&shown)).unwrap();
    assert_eq!(summary["succeeded"], 2, "{jobs:#?}");
    // Each succeeded on its first attempt: nothing was failed and tried again.
    for job in &jobs {
        assert_eq!(job["state"], "succeeded", "{job:#}");
        assert_eq!(job["attempts"], 1, "{job:#}");
        assert!(job["error"].is_null(), "{job:#}");
    }
    assert_eq!(jobs[0]["outputs"].as_array().map(Vec::len), Some(0));
    assert_eq!(jobs[1]["outputs"].as_array().map(Vec::len), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_data_urls_are_refused_at_submit_time_with_line_and_field() {
    let cluster = Cluster::start(&[]).await;
    let file = cluster.job_file(
        "bad.jsonl",
        &[
            r#"{"cmd": ["true"]}"#.to_string(),
            r#"{"cmd": ["true"], "outputs": {"from": "out", "to": "http://example/x/"}}"#
                .to_string(),
        ],
    );
    let output = cluster.cli(&["submit", path_str(&file)]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr_of(&output).contains(
            "line 2, field \"outputs.to\": \"http://example/x/\": unknown scheme \"http\""
        ),
        "{}",
        stderr_of(&output)
    );
    assert!(cluster.client().await.batches().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_losing_attempt_never_mixes_with_the_recorded_ones_outputs() {
    let mut cluster = Cluster::start(&["--heartbeat-timeout", "1s"]).await;
    cluster.start_worker("frozen", 1, &[]);
    cluster.wait_for_workers(1).await;
    let results = cluster.dir.path().join("results");
    let line = format!(
        r#"{{"cmd": ["sh", "-c", "mkdir -p out && echo $DROVER_ATTEMPT > out/attempt.txt && sleep 1"], "outputs": {{"from": "out", "to": "file://{}/"}}}}"#,
        results.display()
    );
    let mut client = cluster.client().await;
    let submitted = client
        .submit("race", vec![drover::jobfile::parse_line(1, &line).unwrap()])
        .await
        .unwrap();
    wait_running(&mut client, submitted.first_job, Duration::from_secs(30)).await;
    cluster.start_worker("thawed", 1, &[]);
    cluster.wait_for_workers(2).await;
    cluster.signal_worker("frozen", libc::SIGSTOP);
    let info = wait_batch_done(&mut client, submitted.batch, Duration::from_secs(30)).await;
    assert_eq!(info.succeeded, 1);
    // The frozen attempt finishes and publishes after it thaws; it is a duplicate.
    cluster.signal_worker("frozen", libc::SIGCONT);
    let job_id = submitted.first_job;
    let job = cluster
        .wait_for_job(job_id, "the late attempt to report", |job| {
            job.duplicates > 0
        })
        .await;
    assert_eq!(job.worker.as_deref(), Some("thawed"));
    let job_dir = cluster.outputs_dir(&results).await.join(job_id.to_string());
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(job_dir.join("_manifest.json")).unwrap()).unwrap();
    let recorded = manifest["objects"][0]["url"].as_str().unwrap().to_string();
    assert_eq!(recorded, job.outputs[0].url);
    assert_eq!(
        std::fs::read_to_string(recorded.strip_prefix("file://").unwrap()).unwrap(),
        "2\n",
        "the manifest names the recorded (second) attempt"
    );
    // Both attempts published, each under its own prefix: nothing was overwritten or mixed.
    let mut attempts: Vec<String> = std::fs::read_dir(&job_dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("attempt-"))
        .collect();
    attempts.sort();
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    let contents: Vec<String> = attempts
        .iter()
        .map(|attempt| std::fs::read_to_string(job_dir.join(attempt).join("attempt.txt")).unwrap())
        .collect();
    assert!(contents.contains(&"1\n".to_string()) && contents.contains(&"2\n".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_scratch_disk_fails_the_attempt_with_no_space_and_the_worker_carries_on() {
    let mut cluster = Cluster::start(&[]).await;
    let scratch = cluster.dir.path().join("small-disk");
    let Some(_tmpfs) = mount_tmpfs(&scratch, "1m") else {
        return;
    };
    let big = cluster.dir.path().join("big.bin");
    std::fs::write(&big, vec![7u8; 4 * 1024 * 1024]).unwrap();
    cluster.start_worker("cramped", 1, &["--scratch-dir", path_str(&scratch)]);
    cluster.wait_for_workers(1).await;
    let lines = vec![
        format!(
            r#"{{"cmd": ["true"], "max_attempts": 1, "inputs": [{{"from": "file://{}", "to": "big.bin"}}]}}"#,
            big.display()
        ),
        r#"{"cmd": ["sh", "-c", "echo fits > small.txt"]}"#.to_string(),
    ];
    let file = cluster.job_file("cramped.jsonl", &lines);
    let output = cluster.cli(&["submit", path_str(&file), "--wait", "--json"]);
    let summary: serde_json::Value = serde_json::from_str(&stdout_of(&output)).unwrap();
    assert_eq!(
        (summary["failed"].as_u64(), summary["succeeded"].as_u64()),
        (Some(1), Some(1))
    );
    let mut client = cluster.client().await;
    let jobs = client
        .jobs(Some(summary["id"].as_u64().unwrap()), None)
        .await
        .unwrap();
    let error = jobs[0].error.as_deref().unwrap();
    assert!(error.contains("no space left on the device"), "{error}");
    let left = attempt_dirs_left(&scratch);
    assert!(
        left.is_empty(),
        "the scratch directory not cleaned: {left:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_its_own_worker_could_not_write_is_written_by_another() {
    let mut cluster = Cluster::start(&[]).await;
    cluster.start_worker("unlucky", 1, &[]);
    cluster.wait_for_workers(1).await;
    let results = cluster.dir.path().join("results");
    let job_dir = cluster.outputs_dir(&results).await.join("1");
    // The first job of a fresh coordinator is job 1. Block the unlucky worker's manifest: its
    // temporary file's name is taken by a directory.
    let blocked = job_dir.join(format!(
        "_manifest.json.partial-{}",
        cluster.worker_pid("unlucky")
    ));
    std::fs::create_dir_all(&blocked).unwrap();
    let line = format!(
        r#"{{"cmd": ["sh", "-c", "mkdir -p out && echo data > out/result.txt"], "outputs": {{"from": "out", "to": "file://{}/"}}}}"#,
        results.display()
    );
    let mut client = cluster.client().await;
    let submitted = client
        .submit(
            "repair",
            vec![drover::jobfile::parse_line(1, &line).unwrap()],
        )
        .await
        .unwrap();
    assert_eq!(submitted.first_job, 1);
    let info = wait_batch_done(&mut client, submitted.batch, Duration::from_secs(30)).await;
    assert_eq!(info.succeeded, 1);
    cluster.start_worker("helper", 1, &[]);
    let manifest_path = job_dir.join("_manifest.json");
    let manifest = wait_for(
        Duration::from_secs(60),
        "another worker to write the manifest",
        || async { std::fs::read(&manifest_path).ok() },
    )
    .await;
    let manifest: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    let job = client.job(1).await.unwrap();
    assert_eq!(manifest["objects"][0]["url"], job.outputs[0].url);
    assert!(cluster
        .coordinator_log()
        .contains("asking a worker to write unconfirmed manifests"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_under_the_ledger_refuses_submissions_serves_reads_and_recovers() {
    let mut cluster = Cluster::new(&[]);
    let ledger_dir = cluster.data_dir();
    let Some(_tmpfs) = mount_tmpfs(&ledger_dir, "4m") else {
        return;
    };
    cluster.start_coordinator().await;
    let mut client = cluster.client().await;
    let accepted = client
        .submit("before", vec![JobSpec::call("noop", Vec::new()); 20])
        .await
        .unwrap();

    // Fill the disk to the last byte.
    let filler = ledger_dir.join("filler");
    {
        use std::io::Write;
        let mut file = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 64 * 1024];
        while file.write_all(&block).is_ok() {}
        let small = [0u8; 512];
        while file.write_all(&small).is_ok() {}
        let _ = file.sync_all();
    }
    let refused = client
        .submit("during", vec![JobSpec::call("noop", vec![7; 1000]); 2000])
        .await;
    let message = match refused {
        Err(drover::client::ClientError::Coordinator(message)) => message,
        other => panic!("expected a refusal, got {other:?}"),
    };
    assert!(message.starts_with("cannot queue the batch"), "{message}");
    assert!(message.contains("full"), "{message}");

    // Reads go on, and what was accepted is still there.
    let batches = client.batches().await.unwrap();
    assert_eq!(
        batches.len(),
        1,
        "the refused batch left nothing: {batches:?}"
    );
    assert_eq!(batches[0].pending, 20);
    let status = client.status().await.unwrap();
    assert_eq!(status.stats.jobs.pending, 20);

    // Space returns: accepted jobs run and are recorded, new batches are taken.
    std::fs::remove_file(&filler).unwrap();
    cluster.start_worker("w", 4, &[]);
    let done = wait_batch_done(&mut client, accepted.batch, Duration::from_secs(60)).await;
    assert_eq!(done.succeeded, 20);
    let after = client
        .submit("after", vec![JobSpec::call("noop", Vec::new()); 10])
        .await
        .unwrap();
    let done = wait_batch_done(&mut client, after.batch, Duration::from_secs(60)).await;
    assert_eq!(done.succeeded, 10);
    assert!(!cluster.coordinator_log().contains("panicked"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_with_outputs_too_many_to_report_fails_on_its_worker_which_carries_on() {
    let mut cluster = Cluster::start(&["--retry-backoff", "100ms"]).await;
    cluster.start_worker("steady", 2, &[]);
    let before = cluster.wait_for_workers(1).await;
    let published = cluster.dir.path().join("published");
    // Sixteen thousand files on long paths: a manifest of some 18 MB, more than a frame holds.
    let long = "d".repeat(240);
    let line = format!(
        r#"{{"cmd": ["sh", "-c", "d=out/{long}/{long}/{long}/{long}; mkdir -p $d; i=0; while [ $i -lt 16000 ]; do : > $d/file-$i; i=$((i+1)); done"], "outputs": {{"from": "out", "to": "file://{}/"}}, "max_attempts": 2}}"#,
        published.display()
    );
    let mut client = cluster.client().await;
    let poison = client
        .submit(
            "poison",
            vec![drover::jobfile::parse_line(1, &line).unwrap()],
        )
        .await
        .unwrap();
    let info = wait_batch_done(&mut client, poison.batch, Duration::from_secs(120)).await;
    assert_eq!(info.failed, 1, "{info:?}");
    let job = client.job(poison.first_job).await.unwrap();
    let error = job.error.unwrap_or_default();
    assert!(
        error.contains("16000 files") && error.contains("above the limit"),
        "{error}"
    );
    assert!(
        !published.join(poison.first_job.to_string()).exists(),
        "nothing was published"
    );

    // The worker never lost its registration, and takes the next job.
    let next = client
        .submit("next", vec![JobSpec::call("noop", b"x".to_vec())])
        .await
        .unwrap();
    let info = wait_batch_done(&mut client, next.batch, Duration::from_secs(30)).await;
    assert_eq!(info.succeeded, 1);
    let workers = client.workers().await.unwrap();
    assert_eq!(workers.len(), 1, "{workers:?}");
    assert_eq!(workers[0].connected_at_ms, before[0].connected_at_ms);
    assert!(!cluster
        .worker_log("steady")
        .contains("connection to the coordinator lost"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_too_large_for_any_frame_is_given_up_without_cutting_off_a_worker() {
    let mut cluster = Cluster::start(&[]).await;
    cluster.start_worker("w", 1, &[]);
    cluster.wait_for_workers(1).await;
    let results = cluster.dir.path().join("results");
    let line = format!(
        r#"{{"cmd": ["sh", "-c", "mkdir -p out && echo data > out/result.txt"], "outputs": {{"from": "out", "to": "file://{}/"}}}}"#,
        results.display()
    );
    let mut client = cluster.client().await;
    let submitted = client
        .submit("big", vec![drover::jobfile::parse_line(1, &line).unwrap()])
        .await
        .unwrap();
    wait_batch_done(&mut client, submitted.batch, Duration::from_secs(30)).await;
    let ledger = cluster
        .data_dir()
        .join(drover::storage::sqlite::LEDGER_FILE);
    let manifest_state = || {
        let conn = rusqlite::Connection::open_with_flags(
            &ledger,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .unwrap();
        conn.query_row(
            "SELECT manifest_written FROM jobs WHERE id = ?1",
            [submitted.first_job as i64],
            |row| row.get::<_, i64>(0),
        )
        .unwrap()
    };
    // The real manifest's confirmation is in, or the worker would send it to the next
    // coordinator, which would take it for the doctored one's.
    wait_for(
        Duration::from_secs(30),
        "the manifest to be confirmed",
        || async { (manifest_state() == 1).then_some(()) },
    )
    .await;
    assert!(cluster.terminate_coordinator().success());

    // As a ledger written before workers bounded their outputs could hold it: a recorded
    // manifest of some 20 MB that no worker has confirmed writing.
    let object = format!(
        r#"{{"url":"file://{}/1/attempt-1/{}","size":1,"etag":"e"}}"#,
        results.display(),
        "x".repeat(1000)
    );
    let objects = format!("[{}]", vec![object; 20_000].join(","));
    let conn = rusqlite::Connection::open(&ledger).unwrap();
    conn.execute(
        "UPDATE jobs SET outputs = ?1, manifest_written = 0 WHERE id = ?2",
        rusqlite::params![objects, submitted.first_job as i64],
    )
    .unwrap();
    drop(conn);

    cluster.start_coordinator().await;
    let mut client = cluster.client().await;
    let registered = cluster.wait_for_workers(1).await;
    wait_for(
        Duration::from_secs(30),
        "the manifest to be given up",
        || async {
            cluster
                .coordinator_log()
                .contains("too large to send to a worker")
                .then_some(())
        },
    )
    .await;
    // A repair round later, the worker is still the one that registered, never cut off.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let workers = client.workers().await.unwrap();
    assert_eq!(workers.len(), 1, "{workers:?}");
    assert_eq!(workers[0].connected_at_ms, registered[0].connected_at_ms);
    assert!(cluster.terminate_coordinator().success());
    assert_eq!(
        manifest_state(),
        2,
        "given up, and not asked for again after a restart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_are_followed_within_the_data_and_refused_beyond_it() {
    let mut cluster = Cluster::start(&[]).await;
    cluster.start_worker("w", 2, &[]);
    cluster.wait_for_workers(1).await;
    let root = cluster.dir.path();
    // An input prefix with a link inside it, and one with a link out of it.
    let inside = root.join("inputs-inside");
    std::fs::create_dir_all(inside.join("real")).unwrap();
    std::fs::write(inside.join("real/data.txt"), "linked input").unwrap();
    std::os::unix::fs::symlink(inside.join("real/data.txt"), inside.join("alias.txt")).unwrap();
    let outside = root.join("inputs-outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(root.join("secret.txt"), "not for jobs").unwrap();
    std::os::unix::fs::symlink(root.join("secret.txt"), outside.join("escape.txt")).unwrap();
    let published = root.join("published");
    let lines = [
        // Reads the linked input; publishes a file and a link to it.
        format!(
            r#"{{"cmd": ["sh", "-c", "mkdir -p out && cat in/alias.txt > out/copy.txt && ln -s copy.txt out/link.txt"], "inputs": [{{"from": "file://{}/", "to": "in"}}], "outputs": {{"from": "out", "to": "file://{}/"}}, "max_attempts": 1}}"#,
            inside.display(),
            published.display()
        ),
        format!(
            r#"{{"cmd": ["true"], "inputs": [{{"from": "file://{}/", "to": "in"}}], "max_attempts": 1}}"#,
            outside.display()
        ),
        format!(
            r#"{{"cmd": ["sh", "-c", "mkdir -p out && ln -s /etc/hostname out/host.txt"], "outputs": {{"from": "out", "to": "file://{}/"}}, "max_attempts": 1}}"#,
            published.display()
        ),
    ];
    let mut client = cluster.client().await;
    let submitted = client
        .submit("links", drover::jobfile::parse(&lines.join("\n")).unwrap())
        .await
        .unwrap();
    wait_batch_done(&mut client, submitted.batch, Duration::from_secs(30)).await;
    let first = submitted.first_job;

    let followed = client.job(first).await.unwrap();
    assert_eq!(followed.state, JobState::Succeeded, "{followed:?}");
    let mut urls: Vec<&str> = followed.outputs.iter().map(|o| o.url.as_str()).collect();
    urls.sort();
    assert!(
        urls[0].ends_with("/copy.txt") && urls[1].ends_with("/link.txt"),
        "{urls:?}"
    );
    for object in &followed.outputs {
        let path = object.url.strip_prefix("file://").unwrap();
        assert_eq!(std::fs::read_to_string(path).unwrap(), "linked input");
    }

    let refused_input = client.job(first + 1).await.unwrap();
    assert_eq!(refused_input.state, JobState::Failed);
    let error = refused_input.error.unwrap_or_default();
    assert!(
        error.contains("escape.txt is a link to") && error.contains("outside"),
        "{error}"
    );

    let refused_output = client.job(first + 2).await.unwrap();
    assert_eq!(refused_output.state, JobState::Failed);
    let error = refused_output.error.unwrap_or_default();
    assert!(
        error.contains("host.txt is a link to") && error.contains("outside"),
        "{error}"
    );
    assert!(cluster.worker_log("w").contains("following a link"));
}
