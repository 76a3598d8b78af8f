//! Jobs a worker holds beyond its free slots (its recent jobs were short): handed back when
//! another worker is idle, lost with their worker as never started, and never run twice.

mod common;

use common::*;
use drover::client::Client;
use drover::job::{JobSpec, JobState};
use std::time::Duration;

/// Runs enough no-op jobs on the only connected worker that its jobs count as short: from then
/// on it may hold jobs beyond its free slots.
async fn run_short_jobs(client: &mut Client) {
    let noops = vec![JobSpec::call("noop", Vec::new()); 40];
    let submitted = client.submit("short", noops).await.unwrap();
    let info = wait_batch_done(client, submitted.batch, Duration::from_secs(60)).await;
    assert_eq!(info.succeeded, 40);
}

/// A job that sleeps for a minute on a worker with `label`, ahead of everything else in line.
fn long_job(label: &str) -> JobSpec {
    let mut spec = JobSpec::call("sleep", b"60000".to_vec());
    spec.priority = 1;
    spec.requires = vec![label.to_string()];
    spec
}

/// Waits until a job succeeded, and returns it.
async fn wait_succeeded(client: &mut Client, job: u64) -> drover::status::JobInfo {
    for _ in 0..3000 {
        let info = client.job(job).await.unwrap();
        if info.state == JobState::Succeeded {
            return info;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("job {job} did not succeed within 30s");
}

/// A job that appends a line to `$OUT/<its id>` each time it runs.
fn recording() -> JobSpec {
    drover::jobfile::parse_line(1, &recording_job(0.0)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_job_is_handed_back_when_another_worker_is_idle_and_runs_once_there() {
    let mut cluster = Cluster::start(&[]).await;
    cluster.start_worker("holder", 1, &["--label", "a"]);
    cluster.wait_for_workers(1).await;
    let mut client = cluster.client().await;
    run_short_jobs(&mut client).await;
    // A second worker, new (so it holds nothing), kept busy for a moment by a job for it alone.
    cluster.start_worker("idle", 1, &["--label", "b"]);
    cluster.wait_for_workers(2).await;
    let mut brief = JobSpec::call("sleep", b"50".to_vec());
    brief.priority = 1;
    brief.requires = vec!["b".into()];

    // The long job takes the holder's slot and the brief one the other's; the recording job
    // is held by the holder, behind a job of a minute, until the other worker is idle.
    let submitted = client
        .submit("held", vec![long_job("a"), brief, recording()])
        .await
        .unwrap();
    let held = submitted.first_job + 2;
    let done = wait_succeeded(&mut client, held).await;
    assert_eq!(done.worker.as_deref(), Some("idle"));
    assert_eq!(cluster.runs_of(held), 1, "it ran once");
    let long = client.job(submitted.first_job).await.unwrap();
    assert_eq!(
        (long.state, long.worker.as_deref()),
        (JobState::Running, Some("holder"))
    );
    // Handed back before it started, it counts against nothing, and its number is spent.
    assert_eq!((done.lost_attempts, done.history.len()), (0, 0));
    assert_eq!(done.attempts, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_held_by_a_worker_that_dies_goes_back_once_and_runs_once() {
    let mut cluster = Cluster::start(&["--heartbeat-timeout", "60s"]).await;
    cluster.start_worker("doomed", 1, &["--label", "a"]);
    cluster.wait_for_workers(1).await;
    let mut client = cluster.client().await;
    run_short_jobs(&mut client).await;

    let submitted = client
        .submit("held", vec![long_job("a"), recording()])
        .await
        .unwrap();
    let held = submitted.first_job + 1;
    // Behind a job of a minute on a worker with one slot, it is held, not run.
    let job = wait_running(&mut client, held, Duration::from_secs(30)).await;
    assert_eq!(job.worker.as_deref(), Some("doomed"));
    cluster.signal_worker("doomed", libc::SIGKILL);

    cluster.start_worker("survivor", 1, &[]);
    let done = wait_succeeded(&mut client, held).await;
    assert_eq!(done.worker.as_deref(), Some("survivor"));
    assert_eq!(
        cluster.runs_of(held),
        1,
        "it ran once, never on the dead worker"
    );
    // Lost before it started: on record, and no sign against the job.
    assert_eq!(done.lost_attempts, 0);
    let outcomes: Vec<(&str, &str)> = done
        .history
        .iter()
        .map(|attempt| (attempt.worker.as_str(), attempt.outcome.as_str()))
        .collect();
    assert_eq!(outcomes, vec![("doomed", "unstarted")]);
    assert_eq!(done.attempts, 2);
}
