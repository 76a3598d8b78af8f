//! Runs one attempt: an exec job as a child process in a fresh scratch directory, or a call job
//! through its handler; enforces `timeout_s` and kills on request.

use crate::job::{now_ms, AttemptResult, JobSpec, Outcome, OutputObject, Outputs, Task};
use crate::net::protocol::Assignment;
use crate::storage::{describe_io, FetchError};
use crate::worker::data::{self, Stores};
use crate::worker::handlers::{CallContext, Handlers};
use crate::worker::orphans;
use crate::worker::tail::{join_tails, Tail, TAIL_BYTES};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::Command;
use tokio::sync::oneshot;

/// How long output is still read after the job's process ended.
const OUTPUT_DRAIN: Duration = Duration::from_secs(2);

/// How an attempt may be cut short.
enum Interrupt {
    TimedOut,
    Killed,
}

/// Runs an attempt to its end and says how it went.
pub async fn run(
    assignment: Assignment,
    scratch_root: PathBuf,
    handlers: Handlers,
    stores: Stores,
    kill: oneshot::Receiver<()>,
) -> AttemptResult {
    run_for_outputs(assignment, scratch_root, handlers, stores, kill)
        .await
        .0
}

/// Like [`run`], also returning where the job's outputs go (from the one decode of its spec).
pub async fn run_for_outputs(
    assignment: Assignment,
    scratch_root: PathBuf,
    handlers: Handlers,
    stores: Stores,
    kill: oneshot::Receiver<()>,
) -> (AttemptResult, Option<Outputs>) {
    let started_at_ms = now_ms();
    let clock = Instant::now();
    let (ended, outputs) = match assignment.spec.decode() {
        Ok(spec) => (
            run_spec(&assignment, &spec, &scratch_root, &handlers, &stores, kill).await,
            spec.outputs,
        ),
        Err(error) => (
            Ended::failed(format!("cannot read the job's spec: {error}")),
            None,
        ),
    };
    let result = AttemptResult {
        lease: assignment.lease,
        job: assignment.job,
        attempt: assignment.attempt,
        outcome: ended.outcome,
        exit_code: ended.exit_code,
        started_at_ms,
        duration_ms: clock.elapsed().as_millis() as u64,
        output_tail: ended.output_tail,
        result: Vec::new(),
        error: ended.error,
        outputs: ended.outputs,
        permanent: ended.permanent,
        epoch: assignment.epoch,
    };
    (result, outputs)
}

