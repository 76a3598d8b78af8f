//! The coordinator's front: its protocol port, which answers from the moment it is bound.
//!
//! Until the coordinator leads, a peer that proves it holds a secret is told where the leader is
//! ([`FromCoordinator::NotLeader`]) and the connection closes: a standby queues nothing. Once
//! the coordinator leads, every connection becomes a [`Session`] with the actors behind it. A
//! peer that arrives while this coordinator leads but its actors are still starting (the ledger
//! is being replayed) waits for them instead of being sent away (see
//! [`serving_or_leader`]).

use crate::actors::session::handshake::{hello_refusal, proof_refusal};
use crate::actors::session::{Session, SessionContext, Transport};
use crate::ha::waiting::serving_or_leader;
use crate::ha::{Cluster, MemberRole};
use crate::net::auth::{self, Secret};
use crate::net::codec::FrameCodec;
use crate::net::protocol::{FromCoordinator, Role, ToCoordinator};
use futures::{SinkExt, StreamExt};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::codec::Framed;

/// What the accept loop needs, whether the coordinator leads or not.
pub(super) struct Gate {
    /// The client role's secret.
    pub client_secret: Option<Secret>,
    /// The worker role's secret.
    pub worker_secret: Option<Secret>,
    /// The largest frame accepted.
    pub max_frame: usize,
    /// How long a peer has to authenticate.
    pub handshake_timeout: Duration,
    /// Who leads.
    pub cluster: watch::Receiver<Cluster>,
    /// The sessions' context once the coordinator leads.
    pub serving: watch::Sender<Option<Arc<SessionContext>>>,
    /// Connections open now.
    pub open: Arc<AtomicUsize>,
}

impl Gate {
    /// Takes an accepted connection (its TLS handshake done).
    fn admit(self: &Arc<Self>, transport: Transport, peer: SocketAddr) {
        let serving = self.serving.borrow().clone();
        if let Some(shared) = serving {
            Session::start(transport, peer, shared);
            return;
        }
        let gate = self.clone();
        actix_rt::spawn(async move {
            let serving = gate.serving.subscribe();
            let cluster = gate.cluster.clone();
            match serving_or_leader(serving, cluster, gate.handshake_timeout).await {
                Ok(shared) => {
                    Session::start(transport, peer, shared);
                }
                Err(leader) => {
                    let leader = leader.map(|leader| leader.address);
                    let exchange = gate.not_leader(transport, peer, leader);
                    let _ = tokio::time::timeout(gate.handshake_timeout, exchange).await;
                    gate.open.fetch_sub(1, Ordering::Relaxed);
                }
            }
        });
    }

    fn secret(&self, role: Role) -> Option<&Secret> {
        match role {
            Role::Client => self.client_secret.as_ref(),
            Role::Worker => self.worker_secret.as_ref(),
        }
    }

    /// The handshake of a standby: the same checks as a session's, and `NotLeader` where the
    /// welcome would be.
    async fn not_leader(&self, transport: Transport, peer: SocketAddr, leader: Option<String>) {
        let codec = FrameCodec::<ToCoordinator, FromCoordinator>::new(self.max_frame);
        let mut framed = Framed::new(transport.boxed(), codec);
        let refuse = |reason: String| {
            tracing::warn!(%peer, %reason, "refusing connection");
            FromCoordinator::Refused {
                reason,
                permanent: true,
            }
        };
        let Some(Ok(ToCoordinator::Hello {
            version,
            role,
            nonce: peer_nonce,
        })) = framed.next().await
        else {
            return;
        };
        if let Some(reason) = hello_refusal(version, role, self.secret(role), peer) {
            let _ = framed.send(refuse(reason)).await;
            return;
        }
        let nonce = auth::nonce();
        if framed
            .send(FromCoordinator::Challenge { nonce })
            .await
            .is_err()
        {
            return;
        }
        let Some(Ok(ToCoordinator::Proof { mac })) = framed.next().await else {
            return;
        };
        let secret = self.secret(role);
        if let Some(reason) = proof_refusal(role, secret, &peer_nonce, &nonce, &mac) {
            let _ = framed.send(refuse(reason)).await;
            return;
        }
        tracing::debug!(%peer, role = role.as_str(), leader = ?leader, "standby: sent a peer to the leader");
        let _ = framed.send(FromCoordinator::NotLeader { leader }).await;
        let _ = framed.close().await;
    }
}

/// Accepts connections until told to stop, handing each to the gate.
pub(super) async fn accept_loop(
    listener: TcpListener,
    gate: Arc<Gate>,
    max_connections: usize,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut accepting: watch::Receiver<bool>,
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
        if gate.open.fetch_add(1, Ordering::Relaxed) >= max_connections {
            gate.open.fetch_sub(1, Ordering::Relaxed);
            tracing::warn!(%peer, max_connections, "connection limit reached, closing new connection");
            drop(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        crate::net::keep_alive(&stream);
        let Some(acceptor) = &tls else {
            gate.admit(Transport::Plain(stream), peer);
            continue;
        };
        // The TLS handshake runs beside the accept loop, under the handshake deadline.
        let acceptor = acceptor.clone();
        let gate = gate.clone();
        actix_rt::spawn(async move {
            let deadline = gate.handshake_timeout;
            let failure = match tokio::time::timeout(deadline, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => {
                    gate.admit(Transport::Tls(Box::new(stream)), peer);
                    return;
                }
                Ok(Err(error)) => error.to_string(),
                Err(_) => format!("no TLS handshake within {deadline:?}"),
            };
            // Info, not a warning: port scanners and health checks do this all day.
            tracing::info!(%peer, reason = %failure, "TLS handshake failed, closing connection");
            gate.open.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// Says in the log when this coordinator's role or its leader changes.
pub(super) async fn log_changes(mut cluster: watch::Receiver<Cluster>) {
    let mut said: Option<(MemberRole, Option<String>)> = None;
    loop {
        let now = {
            let now = cluster.borrow_and_update();
            (
                now.role,
                now.leader.as_ref().map(|leader| leader.address.clone()),
            )
        };
        if said.as_ref() != Some(&now) {
            match &now {
                (MemberRole::Leader, _) => {
                    tracing::info!("this coordinator holds the ledger's lease: it leads")
                }
                (MemberRole::Standby, Some(leader)) => tracing::info!(
                    %leader,
                    "standby: the leader is {leader}; peers that connect here are sent there"
                ),
                (MemberRole::Standby, None) => {
                    tracing::info!("standby: no coordinator leads the ledger yet")
                }
            }
            said = Some(now);
        }
        if cluster.changed().await.is_err() {
            return;
        }
    }
}
