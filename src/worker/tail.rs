//! The last bytes of a job's output: what a result carries of stdout and stderr.

use std::sync::{Arc, Mutex};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Bytes of stdout and of stderr kept for the result.
pub(crate) const TAIL_BYTES: usize = 4096;

/// The last bytes of a stream, readable while the stream is still being read.
#[derive(Clone, Default)]
pub(crate) struct Tail(Arc<Mutex<Vec<u8>>>);

impl Tail {
    /// Reads a stream to its end, keeping its last bytes.
    pub(crate) async fn read(self, stream: Option<impl AsyncRead + Unpin>) {
        let Some(mut stream) = stream else {
            return;
        };
        let mut chunk = [0u8; 8192];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(read) => {
                    let mut kept = self
                        .0
                        .lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner());
                    kept.extend_from_slice(&chunk[..read]);
                    if kept.len() > 2 * TAIL_BYTES {
                        let excess = kept.len() - TAIL_BYTES;
                        kept.drain(..excess);
                    }
                }
            }
        }
    }

    pub(crate) fn take(&self) -> Vec<u8> {
        std::mem::take(
            &mut *self
                .0
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        )
    }
}

/// The tails of both streams as one text, stderr's marked.
pub(crate) fn join_tails(stdout: Vec<u8>, stderr: Vec<u8>) -> String {
    let last = |bytes: &[u8]| {
        String::from_utf8_lossy(&bytes[bytes.len().saturating_sub(TAIL_BYTES)..]).into_owned()
    };
    match (stdout.is_empty(), stderr.is_empty()) {
        (_, true) => last(&stdout),
        (true, false) => last(&stderr),
        (false, false) => format!("{}\n--- stderr ---\n{}", last(&stdout), last(&stderr)),
    }
}
