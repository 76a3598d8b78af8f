//! Statistics the Ledger keeps as jobs move: run and wait time distributions, finished jobs per
//! second, recent failures. Each event costs a constant amount of work; a status request reads
//! them without looking at any job.

use crate::job::{now_ms, JobState};
use crate::metrics::Metrics;
use crate::status::{FailureInfo, Percentiles};
use hdrhistogram::Histogram;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

/// Seconds of finished-job counts kept, for the throughput chart.
pub const HISTORY_S: usize = 300;

/// Recent failures kept.
const RECENT_FAILURES: usize = 20;

/// The output kept with a recent failure: its last bytes.
const FAILURE_TAIL: usize = 2048;

/// The longest duration the histograms tell apart (longer ones count as this): a week.
const LONGEST_MS: u64 = 7 * 24 * 3600 * 1000;

/// Counts per second, in a ring indexed by the second.
struct PerSecond {
    seconds: Box<[u64; HISTORY_S]>,
    counts: Box<[u32; HISTORY_S]>,
}

impl PerSecond {
    fn new() -> PerSecond {
        PerSecond {
            seconds: Box::new([u64::MAX; HISTORY_S]),
            counts: Box::new([0; HISTORY_S]),
        }
    }

    fn add(&mut self, second: u64, count: u32) {
        let slot = (second % HISTORY_S as u64) as usize;
        if self.seconds[slot] != second {
            self.seconds[slot] = second;
            self.counts[slot] = 0;
        }
        self.counts[slot] = self.counts[slot].saturating_add(count);
    }

    fn get(&self, second: u64) -> u32 {
        let slot = (second % HISTORY_S as u64) as usize;
        if self.seconds[slot] == second {
            self.counts[slot]
        } else {
            0
        }
    }

    /// The last `n` seconds up to and including `now`, oldest first.
    fn last(&self, now: u64, n: usize) -> Vec<u32> {
        let n = n.min(HISTORY_S) as u64;
        (0..n)
            .rev()
            .map(|back| now.checked_sub(back).map_or(0, |second| self.get(second)))
            .collect()
    }
}

/// The Ledger's running statistics.
pub(crate) struct LedgerStats {
    metrics: Arc<Metrics>,
    started_at_ms: u64,
    run_ms: Histogram<u64>,
    wait_ms: Histogram<u64>,
    finished: PerSecond,
    failures: VecDeque<FailureInfo>,
}

impl LedgerStats {
    pub(crate) fn new(metrics: Arc<Metrics>) -> LedgerStats {
        let histogram = || {
            // Two significant digits: a few kilobytes each, and 1% is plenty for p99.
            Histogram::new_with_bounds(1, LONGEST_MS, 2).expect("static histogram bounds")
        };
        LedgerStats {
            metrics,
            started_at_ms: now_ms(),
            run_ms: histogram(),
            wait_ms: histogram(),
            finished: PerSecond::new(),
            failures: VecDeque::with_capacity(RECENT_FAILURES),
        }
    }

    pub(crate) fn started_at_ms(&self) -> u64 {
        self.started_at_ms
    }

    /// A job started for the first time, `wait_ms` after its submission.
    pub(crate) fn first_start(&mut self, wait_ms: u64) {
        self.wait_ms.saturating_record(wait_ms.clamp(1, LONGEST_MS));
        self.metrics.job_waited(Duration::from_millis(wait_ms));
    }

    /// An attempt ended (succeeded, failed or timed out) after running `run_ms`.
    pub(crate) fn attempt_ended(&mut self, run_ms: u64) {
        self.run_ms.saturating_record(run_ms.clamp(1, LONGEST_MS));
        self.metrics.attempt_ran(Duration::from_millis(run_ms));
    }

    /// Jobs reached a terminal state with this outcome. Cancelled ones are no work done: they
    /// count in the metrics, not in the throughput (a cancel of 200,000 pending jobs is not
    /// 3,000 jobs a second).
    pub(crate) fn jobs_finished(&mut self, state: JobState, count: u64) {
        if count == 0 {
            return;
        }
        if state != JobState::Cancelled {
            self.finished
                .add(now_ms() / 1000, u32::try_from(count).unwrap_or(u32::MAX));
        }
        self.metrics.jobs_finished(state, count);
    }

