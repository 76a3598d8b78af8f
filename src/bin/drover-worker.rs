//! `drover-worker`: registers with the coordinator and runs what it is given.

use clap::{CommandFactory, Parser};
use drover::net::auth::Secret;
use drover::net::protocol::PoolMember;
use drover::worker::{self, Handlers, WorkerConfig};
use std::path::PathBuf;

/// The same allocator as the coordinator's (see there).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    version,
    about = "A drover worker: registers with the coordinator and runs the jobs it pushes"
)]
struct Args {
    /// The coordinator's address (HOST:PORT), or every coordinator's, separated by commas
    /// (`a:7700,b:7700`): the worker registers with the one that leads, and follows it.
    #[arg(long, env = "DROVER_COORDINATOR", default_value = "127.0.0.1:7700")]
    coordinator: String,
    /// The name people see and the ledger records, one live worker's at a time [default: the
    /// host name and this process's id, as in vm-4242, so workers on one machine differ].
    #[arg(long, env = "DROVER_WORKER_NAME")]
    name: Option<String>,
    /// Jobs run at once (default: the number of CPUs).
    #[arg(long, env = "DROVER_SLOTS")]
    slots: Option<u32>,
    /// A label jobs may require; repeat for more.
    #[arg(long = "label", env = "DROVER_LABELS", value_delimiter = ',')]
    labels: Vec<String>,
    /// Where jobs get their scratch directories [default: $TMPDIR/drover-scratch-<uid>]. A worker
    /// started again with the same one aborts the S3 uploads a killed one left unfinished.
    #[arg(long, env = "DROVER_SCRATCH_DIR")]
    scratch_dir: Option<PathBuf>,
    /// An S3-compatible endpoint for job data (else AWS_ENDPOINT_URL, else AWS).
    #[arg(long, env = "DROVER_S3_ENDPOINT")]
    s3_endpoint: Option<String>,
    /// Address S3 buckets by path (endpoint/bucket/key), as most S3-compatible stores want.
    #[arg(long, env = "DROVER_S3_PATH_STYLE", value_parser = clap::builder::BoolishValueParser::new())]
    s3_path_style: bool,
    /// How uploads carry checksums: when-supported (the SDK's streaming checksums, as AWS
    /// takes them) or when-required (plain bodies with a Content-MD5, as S3-compatible stores
    /// take them) [default: when-required with a custom endpoint, else when-supported].
    #[arg(long, env = "DROVER_S3_CHECKSUMS", value_enum)]
    s3_checksums: Option<drover::storage::s3::S3Checksums>,
    /// File holding the worker secret (else DROVER_WORKER_TOKEN).
    #[arg(long, env = "DROVER_WORKER_TOKEN_FILE")]
    worker_token_file: Option<PathBuf>,
    /// Connect over TLS, trusting the system's root certificates.
    #[arg(long, env = "DROVER_TLS", value_parser = clap::builder::BoolishValueParser::new())]
    tls: bool,
    /// Connect over TLS, trusting the certificates in this PEM file.
    #[arg(long, env = "DROVER_TLS_CA")]
    tls_ca: Option<PathBuf>,
    /// The elastic fleet's pool this worker was started for (with --machine-id): the
    /// coordinator counts it in that pool, and drains it when the pool scales in.
    #[arg(long, env = "DROVER_POOL")]
    pool: Option<String>,
    /// The provider's id for the machine this worker runs on (with --pool): how the coordinator
    /// knows the machine it launched has registered.
    #[arg(long, env = "DROVER_MACHINE_ID")]
    machine_id: Option<String>,
    /// On an EC2 spot instance: watch the instance metadata for an interruption notice and
    /// drain on one, as on SIGTERM (the built-in user data of a spot pool sets it).
    #[arg(long, env = "DROVER_SPOT_INTERRUPTIONS", value_parser = clap::builder::BoolishValueParser::new())]
    spot_interruptions: bool,
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "worker".into())
}

fn main() -> std::process::ExitCode {
    drover::logging::init("info");
    if let Err(error) = drover::config::apply("worker", &Args::command()) {
        eprintln!("drover-worker: {error}");
        return std::process::ExitCode::FAILURE;
    }
    let args = Args::parse();
    match run(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("drover-worker: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let secret = Secret::load(
        args.worker_token_file.as_deref(),
        std::env::var("DROVER_WORKER_TOKEN").ok().as_deref(),
    )?;
    let member = match (args.pool, args.machine_id) {
        (Some(pool), Some(machine)) => Some(PoolMember { pool, machine }),
        (None, None) => None,
        (Some(_), None) | (None, Some(_)) => anyhow::bail!(
            "--pool and --machine-id (DROVER_POOL, DROVER_MACHINE_ID) go together: give both \
             (as the fleet does for the workers it starts) or neither"
        ),
    };
    let slots = args.slots.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, |cpus| cpus.get() as u32)
    });
    anyhow::ensure!(slots > 0, "--slots must be at least 1");
    // The process id tells workers on one machine apart, and which process a name is.
    let name = args
        .name
        .unwrap_or_else(|| format!("{}-{}", host_name(), std::process::id()));
    // One for the user on this machine: every attempt's directory in it is its own, and a
    // worker started again finds what a killed one left.
    let scratch_dir = match args.scratch_dir {
        Some(dir) => dir,
        None => default_scratch_dir()?,
    };
    let config = WorkerConfig {
        coordinator: args.coordinator,
        name,
        slots,
        labels: args.labels,
        scratch_dir,
        secret,
        handlers: Handlers::stock(),
        s3: drover::storage::s3::S3Settings {
            endpoint: args.s3_endpoint,
            path_style: args.s3_path_style,
            checksums: args.s3_checksums,
        },
        tls: drover::net::tls::ClientTls::from_flags(args.tls, args.tls_ca.as_deref())?,
        member,
    };
    // Descriptors for its connections and the outputs it publishes; the jobs it starts get the
    // limit it was started with.
    drover::net::raise_open_files_limit();
    let spot_interruptions = args.spot_interruptions;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let spot_notice = async move {
            if !spot_interruptions {
                return std::future::pending().await;
            }
            let notice = worker::spot::interruption_notice().await;
            tracing::warn!(%notice, "spot interruption notice: draining");
        };
        let shutdown = async move {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
                _ = spot_notice => {}
            }
        };
        worker::run(config, shutdown).await?;
        anyhow::Ok(())
    })
}

/// `$TMPDIR/drover-scratch-<uid>`: one for the user on this machine, so every attempt's
/// directory in it is its own and a worker started again finds what a killed one left. Its
/// name is easy to guess, so it must be a directory of this user's that nobody else can write
/// to, not something another user made first.
fn default_scratch_dir() -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    // SAFETY: getuid(2) cannot fail and touches no memory.
    let uid = unsafe { libc::getuid() };
    let dir = std::env::temp_dir().join(format!("drover-scratch-{uid}"));
    match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(error) => anyhow::bail!("cannot make scratch directory {}: {error}", dir.display()),
    }
    let meta = std::fs::symlink_metadata(&dir)?;
    anyhow::ensure!(
        meta.is_dir() && meta.uid() == uid && meta.permissions().mode() & 0o022 == 0,
        "scratch directory {} is not a directory of this user's that only it can write to; \
         remove it or give --scratch-dir",
        dir.display()
    );
    Ok(dir)
}
