//! More than one coordinator: which one leads, and how the others know.
//!
//! A coordinator first *campaigns* ([`Leadership::campaign`]): it serves as a standby (its ports
//! answer with the leader's address) until it holds the ledger's lease, and then gets a [`Term`]:
//! the opened store, what it holds, and the lease it leads under. SQLite has one coordinator per
//! data directory, so it leads at once and for ever; PostgreSQL has a lease row that every commit
//! checks and renews (see `storage::postgres`).
//!
//! What the front of the coordinator (its sockets and HTTP side) needs to know is published in a
//! [`Cluster`] watch: this coordinator's role, who leads, and who else is there.

pub mod sqlite;
pub mod waiting;

use crate::storage::store::{LedgerStore, Replay, StoreError};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where a coordinator can be reached, as it advertises itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    /// Its binary-protocol address (`host:port`), as workers and clients should dial it.
    pub address: String,
    /// Its HTTP address (`host:port`), if it serves HTTP.
    pub http: Option<String>,
}

/// What a coordinator is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberRole {
    /// It holds the lease and serves.
    Leader,
    /// It waits to take over, and sends peers to the leader.
    Standby,
}

/// A coordinator seen on the ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Where it is.
    pub peer: Peer,
    /// What it does.
    pub role: MemberRole,
    /// How long ago it was last heard from, by the database's clock.
    pub last_seen_ms: u64,
}

/// What the front of a coordinator answers with: published by the campaign and the term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    /// This coordinator.
    pub me: Peer,
    /// Its role now.
    pub role: MemberRole,
    /// The leader, if one is known (this coordinator itself when it leads).
    pub leader: Option<Peer>,
    /// Every coordinator recently seen on the ledger, this one included.
    pub members: Vec<Member>,
}

/// A lease's deadline on this machine's monotonic clock: the leader assigns work only while it
/// is in the future. Renewals push it forward; it is set conservatively (from the moment the
/// renewal was *sent*, less a margin), so it passes before the database's own expiry does.
#[derive(Debug, Clone)]
pub struct LeaseClock {
    origin: Instant,
    /// Microseconds after `origin`; `u64::MAX` for a lease that never ends.
    deadline_us: Arc<AtomicU64>,
}

impl LeaseClock {
    /// A lease that never ends (SQLite: one coordinator per data directory).
    pub fn forever() -> Self {
        LeaseClock {
            origin: Instant::now(),
            deadline_us: Arc::new(AtomicU64::new(u64::MAX)),
        }
    }

    /// A lease valid until `deadline`.
    pub fn until(deadline: Instant) -> Self {
        let clock = LeaseClock {
            origin: Instant::now(),
            deadline_us: Arc::new(AtomicU64::new(0)),
        };
        clock.extend_to(deadline);
        clock
    }

    /// Moves the deadline to `deadline` if that is later.
    pub fn extend_to(&self, deadline: Instant) {
        let us = deadline.saturating_duration_since(self.origin).as_micros() as u64;
        self.deadline_us.fetch_max(us, Ordering::AcqRel);
    }

    /// Ends the lease now: nothing more is assigned under it.
    pub fn end(&self) {
        self.deadline_us.store(0, Ordering::Release);
    }

    /// Whether work may be assigned under the lease now.
    pub fn is_valid(&self) -> bool {
        self.remaining() > Duration::ZERO
    }

    /// How long the lease still runs on this machine's clock.
    pub fn remaining(&self) -> Duration {
        match self.deadline_us.load(Ordering::Acquire) {
            u64::MAX => Duration::MAX,
            us => {
                (self.origin + Duration::from_micros(us)).saturating_duration_since(Instant::now())
            }
        }
    }
}

/// Why a leader stopped leading.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Deposed {
    /// Another coordinator took the lease (this one was frozen, cut off, or too slow to renew).
    #[error("deposed: coordinator {holder} took the ledger's lease at epoch {epoch} (this one led epoch {mine})")]
    Superseded {
        /// Who holds it now.
        holder: String,
        /// Its epoch.
        epoch: u64,
        /// This coordinator's epoch.
        mine: u64,
    },
}

/// A coordinator's time as leader.
pub struct Term {
    /// The opened store: its commits fail with [`StoreError::Deposed`] once another coordinator
    /// holds the lease.
    pub store: Arc<dyn LedgerStore>,
    /// What the store held when the term began.
    pub replay: Replay,
    /// The lease's deadline here; work is assigned only while it runs.
    pub lease: LeaseClock,
    /// Resolves when the term ends because another coordinator took the lease; never, for a
    /// store with one coordinator.
    pub deposed: BoxFuture<'static, Deposed>,
}

/// How a coordinator becomes the one that leads a ledger.
pub trait Leadership: Send + Sync {
    /// Serves as a standby until this coordinator holds the lease, publishing who leads in
    /// `cluster` meanwhile (and keeping it up to date during the term), then opens the ledger
    /// and answers with the term. Fails if the ledger cannot be used at all (a malformed URL, a
    /// wrong password, a schema from a newer drover, no rights to create tables); an unreachable
    /// database is waited for, and said so in the log.
    fn campaign(
        &self,
        me: Peer,
        cluster: tokio::sync::watch::Sender<Cluster>,
    ) -> BoxFuture<'static, Result<Term, StoreError>>;
}
