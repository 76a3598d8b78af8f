//! The chaos suite: a coordinator and workers on hosts of their own (network namespaces joined by
//! veth links), 10,000 jobs, and a seeded random sequence of faults while they run: workers
//! killed and frozen, links cut without a FIN or RST and healed (some only after the worker was
//! declared lost), lossy links, the coordinator killed and restarted.
//!
//! Afterwards the completion log, the ledger and the jobs' own outputs (each attempt appends its
//! number to `out/<job id>`) must agree: every job completed, none recorded twice. The report
//! (also written to `target/tmp/chaos.txt`, which `.ci/run` prints) counts the faults, the jobs
//! that ran more than once and the duplicate results the coordinator turned away.
//!
//! `DROVER_CHAOS_SEED` and `DROVER_CHAOS_JOBS` replay another sequence or size. Namespaces need
//! root; where the machine forbids them the test says `SKIPPED` and why. CI runs as root.

mod common;
#[path = "chaos/hosts.rs"]
mod hosts;

use common::*;
use drover::status::JobInfo;
use hosts::Hosts;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const DEFAULT_SEED: u64 = 20_261_126;
const DEFAULT_JOBS: usize = 10_000;
const WORKERS: usize = 4;
const SLOTS: u32 = 8;
const PORT: u16 = 7700;
/// Workers and clients reach the coordinator from other hosts, so they need the secrets.
const CLIENT_TOKEN: &str = "chaos-client-secret";
const WORKER_TOKEN: &str = "chaos-worker-secret";
/// Short, so that losses are noticed within the test's time; a lossy link may still be taken for
/// a lost one now and then, which is one more fault to survive.
const HEARTBEAT_TIMEOUT_S: f64 = 3.0;
const HEARTBEAT_INTERVAL: &str = "500ms";
/// Long enough that faults land on running jobs, short enough that 10,000 finish in minutes.
const JOB_SECONDS: f64 = 0.25;
/// The whole run, faults included, must end within this.
const RUN_LIMIT: Duration = Duration::from_secs(15 * 60);

/// What the driver does to the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    /// SIGKILL a worker, start it again a moment later.
    KillWorker,
    /// SIGSTOP a worker for up to twice the heartbeat timeout, then SIGCONT.
    FreezeWorker,
    /// Set a worker's veth link down for a while, then up.
    LinkDown,
    /// Drop everything on a worker's link with nftables for a while, then remove the table.
    FirewallCut,
    /// Cut a worker's link until the coordinator declares the worker lost, then heal it.
    HealAfterLost,
    /// Drop a share of a worker's packets at random for a while.
    LossyLink,
    /// SIGKILL the coordinator, start it again on the same ledger.
    RestartCoordinator,
}

const FAULTS: [Fault; 7] = [
    Fault::KillWorker,
    Fault::FreezeWorker,
    Fault::LinkDown,
    Fault::FirewallCut,
    Fault::HealAfterLost,
    Fault::LossyLink,
    Fault::RestartCoordinator,
];

impl Fault {
    fn describe(self) -> &'static str {
        match self {
            Fault::KillWorker => "worker killed (SIGKILL) and restarted",
            Fault::FreezeWorker => "worker frozen (SIGSTOP) and thawed",
            Fault::LinkDown => "link cut (veth down) and healed",
            Fault::FirewallCut => "link cut (nftables drop) and healed",
            Fault::HealAfterLost => "link healed after the worker was declared lost",
            Fault::LossyLink => "lossy link (nftables numgen drop)",
            Fault::RestartCoordinator => "coordinator killed (SIGKILL) and restarted",
        }
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(text) => text
            .parse()
            .unwrap_or_else(|_| panic!("{name}={text:?} is not a valid number")),
        Err(_) => default,
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

fn uniform(rng: &mut StdRng, from_s: f64, to_s: f64) -> Duration {
    Duration::from_secs_f64(rng.gen_range(from_s..to_s))
}

fn worker_name(i: usize) -> String {
    format!("host-{i}")
}

/// The cluster on its hosts, and what the driver has done to it.
struct Chaos {
    cluster: Cluster,
    hosts: Hosts,
    started: Instant,
    /// Faults injected, by kind.
    injected: BTreeMap<Fault, usize>,
    /// How many freezes and cuts outlasted the heartbeat timeout.
    past_timeout: usize,
    /// How long workers declared lost took to register again once their link healed.
    rejoin_after_heal: Vec<Duration>,
}

impl Chaos {
    fn say(&self, what: &str) {
        eprintln!("[{:6.1}s] {what}", self.started.elapsed().as_secs_f64());
    }