async fn run_spec(
    assignment: &Assignment,
    spec: &JobSpec,
    scratch_root: &Path,
    handlers: &Handlers,
    stores: &Stores,
    kill: oneshot::Receiver<()>,
) -> Ended {
    let timeout = spec
        .timeout_s
        .map(|seconds| Duration::from_secs(seconds as u64));
    // One deadline and one kill for the whole attempt: fetching its inputs, running it and
    // publishing its outputs. A transfer cut short is dropped, which cancels it.
    let interrupt = async move {
        let timed_out = async {
            match timeout {
                Some(limit) => tokio::time::sleep(limit).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = timed_out => Interrupt::TimedOut,
            // A dropped sender means the worker no longer cares; keep running.
            Ok(()) = kill => Interrupt::Killed,
            else => std::future::pending().await,
        }
    };
    tokio::pin!(interrupt);
    let scratch = scratch_root.join(format!(
        "job-{}-attempt-{}-{:x}",
        assignment.job, assignment.attempt, assignment.lease
    ));
    // A call job without data needs no directory: no file system work on the hot path.
    let needs_scratch =
        matches!(spec.task, Task::Exec { .. }) || !spec.inputs.is_empty() || spec.outputs.is_some();
    if needs_scratch {
        if let Err(error) = tokio::fs::create_dir_all(&scratch).await {
            return Ended::failed(format!(
                "cannot create scratch directory {}: {}",
                scratch.display(),
                describe_io(&error)
            ));
        }
    }
    // The data futures are large (the S3 client's are): boxed, and only when there is data, so
    // a job without data does not carry or move them.
    let fetched = if spec.inputs.is_empty() {
        Ok(Ok(()))
    } else {
        let fetch = Box::pin(data::fetch_inputs(stores, &spec.inputs, &scratch));
        tokio::select! {
            fetched = fetch => Ok(fetched),
            interrupt = &mut interrupt => Err(interrupt),
        }
    };
    // The outputs directory is there from the start, so a job that has nothing to publish
    // need not make it: an empty one publishes nothing, and the attempt succeeds.
    let fetched = match (fetched, &spec.outputs) {
        (Ok(Ok(())), Some(outputs)) => Ok(data::make_outputs_dir(outputs, &scratch)
            .await
            .map_err(FetchError::from)),
        (fetched, _) => fetched,
    };
    let mut ended = match fetched {
        Err(interrupt) => Ended::interrupted(interrupt, spec.timeout_s, String::new()),
        Ok(Err(error)) if error.missing => Ended::failed_for_good(error.message),
        Ok(Err(error)) => Ended::failed(error.message),
        Ok(Ok(())) => match &spec.task {
            Task::Exec { cmd, env } => {
                run_exec(
                    assignment,
                    spec.timeout_s,
                    cmd,
                    env,
                    &scratch,
                    &mut interrupt,
                )
                .await
            }
            Task::Call { handler, payload } => {
                let context = CallContext {
                    job: assignment.job,
                    batch: assignment.batch,
                    attempt: assignment.attempt,
                    scratch: needs_scratch.then(|| scratch.clone()),
                };
                run_call(
                    context,
                    spec.timeout_s,
                    handler,
                    payload.clone(),
                    handlers,
                    &mut interrupt,
                )
                .await
            }
        },
    };
    if let (Outcome::Succeeded, Some(outputs)) = (ended.outcome, &spec.outputs) {
        let publish = Box::pin(data::publish_outputs(
            stores,
            outputs,
            &scratch,
            assignment.ledger,
            assignment.job,
            assignment.lease,
        ));
        let published = tokio::select! {
            published = publish => Ok(published),
            interrupt = &mut interrupt => Err(interrupt),
        };
        match published {
            Ok(Ok(objects)) => ended.outputs = objects,
            Ok(Err(error)) => {
                ended.outcome = Outcome::Failed;
                ended.error = Some(error);
            }
            Err(interrupt) => {
                let tail = std::mem::take(&mut ended.output_tail);
                ended = Ended::interrupted(interrupt, spec.timeout_s, tail);
            }
        }
    }
    if needs_scratch {
        if let Err(error) = tokio::fs::remove_dir_all(&scratch).await {
            tracing::warn!(scratch = %scratch.display(), %error, "cannot remove scratch directory");
        }
    }
    ended
}

struct Ended {
    outcome: Outcome,
    exit_code: Option<i32>,
    output_tail: String,
    error: Option<String>,
    outputs: Vec<OutputObject>,
    /// Another attempt would fail the same way (see [`AttemptResult::permanent`]).
    permanent: bool,
}

impl Ended {
    fn failed(error: String) -> Ended {
        Ended {
            outcome: Outcome::Failed,
            exit_code: None,
            output_tail: String::new(),
            error: Some(error),
            outputs: Vec::new(),
            permanent: false,
        }
    }

    /// A failure no other attempt would escape: the job is not retried.
    fn failed_for_good(error: String) -> Ended {
        Ended {
            permanent: true,
            ..Ended::failed(error)
        }
    }

    fn interrupted(interrupt: Interrupt, timeout_s: Option<u32>, output_tail: String) -> Ended {
        match interrupt {
            Interrupt::TimedOut => Ended {
                outcome: Outcome::TimedOut,
                exit_code: None,
                output_tail,
                error: Some(format!(
                    "timed out after {}s and was killed",
                    timeout_s.unwrap_or(0)
                )),
                outputs: Vec::new(),
                permanent: false,
            },
            Interrupt::Killed => Ended {
                outcome: Outcome::Killed,
                exit_code: None,
                output_tail,
                error: Some("killed: the job was cancelled".into()),
                outputs: Vec::new(),
                permanent: false,
            },
        }
    }
}

async fn run_exec(
    assignment: &Assignment,
    timeout_s: Option<u32>,
    cmd: &[String],
    env: &[(String, String)],
    scratch: &Path,
    interrupt: impl std::future::Future<Output = Interrupt>,
) -> Ended {
    let Some((program, args)) = cmd.split_first() else {
        return Ended::failed("cmd is empty".into());
    };
    let mut command = Command::new(program);
    command
        .args(args)
        .current_dir(scratch)
        .envs(env.iter().map(|(key, value)| (key, value)))
        .env("DROVER_JOB_ID", assignment.job.to_string())
        .env("DROVER_BATCH", assignment.batch.to_string())
        .env("DROVER_ATTEMPT", assignment.attempt.to_string())
        .env("DROVER_SCRATCH", scratch)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env(orphans::WORKER_PID_VAR, std::process::id().to_string())
        // Its own process group, so a kill reaches whatever the job started.
        .process_group(0)
        .kill_on_drop(true);
    let worker = std::process::id();
    // SAFETY: runs in the child between fork and exec, and calls only prctl(2) and getppid(2),
    // which are async-signal-safe; it touches no memory shared with the parent.
    unsafe {
        command.pre_exec(move || {
            // The child dies with its worker, even one killed with SIGKILL.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The worker died before that took hold: do not run at all.
            if libc::getppid() as u32 != worker {
                return Err(std::io::Error::other("the worker is gone"));
            }
            Ok(())
        });
    }
    let ended = match command.spawn() {
        Err(error) if will_not_start(&error) => {
            Ended::failed_for_good(format!("cannot start {program:?}: {error}"))
        }
        Err(error) => Ended::failed(format!("cannot start {program:?}: {error}")),
        Ok(mut child) => {
            let group = child.id();
            let stdout = Tail::default();
            let stderr = Tail::default();
            let readers = [
                tokio::spawn(stdout.clone().read(child.stdout.take())),
                tokio::spawn(stderr.clone().read(child.stderr.take())),
            ];
            let outcome = tokio::select! {
                status = child.wait() => Ok(status),
                interrupt = interrupt => {
                    kill_group(group);
                    let _ = child.wait().await;
                    Err(interrupt)
                }
            };
            // The attempt is over: whatever it left running in its group goes too, so nothing
            // outlives its scratch directory or keeps the output pipes open.
            kill_group(group);
            for reader in readers {
                // A process that left the group (setsid) may still hold a pipe: stop waiting.
                if tokio::time::timeout(OUTPUT_DRAIN, reader).await.is_err() {
                    tracing::debug!(
                        job = assignment.job,
                        "output still open after the job ended"
                    );
                }
            }
            let output_tail = join_tails(stdout.take(), stderr.take());
            match outcome {
                Ok(Ok(status)) => match status.code() {
                    Some(0) => Ended {
                        outcome: Outcome::Succeeded,
                        exit_code: Some(0),
                        output_tail,
                        error: None,
                        outputs: Vec::new(),
                        permanent: false,
                    },
                    Some(code) => Ended {
                        outcome: Outcome::Failed,
                        exit_code: Some(code),
                        output_tail,
                        error: Some(format!("exited with code {code}")),
                        outputs: Vec::new(),
                        permanent: false,
                    },
                    None => Ended {
                        outcome: Outcome::Failed,
                        exit_code: None,
                        output_tail,
                        error: Some(describe_signal(&status)),
                        outputs: Vec::new(),
                        permanent: false,
                    },
                },
                Ok(Err(error)) => {
                    Ended::failed(format!("cannot wait for the job's process: {error}"))
                }
                Err(interrupt) => Ended::interrupted(interrupt, timeout_s, output_tail),
            }
        }
    };
    ended
}

/// True when a command failed to start for a reason another attempt would meet again: the
/// program does not exist, may not be run, is no program, or its arguments are too long. Not
/// for a shortage (memory, processes, open files) or a busy file, which pass.
fn will_not_start(error: &std::io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(
            libc::ENOENT
                | libc::EACCES
                | libc::ENOEXEC
                | libc::ENOTDIR
                | libc::ELOOP
                | libc::ENAMETOOLONG
                | libc::E2BIG
        )
    )
}

