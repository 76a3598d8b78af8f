//! What every AWS client of drover shares (the workers' S3, the coordinator's EC2, a spot
//! instance's metadata): one HTTP client (hyper on rustls with ring, as the rest of drover's
//! TLS), and the words of an SDK error's deepest cause, for one-line messages.

use std::error::Error;

/// The longest message from a service kept in a reason.
const MAX_MESSAGE: usize = 300;

/// The HTTPS client the SDK's clients are built on.
pub(crate) fn http_client() -> aws_sdk_s3::config::SharedHttpClient {
    use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .build_https()
}

/// Why the credential chain gave no credentials, when that is what stopped a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CredentialsTrouble {
    /// No provider in the chain had any.
    NotFound,
    /// The chain took too long (an instance profile that does not answer, say).
    TimedOut,
    /// A provider failed, in its words.
    Failed(String),
}

/// The credentials trouble behind an SDK error, if any.
pub(crate) fn credentials_trouble(error: &(dyn Error + 'static)) -> Option<CredentialsTrouble> {
    use aws_credential_types::provider::error::CredentialsError;
    let mut cause: Option<&(dyn Error + 'static)> = Some(error);
    while let Some(current) = cause {
        if let Some(credentials) = current.downcast_ref::<CredentialsError>() {
            return Some(match credentials {
                CredentialsError::CredentialsNotLoaded(_) => CredentialsTrouble::NotFound,
                CredentialsError::ProviderTimedOut(_) => CredentialsTrouble::TimedOut,
                other => CredentialsTrouble::Failed(innermost(other)),
            });
        }
        // The identity cache's own deadline, a private type: known by its words.
        if current
            .to_string()
            .starts_with("identity resolver timed out")
        {
            return Some(CredentialsTrouble::TimedOut);
        }
        cause = current.source();
    }
    None
}

/// A service's message on one line, not too long.
pub(crate) fn tidy(message: &str) -> String {
    let line: String = message.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(MAX_MESSAGE) {
        Some((cut, _)) => format!("{}...", &line[..cut]),
        None => line,
    }
}

/// The deepest cause's words on one line, without the "(os error N)" of an I/O error: that is
/// where the SDK's wrappers say what happened.
pub(crate) fn innermost(error: &(dyn Error + 'static)) -> String {
    let mut deepest = error;
    while let Some(source) = deepest.source() {
        deepest = source;
    }
    if let Some(io) = deepest.downcast_ref::<std::io::Error>() {
        return tidy(&describe_io_plainly(io));
    }
    let words = deepest.to_string();
    tidy(&match words.rfind(" (os error ") {
        Some(at) if words.ends_with(')') => lowercase_first(&words[..at]),
        _ => words,
    })
}

fn describe_io_plainly(error: &std::io::Error) -> String {
    use std::io::ErrorKind;
    match error.kind() {
        ErrorKind::ConnectionRefused => "connection refused".into(),
        ErrorKind::ConnectionReset => "connection reset".into(),
        ErrorKind::TimedOut => "timed out".into(),
        _ => {
            let words = error.to_string();
            match words.rfind(" (os error ") {
                Some(at) => lowercase_first(&words[..at]),
                None => words,
            }
        }
    }
}

fn lowercase_first(words: &str) -> String {
    let mut chars = words.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}
