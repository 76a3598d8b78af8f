//! The coordinator's HTTP side (`--http ADDR`): a JSON API over the same data as the CLI, batch
//! submission for other languages, Prometheus metrics and a live dashboard.
//!
//! Reading needs the client or read token beyond loopback; anything that changes jobs (submit,
//! cancel, retry) needs the client token, or, where none is set, a request from loopback, as for
//! the binary protocol (see [`access`]). The dashboard's page and `/metrics` are open: they hold
//! no job data.
//!
//! Finished jobs' records come as pages after a cursor and as an event stream (see
//! [`events`]); a job's raw result and a call answered with its record are in [`results`].
//!
//! The port answers from the start, before the coordinator leads: a standby sends every request
//! to the leader (see [`standby`]) and serves nothing itself.

mod access;
mod api;
mod batch;
mod dashboard;
mod error;
mod events;
mod results;
mod standby;

use crate::actors::ledger::Ledger;
use crate::actors::registry::Registry;
use crate::actors::scheduler::Scheduler;
use crate::ha::Cluster;
use crate::metrics::Metrics;
use crate::net::auth::Secret;
use actix::Addr;
use actix_web::{web, App, HttpServer};
use std::sync::Arc;
use tokio::sync::watch;

pub use access::ACCESS_HEADER;
pub use error::ApiError;

/// The largest request body accepted (a JSON batch), in bytes.
pub const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

/// What the HTTP handlers reach once the coordinator leads.
pub struct HttpState {
    /// The ledger.
    pub ledger: Addr<Ledger>,
    /// The registry.
    pub registry: Addr<Registry>,
    /// The scheduler.
    pub scheduler: Addr<Scheduler>,
    /// The elastic fleet.
    pub fleet: Addr<crate::actors::fleet::Fleet>,
    /// The metrics, rendered at `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Who leads and which coordinators there are, for the status.
    pub cluster: watch::Receiver<Cluster>,
    /// The cursor of the last finished job's record on disk, for followers of results.
    pub recorded: Arc<watch::Sender<u64>>,
}

/// What the HTTP side knows from the start: who may do what, and whether this coordinator leads.
pub struct HttpFront {
    /// The client role's secret, the bearer token for changes (and reads).
    pub client_secret: Option<Secret>,
    /// A secret for reading only, beside the client's.
    pub read_secret: Option<Secret>,
    /// Who leads: where a standby sends requests.
    pub cluster: watch::Receiver<Cluster>,
    /// The handlers' state, once this coordinator leads; `None` while it is a standby (or after
    /// it stepped down).
    pub serving: watch::Receiver<Option<Arc<HttpState>>>,
    /// Whether the coordinators serve HTTPS (a redirect keeps the scheme).
    pub https: bool,
}

/// Starts serving on `listener`; the returned server runs once spawned on the actix system.
pub fn serve(
    listener: std::net::TcpListener,
    front: HttpFront,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> std::io::Result<actix_web::dev::Server> {
    let front = web::Data::new(front);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(front.clone())
            .wrap(actix_web::middleware::from_fn(standby::redirect))
            .app_data(web::PathConfig::default().error_handler(|error, _request| {
                ApiError::not_found(format!("no such resource: {error}")).into()
            }))
            .app_data(
                web::QueryConfig::default().error_handler(|error, _request| {
                    ApiError::bad_request(None, format!("bad query: {error}")).into()
                }),
            )
            .configure(api::routes)
            .configure(dashboard::routes)
            .default_service(web::to(|| async {
                ApiError::not_found("no such resource".to_string())
            }))
    })
    // Requests are answered by the actors; one HTTP thread only carries bytes.
    .workers(1)
    .disable_signals();
    let server = match tls {
        Some(config) => server.listen_rustls_0_23(listener, (*config).clone())?,
        None => server.listen(listener)?,
    };
    Ok(server.run())
}
