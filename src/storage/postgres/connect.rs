//! Reaching the database: the `--ledger` URL, TLS, and what a failure to connect means.
//!
//! The URL is libpq's (`postgres://USER:PASS@HOST1:PORT,HOST2/DB?param=value`), read by
//! tokio-postgres, which tries the hosts in turn. A ledger's writer needs a writable session, so
//! `target_session_attrs=read-write` is always set: after a failover the hosts are tried again
//! and the promoted one is found.
//!
//! `sslmode` has libpq's meanings, with rustls underneath:
//! - `disable`: no TLS;
//! - `prefer` (the default): TLS if the server offers it, its certificate not checked;
//! - `require`: TLS or nothing; the certificate is checked against `sslrootcert` if that is given
//!   (as libpq does), and not otherwise: the link is encrypted, the server not authenticated;
//! - `verify-ca`: the certificate chain is checked against `sslrootcert` (a PEM file), or the
//!   system's roots without it; the host name is not;
//! - `verify-full`: the chain and the host name are checked.
//!
//! In every mode the server's handshake signature is verified against the certificate it sent.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::config::{SslMode, TargetSessionAttrs};
use tokio_postgres::error::SqlState;
use tokio_postgres_rustls::MakeRustlsConnect;

/// How long one attempt to reach a host may take, unless the URL says (`connect_timeout`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Where the ledger is and how to reach it.
#[derive(Clone)]
pub struct Target {
    /// tokio-postgres' configuration.
    pub config: tokio_postgres::Config,
    /// The TLS connector (used unless `sslmode=disable`).
    pub tls: MakeRustlsConnect,
    /// The URL without its password, for messages.
    pub shown: String,
}

impl Target {
    /// Reads a `--ledger` URL; a malformed one is refused with what is wrong.
    pub fn parse(url: &str) -> Result<Target, String> {
        let shown = hide_password(url);
        let bad = |reason: String| format!("malformed URL: {reason}");
        let (base, query) = match url.split_once('?') {
            Some((base, query)) => (base, query),
            None => (url, ""),
        };
        if !(base.starts_with("postgres://") || base.starts_with("postgresql://")) {
            return Err(bad(
                "it should look like postgres://USER:PASSWORD@HOST[:PORT][,HOST2...]/DATABASE"
                    .into(),
            ));
        }
        // tokio-postgres knows disable/prefer/require only; the verifying modes and the root
        // certificate file are taken out here and applied to rustls.
        let mut mode = "prefer".to_string();
        let mut root_file = None;
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            match pair.split_once('=') {
                Some(("sslmode", value)) => mode = value.to_string(),
                Some(("sslrootcert", value)) => root_file = Some(value.to_string()),
                _ => kept.push(pair),
            }
        }
        let rebuilt = if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        let mut config: tokio_postgres::Config = rebuilt
            .parse()
            .map_err(|error: tokio_postgres::Error| bad(chain(&error)))?;
        if config.get_hosts().is_empty() {
            return Err(bad("it names no host".into()));
        }
        if config.get_user().is_none() {
            return Err(bad("it names no user".into()));
        }
        if config.get_dbname().is_none() {
            return Err(bad("it names no database (…@HOST/DATABASE)".into()));
        }
        let verify = match mode.as_str() {
            "disable" => {
                config.ssl_mode(SslMode::Disable);
                Verify::Nothing
            }
            "prefer" | "allow" => {
                config.ssl_mode(SslMode::Prefer);
                Verify::Nothing
            }
            "require" => {
                config.ssl_mode(SslMode::Require);
                match root_file {
                    Some(_) => Verify::Chain,
                    None => Verify::Nothing,
                }
            }
            "verify-ca" => {
                config.ssl_mode(SslMode::Require);
                Verify::Chain
            }
            "verify-full" => {
                config.ssl_mode(SslMode::Require);
                Verify::Full
            }
            other => {
                return Err(bad(format!(
                    "sslmode={other} is not one of disable, prefer, require, verify-ca, \
                     verify-full"
                )))
            }
        };
        config.target_session_attrs(TargetSessionAttrs::ReadWrite);
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        // A peer that vanishes without closing (a cut link, a frozen host) is noticed within
        // seconds, not hours: the writer then reconnects and finds the promoted standby.
        config.keepalives_idle(Duration::from_secs(5));
        config.keepalives_interval(Duration::from_secs(1));
        config.keepalives_retries(5);
        if config.get_application_name().is_none() {
            config.application_name("drover-coordinator");
        }
        let tls = tls(verify, root_file.as_deref()).map_err(bad)?;
        Ok(Target {
            config,
            tls: MakeRustlsConnect::new(tls),
            shown,
        })
    }

    /// Has the database end this coordinator's transactions that sit idle longer than `after`.
    /// Every group commit locks the lease row first: a leader frozen (stopped, swapped out)
    /// between its statements would otherwise hold that lock, and so keep every standby from
    /// taking the lease, for as long as it stays frozen. Ended, its transaction rolls back; it
    /// had acknowledged nothing of it.
    pub fn end_idle_transactions_after(&mut self, after: Duration) {
        let setting = format!(
            "-c idle_in_transaction_session_timeout={}",
            after.as_millis().max(1)
        );
        let options = match self.config.get_options() {
            Some(given) if !given.trim().is_empty() => format!("{given} {setting}"),
            _ => setting,
        };
        self.config.options(options);
    }

    /// The user the URL logs in as.
    pub fn user(&self) -> &str {
        self.config.get_user().unwrap_or("?")
    }

    /// The database the URL names.
    pub fn database(&self) -> &str {
        self.config.get_dbname().unwrap_or("?")
    }

    /// Opens one connection, its I/O driven by a task on the current runtime.
    pub async fn connect(&self) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let (client, connection) = self.config.connect(self.tls.clone()).await?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "ledger database connection ended");
            }
        });
        Ok(client)
    }
}

