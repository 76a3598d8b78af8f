//! The peer side of a connection: dial the coordinator and run the handshake.

use crate::net::auth::{self, Secret, Side};
use crate::net::codec::{CodecError, FrameCodec, DEFAULT_MAX_FRAME};
use crate::net::protocol::{FromCoordinator, Role, ToCoordinator, PROTOCOL_VERSION};
use crate::net::tls::ClientTls;
use crate::net::BoxedStream;
use futures::{SinkExt, StreamExt};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

/// How long dialing and the handshake may take together.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// An authenticated connection to the coordinator.
pub type Connection = Framed<BoxedStream, FrameCodec<FromCoordinator, ToCoordinator>>;

/// Why a connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Nothing answers at the address.
    #[error("cannot reach the coordinator at {address}: {source}")]
    Unreachable {
        /// The address dialed.
        address: String,
        /// Why.
        source: std::io::Error,
    },
    /// The coordinator said no.
    #[error("the coordinator refused the connection: {0}")]
    Refused(String),
    /// The coordinator could not prove it holds the secret.
    #[error(
        "the coordinator at {0} failed to prove it holds the token; is this the right address?"
    )]
    Impostor(String),
    /// The handshake broke off.
    #[error("handshake with {address} failed: {reason}")]
    Handshake {
        /// The address dialed.
        address: String,
        /// Why.
        reason: String,
    },
}

/// Dials `address` in the clear and authenticates as `role`.
pub async fn connect(
    address: &str,
    role: Role,
    secret: Option<&Secret>,
) -> Result<Connection, ConnectError> {
    connect_with(address, role, secret, None).await
}

/// Dials `address`, over TLS if `tls` is given, and authenticates as `role`.
pub async fn connect_with(
    address: &str,
    role: Role,
    secret: Option<&Secret>,
    tls: Option<&ClientTls>,
) -> Result<Connection, ConnectError> {
    let dialing = handshake(address, role, secret, tls);
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, dialing).await {
        Ok(connected) => connected,
        Err(_) => Err(ConnectError::Handshake {
            address: address.to_string(),
            reason: format!("no answer within {}s", HANDSHAKE_TIMEOUT.as_secs()),
        }),
    }
}

async fn handshake(
    address: &str,
    role: Role,
    secret: Option<&Secret>,
    tls: Option<&ClientTls>,
) -> Result<Connection, ConnectError> {
    let stream = TcpStream::connect(address)
        .await
        .map_err(|source| ConnectError::Unreachable {
            address: address.to_string(),
            source,
        })?;
    let _ = stream.set_nodelay(true);
    crate::net::keep_alive(&stream);
    let broken = |reason: String| ConnectError::Handshake {
        address: address.to_string(),
        reason,
    };
    let stream: BoxedStream = match tls {
        Some(tls) => Box::new(
            tls.connect(address, stream)
                .await
                .map_err(|error| broken(format!("TLS: {error}")))?,
        ),
        None => Box::new(stream),
    };
    let mut connection = Framed::new(stream, FrameCodec::new(DEFAULT_MAX_FRAME));
    let peer_nonce = auth::nonce();
    connection
        .send(ToCoordinator::Hello {
            version: PROTOCOL_VERSION,
            role,
            nonce: peer_nonce,
        })
        .await
        .map_err(|error| broken(error.to_string()))?;
    let coordinator_nonce = match next(&mut connection).await.map_err(|reason| {
        if tls.is_none() {
            // A TLS server answers a plain hello with an alert, which reads as a bad frame.
            broken(format!(
                "{reason} (if the coordinator uses TLS, connect with --tls-ca FILE or --tls)"
            ))
        } else {
            broken(reason)
        }
    })? {
        FromCoordinator::Challenge { nonce } => nonce,
        refused @ FromCoordinator::Refused { .. } => return Err(refusal(refused, address)),
        other => return Err(broken(format!("unexpected {other:?}"))),
    };
    let mac = auth::proof(secret, Side::Peer, role, &peer_nonce, &coordinator_nonce);
    connection
        .send(ToCoordinator::Proof { mac })
        .await
        .map_err(|error| broken(error.to_string()))?;
    match next(&mut connection).await.map_err(broken)? {
        FromCoordinator::Welcome { mac } => {
            if !auth::verify(
                secret,
                Side::Coordinator,
                role,
                &peer_nonce,
                &coordinator_nonce,
                &mac,
            ) {
                return Err(ConnectError::Impostor(address.to_string()));
            }
        }
        refused @ FromCoordinator::Refused { .. } => return Err(refusal(refused, address)),
        other => return Err(broken(format!("unexpected {other:?}"))),
    }
    Ok(connection)
}

/// A refusal as an error: permanent ones stop a worker, passing ones make it try again.
pub fn refusal(message: FromCoordinator, address: &str) -> ConnectError {
    match message {
        FromCoordinator::Refused {
            reason,
            permanent: true,
        } => ConnectError::Refused(reason),
        FromCoordinator::Refused { reason, .. } => ConnectError::Handshake {
            address: address.to_string(),
            reason,
        },
        other => ConnectError::Handshake {
            address: address.to_string(),
            reason: format!("unexpected {other:?}"),
        },
    }
}

/// The next message, with a closed connection as an error.
pub async fn next(connection: &mut Connection) -> Result<FromCoordinator, String> {
    match connection.next().await {
        Some(Ok(message)) => Ok(message),
        Some(Err(CodecError::Io(error))) => Err(format!("connection error: {error}")),
        Some(Err(error)) => Err(error.to_string()),
        None => Err("the coordinator closed the connection".into()),
    }
}
