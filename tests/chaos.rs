//! The chaos suite: a coordinator and workers on hosts of their own (network namespaces joined by
//! veth links), 10,000 jobs, and a seeded random sequence of faults while they run: workers
//! killed and frozen, links cut without a FIN or RST and healed (some only after the worker was
//! declared lost), lossy links, the coordinator killed and restarted, the coordinator frozen
//! (no worker may be declared lost for its own stall), and lying workers that forge results and
//! claims for attempts they were never given.
//!
//! Afterwards the completion log, the ledger and the jobs' own outputs (each attempt appends the
//! name of its scratch directory, which holds its number and lease, to `out/<job id>`) must
//! agree: every job completed, none recorded twice, each recorded from an attempt that ran, no
//! attempt ran twice. The report (also
//! written to `target/tmp/chaos.txt`, which `.ci/run` prints) counts the faults, the jobs that ran
//! more than once and the duplicate results the coordinator turned away.
//!
//! The suite runs twice, one run after the other: with one coordinator on SQLite, and with two
//! coordinators on one PostgreSQL ledger (see chaos/ha_run.rs), where the coordinator faults are
//! the leader killed (the standby takes over), the standby killed, and the leader frozen (past
//! its lease the standby takes over, and the thawed one steps down). Its report is
//! `target/tmp/chaos-ha.txt`.
//!
//! `DROVER_CHAOS_SEED` and `DROVER_CHAOS_JOBS` replay another sequence or size. Namespaces need
//! root; where the machine forbids them the test says `SKIPPED` and why. CI runs as root.

mod common;
#[path = "chaos/evidence.rs"]
mod evidence;
#[path = "chaos/ha_run.rs"]
mod ha_run;
#[path = "chaos/hosts.rs"]
mod hosts;

use common::*;
use drover::job::JobState;
use evidence::gather;
use ha_run::HaRun;
use hosts::{BuildError, Hosts};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const DEFAULT_SEED: u64 = 20_261_126;
const DEFAULT_JOBS: usize = 10_000;
const WORKERS: usize = 4;
const SLOTS: u32 = 8;
const PORT: u16 = 7700;
/// Short, so that losses are noticed within the test's time; a lossy link may still be taken for
/// a lost one now and then, which is one more fault to survive.
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(3);
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
    /// Two coordinators: SIGKILL the leader; the standby takes over; the killed one is started
    /// again as a standby.
    KillLeader,
    /// Two coordinators: SIGKILL the standby, start it again.
    KillStandby,
    /// SIGSTOP the coordinator (the leader, of two) for up to twice the heartbeat timeout, then
    /// SIGCONT: no worker may be declared lost for the coordinator's own stall. Of two, one
    /// frozen past its lease is replaced, and must step down when thawed.
    FreezeCoordinator,
    /// A worker that lies: it claims to carry attempts of running jobs, reports forged results
    /// (successes among them, some naming outputs far from their attempt's prefix) for jobs it
    /// was never given, and leaves without running what it was given.
    LyingWorker,
}

/// The faults of the run with one coordinator on SQLite.
const FAULTS: [Fault; 9] = [
    Fault::KillWorker,
    Fault::FreezeWorker,
    Fault::LinkDown,
    Fault::FirewallCut,
    Fault::HealAfterLost,
    Fault::LossyLink,
    Fault::RestartCoordinator,
    Fault::FreezeCoordinator,
    Fault::LyingWorker,
];

