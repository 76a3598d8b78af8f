//! Who leads: the lease row, the campaign for it, and its renewal.
//!
//! The lease is one row (`lease`: holder, address, http, epoch, expires_at), judged by the
//! database's clock only (`now()`), so the coordinators' clocks never need to agree. A standby
//! polls it about every ttl/4 and takes it, once expired, with one
//! `UPDATE ... SET epoch = epoch + 1 ... WHERE expires_at < now()`: of two standbys trying at
//! once, the row lock lets one win. The leader renews it as often, by epoch, and on this machine
//! counts its lease from when each renewal was *sent*, less a margin, so that it stops assigning
//! before the database would let another coordinator take over.
//!
//! Each coordinator also keeps a row in `coordinators` fresh, so every one of them can say who
//! else is there ([`Cluster::members`]).

use super::connect::{chain, classify, Failure, Target};
use super::replay::{replay, ReplayError};
use super::writer::{self, Connection};
use super::{schema, Health, Link, PgRuntime, PostgresStore, Reader, Shared};
use crate::ha::{Cluster, Deposed, Leadership, LeaseClock, Member, MemberRole, Peer, Term};
use crate::metrics::Metrics;
use crate::storage::store::StoreError;
use futures::future::BoxFuture;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio_postgres::Client;

/// How often a wait for an unreachable database is said in the log.
const WAIT_LOG_EVERY: Duration = Duration::from_secs(5);

/// Coordinators not heard from for this many TTLs are no longer listed.
const MEMBER_TTLS: u32 = 3;

/// Leadership of a ledger in PostgreSQL.
pub struct PgLeadership {
    target: Target,
    ttl: Duration,
    metrics: Arc<Metrics>,
    runtime: Arc<PgRuntime>,
}

impl PgLeadership {
    /// Reads the `--ledger` URL (a malformed one is refused here) and starts the store's
    /// runtime; nothing is connected before [`Leadership::campaign`].
    pub fn new(
        url: &str,
        lease_ttl: Duration,
        metrics: Arc<Metrics>,
    ) -> Result<PgLeadership, StoreError> {
        let shown = super::hide_password(url);
        let refuse = |reason: String| StoreError::Open {
            path: PathBuf::from(&shown),
            reason,
        };
        if lease_ttl < Duration::from_millis(100) {
            return Err(refuse(format!(
                "a lease TTL of {lease_ttl:?} is too short to renew; give at least 100ms"
            )));
        }
        let mut target = Target::parse(url).map_err(refuse)?;
        target.end_idle_transactions_after(lease_ttl);
        let runtime = Arc::new(PgRuntime::start().map_err(refuse)?);
        Ok(PgLeadership {
            target,
            ttl: lease_ttl,
            metrics,
            runtime,
        })
    }
}

impl Leadership for PgLeadership {
    fn campaign(
        &self,
        me: Peer,
        cluster: watch::Sender<Cluster>,
    ) -> BoxFuture<'static, Result<Term, StoreError>> {
        let campaign = Campaign {
            target: self.target.clone(),
            ttl: self.ttl,
            metrics: self.metrics.clone(),
            runtime: self.runtime.clone(),
            holder: format!("{} (pid {})", me.address, std::process::id()),
            me,
            cluster,
            last_wait_logged: None,
        };
        let running = self.runtime.handle.spawn(campaign.run());
        Box::pin(async move { running.await.map_err(|_| StoreError::Closed)? })
    }
}

struct Campaign {
    target: Target,
    ttl: Duration,
    metrics: Arc<Metrics>,
    runtime: Arc<PgRuntime>,
    me: Peer,
    holder: String,
    cluster: watch::Sender<Cluster>,
    last_wait_logged: Option<Instant>,
}

impl Campaign {
    fn refuse(&self, reason: String) -> StoreError {
        StoreError::Open {
            path: PathBuf::from(&self.target.shown),
            reason,
        }
    }

