//! Everything that knows bytes: the protocol, the codec, authentication and connecting.

pub mod auth;
pub mod codec;
pub mod connect;
pub mod protocol;

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
