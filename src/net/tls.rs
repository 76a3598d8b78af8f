//! TLS for both ports, with rustls: the coordinator's certificate and key, and what clients and
//! workers trust (a CA file, or the system's roots).
//!
//! The crypto provider is named explicitly (ring) rather than left to whichever features other
//! crates turn on: with two compiled in, rustls would refuse to guess.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::net::TcpStream;

/// Why TLS could not be set up or used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("cannot use {what} {path}: {reason}")]
    File {
        /// What the file was meant to hold.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// rustls refused the configuration (a key that does not match the certificate, say).
    #[error("TLS configuration: {0}")]
    Config(String),
    /// The address names no host a certificate could be checked against.
    #[error("cannot check a certificate for {0:?}: not a host name or IP address")]
    ServerName(String),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let fail = |reason: String| TlsError::File {
        what: "certificate file",
        path: path.to_path_buf(),
        reason,
    };
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|error| fail(error.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| fail(error.to_string()))?;
    if certificates.is_empty() {
        return Err(fail("no PEM certificate in it".into()));
    }
    Ok(certificates)
}

/// The coordinator's side: its certificate chain and private key, both PEM.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let chain = certificates(cert)?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|error| TlsError::File {
        what: "private key file",
        path: key.to_path_buf(),
        reason: error.to_string(),
    })?;
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|error| TlsError::Config(error.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|error| TlsError::Config(error.to_string()))?;
    Ok(Arc::new(config))
}

/// What a client or worker trusts when it connects over TLS.
#[derive(Clone)]
pub struct ClientTls {
    config: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientTls(..)")
    }
}

impl ClientTls {
    /// Trusts the certificates in `ca` (PEM), or without one, the system's roots.
    pub fn new(ca: Option<&Path>) -> Result<ClientTls, TlsError> {
        let mut roots = rustls::RootCertStore::empty();
        match ca {
            Some(path) => {
                for certificate in certificates(path)? {
                    roots.add(certificate).map_err(|error| TlsError::File {
                        what: "CA file",
                        path: path.to_path_buf(),
                        reason: error.to_string(),
                    })?;
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                for certificate in found.certs {
                    // One unusable system certificate is no reason to trust none.
                    let _ = roots.add(certificate);
                }
                if roots.is_empty() {
                    return Err(TlsError::Config(
                        "no system root certificates found; give --tls-ca".into(),
                    ));
                }
            }
        }
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|error| TlsError::Config(error.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(ClientTls {
            config: Arc::new(config),
        })
    }

    /// What the `--tls` and `--tls-ca` flags ask for: TLS trusting the CA file if one is given,
    /// the system's roots with `--tls` alone, plain TCP without either.
    pub fn from_flags(tls: bool, ca: Option<&Path>) -> Result<Option<ClientTls>, TlsError> {
        if tls || ca.is_some() {
            ClientTls::new(ca).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Runs the TLS handshake on a connected socket, checking the certificate against the host
    /// of `address` (`host:port`).
    pub async fn connect(
        &self,
        address: &str,
        stream: TcpStream,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let host = host_of(address);
        let name = ServerName::try_from(host.to_string()).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                TlsError::ServerName(host.to_string()),
            )
        })?;
        tokio_rustls::TlsConnector::from(self.config.clone())
            .connect(name, stream)
            .await
    }
}

/// The host of `host:port`, `[v6]:port`, or a bare host.
fn host_of(address: &str) -> &str {
    if let Some(rest) = address.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match address.rsplit_once(':') {
        Some((host, port)) if port.parse::<u16>().is_ok() => host,
        _ => address,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_come_out_of_addresses() {
        assert_eq!(host_of("head.example:7700"), "head.example");
        assert_eq!(host_of("127.0.0.1:7700"), "127.0.0.1");
        assert_eq!(host_of("[::1]:7700"), "::1");
        assert_eq!(host_of("head"), "head");
    }

    #[test]
    fn missing_and_empty_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let error = server_config(&missing, &missing).unwrap_err().to_string();
        assert!(
            error.contains("certificate file") && error.contains("missing.pem"),
            "{error}"
        );
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let error = ClientTls::new(Some(&empty)).unwrap_err().to_string();
        assert!(error.contains("no PEM certificate"), "{error}");
    }
}
