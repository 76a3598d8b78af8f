//! An attempt's result: a call handler's returned bytes, or an exec job's standard output kept
//! whole while it is read, up to the coordinator's `--max-result-bytes`.

use std::sync::{Arc, Mutex};

/// How big a result over the limit was: exactly, or only that it passed the limit (its
/// output was still open when the attempt ended).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Size {
    Exactly(u64),
    MoreThan(u64),
}

/// Why a result is not kept: the attempt fails with this message.
pub(crate) fn over_limit(size: Size, limit: usize) -> String {
    let size = match size {
        Size::Exactly(bytes) => bytes.to_string(),
        Size::MoreThan(bytes) => format!("more than {bytes}"),
    };
    format!(
        "result of {size} bytes is above --max-result-bytes ({limit}); publish large results as \
         outputs"
    )
}

/// A handler's returned bytes, if they are within the limit.
pub(crate) fn within(bytes: Vec<u8>, limit: usize) -> Result<Vec<u8>, String> {
    if bytes.len() > limit {
        return Err(over_limit(Size::Exactly(bytes.len() as u64), limit));
    }
    Ok(bytes)
}

/// A stream kept whole as it is read, up to a limit: past it, the bytes kept are dropped (the
/// attempt fails anyway) and the rest is only counted, so memory stays within the limit while
/// the stream is still drained and the job writing it never blocks on a full pipe. Shared, so
/// what was read can be taken while the reader still runs (a process that left the job's group
/// may hold the pipe open).
#[derive(Clone)]
pub(crate) struct Whole(Arc<Mutex<Kept>>);

struct Kept {
    bytes: Vec<u8>,
    limit: usize,
    /// Every byte read, kept or not.
    read: u64,
    /// The stream reached its end.
    ended: bool,
    /// Reading it failed.
    broken: Option<String>,
    /// Taken: whatever comes later is ignored.
    taken: bool,
}

impl Whole {
    /// Nothing read yet; keeps at most `limit` bytes.
    pub(crate) fn new(limit: usize) -> Self {
        Whole(Arc::new(Mutex::new(Kept {
            bytes: Vec::new(),
            limit,
            read: 0,
            ended: false,
            broken: None,
            taken: false,
        })))
    }

    fn kept(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The next bytes of the stream.
    pub(crate) fn push(&self, chunk: &[u8]) {
        let mut kept = self.kept();
        if kept.taken {
            return;
        }
        kept.read += chunk.len() as u64;
        if kept.read > kept.limit as u64 {
            // Over the limit: nothing of it will be sent, so nothing more is held.
            kept.bytes = Vec::new();
            return;
        }
        // Grown by doubling as usual, but never past the limit.
        let needed = kept.bytes.len() + chunk.len();
        if needed > kept.bytes.capacity() {
            let grown = (kept.bytes.capacity() * 2).min(kept.limit).max(needed);
            let more = grown - kept.bytes.len();
            kept.bytes.reserve_exact(more);
        }
        kept.bytes.extend_from_slice(chunk);
    }

    /// The stream ended, or could not be read further.
    pub(crate) fn end(&self, broken: Option<String>) {
        let mut kept = self.kept();
        kept.ended = true;
        kept.broken = broken;
    }

    /// The stream's bytes, or why the attempt fails instead: it was longer than the limit, or
    /// could not be read. A stream still open is taken as far as it was read.
    pub(crate) fn take(&self) -> Result<Vec<u8>, String> {
        let mut kept = self.kept();
        kept.taken = true;
        if let Some(broken) = kept.broken.take() {
            return Err(format!("cannot read the job's standard output: {broken}"));
        }
        if kept.read > kept.limit as u64 {
            let size = if kept.ended {
                Size::Exactly(kept.read)
            } else {
                Size::MoreThan(kept.limit as u64)
            };
            return Err(over_limit(size, kept.limit));
        }
        Ok(std::mem::take(&mut kept.bytes))
    }

    /// The bytes held now (for tests: the most ever held is the limit).
    #[cfg(test)]
    fn held(&self) -> usize {
        self.kept().bytes.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_is_kept_byte_for_byte_up_to_the_limit_and_counted_past_it() {
        let whole = Whole::new(10);
        whole.push(b"\xff\x00abc");
        whole.push(b"defgh");
        whole.end(None);
        assert_eq!(whole.take().unwrap(), b"\xff\x00abcdefgh");

        let over = Whole::new(10);
        over.push(&[7; 8]);
        over.push(&[7; 8]);
        assert_eq!(over.held(), 0, "nothing is held once over the limit");
        over.push(&[7; 100]);
        over.end(None);
        assert_eq!(
            over.take().unwrap_err(),
            "result of 116 bytes is above --max-result-bytes (10); publish large results as outputs"
        );

        // Still open when taken: how much there was is not known.
        let open = Whole::new(4);
        open.push(b"hello");
        assert_eq!(
            open.take().unwrap_err(),
            "result of more than 4 bytes is above --max-result-bytes (4); publish large results \
             as outputs"
        );
    }

    #[test]
    fn memory_never_grows_past_the_limit() {
        let limit = 100_000;
        let whole = Whole::new(limit);
        for _ in 0..(limit / 7) {
            whole.push(&[1; 7]);
            assert!(whole.held() <= limit, "{}", whole.held());
        }
        whole.end(None);
        assert_eq!(whole.take().unwrap().len(), limit / 7 * 7);
    }

    #[test]
    fn a_broken_stream_fails_rather_than_passing_a_cut_result() {
        let whole = Whole::new(100);
        whole.push(b"partial");
        whole.end(Some("input/output error".into()));
        assert_eq!(
            whole.take().unwrap_err(),
            "cannot read the job's standard output: input/output error"
        );
    }

    #[test]
    fn a_handlers_bytes_past_the_limit_are_refused_with_their_size() {
        assert_eq!(within(vec![1; 4], 4).unwrap(), vec![1; 4]);
        assert_eq!(
            within(vec![1; 5], 4).unwrap_err(),
            "result of 5 bytes is above --max-result-bytes (4); publish large results as outputs"
        );
    }
}
