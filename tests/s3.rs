//! Job data on a real S3-compatible server (s3s-fs, started here as a process): inputs fetched
//! (a prefix, and a 70 MiB object in ranged parts), outputs published per attempt (a 70 MiB
//! file by multipart upload), the manifest of the recorded attempt, and clear failures.

mod common;

use aws_sdk_s3::primitives::ByteStream;
use common::s3::{get, pattern, S3Server};
use common::*;
use drover::job::JobState;
use drover::storage::uploads::InFlightUpload;
use std::time::Duration;

async fn start_s3() -> S3Server {
    S3Server::s3s_fs().await
}

/// Starts a worker that reaches `server` with the test's credentials.
fn start_s3_worker(cluster: &mut Cluster, server: &S3Server, name: &str, slots: u32) {
    server.start_worker(cluster, name, slots, &[], &[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_reads_and_writes_s3_and_the_outputs_match_byte_for_byte() {
    let server = start_s3().await;
    let s3 = server.client();
    let bucket = "drover-test-data";
    s3.create_bucket().bucket(bucket).send().await.unwrap();
    let texts = [
        ("in/a.txt", "one two three"),
        ("in/b.txt", "four"),
        ("in/sub/c.txt", "five six"),
    ];
    for (key, text) in texts {
        s3.put_object()
            .bucket(bucket)
            .key(key)
            .body(ByteStream::from(text.as_bytes().to_vec()))
            .send()
            .await
            .unwrap();
    }
    let big = pattern(70 * 1024 * 1024);
    s3.put_object()
        .bucket(bucket)
        .key("big.bin")
        .body(ByteStream::from(big.clone()))
        .send()
        .await
        .unwrap();

    let mut cluster = Cluster::start(&[]).await;
    // The SDK's streaming checksums, as on AWS (s3s-fs takes them and checks them); the
    // default for a custom endpoint, plain bodies with a Content-MD5, is tested in s3_stores.rs.
    server.start_worker(
        &mut cluster,
        "s3-worker",
        2,
        &[],
        &[("DROVER_S3_CHECKSUMS", "when-supported".into())],
    );
    cluster.wait_for_workers(1).await;

    let lines = vec![
        format!(
            r#"{{"name": "count", "cmd": ["sh", "-c", "mkdir -p out && find in -type f | sort | while read f; do echo \"$f $(wc -w < $f)\"; done > out/counts.txt"], "inputs": [{{"from": "s3://{bucket}/in/", "to": "in/"}}], "outputs": {{"from": "out", "to": "s3://{bucket}/results/"}}}}"#
        ),
        format!(
            r#"{{"name": "copy", "cmd": ["sh", "-c", "mkdir -p out && cp big.bin out/copy.bin"], "inputs": [{{"from": "s3://{bucket}/big.bin", "to": "big.bin"}}], "outputs": {{"from": "out", "to": "s3://{bucket}/results"}}}}"#
        ),
        format!(
            r#"{{"name": "missing", "cmd": ["true"], "inputs": [{{"from": "s3://{bucket}/no/such/key", "to": "x"}}]}}"#
        ),
    ];
    let file = cluster.job_file("s3.jsonl", &lines);
    let output = cluster.cli(&["submit", path_str(&file), "--wait", "--json"]);
    let summary: serde_json::Value =
        serde_json::from_str(&stdout_of(&output)).unwrap_or_else(|_| {
            panic!(
                "{}\n{}",
                stderr_of(&output),
                cluster.worker_log("s3-worker")
            )
        });
    let batch = summary["id"].as_u64().unwrap();
    let mut client_ = cluster.client().await;
    let jobs = client_.jobs(Some(batch), None).await.unwrap();
    assert_eq!(
        summary["succeeded"],
        2,
        "{jobs:#?}\n{}",
        cluster.worker_log("s3-worker")
    );

    let ledger = client_.status().await.unwrap().stats.ledger;
    // The word counts came from the whole prefix, fetched into the scratch directory.
    let count = &jobs[0];
    assert_eq!(count.state, JobState::Succeeded);
    assert_eq!(count.outputs.len(), 1);
    let counts_key = count.outputs[0]
        .url
        .strip_prefix(&format!("s3://{bucket}/"))
        .unwrap()
        .to_string();
    assert!(
        counts_key.starts_with(&format!("results/ledger-{ledger}/{}/attempt-", count.id)),
        "{counts_key}"
    );
    assert_eq!(
        String::from_utf8(get(&s3, bucket, &counts_key).await).unwrap(),
        "in/a.txt 3\nin/b.txt 1\nin/sub/c.txt 2\n"
    );

    // 70 MiB down in ranged parts and up by multipart upload, byte for byte.
    let copy = &jobs[1];
    assert_eq!(copy.outputs.len(), 1);
    let copy_key = copy.outputs[0]
        .url
        .strip_prefix(&format!("s3://{bucket}/"))
        .unwrap()
        .to_string();
    assert_eq!(copy.outputs[0].size, big.len() as u64);
    let head = s3
        .head_object()
        .bucket(bucket)
        .key(&copy_key)
        .send()
        .await
        .unwrap();
    assert_eq!(
        head.e_tag().unwrap().trim_matches('"'),
        copy.outputs[0].etag
    );
    assert!(
        copy.outputs[0].etag.contains('-'),
        "a multipart ETag: {}",
        copy.outputs[0].etag
    );
    assert!(
        get(&s3, bucket, &copy_key).await == big,
        "the copy differs from the input"
    );

    // Each recorded attempt's manifest is at the stable place.
    for job in [count, copy] {
        let key = format!("results/ledger-{ledger}/{}/_manifest.json", job.id);
        let manifest = wait_for(Duration::from_secs(30), "the manifest", || async {
            s3.get_object().bucket(bucket).key(&key).send().await.ok()
        })
        .await;
        let manifest: serde_json::Value =
            serde_json::from_slice(&manifest.body.collect().await.unwrap().into_bytes()).unwrap();
        assert_eq!(manifest["objects"][0]["url"], job.outputs[0].url);
        assert_eq!(manifest["objects"][0]["size"], job.outputs[0].size);
    }

    // A missing object fails its job at once, with the URL and the reason: no other attempt
    // would find it. The worker stays healthy.
    let missing = &jobs[2];
    assert_eq!(missing.state, JobState::Failed);
    assert_eq!(missing.attempts, 1, "{missing:?}");
    let error = missing.error.as_deref().unwrap();
    assert!(
        error.contains(&format!("s3://{bucket}/no/such/key")),
        "{error}"
    );
    assert!(error.contains("not retried"), "{error}");
    let workers = client_.workers().await.unwrap();
    assert_eq!(workers.len(), 1, "the worker is still registered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_fail_the_attempt_not_the_worker() {
    let server = start_s3().await;
    let s3 = server.client();
    s3.create_bucket()
        .bucket("drover-test-creds")
        .send()
        .await
        .unwrap();
    let mut cluster = Cluster::start(&[]).await;
    server.start_worker(
        &mut cluster,
        "locked-out",
        1,
        &[],
        &[("AWS_SECRET_ACCESS_KEY", "not-the-secret".into())],
    );
    cluster.wait_for_workers(1).await;
    let lines = vec![
        r#"{"cmd": ["true"], "max_attempts": 1, "inputs": [{"from": "s3://drover-test-creds/a", "to": "a"}]}"#.to_string(),
        r#"{"cmd": ["true"]}"#.to_string(),
    ];
    let file = cluster.job_file("creds.jsonl", &lines);
    let output = cluster.cli(&["submit", path_str(&file), "--wait", "--json"]);
    let summary: serde_json::Value = serde_json::from_str(&stdout_of(&output)).unwrap();
    assert_eq!(
        (summary["failed"].as_u64(), summary["succeeded"].as_u64()),
        (Some(1), Some(1))
    );
    let mut client_ = cluster.client().await;
    let jobs = client_
        .jobs(Some(summary["id"].as_u64().unwrap()), None)
        .await
        .unwrap();
    let error = jobs[0].error.as_deref().unwrap();
    assert!(error.contains("s3://drover-test-creds/a"), "{error}");
    assert_eq!(jobs[1].state, JobState::Succeeded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_and_a_cancel_cover_a_stalled_input_too() {
    let server = start_s3().await;
    let s3 = server.client();
    s3.create_bucket()
        .bucket("drover-test-stall")
        .send()
        .await
        .unwrap();
    s3.put_object()
        .bucket("drover-test-stall")
        .key("input")
        .body(ByteStream::from(pattern(1024)))
        .send()
        .await
        .unwrap();
    let mut cluster = Cluster::start(&[]).await;
    start_s3_worker(&mut cluster, &server, "patient", 2);
    cluster.wait_for_workers(1).await;
    // The S3 server stops answering: connections are accepted, nothing comes back.
    // SAFETY: kill(2) on a child process we started; no memory is involved.
    assert_eq!(
        unsafe { libc::kill(server.child.id() as i32, libc::SIGSTOP) },
        0
    );
    let input = r#""inputs": [{"from": "s3://drover-test-stall/input", "to": "in"}]"#;
    let lines = [
        format!(r#"{{"cmd": ["true"], "timeout_s": 3, "max_attempts": 1, {input}}}"#),
        format!(r#"{{"cmd": ["true"], "name": "to-cancel", {input}}}"#),
    ];
    let mut client_ = cluster.client().await;
    let submitted = client_
        .submit(
            "stalled",
            drover::jobfile::parse(&lines.join("\n")).unwrap(),
        )
        .await
        .unwrap();
    let timed = submitted.first_job;
    let cancelled = submitted.first_job + 1;
    wait_running(&mut client_, cancelled, Duration::from_secs(30)).await;
    let began = std::time::Instant::now();
    client_
        .cancel(drover::job::CancelTarget::Job(cancelled))
        .await
        .unwrap();
    let job = cluster
        .wait_for_job(timed, "the stalled attempt to time out", |job| {
            job.state == JobState::Failed
        })
        .await;
    let error = job.error.unwrap_or_default();
    assert!(error.contains("timed out after 3s"), "{error}");
    // Both attempts ended on the worker, their slots free: it takes the next job at once.
    let next = client_
        .submit(
            "next",
            vec![drover::job::JobSpec::call("noop", b"x".to_vec())],
        )
        .await
        .unwrap();
    let info = wait_batch_done(&mut client_, next.batch, Duration::from_secs(10)).await;
    assert_eq!(info.succeeded, 1);
    let workers = client_.workers().await.unwrap();
    assert_eq!(workers[0].running, 0, "{workers:?}");
    eprintln!(
        "stalled attempts ended {} ms after the cancel (timeout 3 s)",
        began.elapsed().as_millis()
    );
    // SAFETY: as above.
    unsafe { libc::kill(server.child.id() as i32, libc::SIGCONT) };
}

/// A worker's journal of multipart uploads in flight.
fn journal_of(cluster: &Cluster, worker: &str) -> std::path::PathBuf {
    cluster
        .dir
        .path()
        .join("scratch")
        .join(worker)
        .join(drover::worker::UPLOADS_DIR)
}

/// The parts of an upload the server holds.
fn parts_stored(server: &S3Server, upload: &InFlightUpload) -> usize {
    let prefix = format!(".upload_id-{}.part-", upload.upload_id);
    std::fs::read_dir(server.data.path())
        .unwrap()
        .flatten()
        .filter(|entry| entry.file_name().to_string_lossy().starts_with(&prefix))
        .count()
}

/// Waits for an upload written down in `journal` that holds a part on the server, and freezes
/// the server (SIGSTOP) at once: the upload stays in flight until the server is thawed.
fn catch_in_flight(
    server: &S3Server,
    journal: &std::path::Path,
) -> (std::path::PathBuf, InFlightUpload) {
    let began = std::time::Instant::now();
    loop {
        let found = std::fs::read_dir(journal).ok().and_then(|entries| {
            entries
                .flatten()
                .map(|entry| entry.path())
                .find(|path| path.extension().is_some_and(|ext| ext == "json"))
        });
        let upload = found.as_ref().and_then(|entry| {
            serde_json::from_slice::<InFlightUpload>(&std::fs::read(entry).ok()?).ok()
        });
        if let (Some(entry), Some(upload)) = (found, upload) {
            if parts_stored(server, &upload) > 0 {
                // SAFETY: kill(2) on a child process we started; no memory is involved.
                assert_eq!(
                    unsafe { libc::kill(server.child.id() as i32, libc::SIGSTOP) },
                    0
                );
                return (entry, upload);
            }
        }
        assert!(
            began.elapsed() < Duration::from_secs(60),
            "no upload in flight with a part stored seen in {}",
            journal.display()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Waits until what the server stores has not changed for a second.
async fn settle(server: &S3Server) {
    let stored = || -> Vec<(std::ffi::OsString, u64)> {
        let mut files: Vec<_> = walk(server.data.path())
            .into_iter()
            .filter_map(|path| {
                let size = std::fs::metadata(&path).ok()?.len();
                Some((path.into_os_string(), size))
            })
            .collect();
        files.sort();
        files
    };
    let began = std::time::Instant::now();
    let mut last = stored();
    let mut since = std::time::Instant::now();
    while since.elapsed() < Duration::from_secs(1) {
        assert!(
            began.elapsed() < Duration::from_secs(60),
            "the server kept writing"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = stored();
        if now != last {
            last = now;
            since = std::time::Instant::now();
        }
    }
}

/// Every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

/// 128 MiB of outputs (eight parts, by multipart upload) to `bucket`.
fn big_output_job(bucket: &str) -> String {
    format!(
        r#"{{"cmd": ["sh", "-c", "mkdir -p out && head -c 134217728 /dev/zero > out/big"], "outputs": {{"from": "out", "to": "s3://{bucket}/results/"}}}}"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_cut_off_by_a_killed_worker_is_aborted_by_the_next_worker() {
    let server = start_s3().await;
    let s3 = server.client();
    let bucket = "drover-test-cutoff";
    s3.create_bucket().bucket(bucket).send().await.unwrap();
    let mut cluster = Cluster::start(&[]).await;
    start_s3_worker(&mut cluster, &server, "uploader", 1);
    cluster.wait_for_workers(1).await;
    let mut client_ = cluster.client().await;
    let submitted = client_
        .submit(
            "cut-off",
            drover::jobfile::parse(&big_output_job(bucket)).unwrap(),
        )
        .await
        .unwrap();

    // Caught in flight, the S3 server frozen, the worker killed while it waits.
    let journal = journal_of(&cluster, "uploader");
    let (entry, upload) = catch_in_flight(&server, &journal);
    cluster.signal_worker("uploader", libc::SIGKILL);
    cluster
        .wait_worker_exit("uploader", Duration::from_secs(10))
        .await;
    // SAFETY: as above.
    unsafe { libc::kill(server.child.id() as i32, libc::SIGCONT) };
    // The server takes in what the dead worker had sent (it may take a while on a busy
    // machine), then the upload rests.
    settle(&server).await;
    assert!(
        entry.exists(),
        "the killed worker's upload is still written down"
    );
    let stored = parts_stored(&server, &upload);
    assert!(stored > 0, "the killed worker's upload holds parts");

    // The worker started again aborts it (its parts are gone), and runs the job to the end.
    start_s3_worker(&mut cluster, &server, "uploader", 1);
    wait_for(
        Duration::from_secs(30),
        "the left-over upload to be crossed off",
        || async { (!entry.exists()).then_some(()) },
    )
    .await;
    assert_eq!(
        parts_stored(&server, &upload),
        0,
        "{stored} parts were stored"
    );
    // The worker says so once the abort is done, which is just after the entry goes.
    wait_for(Duration::from_secs(10), "the worker to say so", || async {
        cluster
            .worker_log("uploader")
            .contains("aborted multipart uploads left unfinished by workers that died")
            .then_some(())
    })
    .await;
    let job = cluster
        .wait_for_job(submitted.first_job, "the job to succeed", |job| {
            job.state == JobState::Succeeded
        })
        .await;
    assert_eq!(job.outputs.len(), 1, "{job:?}");
    assert_eq!(job.outputs[0].size, 128 * 1024 * 1024);
    // Only the living worker's lock is left.
    let left: Vec<String> = std::fs::read_dir(&journal)
        .unwrap()
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        left.len() == 1 && left[0].ends_with(".lock"),
        "journal entries left: {left:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_cut_off_by_a_cancel_is_aborted_by_its_worker() {
    let server = start_s3().await;
    let s3 = server.client();
    let bucket = "drover-test-cancelled";
    s3.create_bucket().bucket(bucket).send().await.unwrap();
    let mut cluster = Cluster::start(&[]).await;
    start_s3_worker(&mut cluster, &server, "uploader", 1);
    cluster.wait_for_workers(1).await;
    let mut client_ = cluster.client().await;
    let submitted = client_
        .submit(
            "cancelled",
            drover::jobfile::parse(&big_output_job(bucket)).unwrap(),
        )
        .await
        .unwrap();
    let (entry, upload) = catch_in_flight(&server, &journal_of(&cluster, "uploader"));
    client_
        .cancel(drover::job::CancelTarget::Job(submitted.first_job))
        .await
        .unwrap();
    let job = cluster
        .wait_for_job(submitted.first_job, "the cancel", |job| {
            job.state == JobState::Cancelled
        })
        .await;
    assert!(job.outputs.is_empty(), "{job:?}");
    // The attempt ended at the cancel; its upload is aborted once the server answers again.
    // SAFETY: kill(2) on a child process we started; no memory is involved.
    unsafe { libc::kill(server.child.id() as i32, libc::SIGCONT) };
    wait_for(
        Duration::from_secs(30),
        "the cut-off upload to be aborted and crossed off",
        || async { (!entry.exists() && parts_stored(&server, &upload) == 0).then_some(()) },
    )
    .await;
    // Its slot is free once the worker's word that the attempt ended has come in, which may
    // follow the abort.
    let began = std::time::Instant::now();
    loop {
        let workers = client_.workers().await.unwrap();
        if workers[0].running == 0 {
            break;
        }
        assert!(began.elapsed() < Duration::from_secs(10), "{workers:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
