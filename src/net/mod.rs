//! Everything that knows bytes: the protocol, the codec, authentication and connecting.

pub mod address;
pub mod auth;
pub mod backlog;
pub mod codec;
pub mod connect;
pub mod open_files;
pub mod protocol;
pub mod tls;

#[cfg(test)]
mod properties;

pub use open_files::{raise_open_files_limit, OpenFiles};

/// How long a connection may be silent at the TCP level before the kernel probes it, and how
/// often: a peer whose host vanished without closing is noticed in about half a minute instead
/// of the kernel's default two hours.
pub fn keep_alive(stream: &tokio::net::TcpStream) {
    let probes = socket2::TcpKeepalive::new()
        .with_time(std::time::Duration::from_secs(10))
        .with_interval(std::time::Duration::from_secs(5))
        .with_retries(3);
    if let Err(error) = socket2::SockRef::from(stream).set_tcp_keepalive(&probes) {
        tracing::debug!(%error, "cannot enable TCP keepalive");
    }
}

/// Something a connection runs over: a TCP socket, in the clear or inside TLS.
pub trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}

impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> Stream for T {}

/// A connection's stream, whichever it is.
pub type BoxedStream = Box<dyn Stream>;