    fn start_worker(&mut self, i: usize) {
        let netns = self.hosts.workers[i - 1].clone();
        self.cluster.start_worker_in(
            &netns,
            &Hosts::coordinator_for(i, PORT),
            &worker_name(i),
            SLOTS,
            &[("DROVER_WORKER_TOKEN", WORKER_TOKEN)],
        );
    }

    /// A batch's progress from a fresh connection: the coordinator may have restarted.
    async fn batch(&self, batch: u64) -> Option<drover::status::BatchInfo> {
        tokio::time::timeout(Duration::from_secs(5), async {
            let mut client = drover::client::Client::connect(
                &self.cluster.address,
                self.cluster.client_secret().as_ref(),
            )
            .await
            .ok()?;
            client.batch(batch).await.ok()
        })
        .await
        .ok()
        .flatten()
    }

    /// Waits until the coordinator lists worker `i` as lost at or after `since_ms`.
    async fn wait_declared_lost(&self, i: usize, since_ms: u64) {
        let name = worker_name(i);
        let name = &name;
        wait_for(
            Duration::from_secs(60),
            "the cut-off worker to be declared lost",
            || async move {
                let mut client = drover::client::Client::connect(
                    &self.cluster.address,
                    self.cluster.client_secret().as_ref(),
                )
                .await
                .ok()?;
                let workers = client.workers().await.ok()?;
                workers
                    .iter()
                    .any(|worker| {
                        &worker.name == name
                            && worker.state == "lost"
                            && worker.gone_at_ms.is_some_and(|at| at >= since_ms)
                    })
                    .then_some(())
            },
        )
        .await;
    }

    /// Waits until worker `i` is connected with a registration made at or after `since_ms`, and
    /// returns how long after `since_ms` that was.
    async fn wait_rejoined(&self, i: usize, since_ms: u64) -> Duration {
        let name = worker_name(i);
        let name = &name;
        let connected_at = wait_for(
            Duration::from_secs(60),
            "the healed worker to register again",
            || async move {
                let mut client = drover::client::Client::connect(
                    &self.cluster.address,
                    self.cluster.client_secret().as_ref(),
                )
                .await
                .ok()?;
                let workers = client.workers().await.ok()?;
                workers.iter().find_map(|worker| {
                    (&worker.name == name
                        && worker.gone_at_ms.is_none()
                        && worker.connected_at_ms >= since_ms)
                        .then_some(worker.connected_at_ms)
                })
            },
        )
        .await;
        Duration::from_millis(connected_at - since_ms)
    }

