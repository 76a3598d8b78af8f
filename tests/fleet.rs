//! The elastic fleet with the `process` provider: a real coordinator whose pools start and stop
//! real `drover-worker` processes as demand asks. A pool's command writes its process id to a
//! file before it becomes the worker, so a test can find (and kill) the fleet's workers.

mod common;

use common::{wait_for, Cluster, COORDINATOR, WORKER};
use drover::job::{now_ms, JobSpec, JobState};
use drover::net::protocol::{ClientRequest, ClientResponse};
use drover::status::PoolInfo;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A coordinator whose `drover.toml` has one `[[pool]]` named `cpu` with these lines, whose
/// workers run `command` (the worker binary by default).
async fn fleet(pool_lines: &str, command: Option<&str>) -> Cluster {
    let mut cluster = Cluster::new(&[]);
    let pids = pids_file(&cluster);
    let program = command.unwrap_or(WORKER);
    // `exec` keeps the process id: the one written is the worker's (or the command's).
    let command = format!("echo $$ >> '{}'; exec {program}", pids.display());
    let config = format!(
        "[[pool]]\nname = \"cpu\"\nprovider = \"process\"\n{pool_lines}\n\
         [pool.process]\ncommand = [\"sh\", \"-c\", {command:?}]\n"
    );
    let path = cluster.dir.path().join("drover.toml");
    std::fs::write(&path, config).unwrap();
    let scratch = cluster.dir.path().join("scratch");
    cluster.coordinator_env.extend([
        ("DROVER_CONFIG".to_string(), path.display().to_string()),
        // Inherited by the pool's workers.
        (
            "DROVER_SCRATCH_DIR".to_string(),
            scratch.display().to_string(),
        ),
        ("OUT".to_string(), cluster.out_dir().display().to_string()),
    ]);
    cluster.start_coordinator().await;
    cluster
}

fn pids_file(cluster: &Cluster) -> PathBuf {
    cluster.dir.path().join("pids")
}

/// The process ids the pool's commands wrote, in the order they started.
fn pids(cluster: &Cluster) -> Vec<i32> {
    std::fs::read_to_string(pids_file(cluster))
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.trim().parse().ok())
        .collect()
}

