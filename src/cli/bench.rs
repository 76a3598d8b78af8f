//! `drover bench`: a coordinator and worker processes on loopback, durability on, and figures:
//! throughput, single-job round trip, the coordinator's memory, and how fast the status views
//! answer with many workers and every finished job on record.

use crate::client::Client;
use crate::job::{JobSpec, JobState};
use crate::net::protocol::CancelTarget;
use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod fleet;

/// Options of `drover bench`.
#[derive(clap::Args)]
pub struct BenchArgs {
    /// No-op jobs pushed through for the throughput figure.
    #[arg(long, default_value_t = 200_000)]
    jobs: usize,
    /// Worker processes.
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// Slots per worker.
    #[arg(long, default_value_t = 64)]
    slots: u32,
    /// Single-job round trips timed for the latency figures (each one `Client::call`: one
    /// request that queues a no-op job and answers with its recorded result).
    #[arg(long, default_value_t = 200)]
    round_trips: usize,
    /// Jobs held pending (no worker can take them) for the memory-per-job figure.
    #[arg(long, default_value_t = 200_000)]
    pending: usize,
    /// Where the ledger goes (default: a temporary directory on the current disk).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// A PostgreSQL ledger for the coordinator (`postgres://USER:PASS@HOST/DB`) instead of
    /// SQLite in the data directory. Its jobs stay on record there after the bench.
    #[arg(long, value_name = "URL")]
    ledger: Option<String>,
    /// Idle workers (held inside this process, one connection each) connected before the status
    /// views are timed: how long they take to register, and what their heartbeats cost the
    /// coordinator in CPU and memory, are printed. The open-files limit is raised to hold them.
    #[arg(long, default_value_t = 0)]
    idle_workers: usize,
    /// Requests timed per status view.
    #[arg(long, default_value_t = 200)]
    status_requests: usize,
    /// Start the coordinator with `--keep-cpus-awake WINDOW` (such as 2ms): one
    /// lowest-priority spinner per CPU while jobs move, for the round trip on virtual machines.
    #[arg(long, value_name = "WINDOW")]
    keep_cpus_awake: Option<String>,
}

/// Kills the child processes when the bench ends, however it ends.
struct Processes(Vec<Child>);

impl Drop for Processes {
    fn drop(&mut self) {
        // Workers drain first (they were started last), then the coordinator stops.
        for child in self.0.iter_mut().rev() {
            // SAFETY: kill(2) on our own child; no memory is involved.
            unsafe {
                libc::kill(child.id() as i32, libc::SIGTERM);
            }
            let _ = child.wait();
        }
    }
}

fn sibling_binary(name: &str) -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe().context("cannot find the drover binary's directory")?;
    let path = me.with_file_name(name);
    if !path.exists() {
        bail!(
            "{} not found next to {}; build all binaries (cargo build --release)",
            name,
            me.display()
        );
    }
    Ok(path)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Memory figures of a process from /proc: (current resident, peak resident), in bytes.
fn memory_of(pid: u32) -> anyhow::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kb| kb.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    Ok((field("VmRSS:"), field("VmHWM:")))
}

/// Writes and fsyncs timed by the probe.
const FSYNC_PROBES: usize = 200;

/// The median time of a 4 KiB write and fsync in `dir` (the ledger's directory), over
/// [`FSYNC_PROBES`] of them: the floor under durable latency, as the ledger's disk gives it.
fn fsync_time(dir: &Path) -> anyhow::Result<Duration> {
    use std::os::unix::fs::FileExt;
    let path = dir.join("fsync-probe");
    let file = std::fs::File::create(&path)?;
    // The same 4 KiB written over each time, as the ledger's log is once it has wrapped: a file
    // that grew on every write would time the file system's journal as well.
    file.write_all_at(&[0u8; 4096], 0)?;
    file.sync_all()?;
    let mut times = Vec::with_capacity(FSYNC_PROBES);
    for _ in 0..FSYNC_PROBES {
        let clock = Instant::now();
        file.write_all_at(&[0u8; 4096], 0)?;
        file.sync_data()?;
        times.push(clock.elapsed());
    }
    std::fs::remove_file(&path)?;
    times.sort();
    Ok(percentile(&times, 0.5))
}

