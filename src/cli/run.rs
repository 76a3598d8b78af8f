//! `drover run`: one command, its flags made into a job spec, called in one request and shown
//! as the command itself would be: its standard output, and its exit code as `drover`'s.

use super::text;
use crate::actors::queue::Shape;
use crate::actors::scheduler::blocker_among;
use crate::client::Client;
use crate::job::{JobSpec, JobState, Task};
use crate::status::Completion;
use std::future::Future;
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

/// How long `drover run` waits for its answer before it looks whether any connected worker can
/// take the job at all: the one request is answered only once the job is done, so a job no
/// worker can take would otherwise wait in silence.
const PLACEMENT_CHECK_AFTER: Duration = Duration::from_secs(1);

/// Options of `drover run`.
#[derive(clap::Args)]
pub struct RunArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Attempts that may fail before the job is failed (a one-off command is tried once).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    max_attempts: u32,
    /// A label the worker must have (repeatable).
    #[arg(long = "requires", value_name = "LABEL")]
    requires: Vec<String>,
    /// Slots of a worker the command takes.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    slots: u32,
    /// Wall-clock limit of one attempt (30s, 5m, 2h), after which it is killed.
    #[arg(long, value_parser = parse_timeout)]
    timeout: Option<u32>,
    /// An environment variable for the command, KEY=VALUE (repeatable).
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_env)]
    env: Vec<(String, String)>,
    /// This run's name for the coordinator: run again with the same key, it answers with the
    /// first run's job and runs nothing new (default: a key of its own, kept while it retries).
    #[arg(long, value_name = "KEY", value_parser = super::submission::parse_idempotency_key)]
    pub idempotency_key: Option<String>,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    cmd: Vec<String>,
}

impl RunArgs {
    /// The job these flags describe, checked as a job file's line would be.
    pub fn spec(&self) -> Result<JobSpec, String> {
        let mut spec = JobSpec::exec(self.cmd.clone());
        spec.max_attempts = self.max_attempts;
        spec.requires.clone_from(&self.requires);
        spec.slots = self.slots;
        spec.timeout_s = self.timeout;
        if let Task::Exec { env, .. } = &mut spec.task {
            env.clone_from(&self.env);
        }
        spec.validate()?;
        Ok(spec)
    }
}

/// Calls the job (under the user's idempotency key, if one was given) and waits for its
/// record. If the answer takes a while, `workers` (a second connection) is asked who is
/// connected, and a warning says so when none of them can take the job.
pub(super) async fn call(
    client: &mut Client,
    spec: JobSpec,
    key: Option<&str>,
    workers: impl Future<Output = anyhow::Result<Client>>,
) -> anyhow::Result<Completion> {
    let shape = Shape::new(spec.slots, &spec.requires);
    let calling = async move {
        match key {
            Some(key) => client.call_with_key(spec, key).await,
            None => client.call(spec).await,
        }
    };
    let mut calling = std::pin::pin!(calling);
    tokio::select! {
        done = &mut calling => return Ok(done?),
        () = tokio::time::sleep(PLACEMENT_CHECK_AFTER) => {}
    }
    let check = async move {
        // Only a warning: a check that cannot be made says nothing.
        let Ok(mut other) = workers.await else { return };
        let Ok(connected) = other.workers().await else {
            return;
        };
        if let Some(reason) = blocker_among(&shape, &connected) {
            eprintln!(
                "drover: warning: the job cannot start on any connected worker ({}); it waits \
                 until one that can connects",
                text::line(&reason)
            );
        }
    };
    // The answer never waits for the check: a check still dialling when it comes is dropped.
    tokio::select! {
        biased;
        done = &mut calling => return Ok(done?),
        () = check => {}
    }
    Ok(calling.await?)
}

/// Shows a finished run: with `json`, the job as `drover job ID --json` shows it; else a
/// success's result (the command's standard output, byte for byte), or a failure's output tail
/// and why it failed. The exit code is the command's.
pub(super) async fn show(
    client: &mut Client,
    done: &Completion,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let record = &done.record;
    if json {
        super::print_json(&client.job_with_result(record.id).await?)?;
    } else {
        if record.state == JobState::Succeeded {
            // No result: the command printed nothing.
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(done.result.as_deref().unwrap_or_default())?;
            stdout.flush()?;
        } else if let Some(tail) = client.job(record.id).await?.output_tail {
            // A failure says why in its output, standard error too: the tail of both.
            print!("{tail}");
        }
        if let Some(error) = &record.error {
            eprintln!("drover: job {} {}: {error}", record.id, record.state);
        }
    }
    Ok(match record.exit_code {
        Some(0) => ExitCode::SUCCESS,
        Some(code) => ExitCode::from(code.clamp(1, 255) as u8),
        None => ExitCode::FAILURE,
    })
}

/// `--timeout`: a duration, in whole seconds (rounded up), at least one.
fn parse_timeout(text: &str) -> Result<u32, String> {
    let duration = humantime::parse_duration(text)
        .map_err(|error| format!("{error} (write it as 30s, 5m or 2h)"))?;
    let seconds = duration.as_secs() + u64::from(duration.subsec_nanos() > 0);
    match u32::try_from(seconds) {
        Ok(0) => Err("must be at least 1s".into()),
        Ok(seconds) => Ok(seconds),
        Err(_) => Err(format!("{text} is too long")),
    }
}

/// `--env`: `KEY=VALUE`, split at the first `=`.
fn parse_env(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("{text:?} is not KEY=VALUE")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_and_variables_are_read_as_written() {
        assert_eq!(parse_timeout("90s"), Ok(90));
        assert_eq!(
            parse_timeout("1500ms"),
            Ok(2),
            "rounded up to whole seconds"
        );
        assert_eq!(parse_timeout("2h"), Ok(7200));
        assert!(parse_timeout("0s").unwrap_err().contains("at least 1s"));
        assert!(parse_timeout("soon").unwrap_err().contains("30s, 5m or 2h"));
        assert_eq!(parse_env("A=b=c"), Ok(("A".into(), "b=c".into())));
        assert_eq!(parse_env("EMPTY="), Ok(("EMPTY".into(), String::new())));
        assert!(parse_env("=x").is_err() && parse_env("NOEQUALS").is_err());
    }
}
