//! The `drover` command line: submit, inspect, cancel, retry, export, run locally, benchmark.

pub mod bench;
mod flags;
mod local;
pub mod render;
mod results;
pub mod run;
mod submission;
pub mod text;
pub mod watch;

use crate::client::Client;
use crate::job::{BatchId, JobId, JobSpec, JobState};
use crate::jobfile;
use crate::net::auth::Secret;
use crate::net::protocol::CancelTarget;
use crate::status::BatchInfo;
use anyhow::{bail, Context};
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};
use std::time::Duration;
use submission::{parse_idempotency_key, print_submitted, submit, waited_batch, warn_unplaceable};

/// How long one wait request lasts before the progress bar is redrawn.
const WAIT_SLICE: Duration = Duration::from_millis(250);

#[derive(Parser)]
#[command(
    name = "drover",
    version,
    about = "Submit and watch work on a drover cluster"
)]
struct Cli {
    /// The coordinator's address (HOST:PORT), or every coordinator's, separated by commas
    /// (`a:7700,b:7700`): the one that leads answers.
    #[arg(
        long,
        global = true,
        env = "DROVER_COORDINATOR",
        default_value = "127.0.0.1:7700"
    )]
    coordinator: String,
    /// File holding the client secret (else DROVER_TOKEN).
    #[arg(long, global = true, env = "DROVER_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// Connect over TLS, trusting the system's root certificates.
    #[arg(long, global = true, env = "DROVER_TLS", value_parser = clap::builder::BoolishValueParser::new())]
    tls: bool,
    /// Connect over TLS, trusting the certificates in this PEM file.
    #[arg(long, global = true, env = "DROVER_TLS_CA")]
    tls_ca: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Submit a JSON Lines job file as a batch; prints the batch id.
    #[command(after_long_help = jobfile::FIELDS_HELP)]
    Submit {
        /// The job file (JSON Lines; `-` reads standard input); `--help` lists the fields.
        file: PathBuf,
        /// The batch's name (default: the file's name).
        #[arg(long)]
        batch: Option<String>,
        /// Wait until the batch is done (exits non-zero if a job failed).
        #[arg(long)]
        wait: bool,
        /// Print each job's record as it finishes, one line each (implies --wait); with
        /// --json, the lines of `drover results --json`.
        #[arg(long)]
        follow: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// This submission's name for the coordinator: submitted again with the same key, it
        /// answers with the first batch and queues nothing (default: a key of its own, kept
        /// while it retries after a lost connection).
        #[arg(long, value_name = "KEY", value_parser = parse_idempotency_key)]
        idempotency_key: Option<String>,
    },
    /// Run one command on the cluster and wait for it: `drover run [FLAGS] -- CMD [ARGS]...`.
    Run(run::RunArgs),
    /// One batch's progress.
    Batch {
        /// The batch id.
        id: BatchId,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Every batch.
    Batches {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// One job with its attempt history.
    Job {
        /// The job id.
        id: JobId,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Finished jobs' records in the order they were recorded, each with its result: one
    /// line per job (with --json, its JSON). `--follow` goes on printing them as jobs finish.
    Results {
        /// Only this batch (default: every batch).
        #[arg(long)]
        batch: Option<BatchId>,
        /// Only records after this cursor (a record's "cursor"), to resume where an earlier
        /// read stopped.
        #[arg(long, value_name = "CURSOR", default_value_t = 0)]
        after: u64,
        /// Go on printing records as jobs finish: until the batch is done, or, without
        /// --batch, until interrupted.
        #[arg(long)]
        follow: bool,
        /// One JSON object per line: {"cursor","id","batch","name","state","exit_code",
        /// "worker","duration_ms","finished_at_ms","error"} and "result" (UTF-8) or
        /// "result_base64".
        #[arg(long)]
        json: bool,
    },
    /// Jobs, filtered.
    Jobs {
        /// Only this batch.
        #[arg(long)]
        batch: Option<BatchId>,
        /// Only this state (pending, running, succeeded, failed, cancelled).
        #[arg(long)]
        state: Option<JobState>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// The cluster at a glance: workers and jobs by state, throughput, timings, busiest batches.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// A live view, redrawn in place: progress, rate, ETA, workers. With a batch, exits when it
    /// is done; without, when no job is pending or running.
    Watch {
        /// The batch to follow.
        batch: Option<BatchId>,
        /// Time between redraws.
        #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
        interval: Duration,
        /// Print one JSON object per redraw, one per line, instead.
        #[arg(long)]
        json: bool,
    },
    /// Connected and recently gone workers: who runs which job since when, how many each has
    /// done, time per job.
    Workers {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// The elastic fleet's pools: workers wanted, booting, idle and busy, launches, failures and
    /// terminations, and the provider's last error.
    Pools {
        /// Print JSON: [{"name","provider","min","max","desired","booting","idle","busy",
        /// "launched","failed_launches","terminated"}], with "last_error" while one stands.
        #[arg(long)]
        json: bool,
    },
    /// Cancel a batch's unfinished jobs, or one job.
    #[command(group(clap::ArgGroup::new("target").required(true).args(["batch", "job"])))]
    Cancel {
        /// The batch.
        #[arg(long)]
        batch: Option<BatchId>,
        /// The job.
        #[arg(long)]
        job: Option<JobId>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Put a batch's failed jobs, or one failed or cancelled job, back to pending.
    #[command(group = clap::ArgGroup::new("retried").required(true).args(["batch", "job"]))]
    Retry {
        /// The batch.
        #[arg(long)]
        batch: Option<BatchId>,
        /// The job.
        #[arg(long)]
        job: Option<JobId>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Export a batch's completion log.
    Log {
        /// The batch.
        #[arg(long)]
        batch: BatchId,
        /// Output format.
        #[arg(long, value_enum, default_value = "jsonl")]
        format: LogFormat,
    },
    /// Run a job file on a coordinator and workers started on this machine for the occasion.
    #[command(after_long_help = jobfile::FIELDS_HELP)]
    Local {
        /// The job file (JSON Lines; `-` reads standard input); `--help` lists the fields.
        file: PathBuf,
        /// How many workers.
        #[arg(long, default_value_t = 2)]
        workers: usize,
        /// Slots per worker.
        #[arg(long, default_value_t = 2)]
        slots: u32,
        /// Keep the ledger here (default: a temporary directory, removed afterwards). Each
        /// ledger has an id of its own, and jobs' outputs go under `<to>ledger-<id>/<job id>/`,
        /// so two ledgers never overwrite each other's outputs.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Measure throughput, latency and memory on loopback with real processes.
    Bench(bench::BenchArgs),
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Jsonl,
    Csv,
}

/// Runs the CLI; returns the process's exit code.
pub fn main() -> std::process::ExitCode {
    crate::logging::init("warn");
    if let Err(error) = crate::config::apply("client", &Cli::command()) {
        eprintln!("drover: {error}");
        return std::process::ExitCode::FAILURE;
    }
    let cli = match flags::parse(flags::command(), std::env::args_os()) {
        Ok(cli) => cli,
        Err(error) => error.exit(),
    };
    if !matches!(cli.command, Command::Local { .. } | Command::Bench(_)) {
        quiet_on_closed_pipe();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("drover: cannot start: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    // Run on one of the runtime's threads, not this one: that thread also reads the sockets, so
    // an answer wakes the thread that waits for it and no other (`block_on` here would cost
    // every round trip a second wakeup, from the runtime's thread to this one).
    match runtime.block_on(runtime.spawn(run(cli))) {
        Ok(Ok(code)) => code,
        Ok(Err(error)) => {
            eprintln!("drover: {error:#}");
            std::process::ExitCode::FAILURE
        }
        Err(panicked) => {
            eprintln!("drover: {panicked}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// A reader that stops early (`drover jobs | head`) ends the output the way it ends any Unix
/// tool's: quietly, by SIGPIPE, rather than with a panic on the next write. (Not for `local` and
/// `bench`, which have processes and a coordinator to stop first.)
fn quiet_on_closed_pipe() {
    // SAFETY: restores the default disposition of one signal before any thread is started;
    // no handler runs.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

async fn connect(cli: &Cli) -> anyhow::Result<Client> {
    let secret = Secret::load(
        cli.token_file.as_deref(),
        std::env::var("DROVER_TOKEN").ok().as_deref(),
    )?;
    let tls = crate::net::tls::ClientTls::from_flags(cli.tls, cli.tls_ca.as_deref())?;
    Ok(Client::connect_with(&cli.coordinator, secret.as_ref(), tls.as_ref()).await?)
}

/// The job file `-` is standard input.
fn is_stdin(path: &Path) -> bool {
    path.as_os_str() == "-"
}

fn read_job_file(path: &Path) -> anyhow::Result<Vec<JobSpec>> {
    let (text, shown) = if is_stdin(path) {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
            .context("cannot read the job file from standard input")?;
        (text, "standard input".to_string())
    } else {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        (text, path.display().to_string())
    };
    jobfile::parse(&text)
        .with_context(|| format!("{shown} is not a valid job file; nothing was submitted"))
}

fn batch_name(path: &Path) -> String {
    if is_stdin(path) {
        return "stdin".into();
    }
    path.file_stem()
        .map(|stem| stem.to_string_lossy().into_owned())
        .unwrap_or_else(|| "batch".into())
}

async fn run(cli: Cli) -> anyhow::Result<std::process::ExitCode> {
    use std::process::ExitCode;
    match &cli.command {
        Command::Submit {
            file,
            batch,
            wait,
            follow,
            json,
            idempotency_key,
        } => {
            let jobs = read_job_file(file)?;
            let name = batch.clone().unwrap_or_else(|| batch_name(file));
            let mut client = connect(&cli).await?;
            let submitted = submit(&mut client, &name, jobs, idempotency_key.as_deref()).await?;
            warn_unplaceable(&submitted);
            if !*wait && !*follow {
                print_submitted(&submitted, *json)?;
                return Ok(ExitCode::SUCCESS);
            }
            if !*json {
                eprintln!(
                    "batch {} queued with {} jobs",
                    submitted.batch, submitted.jobs
                );
            }
            if *follow {
                let mut printer = results::Printer::new(results::Format::of(*json));
                results::follow_records(&mut client, Some(submitted.batch), 0, &mut printer)
                    .await?;
                let info = client.batch(submitted.batch).await?;
                if !*json {
                    println!("{}", render::batch(&info));
                }
                return Ok(if info.failed > 0 {
                    ExitCode::FAILURE
                } else {
                    ExitCode::SUCCESS
                });
            }
            let info = wait_with_progress(&mut client, submitted.batch, *json).await?;
            if *json {
                print_json(&waited_batch(&info, submitted.repeated)?)?;
            } else {
                println!("{}", render::batch(&info));
            }
            Ok(if info.failed > 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Run(args) => {
            let spec = args
                .spec()
                .map_err(|error| anyhow::anyhow!("nothing was run: {error}"))?;
            let mut client = connect(&cli).await?;
            let key = args.idempotency_key.as_deref();
            let done = run::call(&mut client, spec, key, connect(&cli)).await?;
            run::show(&mut client, &done, args.json).await
        }
        Command::Batch { id, json } => {
            let info = connect(&cli).await?.batch(*id).await?;
            if *json {
                print_json(&info)?;
            } else {
                println!("{}", render::batch(&info));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Batches { json } => {
            let batches = connect(&cli).await?.batches().await?;
            if *json {
                print_json(&batches)?;
            } else {
                println!("{}", render::batches(&batches));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Job { id, json } => {
            let job = connect(&cli).await?.job_with_result(*id).await?;
            if *json {
                print_json(&job)?;
            } else {
                println!("{}", render::job(&job.record));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Results {
            batch,
            after,
            follow,
            json,
        } => {
            let mut client = connect(&cli).await?;
            let format = results::Format::of(*json);
            results::run(&mut client, *batch, *after, *follow, format).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Jobs { batch, state, json } => {
            let jobs = connect(&cli).await?.jobs(*batch, *state).await?;
            if *json {
                print_json(&jobs)?;
            } else {
                println!("{}", render::jobs(&jobs));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Workers { json } => {
            let workers = connect(&cli).await?.workers().await?;
            if *json {
                print_json(&workers)?;
            } else {
                println!("{}", render::workers(&workers));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Pools { json } => {
            let pools = connect(&cli).await?.pools().await?;
            if *json {
                print_json(&pools)?;
            } else {
                println!("{}", render::pools(&pools));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { json } => {
            let status = connect(&cli).await?.status().await?;
            if *json {
                print_json(&status)?;
            } else {
                println!("{}", render::status(&status));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Watch {
            batch,
            interval,
            json,
        } => {
            let mut client = connect(&cli).await?;
            watch::run(&mut client, *batch, *interval, *json).await
        }
        Command::Cancel { batch, job, json } => {
            let target = match (batch, job) {
                (Some(batch), _) => CancelTarget::Batch(*batch),
                (None, Some(job)) => CancelTarget::Job(*job),
                (None, None) => bail!("give --batch ID or --job ID"),
            };
            let count = connect(&cli).await?.cancel(target).await?;
            if *json {
                print_json(&serde_json::json!({ "cancelled": count }))?;
            } else {
                println!("cancelled {count} jobs");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Retry { batch, job, json } => {
            let mut client = connect(&cli).await?;
            let (count, said) = match (batch, job) {
                (Some(batch), _) => {
                    let count = client.retry(*batch).await?;
                    (
                        count,
                        format!("retrying {count} failed jobs of batch {batch}"),
                    )
                }
                (None, Some(job)) => {
                    let count = client.retry_job(*job).await?;
                    let said = if count > 0 {
                        format!("retrying job {job}")
                    } else {
                        format!("job {job} is being retried already")
                    };
                    (count, said)
                }
                (None, None) => bail!("give --batch ID or --job ID"),
            };
            if *json {
                print_json(&serde_json::json!({ "retried": count }))?;
            } else {
                println!("{said}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Log { batch, format } => {
            let mut client = connect(&cli).await?;
            let mut finished = Vec::new();
            for state in [JobState::Succeeded, JobState::Failed, JobState::Cancelled] {
                finished.extend(client.jobs(Some(*batch), Some(state)).await?);
            }
            finished.sort_by_key(|job| job.id);
            write_log(&finished, *format)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Local {
            file,
            workers,
            slots,
            data_dir,
            json,
        } => local::run(file, *workers, *slots, data_dir.clone(), *json).await,
        Command::Bench(args) => bench::run(args).await.map(|()| ExitCode::SUCCESS),
    }
}

fn write_log(jobs: &[crate::status::JobInfo], format: LogFormat) -> anyhow::Result<()> {
    use std::io::Write;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    match format {
        LogFormat::Jsonl => {
            for job in jobs {
                serde_json::to_writer(&mut out, job)?;
                out.write_all(b"\n")?;
            }
        }
        LogFormat::Csv => {
            let mut writer = csv::Writer::from_writer(out);
            writer.write_record(render::csv_header())?;
            for job in jobs {
                writer.write_record(render::csv_record(job))?;
            }
            writer.flush()?;
            return Ok(());
        }
    }
    out.flush()?;
    Ok(())
}

/// Waits for a batch, drawing a progress bar on a terminal (unless `quiet`).
pub async fn wait_with_progress(
    client: &mut Client,
    batch: BatchId,
    quiet: bool,
) -> anyhow::Result<BatchInfo> {
    let mut info = client.batch(batch).await?;
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(info.total)
    };
    // The rate and ETA are the coordinator's (jobs that ran, measured once there are enough),
    // not the bar's own guess from its redraws, which made 333/s of one job.
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} jobs  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    while !info.done {
        bar.set_position(info.finished());
        bar.set_message(progress_message(&info));
        info = client.wait_batch(batch, WAIT_SLICE).await?;
    }
    bar.finish_and_clear();
    Ok(info)
}

/// What the progress bar says beside the bar: `2 running, 1 failed, 12.5/s, eta 4m05s`.
fn progress_message(info: &BatchInfo) -> String {
    let mut message = format!("{} running, {} failed", info.running, info.failed);
    if info.jobs_per_s > 0.0 {
        message.push_str(&format!(
            ", {}, eta {}",
            render::rate(info.jobs_per_s),
            render::eta(info)
        ));
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_progress_bar_shows_the_coordinators_rate_or_none() {
        let mut info: BatchInfo = serde_json::from_value(serde_json::json!({
            "id": 1, "name": "b", "total": 9, "pending": 3, "running": 6, "succeeded": 0,
            "failed": 0, "cancelled": 0, "done": false, "submitted_at_ms": 0,
            "started_at_ms": 0, "finished_at_ms": null, "jobs_per_s": 0.0, "eta_s": null
        }))
        .unwrap();
        // No rate yet (or a batch too small to have one): none shown, never a guess.
        assert_eq!(progress_message(&info), "6 running, 0 failed");
        info.jobs_per_s = 0.9954;
        info.eta_s = Some(10);
        assert_eq!(
            progress_message(&info),
            "6 running, 0 failed, 59.7/min, eta 10.0s"
        );
    }
}
