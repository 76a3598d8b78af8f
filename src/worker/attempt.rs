//! Runs one attempt: an exec job as a child process in a fresh scratch directory, or a call job
//! through its handler; enforces `timeout_s` and kills on request. Its result is the handler's
//! returned bytes or the process's standard output, up to the coordinator's limit.

use crate::job::{now_ms, AttemptResult, JobSpec, Outcome, OutputObject, Outputs, Task};
use crate::net::protocol::Assignment;
use crate::storage::{describe_io, FetchError};
use crate::worker::data::{self, Stores};
use crate::worker::handlers::{CallContext, CallError, Handlers};
use crate::worker::orphans;
use crate::worker::result::{self as results, Whole};
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

/// How an attempt runs, besides its assignment: what the worker gives every attempt.
#[derive(Clone)]
pub struct Surroundings {
    /// Where attempts get their scratch directories.
    pub scratch_root: PathBuf,
    /// The call handlers.
    pub handlers: Handlers,
    /// The object stores for the job's data.
    pub stores: Stores,
    /// The most bytes of a result kept (the coordinator's `--max-result-bytes`): past it the
    /// attempt fails.
    pub max_result_bytes: usize,
}

/// Runs an attempt to its end and says how it went.
pub async fn run(
    assignment: Assignment,
    around: Surroundings,
    kill: oneshot::Receiver<()>,
) -> AttemptResult {
    run_for_outputs(assignment, around, kill).await.0
}

/// Like [`run`], also returning where the job's outputs go (from the one decode of its spec).
pub async fn run_for_outputs(
    assignment: Assignment,
    around: Surroundings,
    kill: oneshot::Receiver<()>,
) -> (AttemptResult, Option<Outputs>) {
    let started_at_ms = now_ms();
    let clock = Instant::now();
    let (ended, outputs) = match assignment.spec.decode() {
        Ok(spec) => (
            run_spec(&assignment, &spec, &around, kill).await,
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
        result: ended.result,
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
    around: &Surroundings,
    kill: oneshot::Receiver<()>,
) -> Ended {
    let stores = &around.stores;
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
    let scratch = around.scratch_root.join(format!(
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
                    around.max_result_bytes,
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
                    around,
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
                let result = std::mem::take(&mut ended.result);
                ended = Ended {
                    result,
                    ..Ended::interrupted(interrupt, spec.timeout_s, tail)
                };
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
    /// The handler's returned bytes, or the process's standard output.
    result: Vec<u8>,
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
            result: Vec::new(),
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
                result: Vec::new(),
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
                result: Vec::new(),
                error: Some("killed: the job was cancelled".into()),
                outputs: Vec::new(),
                permanent: false,
            },
        }
    }
}

/// Secrets the worker may have been given in its environment (a process pool gives it its
/// token so): a job is not to read them, so its process never sees them unless its spec sets
/// them itself.
const SECRETS: &[&str] = &[
    "DROVER_WORKER_TOKEN",
    "DROVER_WORKER_TOKEN_FILE",
    "DROVER_TOKEN",
    "DROVER_TOKEN_FILE",
    "DROVER_READ_TOKEN",
    "DROVER_READ_TOKEN_FILE",
];

async fn run_exec(
    assignment: &Assignment,
    timeout_s: Option<u32>,
    cmd: &[String],
    env: &[(String, String)],
    scratch: &Path,
    max_result_bytes: usize,
    interrupt: impl std::future::Future<Output = Interrupt>,
) -> Ended {
    let Some((program, args)) = cmd.split_first() else {
        return Ended::failed("cmd is empty".into());
    };
    let mut command = Command::new(program);
    for variable in SECRETS {
        command.env_remove(variable);
    }
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
    let open_files = crate::net::open_files::started_with();
    // SAFETY: runs in the child between fork and exec, and calls only prctl(2), getppid(2) and
    // setrlimit(2), which are async-signal-safe; it touches no memory shared with the parent.
    unsafe {
        command.pre_exec(move || {
            // The job runs with the open-files limit the worker was started with, not the
            // worker's raised one.
            if let Some(limits) = open_files {
                crate::net::open_files::give_back(limits);
            }
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
            // Standard output is the result: kept whole (to the limit), and always drained.
            let whole = Whole::new(max_result_bytes);
            let readers = [
                tokio::spawn(
                    stdout
                        .clone()
                        .read(child.stdout.take(), Some(whole.clone())),
                ),
                tokio::spawn(stderr.clone().read(child.stderr.take(), None)),
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
            let ended = match outcome {
                Ok(Ok(status)) => match status.code() {
                    Some(0) => Ended {
                        outcome: Outcome::Succeeded,
                        exit_code: Some(0),
                        output_tail,
                        result: Vec::new(),
                        error: None,
                        outputs: Vec::new(),
                        permanent: false,
                    },
                    Some(code) => Ended {
                        outcome: Outcome::Failed,
                        exit_code: Some(code),
                        output_tail,
                        result: Vec::new(),
                        error: Some(format!("exited with code {code}")),
                        outputs: Vec::new(),
                        permanent: false,
                    },
                    None => Ended {
                        outcome: Outcome::Failed,
                        exit_code: None,
                        output_tail,
                        result: Vec::new(),
                        error: Some(describe_signal(&status)),
                        outputs: Vec::new(),
                        permanent: false,
                    },
                },
                Ok(Err(error)) => {
                    Ended::failed(format!("cannot wait for the job's process: {error}"))
                }
                Err(interrupt) => Ended::interrupted(interrupt, timeout_s, output_tail),
            };
            with_stdout(ended, whole.take())
        }
    };
    ended
}

/// An exec attempt's standard output becomes its result, whatever its outcome; one that could
/// not be kept (past the limit, or unreadable) fails an attempt that would have succeeded, for
/// good: the same job would write as much again, and retrying it would only spend its time
/// again. An attempt that failed anyway keeps its own error (its tail still shows its output).
fn with_stdout(mut ended: Ended, stdout: Result<Vec<u8>, String>) -> Ended {
    match stdout {
        Ok(bytes) => ended.result = bytes,
        Err(error) if ended.outcome == Outcome::Succeeded => {
            ended.outcome = Outcome::Failed;
            ended.error = Some(error);
            ended.permanent = true;
        }
        Err(_) => {}
    }
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
    around: &Surroundings,
    interrupt: impl std::future::Future<Output = Interrupt>,
) -> Ended {
    let Some(handler) = around.handlers.get(name) else {
        return Ended::failed(format!("no handler named {name:?} on this worker"));
    };
    let returned = tokio::select! {
        returned = handler(context, payload) => returned,
        interrupt = interrupt => return Ended::interrupted(interrupt, timeout_s, String::new()),
    };
    let output = match returned {
        Ok(output) => output,
        Err(CallError { message, permanent }) => {
            return Ended {
                permanent,
                ..Ended::failed(message)
            }
        }
    };
    let output_tail =
        String::from_utf8_lossy(&output[output.len().saturating_sub(TAIL_BYTES)..]).into_owned();
    match results::within(output, around.max_result_bytes) {
        Ok(result) => Ended {
            outcome: Outcome::Succeeded,
            exit_code: None,
            output_tail,
            result,
            error: None,
            outputs: Vec::new(),
            permanent: false,
        },
        // As for an exec job's output (see `with_stdout`): the same call returns as much again.
        Err(error) => Ended {
            output_tail,
            ..Ended::failed_for_good(error)
        },
    }
}

#[cfg(test)]
mod tests;
