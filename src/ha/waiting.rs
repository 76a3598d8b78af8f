//! What the front of a coordinator that does not serve yet does with a peer or request that
//! arrived: serve it once this coordinator leads, or send it to the leader. Shared by the
//! protocol port and the HTTP side, so both decide alike.

use super::{Cluster, MemberRole, Peer};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How long an arrival at a coordinator that knows no leader waits for one to be known, before it
/// is told there is none (a peer then tries the next coordinator on its list, or again).
pub const NO_LEADER_WAIT: Duration = Duration::from_secs(1);

/// The leader, if it is another coordinator than this one.
pub fn other_leader(cluster: &Cluster) -> Option<&Peer> {
    cluster
        .leader
        .as_ref()
        .filter(|leader| **leader != cluster.me)
}

/// Waits until `serving` holds what serves the arrival (`Ok`), or until it is clear it must go
/// to the leader (`Err` with the leader, if one is known). A coordinator that leads but is still
/// starting (its ledger is replayed) keeps the arrival up to `starting_wait`; one that knows no
/// leader, up to [`NO_LEADER_WAIT`], as one may be about to take over.
pub async fn serving_or_leader<T: Clone>(
    mut serving: watch::Receiver<Option<T>>,
    mut cluster: watch::Receiver<Cluster>,
    starting_wait: Duration,
) -> Result<T, Option<Peer>> {
    let arrived = Instant::now();
    let mut cluster_open = true;
    loop {
        if let Some(serves) = serving.borrow_and_update().clone() {
            return Ok(serves);
        }
        let (elsewhere, leading) = {
            let now = cluster.borrow_and_update();
            (other_leader(&now).cloned(), now.role == MemberRole::Leader)
        };
        if elsewhere.is_some() {
            return Err(elsewhere);
        }
        let wait = if leading {
            starting_wait
        } else {
            NO_LEADER_WAIT
        };
        tokio::select! {
            changed = serving.changed() => if changed.is_err() {
                return Err(None);
            },
            changed = cluster.changed(), if cluster_open => if changed.is_err() {
                cluster_open = false;
            },
            _ = tokio::time::sleep_until((arrived + wait).into()) => return Err(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(address: &str) -> Peer {
        Peer {
            address: address.into(),
            http: None,
        }
    }

    fn cluster(role: MemberRole, leader: Option<Peer>) -> Cluster {
        Cluster {
            me: peer("me:7700"),
            role,
            leader,
            members: Vec::new(),
        }
    }

    #[tokio::test]
    async fn an_arrival_is_served_sent_to_the_leader_or_told_there_is_none() {
        let (serving_tx, serving) = watch::channel(None::<u32>);
        let (cluster_tx, clusters) = watch::channel(cluster(MemberRole::Standby, None));
        let wait = Duration::from_secs(30);

        // Nobody leads: told so, after a short wait.
        let nobody = serving_or_leader(serving.clone(), clusters.clone(), wait).await;
        assert_eq!(nobody, Err(None));

        // Another leads: sent there at once.
        cluster_tx.send_replace(cluster(MemberRole::Standby, Some(peer("b:7700"))));
        let there = serving_or_leader(serving.clone(), clusters.clone(), wait).await;
        assert_eq!(there, Err(Some(peer("b:7700"))));

        // This one leads but is starting: the arrival waits, and is served.
        cluster_tx.send_replace(cluster(MemberRole::Leader, Some(peer("me:7700"))));
        let waiting = tokio::spawn(serving_or_leader(serving.clone(), clusters.clone(), wait));
        tokio::task::yield_now().await;
        serving_tx.send_replace(Some(7));
        assert_eq!(waiting.await.unwrap(), Ok(7));

        // Itself, having stepped down, is no leader to send anyone to.
        serving_tx.send_replace(None);
        cluster_tx.send_replace(cluster(MemberRole::Standby, Some(peer("me:7700"))));
        assert_eq!(other_leader(&clusters.borrow()), None);
    }
}
