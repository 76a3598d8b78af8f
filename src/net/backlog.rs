//! What a connection has queued for its peer but not yet handed to the kernel: a peer that stops
//! reading makes it grow, and past a high-water mark the coordinator disconnects it rather than
//! hold its answers in memory.

use bytes::BytesMut;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::AsyncWrite;
use tokio_util::codec::Encoder;

/// Bytes encoded for the peer and bytes the socket took, counted apart.
#[derive(Debug, Clone, Default)]
pub struct Backlog {
    encoded: Arc<AtomicU64>,
    sent: Arc<AtomicU64>,
}

impl Backlog {
    /// Bytes encoded but not yet written to the socket.
    pub fn pending(&self) -> u64 {
        self.encoded
            .load(Ordering::Relaxed)
            .saturating_sub(self.sent.load(Ordering::Relaxed))
    }

    /// `codec`, counting what it encodes into this backlog.
    pub fn counting_codec<C>(&self, codec: C) -> CountingCodec<C> {
        CountingCodec {
            inner: codec,
            encoded: self.encoded.clone(),
        }
    }

    /// `io`, counting what it writes out of this backlog.
    pub fn counting_writer<W>(&self, io: W) -> CountingWriter<W> {
        CountingWriter {
            inner: io,
            sent: self.sent.clone(),
        }
    }
}

/// An encoder that counts the bytes it produces.
#[derive(Debug)]
pub struct CountingCodec<C> {
    inner: C,
    encoded: Arc<AtomicU64>,
}

impl<I, C: Encoder<I>> Encoder<I> for CountingCodec<C> {
    type Error = C::Error;

    fn encode(&mut self, item: I, dst: &mut BytesMut) -> Result<(), Self::Error> {
        let before = dst.len();
        self.inner.encode(item, dst)?;
        let added = dst.len().saturating_sub(before);
        self.encoded.fetch_add(added as u64, Ordering::Relaxed);
        Ok(())
    }
}

/// A writer that counts the bytes the socket accepted.
#[derive(Debug)]
pub struct CountingWriter<W> {
    inner: W,
    sent: Arc<AtomicU64>,
}

impl<W: AsyncWrite + Unpin> AsyncWrite for CountingWriter<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(written)) = polled {
            self.sent.fetch_add(written as u64, Ordering::Relaxed);
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn pending_is_encoded_minus_written() {
        let backlog = Backlog::default();
        let mut codec = backlog.counting_codec(tokio_util::codec::BytesCodec::new());
        let mut buffer = BytesMut::new();
        codec
            .encode(bytes::Bytes::from_static(b"0123456789"), &mut buffer)
            .unwrap();
        assert_eq!(backlog.pending(), 10);
        let mut writer = backlog.counting_writer(Vec::new());
        writer.write_all(&buffer[..4]).await.unwrap();
        assert_eq!(backlog.pending(), 6);
        writer.write_all(&buffer[4..]).await.unwrap();
        assert_eq!(backlog.pending(), 0);
    }
}
