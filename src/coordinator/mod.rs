//! The coordinator: opens the ledger, starts the four actors and accepts connections.
//!
//! [`start`] runs inside an actix system and takes a bound listener, so tests and examples start
//! a real coordinator on `127.0.0.1:0`. [`spawn`] runs one on a thread of its own.

use crate::actors::ledger::{CloseStore, Ledger, LedgerConfig};
use crate::actors::registry::{Registry, WorkerDirectory};
use crate::actors::scheduler::Scheduler;
use crate::actors::session::{Session, SessionContext, Transport};
use crate::http::HttpState;
use crate::job::LedgerId;
use crate::metrics::Metrics;
use crate::net::auth::Secret;
use crate::net::codec::DEFAULT_MAX_FRAME;
use crate::storage::sqlite::SqliteStore;
use crate::storage::store::{LedgerStore, StoreError};
use actix::prelude::*;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// The default binary-protocol port.
pub const DEFAULT_PORT: u16 = 7700;

/// How a coordinator runs.
#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    /// Where the ledger lives.
    pub data_dir: PathBuf,
    /// Silence after which a worker is lost.
    pub heartbeat_timeout: Duration,
    /// How often workers heartbeat.
    pub heartbeat_interval: Duration,
    /// The client role's secret.
    pub client_secret: Option<Secret>,
    /// The worker role's secret.
    pub worker_secret: Option<Secret>,
    /// A secret that lets HTTP callers read (the dashboard, `/api` GETs) and change nothing.
    pub read_secret: Option<Secret>,
    /// The largest frame accepted.
    pub max_frame: usize,
    /// How long a peer has to authenticate.
    pub handshake_timeout: Duration,
    /// Connections beyond this are closed at once.
    pub max_connections: usize,
    /// Backoff before the second attempt of a failed job, doubled after each failure.
    pub retry_backoff: Duration,
    /// Where to serve the HTTP API, metrics and dashboard, if anywhere.
    pub http: Option<String>,
    /// The most jobs one batch may have.
    pub max_batch_jobs: usize,
    /// The most unfinished jobs held before submissions are refused ("queue full").
    pub max_pending_jobs: usize,
    /// The most bytes of unfinished jobs' specs held before submissions are refused.
    pub max_pending_bytes: usize,
    /// Bytes waiting to be sent to one peer above which it is disconnected as not reading.
    pub max_write_buffer: usize,
    /// The most slots one worker may offer.
    pub max_worker_slots: u32,
    /// The certificate chain and private key (PEM files) for TLS on both ports.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Refuse to start without TLS.
    pub require_tls: bool,
}

/// The default of [`CoordinatorConfig::max_worker_slots`]: more than any one machine runs at
/// once, few enough that one registration cannot take the queue.
pub const DEFAULT_MAX_WORKER_SLOTS: u32 = 1024;

/// The default of [`CoordinatorConfig::max_write_buffer`]: four of the largest frames.
pub const DEFAULT_MAX_WRITE_BUFFER: usize = 4 * DEFAULT_MAX_FRAME;

impl CoordinatorConfig {
    /// Defaults with the ledger in `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        CoordinatorConfig {
            data_dir: data_dir.into(),
            heartbeat_timeout: Duration::from_secs(5),
            heartbeat_interval: Duration::from_secs(1),
            client_secret: None,
            worker_secret: None,
            read_secret: None,
            max_frame: DEFAULT_MAX_FRAME,
            handshake_timeout: Duration::from_secs(10),
            max_connections: 4096,
            retry_backoff: Duration::from_secs(1),
            http: None,
            max_batch_jobs: crate::actors::ledger::MAX_JOBS_PER_BATCH,
            max_pending_jobs: crate::actors::ledger::DEFAULT_MAX_UNFINISHED_JOBS,
            max_pending_bytes: crate::actors::ledger::DEFAULT_MAX_UNFINISHED_BYTES,
            max_write_buffer: DEFAULT_MAX_WRITE_BUFFER,
            max_worker_slots: DEFAULT_MAX_WORKER_SLOTS,
            tls: None,
            require_tls: false,
        }
    }
}