/// The faults of the run with two coordinators on PostgreSQL.
const HA_FAULTS: [Fault; 10] = [
    Fault::KillWorker,
    Fault::FreezeWorker,
    Fault::LinkDown,
    Fault::FirewallCut,
    Fault::HealAfterLost,
    Fault::LossyLink,
    Fault::KillLeader,
    Fault::KillStandby,
    Fault::FreezeCoordinator,
    Fault::LyingWorker,
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
            Fault::KillLeader => "leader killed (SIGKILL), the standby took over",
            Fault::KillStandby => "standby killed (SIGKILL) and restarted",
            Fault::FreezeCoordinator => "coordinator frozen (SIGSTOP) and thawed",
            Fault::LyingWorker => "worker forging results and claims for attempts not its own",
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
    // Dropped in this order: the processes end before their namespaces are deleted.
    cluster: Cluster,
    /// The run with two coordinators on PostgreSQL: they (the cluster's own coordinator is not
    /// started then, and its address is their list) and their database.
    ha: Option<HaRun>,
    hosts: Hosts,
    /// The worker role's secret: workers dial from other hosts, so they need one.
    worker_token: String,
    started: Instant,
    /// Faults injected, by kind.
    injected: BTreeMap<Fault, usize>,
    /// How long workers declared lost took to register again once their link healed.
    rejoin_after_heal: Vec<Duration>,
    /// The batch's job ids, once it is submitted: what a lying worker lies about.
    jobs: std::ops::Range<u64>,
    /// Forged results and claims sent by lying workers.
    lies_told: usize,
}

impl Chaos {
    fn say(&self, what: &str) {
        eprintln!("[{:6.1}s] {what}", self.started.elapsed().as_secs_f64());
    }

    fn start_worker(&mut self, i: usize) {
        let netns = self.hosts.workers[i - 1].clone();
        let coordinator = match &self.ha {
            Some(ha) => ha.list(),
            None => Hosts::coordinator_for(i, PORT),
        };
        self.cluster.start_worker_in(
            &netns,
            &coordinator,
            &worker_name(i),
            SLOTS,
            &[("DROVER_WORKER_TOKEN", &self.worker_token)],
        );
    }

    /// A batch's progress from a fresh connection: the coordinator may have restarted.
    async fn batch(&self, batch: u64) -> Option<drover::status::BatchInfo> {
        tokio::time::timeout(Duration::from_secs(5), async {
            self.cluster.try_client().await?.batch(batch).await.ok()
        })
        .await
        .ok()
        .flatten()
    }

    /// The workers the coordinator lists, from a fresh connection.
    async fn workers(&self) -> Option<Vec<drover::status::WorkerInfo>> {
        tokio::time::timeout(Duration::from_secs(5), async {
            self.cluster.try_client().await?.workers().await.ok()
        })
        .await
        .ok()
        .flatten()
    }

    /// Waits until every worker is registered, each by its name: the faults are all healed.
    async fn wait_fleet(&self) {
        wait_for(
            Duration::from_secs(60),
            "every worker to be registered again",
            || async move {
                let workers = self.workers().await?;
                (1..=WORKERS)
                    .all(|i| {
                        workers.iter().any(|worker| {
                            worker.name == worker_name(i) && worker.gone_at_ms.is_none()
                        })
                    })
                    .then_some(())
            },
        )
        .await;
    }