    /// An attempt ended with this outcome (`succeeded` for a recorded result, or a failure's:
    /// `failed`, `timed_out`, `killed`, `lost`, `unstarted`).
    pub(crate) fn attempt_outcome(&self, outcome: &str) {
        self.metrics.attempt_ended(outcome);
    }

    /// An attempt failed; kept among the recent failures.
    pub(crate) fn failure(&mut self, mut failure: FailureInfo) {
        if failure.output_tail.len() > FAILURE_TAIL {
            let mut cut = failure.output_tail.len() - FAILURE_TAIL;
            while !failure.output_tail.is_char_boundary(cut) {
                cut += 1;
            }
            failure.output_tail.drain(..cut);
        }
        if self.failures.len() == RECENT_FAILURES {
            self.failures.pop_back();
        }
        self.failures.push_front(failure);
    }

    pub(crate) fn recent_failures(&self) -> Vec<FailureInfo> {
        self.failures.iter().cloned().collect()
    }

    pub(crate) fn run(&self) -> Percentiles {
        percentiles(&self.run_ms)
    }

    pub(crate) fn wait(&self) -> Percentiles {
        percentiles(&self.wait_ms)
    }

    /// Finished jobs in each of the last `seconds`, the current (partial) second last.
    pub(crate) fn per_second(&self, seconds: usize) -> Vec<u32> {
        self.finished.last(now_ms() / 1000, seconds)
    }

    /// Jobs finished per second over the last full minute (or since start, if shorter).
    pub(crate) fn jobs_per_s(&self) -> f64 {
        let now_ms = now_ms();
        let full_seconds = self.finished.last(now_ms / 1000 - 1, 60);
        let running_s = (now_ms.saturating_sub(self.started_at_ms) / 1000).clamp(1, 60);
        let counted = &full_seconds[full_seconds.len() - running_s as usize..];
        counted.iter().map(|&count| u64::from(count)).sum::<u64>() as f64 / running_s as f64
    }
}

fn percentiles(histogram: &Histogram<u64>) -> Percentiles {
    if histogram.is_empty() {
        return Percentiles::default();
    }
    Percentiles {
        count: histogram.len(),
        p50_ms: histogram.value_at_quantile(0.5),
        p90_ms: histogram.value_at_quantile(0.9),
        p99_ms: histogram.value_at_quantile(0.99),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_second_ring_forgets_old_seconds() {
        let mut ring = PerSecond::new();
        ring.add(1000, 3);
        ring.add(1000, 2);
        ring.add(1002, 7);
        assert_eq!(ring.last(1002, 4), vec![0, 5, 0, 7]);
        // The same slot, a full ring later: the old count is gone.
        ring.add(1000 + HISTORY_S as u64, 1);
        assert_eq!(ring.get(1000), 0);
        assert_eq!(ring.get(1000 + HISTORY_S as u64), 1);
        assert_eq!(ring.last(2, 4), vec![0, 0, 0, 0]);
    }

    #[test]
    fn percentiles_follow_the_samples() {
        let mut stats = LedgerStats::new(Arc::new(Metrics::new()));
        for run_ms in 1..=1000 {
            stats.attempt_ended(run_ms);
        }
        let run = stats.run();
        assert_eq!(run.count, 1000);
        // Two significant digits: within 1%.
        assert!((495..=505).contains(&run.p50_ms), "{run:?}");
        assert!((891..=909).contains(&run.p90_ms), "{run:?}");
        assert!((980..=1000).contains(&run.p99_ms), "{run:?}");
        assert_eq!(stats.wait(), Percentiles::default());
    }

    #[test]
    fn recent_failures_are_bounded_newest_first() {
        let mut stats = LedgerStats::new(Arc::new(Metrics::new()));
        for job in 0..30 {
            stats.failure(FailureInfo {
                job,
                batch: 1,
                worker: "w".into(),
                outcome: "failed".into(),
                at_ms: job,
                error: None,
                output_tail: "é".repeat(3000),
            });
        }
        let recent = stats.recent_failures();
        assert_eq!(recent.len(), RECENT_FAILURES);
        assert_eq!(recent[0].job, 29);
        assert!(recent[0].output_tail.len() <= FAILURE_TAIL + 1);
        assert!(recent[0].output_tail.chars().all(|c| c == 'é'));
    }
}