/// Why a coordinator could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The ledger could not be opened.
    #[error(transparent)]
    Ledger(#[from] StoreError),
    /// The listener could not be used.
    #[error("cannot listen: {0}")]
    Listen(#[from] std::io::Error),
    /// TLS could not be set up.
    #[error(transparent)]
    Tls(#[from] crate::net::tls::TlsError),
    /// TLS is required and not configured.
    #[error("--require-tls is set, but no --tls-cert and --tls-key are given")]
    TlsRequired,
    /// The HTTP address could not be used.
    #[error("cannot serve HTTP on {address}: {source}")]
    Http {
        /// The address asked for.
        address: String,
        /// Why.
        source: std::io::Error,
    },
}

/// A started coordinator's actors.
#[derive(Clone)]
pub struct CoordinatorHandle {
    /// The address it listens on.
    pub local_addr: SocketAddr,
    /// The address of its HTTP side, if it has one.
    pub http_addr: Option<SocketAddr>,
    /// The ledger's own id: outputs go under `<to>ledger-<id>/`.
    pub ledger_id: LedgerId,
    /// The ledger.
    pub ledger: Addr<Ledger>,
    /// The registry.
    pub registry: Addr<Registry>,
    /// The scheduler.
    pub scheduler: Addr<Scheduler>,
    /// Stops accepting connections.
    accepting: tokio::sync::watch::Sender<bool>,
}

impl CoordinatorHandle {
    /// Stops taking connections and closes the ledger once every commit asked for so far is on
    /// disk, leaving it tidy (for SQLite: checkpointed, no write-ahead log left). The actors
    /// stop with the actix system.
    pub async fn shutdown(&self) -> Result<(), StoreError> {
        let _ = self.accepting.send(false);
        self.ledger
            .send(CloseStore)
            .await
            .map_err(|_| StoreError::Closed)?
    }
}

/// Opens the ledger, starts the actors and accepts connections on `listener`; must be called
/// inside an actix system.
pub fn start(
    listener: TcpListener,
    config: CoordinatorConfig,
) -> Result<CoordinatorHandle, StartError> {
    let local_addr = listener.local_addr()?;
    let tls = match &config.tls {
        Some((cert, key)) => Some(crate::net::tls::server_config(cert, key)?),
        None if config.require_tls => return Err(StartError::TlsRequired),
        None => None,
    };
    if tls.is_none() && !local_addr.ip().is_loopback() {
        tracing::warn!(
            address = %local_addr,
            "NOT ENCRYPTED: listening beyond loopback without TLS; job specs, results and \
             outputs cross the network in the clear (give --tls-cert and --tls-key)"
        );
    }
    // Bound before anything starts, so a bad address is reported and nothing runs half-way.
    let http_listener = match &config.http {
        Some(address) => {
            Some(
                std::net::TcpListener::bind(address).map_err(|source| StartError::Http {
                    address: address.clone(),
                    source,
                })?,
            )
        }
        None => None,
    };
    let metrics = Arc::new(Metrics::new());
    let (store, replay) = SqliteStore::open(&config.data_dir, metrics.clone())?;
    let ledger_id = replay.ledger;
    let (lease_key, epoch) = (replay.lease_key.clone(), replay.epoch);
    tracing::info!(
        data_dir = %config.data_dir.display(),
        ledger = %ledger_id,
        epoch = replay.epoch,
        batches = replay.batches.len(),
        unfinished = replay.unfinished.len(),
        "ledger opened"
    );
    let store: Arc<dyn LedgerStore> = Arc::new(store);

    // The actors know each other: make the addresses first, then start them.
    let scheduler_ctx = Context::<Scheduler>::new();
    let registry_ctx = Context::<Registry>::new();
    let scheduler = scheduler_ctx.address();
    let registry = registry_ctx.address();
    let directory = WorkerDirectory::default();
    let ledger = Ledger::new(
        store,
        replay,
        scheduler.clone(),
        directory.clone(),
        LedgerConfig {
            retry_backoff: config.retry_backoff,
            metrics: metrics.clone(),
            max_batch_jobs: config.max_batch_jobs,
            max_unfinished_jobs: config.max_pending_jobs,
            max_unfinished_bytes: config.max_pending_bytes,
            // A worker retries at least every MAX_RECONNECT_DELAY, so after a restart every
            // live one is back within it (and a heartbeat timeout is what silence costs anyway).
            reconnect_grace: config
                .heartbeat_timeout
                .max(crate::worker::MAX_RECONNECT_DELAY + Duration::from_secs(2)),
        },
    )
    .start();
    scheduler_ctx.run(Scheduler::new(
        ledger.clone(),
        registry.clone(),
        directory.clone(),
        ledger_id,
        lease_key,
        epoch,
    ));
    registry_ctx.run(Registry::new(
        scheduler.clone(),
        directory,
        config.heartbeat_timeout,
    ));

    for (role, secret) in [
        ("client", &config.client_secret),
        ("worker", &config.worker_secret),
    ] {
        match secret {
            Some(_) => {}
            None if local_addr.ip().is_loopback() => {
                tracing::info!(
                    role,
                    "no {role} token configured: accepting {role}s from loopback only"
                )
            }
            None => tracing::warn!(
                role,
                "no {role} token configured: accepting {role}s from loopback only; \
                 set DROVER_{}TOKEN or --{}token-file to let other machines in",
                if role == "worker" { "WORKER_" } else { "" },
                if role == "worker" { "worker-" } else { "" }
            ),
        }
    }
    let shared = Arc::new(SessionContext {
        registry: registry.clone(),
        scheduler: scheduler.clone(),
        ledger: ledger.clone(),
        client_secret: config.client_secret.clone(),
        worker_secret: config.worker_secret.clone(),
        max_frame: config.max_frame,
        handshake_timeout: config.handshake_timeout,
        // At least three beats per timeout, so one late beat never costs a healthy worker.
        heartbeat_interval: config.heartbeat_interval.min(config.heartbeat_timeout / 3),
        open_sessions: AtomicUsize::new(0),
        max_write_backlog: config.max_write_buffer as u64,
        max_worker_slots: config.max_worker_slots,
    });
    let max_connections = config.max_connections;
    let acceptor = tls.clone().map(tokio_rustls::TlsAcceptor::from);
    let (accepting, accepting_rx) = tokio::sync::watch::channel(true);
    actix_rt::spawn(accept_loop(
        listener,
        shared,
        max_connections,
        acceptor,
        accepting_rx,
    ));
    tracing::info!(address = %local_addr, "coordinator listening");
    let http_addr = match http_listener {
        Some(http_listener) => {
            let address = http_listener.local_addr()?;
            if tls.is_none() && !address.ip().is_loopback() {
                tracing::warn!(
                    address = %address,
                    "NOT ENCRYPTED: HTTP beyond loopback without TLS; bearer tokens and job data \
                     cross the network in the clear (give --tls-cert and --tls-key)"
                );
            }
            let state = HttpState {
                ledger: ledger.clone(),
                registry: registry.clone(),
                scheduler: scheduler.clone(),
                metrics,
                client_secret: config.client_secret.clone(),
                read_secret: config.read_secret.clone(),
            };
            let server =
                crate::http::serve(http_listener, state, tls.clone()).map_err(|source| {
                    StartError::Http {
                        address: address.to_string(),
                        source,
                    }
                })?;
            actix_rt::spawn(server);
            tracing::info!(
                address = %address,
                "dashboard and HTTP API at {}://{address}/ ({})",
                if tls.is_some() { "https" } else { "http" },
                http_access(&config),
            );
            if config.client_secret.is_none()
                && config.read_secret.is_none()
                && !address.ip().is_loopback()
            {
                tracing::warn!(
                    address = %address,
                    "no client or read token configured: HTTP reads and changes are answered on \
                     loopback only; set DROVER_TOKEN (or DROVER_READ_TOKEN, to read only) to let \
                     other machines in"
                );
            }
            Some(address)
        }
        None => None,
    };
    Ok(CoordinatorHandle {
        local_addr,
        http_addr,
        ledger_id,
        ledger,
        registry,
        scheduler,
        accepting,
    })
}

/// Who may do what over HTTP, for the log at start.
fn http_access(config: &CoordinatorConfig) -> &'static str {
    match (config.client_secret.is_some(), config.read_secret.is_some()) {
        (true, true) => {
            "reading needs the client or read token beyond loopback; changes need the client token"
        }
        (true, false) => {
            "reading needs the client token beyond loopback; changes need the client token"
        }
        (false, true) => {
            "reading needs the read token beyond loopback; changes are taken from loopback only"
        }
        (false, false) => "reading and changes are answered on loopback only",
    }
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<SessionContext>,
    max_connections: usize,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut accepting: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = accepting.wait_for(|accepting| !*accepting) => return,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors, usually: wait instead of spinning.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if shared.open_sessions.fetch_add(1, Ordering::Relaxed) >= max_connections {
            shared.open_sessions.fetch_sub(1, Ordering::Relaxed);
            tracing::warn!(%peer, max_connections, "connection limit reached, closing new connection");
            drop(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        crate::net::keep_alive(&stream);
        let Some(acceptor) = &tls else {
            Session::start(Transport::Plain(stream), peer, shared.clone());
            continue;
        };
        // The TLS handshake runs beside the accept loop, under the handshake deadline.
        let acceptor = acceptor.clone();
        let shared = shared.clone();
        actix_rt::spawn(async move {
            let deadline = shared.handshake_timeout;
            let failure = match tokio::time::timeout(deadline, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => {
                    Session::start(Transport::Tls(Box::new(stream)), peer, shared);
                    return;
                }
                Ok(Err(error)) => error.to_string(),
                Err(_) => format!("no TLS handshake within {deadline:?}"),
            };
            // Info, not a warning: port scanners and health checks do this all day.
            tracing::info!(%peer, reason = %failure, "TLS handshake failed, closing connection");
            shared.open_sessions.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// A coordinator running on its own thread.
pub struct SpawnedCoordinator {
    /// The address it listens on.
    pub local_addr: SocketAddr,
    /// Its ledger's own id.
    pub ledger_id: LedgerId,
    system: actix_rt::System,
    handle: CoordinatorHandle,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SpawnedCoordinator {
    /// Stops it, closing its ledger cleanly, and waits for its thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        let handle = self.handle.clone();
        let system = self.system.clone();
        let arbiter = system.arbiter().clone();
        let (closed_tx, closed_rx) = std::sync::mpsc::channel();
        let sent = arbiter.spawn(async move {
            if let Err(error) = handle.shutdown().await {
                tracing::warn!(%error, "ledger not closed cleanly");
            }
            let _ = closed_tx.send(());
        });
        if sent {
            let _ = closed_rx.recv_timeout(Duration::from_secs(30));
        }
        system.stop();
        let _ = thread.join();
    }
}

impl Drop for SpawnedCoordinator {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Starts a coordinator on a thread of its own, listening on `listener`.
pub fn spawn(
    listener: std::net::TcpListener,
    config: CoordinatorConfig,
) -> Result<SpawnedCoordinator, StartError> {
    listener.set_nonblocking(true)?;
    let local_addr = listener.local_addr()?;
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("drover-coordinator".into())
        .spawn(move || {
            let system = actix_rt::System::new();
            let started = system.block_on(async move {
                let listener = TcpListener::from_std(listener)?;
                start(listener, config)
            });
            let ok = started.is_ok();
            let _ = ready_tx.send(started.map(|handle| (actix_rt::System::current(), handle)));
            if ok {
                let _ = system.run();
            }
        })?;
    match ready_rx.recv() {
        Ok(Ok((system, handle))) => Ok(SpawnedCoordinator {
            local_addr,
            ledger_id: handle.ledger_id,
            system,
            handle,
            thread: Some(thread),
        }),
        Ok(Err(error)) => {
            let _ = thread.join();
            Err(error)
        }
        Err(_) => Err(StartError::Listen(std::io::Error::other(
            "coordinator thread died while starting",
        ))),
    }
}
