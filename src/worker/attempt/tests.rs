//! Attempts run for real: child processes, handlers, timeouts, kills, results.

use super::*;
use crate::job::SpecBytes;

fn around(scratch: &Path) -> Surroundings {
    Surroundings {
        scratch_root: scratch.to_path_buf(),
        handlers: Handlers::stock(),
        stores: Stores::default(),
        max_result_bytes: crate::job::DEFAULT_MAX_RESULT_BYTES,
    }
}

fn assignment(spec: JobSpec) -> Assignment {
    Assignment {
        lease: 9,
        job: 42,
        batch: 7,
        attempt: 2,
        spec: SpecBytes::encode(&spec),
        ledger: crate::job::LedgerId(1),
        epoch: 1,
    }
}

#[tokio::test]
async fn exec_sees_its_environment_and_reports_exit_code_and_output() {
    let scratch = tempfile::tempdir().unwrap();
    let spec = JobSpec::exec([
        "sh",
        "-c",
        "echo $DROVER_JOB_ID $DROVER_BATCH $DROVER_ATTEMPT; pwd; echo oops >&2; exit 3",
    ]);
    let (_kill, never) = oneshot::channel();
    let result = run(assignment(spec), around(scratch.path()), never).await;
    assert_eq!(result.outcome, Outcome::Failed);
    assert_eq!(result.exit_code, Some(3));
    assert!(!result.permanent, "a failing exit may pass next time");
    assert!(
        result.output_tail.starts_with("42 7 2\n"),
        "{}",
        result.output_tail
    );
    // A failed job's standard output is its result all the same; stderr is not in it.
    assert!(result.result.starts_with(b"42 7 2\n"));
    assert!(!result.result.ends_with(b"oops\n"));
    assert!(
        result.output_tail.contains("job-42-attempt-2-9"),
        "{}",
        result.output_tail
    );
    assert!(
        result.output_tail.ends_with("--- stderr ---\noops\n"),
        "{}",
        result.output_tail
    );
    // The scratch directory is gone afterwards.
    assert_eq!(std::fs::read_dir(scratch.path()).unwrap().count(), 0);
}

#[tokio::test]
async fn timeout_kills_the_whole_process_group() {
    let scratch = tempfile::tempdir().unwrap();
    let mut spec = JobSpec::exec(["sh", "-c", "sleep 30 & sleep 30; echo never"]);
    spec.timeout_s = Some(1);
    let (_kill, never) = oneshot::channel();
    let clock = Instant::now();
    let result = run(assignment(spec), around(scratch.path()), never).await;
    assert_eq!(result.outcome, Outcome::TimedOut);
    assert!(clock.elapsed() < Duration::from_secs(20));
    assert!(!result.output_tail.contains("never"));
}

#[tokio::test]
async fn a_background_process_neither_holds_the_attempt_nor_outlives_it() {
    let scratch = tempfile::tempdir().unwrap();
    let marker = scratch.path().join("survived");
    let script = format!("(sleep 2; touch {}) & echo started", marker.display());
    let (_kill, never) = oneshot::channel();
    let clock = Instant::now();
    let result = run(
        assignment(JobSpec::exec(["sh", "-c", &script])),
        around(scratch.path()),
        never,
    )
    .await;
    assert_eq!(result.outcome, Outcome::Succeeded);
    assert_eq!(result.output_tail, "started\n");
    assert!(
        clock.elapsed() < Duration::from_secs(2),
        "did not wait for the background job"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !marker.exists(),
        "the background process was killed with the attempt"
    );
}