/// What a failure to use the database means for the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The database is not there now (down, starting, failing over, cut off): wait and retry.
    Unreachable(String),
    /// It will not work by waiting: wrong password, no such database, a certificate refused.
    Refused(String),
}

/// Sorts a database error into "wait" or "give up", in words that name the cause.
pub fn classify(error: &tokio_postgres::Error, target: &Target) -> Failure {
    if let Some(db) = error.as_db_error() {
        let code = db.code();
        let said = db.message();
        return if *code == SqlState::INVALID_PASSWORD
            || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
        {
            Failure::Refused(format!(
                "the ledger database refused user {:?}: {said} (check the user and password \
                 in --ledger)",
                target.user()
            ))
        } else if *code == SqlState::INVALID_CATALOG_NAME {
            Failure::Refused(format!(
                "the ledger database {:?} does not exist: {said} (create it, or name another \
                 in --ledger)",
                target.database()
            ))
        } else if *code == SqlState::CANNOT_CONNECT_NOW
            || *code == SqlState::TOO_MANY_CONNECTIONS
            || *code == SqlState::ADMIN_SHUTDOWN
            || *code == SqlState::CRASH_SHUTDOWN
            || *code == SqlState::READ_ONLY_SQL_TRANSACTION
            || code.code().starts_with("08")
            // Rolled back and worth trying again: a deadlock or serialization failure, a
            // statement ended by its timeout, a transaction ended for sitting idle.
            || *code == SqlState::T_R_DEADLOCK_DETECTED
            || *code == SqlState::T_R_SERIALIZATION_FAILURE
            || *code == SqlState::QUERY_CANCELED
            || *code == SqlState::IDLE_IN_TRANSACTION_SESSION_TIMEOUT
        {
            Failure::Unreachable(format!("{said} ({})", code.code()))
        } else if *code == SqlState::INSUFFICIENT_PRIVILEGE {
            Failure::Refused(format!(
                "user {:?} lacks the rights the ledger needs in database {:?}: {said} (grant \
                 it CREATE on the schema, or let its owner run drover once)",
                target.user(),
                target.database()
            ))
        } else {
            Failure::Refused(format!(
                "the ledger database failed: {said} ({})",
                code.code()
            ))
        };
    }
    let said = chain(error);
    if said.contains("TLS") || said.contains("certificate") {
        return Failure::Refused(format!(
            "cannot set up TLS with the ledger database: {said} (see sslmode and sslrootcert \
             in --ledger)"
        ));
    }
    if said.contains("invalid configuration") || said.contains("password missing") {
        return Failure::Refused(format!("cannot log in to the ledger database: {said}"));
    }
    Failure::Unreachable(said)
}

