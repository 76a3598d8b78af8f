//! The coordinator's actors. Each owns its state and is its only writer; messages are the only
//! way in.

pub mod ledger;
pub mod ledger_client;
pub mod ledger_stats;
pub mod queue;
pub mod registry;
pub mod scheduler;
pub mod session;

use crate::status::ClusterStatus;
use actix::{Addr, MailboxError};

/// The cluster at a glance, from the Ledger's statistics and the Registry's workers (asked at
/// the same time).
pub async fn cluster_status(
    ledger: &Addr<ledger::Ledger>,
    registry: &Addr<registry::Registry>,
) -> Result<ClusterStatus, MailboxError> {
    let (stats, workers) = futures::join!(
        ledger.send(ledger::Statistics),
        registry.send(registry::ListWorkers)
    );
    Ok(ClusterStatus::assemble(stats?, &workers?))
}