    /// Waits until the coordinator lists worker `i` as lost at or after `since_ms`.
    async fn wait_declared_lost(&self, i: usize, since_ms: u64) {
        let name = worker_name(i);
        let name = &name;
        wait_for(
            Duration::from_secs(60),
            "the cut-off worker to be declared lost",
            || async move {
                self.workers()
                    .await?
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
                self.workers().await?.iter().find_map(|worker| {
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
        let timeout = HEARTBEAT_TIMEOUT.as_secs_f64();
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
                self.say(&format!("SIGSTOP {} for {hold:.1?}", worker_name(i)));
                self.cluster.signal_worker(&worker_name(i), libc::SIGSTOP);
                tokio::time::sleep(hold).await;
                self.cluster.signal_worker(&worker_name(i), libc::SIGCONT);
            }
            Fault::LinkDown => {
                let hold = uniform(rng, 0.5, 2.0 * timeout);
                self.say(&format!("link of {} down for {hold:.1?}", worker_name(i)));
                self.hosts.link_down(i).unwrap();
                tokio::time::sleep(hold).await;
                self.hosts.link_up(i).unwrap();
            }
            Fault::FirewallCut => {
                let hold = uniform(rng, 0.5, 2.0 * timeout);
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
                self.cluster.restart_coordinator(pause).await;
            }
            Fault::KillLeader => {
                let pause = uniform(rng, 0.2, 3.0);
                self.say(&format!(
                    "SIGKILL the leader, start it again as a standby after {pause:.1?}"
                ));
                let ha = self.ha.as_mut().expect("two coordinators");
                let took = ha.kill_leader(pause).await;
                self.say(&format!("the standby led {took:.1?} after the kill"));
            }
            Fault::KillStandby => {
                let pause = uniform(rng, 0.2, 3.0);
                self.say(&format!("SIGKILL the standby, restart in {pause:.1?}"));
                let ha = self.ha.as_mut().expect("two coordinators");
                ha.kill_standby(pause).await;
            }
            Fault::FreezeCoordinator if self.ha.is_some() => {
                let hold = uniform(rng, 0.5, 2.0 * timeout);
                self.say(&format!("SIGSTOP the leader for {hold:.1?}"));
                let since = now_ms();
                let ha = self.ha.as_mut().expect("two coordinators");
                let kept = ha.freeze_leader(hold).await;
                if kept {
                    self.check_none_lost_since(since).await;
                } else {
                    self.say("the standby took over; the thawed leader stepped down");
                }
            }
            Fault::LyingWorker => self.lie(rng).await,
            Fault::FreezeCoordinator => {
                let hold = uniform(rng, 0.5, 2.0 * timeout);
                self.say(&format!("SIGSTOP the coordinator for {hold:.1?}"));
                let since = now_ms();
                self.cluster.signal_coordinator(libc::SIGSTOP);
                tokio::time::sleep(hold).await;
                self.cluster.signal_coordinator(libc::SIGCONT);
                self.check_none_lost_since(since).await;
            }
        }
    }

    /// A whole heartbeat timeout after a coordinator's thaw, nobody may have been declared lost
    /// since `since` (the freeze) for its stall.
    async fn check_none_lost_since(&self, since: u64) {
        tokio::time::sleep(HEARTBEAT_TIMEOUT + Duration::from_millis(500)).await;
        let workers = wait_for(
            Duration::from_secs(30),
            "the thawed coordinator to answer",
            || async { self.workers().await },
        )
        .await;
        let lost: Vec<&str> = workers
            .iter()
            .filter(|worker| worker.gone_at_ms.is_some_and(|at| at >= since))
            .map(|worker| worker.name.as_str())
            .collect();
        assert!(
            lost.is_empty(),
            "workers declared lost for the coordinator's own stall: {lost:?}"
        );
    }

    /// What the coordinators logged, all of them.
    fn coordinator_log(&self) -> String {
        match &self.ha {
            Some(ha) => ha.logs(),
            None => self.cluster.coordinator_log(),
        }
    }
}

impl Chaos {
    /// A worker that registers and lies about attempts it was never given, then leaves. None
    /// of it may change a job's course: the checks at the end find any forged success recorded
    /// (its lease is no attempt's that ran) and any job lost or failed for it.
    async fn lie(&mut self, rng: &mut StdRng) {
        use drover::job::{AttemptResult, CarriedAttempt, Outcome, OutputObject};
        use drover::net::connect::{connect, next};
        use drover::net::protocol::{FromCoordinator, Role, ToCoordinator};
        use futures::SinkExt;
        let (jobs, told) = (self.jobs.clone(), rng.gen_range(10..=40));
        let forged = |rng: &mut StdRng| {
            let job = rng.gen_range(jobs.clone());
            let outcome = *[Outcome::Succeeded, Outcome::Failed, Outcome::TimedOut]
                .choose(rng)
                .unwrap();
            AttemptResult {
                lease: rng.gen(),
                job,
                attempt: rng.gen_range(1..=3),
                outcome,
                exit_code: Some(0),
                started_at_ms: now_ms(),
                duration_ms: 1,
                output_tail: "forged".into(),
                result: Vec::new(),
                error: None,
                outputs: rng
                    .gen_bool(0.5)
                    .then(|| OutputObject {
                        url: format!("s3://elsewhere/{job}/forged"),
                        size: 1,
                        etag: "forged".into(),
                    })
                    .into_iter()
                    .collect(),
                // A failure it says no attempt would escape is refused all the same.
                permanent: rng.gen_bool(0.5),
                // Any epoch: a lease of an earlier run is checked as any other.
                epoch: rng.gen_range(0..4),
            }
        };
        let claims: Vec<CarriedAttempt> = (0..told / 2)
            .map(|_| CarriedAttempt {
                lease: rng.gen(),
                job: rng.gen_range(jobs.clone()),
                attempt: 1,
                slots: 1,
                epoch: rng.gen_range(0..4),
            })
            .collect();
        let mut later: Vec<AttemptResult> = (0..told - claims.len()).map(|_| forged(rng)).collect();
        let at_registration = later.split_off(later.len() / 2);
        self.say(&format!(
            "a lying worker: {} claimed attempts and {} forged results",
            claims.len(),
            at_registration.len() + later.len()
        ));
        self.lies_told += told;
        let secret = drover::net::auth::Secret::from_text(&self.worker_token);
        let address = match &mut self.ha {
            Some(ha) => ha.leader_address().await,
            None => self.cluster.address.clone(),
        };
        let mut liar = connect(&address, Role::Worker, secret.as_ref())
            .await
            .expect("the lying worker connects");
        liar.send(ToCoordinator::Register {
            name: "liar".into(),
            instance: rand::random(),
            slots: 2,
            labels: Vec::new(),
            carried: claims,
            results: at_registration,
            member: None,
        })
        .await
        .expect("the lying worker registers");
        liar.send(ToCoordinator::Results(later))
            .await
            .expect("the lying worker reports");
        // It takes what it is given, runs none of it, and leaves: those jobs run elsewhere.
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while let Ok(message) = next(&mut liar).await {
                if let FromCoordinator::Assign(given) = message {
                    self.say(&format!("the lying worker was given {} jobs", given.len()));
                }
            }
        })
        .await;
    }
}

