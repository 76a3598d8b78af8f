//! `drover-coordinator`: holds the jobs and pushes them to workers.

use anyhow::Context;
use clap::{CommandFactory, Parser};
use drover::coordinator::{self, ledger_url, CoordinatorConfig};
use drover::net::auth::Secret;
use std::path::PathBuf;
use std::time::Duration;

/// jemalloc, where the `jemalloc` feature (on by default) asks for it: the coordinator makes
/// and drops many small objects, per message and per worker in the list of a fleet of
/// thousands, for which it needs a third of the CPU glibc's allocator did.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    version,
    about = "The drover coordinator: holds the jobs, pushes them to workers, keeps the ledger"
)]
struct Args {
    /// Address for workers and clients.
    #[arg(long, env = "DROVER_LISTEN", default_value = "0.0.0.0:7700")]
    listen: String,
    /// Directory of the ledger.
    #[arg(long, env = "DROVER_DATA_DIR", default_value = "drover-data")]
    data_dir: PathBuf,
    /// Where the ledger is: unset for SQLite in --data-dir, or
    /// postgres://USER:PASSWORD@HOST[,HOST2...]/DATABASE for PostgreSQL shared by several
    /// coordinators (one leads, the others stand by).
    #[arg(long, env = "DROVER_LEDGER")]
    ledger: Option<String>,
    /// How long the leader's lease on a PostgreSQL ledger lasts unrenewed: a standby takes
    /// over this long after the leader stops renewing it.
    #[arg(long, env = "DROVER_LEASE_TTL", default_value = "2s", value_parser = humantime::parse_duration)]
    lease_ttl: Duration,
    /// The address workers and clients are sent to when this coordinator leads (HOST:PORT);
    /// by default --listen, or this machine's name with its port when --listen is 0.0.0.0.
    #[arg(long, env = "DROVER_ADVERTISE")]
    advertise: Option<String>,
    /// The HTTP address a standby redirects to when this coordinator leads (HOST:PORT); by
    /// default --http, or this machine's name with its port.
    #[arg(long, env = "DROVER_ADVERTISE_HTTP")]
    advertise_http: Option<String>,
    /// A worker silent this long is lost and its jobs go to others.
    #[arg(long, env = "DROVER_HEARTBEAT_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    heartbeat_timeout: Duration,
    /// How often workers heartbeat.
    #[arg(long, env = "DROVER_HEARTBEAT_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    heartbeat_interval: Duration,
    /// File holding the client secret (else DROVER_TOKEN).
    #[arg(long, env = "DROVER_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// File holding the worker secret (else DROVER_WORKER_TOKEN).
    #[arg(long, env = "DROVER_WORKER_TOKEN_FILE")]
    worker_token_file: Option<PathBuf>,
    /// File holding a token for reading over HTTP only: the dashboard and the JSON API's reads,
    /// never a change (else DROVER_READ_TOKEN).
    #[arg(long, env = "DROVER_READ_TOKEN_FILE")]
    read_token_file: Option<PathBuf>,
    /// Largest frame accepted, in bytes.
    #[arg(long, env = "DROVER_MAX_FRAME_BYTES", default_value_t = drover::net::codec::DEFAULT_MAX_FRAME)]
    max_frame_bytes: usize,
    /// Most bytes of one job's result kept (a call handler's returned bytes, an exec job's
    /// standard output); an attempt with a longer result fails: publish large results as
    /// outputs. Its results must fit in a frame.
    #[arg(long, env = "DROVER_MAX_RESULT_BYTES", default_value_t = drover::job::DEFAULT_MAX_RESULT_BYTES)]
    max_result_bytes: usize,
    /// How long a call's job may run before its submission is written on its own, rather than
    /// with its result (the tests lengthen it to catch a call in that window).
    #[arg(long, env = "DROVER_CALL_WRITE_DELAY", default_value = "20ms", value_parser = humantime::parse_duration, hide = true)]
    call_write_delay: Duration,
    /// Connections beyond this many are closed at once [default: the open-files limit, raised
    /// as far as the process may, less 256 descriptors for the ledger, logs, HTTP and S3].
    #[arg(long, env = "DROVER_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// How long a peer has to authenticate.
    #[arg(long, env = "DROVER_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    handshake_timeout: Duration,
    /// Address of the dashboard, the JSON API and Prometheus metrics (host:port), or `off`.
    #[arg(long, env = "DROVER_HTTP", default_value = "0.0.0.0:7701")]
    http: String,
    /// Most jobs in one batch.
    #[arg(long, env = "DROVER_MAX_BATCH_JOBS", default_value_t = drover::actors::ledger::MAX_JOBS_PER_BATCH)]
    max_batch_jobs: usize,
    /// Most unfinished (pending or running) jobs held; submissions beyond are refused as "queue full".
    #[arg(long, env = "DROVER_MAX_PENDING_JOBS", default_value_t = drover::actors::ledger::DEFAULT_MAX_UNFINISHED_JOBS)]
    max_pending_jobs: usize,
    /// Most bytes of unfinished jobs' specs held; submissions beyond are refused as "queue full".
    #[arg(long, env = "DROVER_MAX_PENDING_BYTES", default_value_t = drover::actors::ledger::DEFAULT_MAX_UNFINISHED_BYTES)]
    max_pending_bytes: usize,
    /// Most slots one worker may offer; a registration with more is refused.
    #[arg(long, env = "DROVER_MAX_WORKER_SLOTS", default_value_t = coordinator::DEFAULT_MAX_WORKER_SLOTS)]
    max_worker_slots: u32,
    /// Bytes waiting to be sent to one peer above which it is disconnected as not reading.
    #[arg(long, env = "DROVER_MAX_WRITE_BUFFER_BYTES", default_value_t = coordinator::DEFAULT_MAX_WRITE_BUFFER)]
    max_write_buffer_bytes: usize,
    /// The certificate chain (PEM) for TLS on both ports; needs --tls-key.
    #[arg(long, env = "DROVER_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) for TLS on both ports; needs --tls-cert.
    #[arg(long, env = "DROVER_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Refuse to start without TLS.
    #[arg(long, env = "DROVER_REQUIRE_TLS", value_parser = clap::builder::BoolishValueParser::new())]
    require_tls: bool,
    /// Wait before retrying a failed job; doubles with each failure.
    #[arg(long, env = "DROVER_RETRY_BACKOFF", default_value = "1s", value_parser = humantime::parse_duration)]
    retry_backoff: Duration,
    /// Keep every CPU this coordinator may run on from halting for this long (such as 2ms)
    /// after each message from a worker or client, with one lowest-priority spinning thread per
    /// CPU. It shortens one call's round trip on virtual machines, where waking a halted CPU is
    /// slow, and keeps those CPUs busy while jobs move; not under a CPU quota [default: off].
    #[arg(long, env = "DROVER_KEEP_CPUS_AWAKE", value_name = "WINDOW", value_parser = humantime::parse_duration)]
    keep_cpus_awake: Option<Duration>,
}

