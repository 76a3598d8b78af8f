//! The last bytes of a job's output: what an attempt shows of its stdout and stderr (the whole
//! of stdout is its result, kept by [`Whole`]).

use crate::worker::result::Whole;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Bytes of stdout and of stderr kept for the result.
pub(crate) const TAIL_BYTES: usize = 4096;

/// The last bytes of a stream, readable while the stream is still being read.
#[derive(Clone, Default)]
pub(crate) struct Tail(Arc<Mutex<Vec<u8>>>);

impl Tail {
    /// Reads a stream to its end, keeping its last bytes, and all of them in `whole` if given.
    pub(crate) async fn read(self, stream: Option<impl AsyncRead + Unpin>, whole: Option<Whole>) {
        let Some(mut stream) = stream else {
            if let Some(whole) = whole {
                whole.end(None);
            }
            return;
        };
        let mut chunk = [0u8; 8192];
        let broken = loop {
            match stream.read(&mut chunk).await {
                Ok(0) => break None,
                Err(error) => break Some(error.to_string()),
                Ok(read) => {
                    if let Some(whole) = &whole {
                        whole.push(&chunk[..read]);
                    }
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
        };
        if let Some(whole) = whole {
            whole.end(broken);
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