/// True while a process of that id exists (reaped children do not).
fn alive(pid: i32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// The pool as the coordinator's Fleet counts it, through the binary protocol (`drover pools`).
async fn pool(cluster: &Cluster) -> Option<PoolInfo> {
    let mut client = cluster.try_client().await?;
    match client.request(ClientRequest::Pools).await.ok()? {
        ClientResponse::Pools(pools) => pools.into_iter().find(|pool| pool.name == "cpu"),
        other => panic!("not an answer about pools: {other:?}"),
    }
}

async fn wait_pool(
    cluster: &Cluster,
    within: Duration,
    what: &str,
    done: impl Fn(&PoolInfo) -> bool,
) -> PoolInfo {
    let done = &done;
    wait_for(within, what, || async move {
        pool(cluster).await.filter(|pool| done(pool))
    })
    .await
}

fn sleeps(count: usize, millis: u64) -> Vec<JobSpec> {
    (0..count)
        .map(|_| JobSpec::call("sleep", millis.to_string().into_bytes()))
        .collect()
}

/// Says a line outside the test harness's capture, and leaves it in `target/tmp/fleet.txt` for
/// `.ci/run` to print.
fn report(text: &str) {
    let _ = std::io::stderr().write_all(format!("\n{text}\n").as_bytes());
    let _ = std::fs::write(
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("fleet.txt"),
        text,
    );
}

/// Item (a) and the figure: a hundred short jobs scale a pool from nothing to its max, every
/// job succeeds on its first attempt (no worker is stopped under a job), and once the pool's
/// workers are idle past the idle timeout they drain, exit and are gone: the pool is back at 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_scales_a_pool_from_zero_to_max_and_back_and_every_job_runs_once() {
    let cluster = fleet(
        "max = 4\nidle_timeout = \"1s\"\nboot_timeout = \"30s\"",
        None,
    )
    .await;
    let empty = wait_pool(&cluster, Duration::from_secs(10), "the pool", |_| true).await;
    assert_eq!(
        (empty.min, empty.max, empty.desired, empty.launched),
        (0, 4, 0, 0)
    );

    let mut client = cluster.client().await;
    let submitted_at = Instant::now();
    let batch = client.submit("hundred", sleeps(100, 100)).await.unwrap();
    // Every worker of the pool busy at once, as the workers list has it.
    wait_for(Duration::from_secs(30), "every worker busy", || async {
        let mut workers = cluster.try_client().await?.workers().await.ok()?;
        workers.retain(|worker| worker.gone_at_ms.is_none() && worker.running > 0);
        (workers.len() == 4).then_some(())
    })
    .await;
    let scale_up = submitted_at.elapsed();
    let full = pool(&cluster).await.unwrap();
    assert_eq!(
        (full.desired, full.launched, full.failed_launches),
        (4, 4, 0)
    );

    let done = common::wait_batch_done(&mut client, batch.batch, Duration::from_secs(60)).await;
    assert_eq!(done.succeeded, 100, "{done:?}");
    let jobs = client.jobs(Some(batch.batch), None).await.unwrap();
    assert_eq!(jobs.len(), 100);
    for job in &jobs {
        assert_eq!(job.state, JobState::Succeeded, "{job:?}");
        assert_eq!(
            job.attempts, 1,
            "every job runs once: no machine is terminated under a job ({job:?})"
        );
    }
    let last_result_ms = jobs
        .iter()
        .filter_map(|job| job.finished_at_ms)
        .max()
        .unwrap();

    // Idle past the idle timeout: drained, gone, terminated.
    let back = wait_pool(
        &cluster,
        Duration::from_secs(30),
        "the pool back at 0",
        |pool| pool.idle + pool.busy + pool.booting == 0 && pool.terminated == pool.launched,
    )
    .await;
    let scale_in_ms = now_ms().saturating_sub(last_result_ms);
    assert_eq!(back.desired, 0);
    assert_eq!(back.launched, 4, "{back:?}");
    assert_eq!(back.terminated, 4, "{back:?}");
    assert_eq!(back.failed_launches, 0);
    assert_eq!(back.last_error, None);
    let log = cluster.coordinator_log();
    assert_eq!(
        log.matches("the coordinator asked: pool cpu scales in: idle for 1s")
            .count(),
        4,
        "each worker drained, saying why:\n{log}"
    );
    assert_eq!(
        log.matches("drained: every job finished and reported")
            .count(),
        4
    );
    let started = pids(&cluster);
    assert_eq!(started.len(), 4);
    wait_for(
        Duration::from_secs(10),
        "the workers' processes to exit",
        || async { started.iter().all(|pid| !alive(*pid)).then_some(()) },
    )
    .await;

    report(&format!(
        "fleet (process provider, pool of max 4 workers of 1 slot, idle_timeout 1s): 100 jobs \
         of 100 ms submitted -> every pool worker busy in {:.2}s; last result -> pool back at \
         min (0) in {:.2}s",
        scale_up.as_secs_f64(),
        scale_in_ms as f64 / 1000.0
    ));
}

/// Item (b): a worker of the pool killed while the pool scales up is replaced, and every job
/// finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_during_scale_up_is_replaced_and_every_job_finishes() {
    let cluster = fleet(
        "max = 3\nidle_timeout = \"1s\"\nboot_timeout = \"30s\"",
        None,
    )
    .await;
    let mut client = cluster.client().await;
    let batch = client.submit("killed", sleeps(40, 200)).await.unwrap();
    wait_pool(&cluster, Duration::from_secs(30), "a busy worker", |pool| {
        pool.busy >= 1
    })
    .await;
    let first = pids(&cluster)[0];
    // SAFETY: kill(2) on a process the test's pool started; no memory is involved.
    assert_eq!(unsafe { libc::kill(first, libc::SIGKILL) }, 0);

    let replaced = wait_pool(
        &cluster,
        Duration::from_secs(30),
        "a fourth launch",
        |pool| pool.launched == 4,
    )
    .await;
    assert_eq!(replaced.failed_launches, 0);
    let done = common::wait_batch_done(&mut client, batch.batch, Duration::from_secs(60)).await;
    assert_eq!(done.succeeded, 40, "{done:?}");
    let back = wait_pool(
        &cluster,
        Duration::from_secs(30),
        "the pool back at 0",
        |pool| pool.idle + pool.busy + pool.booting == 0 && pool.terminated == pool.launched,
    )
    .await;
    assert_eq!(back.launched, 4, "one replacement, no more: {back:?}");
    assert_eq!(back.terminated, 4, "the killed one's machine too: {back:?}");
    assert!(cluster
        .coordinator_log()
        .contains("the machine's worker went away unasked"));
}

