//! Durable storage: the ledger's store (an interface, and SQLite behind it) and the workers'
//! object stores.

pub mod group;
pub mod postgres;
pub mod s3;
pub mod spec_format;
pub mod sqlite;
pub mod store;
pub mod uploads;

/// An I/O error in words for a job's author: "no space left on the device" rather than
/// "No space left on device (os error 28)".
pub fn describe_io(error: &std::io::Error) -> String {
    match error.raw_os_error() {
        Some(libc::ENOSPC) => "no space left on the device".into(),
        _ => error.to_string(),
    }
}

/// A job's input that could not be fetched: what happened, and whether what it names is not
/// there at all (no such file, key or bucket), which no second try changes.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct FetchError {
    /// The URL and the reason.
    pub message: String,
    /// The object or its bucket does not exist.
    pub missing: bool,
}

impl From<String> for FetchError {
    fn from(message: String) -> Self {
        FetchError {
            message,
            missing: false,
        }
    }
}
