//! The Session actor: one per socket. It runs the handshake, decodes frames, turns what they ask
//! into the other actors' messages, and what those send back ([`ToWorker`], answers) into
//! frames. Nothing else touches a socket, and only here (and on the HTTP side) do protocol types
//! meet the actors' own.

mod client;
pub mod handshake;
mod results;
mod worker;

pub use worker::ToWorker;

use crate::actors::ledger::{Ledger, ManifestsWritten};
use crate::actors::registry::{LastSeen, Registry, SessionClosed};
use crate::actors::scheduler::{
    AttemptsAcknowledged, AttemptsReleased, ResultsReported, Scheduler, StopAssigning,
};
use crate::job::{now_ms, AttemptResult, WorkerId};
use crate::net::auth::{self, Secret, Side};
use crate::net::backlog::{Backlog, CountingCodec, CountingWriter};
use crate::net::codec::{CodecError, FrameCodec};
use crate::net::protocol::{ClientRequest, FromCoordinator, Role, ToCoordinator, NONCE_LEN};
use actix::io::{FramedWrite, WriteHandler};
use actix::prelude::*;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_util::codec::FramedRead;

/// How long a refused peer has to read its refusal before the socket is dropped.
const REFUSAL_GRACE: Duration = Duration::from_secs(1);
/// The most requests of one client waiting for their answers (the client library sends one at
/// a time).
pub const MAX_IN_FLIGHT: usize = 1024;

/// What every session needs: the other actors and the connection policy.
pub struct SessionContext {
    /// The registry.
    pub registry: Addr<Registry>,
    /// The scheduler.
    pub scheduler: Addr<Scheduler>,
    /// The ledger.
    pub ledger: Addr<Ledger>,
    /// The elastic fleet.
    pub fleet: Addr<crate::actors::fleet::Fleet>,
    /// The client role's secret; without one, clients must connect over loopback.
    pub client_secret: Option<Secret>,
    /// The worker role's secret; without one, workers must connect over loopback.
    pub worker_secret: Option<Secret>,
    /// The largest frame accepted.
    pub max_frame: usize,
    /// How long a peer has to authenticate.
    pub handshake_timeout: Duration,
    /// How often workers are asked to heartbeat.
    pub heartbeat_interval: Duration,
    /// Connections open now (sessions, and a standby's short exchanges before it started
    /// leading), for the connection limit.
    pub open_sessions: Arc<AtomicUsize>,
    /// Who leads and which coordinators there are, for a status.
    pub cluster: tokio::sync::watch::Receiver<crate::ha::Cluster>,
    /// Bytes waiting to be sent to a peer above which it is disconnected (it is not reading).
    pub max_write_backlog: u64,
    /// The most bytes of one attempt's result kept (`--max-result-bytes`), told each worker.
    pub max_result_bytes: usize,
    /// The cursor of the last finished job's record on disk (see
    /// [`LedgerConfig::recorded`](crate::actors::ledger::LedgerConfig::recorded)).
    pub recorded: Arc<tokio::sync::watch::Sender<u64>>,
    /// The most slots one worker may offer.
    pub max_worker_slots: u32,
    /// The lease this coordinator leads under: heartbeats are answered only while it runs, so
    /// workers given several coordinators leave a leader cut off from its database.
    pub lease: crate::ha::LeaseClock,
}

/// An accepted connection, in the clear or inside TLS.
pub enum Transport {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP, its handshake done.
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

type ReadHalf = Box<dyn AsyncRead + Send + Unpin>;
type WriteHalf = Box<dyn AsyncWrite + Send + Unpin>;

impl Transport {
    /// The connection as one stream, for a standby's short exchange.
    pub fn boxed(self) -> crate::net::BoxedStream {
        match self {
            Transport::Plain(stream) => Box::new(stream),
            Transport::Tls(stream) => Box::new(*stream),
        }
    }

    fn split(self) -> (ReadHalf, WriteHalf) {
        match self {
            // The socket's own halves: no lock between reading and writing.
            Transport::Plain(stream) => {
                let (read, write) = stream.into_split();
                (Box::new(read), Box::new(write))
            }
            Transport::Tls(stream) => {
                let (read, write) = tokio::io::split(*stream);
                (Box::new(read), Box::new(write))
            }
        }
    }
}

type Writer = FramedWrite<
    FromCoordinator,
    CountingWriter<WriteHalf>,
    CountingCodec<FrameCodec<ToCoordinator, FromCoordinator>>,
>;

enum Phase {
    AwaitHello,
    AwaitProof {
        role: Role,
        peer_nonce: [u8; NONCE_LEN],
        nonce: [u8; NONCE_LEN],
    },
    Client,
    AwaitRegister,
    Worker(WorkerId),
    /// Told to close; whatever still arrives is ignored.
    Closed,
}

impl Phase {
    fn name(&self) -> &'static str {
        match self {
            Phase::AwaitHello => "the handshake",
            Phase::AwaitProof { .. } => "authentication",
            Phase::Client => "a client session",
            Phase::AwaitRegister => "registration",
            Phase::Worker(_) => "a worker session",
            Phase::Closed => "closing",
        }
    }
}

