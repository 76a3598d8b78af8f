//! Everything that knows bytes: the protocol, the codec, authentication and connecting.

pub mod address;
pub mod auth;
pub mod backlog;
pub mod codec;
pub mod connect;
pub mod protocol;
pub mod tls;

#[cfg(test)]
mod properties;

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

/// Raises this process's soft limit on open files to its hard limit: a coordinator with
/// thousands of workers, or a process holding many worker connections, needs a descriptor each.
pub fn raise_open_files_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed by pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                tracing::debug!("cannot raise the open files limit");
            }
        }
    }
}

/// Something a connection runs over: a TCP socket, in the clear or inside TLS.
pub trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}

impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> Stream for T {}

/// A connection's stream, whichever it is.
pub type BoxedStream = Box<dyn Stream>;