#[tokio::test]
async fn missing_program_and_unknown_handler_fail_with_a_reason() {
    let scratch = tempfile::tempdir().unwrap();
    let (_kill, never) = oneshot::channel();
    let missing = run(
        assignment(JobSpec::exec(["/nonexistent/program"])),
        around(scratch.path()),
        never,
    )
    .await;
    assert_eq!(missing.outcome, Outcome::Failed);
    assert!(missing.error.unwrap().contains("cannot start"));
    assert!(missing.permanent, "no attempt would find it");
    // A file that may not be run fails for good too.
    let not_executable = scratch.path().join("data.txt");
    std::fs::write(&not_executable, "not a program").unwrap();
    let (_kill, never) = oneshot::channel();
    let refused = run(
        assignment(JobSpec::exec([not_executable.display().to_string()])),
        around(scratch.path()),
        never,
    )
    .await;
    assert!(refused.permanent, "{:?}", refused.error);
    let (_kill, never) = oneshot::channel();
    let unknown = run(
        assignment(JobSpec::call("frobnicate", Vec::new())),
        around(scratch.path()),
        never,
    )
    .await;
    assert_eq!(
        unknown.error.as_deref(),
        Some("no handler named \"frobnicate\" on this worker")
    );
    // Another worker may have it.
    assert!(!unknown.permanent);
}

#[tokio::test]
async fn kill_stops_a_running_call() {
    let scratch = tempfile::tempdir().unwrap();
    let (kill, killed) = oneshot::channel();
    let running = tokio::spawn(run(
        assignment(JobSpec::call("sleep", b"60000".to_vec())),
        around(scratch.path()),
        killed,
    ));
    kill.send(()).unwrap();
    let result = running.await.unwrap();
    assert_eq!(result.outcome, Outcome::Killed);
}

/// Runs one job to its end with these surroundings.
async fn run_job(spec: JobSpec, around: &Surroundings) -> AttemptResult {
    let (_kill, never) = oneshot::channel();
    run(assignment(spec), around.clone(), never).await
}