/// The exit status of a coordinator that stepped down because another took the ledger's lease:
/// a supervisor restarts it, and it comes back as a standby.
const STEPPED_DOWN: u8 = 3;

/// How a coordinator's run ended, when it did not fail.
enum Ended {
    /// Told to stop.
    Stopped,
    /// Another coordinator took the ledger's lease.
    SteppedDown(drover::ha::Deposed),
}

fn main() -> std::process::ExitCode {
    drover::logging::init("info");
    if let Err(error) = drover::config::apply("coordinator", &Args::command()) {
        eprintln!("drover-coordinator: {error}");
        return std::process::ExitCode::FAILURE;
    }
    let args = Args::parse();
    let open_files = drover::net::raise_open_files_limit();
    match run(args, open_files) {
        Ok(Ended::Stopped) => std::process::ExitCode::SUCCESS,
        Ok(Ended::SteppedDown(why)) => {
            eprintln!(
                "drover-coordinator: stepped down: {why}; exiting with status {STEPPED_DOWN} \
                 (restarted, it comes back as a standby)"
            );
            std::process::ExitCode::from(STEPPED_DOWN)
        }
        Err(error) => {
            eprintln!("drover-coordinator: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(args: Args, open_files: drover::net::OpenFiles) -> anyhow::Result<Ended> {
    let client_secret = Secret::load(
        args.token_file.as_deref(),
        std::env::var("DROVER_TOKEN").ok().as_deref(),
    )?;
    let worker_secret = Secret::load(
        args.worker_token_file.as_deref(),
        std::env::var("DROVER_WORKER_TOKEN").ok().as_deref(),
    )?;
    let read_secret = Secret::load(
        args.read_token_file.as_deref(),
        std::env::var("DROVER_READ_TOKEN").ok().as_deref(),
    )?;
    anyhow::ensure!(
        read_secret.is_none() || read_secret != client_secret,
        "the read token is the client token: give it a value of its own, or leave it unset"
    );
    // The fleet's pools, from the same file as [coordinator]: a wrong one stops here, before
    // any port is bound.
    let pools = drover::config::pools()?;
    let connections = coordinator::connection_limit(args.max_connections, &open_files);
    tracing::info!(
        max_connections = connections.max,
        set_by = if connections.explicit {
            "--max-connections"
        } else {
            "the open-files limit, less what the ledger, logs, HTTP and S3 keep"
        },
        kept = open_files
            .limit
            .saturating_sub(open_files.connections() as u64),
        open_files_limit = open_files.limit,
        raised_from = open_files.was,
        hard_limit = open_files.hard,
        "connection limit"
    );
    if let Some(warning) = &connections.warning {
        tracing::warn!("{warning}");
    }
    let config = CoordinatorConfig {
        pools,
        heartbeat_timeout: args.heartbeat_timeout,
        heartbeat_interval: args.heartbeat_interval,
        client_secret,
        worker_secret,
        read_secret,
        max_frame: args.max_frame_bytes,
        handshake_timeout: args.handshake_timeout,
        max_connections: connections.max,
        retry_backoff: args.retry_backoff,
        max_batch_jobs: args.max_batch_jobs,
        max_pending_jobs: args.max_pending_jobs,
        max_pending_bytes: args.max_pending_bytes,
        max_write_buffer: args.max_write_buffer_bytes,
        max_worker_slots: args.max_worker_slots,
        max_result_bytes: args.max_result_bytes,
        call_write_delay: args.call_write_delay,
        tls: args.tls_cert.zip(args.tls_key),
        require_tls: args.require_tls,
        http: (!matches!(args.http.as_str(), "off" | "none" | "")).then_some(args.http),
        advertise: args.advertise,
        advertise_http: args.advertise_http,
        ..CoordinatorConfig::new(args.data_dir)
    };
    // Which ledger, before any port is bound: a URL that names none stops here.
    let leadership = ledger_url::leadership(args.ledger.as_deref(), &config, args.lease_ttl)?;
    if let Some(window) = args.keep_cpus_awake {
        let spinners = drover::keep_awake::start(window)?;
        tracing::info!(
            spinners,
            ?window,
            "keeping the CPUs awake after each message"
        );
    }
    let system = actix_rt::System::new();
    system.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        // The ports answer (as a standby) while the campaign runs.
        let front = coordinator::start_front(listener, config)?;
        let coordinator = tokio::select! {
            led = front.lead(leadership) => led?,
            _ = terminate.recv() => return Ok(Ended::Stopped),
            _ = tokio::signal::ctrl_c() => return Ok(Ended::Stopped),
        };
        tokio::select! {
            _ = terminate.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
            why = coordinator.stepped_down() => return Ok(Ended::SteppedDown(why)),
        }
        tracing::info!("shutting down: closing the ledger after its last commit");
        // A disk that stopped answering must not keep the process from exiting: the ledger is
        // consistent at every commit, closing only tidies it.
        match tokio::time::timeout(Duration::from_secs(30), coordinator.shutdown()).await {
            Ok(closed) => closed
                .context("the ledger was not closed cleanly (it is consistent all the same)")?,
            Err(_) => anyhow::bail!(
                "the ledger did not close within 30s; exiting anyway (it is consistent all the same)"
            ),
        }
        anyhow::Ok(Ended::Stopped)
    })
}