/// CPU time (user and system) a process has used so far, from /proc, less what its
/// `--keep-cpus-awake` spinners used: they run only on CPU time nothing else wanted. The
/// process's time is counted in clock ticks (10 ms), the spinners' in nanoseconds.
fn cpu_time_of(pid: u32) -> anyhow::Result<Duration> {
    let ticks = stat_ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat"))?);
    // SAFETY: sysconf(3) reads a constant of the system; no memory is involved.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let mut spent = Duration::from_micros(ticks * 1_000_000 / per_second);
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            let name = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            if !name.starts_with("drover-awake-") {
                continue;
            }
            // The first field of schedstat: nanoseconds on a CPU.
            let on_cpu = std::fs::read_to_string(task.path().join("schedstat"))
                .ok()
                .and_then(|line| line.split_whitespace().next()?.parse().ok())
                .unwrap_or(0);
            spent = spent.saturating_sub(Duration::from_nanos(on_cpu));
        }
    }
    Ok(spent)
}

/// The clock ticks of CPU (user and system) in a /proc `stat` line.
fn stat_ticks(stat: &str) -> u64 {
    // The fields after the command (which may hold spaces) start after its closing parenthesis;
    // utime and stime are the 14th and 15th fields of the line.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |index: usize| -> u64 {
        fields
            .get(index)
            .and_then(|field| field.parse().ok())
            .unwrap_or(0)
    };
    ticks(11) + ticks(12)
}

