//! The peer side of a connection: dial the coordinator and run the handshake.

use crate::net::address::{self, Address, DEFAULT_PORT};
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
    /// The address cannot be dialed as written.
    #[error("{0}")]
    BadAddress(String),
    /// Nothing answers at the address.
    #[error("cannot reach the coordinator at {address}: {reason}")]
    Unreachable {
        /// The address dialed.
        address: String,
        /// Why, in words.
        reason: String,
    },
    /// What answers at the address speaks HTTP: the coordinator's HTTP port, most likely.
    #[error("{address} answers in HTTP: this is the coordinator's HTTP port (dashboard and API), not its protocol port; {hint}")]
    HttpPort {
        /// The address dialed.
        address: String,
        /// Where the protocol port probably is.
        hint: String,
    },
    /// The coordinator said no.
    #[error("the coordinator refused the connection: {0}")]
    Refused(String),
    /// The coordinator could not prove it holds the secret.
    #[error(
        "the coordinator at {0} failed to prove it holds the token; is this the right address?"
    )]
    Impostor(String),
    /// The coordinator turned the connection away for a reason that may pass (a worker's name
    /// held by one that may be a dead predecessor, an overloaded coordinator).
    #[error("the coordinator at {address} turned the connection away for now: {reason}")]
    Deferred {
        /// The address dialed.
        address: String,
        /// Why.
        reason: String,
    },
    /// The coordinator is a standby: it does not lead the ledger, and named the one that does
    /// if it knows it.
    #[error("the coordinator at {address} is a standby; {}", leader_text(leader))]
    Standby {
        /// The address dialed.
        address: String,
        /// The leader's address, if the standby knows one.
        leader: Option<String>,
    },
    /// No coordinator of a list took the connection.
    #[error("none of {addresses} answered as the leader ({reasons})")]
    NoneAnswered {
        /// The addresses tried, as a list.
        addresses: String,
        /// What each said, in the order tried.
        reasons: String,
    },
    /// The handshake broke off.
    #[error("handshake with {address} failed: {reason}")]
    Handshake {
        /// The address dialed.
        address: String,
        /// Why.
        reason: String,
    },
}

fn leader_text(leader: &Option<String>) -> String {
    match leader {
        Some(leader) => format!("the leader is {leader}"),
        None => "no coordinator leads the ledger yet".into(),
    }
}

/// How many times one connection follows a standby to the leader it names.
const MAX_REDIRECTS: usize = 4;

impl ConnectError {
    /// True when trying again cannot help: the coordinator refused the peer, or the address is
    /// not a coordinator's protocol port.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            ConnectError::Refused(_)
                | ConnectError::Impostor(_)
                | ConnectError::BadAddress(_)
                | ConnectError::HttpPort { .. }
        )
    }
}

/// Dials `address` in the clear and authenticates as `role`.
pub async fn connect(
    address: &str,
    role: Role,
    secret: Option<&Secret>,
) -> Result<Connection, ConnectError> {
    connect_with(address, role, secret, None).await
}

/// Dials `address` (one coordinator, or several separated by commas), over TLS if `tls` is
/// given, and authenticates as `role` with the one that leads.
pub async fn connect_with(
    address: &str,
    role: Role,
    secret: Option<&Secret>,
    tls: Option<&ClientTls>,
) -> Result<Connection, ConnectError> {
    Ok(connect_to_leader(address, role, secret, tls).await?.0)
}