#[tokio::test]
async fn an_exec_jobs_standard_output_is_its_result_byte_for_byte() {
    let scratch = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    // Several pipe-fulls of bytes that are not UTF-8, then a few more written by printf.
    let written: Vec<u8> = (0..300_000u32)
        .map(|index| (index.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    assert!(std::str::from_utf8(&written).is_err());
    let file = data.path().join("bytes");
    std::fs::write(&file, &written).unwrap();
    let script = format!(
        "cat {}; printf '\\377\\000\\n\\200end'; echo noise >&2",
        file.display()
    );
    let result = run_job(
        JobSpec::exec(["sh", "-c", &script]),
        &around(scratch.path()),
    )
    .await;
    assert_eq!(result.outcome, Outcome::Succeeded, "{:?}", result.error);
    let mut expected = written;
    expected.extend_from_slice(b"\xff\x00\n\x80end");
    assert_eq!(result.result.len(), expected.len());
    assert!(result.result == expected, "the result differs from stdout");
    // The tail for display is as it was: the end of stdout, then stderr's.
    assert!(
        result.output_tail.ends_with("end\n--- stderr ---\nnoise\n"),
        "{:?}",
        result.output_tail
    );
}

#[tokio::test]
async fn output_past_the_limit_fails_the_attempt_for_good_and_the_next_one_runs() {
    let scratch = tempfile::tempdir().unwrap();
    let limited = Surroundings {
        max_result_bytes: 1000,
        ..around(scratch.path())
    };
    // Far more than a pipe holds: a reader that stopped draining would leave the job blocked
    // until its timeout, and could not count what it wrote.
    let mut flood = JobSpec::exec([
        "sh",
        "-c",
        "head -c 5000000 /dev/zero; echo wrote everything >&2",
    ]);
    flood.timeout_s = Some(120);
    let result = run_job(flood, &limited).await;
    assert_eq!(result.outcome, Outcome::Failed);
    assert_eq!(result.exit_code, Some(0), "the job itself ran to its end");
    assert_eq!(
        result.error.as_deref(),
        Some(
            "result of 5000000 bytes is above --max-result-bytes (1000); publish large results \
             as outputs"
        )
    );
    assert!(result.permanent, "the same job writes as much next time");
    assert!(result.result.is_empty());
    assert!(
        result.output_tail.ends_with("wrote everything\n"),
        "{:?}",
        result.output_tail
    );

    // Exactly the limit passes; the next job runs as usual.
    let exact = run_job(
        JobSpec::exec(["sh", "-c", "head -c 1000 /dev/zero"]),
        &limited,
    )
    .await;
    assert_eq!(exact.outcome, Outcome::Succeeded, "{:?}", exact.error);
    assert_eq!(exact.result, vec![0; 1000]);

    // A job that failed anyway keeps its own error and is tried again.
    let failing = run_job(
        JobSpec::exec(["sh", "-c", "head -c 2000 /dev/zero; exit 4"]),
        &limited,
    )
    .await;
    assert_eq!(failing.error.as_deref(), Some("exited with code 4"));
    assert!(!failing.permanent);
}

#[tokio::test]
async fn a_handlers_bytes_are_the_result_and_past_the_limit_fail_the_attempt() {
    let scratch = tempfile::tempdir().unwrap();
    let mut handlers = Handlers::stock();
    handlers.register("big", |_context, payload| async move {
        let size: usize = String::from_utf8_lossy(&payload).parse().unwrap_or(0);
        Ok(vec![0xfe; size])
    });
    let limited = Surroundings {
        handlers,
        max_result_bytes: 1000,
        ..around(scratch.path())
    };
    let echoed = run_job(JobSpec::call("noop", b"\xff\x00\x80 ok".to_vec()), &limited).await;
    assert_eq!(echoed.outcome, Outcome::Succeeded);
    assert_eq!(echoed.result, b"\xff\x00\x80 ok");

    let fits = run_job(JobSpec::call("big", b"1000".to_vec()), &limited).await;
    assert_eq!(fits.result, vec![0xfe; 1000]);

    let over = run_job(JobSpec::call("big", b"1001".to_vec()), &limited).await;
    assert_eq!(over.outcome, Outcome::Failed);
    assert_eq!(
        over.error.as_deref(),
        Some(
            "result of 1001 bytes is above --max-result-bytes (1000); publish large results \
             as outputs"
        )
    );
    assert!(over.permanent);
    assert!(over.result.is_empty());
}

#[tokio::test]
async fn a_json_handler_reads_its_payload_and_writes_its_result_as_json() {
    #[derive(serde::Deserialize)]
    struct Add {
        a: i64,
        b: i64,
    }
    #[derive(serde::Serialize)]
    struct Sum {
        sum: i64,
    }
    let scratch = tempfile::tempdir().unwrap();
    let mut handlers = Handlers::stock();
    handlers.register_json::<Add, Sum>("add", |_context, add| async move {
        let sum = add.a.checked_add(add.b).ok_or("the sum overflows")?;
        Ok(Sum { sum })
    });
    let around = Surroundings {
        handlers,
        ..around(scratch.path())
    };
    let added = run_job(
        JobSpec::call("add", br#"{"a": 2, "b": 40}"#.to_vec()),
        &around,
    )
    .await;
    assert_eq!(added.outcome, Outcome::Succeeded, "{:?}", added.error);
    assert_eq!(added.result, br#"{"sum":42}"#);

    // A payload that is not its input fails for good, naming the handler and what is wrong.
    let unreadable = run_job(JobSpec::call("add", br#"{"a": 2}"#.to_vec()), &around).await;
    assert_eq!(unreadable.outcome, Outcome::Failed);
    assert!(unreadable.permanent);
    assert_eq!(
        unreadable.error.as_deref(),
        Some("handler \"add\": the payload is not its JSON input: missing field `b` at line 1 column 8")
    );
    let not_json = run_job(JobSpec::call("add", b"hello".to_vec()), &around).await;
    assert!(not_json.permanent);
    assert_eq!(
        not_json.error.as_deref(),
        Some(
            "handler \"add\": the payload is not its JSON input: expected value at line 1 column 1"
        )
    );

    // The function's own error is its message, and the job may be tried again.
    let overflow = run_job(
        JobSpec::call(
            "add",
            format!(r#"{{"a": {}, "b": 1}}"#, i64::MAX).into_bytes(),
        ),
        &around,
    )
    .await;
    assert_eq!(overflow.error.as_deref(), Some("the sum overflows"));
    assert!(!overflow.permanent);
}