/// CPU time the coordinator and the workers have used so far.
fn cpu_times(coordinator: u32, workers: &[u32]) -> anyhow::Result<(Duration, Duration)> {
    let mut of_workers = Duration::ZERO;
    for worker in workers {
        of_workers += cpu_time_of(*worker)?;
    }
    Ok((cpu_time_of(coordinator)?, of_workers))
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// Runs the benchmark and prints its figures.
pub async fn run(args: &BenchArgs) -> anyhow::Result<()> {
    if args.jobs == 0 || args.workers == 0 || args.slots == 0 {
        bail!("--jobs, --workers and --slots must be at least 1");
    }
    // Before anything starts: the idle workers' connections, and the coordinator's ends of
    // them with the workers' and this client's, must fit in the open-files limit.
    fleet::make_room(args.idle_workers, args.idle_workers + args.workers + 2)?;
    let temporary = tempfile::Builder::new()
        .prefix("drover-bench-")
        .tempdir_in(".")?;
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| temporary.path().join("data"));
    std::fs::create_dir_all(&data_dir)?;
    let address = format!("127.0.0.1:{}", free_port()?);
    let http_address = format!("127.0.0.1:{}", free_port()?);
    let mut processes = Processes(Vec::new());
    let mut coordinator = Command::new(sibling_binary("drover-coordinator")?);
    coordinator
        .args(["--listen", &address, "--http", &http_address, "--data-dir"])
        .arg(&data_dir)
        // Only the ledger asked for here: never one the environment names.
        .env_remove("DROVER_LEDGER");
    if let Some(url) = &args.ledger {
        coordinator.args(["--ledger", url]);
    }
    match &args.keep_cpus_awake {
        Some(window) => coordinator.args(["--keep-cpus-awake", window]),
        // Off unless asked for here, whatever the environment says.
        None => coordinator.env_remove("DROVER_KEEP_CPUS_AWAKE"),
    };
    let ledger = match &args.ledger {
        Some(url) => format!(
            "ledger on PostgreSQL {}",
            crate::storage::postgres::hide_password(url)
        ),
        None => format!("ledger in {}", data_dir.display()),
    };
    let ledger = match &args.keep_cpus_awake {
        Some(window) => format!("{ledger}, CPUs kept awake {window} after each message"),
        None => ledger,
    };
    let coordinator = coordinator
        .env("RUST_LOG", "warn")
        .env_remove("DROVER_TOKEN")
        .env_remove("DROVER_WORKER_TOKEN")
        .stdin(Stdio::null())
        .spawn()
        .context("cannot start drover-coordinator")?;
    let coordinator_pid = coordinator.id();
    processes.0.push(coordinator);
    let mut client = connect_when_up(&address, &mut processes.0[0]).await?;
    let mut worker_pids = Vec::with_capacity(args.workers);
    for index in 0..args.workers {
        let worker = Command::new(sibling_binary("drover-worker")?)
            .args([
                "--coordinator",
                &address,
                "--name",
                &format!("bench-{}", index + 1),
            ])
            .args(["--slots", &args.slots.to_string(), "--scratch-dir"])
            .arg(temporary.path().join(format!("scratch-{index}")))
            .env("RUST_LOG", "warn")
            .env_remove("DROVER_WORKER_TOKEN")
            .stdin(Stdio::null())
            .spawn()
            .context("cannot start drover-worker")?;
        worker_pids.push(worker.id());
        processes.0.push(worker);
    }
    fleet::wait_for_workers(&mut client, args.workers).await?;
    let fsync = fsync_time(&data_dir)?;
    println!(
        "drover bench: {} workers x {} slots on loopback, {} (fsync of 4 KiB there: p50 {:.2} ms \
         over {FSYNC_PROBES})",
        args.workers,
        args.slots,
        ledger,
        ms(fsync)
    );

    // Memory, first, on a fresh heap: jobs no worker can take stay pending; the growth of the
    // coordinator is their cost.
    if args.pending > 0 {
        let (before, _) = memory_of(coordinator_pid)?;
        let mut spec = JobSpec::call("noop", Vec::new());
        spec.requires = vec!["bench-no-such-label".into()];
        // In batches of a size that fits one frame whatever the spec.
        let mut held = Vec::new();
        let mut left = args.pending;
        while left > 0 {
            let count = left.min(100_000);
            held.push(
                client
                    .submit("bench-pending", vec![spec.clone(); count])
                    .await?
                    .batch,
            );
            left -= count;
        }
        let (after, _) = memory_of(coordinator_pid)?;
        println!(
            "memory: {} pending jobs add {:.1} MiB to the coordinator = {:.0} bytes per pending job",
            args.pending,
            (after.saturating_sub(before)) as f64 / (1024.0 * 1024.0),
            after.saturating_sub(before) as f64 / args.pending as f64
        );
        for batch in held {
            client.cancel(CancelTarget::Batch(batch)).await?;
        }
    }

    // Throughput: one batch of no-op jobs, submitted in one frame, until all are recorded.
    let jobs = vec![JobSpec::call("noop", Vec::new()); args.jobs];
    let cpu_before = cpu_times(coordinator_pid, &worker_pids)?;
    let clock = Instant::now();
    let submitted = client.submit("bench-throughput", jobs).await?;
    let accepted = clock.elapsed();
    let info = loop {
        let info = client
            .wait_batch(submitted.batch, Duration::from_secs(60))
            .await?;
        if info.done {
            break info;
        }
    };
    let elapsed = clock.elapsed();
    let cpu_after = cpu_times(coordinator_pid, &worker_pids)?;
    if info.succeeded != args.jobs as u64 {
        bail!("only {} of {} jobs succeeded", info.succeeded, args.jobs);
    }
    println!(
        "throughput: {} no-op jobs in {:.2}s = {:.0} jobs/s end to end (submission durable after {:.0} ms)",
        args.jobs,
        elapsed.as_secs_f64(),
        args.jobs as f64 / elapsed.as_secs_f64(),
        ms(accepted)
    );
    let per_job = |spent: Duration| spent.as_secs_f64() * 1e6 / args.jobs as f64;
    println!(
        "  CPU per job: {:.1} us in the coordinator, {:.1} us in the workers",
        per_job(cpu_after.0.saturating_sub(cpu_before.0)),
        per_job(cpu_after.1.saturating_sub(cpu_before.1)),
    );

    // Latency: one job at a time, one request each, from the call to its recorded result.
    let mut round_trips = Vec::with_capacity(args.round_trips);
    let cpu_before = cpu_time_of(coordinator_pid)?;
    for _ in 0..args.round_trips {
        let clock = Instant::now();
        let called = client.call(JobSpec::call("noop", Vec::new())).await?;
        if called.record.state != JobState::Succeeded {
            bail!(
                "a round trip's job ended {}: {}",
                called.record.state,
                called.record.error.unwrap_or_default()
            );
        }
        round_trips.push(clock.elapsed());
    }
    let cpu_per_call = cpu_time_of(coordinator_pid)?.saturating_sub(cpu_before);
    round_trips.sort();
    if !round_trips.is_empty() {
        // The target set for it: two flushes to disk (a job queued, its result recorded) and
        // 0.2 ms; a call's job is written with its result, so it waits for one.
        let target = fsync * 2 + Duration::from_micros(200);
        println!(
            "round trip of one job (Client::call: queued and run, then written with its result, \
             fsync): p50 {:.2} ms \
             (2 fsyncs + 0.2 ms = {:.2} ms here), p99 {:.2} ms over {} calls",
            ms(percentile(&round_trips, 0.5)),
            ms(target),
            ms(percentile(&round_trips, 0.99)),
            round_trips.len()
        );
        println!(
            "  CPU per call: {:.0} us in the coordinator",
            cpu_per_call.as_secs_f64() * 1e6 / round_trips.len() as f64
        );
    }

    let (_, peak) = memory_of(coordinator_pid)?;
    println!(
        "coordinator peak resident memory: {:.1} MiB",
        peak as f64 / (1024.0 * 1024.0)
    );

    if args.status_requests > 0 || args.idle_workers > 0 {
        let idle = fleet::start(
            &mut client,
            &address,
            coordinator_pid,
            args.workers,
            args.idle_workers,
        )
        .await?;
        if args.status_requests > 0 {
            time_status_views(
                &mut client,
                &http_address,
                coordinator_pid,
                idle.background,
                submitted.first_job,
                args.status_requests,
            )
            .await?;
        }
        // The coordinator first, so it does not log thousands of lost workers.
        drop(processes);
        drop(idle);
        return Ok(());
    }
    drop(processes);
    Ok(())
}