/// Dials the coordinators of `addresses` (`a:7700,b:7700`) in turn until the one that leads takes
/// the connection; a standby names the leader, which is dialed next. Answers the connection and
/// the address of the coordinator it is to.
///
/// A refusal that another coordinator would repeat (a wrong token, a bad registration, an HTTP
/// port) ends the search at once; anything else (nothing listens, a standby) moves on to the
/// next address, and when none took the connection the error names what each said.
pub async fn connect_to_leader(
    addresses: &str,
    role: Role,
    secret: Option<&Secret>,
    tls: Option<&ClientTls>,
) -> Result<(Connection, String), ConnectError> {
    let list = address::parse_list(addresses).map_err(ConnectError::BadAddress)?;
    let mut queue: std::collections::VecDeque<Address> = list.into_iter().collect();
    let mut tried: Vec<Address> = Vec::new();
    let mut failures: Vec<ConnectError> = Vec::new();
    let mut redirects = 0;
    while let Some(address) = queue.pop_front() {
        tried.push(address.clone());
        let failure = match connect_one(&address, role, secret, tls).await {
            Ok(connection) => return Ok((connection, address.to_string())),
            Err(error)
                if error.is_permanent() || matches!(error, ConnectError::Deferred { .. }) =>
            {
                return Err(error)
            }
            Err(error) => error,
        };
        if let ConnectError::Standby {
            leader: Some(leader),
            ..
        } = &failure
        {
            // The leader next, unless it already failed this time round (a stale word).
            match Address::parse(leader) {
                Ok(leader) if !tried.contains(&leader) && redirects < MAX_REDIRECTS => {
                    redirects += 1;
                    queue.retain(|queued| *queued != leader);
                    queue.push_front(leader);
                }
                _ => {}
            }
        }
        failures.push(failure);
    }
    if failures.len() == 1 {
        if let Some(only) = failures.pop() {
            return Err(only);
        }
    }
    Err(ConnectError::NoneAnswered {
        addresses: address::list_text(&tried),
        reasons: failures
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; "),
    })
}

/// Dials one coordinator and runs the handshake, within the deadline.
async fn connect_one(
    address: &Address,
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

/// Resolves and dials an address.
async fn dial(address: &Address) -> Result<TcpStream, ConnectError> {
    let unreachable = |reason: String| ConnectError::Unreachable {
        address: address.to_string(),
        reason,
    };
    let resolved: Vec<std::net::SocketAddr> =
        tokio::net::lookup_host((address.host.as_str(), address.port))
            .await
            .map_err(|error| unreachable(address::lookup_failure(&address.host, &error)))?
            .collect();
    TcpStream::connect(resolved.as_slice())
        .await
        .map_err(|error| unreachable(address::dial_failure(&error)))
}

/// What to say to a peer that reached an HTTP port: where the protocol port probably is.
fn protocol_port_hint(address: &Address) -> String {
    if address.port == DEFAULT_PORT {
        return "the protocol port is the coordinator's --listen port".into();
    }
    let guess = Address {
        host: address.host.clone(),
        port: DEFAULT_PORT,
    };
    format!(
        "the protocol port is {DEFAULT_PORT} unless the coordinator's --listen says otherwise (--coordinator {guess})"
    )
}

async fn handshake(
    dialed: &Address,
    role: Role,
    secret: Option<&Secret>,
    tls: Option<&ClientTls>,
) -> Result<Connection, ConnectError> {
    let stream = dial(dialed).await?;
    let address = &dialed.to_string();
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
    // An HTTP server answers the hello with an error page: the first bytes say which port this is.
    let first = match connection.next().await {
        Some(Err(CodecError::Http)) => {
            return Err(ConnectError::HttpPort {
                address: address.to_string(),
                hint: protocol_port_hint(dialed),
            })
        }
        Some(Ok(message)) => Ok(message),
        Some(Err(error)) => Err(read_failure(error)),
        None => Err("the coordinator closed the connection".into()),
    };
    let coordinator_nonce = match first.map_err(|reason| {
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
        FromCoordinator::NotLeader { leader } => {
            return Err(ConnectError::Standby {
                address: address.to_string(),
                leader,
            })
        }
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
        FromCoordinator::Refused { reason, .. } => ConnectError::Deferred {
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
        Some(Err(error)) => Err(read_failure(error)),
        None => Err("the coordinator closed the connection".into()),
    }
}

fn read_failure(error: CodecError) -> String {
    match error {
        CodecError::Io(error) => format!("connection error: {}", address::dial_failure(&error)),
        error => error.to_string(),
    }
}
