//! The checks of the handshake, shared by a [`Session`](super::Session) (a leader's) and the
//! short exchange a standby has with a peer before it names the leader: both refuse in the same
//! words.

use crate::net::auth::{self, Secret, Side};
use crate::net::protocol::{Role, NONCE_LEN, PROTOCOL_VERSION};
use std::net::SocketAddr;

/// Why a `Hello` is refused, if it is: a protocol version of another release, or a role with no
/// secret configured asked for from beyond loopback.
pub fn hello_refusal(
    version: u16,
    role: Role,
    secret: Option<&Secret>,
    peer: SocketAddr,
) -> Option<String> {
    if version != PROTOCOL_VERSION {
        return Some(format!(
            "protocol version {version} is not supported; this coordinator speaks version {PROTOCOL_VERSION}"
        ));
    }
    if secret.is_none() && !peer.ip().is_loopback() {
        return Some(format!(
            "no {} token is configured on the coordinator, so it accepts {}s from loopback only",
            role.as_str(),
            role.as_str()
        ));
    }
    None
}

/// Why a `Proof` is refused, if it is.
pub fn proof_refusal(
    role: Role,
    secret: Option<&Secret>,
    peer_nonce: &[u8; NONCE_LEN],
    nonce: &[u8; NONCE_LEN],
    mac: &[u8; 32],
) -> Option<String> {
    if auth::verify(secret, Side::Peer, role, peer_nonce, nonce, mac) {
        return None;
    }
    // A peer with no token proves the empty one: it is told it gave none, not that the one it
    // gave is wrong. (That tells it nothing of the secret.)
    let gave_none = auth::verify(None, Side::Peer, role, peer_nonce, nonce, mac);
    let how = match role {
        Role::Client => "set DROVER_TOKEN or give --token-file FILE",
        Role::Worker => "set DROVER_WORKER_TOKEN or give --worker-token-file FILE",
    };
    let role = role.as_str();
    Some(match (secret, gave_none) {
        (Some(_), true) => format!(
            "authentication failed: no {role} token was given, and this coordinator requires one; {how}"
        ),
        (Some(_), false) => format!("authentication failed: wrong {role} token ({how})"),
        (None, _) => format!(
            "authentication failed: a {role} token was given, but this coordinator has none \
             configured (it takes {role}s from loopback without one); start it with that \
             token, or connect without one"
        ),
    })
}
