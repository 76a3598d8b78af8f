//! The leadership of a SQLite ledger: one coordinator per data directory (the store's
//! `ledger.lock` sees to that), so it leads at once, and for ever.

use super::{Cluster, Deposed, Leadership, LeaseClock, Member, MemberRole, Peer, Term};
use crate::metrics::Metrics;
use crate::storage::sqlite::SqliteStore;
use crate::storage::store::StoreError;
use futures::future::BoxFuture;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::watch;

/// Leads the SQLite ledger in a data directory.
pub struct SqliteLeadership {
    data_dir: PathBuf,
    metrics: Arc<Metrics>,
}

impl SqliteLeadership {
    /// The ledger in `data_dir`, its commits timed in `metrics`.
    pub fn new(data_dir: impl Into<PathBuf>, metrics: Arc<Metrics>) -> Self {
        SqliteLeadership {
            data_dir: data_dir.into(),
            metrics,
        }
    }

    /// Opens the ledger on this thread and leads: what [`Leadership::campaign`] does, for a
    /// caller that may block (nothing else runs yet).
    pub fn lead_now(
        &self,
        me: &Peer,
        cluster: &watch::Sender<Cluster>,
    ) -> Result<Term, StoreError> {
        announce(me, cluster);
        term(SqliteStore::open(&self.data_dir, self.metrics.clone())?)
    }
}

/// Publishes this coordinator as the only one, and the leader.
fn announce(me: &Peer, cluster: &watch::Sender<Cluster>) {
    cluster.send_replace(Cluster {
        me: me.clone(),
        role: MemberRole::Leader,
        leader: Some(me.clone()),
        members: vec![Member {
            peer: me.clone(),
            role: MemberRole::Leader,
            last_seen_ms: 0,
        }],
    });
}

fn term((store, replay): (SqliteStore, crate::storage::store::Replay)) -> Result<Term, StoreError> {
    Ok(Term {
        store: Arc::new(store),
        replay,
        lease: LeaseClock::forever(),
        deposed: Box::pin(futures::future::pending::<Deposed>()),
    })
}

impl Leadership for SqliteLeadership {
    fn campaign(
        &self,
        me: Peer,
        cluster: watch::Sender<Cluster>,
    ) -> BoxFuture<'static, Result<Term, StoreError>> {
        // Leader from the start: a peer that connects while the ledger is replayed waits for it
        // rather than being told to look elsewhere.
        announce(&me, &cluster);
        let (data_dir, metrics) = (self.data_dir.clone(), self.metrics.clone());
        Box::pin(async move {
            // Opening replays the whole ledger: off the event loop that serves the ports.
            let opened = tokio::task::spawn_blocking(move || SqliteStore::open(&data_dir, metrics))
                .await
                .map_err(|error| StoreError::Open {
                    path: PathBuf::new(),
                    reason: format!("the thread opening the ledger failed: {error}"),
                })??;
            // Nothing changes later: the front keeps reading the cluster as published.
            drop(cluster);
            term(opened)
        })
    }
}
