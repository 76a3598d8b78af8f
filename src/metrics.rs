//! Prometheus metrics for `/metrics`.
//!
//! Counters and histograms are updated where the events happen (the Ledger, the store's writer
//! thread); each update is an atomic add or an uncontended lock, so the hot path does not notice.
//! Gauges of jobs and workers by state are set from a status snapshot when the page is scraped,
//! and so are the elastic fleet's pools ([`pools`]).

mod pools;

use crate::job::JobState;
use crate::status::ClusterStatus;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::time::Duration;

/// Bucket bounds for job run and queue wait times, in seconds: from a millisecond to four hours.
const JOB_BUCKETS: [f64; 16] = [
    0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0,
    14400.0,
];

/// A `state` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    /// The state.
    pub state: &'static str,
}

/// An `outcome` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// The outcome.
    pub outcome: &'static str,
}

/// Every metric the coordinator exports, registered once.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    jobs: Family<StateLabel, Gauge>,
    workers: Family<StateLabel, Gauge>,
    /// `drover_jobs_finished_total` by outcome: succeeded, failed, cancelled.
    finished: [Counter; 3],
    /// `drover_attempts_total` by outcome.
    attempts: Family<OutcomeLabel, Counter>,
    run_seconds: Histogram,
    wait_seconds: Histogram,
    commit_seconds: Histogram,
    pools: pools::PoolMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let jobs = Family::<StateLabel, Gauge>::default();
        let workers = Family::<StateLabel, Gauge>::default();
        let finished = Family::<OutcomeLabel, Counter>::default();
        let run_seconds = Histogram::new(JOB_BUCKETS);
        let wait_seconds = Histogram::new(JOB_BUCKETS);
        // 0.1 ms to about 3 s.
        let commit_seconds = Histogram::new(
            prometheus_client::metrics::histogram::exponential_buckets(0.0001, 2.0, 15),
        );
        registry.register(
            "drover_jobs",
            "Jobs in each state now, over every batch on record",
            jobs.clone(),
        );
        registry.register(
            "drover_workers",
            "Workers by state (lost: gone without leaving in the last hour, and not back)",
            workers.clone(),
        );
        registry.register(
            "drover_jobs_finished",
            "Times a job reached a terminal state, by outcome; a job that `drover retry` reopens \
             counts again when it ends again, so this can exceed the jobs in that state now \
             (drover_jobs), and it starts from zero when the coordinator does",
            finished.clone(),
        );
        let attempts = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "drover_attempts",
            "Attempts that ended, by outcome: succeeded (recorded as its job's result), failed, \
             timed_out, killed, lost (with its worker), unstarted (lost before its worker began)",
            attempts.clone(),
        );
        registry.register(
            "drover_job_run_seconds",
            "Run time of attempts that ended",
            run_seconds.clone(),
        );
        registry.register(
            "drover_job_wait_seconds",
            "Time from a job's submission to its first start",
            wait_seconds.clone(),
        );
        registry.register(
            "drover_ledger_commit_seconds",
            "Time to write and fsync one group commit of the ledger",
            commit_seconds.clone(),
        );
        let pools = pools::PoolMetrics::default();
        registry.register_collector(Box::new(pools.clone()));
        // Handles on each outcome's counter, so counting is one atomic add.
        let finished = ["succeeded", "failed", "cancelled"]
            .map(|outcome| finished.get_or_create(&OutcomeLabel { outcome }).clone());
        Metrics {
            registry,
            jobs,
            workers,
            finished,
            attempts,
            run_seconds,
            wait_seconds,
            commit_seconds,
            pools,
        }
    }

    /// Jobs reached a terminal state.
    pub fn jobs_finished(&self, state: JobState, count: u64) {
        let counter = match state {
            JobState::Succeeded => &self.finished[0],
            JobState::Failed => &self.finished[1],
            JobState::Cancelled => &self.finished[2],
            JobState::Pending | JobState::Running => return,
        };
        counter.inc_by(count);
    }

    /// An attempt ended with this outcome (see [`crate::status::AttemptRecord::outcome`]).
    pub fn attempt_ended(&self, outcome: &str) {
        let outcome = match outcome {
            "succeeded" => "succeeded",
            "timed_out" => "timed_out",
            "killed" => "killed",
            "lost" => "lost",
            "unstarted" => "unstarted",
            _ => "failed",
        };
        self.attempts.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    /// An attempt ended after running this long.
    pub fn attempt_ran(&self, run: Duration) {
        self.run_seconds.observe(run.as_secs_f64());
    }

    /// A job started for the first time this long after it was submitted.
    pub fn job_waited(&self, wait: Duration) {
        self.wait_seconds.observe(wait.as_secs_f64());
    }

    /// A group commit took this long.
    pub fn ledger_committed(&self, took: Duration) {
        self.commit_seconds.observe(took.as_secs_f64());
    }

    /// The page in the Prometheus text format, with the gauges taken from `status`.
    pub fn render(&self, status: &ClusterStatus) -> String {
        let jobs = &status.stats.jobs;
        for (state, value) in [
            ("pending", jobs.pending),
            ("running", jobs.running),
            ("succeeded", jobs.succeeded),
            ("failed", jobs.failed),
            ("cancelled", jobs.cancelled),
        ] {
            self.jobs
                .get_or_create(&StateLabel { state })
                .set(value as i64);
        }
        let workers = &status.workers;
        for (state, value) in [
            ("idle", workers.idle),
            ("busy", workers.busy),
            ("draining", workers.draining),
            ("lost", workers.lost),
        ] {
            self.workers
                .get_or_create(&StateLabel { state })
                .set(value as i64);
        }
        self.pools.set(&status.pools);
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}