/// The job: each attempt appends its scratch directory's name (`job-J-attempt-N-LEASE`, unique
/// per attempt) to `out/<job id>`, then sleeps.
fn job_line() -> String {
    format!(
        r#"{{"cmd": ["sh", "-c", "echo \"${{DROVER_SCRATCH##*/}}\" >> \"$OUT/$DROVER_JOB_ID\"; sleep {JOB_SECONDS}"]}}"#
    )
}

/// An attempt as its output line names it: (attempt number, lease).
fn parse_attempt(job: u64, line: &str) -> Option<(u32, String)> {
    let rest = line.trim().strip_prefix(&format!("job-{job}-attempt-"))?;
    let (number, lease) = rest.split_once('-')?;
    Some((number.parse().ok()?, lease.to_string()))
}

fn random_token() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Says a line outside the test harness's capture, so it shows in `cargo test` and on CI, and
/// leaves it in `target/tmp/chaos.txt` for `.ci/run` to print.
fn announce(file: &str, text: &str) {
    let _ = std::io::stderr().write_all(format!("\n{text}\n").as_bytes());
    let _ = std::fs::write(
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(file),
        text,
    );
}

/// The two runs share the machine's namespace names and its two cores: one at a time.
static ONE_RUN_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_jobs_through_random_faults_complete_once_each() {
    let _alone = ONE_RUN_AT_A_TIME.lock().await;
    run(Ledger::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_coordinators_on_postgres_through_random_faults_and_failovers_complete_once_each() {
    let _alone = ONE_RUN_AT_A_TIME.lock().await;
    run(Ledger::Postgres).await;
}

/// Which ledger a run's coordinators keep.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ledger {
    /// One coordinator, SQLite in its data directory.
    Sqlite,
    /// Two coordinators on one PostgreSQL database.
    Postgres,
}

impl Ledger {
    /// Where the run's report goes, under `target/tmp`.
    fn report_file(self) -> &'static str {
        match self {
            Ledger::Sqlite => "chaos.txt",
            Ledger::Postgres => "chaos-ha.txt",
        }
    }

    fn faults(self) -> &'static [Fault] {
        match self {
            Ledger::Sqlite => &FAULTS,
            Ledger::Postgres => &HA_FAULTS,
        }
    }
}

