//! Challenge-response authentication: a peer proves it holds its role's secret without sending it.
//!
//! Both sides contribute a random nonce; the proof is HMAC-SHA256 over a transcript that names the
//! direction, the role and both nonces, so a proof cannot be replayed on another connection, for
//! another role, or reflected back at its sender.

use crate::net::protocol::{Role, NONCE_LEN};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;
use std::path::Path;

type HmacSha256 = Hmac<Sha256>;

/// A shared secret for one role.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Why a secret could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The file could not be read.
    #[error("cannot read token file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The secret is empty.
    #[error("the token in {0} is empty")]
    Empty(String),
}

impl Secret {
    /// A secret from its text; surrounding whitespace (a trailing newline in a file) is ignored.
    /// An empty text is no secret.
    pub fn from_text(text: &str) -> Option<Secret> {
        let trimmed = text.trim();
        (!trimmed.is_empty()).then(|| Secret(trimmed.as_bytes().to_vec()))
    }

    /// The secret itself, to hand on to a process this one starts (a `process` pool's workers
    /// are given the worker secret in their environment); never for a log or a message.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// True when `text` is this secret, compared in time independent of where they differ.
    pub fn matches(&self, text: &str) -> bool {
        let given = text.as_bytes();
        given.len() == self.0.len()
            && given
                .iter()
                .zip(&self.0)
                .fold(0u8, |differ, (a, b)| differ | (a ^ b))
                == 0
    }

    /// The secret in a file.
    pub fn from_file(path: &Path) -> Result<Secret, SecretError> {
        let text = std::fs::read_to_string(path).map_err(|source| SecretError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Secret::from_text(&text).ok_or_else(|| SecretError::Empty(path.display().to_string()))
    }

    /// The secret from a file if one is named, else from an environment variable's value.
    pub fn load(
        file: Option<&Path>,
        env_value: Option<&str>,
    ) -> Result<Option<Secret>, SecretError> {
        match file {
            Some(path) => Secret::from_file(path).map(Some),
            None => Ok(env_value.and_then(Secret::from_text)),
        }
    }
}

/// Which side of the handshake a proof comes from.
#[derive(Debug, Clone, Copy)]
pub enum Side {
    /// The worker or client that connected.
    Peer,
    /// The coordinator.
    Coordinator,
}

/// The proof that `side` holds `secret` (or, with no secret, the empty key; the coordinator then
/// accepts loopback peers only).
pub fn proof(
    secret: Option<&Secret>,
    side: Side,
    role: Role,
    peer_nonce: &[u8; NONCE_LEN],
    coordinator_nonce: &[u8; NONCE_LEN],
) -> [u8; 32] {
    transcript(secret, side, role, peer_nonce, coordinator_nonce)
        .finalize()
        .into_bytes()
        .into()
}

/// Checks a proof in constant time.
pub fn verify(
    secret: Option<&Secret>,
    side: Side,
    role: Role,
    peer_nonce: &[u8; NONCE_LEN],
    coordinator_nonce: &[u8; NONCE_LEN],
    claimed: &[u8; 32],
) -> bool {
    transcript(secret, side, role, peer_nonce, coordinator_nonce)
        .verify_slice(claimed)
        .is_ok()
}

fn transcript(
    secret: Option<&Secret>,
    side: Side,
    role: Role,
    peer_nonce: &[u8; NONCE_LEN],
    coordinator_nonce: &[u8; NONCE_LEN],
) -> HmacSha256 {
    let key = secret.map(|secret| secret.0.as_slice()).unwrap_or(&[]);
    let mut mac = HmacSha256::new_from_slice(key).expect("hmac takes keys of any length");
    mac.update(b"drover-auth-v1\0");
    mac.update(match side {
        Side::Peer => b"peer\0",
        Side::Coordinator => b"head\0",
    });
    mac.update(role.as_str().as_bytes());
    mac.update(peer_nonce);
    mac.update(coordinator_nonce);
    mac
}

/// Fresh random bytes for a nonce.
pub fn nonce() -> [u8; NONCE_LEN] {
    rand::random()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proofs_bind_secret_role_side_and_nonces() {
        let secret = Secret::from_text("s3cret\n").unwrap();
        let other = Secret::from_text("other").unwrap();
        let (peer, head) = (nonce(), nonce());
        let good = proof(Some(&secret), Side::Peer, Role::Worker, &peer, &head);
        assert!(verify(
            Some(&secret),
            Side::Peer,
            Role::Worker,
            &peer,
            &head,
            &good
        ));
        assert!(!verify(
            Some(&other),
            Side::Peer,
            Role::Worker,
            &peer,
            &head,
            &good
        ));
        assert!(!verify(
            Some(&secret),
            Side::Peer,
            Role::Client,
            &peer,
            &head,
            &good
        ));
        assert!(!verify(
            Some(&secret),
            Side::Coordinator,
            Role::Worker,
            &peer,
            &head,
            &good
        ));
        assert!(!verify(
            Some(&secret),
            Side::Peer,
            Role::Worker,
            &head,
            &peer,
            &good
        ));
        assert!(!verify(None, Side::Peer, Role::Worker, &peer, &head, &good));
    }

    #[test]
    fn blank_secrets_are_no_secret() {
        assert!(Secret::from_text("  \n").is_none());
        assert_eq!(Secret::from_text(" a \n"), Secret::from_text("a"));
    }
}
