//! `drover local`: a job file run on a coordinator and workers started for the occasion.

use super::{batch_name, print_json, read_job_file, render, wait_with_progress, warn_unplaceable};
use crate::client::Client;
use crate::coordinator::CoordinatorConfig;
use crate::local::{LocalCluster, LocalConfig};
use crate::worker::Handlers;
use anyhow::bail;
use std::path::{Path, PathBuf};

/// Runs `file` on `workers` workers of `slots` slots each, with the ledger in `data_dir` (kept)
/// or a temporary directory; prints the batch, its jobs and the workers, and fails if any job did.
pub(super) async fn run(
    file: &Path,
    workers: usize,
    slots: u32,
    data_dir: Option<PathBuf>,
    json: bool,
) -> anyhow::Result<std::process::ExitCode> {
    if workers == 0 || slots == 0 {
        bail!("--workers and --slots must be at least 1");
    }
    let jobs = read_job_file(file)?;
    let temporary = tempfile::Builder::new().prefix("drover-local-").tempdir()?;
    let kept = data_dir.is_some();
    let ledger_dir = data_dir.unwrap_or_else(|| temporary.path().join("data"));
    let cluster = LocalCluster::start(LocalConfig {
        coordinator: CoordinatorConfig::new(&ledger_dir),
        workers,
        slots,
        scratch_dir: temporary.path().join("scratch"),
        handlers: Handlers::stock(),
    })?;
    let ledger_dir = std::path::absolute(&ledger_dir).unwrap_or(ledger_dir);
    let ledger = cluster.ledger_id;
    // Said first, so it is known while the jobs run, and however the run ends.
    eprintln!(
        "drover local: ledger {ledger} in {}{}; outputs go under <to>ledger-{ledger}/<job id>/",
        ledger_dir.display(),
        if kept {
            ""
        } else {
            " (temporary, removed at the end; --data-dir keeps it)"
        }
    );
    let outcome = async {
        let mut client = Client::connect(&cluster.address, None).await?;
        let submitted = client.submit(&batch_name(file), jobs).await?;
        warn_unplaceable(&submitted);
        let info = wait_with_progress(&mut client, submitted.batch, json).await?;
        let jobs = client.jobs(Some(submitted.batch), None).await?;
        let workers = client.workers().await?;
        anyhow::Ok((info, jobs, workers))
    }
    .await;
    cluster.stop().await;
    let (info, jobs, workers) = outcome?;
    if json {
        let ledger = serde_json::json!({
            "id": ledger.to_string(),
            "data_dir": ledger_dir,
            "kept": kept,
        });
        print_json(&serde_json::json!({
            "batch": info,
            "jobs": jobs,
            "workers": workers,
            "ledger": ledger,
        }))?;
    } else {
        println!("{}\n", render::batch(&info));
        println!("{}\n", render::jobs(&jobs));
        let outputs = render::first_lines(&jobs);
        if !outputs.is_empty() {
            println!("{outputs}\n");
        }
        println!("{}", render::workers(&workers));
    }
    Ok(if info.failed > 0 {
        std::process::ExitCode::FAILURE
    } else {
        std::process::ExitCode::SUCCESS
    })
}