/// Times each status view, over the binary protocol and over HTTP, and prints p50 and p99.
async fn time_status_views(
    client: &mut Client,
    http_address: &str,
    coordinator: u32,
    background: f64,
    some_job: u64,
    requests: usize,
) -> anyhow::Result<()> {
    let status = client.status().await?;
    let jobs = &status.stats.jobs;
    println!(
        "status views with {} workers connected and {} finished jobs on record ({} requests each; \
         the coordinator's CPU time per request, less its background load):",
        status.workers.idle + status.workers.busy + status.workers.draining,
        jobs.succeeded + jobs.failed + jobs.cancelled,
        requests
    );
    let report = |view: &str, (mut times, cpu): (Vec<Duration>, Duration)| {
        times.sort();
        println!(
            "  {view:<22} p50 {:.2} ms, p99 {:.2} ms, CPU {:.2} ms",
            ms(percentile(&times, 0.5)),
            ms(percentile(&times, 0.99)),
            ms(cpu)
        );
    };
    macro_rules! time {
        ($request:expr) => {{
            let mut times = Vec::with_capacity(requests);
            let cpu_before = cpu_time_of(coordinator)?;
            let wall = Instant::now();
            for _ in 0..requests {
                let clock = Instant::now();
                $request;
                times.push(clock.elapsed());
            }
            let used = cpu_time_of(coordinator)?.saturating_sub(cpu_before);
            let background = wall.elapsed().mul_f64(background);
            (times, used.saturating_sub(background) / requests as u32)
        }};
    }
    report("drover status", time!(client.status().await?));
    report("drover workers", time!(client.workers().await?));
    report("drover batches", time!(client.batches().await?));
    report("drover job ID", time!(client.job(some_job).await?));
    for path in ["/api/status", "/api/workers", "/metrics"] {
        report(
            &format!("GET {path}"),
            time!(http_get(http_address, path).await?),
        );
    }
    Ok(())
}

/// One GET on a fresh connection, read to the end; fails unless the answer is 200.
async fn http_get(address: &str, path: &str) -> anyhow::Result<usize> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await?;
    if !answer.starts_with(b"HTTP/1.1 200") {
        bail!("GET {path} did not answer 200");
    }
    Ok(answer.len())
}

/// A client of the coordinator just started as `process`, once it answers; an error at once if
/// it exits first (it has said why on its standard error, which is the bench's).
async fn connect_when_up(address: &str, process: &mut Child) -> anyhow::Result<Client> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = process.try_wait()? {
            bail!("the coordinator exited as it started ({status})");
        }
        match Client::connect(address, None).await {
            Ok(client) => return Ok(client),
            Err(error) if Instant::now() > deadline => {
                return Err(error).context("the coordinator did not come up within 20s")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}
