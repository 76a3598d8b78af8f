//! A batch's counts, kept as its jobs move, and what they say about its progress.

use crate::job::{BatchId, JobState};
use crate::status::BatchInfo;

/// A batch's counts; running includes jobs whose terminal state is not yet on disk.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct BatchCounts {
    pub(crate) name: String,
    pub(crate) submitted_at_ms: u64,
    pub(crate) total: u64,
    pub(crate) pending: u64,
    /// Of the pending, those waiting out a retry's backoff.
    pub(crate) backoff: u64,
    pub(crate) running: u64,
    pub(crate) succeeded: u64,
    pub(crate) failed: u64,
    pub(crate) cancelled: u64,
    /// When its first attempt started.
    pub(crate) started_at_ms: Option<u64>,
    /// When it was last seen done; cleared when a retry reopens it.
    pub(crate) finished_at_ms: Option<u64>,
    /// Where its rate is measured from: (when, jobs finished by then). Set by the first start
    /// after submission, restart or retry, so neither a restart's gap nor a day between a run
    /// and its retry counts as time spent.
    pub(crate) rate_from: Option<(u64, u64)>,
}

impl BatchCounts {
    /// A batch with nothing counted yet.
    pub(crate) fn new(name: String, submitted_at_ms: u64) -> BatchCounts {
        BatchCounts {
            name,
            submitted_at_ms,
            total: 0,
            pending: 0,
            backoff: 0,
            running: 0,
            succeeded: 0,
            failed: 0,
            cancelled: 0,
            started_at_ms: None,
            finished_at_ms: None,
            rate_from: None,
        }
    }

    /// What clients are told, as of `now`.
    pub(crate) fn info(&self, id: BatchId, now: u64) -> BatchInfo {
        let done = !self.unfinished();
        let finished = self.finished();
        let end_ms = match self.finished_at_ms {
            Some(finished_at_ms) if done => finished_at_ms,
            _ => now,
        };
        let jobs_per_s = match self.rate_from {
            Some((since_ms, base)) if end_ms > since_ms => {
                finished.saturating_sub(base) as f64 * 1000.0 / (end_ms - since_ms) as f64
            }
            _ => 0.0,
        };
        let left = self.pending + self.running;
        let eta_s = (!done && jobs_per_s > 0.0).then(|| (left as f64 / jobs_per_s).ceil() as u64);
        BatchInfo {
            id,
            name: self.name.clone(),
            total: self.total,
            pending: self.pending,
            running: self.running,
            succeeded: self.succeeded,
            failed: self.failed,
            cancelled: self.cancelled,
            done,
            submitted_at_ms: self.submitted_at_ms,
            started_at_ms: self.started_at_ms,
            finished_at_ms: self.finished_at_ms.filter(|_| done),
            jobs_per_s,
            eta_s,
            waiting: Vec::new(),
        }
    }

    /// True while some job of the batch waits or runs.
    pub(crate) fn unfinished(&self) -> bool {
        self.pending > 0 || self.running > 0
    }

    /// Jobs in a terminal state.
    pub(crate) fn finished(&self) -> u64 {
        self.succeeded + self.failed + self.cancelled
    }

    /// A job that was running (or being recorded) reached `state` on disk.
    pub(crate) fn count_terminal(&mut self, state: JobState) {
        let column = match state {
            JobState::Succeeded => &mut self.succeeded,
            JobState::Failed => &mut self.failed,
            JobState::Cancelled => &mut self.cancelled,
            JobState::Pending | JobState::Running => return,
        };
        *column += 1;
        self.running = self.running.saturating_sub(1);
    }

    /// A job of the batch started: its first start, and where its rate counts from.
    pub(crate) fn started(&mut self, now: u64) {
        self.started_at_ms.get_or_insert(now);
        let finished = self.finished();
        self.rate_from.get_or_insert((now, finished));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_running_batch_has_a_rate_and_an_eta_a_done_one_keeps_its_end() {
        let now = 1_000_000_000;
        let mut counts = BatchCounts {
            total: 100,
            pending: 40,
            running: 10,
            succeeded: 45,
            failed: 5,
            started_at_ms: Some(now - 60_000),
            // Measured from the start of this run (after a restart, say): 50 finished before.
            rate_from: Some((now - 10_000, 0)),
            ..BatchCounts::new("b".into(), now - 20_000)
        };
        let info = counts.info(7, now);
        assert!(!info.done);
        // 50 finished in 10 s: 5 a second, 50 left, so 10 s to go.
        assert_eq!((info.jobs_per_s, info.eta_s), (5.0, Some(10)));
        assert_eq!(info.finished_at_ms, None);

        counts.pending = 0;
        counts.running = 0;
        counts.succeeded = 95;
        counts.finished_at_ms = Some(now - 5_000);
        let info = counts.info(7, now);
        assert!(info.done);
        assert_eq!(info.eta_s, None);
        assert_eq!(info.finished_at_ms, Some(now - 5_000));
        // Measured from start to end, not to now: 100 in 5 s.
        assert_eq!(info.jobs_per_s, 20.0);

        // A retry a day later: its rate counts from its own start, not yesterday's.
        counts.finished_at_ms = None;
        counts.failed = 0;
        counts.rate_from = Some((now - 1_000, 95));
        counts.succeeded = 97;
        counts.pending = 3;
        let info = counts.info(7, now);
        assert_eq!((info.jobs_per_s, info.eta_s), (2.0, Some(2)));

        let fresh = BatchCounts {
            total: 3,
            pending: 3,
            ..BatchCounts::new("c".into(), now)
        };
        let info = fresh.info(8, now);
        assert_eq!(
            (info.jobs_per_s, info.eta_s, info.started_at_ms),
            (0.0, None, None)
        );
    }
}
