//! The coordinator: its ports, its actors, and how it comes to lead a ledger.
//!
//! A coordinator starts in two steps. [`start_front`] binds and serves its ports at once, as a
//! standby: a peer is told where the leader is ([`front`]), an HTTP request is redirected there
//! (`http::standby`). [`Front::lead`] then campaigns through a [`Leadership`] and, once this
//! coordinator holds the ledger, starts the four actors from the [`Term`] it got and the ports
//! serve them ([`lead`]). A SQLite ledger leads at once: [`start`] does both steps for it, and
//! [`spawn`] runs that on a thread of its own, so tests and examples start a real coordinator on
//! `127.0.0.1:0`. Which ledger a `--ledger` URL names is [`ledger_url`]'s business.

mod config;
mod front;
mod lead;
pub mod ledger_url;

pub use config::{
    connection_limit, ConnectionLimit, CoordinatorConfig, DEFAULT_MAX_WORKER_SLOTS,
    DEFAULT_MAX_WRITE_BUFFER,
};

use crate::actors::ledger::{CloseStore, Ledger};
use crate::actors::registry::Registry;
use crate::actors::scheduler::Scheduler;
use crate::ha::sqlite::SqliteLeadership;
use crate::ha::{Cluster, Deposed, Leadership, MemberRole, Peer};
use crate::http::{HttpFront, HttpState};
use crate::job::LedgerId;
use crate::storage::store::StoreError;
use actix::prelude::*;
use front::Gate;
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// The default binary-protocol port.
pub const DEFAULT_PORT: u16 = 7700;