/// A database error as the store reports it: the database's own words, on one line.
pub fn database(error: tokio_postgres::Error) -> crate::storage::store::StoreError {
    let said = chain(&error);
    let said = said.strip_prefix("db error: ").unwrap_or(&said).to_string();
    crate::storage::store::StoreError::Database(Arc::new(std::io::Error::other(said)))
}

/// An error with its causes, on one line.
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut said = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !said.contains(&more) {
            said = format!("{said}: {more}");
        }
        source = cause.source();
    }
    said
}

/// The URL with its password replaced by `***`.
pub fn hide_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    match authority.rsplit_once('@') {
        Some((credentials, hosts)) => match credentials.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{hosts}{tail}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

#[derive(Debug, Clone, Copy)]
enum Verify {
    Nothing,
    Chain,
    Full,
}

fn tls(verify: Verify, root_file: Option<&str>) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|error| error.to_string())?;
    let config = match verify {
        Verify::Nothing => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Unchecked(provider)))
            .with_no_client_auth(),
        Verify::Chain | Verify::Full => {
            let roots = Arc::new(roots(root_file)?);
            let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|error| format!("cannot use the root certificates: {error}"))?;
            let verifier: Arc<dyn ServerCertVerifier> = match verify {
                Verify::Full => webpki,
                _ => Arc::new(AnyName(webpki)),
            };
            builder
                .dangerous()
                .with_custom_certificate_verifier(verifier)
                .with_no_client_auth()
        }
    };
    Ok(config)
}

fn roots(root_file: Option<&str>) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    match root_file {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|error| format!("cannot read sslrootcert {path}: {error}"))?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(format!("sslrootcert {path} holds no usable certificate"));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                return Err("the system has no root certificates; give sslrootcert".into());
            }
        }
    }
    Ok(roots)
}

/// sslmode=prefer/require without a root file: any certificate, as libpq; the handshake's
/// signature is still checked against the certificate sent.
#[derive(Debug)]
struct Unchecked(Arc<CryptoProvider>);

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// sslmode=verify-ca: the chain is checked, the host name is not.
#[derive(Debug)]
struct AnyName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_read_or_refused_with_the_reason() {
        let target =
            Target::parse("postgres://u:secret@h1:5433,h2/ledger?sslmode=require").unwrap();
        assert_eq!(target.config.get_hosts().len(), 2);
        assert_eq!(target.config.get_ssl_mode(), SslMode::Require);
        assert_eq!(
            target.config.get_target_session_attrs(),
            TargetSessionAttrs::ReadWrite
        );
        assert_eq!(
            target.shown,
            "postgres://u:***@h1:5433,h2/ledger?sslmode=require"
        );
        let full = Target::parse("postgres://u@h/db?sslmode=verify-full").unwrap();
        assert_eq!(full.config.get_ssl_mode(), SslMode::Require);
        for (url, says) in [
            ("mysql://u@h/db", "should look like postgres://"),
            (
                "postgres://u:pw@h/db?sslmode=sometimes",
                "sslmode=sometimes",
            ),
            (
                "postgres://u:pw@h/db?colour=blue",
                "unknown option `colour`",
            ),
            ("postgres://u:pw@/db", "no host"),
            ("postgres://u:pw@h", "no database"),
            ("postgres://u@h:notaport/db", "malformed URL"),
        ] {
            let error = Target::parse(url).err().unwrap();
            assert!(error.contains(says), "{url}: {error}");
            assert!(
                !error.contains("pw@"),
                "the password is never shown: {error}"
            );
        }
    }
}
