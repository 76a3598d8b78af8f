//! `--keep-cpus-awake`: one spinner per CPU at the lowest priority while jobs move, none
//! spinning once they stop.

mod common;

use common::{Cluster, COORDINATOR};
use drover::job::{JobSpec, JobState};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// SCHED_IDLE, as /proc shows a thread's scheduling policy.
const SCHED_IDLE: u32 = 5;

/// A spinner thread of the coordinator, as /proc shows it.
struct Spinner {
    tid: String,
    policy: u32,
    cpus: String,
}

/// The coordinator's threads named `drover-awake-*`.
fn spinners_of(pid: u32) -> Vec<Spinner> {
    let mut spinners = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let tid = task.unwrap().file_name().to_string_lossy().into_owned();
        let status = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).unwrap();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .map(|value| value.trim().to_string())
                .unwrap()
        };
        if !field("Name:").starts_with("drover-awake-") {
            continue;
        }
        spinners.push(Spinner {
            policy: stat_fields(pid, &tid)[38].parse().unwrap(),
            cpus: field("Cpus_allowed_list:"),
            tid,
        });
    }
    spinners
}

/// The fields of a thread's stat line after its name (the 3rd field of the line is the 1st).
fn stat_fields(pid: u32, tid: &str) -> Vec<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).unwrap();
    let (_, rest) = stat.rsplit_once(')').unwrap();
    rest.split_whitespace().map(str::to_string).collect()
}

/// Clock ticks of CPU (user and system) the spinners have used so far.
fn spinners_ticks(pid: u32, spinners: &[Spinner]) -> u64 {
    spinners
        .iter()
        .map(|spinner| {
            let fields = stat_fields(pid, &spinner.tid);
            fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
        })
        .sum()
}

/// The CPUs this process may run on, as the coordinator it starts may.
fn allowed_cpus() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let list = status
        .lines()
        .find_map(|line| line.strip_prefix("Cpus_allowed_list:"))
        .unwrap()
        .trim();
    list.split(',')
        .map(|range| match range.split_once('-') {
            Some((first, last)) => {
                last.parse::<usize>().unwrap() - first.parse::<usize>().unwrap() + 1
            }
            None => 1,
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spinners_take_the_lowest_priority_one_per_cpu_and_stop_when_jobs_stop() {
    let mut cluster = Cluster::start(&["--keep-cpus-awake", "5ms"]).await;
    cluster.start_worker("w1", 1, &[]);
    cluster.wait_for_workers(1).await;
    let pid = cluster.coordinator_pid();

    let spinners = spinners_of(pid);
    assert_eq!(spinners.len(), allowed_cpus(), "one spinner per CPU");
    let pinned: BTreeSet<&str> = spinners.iter().map(|s| s.cpus.as_str()).collect();
    assert_eq!(pinned.len(), spinners.len(), "each on a CPU of its own");
    for spinner in &spinners {
        assert_eq!(spinner.policy, SCHED_IDLE, "spinner {} policy", spinner.tid);
        assert!(
            spinner.cpus.parse::<usize>().is_ok(),
            "spinner {} is pinned to one CPU, not {}",
            spinner.tid,
            spinner.cpus
        );
    }

    // Jobs move, and are run and recorded as ever; the spinners run in the gaps.
    let mut client = cluster.client().await;
    let before = spinners_ticks(pid, &spinners);
    let moving = Instant::now();
    let mut calls = 0;
    while moving.elapsed() < Duration::from_millis(500) || calls < 50 {
        let done = client
            .call(JobSpec::call("noop", b"x".to_vec()))
            .await
            .unwrap();
        assert_eq!(done.record.state, JobState::Succeeded);
        calls += 1;
    }
    let while_moving = spinners_ticks(pid, &spinners) - before;
    assert!(
        while_moving > 0,
        "the spinners ran while {calls} calls moved"
    );

    // Only heartbeats now: the spinners park and use no CPU.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let parked = spinners_ticks(pid, &spinners);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let while_idle = spinners_ticks(pid, &spinners) - parked;
    assert!(
        while_idle <= 1,
        "the spinners used {while_idle} ticks over 2 s of heartbeats only"
    );

    // Jobs move again: the spinners wake, and calls are answered as before.
    for _ in 0..20 {
        let done = client
            .call(JobSpec::call("noop", b"y".to_vec()))
            .await
            .unwrap();
        assert_eq!(done.record.state, JobState::Succeeded);
    }
}

#[test]
fn a_zero_window_is_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(COORDINATOR)
        .args(["--listen", "127.0.0.1:0", "--http", "off", "--data-dir"])
        .arg(dir.path())
        .args(["--keep-cpus-awake", "0s"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--keep-cpus-awake needs a window longer than zero"),
        "{stderr}"
    );
}