    /// Injects one fault and heals it.
    async fn inject(&mut self, fault: Fault, rng: &mut StdRng) {
        let i = rng.gen_range(1..=WORKERS);
        let timeout = HEARTBEAT_TIMEOUT_S;
        *self.injected.entry(fault).or_default() += 1;
        match fault {
            Fault::KillWorker => {
                let pause = uniform(rng, 0.2, 2.0);
                self.say(&format!(
                    "SIGKILL {}, restart in {pause:.1?}",
                    worker_name(i)
                ));
                self.cluster.signal_worker(&worker_name(i), libc::SIGKILL);
                self.cluster
                    .wait_worker_exit(&worker_name(i), Duration::from_secs(10))
                    .await;
                tokio::time::sleep(pause).await;
                self.start_worker(i);
            }
            Fault::FreezeWorker => {
                let hold = uniform(rng, 0.5, 2.0 * timeout);
                self.past_timeout += usize::from(hold.as_secs_f64() > timeout);
                self.say(&format!("SIGSTOP {} for {hold:.1?}", worker_name(i)));
                self.cluster.signal_worker(&worker_name(i), libc::SIGSTOP);
                tokio::time::sleep(hold).await;
                self.cluster.signal_worker(&worker_name(i), libc::SIGCONT);
            }
            Fault::LinkDown => {
                let hold = uniform(rng, 0.5, 2.0 * timeout);
                self.past_timeout += usize::from(hold.as_secs_f64() > timeout);
                self.say(&format!("link of {} down for {hold:.1?}", worker_name(i)));
                self.hosts.link_down(i).unwrap();
                tokio::time::sleep(hold).await;
                self.hosts.link_up(i).unwrap();
            }
            Fault::FirewallCut => {
                let hold = uniform(rng, 0.5, 2.0 * timeout);
                self.past_timeout += usize::from(hold.as_secs_f64() > timeout);
                self.say(&format!(
                    "link of {} dropped by nftables for {hold:.1?}",
                    worker_name(i)
                ));
                self.hosts.firewall_cut(i).unwrap();
                tokio::time::sleep(hold).await;
                self.hosts.firewall_heal(i).unwrap();
            }
            Fault::HealAfterLost => {
                let by_firewall = rng.gen_bool(0.5);
                let linger = uniform(rng, 0.0, 2.0);
                self.say(&format!(
                    "link of {} cut ({}) until it is declared lost, healed {linger:.1?} later",
                    worker_name(i),
                    if by_firewall { "nftables" } else { "veth down" }
                ));
                let since = now_ms();
                if by_firewall {
                    self.hosts.firewall_cut(i).unwrap();
                } else {
                    self.hosts.link_down(i).unwrap();
                }
                self.wait_declared_lost(i, since).await;
                tokio::time::sleep(linger).await;
                let healed = now_ms();
                if by_firewall {
                    self.hosts.firewall_heal(i).unwrap();
                } else {
                    self.hosts.link_up(i).unwrap();
                }
                let rejoined = self.wait_rejoined(i, healed).await;
                self.say(&format!(
                    "{} registered again {rejoined:.1?} after the heal",
                    worker_name(i)
                ));
                self.rejoin_after_heal.push(rejoined);
            }
            Fault::LossyLink => {
                let percent = rng.gen_range(5..=30);
                let hold = uniform(rng, 2.0, 8.0);
                self.say(&format!(
                    "link of {} drops {percent}% of packets for {hold:.1?}",
                    worker_name(i)
                ));
                self.hosts.lossy(i, percent).unwrap();
                tokio::time::sleep(hold).await;
                self.hosts.firewall_heal(i).unwrap();
            }
            Fault::RestartCoordinator => {
                let pause = uniform(rng, 0.2, 3.0);
                self.say(&format!("SIGKILL the coordinator, restart in {pause:.1?}"));
                self.cluster.kill_coordinator();
                tokio::time::sleep(pause).await;
                self.cluster.start_coordinator().await;
            }
        }
    }
}

/// One job's story, as the completion log, the ledger and its own output tell it.
struct Evidence {
    /// The completion log's lines per job.
    logged: HashMap<u64, Vec<JobInfo>>,
    /// The batch's job ids, per the ledger: first and count.
    first_job: u64,
    total: u64,
    /// Duplicate results counted by the ledger.
    duplicates: u64,
    /// Attempts lost with their worker, per the ledger.
    lost_attempts: u64,
}

fn gather(chaos: &Chaos, batch: u64) -> Evidence {
    let output = chaos.cluster.cli(&["log", "--batch", &batch.to_string()]);
    assert!(
        output.status.success(),
        "drover log failed: {}",
        stderr_of(&output)
    );
    let mut logged: HashMap<u64, Vec<JobInfo>> = HashMap::new();
    for line in stdout_of(&output).lines() {
        let job: JobInfo = serde_json::from_str(line)
            .unwrap_or_else(|error| panic!("completion log line not a job ({error}): {line}"));
        logged.entry(job.id).or_default().push(job);
    }
    let ledger = rusqlite::Connection::open_with_flags(
        chaos
            .cluster
            .data_dir()
            .join(drover::storage::journal::LEDGER_FILE),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("the ledger opens");
    let (first_job, total): (i64, i64) = ledger
        .query_row(
            "SELECT COALESCE(MIN(id), 0), COUNT(*) FROM jobs WHERE batch = ?1",
            [batch as i64],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .unwrap();
    let (duplicates, lost_attempts): (i64, i64) = ledger
        .query_row(
            "SELECT COALESCE(SUM(duplicates), 0), COALESCE(SUM(lost_attempts), 0)
             FROM jobs WHERE batch = ?1",
            [batch as i64],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .unwrap();
    Evidence {
        logged,
        first_job: first_job as u64,
        total: total as u64,
        duplicates: duplicates as u64,
        lost_attempts: lost_attempts as u64,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_jobs_through_random_faults_complete_once_each() {
    let seed: u64 = env_or("DROVER_CHAOS_SEED", DEFAULT_SEED);
    let jobs: usize = env_or("DROVER_CHAOS_JOBS", DEFAULT_JOBS);
    assert!(
        std::process::Command::new("nft")
            .arg("--version")
            .output()
            .is_ok_and(|output| output.status.success()),
        "the chaos suite needs nftables: apt-get install nftables (.ci/run does)"
    );
    let hosts = match Hosts::build(WORKERS) {
        Ok(hosts) => hosts,
        Err(reason) => {
            eprintln!("SKIPPED: this machine does not allow network namespaces ({reason})");
            return;
        }
    };
    let mut cluster = Cluster::new(&[
        "--heartbeat-timeout",
        &format!("{HEARTBEAT_TIMEOUT_S}s"),
        "--heartbeat-interval",
        HEARTBEAT_INTERVAL,
    ]);
    cluster.address = format!("{}:{PORT}", hosts.coordinator_address);
    cluster.listen = Some(format!("0.0.0.0:{PORT}"));
    cluster.coordinator_netns = Some(hosts.coordinator.clone());
    cluster.coordinator_env = vec![
        ("DROVER_TOKEN".into(), CLIENT_TOKEN.into()),
        ("DROVER_WORKER_TOKEN".into(), WORKER_TOKEN.into()),
    ];
    let mut chaos = Chaos {
        cluster,
        hosts,
        started: Instant::now(),
        injected: BTreeMap::new(),
        past_timeout: 0,
        rejoin_after_heal: Vec::new(),
    };
    chaos.cluster.start_coordinator().await;
    for i in 1..=WORKERS {
        chaos.start_worker(i);
    }
    chaos.cluster.wait_for_workers(WORKERS).await;

    let lines: Vec<String> = (0..jobs).map(|_| recording_job(JOB_SECONDS)).collect();
    let file = chaos.cluster.job_file("chaos.jsonl", &lines);
    let submitted = chaos.cluster.cli(&["submit", path_str(&file)]);
    assert!(
        submitted.status.success(),
        "submit failed: {}",
        stderr_of(&submitted)
    );
    let batch: u64 = stdout_of(&submitted)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("submit printed no batch id: {}", stdout_of(&submitted)));
    chaos.say(&format!(
        "batch {batch}: {jobs} jobs on {WORKERS} workers × {SLOTS} slots, seed {seed}"
    ));

    // Faults one after another, each healed before the next, until the batch is done. Each
    // round of the deck holds every kind once, in a seeded order.
    let mut rng = StdRng::seed_from_u64(seed);
    let mut deck: Vec<Fault> = Vec::new();
    let info = loop {
        if let Some(info) = chaos.batch(batch).await.filter(|info| info.done) {
            break info;
        }
        assert!(
            chaos.started.elapsed() < RUN_LIMIT,
            "the batch did not finish within {RUN_LIMIT:?}; last seen: {:?}\ncoordinator log tail:\n{}",
            chaos.batch(batch).await,
            tail(&chaos.cluster.coordinator_log(), 40)
        );
        if deck.is_empty() {
            deck = FAULTS.to_vec();
            deck.shuffle(&mut rng);
        }
        let fault = deck.pop().unwrap();
        chaos.inject(fault, &mut rng).await;
        let gap = uniform(&mut rng, 0.5, 2.5);
        tokio::time::sleep(gap).await;
    };
    let took = chaos.started.elapsed();
    // Every fault is healed: the whole fleet is back.
    chaos.cluster.wait_for_workers(WORKERS).await;

    let evidence = gather(&chaos, batch);
    let mut completed = 0;
    let mut recorded_twice = Vec::new();
    let mut missing = Vec::new();
    let mut ran_more_than_once = 0;
    let mut runs = 0;
    // Each attempt appends its number. The same number twice is an attempt cut off by a
    // coordinator restart (starts are not journaled, so it is not on record) and the next one.
    let mut numbers_reused = 0;
    assert_eq!(
        evidence.total, jobs as u64,
        "the ledger lost jobs of the batch"
    );
    let first = evidence.first_job;
    for job in first..first + jobs as u64 {
        let logged = evidence.logged.get(&job).map_or(&[][..], Vec::as_slice);
        if logged.len() > 1 {
            recorded_twice.push(job);
        }
        let mut attempts: Vec<u32> =
            std::fs::read_to_string(chaos.cluster.out_dir().join(job.to_string()))
                .unwrap_or_default()
                .lines()
                .filter_map(|line| line.trim().parse().ok())
                .collect();
        match logged.first() {
            Some(entry)
                if entry.state == drover::job::JobState::Succeeded && !attempts.is_empty() =>
            {
                completed += 1
            }
            _ => missing.push(job),
        }
        runs += attempts.len();
        if attempts.len() > 1 {
            ran_more_than_once += 1;
        }
        attempts.sort_unstable();
        if attempts.windows(2).any(|pair| pair[0] == pair[1]) {
            numbers_reused += 1;
        }
    }
    // The ledger refuses a second record of a finished job, and says so: that must never be needed.
    let refused_records = chaos
        .cluster
        .coordinator_log()
        .matches("second record refused")
        .count();

    let mut report = String::new();
    report.push_str(&format!(
        "chaos suite: seed {seed}, {jobs} jobs of {JOB_SECONDS}s, {WORKERS} workers × {SLOTS} slots \
         on their own network hosts, heartbeat timeout {HEARTBEAT_TIMEOUT_S}s; took {:.0}s\n",
        took.as_secs_f64()
    ));
    let total: usize = chaos.injected.values().sum();
    report.push_str(&format!(
        "faults injected: {total} ({} freezes or cuts outlasted the heartbeat timeout)\n",
        chaos.past_timeout
    ));
    for fault in FAULTS {
        report.push_str(&format!(
            "  {:>3}  {}\n",
            chaos.injected.get(&fault).copied().unwrap_or(0),
            fault.describe()
        ));
    }
    report.push_str(&format!(
        "completed: {completed} of {jobs}\nrecorded twice: {} (second records refused by the ledger: {refused_records})\nran more than once: {ran_more_than_once} \
         ({runs} runs in all; {numbers_reused} jobs ran an attempt number twice, across a coordinator restart)\nattempts lost with their worker: {}\nduplicate results turned away: {}\n",
        recorded_twice.len(),
        evidence.lost_attempts,
        evidence.duplicates
    ));
    if let Some(slowest) = chaos.rejoin_after_heal.iter().max() {
        report.push_str(&format!(
            "workers declared lost registered again within {slowest:.1?} of their link healing\n"
        ));
    }
    eprintln!("\n{report}");
    let _ = std::fs::write(
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("chaos.txt"),
        &report,
    );

    assert!(
        info.succeeded == jobs as u64 && info.failed == 0 && info.cancelled == 0,
        "the batch ended {info:?}"
    );
    assert!(
        missing.is_empty(),
        "{} jobs not completed, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    assert!(
        recorded_twice.is_empty(),
        "jobs recorded twice: {recorded_twice:?}"
    );
    assert_eq!(
        refused_records, 0,
        "the ledger was asked to record a finished job again"
    );

    assert_eq!(
        evidence.logged.len(),
        jobs,
        "the completion log holds jobs outside the batch"
    );
    for fault in FAULTS {
        assert!(
            chaos.injected.contains_key(&fault),
            "the batch finished before {:?} was injected: make the jobs longer",
            fault
        );
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