    /// Waits a moment for an unreachable database, saying so every few seconds.
    async fn wait(&mut self, reason: &str) {
        if self
            .last_wait_logged
            .is_none_or(|logged| logged.elapsed() >= WAIT_LOG_EVERY)
        {
            tracing::warn!(ledger = %self.target.shown, %reason, "waiting for the ledger database");
            self.last_wait_logged = Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    /// A connection, once the database answers; refused at once if it never will.
    async fn connect(&mut self) -> Result<Client, StoreError> {
        loop {
            match self.target.connect().await {
                Ok(client) => {
                    if self.last_wait_logged.take().is_some() {
                        tracing::info!(ledger = %self.target.shown, "ledger database reached");
                    }
                    return Ok(client);
                }
                Err(error) => match classify(&error, &self.target) {
                    Failure::Refused(reason) => return Err(self.refuse(reason)),
                    Failure::Unreachable(reason) => self.wait(&reason).await,
                },
            }
        }
    }

    async fn run(mut self) -> Result<Term, StoreError> {
        let mut client = self.connect().await?;
        loop {
            match schema::prepare(&mut client, &self.target).await {
                Ok(()) => break,
                Err(Failure::Refused(reason)) => return Err(self.refuse(reason)),
                Err(Failure::Unreachable(reason)) => {
                    self.wait(&reason).await;
                    client = self.connect().await?;
                }
            }
        }
        tracing::info!(ledger = %self.target.shown, "standing by for the ledger's lease");
        let (epoch, sent) = loop {
            let tick = Instant::now();
            match self.standby_tick(&client).await {
                Ok(Some(won)) => break won,
                Ok(None) => tokio::time::sleep_until((tick + self.ttl / 4).into()).await,
                Err(error) => match classify(&error, &self.target) {
                    Failure::Refused(reason) => return Err(self.refuse(reason)),
                    Failure::Unreachable(reason) => {
                        self.wait(&reason).await;
                        client = self.connect().await?;
                    }
                },
            }
        };
        let (deposed, _) = watch::channel(None);
        let shared = Arc::new(Shared {
            target: self.target.clone(),
            ttl: self.ttl,
            epoch,
            clock: LeaseClock::until(sent + self.ttl - self.ttl / 4),
            deposed,
            health: Health::default(),
            closing: AtomicBool::new(false),
        });
        tracing::info!(
            epoch,
            "this coordinator holds the ledger's lease; replaying the ledger"
        );
        // Renewed from now on: a long replay must not let the lease lapse.
        let lease = LeaseKeeper {
            shared: shared.clone(),
            client: Some(client),
            me: self.me.clone(),
            cluster: self.cluster.clone(),
        };
        self.runtime.handle.spawn(lease.run());
        match self.open(&shared).await {
            Ok(term) => Ok(term),
            Err(error) => {
                // Give the lease up: this coordinator cannot lead.
                shared.closing.store(true, Ordering::Release);
                shared.clock.end();
                Err(error)
            }
        }
    }

    /// Replays the ledger and starts the store for the term of `shared.epoch`.
    async fn open(&mut self, shared: &Arc<Shared>) -> Result<Term, StoreError> {
        let (connection, replayed) = loop {
            if let Some(deposed) = shared.deposed() {
                return Err(StoreError::Deposed(deposed));
            }
            let mut client = self.connect().await?;
            let failed = match replay(&mut client, shared.epoch).await {
                Ok(replayed) => match Connection::new(client).await {
                    Ok(connection) => break (connection, replayed),
                    Err(error) => error,
                },
                Err(ReplayError::Damaged(error)) => {
                    return Err(self.refuse(format!("cannot read it back: {error}")))
                }
                Err(ReplayError::Database(error)) => error,
            };
            match classify(&failed, &self.target) {
                Failure::Refused(reason) => {
                    return Err(self.refuse(format!("cannot read it back: {reason}")))
                }
                Failure::Unreachable(reason) => self.wait(&reason).await,
            }
        };
        let (writes, tasks) = mpsc::unbounded_channel();
        self.runtime.handle.spawn(writer::run(
            shared.clone(),
            Some(connection),
            tasks,
            self.metrics.clone(),
        ));
        let store = PostgresStore {
            shared: shared.clone(),
            writes,
            reader: Arc::new(Reader {
                shared: shared.clone(),
                client: tokio::sync::Mutex::new(None),
            }),
            runtime: self.runtime.clone(),
        };
        let mut deposed = shared.deposed.subscribe();
        tracing::info!(
            epoch = shared.epoch,
            jobs = replayed.unfinished.len(),
            "leading the ledger"
        );
        Ok(Term {
            store: Arc::new(store),
            replay: replayed,
            lease: shared.clock.clone(),
            deposed: Box::pin(async move {
                loop {
                    if let Some(deposed) = deposed.borrow_and_update().clone() {
                        return deposed;
                    }
                    if deposed.changed().await.is_err() {
                        futures::future::pending::<()>().await;
                    }
                }
            }),
        })
    }

    /// One look at the lease as a standby: takes it if it has expired.
    async fn standby_tick(
        &self,
        client: &Client,
    ) -> Result<Option<(u64, Instant)>, tokio_postgres::Error> {
        heartbeat(client, &self.me, MemberRole::Standby).await?;
        let (lease, members) = look(client, self.ttl).await?;
        publish(
            &self.cluster,
            &self.me,
            MemberRole::Standby,
            &lease,
            members,
        );
        if lease.live {
            return Ok(None);
        }
        let sent = Instant::now();
        let won = client
            .query_opt(
                "UPDATE lease SET epoch = epoch + 1, holder = $1, address = $2, http = $3,
                     expires_at = now() + $4::float8 * interval '1 millisecond'
                 WHERE id = 1 AND expires_at < now()
                 RETURNING epoch",
                &[
                    &self.holder,
                    &self.me.address,
                    &self.me.http,
                    &millis(self.ttl),
                ],
            )
            .await?;
        let Some(won) = won else {
            return Ok(None);
        };
        let epoch = won.get::<_, i64>(0) as u64;
        let (lease, members) = look(client, self.ttl).await?;
        publish(&self.cluster, &self.me, MemberRole::Leader, &lease, members);
        Ok(Some((epoch, sent)))
    }
}

/// How soon the lease keeper tries again after it could not reach the database.
const RETRY_WHILE_AWAY: Duration = Duration::from_millis(250);

/// The leader's side of the lease: renews it, keeps this coordinator's row fresh, publishes
/// who is there, and notices when another coordinator has taken over.
struct LeaseKeeper {
    shared: Arc<Shared>,
    client: Option<Client>,
    me: Peer,
    cluster: watch::Sender<Cluster>,
}

impl LeaseKeeper {
    async fn run(mut self) {
        let ttl = self.shared.ttl;
        loop {
            let tick = Instant::now();
            if self.shared.closing.load(Ordering::Acquire) {
                return;
            }
            if self.client.as_ref().is_none_or(|client| client.is_closed()) {
                self.client = match tokio::time::timeout(ttl, self.shared.target.connect()).await {
                    // A renewal the keeper stopped waiting for is ended by the server too, so
                    // abandoned ones never pile up on the lease row.
                    Ok(Ok(client)) => match client
                        .batch_execute(&format!(
                            "SET statement_timeout = {}",
                            (ttl / 2).as_millis().max(1)
                        ))
                        .await
                    {
                        Ok(()) => Some(client),
                        Err(error) => {
                            self.shared.health.down(Link::Lease, chain(&error));
                            None
                        }
                    },
                    Ok(Err(error)) => {
                        self.shared.health.down(Link::Lease, chain(&error));
                        None
                    }
                    Err(_) => {
                        self.shared
                            .health
                            .down(Link::Lease, "no answer to a connection".into());
                        None
                    }
                };
            }
            let mut renewed = false;
            if let Some(client) = &self.client {
                match tokio::time::timeout(ttl / 2, self.tick(client)).await {
                    Ok(Ok(())) => {
                        self.shared.health.up(Link::Lease);
                        renewed = true;
                    }
                    // Said once an outage (it is tried again four times a second meanwhile).
                    Ok(Err(error)) => {
                        if self.shared.health.reason(Link::Lease).is_none() {
                            tracing::warn!(error = %chain(&error), "cannot renew the ledger's lease");
                        }
                        self.shared.health.down(Link::Lease, chain(&error));
                    }
                    Err(_) => {
                        if self.shared.health.reason(Link::Lease).is_none() {
                            tracing::warn!(
                                "the ledger database did not answer a lease renewal in time"
                            );
                        }
                        self.shared
                            .health
                            .down(Link::Lease, "no answer to a lease renewal".into());
                        self.client = None;
                    }
                }
            }
            // Tried again soon while the database is away: the link counts as down until then,
            // and reads are refused while it does, so a database back after a failover must
            // not wait a whole renewal period to be seen.
            let pause = if renewed {
                ttl / 4
            } else {
                (ttl / 4).min(RETRY_WHILE_AWAY)
            };
            tokio::time::sleep_until((tick + pause).into()).await;
        }
    }

    async fn tick(&self, client: &Client) -> Result<(), tokio_postgres::Error> {
        let shared = &self.shared;
        if shared.deposed().is_none() {
            let sent = Instant::now();
            // A group commit holds the lease row from its fence to its end, and renews the
            // lease itself at the end: a renewal that finds the row locked skips it rather than
            // wait (waiting, it would time out and call a busy database away).
            let row = client
                .query_one(
                    "WITH free AS (SELECT epoch FROM lease WHERE id = 1 FOR UPDATE SKIP LOCKED),
                     renewed AS (
                         UPDATE lease SET expires_at = now() + $2::float8 * interval '1 millisecond'
                         WHERE id = 1 AND epoch = $1 AND EXISTS (SELECT 1 FROM free)
                         RETURNING 1)
                     SELECT (SELECT count(*) FROM free), (SELECT count(*) FROM renewed)",
                    &[&(shared.epoch as i64), &millis(shared.ttl)],
                )
                .await?;
            let (free, renewed): (i64, i64) = (row.get(0), row.get(1));
            if renewed == 1 {
                shared.renewed(sent);
            } else if free == 1 {
                let (lease, _) = look(client, shared.ttl).await?;
                shared.depose(Deposed::Superseded {
                    holder: lease.address.unwrap_or_else(|| "?".into()),
                    epoch: lease.epoch,
                    mine: shared.epoch,
                });
            }
        }
        let role = match shared.deposed() {
            None => MemberRole::Leader,
            Some(_) => MemberRole::Standby,
        };
        heartbeat(client, &self.me, role).await?;
        let (lease, members) = look(client, shared.ttl).await?;
        publish(&self.cluster, &self.me, role, &lease, members);
        Ok(())
    }
}

/// The lease row, as read.
struct LeaseRow {
    address: Option<String>,
    http: Option<String>,
    epoch: u64,
    /// Not expired, by the database's clock.
    live: bool,
}

async fn heartbeat(
    client: &Client,
    me: &Peer,
    role: MemberRole,
) -> Result<(), tokio_postgres::Error> {
    let role = match role {
        MemberRole::Leader => "leader",
        MemberRole::Standby => "standby",
    };
    client
        .execute(
            "INSERT INTO coordinators (address, http, role, last_seen) VALUES ($1, $2, $3, now())
             ON CONFLICT (address) DO UPDATE
                 SET http = EXCLUDED.http, role = EXCLUDED.role, last_seen = EXCLUDED.last_seen",
            &[&me.address, &me.http, &role],
        )
        .await
        .map(|_| ())
}

/// The lease and the coordinators seen lately, with how long ago each was.
async fn look(
    client: &Client,
    ttl: Duration,
) -> Result<(LeaseRow, Vec<(Peer, u64)>), tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT address, http, epoch, expires_at > now() FROM lease WHERE id = 1",
            &[],
        )
        .await?;
    let lease = LeaseRow {
        address: row.get(0),
        http: row.get(1),
        epoch: row.get::<_, i64>(2) as u64,
        live: row.get(3),
    };
    let members = client
        .query(
            "SELECT address, http,
                    GREATEST(0, (EXTRACT(EPOCH FROM now() - last_seen) * 1000))::bigint
             FROM coordinators
             WHERE last_seen > now() - $1::float8 * interval '1 millisecond'
             ORDER BY address",
            &[&millis(ttl * MEMBER_TTLS)],
        )
        .await?
        .iter()
        .map(|row| {
            (
                Peer {
                    address: row.get(0),
                    http: row.get(1),
                },
                row.get::<_, i64>(2) as u64,
            )
        })
        .collect();
    Ok((lease, members))
}

fn publish(
    cluster: &watch::Sender<Cluster>,
    me: &Peer,
    role: MemberRole,
    lease: &LeaseRow,
    members: Vec<(Peer, u64)>,
) {
    let leader = match (&lease.address, lease.live) {
        (Some(address), true) => Some(Peer {
            address: address.clone(),
            http: lease.http.clone(),
        }),
        _ => None,
    };
    let members = members
        .into_iter()
        .map(|(peer, last_seen_ms)| Member {
            role: match &leader {
                Some(leader) if leader.address == peer.address => MemberRole::Leader,
                _ => MemberRole::Standby,
            },
            peer,
            last_seen_ms,
        })
        .collect();
    cluster.send_replace(Cluster {
        me: me.clone(),
        role,
        leader,
        members,
    });
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}