fn describe_signal(status: &std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status.signal() {
        Some(signal) => format!("killed by signal {signal}"),
        None => "ended without an exit code".into(),
    }
}

fn kill_group(pid: Option<u32>) {
    if let Some(pid) = pid {
        // SAFETY: kill(2) with a negative pid signals the process group the child leads; it
        // touches no memory of ours.
        unsafe {
            libc::kill(-(pid as i32), libc::SIGKILL);
        }
    }
}

async fn run_call(
    context: CallContext,
    timeout_s: Option<u32>,
    name: &str,
    payload: Vec<u8>,
    handlers: &Handlers,
    interrupt: impl std::future::Future<Output = Interrupt>,
) -> Ended {
    let Some(handler) = handlers.get(name) else {
        return Ended::failed(format!("no handler named {name:?} on this worker"));
    };
    tokio::select! {
        returned = handler(context, payload) => match returned {
            Ok(output) => Ended {
                outcome: Outcome::Succeeded,
                exit_code: None,
                output_tail: String::from_utf8_lossy(&output[output.len().saturating_sub(TAIL_BYTES)..]).into_owned(),
                error: None,
                outputs: Vec::new(),
                permanent: false,
            },
            Err(error) => Ended::failed(error),
        },
        interrupt = interrupt => Ended::interrupted(interrupt, timeout_s, String::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::SpecBytes;

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
        let result = run(
            assignment(spec),
            scratch.path().to_path_buf(),
            Handlers::stock(),
            Stores::default(),
            never,
        )
        .await;
        assert_eq!(result.outcome, Outcome::Failed);
        assert_eq!(result.exit_code, Some(3));
        assert!(!result.permanent, "a failing exit may pass next time");
        assert!(
            result.output_tail.starts_with("42 7 2\n"),
            "{}",
            result.output_tail
        );
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
        let result = run(
            assignment(spec),
            scratch.path().to_path_buf(),
            Handlers::stock(),
            Stores::default(),
            never,
        )
        .await;
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
            scratch.path().to_path_buf(),
            Handlers::stock(),
            Stores::default(),
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
            scratch.path().to_path_buf(),
            Handlers::stock(),
            Stores::default(),
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
            scratch.path().to_path_buf(),
            Handlers::stock(),
            Stores::default(),
            never,
        )
        .await;
        assert!(refused.permanent, "{:?}", refused.error);
        let (_kill, never) = oneshot::channel();
        let unknown = run(
            assignment(JobSpec::call("frobnicate", Vec::new())),
            scratch.path().to_path_buf(),
            Handlers::stock(),
            Stores::default(),
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
            scratch.path().to_path_buf(),
            Handlers::stock(),
            Stores::default(),
            killed,
        ));
        kill.send(()).unwrap();
        let result = running.await.unwrap();
        assert_eq!(result.outcome, Outcome::Killed);
    }
}
