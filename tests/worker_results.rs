//! Results made by workers, with real processes: an exec job's standard output and a handler's
//! bytes are the job's result, up to the coordinator's `--max-result-bytes`; past it the attempt
//! fails with a message saying what to do, and the worker carries on. A limit that cannot work
//! is refused at start, from a flag, the environment or drover.toml alike.

mod common;

use common::*;
use drover::job::{JobSpec, JobState};
use std::process::{Command, Stdio};
use std::time::Duration;

const OVER_LIMIT: &str = "is above --max-result-bytes (1000); publish large results as outputs";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_over_the_limit_fails_its_job_and_the_worker_carries_on() {
    let mut cluster = Cluster::start(&["--max-result-bytes", "1000"]).await;
    cluster.start_worker("w", 1, &[]);
    cluster.wait_for_workers(1).await;
    let mut client = cluster.client().await;

    // Far more than a pipe holds, from an exec job; then a handler's bytes just past the limit.
    let mut flood = JobSpec::exec(["sh", "-c", "head -c 300000 /dev/zero"]);
    flood.max_attempts = 3;
    let over = vec![flood, JobSpec::call("noop", vec![b'x'; 1001])];
    let submitted = client.submit("over", over).await.unwrap();
    let info = wait_batch_done(&mut client, submitted.batch, Duration::from_secs(60)).await;
    assert_eq!(info.failed, 2, "{info:?}");
    let jobs = client.jobs(Some(submitted.batch), None).await.unwrap();
    let said = [
        format!("result of 300000 bytes {OVER_LIMIT}"),
        format!("result of 1001 bytes {OVER_LIMIT}"),
    ];
    for (job, said) in jobs.iter().zip(said) {
        let error = job.error.as_deref().unwrap_or_default();
        assert!(error.starts_with(&said), "{error}");
        assert!(error.contains("not retried"), "{error}");
        assert_eq!(job.attempts, 1, "not tried again: {job:?}");
        assert_eq!(job.worker.as_deref(), Some("w"));
        let stored = client.job_with_result(job.id).await.unwrap();
        assert_eq!(stored.result, None, "nothing of it is kept");
    }

    // The same worker runs the next jobs: results up to the limit, bytes that are not UTF-8.
    let fine = vec![
        JobSpec::exec(["sh", "-c", "printf '\\377ok\\n'; echo noise >&2"]),
        JobSpec::exec(["sh", "-c", "head -c 1000 /dev/zero"]),
        JobSpec::call("noop", vec![b'y'; 1000]),
    ];
    let submitted = client.submit("fine", fine).await.unwrap();
    let info = wait_batch_done(&mut client, submitted.batch, Duration::from_secs(60)).await;
    assert_eq!(info.succeeded, 3, "{info:?}");
    let jobs = client.jobs(Some(submitted.batch), None).await.unwrap();
    let expected: [&[u8]; 3] = [b"\xffok\n", &[0; 1000], &[b'y'; 1000]];
    for (job, expected) in jobs.iter().zip(expected) {
        assert_eq!(job.state, JobState::Succeeded);
        assert_eq!(job.worker.as_deref(), Some("w"), "the same worker: {job:?}");
        // Stored byte for byte with the recorded attempt: stdout only, or the handler's bytes.
        let stored = client.job_with_result(job.id).await.unwrap();
        assert_eq!(stored.result.as_deref(), Some(expected), "job {}", job.id);
    }
    // The tail for display is as before: stdout's end, then stderr's.
    assert_eq!(
        jobs[0].output_tail.as_deref(),
        Some("\u{fffd}ok\n\n--- stderr ---\nnoise\n")
    );
    let log = cluster.worker_log("w");
    assert!(!log.contains("panicked"), "{log}");
}

/// Starts a coordinator that should refuse to start, and returns what it said.
fn refused_start(args: &[&str], env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(COORDINATOR)
        .args(["--listen", "127.0.0.1:0", "--http", "off", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(args)
        .env_remove("DROVER_MAX_RESULT_BYTES")
        .env_remove("DROVER_MAX_FRAME_BYTES")
        .env_remove("DROVER_CONFIG")
        .envs(env.iter().copied())
        .env("NO_COLOR", "1")
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!output.status.success(), "it started: {args:?} {env:?}");
    let said = stderr_of(&output);
    assert!(
        !dir.path().join("data").join("ledger.sqlite").exists(),
        "nothing is made before the refusal"
    );
    said.lines().last().unwrap_or_default().to_string()
}

#[test]
fn a_result_limit_that_cannot_work_is_refused_at_start() {
    let zero = refused_start(&["--max-result-bytes", "0"], &[]);
    assert!(
        zero.starts_with("drover-coordinator: --max-result-bytes must be at least 1"),
        "{zero}"
    );
    let too_large = refused_start(&["--max-result-bytes", "16000000"], &[]);
    assert!(
        too_large
            .starts_with("drover-coordinator: --max-result-bytes 16000000 does not fit in a frame"),
        "{too_large}"
    );
    // A smaller frame: the same result limit no longer fits.
    let small_frame = refused_start(&["--max-frame-bytes", "4194304"], &[]);
    assert!(
        small_frame.contains("raise --max-frame-bytes to at least"),
        "{small_frame}"
    );
    // The environment and drover.toml set it like any other limit.
    let from_env = refused_start(&[], &[("DROVER_MAX_RESULT_BYTES", "0")]);
    assert_eq!(from_env, zero);
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), "[coordinator]\nmax_result_bytes = 16000000\n").unwrap();
    let from_file = refused_start(&[], &[("DROVER_CONFIG", common::path_str(file.path()))]);
    assert_eq!(from_file, too_large);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_of_a_mebibyte_arrive_whole_together() {
    let mut cluster = Cluster::start(&[]).await;
    cluster.start_worker("w", 8, &[]);
    cluster.wait_for_workers(1).await;
    let mut client = cluster.client().await;
    // Eight results at the default limit, finishing together: they share frames of results.
    let mebibyte = drover::job::DEFAULT_MAX_RESULT_BYTES;
    let script = format!("yes \"job $DROVER_JOB_ID\" | head -c {mebibyte}");
    let jobs = (0..8)
        .map(|_| JobSpec::exec(["sh", "-c", &script]))
        .collect();
    let submitted = client.submit("mebibytes", jobs).await.unwrap();
    let info = wait_batch_done(&mut client, submitted.batch, Duration::from_secs(120)).await;
    assert_eq!(info.succeeded, 8, "{info:?}");
    for job in client.jobs(Some(submitted.batch), None).await.unwrap() {
        let line = format!("job {}\n", job.id);
        let expected: Vec<u8> = line.bytes().cycle().take(mebibyte).collect();
        let stored = client.job_with_result(job.id).await.unwrap();
        let result = stored.result.unwrap_or_default();
        assert_eq!(result.len(), mebibyte, "job {}", job.id);
        assert!(result == expected, "job {}: not its own output", job.id);
    }
    let log = cluster.coordinator_log();
    assert!(!log.contains("exceeds the limit"), "{log}");
}
