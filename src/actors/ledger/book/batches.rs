//! A batch's counts, kept as its jobs move, and what they say about its progress.

use crate::job::{BatchId, JobState};
use crate::status::{BatchInfo, JobCounts};

/// Jobs a rate is measured over, at the least: a batch of one or two has no rate to speak of.
const RATE_MIN_JOBS: u64 = 3;

/// Time a rate is measured over, at the least: jobs that all ended within a few milliseconds
/// would read as thousands a second.
const RATE_MIN_SPAN_MS: u64 = 1_000;

/// A batch's counts; running includes jobs whose terminal state is not yet on disk (see
/// `recording`).
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
    /// and its retry counts as time spent. Jobs that ran to an end count; cancelled ones do not.
    pub(crate) rate_from: Option<(u64, u64)>,
    /// Jobs whose terminal state is being written, by that state (succeeded, failed,
    /// cancelled). Counted in `running` until it is on disk, as the job book's rules want; shown
    /// under their outcome, since they hold no slot any more (a cancel of many pending jobs
    /// would otherwise show them all running, and jobs just ended more running than slots).
    pub(crate) recording: [u64; 3],
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
            recording: [0; 3],
        }
    }

    /// What clients are told, as of `now`.
    pub(crate) fn info(&self, id: BatchId, now: u64) -> BatchInfo {
        let done = !self.unfinished();
        let end_ms = match self.finished_at_ms {
            Some(finished_at_ms) if done => finished_at_ms,
            _ => now,
        };
        let jobs_per_s = match self.rate_from {
            Some((since_ms, base)) => rate(
                self.ended().saturating_sub(base),
                end_ms.saturating_sub(since_ms),
            ),
            None => 0.0,
        };
        let shown = self.shown();
        let left = shown.pending + shown.running;
        let eta_s = (!done && jobs_per_s > 0.0).then(|| (left as f64 / jobs_per_s).ceil() as u64);
        BatchInfo {
            id,
            name: self.name.clone(),
            total: self.total,
            pending: shown.pending,
            running: shown.running,
            succeeded: shown.succeeded,
            failed: shown.failed,
            cancelled: shown.cancelled,
            done,
            submitted_at_ms: self.submitted_at_ms,
            started_at_ms: self.started_at_ms,
            finished_at_ms: self.finished_at_ms.filter(|_| done),
            jobs_per_s,
            eta_s,
            waiting: Vec::new(),
        }
    }

    /// The counts as people are shown them: a job whose outcome is being written counts under
    /// that outcome, not as running.
    pub(crate) fn shown(&self) -> JobCounts {
        let [succeeding, failing, cancelling] = self.recording;
        JobCounts {
            pending: self.pending,
            running: self
                .running
                .saturating_sub(succeeding + failing + cancelling),
            succeeded: self.succeeded + succeeding,
            failed: self.failed + failing,
            cancelled: self.cancelled + cancelling,
        }
    }

    /// Jobs that ran to an end, succeeded or failed (written or being written): what a rate
    /// counts. Cancelled jobs are not work done.
    fn ended(&self) -> u64 {
        self.succeeded + self.failed + self.recording[0] + self.recording[1]
    }

    /// True while some job of the batch waits or runs.
    pub(crate) fn unfinished(&self) -> bool {
        self.pending > 0 || self.running > 0
    }

    /// A job's terminal state is being written from now on.
    pub(crate) fn recording(&mut self, state: JobState) {
        if let Some(slot) = recording_slot(state) {
            self.recording[slot] += 1;
        }
    }

    /// A job whose terminal state was being written reached it on disk (`written`), or did not
    /// (the write failed; it goes back in line).
    pub(crate) fn recorded(&mut self, state: JobState, written: bool) {
        if let Some(slot) = recording_slot(state) {
            self.recording[slot] = self.recording[slot].saturating_sub(1);
        }
        if written {
            self.count_terminal(state);
        }
    }

    /// A job that was running (or being recorded) reached `state` on disk.
    fn count_terminal(&mut self, state: JobState) {
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
        let ended = self.ended();
        self.rate_from.get_or_insert((now, ended));
    }
}

/// Where a terminal state is tallied in [`BatchCounts::recording`].
fn recording_slot(state: JobState) -> Option<usize> {
    match state {
        JobState::Succeeded => Some(0),
        JobState::Failed => Some(1),
        JobState::Cancelled => Some(2),
        JobState::Pending | JobState::Running => None,
    }
}

/// Jobs a second, `ended` over `span_ms`; none (0) where too few jobs or too short a time make
/// a figure that means nothing.
fn rate(ended: u64, span_ms: u64) -> f64 {
    if ended < RATE_MIN_JOBS || span_ms < RATE_MIN_SPAN_MS {
        return 0.0;
    }
    ended as f64 * 1000.0 / span_ms as f64
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
        counts.rate_from = Some((now - 1_500, 95));
        counts.succeeded = 98;
        counts.pending = 2;
        let info = counts.info(7, now);
        assert_eq!((info.jobs_per_s, info.eta_s), (2.0, Some(1)));

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

    #[test]
    fn tiny_instant_and_cancelled_batches_have_no_rate() {
        let now = 1_000_000_000;
        let done = |succeeded, cancelled, took_ms| BatchCounts {
            total: succeeded + cancelled,
            succeeded,
            cancelled,
            started_at_ms: Some(now - took_ms),
            finished_at_ms: Some(now),
            rate_from: Some((now - took_ms, 0)),
            ..BatchCounts::new("b".into(), now - took_ms)
        };
        // One job in 3 ms once read as 333/s; two in a minute are no rate either.
        assert_eq!(done(1, 0, 3).info(1, now).jobs_per_s, 0.0);
        assert_eq!(done(2, 0, 60_000).info(1, now).jobs_per_s, 0.0);
        // A thousand in a tenth of a second: over before a rate means anything.
        assert_eq!(done(1000, 0, 100).info(1, now).jobs_per_s, 0.0);
        // Cancelling is not work done: 199,977 cancelled in a minute are no throughput.
        assert_eq!(done(3, 199_977, 60_000).info(1, now).jobs_per_s, 3.0 / 60.0);
        assert_eq!(done(0, 199_977, 60_000).info(1, now).jobs_per_s, 0.0);
        assert_eq!(done(30, 0, 10_000).info(1, now).jobs_per_s, 3.0);
    }

    #[test]
    fn jobs_being_recorded_show_under_their_outcome_not_as_running() {
        let now = 1_000_000_000;
        let mut counts = BatchCounts {
            total: 10,
            pending: 2,
            running: 8,
            ..BatchCounts::new("b".into(), now)
        };
        // Six run on six slots; two just ended and are being written.
        counts.recording(JobState::Succeeded);
        counts.recording(JobState::Failed);
        let info = counts.info(1, now);
        assert_eq!(
            (info.pending, info.running, info.succeeded, info.failed),
            (2, 6, 1, 1)
        );
        assert!(!info.done, "not done before it is on disk");
        // Written: the same counts; a failed write puts the job back in line.
        counts.recorded(JobState::Succeeded, true);
        counts.recorded(JobState::Failed, false);
        counts.running -= 1;
        counts.pending += 1;
        let info = counts.info(1, now);
        assert_eq!(
            (info.pending, info.running, info.succeeded, info.failed),
            (3, 6, 1, 0)
        );
        assert_eq!(counts.recording, [0, 0, 0]);
    }
}