/// One peer's connection.
pub struct Session {
    peer: SocketAddr,
    shared: Arc<SessionContext>,
    writer: Writer,
    backlog: Backlog,
    in_flight: usize,
    phase: Phase,
    last_seen: LastSeen,
    close_reason: String,
}

impl Session {
    /// Writes a frame for the peer. A peer that has left more than the high-water mark unread
    /// from earlier frames is not reading, and is disconnected instead of growing the
    /// coordinator's memory. (Measured before this frame: one large answer to a peer that reads
    /// is never a reason.)
    fn send(&mut self, ctx: &mut Context<Self>, message: FromCoordinator) {
        if matches!(self.phase, Phase::Closed) {
            return;
        }
        let pending = self.backlog.pending();
        if pending <= self.shared.max_write_backlog {
            self.writer.write(message);
        } else {
            let reason = format!(
                "not reading: {pending} bytes wait to be sent, above the high-water mark of {} bytes",
                self.shared.max_write_backlog
            );
            tracing::warn!(peer = %self.peer, %reason, "disconnecting");
            self.mark_closed(reason);
            ctx.stop();
        }
    }

    /// From now on the session is closing: its worker, if it has one, is lost for `reason`,
    /// once (a later `stopped` does not report it again).
    fn mark_closed(&mut self, reason: String) {
        if let Phase::Worker(worker) = self.phase {
            self.shared.registry.do_send(SessionClosed {
                worker,
                reason: reason.clone(),
            });
        }
        self.close_reason = reason;
        self.phase = Phase::Closed;
    }

    /// Starts a session on an accepted socket.
    pub fn start(
        stream: Transport,
        peer: SocketAddr,
        shared: Arc<SessionContext>,
    ) -> Addr<Session> {
        Session::create(move |ctx| {
            let (read_half, write_half) = stream.split();
            let max_frame = shared.max_frame;
            ctx.add_stream(FramedRead::new(
                read_half,
                FrameCodec::<ToCoordinator, FromCoordinator>::new(max_frame),
            ));
            let backlog = Backlog::default();
            let writer = FramedWrite::new(
                backlog.counting_writer(write_half),
                backlog.counting_codec(FrameCodec::new(max_frame)),
                ctx,
            );
            Session {
                peer,
                shared,
                writer,
                backlog,
                in_flight: 0,
                phase: Phase::AwaitHello,
                last_seen: Arc::new(AtomicU64::new(now_ms())),
                close_reason: "connection closed".into(),
            }
        })
    }

    /// Refuses the peer with a reason it will show its user, then closes.
    fn refuse(&mut self, ctx: &mut Context<Self>, reason: String) {
        self.close_with(ctx, reason, true);
    }

    /// Closes the connection for a passing reason: the peer may try again.
    fn refuse_for_now(&mut self, ctx: &mut Context<Self>, reason: String) {
        self.close_with(ctx, reason, false);
    }

    fn close_with(&mut self, ctx: &mut Context<Self>, reason: String, permanent: bool) {
        tracing::warn!(peer = %self.peer, %reason, "refusing connection");
        self.writer.write(FromCoordinator::Refused {
            reason: reason.clone(),
            permanent,
        });
        self.mark_closed(reason);
        // Closing the writer flushes the refusal, then stops the session; a peer that does not
        // read it is cut off shortly after anyway.
        self.writer.close();
        ctx.run_later(REFUSAL_GRACE, |_session, ctx| ctx.stop());
    }

    fn on_hello(
        &mut self,
        ctx: &mut Context<Self>,
        version: u16,
        role: Role,
        peer_nonce: [u8; NONCE_LEN],
    ) {
        if let Some(reason) = handshake::hello_refusal(version, role, self.secret(role), self.peer)
        {
            return self.refuse(ctx, reason);
        }
        let nonce = auth::nonce();
        self.send(ctx, FromCoordinator::Challenge { nonce });
        self.phase = Phase::AwaitProof {
            role,
            peer_nonce,
            nonce,
        };
    }

    fn secret(&self, role: Role) -> Option<&Secret> {
        match role {
            Role::Client => self.shared.client_secret.as_ref(),
            Role::Worker => self.shared.worker_secret.as_ref(),
        }
    }

    fn on_proof(&mut self, ctx: &mut Context<Self>, mac: [u8; 32]) {
        let Phase::AwaitProof {
            role,
            peer_nonce,
            nonce,
        } = self.phase
        else {
            return;
        };
        let secret = self.secret(role);
        if let Some(reason) = handshake::proof_refusal(role, secret, &peer_nonce, &nonce, &mac) {
            return self.refuse(ctx, reason);
        }
        let mac = auth::proof(secret, Side::Coordinator, role, &peer_nonce, &nonce);
        self.send(ctx, FromCoordinator::Welcome { mac });
        self.phase = match role {
            Role::Client => Phase::Client,
            Role::Worker => Phase::AwaitRegister,
        };
        tracing::debug!(peer = %self.peer, role = role.as_str(), "peer authenticated");
    }