/// Item (c): a command that never registers hits the boot timeout: its launches count as
/// failed, its processes are terminated, and launches stay within the cap per minute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_that_never_registers_hits_the_boot_timeout_and_the_launch_cap() {
    let cluster = fleet(
        "max = 2\nboot_timeout = \"1s\"\nmax_launches_per_minute = 3",
        Some("sleep 600"),
    )
    .await;
    let mut client = cluster.client().await;
    client.submit("stuck", sleeps(5, 10)).await.unwrap();
    let failed = wait_pool(
        &cluster,
        Duration::from_secs(30),
        "three failed launches",
        |pool| pool.failed_launches == 3 && pool.terminated == 3 && pool.booting == 0,
    )
    .await;
    assert_eq!(failed.launched, 3);
    let error = failed.last_error.unwrap_or_default();
    assert!(
        error.contains("did not register within the boot timeout (1s); terminated"),
        "{error}"
    );
    // The commands are stopped, none left behind.
    let started = pids(&cluster);
    assert_eq!(started.len(), 3);
    wait_for(
        Duration::from_secs(10),
        "the commands to be stopped",
        || async { started.iter().all(|pid| !alive(*pid)).then_some(()) },
    )
    .await;
    // Past the backoff (4s after the third failure), the cap holds for the rest of the minute:
    // the jobs still wait, and nothing more is launched.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let capped = pool(&cluster).await.unwrap();
    assert_eq!(capped.launched, 3, "{capped:?}");
    assert_eq!(pids(&cluster).len(), 3);
}

/// Item (d), as far as processes go: a worker started for the pool by other means (a machine
/// an earlier coordinator launched) counts in the pool, is counted again by a coordinator
/// started anew once it registers there, and when idle past the idle timeout is drained: it
/// exits 0, saying why, and its machine is never terminated (it is not the provider's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registered_pool_worker_is_adopted_across_a_restart_and_drained_when_idle() {
    let mut cluster = fleet("max = 2\nidle_timeout = \"3s\"", None).await;
    cluster.start_worker("hand-1", 1, &["--pool", "cpu", "--machine-id", "hand-1"]);
    wait_pool(
        &cluster,
        Duration::from_secs(10),
        "the worker counted",
        |pool| pool.idle == 1,
    )
    .await;
    cluster.restart_coordinator(Duration::ZERO).await;
    let adopted = wait_pool(
        &cluster,
        Duration::from_secs(10),
        "the worker counted again",
        |pool| pool.idle == 1,
    )
    .await;
    assert_eq!(adopted.launched, 0);
    let status = cluster
        .wait_worker_exit("hand-1", Duration::from_secs(30))
        .await;
    assert!(status.success(), "{status:?}");
    let log = cluster.worker_log("hand-1");
    assert!(
        log.contains("the coordinator asked: pool cpu scales in: idle for 3s"),
        "{log}"
    );
    let gone = wait_pool(
        &cluster,
        Duration::from_secs(10),
        "the pool empty",
        |pool| pool.idle == 0,
    )
    .await;
    assert_eq!((gone.launched, gone.terminated), (0, 0));
}

/// Only both of `--pool` and `--machine-id`, or neither.
#[test]
fn a_worker_given_a_pool_without_a_machine_id_says_so() {
    let output = Command::new(WORKER)
        .args(["--coordinator", "127.0.0.1:1", "--pool", "cpu"])
        .env_remove("DROVER_MACHINE_ID")
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert_eq!(
        common::stderr_of(&output).trim(),
        "drover-worker: --pool and --machine-id (DROVER_POOL, DROVER_MACHINE_ID) go together: \
         give both (as the fleet does for the workers it starts) or neither"
    );
}

/// A wrong pool stops the coordinator before it listens, with one line naming pool and field.
#[test]
fn a_coordinator_with_a_bad_pool_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("drover.toml");
    std::fs::write(
        &config,
        "[[pool]]\nname = \"gpu\"\nprovider = \"ec2\"\nmin = 2\nmax = 1\n[pool.ec2]\n\
         region = \"us-east-1\"\nlaunch_template = \"lt-1\"\nworker_token_file = \"/t\"\n",
    )
    .unwrap();
    let address = format!("127.0.0.1:{}", common::free_port());
    let mut child = Command::new(COORDINATOR)
        .args(["--listen", &address, "--http", "off", "--data-dir"])
        .arg(dir.path().join("data"))
        .env("DROVER_CONFIG", &config)
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the coordinator started with a bad pool");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success());
    assert_eq!(
        stderr.trim(),
        format!(
            "drover-coordinator: {}: pool \"gpu\": max (1) is below min (2)",
            config.display()
        )
    );
    assert!(
        std::net::TcpStream::connect(&address).is_err(),
        "nothing listens"
    );
    assert!(!dir.path().join("data").exists(), "no ledger made");
}
