//! `--keep-cpus-awake`: one spinner per CPU at the lowest priority while jobs move, none
//! spinning once they stop.

mod common;

use common::{wait_for, Cluster, COORDINATOR};
use drover::job::{JobSpec, JobState};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// The policies as /proc shows a thread's: SCHED_OTHER (the default) and SCHED_IDLE.
const SCHED_OTHER: u32 = 0;
const SCHED_IDLE: u32 = 5;

/// A thread of the coordinator, as /proc shows it.
struct Task {
    tid: String,
    name: String,
    policy: u32,
    cpus: String,
}

/// The coordinator's threads (one that exits while they are read is left out).
fn tasks_of(pid: u32) -> Vec<Task> {
    let mut tasks = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let tid = task.unwrap().file_name().to_string_lossy().into_owned();
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")) else {
            continue;
        };
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .map(|value| value.trim().to_string())
                .unwrap()
        };
        // The fields after the name; the policy is the 41st field of the line.
        let (_, rest) = stat.rsplit_once(')').unwrap();
        let policy = rest.split_whitespace().nth(38).unwrap().parse().unwrap();
        tasks.push(Task {
            name: field("Name:"),
            cpus: field("Cpus_allowed_list:"),
            policy,
            tid,
        });
    }
    tasks
}

/// Nanoseconds the spinners have spent on a CPU so far (schedstat's first field).
fn spinners_on_cpu(pid: u32, spinners: &[&Task]) -> u64 {
    spinners
        .iter()
        .map(|spinner| {
            let line =
                std::fs::read_to_string(format!("/proc/{pid}/task/{}/schedstat", spinner.tid))
                    .unwrap();
            line.split_whitespace()
                .next()
                .unwrap()
                .parse::<u64>()
                .unwrap()
        })
        .sum()
}

/// This process's CPUs (`Cpus_allowed_list`), which the coordinator it starts inherits.
fn own_cpus() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("Cpus_allowed_list:"))
        .unwrap()
        .trim()
        .to_string()
}

/// How many CPUs a `Cpus_allowed_list` names.
fn count_cpus(list: &str) -> usize {
    list.split(',')
        .map(|range| match range.split_once('-') {
            Some((first, last)) => {
                last.parse::<usize>().unwrap() - first.parse::<usize>().unwrap() + 1
            }
            None => 1,
        })
        .sum()
}

/// The scheduler's state of a thread: `R` running or runnable (a spinner that spins, even one
/// that other work keeps off the CPUs), `S` sleeping (a parked one).
fn state_of(pid: u32, task: &Task) -> char {
    let stat =
        std::fs::read_to_string(format!("/proc/{pid}/task/{}/stat", task.tid)).unwrap_or_default();
    let (_, rest) = stat.rsplit_once(") ").unwrap_or_default();
    rest.chars().next().unwrap_or('?')
}

/// Calls for at least half a second (and 50), each checked; answers the spinners seen
/// running or runnable right after a call.
async fn calls_watching(
    client: &mut drover::client::Client,
    pid: u32,
    spinners: &[&Task],
) -> BTreeSet<String> {
    let moving = Instant::now();
    let mut calls = 0;
    let mut awake = BTreeSet::new();
    while moving.elapsed() < Duration::from_millis(500) || calls < 50 {
        let done = client
            .call(JobSpec::call("noop", b"x".to_vec()))
            .await
            .unwrap();
        assert_eq!(done.record.state, JobState::Succeeded);
        calls += 1;
        for spinner in spinners {
            if state_of(pid, spinner) == 'R' {
                awake.insert(spinner.name.clone());
            }
        }
    }
    awake
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spinners_take_the_lowest_priority_one_per_cpu_and_stop_when_jobs_stop() {
    let mut cluster = Cluster::start(&["--keep-cpus-awake", "5ms"]).await;
    cluster.start_worker("w1", 1, &[]);
    cluster.wait_for_workers(1).await;
    let pid = cluster.coordinator_pid();

    let tasks = tasks_of(pid);
    let (spinners, others): (Vec<&Task>, Vec<&Task>) = tasks
        .iter()
        .partition(|task| task.name.starts_with("drover-awake-"));
    assert_eq!(
        spinners.len(),
        count_cpus(&own_cpus()),
        "one spinner per CPU"
    );
    let names: BTreeSet<String> = spinners.iter().map(|s| s.name.clone()).collect();
    let pinned: BTreeSet<&str> = spinners.iter().map(|s| s.cpus.as_str()).collect();
    assert_eq!(pinned.len(), spinners.len(), "each on a CPU of its own");
    for spinner in &spinners {
        assert_eq!(
            spinner.policy, SCHED_IDLE,
            "spinner {} policy",
            spinner.name
        );
        assert!(
            spinner.cpus.parse::<usize>().is_ok(),
            "spinner {} is pinned to one CPU, not {}",
            spinner.name,
            spinner.cpus
        );
    }
    // The coordinator's own threads keep their priority and every CPU.
    assert!(!others.is_empty());
    for task in &others {
        assert_eq!(task.policy, SCHED_OTHER, "thread {} policy", task.name);
        assert_eq!(task.cpus, own_cpus(), "thread {} CPUs", task.name);
    }

    // Jobs move, and are run and recorded as ever; every spinner is woken.
    let mut client = cluster.client().await;
    let awake = calls_watching(&mut client, pid, &spinners).await;
    assert_eq!(awake, names, "the spinners seen awake while calls moved");

    // Only heartbeats now: the spinners park (each once it next runs, which other work may
    // put off), and stay parked, using no CPU.
    wait_for(Duration::from_secs(30), "every spinner parked", || async {
        spinners
            .iter()
            .all(|spinner| state_of(pid, spinner) == 'S')
            .then_some(())
    })
    .await;
    let parked = spinners_on_cpu(pid, &spinners);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let while_idle = spinners_on_cpu(pid, &spinners) - parked;
    for spinner in &spinners {
        assert_eq!(
            state_of(pid, spinner),
            'S',
            "spinner {} parked",
            spinner.name
        );
    }
    assert!(
        while_idle < 50_000_000,
        "the spinners spent {} ms on the CPUs over 2 s of heartbeats only",
        while_idle / 1_000_000
    );

    // Jobs move again: every spinner wakes again, and calls are answered as before.
    let awake = calls_watching(&mut client, pid, &spinners).await;
    assert_eq!(
        awake, names,
        "the spinners seen awake when calls moved again"
    );
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
