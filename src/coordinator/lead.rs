//! A coordinator that holds the ledger: the actors started from its [`Term`], its ports switched
//! from standby answers to serving them, and its step-down when the term ends.

use super::{CoordinatorHandle, Front};
use crate::actors::fleet::{Fleet, FleetContext, FleetStepDown, Pool};
use crate::actors::ledger::{Ledger, LedgerConfig, StepDown};
use crate::actors::registry::{Registry, WorkerDirectory};
use crate::actors::scheduler::Scheduler;
use crate::actors::session::SessionContext;
use crate::ha::{Cluster, Deposed, MemberRole, Term};
use crate::http::HttpState;
use actix::prelude::*;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Starts the actors from `term` and serves them on the front's ports.
pub(super) fn serve(front: Front, term: Term) -> CoordinatorHandle {
    let Front {
        config,
        local_addr,
        http_addr,
        cluster_tx,
        cluster,
        gate,
        http_serving,
        accepting,
        ..
    } = front;
    let Term {
        store,
        replay,
        lease,
        deposed,
    } = term;
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
    // The Ledger says when it steps down; the handle hears it once the ports stopped serving.
    let (ledger_stepped_down, mut ledger_said) = watch::channel(None::<Deposed>);
    let (stepped_down_tx, stepped_down) = watch::channel(None::<Deposed>);
    let metrics = config.metrics.clone();
    // Where followers of results hear that more are on disk.
    let recorded = Arc::new(watch::channel(replay.last_cursor).0);

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
            lease: lease.clone(),
            stepped_down: Arc::new(ledger_stepped_down),
            recorded: recorded.clone(),
            max_result_bytes: config.max_result_bytes,
            call_write_delay: config.call_write_delay,
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
        lease.clone(),
    ));
    registry_ctx.run(Registry::new(
        scheduler.clone(),
        directory,
        config.heartbeat_timeout,
    ));

    let pools = config
        .pools
        .iter()
        .map(|pool| Pool {
            config: Arc::new(pool.clone()),
            provider: crate::fleet::provider_for(pool, config.worker_secret.as_ref(), &lease),
        })
        .collect();
    let fleet = Fleet::new(
        pools,
        FleetContext {
            cluster: ledger_id.to_string(),
            coordinator: worker_addresses(&cluster.borrow()),
            scheduler: scheduler.clone(),
            lease: lease.clone(),
        },
    )
    .start();

    let shared = Arc::new(SessionContext {
        registry: registry.clone(),
        scheduler: scheduler.clone(),
        ledger: ledger.clone(),
        fleet: fleet.clone(),
        client_secret: config.client_secret.clone(),
        worker_secret: config.worker_secret.clone(),
        max_frame: config.max_frame,
        handshake_timeout: config.handshake_timeout,
        // At least three beats per timeout, so one late beat never costs a healthy worker.
        heartbeat_interval: config.heartbeat_interval.min(config.heartbeat_timeout / 3),
        open_sessions: gate.open.clone(),
        max_write_backlog: config.max_write_buffer as u64,
        max_worker_slots: config.max_worker_slots,
        max_result_bytes: config.max_result_bytes,
        recorded: recorded.clone(),
        cluster: cluster.clone(),
        lease: lease.clone(),
    });
    gate.serving.send_replace(Some(shared));
    http_serving.send_replace(Some(Arc::new(HttpState {
        ledger: ledger.clone(),
        registry: registry.clone(),
        scheduler: scheduler.clone(),
        fleet: fleet.clone(),
        metrics,
        cluster: cluster.clone(),
        recorded,
    })));
    tracing::info!(address = %local_addr, "serving: the ledger is open and the actors run");

    // The term ends when another coordinator takes the lease (said by the leadership), or when
    // a commit finds so (said by the Ledger): either way the Ledger steps down, and the ports
    // stop serving.
    let ledger_told = ledger.clone();
    let mut watching = ledger_said.clone();
    actix_rt::spawn(async move {
        tokio::select! {
            why = deposed => ledger_told.do_send(StepDown(why)),
            _ = watching.wait_for(Option::is_some) => {}
        }
    });
    let accepting_stop = accepting.clone();
    let fleet_told = fleet.clone();
    actix_rt::spawn(async move {
        let Ok(why) = ledger_said
            .wait_for(Option::is_some)
            .await
            .map(|why| why.clone())
        else {
            return;
        };
        let _ = accepting_stop.send(false);
        // Machines are the next leader's to launch and terminate.
        fleet_told.do_send(FleetStepDown);
        gate.serving.send_replace(None);
        http_serving.send_replace(None);
        // No longer the leader: nothing that arrives waits for this one to serve.
        cluster_tx.send_modify(|cluster| {
            cluster.role = MemberRole::Standby;
            if cluster.leader.as_ref() == Some(&cluster.me) {
                cluster.leader = None;
            }
        });
        stepped_down_tx.send_replace(why);
    });
    CoordinatorHandle {
        local_addr,
        http_addr,
        ledger_id,
        ledger,
        registry,
        scheduler,
        fleet,
        cluster,
        accepting,
        stepped_down,
    }
}

/// The addresses the fleet's workers are given: this coordinator's first, then every other
/// coordinator seen on the ledger, so a worker whose leader fails finds the next one.
fn worker_addresses(cluster: &Cluster) -> String {
    let mut addresses = vec![cluster.me.address.as_str()];
    for member in &cluster.members {
        if !addresses.contains(&member.peer.address.as_str()) {
            addresses.push(&member.peer.address);
        }
    }
    addresses.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ha::{Member, Peer};

    #[test]
    fn fleet_workers_are_given_every_coordinator_this_one_first() {
        let peer = |address: &str| Peer {
            address: address.into(),
            http: None,
        };
        let member = |address: &str| Member {
            peer: peer(address),
            role: MemberRole::Standby,
            last_seen_ms: 0,
        };
        let cluster = Cluster {
            me: peer("b:7700"),
            role: MemberRole::Leader,
            leader: Some(peer("b:7700")),
            members: vec![member("a:7700"), member("b:7700"), member("c:7700")],
        };
        assert_eq!(worker_addresses(&cluster), "b:7700,a:7700,c:7700");
    }
}