    fn on_request(&mut self, ctx: &mut Context<Self>, id: u64, body: ClientRequest) {
        if self.in_flight >= MAX_IN_FLIGHT {
            // Each waits for its answer in memory: a client piling them up is cut off.
            self.refuse_for_now(
                ctx,
                format!("more than {MAX_IN_FLIGHT} requests waiting for their answers"),
            );
            return;
        }
        self.in_flight += 1;
        let answer = client::answer(self.shared.clone(), body);
        ctx.spawn(answer.into_actor(self).map(move |body, session, ctx| {
            session.in_flight -= 1;
            session.send(ctx, FromCoordinator::Response { id, body });
        }));
    }
}

impl Actor for Session {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let deadline = self.shared.handshake_timeout;
        ctx.run_later(deadline, move |session, ctx| {
            if matches!(session.phase, Phase::AwaitHello | Phase::AwaitProof { .. }) {
                let reason = format!("no handshake within {:.1}s", deadline.as_secs_f64());
                session.refuse_for_now(ctx, reason);
            }
        });
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.shared.open_sessions.fetch_sub(1, Ordering::Relaxed);
        if let Phase::Worker(worker) = self.phase {
            self.shared.registry.do_send(SessionClosed {
                worker,
                reason: self.close_reason.clone(),
            });
        }
    }
}

impl WriteHandler<CodecError> for Session {
    fn error(&mut self, error: CodecError, _ctx: &mut Self::Context) -> Running {
        tracing::info!(peer = %self.peer, %error, "cannot write to peer, closing");
        self.close_reason = format!("connection failed: {error}");
        Running::Stop
    }
}

impl StreamHandler<Result<ToCoordinator, CodecError>> for Session {
    fn handle(&mut self, frame: Result<ToCoordinator, CodecError>, ctx: &mut Context<Self>) {
        let message = match frame {
            Ok(message) => message,
            Err(CodecError::Http) => {
                tracing::warn!(peer = %self.peer, "a peer spoke HTTP to the protocol port (the dashboard and API are on the --http port), closing connection");
                self.close_reason = "spoke HTTP to the protocol port".into();
                ctx.stop();
                return;
            }
            Err(error) => {
                tracing::warn!(peer = %self.peer, %error, "bad frame, closing connection");
                self.close_reason = format!("bad frame: {error}");
                ctx.stop();
                return;
            }
        };
        self.last_seen.store(now_ms(), Ordering::Relaxed);
        // Only authenticated peers' messages, and not heartbeats: a fleet that only
        // heartbeats is idle, and a stranger's handshake keeps no CPU awake.
        if matches!(self.phase, Phase::Client | Phase::Worker(_))
            && !matches!(message, ToCoordinator::Heartbeat)
        {
            crate::keep_awake::poke();
        }
        match (&self.phase, message) {
            (
                Phase::AwaitHello,
                ToCoordinator::Hello {
                    version,
                    role,
                    nonce,
                },
            ) => self.on_hello(ctx, version, role, nonce),
            (Phase::AwaitProof { .. }, ToCoordinator::Proof { mac }) => self.on_proof(ctx, mac),
            (Phase::AwaitRegister, register @ ToCoordinator::Register { .. }) => {
                self.on_register(ctx, register)
            }
            (Phase::Worker(_), ToCoordinator::Heartbeat) => {
                if self.shared.lease.is_valid() {
                    self.send(ctx, FromCoordinator::Acked(Vec::new()));
                }
            }
            (Phase::Worker(worker), ToCoordinator::Started(leases)) => {
                self.shared.scheduler.do_send(AttemptsAcknowledged {
                    worker: *worker,
                    leases,
                });
            }
            (Phase::Worker(worker), ToCoordinator::Results(mut results)) => {
                results.iter_mut().for_each(AttemptResult::bound);
                self.shared.scheduler.do_send(ResultsReported {
                    worker: *worker,
                    results,
                });
            }
            (Phase::Worker(worker), ToCoordinator::Released(leases)) => {
                self.shared.scheduler.do_send(AttemptsReleased {
                    worker: *worker,
                    leases,
                });
            }
            (Phase::Worker(_), ToCoordinator::ManifestsWritten(leases)) => {
                self.shared.ledger.do_send(ManifestsWritten(leases));
            }
            (Phase::Worker(worker), ToCoordinator::Draining) => {
                tracing::info!(peer = %self.peer, "worker draining");
                self.shared.scheduler.do_send(StopAssigning(*worker));
            }
            (Phase::Client, ToCoordinator::Request { id, body }) => self.on_request(ctx, id, body),
            (Phase::Closed, _) => {}
            (phase, _) => {
                let reason = format!("unexpected message during {}", phase.name());
                self.refuse(ctx, reason);
            }
        }
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        tracing::debug!(peer = %self.peer, "peer closed the connection");
        ctx.stop();
    }
}
