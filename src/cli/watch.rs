//! `drover watch`: a live view of a batch or of the whole cluster, redrawn in place.

use crate::cli::render;
use crate::client::Client;
use crate::job::BatchId;
use crate::status::{BatchInfo, ClusterStatus, WorkerInfo};
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

/// Workers listed in one frame; the rest are summed up.
const WORKERS_SHOWN: usize = 12;

/// One redraw's data, also what `--json` prints.
#[derive(serde::Serialize)]
struct Frame {
    batch: Option<BatchInfo>,
    status: ClusterStatus,
    workers: Vec<WorkerInfo>,
}

impl Frame {
    fn finished(&self) -> bool {
        match &self.batch {
            Some(batch) => batch.done,
            None => self.status.stats.jobs.pending == 0 && self.status.stats.jobs.running == 0,
        }
    }
}

/// Redraws every `interval` until the batch (or, without one, every job) is done. Exits
/// non-zero if the followed batch has failed jobs.
pub async fn run(
    client: &mut Client,
    batch: Option<BatchId>,
    interval: Duration,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let terminal = std::io::stdout().is_terminal() && !json;
    let mut drawn_lines = 0;
    loop {
        let frame = Frame {
            batch: match batch {
                Some(id) => Some(client.batch(id).await?),
                None => None,
            },
            status: client.status().await?,
            workers: client.workers().await?,
        };
        drawn_lines = show(&frame, json, terminal, drawn_lines)?;
        if frame.finished() {
            let failed = frame.batch.is_some_and(|batch| batch.failed > 0);
            return Ok(if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            });
        }
        let wait = match batch {
            // The answer comes early when the batch finishes.
            Some(id) => client.wait_batch(id, interval).await.map(|_| ()),
            None => {
                tokio::time::sleep(interval).await;
                Ok(())
            }
        };
        wait?;
    }
}

/// Prints a frame (over the last one, on a terminal); answers how many lines it drew. Apart
/// from [`run`] so the lock on standard output is never held across an await.
fn show(
    frame: &Frame,
    json: bool,
    terminal: bool,
    mut drawn_lines: usize,
) -> std::io::Result<usize> {
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer(&mut out, frame)?;
        writeln!(out)?;
    } else {
        let text = draw(frame);
        if terminal && drawn_lines > 0 {
            // Back to the top of the last frame, and clear from there down.
            write!(out, "\x1b[{drawn_lines}F\x1b[J")?;
        }
        writeln!(out, "{text}")?;
        drawn_lines = text.lines().count();
    }
    out.flush()?;
    Ok(drawn_lines)
}

fn draw(frame: &Frame) -> String {
    let stats = &frame.status.stats;
    let mut out = match &frame.batch {
        Some(batch) => format!(
            "batch {} ({})  {} {:.1}%  {}/{} done, {} running, {} failed  {}  eta {}",
            batch.id,
            super::text::cell(&batch.name),
            render::bar(batch.finished(), batch.total, 30),
            render::percent(batch),
            batch.finished(),
            batch.total,
            batch.running,
            batch.failed,
            render::rate(batch.jobs_per_s),
            render::eta(batch),
        ),
        None => format!(
            "cluster  {} pending, {} running, {} succeeded, {} failed  {} over the last minute",
            stats.jobs.pending,
            stats.jobs.running,
            stats.jobs.succeeded,
            stats.jobs.failed,
            render::rate(stats.jobs_per_s)
        ),
    };
    let waiting = match &frame.batch {
        Some(batch) => &batch.waiting,
        None => &frame.status.waiting,
    };
    if !waiting.is_empty() {
        out.push_str("\nwaiting  ");
        out.push_str(&render::waiting(waiting, "\n         "));
    }
    let connected: Vec<WorkerInfo> = frame
        .workers
        .iter()
        .filter(|worker| worker.gone_at_ms.is_none())
        .take(WORKERS_SHOWN)
        .cloned()
        .collect();
    let workers = &frame.status.workers;
    out.push_str(&format!(
        "\nworkers  {} busy, {} idle, {} draining, {} lost recently\n",
        workers.busy, workers.idle, workers.draining, workers.lost
    ));
    out.push_str(&render::workers(&connected));
    let more =
        ((workers.busy + workers.idle + workers.draining) as usize).saturating_sub(connected.len());
    if more > 0 {
        out.push_str(&format!("\n… and {more} more"));
    }
    out
}