/// Why a coordinator could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The ledger could not be opened.
    #[error(transparent)]
    Ledger(#[from] StoreError),
    /// The `--ledger` URL names no ledger this coordinator can use.
    #[error("{0}")]
    LedgerUrl(String),
    /// The address to advertise is not one.
    #[error("{0}")]
    Advertise(String),
    /// The listener could not be used.
    #[error("cannot listen: {0}")]
    Listen(#[from] std::io::Error),
    /// TLS could not be set up.
    #[error(transparent)]
    Tls(#[from] crate::net::tls::TlsError),
    /// Limits that cannot work together (say which, and what would).
    #[error("{0}")]
    Config(String),
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

/// A coordinator that leads: its actors.
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
    /// The elastic fleet.
    pub fleet: Addr<crate::actors::fleet::Fleet>,
    /// Who leads and which coordinators there are.
    pub cluster: watch::Receiver<Cluster>,
    /// Stops accepting connections.
    accepting: watch::Sender<bool>,
    /// Why this coordinator stepped down, once it has.
    stepped_down: watch::Receiver<Option<Deposed>>,
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

    /// Resolves when this coordinator stops leading because another one took the ledger's
    /// lease: it then acknowledges nothing more and takes no connection. Never, on SQLite.
    pub async fn stepped_down(&self) -> Deposed {
        let mut stepped_down = self.stepped_down.clone();
        loop {
            if let Some(why) = stepped_down.borrow_and_update().clone() {
                return why;
            }
            if stepped_down.changed().await.is_err() {
                // The ledger is gone without saying why: it will not say later either.
                return futures::future::pending().await;
            }
        }
    }
}

/// A coordinator whose ports answer, as a standby, until it leads ([`Front::lead`]).
pub struct Front {
    config: CoordinatorConfig,
    local_addr: SocketAddr,
    http_addr: Option<SocketAddr>,
    me: Peer,
    cluster_tx: watch::Sender<Cluster>,
    cluster: watch::Receiver<Cluster>,
    gate: Arc<Gate>,
    http_serving: watch::Sender<Option<Arc<HttpState>>>,
    http_server: Option<actix_web::dev::ServerHandle>,
    accepting: watch::Sender<bool>,
}

impl Front {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address of its HTTP side, if it has one.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// This coordinator as it advertises itself.
    pub fn me(&self) -> &Peer {
        &self.me
    }

    /// Who leads and which coordinators there are.
    pub fn cluster(&self) -> watch::Receiver<Cluster> {
        self.cluster.clone()
    }

    /// Campaigns through `leadership` (serving as a standby meanwhile) and, once this
    /// coordinator holds the ledger, starts its actors and serves them.
    pub async fn lead(
        self,
        leadership: Arc<dyn Leadership>,
    ) -> Result<CoordinatorHandle, StartError> {
        let campaign = leadership.campaign(self.me.clone(), self.cluster_tx.clone());
        match campaign.await {
            Ok(term) => Ok(lead::serve(self, term)),
            Err(error) => {
                self.close();
                Err(error.into())
            }
        }
    }

    /// Stops answering on both ports.
    fn close(&self) {
        let _ = self.accepting.send(false);
        if let Some(server) = &self.http_server {
            // Not awaited: the server stops on its own thread.
            drop(server.stop(false));
        }
    }
}

/// Binds what is left to bind, and serves both ports as a standby; must be called inside an
/// actix system. Nothing is served from a ledger until [`Front::lead`].
pub fn start_front(listener: TcpListener, config: CoordinatorConfig) -> Result<Front, StartError> {
    config.check().map_err(StartError::Config)?;
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
    // Bound before anything is served, so a bad address is reported and nothing runs half-way.
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
    let http_addr = match &http_listener {
        Some(listener) => Some(listener.local_addr()?),
        None => None,
    };
    let me = config
        .me(local_addr, http_addr)
        .map_err(StartError::Advertise)?;
    let (cluster_tx, cluster) = watch::channel(Cluster {
        me: me.clone(),
        role: MemberRole::Standby,
        leader: None,
        members: Vec::new(),
    });
    actix_rt::spawn(front::log_changes(cluster.clone()));
    log_open_roles(&config, local_addr);

    let (serving, _) = watch::channel(None);
    let gate = Arc::new(Gate {
        client_secret: config.client_secret.clone(),
        worker_secret: config.worker_secret.clone(),
        max_frame: config.max_frame,
        handshake_timeout: config.handshake_timeout,
        cluster: cluster.clone(),
        serving,
        open: Arc::new(AtomicUsize::new(0)),
    });
    let acceptor = tls.clone().map(tokio_rustls::TlsAcceptor::from);
    let (accepting, accepting_rx) = watch::channel(true);
    actix_rt::spawn(front::accept_loop(
        listener,
        gate.clone(),
        config.max_connections,
        acceptor,
        accepting_rx,
    ));
    tracing::info!(address = %local_addr, advertised = %me.address, "coordinator listening");

    let (http_serving, http_serving_rx) = watch::channel(None);
    let http_server = match (http_listener, http_addr) {
        (Some(http_listener), Some(address)) => {
            if tls.is_none() && !address.ip().is_loopback() {
                tracing::warn!(
                    address = %address,
                    "NOT ENCRYPTED: HTTP beyond loopback without TLS; bearer tokens and job data \
                     cross the network in the clear (give --tls-cert and --tls-key)"
                );
            }
            let http_front = HttpFront {
                client_secret: config.client_secret.clone(),
                read_secret: config.read_secret.clone(),
                cluster: cluster.clone(),
                serving: http_serving_rx,
                https: tls.is_some(),
            };
            let server =
                crate::http::serve(http_listener, http_front, tls.clone()).map_err(|source| {
                    StartError::Http {
                        address: address.to_string(),
                        source,
                    }
                })?;
            let handle = server.handle();
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
            Some(handle)
        }
        _ => None,
    };
    Ok(Front {
        config,
        local_addr,
        http_addr,
        me,
        cluster_tx,
        cluster,
        gate,
        http_serving,
        http_server,
        accepting,
    })
}

/// Serves `listener` and leads the SQLite ledger in the data directory at once; must be called
/// inside an actix system.
pub fn start(
    listener: TcpListener,
    config: CoordinatorConfig,
) -> Result<CoordinatorHandle, StartError> {
    let front = start_front(listener, config)?;
    let leadership = SqliteLeadership::new(&front.config.data_dir, front.config.metrics.clone());
    // Nothing else has run yet on this thread: opening the ledger here holds up no peer.
    match leadership.lead_now(&front.me, &front.cluster_tx) {
        Ok(term) => Ok(lead::serve(front, term)),
        Err(error) => {
            front.close();
            Err(error.into())
        }
    }
}

/// Serves `listener` as a standby at once, and leads when `leadership` says so; must be called
/// inside an actix system.
pub async fn start_with(
    listener: TcpListener,
    config: CoordinatorConfig,
    leadership: Arc<dyn Leadership>,
) -> Result<CoordinatorHandle, StartError> {
    start_front(listener, config)?.lead(leadership).await
}

/// Says which roles are taken from where, for lack of a token.
fn log_open_roles(config: &CoordinatorConfig, local_addr: SocketAddr) {
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
