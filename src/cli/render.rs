//! Human-readable output of the CLI: aligned tables and short durations. Text that comes from
//! jobs and workers goes through [`super::text`] on its way out.

use super::text;
use crate::job::{now_ms, JobState};
use crate::status::{
    AttemptRecord, BatchInfo, ClusterStatus, JobInfo, Percentiles, Waiting, WorkerInfo,
};
use std::time::{Duration, UNIX_EPOCH};

mod pools;
pub use pools::{pool_lines, pools};

/// Renders rows under headers, columns padded to their widest cell; each cell on one line,
/// escaped and clipped ([`text::cell`]).
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|row| row.iter().map(|cell| text::cell(cell)).collect())
        .collect();
    let rows = &rows;
    let mut widths: Vec<usize> = headers.iter().map(|header| header.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        padded.join("  ").trim_end().to_string()
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out.push('\n');
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// `1.2s`, `350ms`, `4m05s`, `2h03m`.
pub fn duration_ms(ms: u64) -> String {
    match ms {
        0..=999 => format!("{ms}ms"),
        1_000..=59_999 => format!("{:.1}s", ms as f64 / 1000.0),
        60_000..=3_599_999 => format!("{}m{:02}s", ms / 60_000, (ms / 1000) % 60),
        _ => format!("{}h{:02}m", ms / 3_600_000, (ms / 60_000) % 60),
    }
}

/// A wall-clock time in UTC, to the second: `2026-11-26T08:40:12Z`.
pub fn time_ms(ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// `12.5/s`, `1530/s`, `60/min`, `2.4/h`; `-` for no rate (0: none measured yet, or the batch
/// was too small or too quick to have one). Under one a second it is given a minute or an hour,
/// so it reads with two or three digits rather than as `0.0/s` or `0.9954/s`.
pub fn rate(per_s: f64) -> String {
    if per_s.is_nan() || per_s <= 0.0 {
        return "-".into();
    }
    let (value, unit) = if per_s >= 1.0 {
        (per_s, "s")
    } else if per_s * 60.0 >= 1.0 {
        (per_s * 60.0, "min")
    } else {
        (per_s * 3600.0, "h")
    };
    if value >= 100.0 {
        format!("{value:.0}/{unit}")
    } else {
        format!("{value:.1}/{unit}")
    }
}

/// A text progress bar `width` cells wide.
pub fn bar(done: u64, total: u64, width: usize) -> String {
    let filled = if total == 0 {
        width
    } else {
        ((done.min(total) as f64 / total as f64) * width as f64).round() as usize
    };
    format!("[{}{}]", "#".repeat(filled), ".".repeat(width - filled))
}

/// A batch's time left: `done`, a duration, or `-` while no rate is known.
pub fn eta(batch: &BatchInfo) -> String {
    match (batch.done, batch.eta_s) {
        (true, _) => "done".to_string(),
        (false, Some(eta_s)) => duration_ms(eta_s.saturating_mul(1000)),
        (false, None) => "-".to_string(),
    }
}

/// The share of a batch's jobs that finished, in percent.
pub fn percent(batch: &BatchInfo) -> f64 {
    if batch.total == 0 {
        100.0
    } else {
        batch.finished() as f64 * 100.0 / batch.total as f64
    }
}

fn percentiles(timing: &Percentiles) -> String {
    if timing.count == 0 {
        return "-".into();
    }
    format!(
        "p50 {}  p90 {}  p99 {}  (n={})",
        duration_ms(timing.p50_ms),
        duration_ms(timing.p90_ms),
        duration_ms(timing.p99_ms),
        timing.count
    )
}

fn optional(value: Option<impl ToString>) -> String {
    value.map_or_else(|| "-".to_string(), |value| value.to_string())
}

/// The `drover batches` table.
pub fn batches(batches: &[BatchInfo]) -> String {
    let rows: Vec<Vec<String>> = batches
        .iter()
        .map(|batch| {
            vec![
                batch.id.to_string(),
                batch.name.clone(),
                batch.total.to_string(),
                batch.pending.to_string(),
                batch.running.to_string(),
                batch.succeeded.to_string(),
                batch.failed.to_string(),
                batch.cancelled.to_string(),
                format!("{:.1}%", percent(batch)),
                rate(batch.jobs_per_s),
                eta(batch),
                if batch.done { "done" } else { "running" }.to_string(),
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "NAME",
            "TOTAL",
            "PENDING",
            "RUNNING",
            "SUCCEEDED",
            "FAILED",
            "CANCELLED",
            "PROGRESS",
            "RATE",
            "ETA",
            "STATUS",
        ],
        &rows,
    )
}

/// The `drover batch ID` view.
pub fn batch(batch: &BatchInfo) -> String {
    let mut out = format!(
        "batch {} ({})\n  total      {}\n  pending    {}\n  running    {}\n  succeeded  {}\n  failed     {}\n  cancelled  {}\n  progress   {:.1}%{}\n  submitted  {}",
        batch.id,
        text::line(&batch.name),
        batch.total,
        batch.pending,
        batch.running,
        batch.succeeded,
        batch.failed,
        batch.cancelled,
        percent(batch),
        if batch.done { ", done" } else { "" },
        time_ms(batch.submitted_at_ms),
    );
    if let Some(started) = batch.started_at_ms {
        out.push_str(&format!("\n  started    {}", time_ms(started)));
    }
    if let Some(finished) = batch.finished_at_ms {
        out.push_str(&format!("\n  finished   {}", time_ms(finished)));
    }
    if !batch.waiting.is_empty() {
        out.push_str("\n  waiting    ");
        out.push_str(&waiting(&batch.waiting, "\n             "));
    }
    if batch.jobs_per_s > 0.0 {
        out.push_str(&format!("\n  rate       {}", rate(batch.jobs_per_s)));
    }
    if batch.eta_s.is_some() && !batch.done {
        out.push_str(&format!("\n  eta        {}", eta(batch)));
    }
    out
}

/// Groups of pending jobs by why they wait, one a line: `3 jobs: no connected worker has label
/// tpu`; lines after the first begin with `indent`.
pub fn waiting(groups: &[Waiting], indent: &str) -> String {
    let lines: Vec<String> = groups
        .iter()
        .map(|group| {
            let jobs = if group.jobs == 1 { "job" } else { "jobs" };
            format!("{} {jobs}: {}", group.jobs, text::line(&group.reason))
        })
        .collect();
    lines.join(indent)
}

/// The `drover jobs` table; with a column saying why pending jobs wait, if any does.
pub fn jobs(jobs: &[JobInfo]) -> String {
    let explained = jobs.iter().any(|job| job.waiting.is_some());
    let rows: Vec<Vec<String>> = jobs
        .iter()
        .map(|job| {
            let mut row = vec![
                job.id.to_string(),
                job.batch.to_string(),
                optional(job.name.as_ref()),
                job.state.to_string(),
                job.attempts.to_string(),
                optional(job.worker.as_ref()),
                optional(job.exit_code),
                optional(job.duration_ms.map(duration_ms)),
            ];
            if explained {
                row.push(job.waiting.clone().unwrap_or_default());
            }
            row
        })
        .collect();
    let mut headers = vec![
        "ID", "BATCH", "NAME", "STATE", "ATTEMPTS", "WORKER", "EXIT", "DURATION",
    ];
    if explained {
        headers.push("WAITING");
    }
    table(&headers, &rows)
}

/// The `drover job ID` view, with its attempt history.
pub fn job(job: &JobInfo) -> String {
    let mut out = format!(
        "job {}{}\n  batch      {}\n  state      {}{}\n  attempts   {}\n  worker     {}\n  exit code  {}\n  duration   {}",
        job.id,
        job.name
            .as_ref()
            .map(|name| format!(" ({})", text::line(name)))
            .unwrap_or_default(),
        job.batch,
        job.state,
        job.waiting
            .as_ref()
            .map(|waiting| format!("\n  waiting    {}", text::line(waiting)))
            .unwrap_or_default(),
        attempts(job),
        optional(job.worker.as_deref().map(text::line)),
        optional(job.exit_code),
        optional(job.duration_ms.map(duration_ms)),
    );
    out.push_str(&format!("\n  queued     {}", time_ms(job.queued_at_ms)));
    if let Some(started) = job.started_at_ms {
        out.push_str(&format!("\n  started    {}", time_ms(started)));
    }
    if let Some(finished) = job.finished_at_ms {
        out.push_str(&format!("\n  finished   {}", time_ms(finished)));
    }
    if let Some(error) = &job.error {
        out.push_str(&format!("\n  error      {}", text::line(error)));
    }
    if job.duplicates > 0 {
        out.push_str(&format!(
            "\n  duplicates {} later successful results, acknowledged and not recorded",
            job.duplicates
        ));
    }
    // A failed job's last ended attempt is the one that failed it, not an earlier one.
    let (earlier, last) = match job.history.split_last() {
        Some((last, earlier)) if job.state == JobState::Failed => (earlier, Some(last)),
        _ => (&job.history[..], None),
    };
    if !earlier.is_empty() {
        out.push_str("\n  earlier attempts:");
        for attempt in earlier {
            out.push_str("\n    ");
            out.push_str(&attempt_line(attempt));
        }
    }
    if let Some(last) = last {
        out.push_str("\n  last attempt:\n    ");
        out.push_str(&attempt_line(last));
    }
    if let Some(tail) = job.output_tail.as_ref().filter(|tail| !tail.is_empty()) {
        out.push_str("\n  output (tail):\n");
        for line in text::lines(tail).lines() {
            out.push_str("    ");
            out.push_str(line);
            out.push('\n');
        }
        out.pop();
    }
    out
}

/// A job's attempts, and how they ended where that is known: `4 (3 failed, 1 succeeded)`.
/// The history holds every attempt that ended unrecorded, across retries; the recorded one and
/// the running one are the job's own.
fn attempts(job: &JobInfo) -> String {
    let mut ended: Vec<(&str, u32)> = Vec::new();
    for attempt in &job.history {
        let outcome = match attempt.outcome.as_str() {
            "lost" => "lost with their worker",
            "unstarted" => "lost before they started",
            "timed_out" => "timed out",
            other => other,
        };
        match ended.iter_mut().find(|(known, _)| *known == outcome) {
            Some((_, count)) => *count += 1,
            None => ended.push((outcome, 1)),
        }
    }
    match job.state {
        JobState::Succeeded => ended.push(("succeeded", 1)),
        JobState::Running => ended.push(("running", 1)),
        _ => {}
    }
    if ended.is_empty() {
        return job.attempts.to_string();
    }
    let parts: Vec<String> = ended
        .iter()
        .map(|(outcome, count)| format!("{count} {outcome}"))
        .collect();
    format!("{} ({})", job.attempts, parts.join(", "))
}

/// One ended attempt of a job's history.
fn attempt_line(attempt: &AttemptRecord) -> String {
    format!(
        "#{} on {} at {}: {} after {}{}",
        attempt.attempt,
        text::line(&attempt.worker),
        time_ms(attempt.started_at_ms),
        attempt.outcome,
        duration_ms(attempt.finished_at_ms.saturating_sub(attempt.started_at_ms)),
        attempt
            .error
            .as_ref()
            .map(|error| format!(" ({})", text::line(error)))
            .unwrap_or_default()
    )
}

/// The `drover workers` table: who runs what since when with which labels, how much each has
/// done, time per job.
pub fn workers(workers: &[WorkerInfo]) -> String {
    let now = now_ms();
    let rows: Vec<Vec<String>> = workers
        .iter()
        .map(|worker| {
            let mut jobs: Vec<String> = worker
                .current
                .iter()
                .take(4)
                .map(|current| {
                    format!(
                        "{} ({})",
                        current.job,
                        duration_ms(now.saturating_sub(current.since_ms))
                    )
                })
                .collect();
            if worker.current.len() > 4 {
                jobs.push(format!("… {} in all", worker.current.len()));
            }
            // A worker that drained and left said goodbye: it is not "gone" like a lost one.
            let seen = match worker.gone_at_ms {
                Some(gone) => format!(
                    "{} {} ago",
                    if worker.state == "left" {
                        "left"
                    } else {
                        "lost"
                    },
                    duration_ms(now.saturating_sub(gone))
                ),
                None => format!("{} ago", duration_ms(worker.last_seen_ms)),
            };
            vec![
                worker.name.clone(),
                worker.state.clone(),
                format!("{}/{}", worker.running, worker.slots),
                if worker.labels.is_empty() {
                    "-".into()
                } else {
                    worker.labels.join(",")
                },
                worker.done.to_string(),
                worker.failed.to_string(),
                worker.lost.to_string(),
                optional(worker.mean_job_ms().map(duration_ms)),
                seen,
                duration_ms(
                    worker
                        .gone_at_ms
                        .unwrap_or(now)
                        .saturating_sub(worker.connected_at_ms),
                ),
                if jobs.is_empty() {
                    "-".into()
                } else {
                    jobs.join(", ")
                },
            ]
        })
        .collect();
    table(
        &[
            "NAME",
            "STATE",
            "RUNNING",
            "LABELS",
            "DONE",
            "FAILED",
            "LOST",
            "TIME/JOB",
            "HEARD",
            "UP",
            "JOBS (RUNNING FOR)",
        ],
        &rows,
    )
}

/// Who leads, and the standbys beside it: `a:7700 (standby b:7700, heard 0.4s ago)`.
fn coordinators(status: &ClusterStatus) -> Option<String> {
    let leader = status.leader.as_deref()?;
    let standbys: Vec<String> = status
        .coordinators
        .iter()
        .filter(|member| member.role == crate::ha::MemberRole::Standby)
        .map(|member| {
            format!(
                "standby {}, heard {} ago",
                text::line(&member.address),
                duration_ms(member.last_seen_ms)
            )
        })
        .collect();
    Some(match standbys.is_empty() {
        true => format!("{} (no standby)", text::line(leader)),
        false => format!("{} ({})", text::line(leader), standbys.join("; ")),
    })
}

/// The `drover status` screen: workers and jobs by state, throughput, timings, busiest batches.
pub fn status(status: &ClusterStatus) -> String {
    let workers = &status.workers;
    let stats = &status.stats;
    let jobs = &stats.jobs;
    let mut out = format!(
        "coordinator up {}\n\
         ledger     {}: outputs go under <to>ledger-{}/<job id>/\n\
         workers    {} busy, {} idle, {} draining; {} lost recently; {} of {} slots running\n\
         jobs       {} pending, {} running, {} succeeded, {} failed, {} cancelled\n\
         throughput {} over the last minute\n\
         run time   {}\n\
         queue wait {}\n\
         (timings since the coordinator started, {})",
        duration_ms(status.uptime_ms),
        stats.ledger,
        stats.ledger,
        workers.busy,
        workers.idle,
        workers.draining,
        workers.lost,
        workers.running,
        workers.slots,
        jobs.pending,
        jobs.running,
        jobs.succeeded,
        jobs.failed,
        jobs.cancelled,
        rate(stats.jobs_per_s),
        percentiles(&stats.run),
        percentiles(&stats.wait),
        time_ms(stats.started_at_ms),
    );
    if let Some(line) = coordinators(status) {
        out.push_str("\nleader     ");
        out.push_str(&line);
    }
    if !status.pools.is_empty() {
        out.push_str("\npools      ");
        out.push_str(&pool_lines(&status.pools, "\n           "));
    }
    if !status.waiting.is_empty() {
        out.push_str("\nwaiting    ");
        out.push_str(&waiting(&status.waiting, "\n           "));
    }
    if stats.duplicates > 0 {
        out.push_str(&format!(
            "\nduplicates {} late results acknowledged, not recorded",
            stats.duplicates
        ));
    }
    if stats.busiest.is_empty() {
        out.push_str(&format!(
            "\n\nno batch running ({} on record)",
            stats.batches
        ));
    } else {
        out.push_str("\n\nbusiest batches:\n");
        out.push_str(&batch_lines(&stats.busiest));
    }
    if let Some(failure) = stats.recent_failures.first() {
        out.push_str(&format!(
            "\n\nlast failure: job {} on {} at {}: {}{}",
            failure.job,
            text::line(&failure.worker),
            time_ms(failure.at_ms),
            failure.outcome,
            failure
                .error
                .as_ref()
                .map(|error| format!(" ({})", text::line(error)))
                .unwrap_or_default()
        ));
    }
    out
}

/// One line per batch with a progress bar: the busiest batches, `drover watch`.
pub fn batch_lines(batches: &[BatchInfo]) -> String {
    let rows: Vec<Vec<String>> = batches
        .iter()
        .map(|batch| {
            vec![
                batch.id.to_string(),
                batch.name.clone(),
                bar(batch.finished(), batch.total, 24),
                format!("{}/{}", batch.finished(), batch.total),
                batch.running.to_string(),
                batch.failed.to_string(),
                rate(batch.jobs_per_s),
                eta(batch),
            ]
        })
        .collect();
    table(
        &[
            "ID", "NAME", "PROGRESS", "DONE", "RUNNING", "FAILED", "RATE", "ETA",
        ],
        &rows,
    )
}

/// The first line of each job's output, or its error: what a one-off run produced.
pub fn first_lines(jobs: &[JobInfo]) -> String {
    let lines: Vec<String> = jobs
        .iter()
        .filter_map(|job| {
            let said = job
                .output_tail
                .as_deref()
                .and_then(|tail| tail.lines().next())
                .filter(|line| !line.is_empty())
                .or(job.error.as_deref())?;
            let label = job
                .name
                .clone()
                .unwrap_or_else(|| format!("job {}", job.id));
            Some(format!("{}: {}", text::cell(&label), text::line(said)))
        })
        .collect();
    lines.join("\n")
}

/// One CSV record of the completion log.
pub fn csv_header() -> [&'static str; 13] {
    [
        "id",
        "batch",
        "name",
        "state",
        "worker",
        "attempts",
        "lost_attempts",
        "queued_at_ms",
        "started_at_ms",
        "finished_at_ms",
        "duration_ms",
        "exit_code",
        "error",
    ]
}

/// The fields of [`csv_header`] for one job; text fields escaped and neutralised for
/// spreadsheets.
pub fn csv_record(job: &JobInfo) -> Vec<String> {
    vec![
        job.id.to_string(),
        job.batch.to_string(),
        text::spreadsheet(text::line(job.name.as_deref().unwrap_or_default())),
        job.state.to_string(),
        text::spreadsheet(text::line(job.worker.as_deref().unwrap_or_default())),
        job.attempts.to_string(),
        job.lost_attempts.to_string(),
        job.queued_at_ms.to_string(),
        job.started_at_ms
            .map(|ms| ms.to_string())
            .unwrap_or_default(),
        job.finished_at_ms
            .map(|ms| ms.to_string())
            .unwrap_or_default(),
        job.duration_ms.map(|ms| ms.to_string()).unwrap_or_default(),
        job.exit_code
            .map(|code| code.to_string())
            .unwrap_or_default(),
        text::spreadsheet(text::line(job.error.as_deref().unwrap_or_default())),
    ]
}

#[cfg(test)]
mod tests;
