//! Server-driven allocation made visible: a coordinator and three workers in one process, a batch
//! of jobs of uneven length, and a timeline of which worker the coordinator pushed each job to.
//!
//! Run it with `cargo run --release --example server_driven`.

use drover::client::Client;
use drover::coordinator::CoordinatorConfig;
use drover::job::JobSpec;
use drover::local::{LocalCluster, LocalConfig};
use drover::worker::Handlers;
use std::time::Duration;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    drover::logging::init("warn");
    let scratch = tempfile::tempdir()?;
    let cluster = LocalCluster::start(LocalConfig {
        coordinator: CoordinatorConfig::new(scratch.path().join("ledger")),
        workers: 3,
        slots: 1,
        scratch_dir: scratch.path().join("scratch"),
        handlers: Handlers::stock(),
    })?;
    let mut client = Client::connect(&cluster.address, None).await?;
    while client.workers().await?.len() < 3 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Twelve jobs of uneven length: a worker that finishes early is handed the next job at once.
    let lengths_ms = [300, 100, 200, 100, 400, 100, 100, 300, 200, 100, 100, 200];
    let jobs: Vec<JobSpec> = lengths_ms
        .iter()
        .enumerate()
        .map(|(index, ms)| {
            let mut job = JobSpec::call("sleep", ms.to_string().into_bytes());
            job.name = Some(format!("step-{:02}", index + 1));
            job
        })
        .collect();
    let submitted = client.submit("server-driven", jobs).await?;
    println!(
        "submitted batch {} with {} jobs to {}\n",
        submitted.batch, submitted.jobs, cluster.address
    );
    let info = loop {
        let info = client
            .wait_batch(submitted.batch, Duration::from_secs(10))
            .await?;
        if info.done {
            break info;
        }
    };

    let mut jobs = client.jobs(Some(submitted.batch), None).await?;
    jobs.sort_by_key(|job| (job.started_at_ms, job.id));
    let origin = jobs
        .iter()
        .filter_map(|job| job.started_at_ms)
        .min()
        .unwrap_or(0);
    println!(
        "{:>8}  {:<8}  {:<9}  {:>6}",
        "START", "JOB", "WORKER", "RAN"
    );
    for job in &jobs {
        let start = job.started_at_ms.unwrap_or(origin) - origin;
        println!(
            "{:>7.3}s  {:<8}  {:<9}  {:>4}ms",
            start as f64 / 1000.0,
            job.name.as_deref().unwrap_or("-"),
            job.worker.as_deref().unwrap_or("-"),
            job.duration_ms.unwrap_or(0)
        );
    }
    println!();
    for worker in client.workers().await? {
        println!(
            "{} ran {} jobs, busy {} ms",
            worker.name, worker.done, worker.busy_ms
        );
    }
    println!(
        "\nbatch {}: {} of {} succeeded",
        info.id, info.succeeded, info.total
    );
    cluster.stop().await;
    Ok(())
}