async fn run(ledger: Ledger) {
    let seed: u64 = env_or("DROVER_CHAOS_SEED", DEFAULT_SEED);
    let jobs: usize = env_or("DROVER_CHAOS_JOBS", DEFAULT_JOBS);
    let hosts = match Hosts::build(WORKERS) {
        Ok(hosts) => hosts,
        Err(BuildError::Forbidden(reason)) => {
            announce(
                ledger.report_file(),
                &format!(
                    "chaos suite SKIPPED: this machine does not allow network namespaces ({reason})"
                ),
            );
            return;
        }
        Err(BuildError::Failed(reason)) => panic!(
            "cannot build the network hosts: {reason}\n(the suite needs iproute2 and nftables; \
             .ci/run installs them)"
        ),
    };
    let coordinator_args = [
        "--heartbeat-timeout".to_string(),
        format!("{}ms", HEARTBEAT_TIMEOUT.as_millis()),
        "--heartbeat-interval".to_string(),
        HEARTBEAT_INTERVAL.to_string(),
    ];
    let args: Vec<&str> = coordinator_args.iter().map(String::as_str).collect();
    let mut cluster = Cluster::new(&args);
    cluster.address = format!("{}:{PORT}", hosts.coordinator_address);
    cluster.listen = Some(format!("0.0.0.0:{PORT}"));
    cluster.coordinator_netns = Some(hosts.coordinator.clone());
    // Fresh secrets: a run that reached another run's coordinator would be refused.
    let worker_token = random_token();
    cluster.coordinator_env = vec![
        ("DROVER_TOKEN".into(), random_token()),
        ("DROVER_WORKER_TOKEN".into(), worker_token.clone()),
    ];
    let ha = match ledger {
        Ledger::Sqlite => None,
        Ledger::Postgres => {
            // Workers reach the coordinators at the address they advertise (the test's).
            hosts
                .route_workers_to(hosts.coordinator_address)
                .expect("routes to the coordinators' advertised address");
            let ha = HaRun::start(
                &hosts,
                cluster.dir.path(),
                PORT,
                &cluster.coordinator_env,
                &coordinator_args,
            )
            .await;
            cluster.address = ha.list();
            Some(ha)
        }
    };
    let mut chaos = Chaos {
        cluster,
        ha,
        hosts,
        worker_token,
        started: Instant::now(),
        injected: BTreeMap::new(),
        rejoin_after_heal: Vec::new(),
        jobs: 0..0,
        lies_told: 0,
    };
    if chaos.ha.is_none() {
        chaos.cluster.start_coordinator().await;
    }
    for i in 1..=WORKERS {
        chaos.start_worker(i);
    }
    chaos.wait_fleet().await;

    let lines: Vec<String> = (0..jobs).map(|_| job_line()).collect();
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
    // A fresh ledger numbers jobs from 1 (checked against the ledger at the end).
    chaos.jobs = 1..jobs as u64 + 1;
    chaos.say(&format!(
        "batch {batch}: {jobs} jobs on {WORKERS} workers × {SLOTS} slots, seed {seed}"
    ));

    // Faults one after another, each healed, and the fleet whole again, before the next, until
    // the batch is done. Each round of the deck holds every kind once, in a seeded order.
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
            tail(&chaos.coordinator_log(), 40)
        );
        if deck.is_empty() {
            deck = ledger.faults().to_vec();
            deck.shuffle(&mut rng);
        }
        let fault = deck.pop().unwrap();
        chaos.inject(fault, &mut rng).await;
        if let Some(ha) = &mut chaos.ha {
            ha.heal().await;
        }
        chaos.wait_fleet().await;
        let gap = uniform(&mut rng, 0.5, 2.5);
        tokio::time::sleep(gap).await;
    };
    let took = chaos.started.elapsed();
    chaos.wait_fleet().await;

    let evidence = gather(&chaos, batch);
    assert_eq!(
        evidence.total, jobs as u64,
        "the ledger holds {} jobs of the batch, not {jobs}",
        evidence.total
    );
    let mut completed = 0;
    let mut listed_twice = Vec::new();
    let mut missing = Vec::new();
    let mut ran_more_than_once = 0;
    let mut runs = 0;
    let mut unreadable = Vec::new();
    // A lease twice in one job's output is one attempt run twice.
    let mut attempts_run_twice = Vec::new();
    // The same number under two leases: an attempt cut off by a coordinator restart before its
    // start reached the disk, and the job's next one.
    let mut numbers_reused = 0;
    // Jobs recorded from an attempt that never ran: a forged result taken for the job's.
    let mut recorded_unrun = Vec::new();
    let first = evidence.first_job;
    for job in first..first + jobs as u64 {
        let logged = evidence.logged.get(&job).map_or(&[][..], Vec::as_slice);
        if logged.len() > 1 {
            listed_twice.push(job);
        }
        let lines = chaos.cluster.output_lines(job);
        let attempts: Vec<(u32, String)> = lines
            .iter()
            .filter_map(|line| {
                let parsed = parse_attempt(job, line);
                if parsed.is_none() {
                    unreadable.push((job, line.clone()));
                }
                parsed
            })
            .collect();
        match logged.first() {
            Some(entry) if entry.state == JobState::Succeeded && !attempts.is_empty() => {
                completed += 1
            }
            _ => missing.push(job),
        }
        runs += attempts.len();
        if attempts.len() > 1 {
            ran_more_than_once += 1;
        }
        let leases: HashSet<&str> = attempts.iter().map(|(_, lease)| lease.as_str()).collect();
        if leases.len() < attempts.len() {
            attempts_run_twice.push((job, lines.clone()));
        }
        let recorded = evidence
            .recorded
            .get(&job)
            .map(|lease| format!("{lease:x}"));
        if recorded.is_some_and(|lease| !leases.contains(lease.as_str())) {
            recorded_unrun.push((job, evidence.recorded[&job], lines.clone()));
        }
        let numbers: HashSet<u32> = attempts.iter().map(|(number, _)| *number).collect();
        if numbers.len() < leases.len() {
            numbers_reused += 1;
        }
    }
    // The ledger's guard refuses a second record of a finished job and logs it: never needed.
    let coordinator_log = chaos.coordinator_log();
    // The PostgreSQL store's guard says it in the same words.
    let refused_records = coordinator_log
        .matches(drover::storage::sqlite::SECOND_RECORD_REFUSED)
        .count();
    let workers_lost = coordinator_log.matches("worker lost").count();
    let succeeded_jobs = evidence
        .logged
        .values()
        .filter(|entries| entries[0].state == JobState::Succeeded)
        .count();

    let coordinators = match ledger {
        Ledger::Sqlite => "one coordinator on SQLite".to_string(),
        Ledger::Postgres => format!(
            "two coordinators on PostgreSQL (lease TTL {})",
            common::ha::LEASE_TTL
        ),
    };
    let mut report = format!(
        "chaos suite: seed {seed}, {jobs} jobs of {JOB_SECONDS}s, {WORKERS} workers × {SLOTS} slots \
         on network hosts of their own, {coordinators}, heartbeat timeout \
         {HEARTBEAT_TIMEOUT:?}; took {:.0}s\n",
        took.as_secs_f64()
    );
    let total: usize = chaos.injected.values().sum();
    report.push_str(&format!(
        "faults injected: {total}; workers declared lost: {workers_lost}\n"
    ));
    for &fault in ledger.faults() {
        report.push_str(&format!(
            "  {:>3}  {}\n",
            chaos.injected.get(&fault).copied().unwrap_or(0),
            fault.describe()
        ));
    }
    report.push_str(&format!(
        "completed: {completed} of {jobs}\n\
         recorded twice: {} (the batch counts {} succeeded for {succeeded_jobs} succeeded jobs; \
         the ledger refused {refused_records} second records; {} jobs listed twice in the log)\n\
         ran more than once: {ran_more_than_once} ({runs} runs in all; {} attempts ran twice; \
         {numbers_reused} jobs got an attempt number again after a coordinator restart)\n\
         recorded from an attempt that never ran: {}\n\
         attempts lost with their worker: {}\n\
         duplicate results turned away: {}\n\
         forged results and claims from lying workers: {}\n",
        listed_twice.len()
            + refused_records
            + (info.succeeded as usize).saturating_sub(succeeded_jobs),
        info.succeeded,
        listed_twice.len(),
        attempts_run_twice.len(),
        recorded_unrun.len(),
        evidence.lost_attempts,
        evidence.duplicates,
        chaos.lies_told
    ));
    if let Some(slowest) = chaos.rejoin_after_heal.iter().max() {
        report.push_str(&format!(
            "workers declared lost registered again within {slowest:.1?} of their link healing\n"
        ));
    }
    if let Some(ha) = &chaos.ha {
        let takeovers: Vec<String> = ha
            .takeovers
            .iter()
            .map(|took| format!("{:.2}s", took.as_secs_f64()))
            .collect();
        report.push_str(&format!(
            "leader killed: the standby named itself leader after {}; thawed leaders that \
             stepped down: {}\n",
            takeovers.join(", "),
            ha.step_downs
        ));
    }
    announce(ledger.report_file(), &report);

    assert!(
        info.succeeded == jobs as u64 && info.failed == 0 && info.cancelled == 0,
        "the batch ended {info:?}"
    );
    assert_eq!(
        succeeded_jobs, jobs,
        "the batch's count and the completion log disagree"
    );
    assert!(
        missing.is_empty(),
        "{} jobs not completed, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    assert!(
        listed_twice.is_empty(),
        "jobs listed twice in the completion log: {listed_twice:?}"
    );
    assert_eq!(
        refused_records, 0,
        "the ledger was asked to record a finished job again"
    );
    assert!(
        attempts_run_twice.is_empty(),
        "one attempt ran twice: {:?}",
        &attempts_run_twice[..attempts_run_twice.len().min(10)]
    );
    assert!(
        recorded_unrun.is_empty(),
        "jobs recorded from an attempt that never ran (job, lease, outputs): {:?}",
        &recorded_unrun[..recorded_unrun.len().min(10)]
    );
    assert_eq!(
        evidence.first_job, chaos.jobs.start,
        "the lying workers lied about other jobs than the batch's"
    );
    assert!(
        unreadable.is_empty(),
        "output lines no attempt wrote: {:?}",
        &unreadable[..unreadable.len().min(10)]
    );
    assert_eq!(
        evidence.logged.len(),
        jobs,
        "the completion log lists jobs outside the batch"
    );
    for &fault in ledger.faults() {
        assert!(
            chaos.injected.contains_key(&fault),
            "the batch finished before {fault:?} was injected: give more jobs (DROVER_CHAOS_JOBS)"
        );
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
