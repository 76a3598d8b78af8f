//! The events a run is made of, and how likely each is.

use super::WORKERS;
use proptest::prelude::*;

/// One step of a run.
#[derive(Debug, Clone)]
pub(super) enum Step {
    /// A client submits `jobs` jobs of `max_attempts` each (with a timeout, or not), under one
    /// of a few idempotency keys, or none.
    Submit {
        jobs: usize,
        max_attempts: u32,
        timeout: bool,
        key: Option<u8>,
    },
    /// The Scheduler gives a worker the next job in line (its start goes to the Ledger).
    Assign { worker: usize },
    /// The Scheduler reads the oldest message the Ledger sent it (jobs to queue, withdraw, kill).
    SchedulerReads,
    /// The Ledger reads the oldest message the Scheduler sent it (starts, results, losses,
    /// carried attempts).
    LedgerReads,
    /// A worker's attempt (the `pick`-th it runs) ends: in success, or failing (with
    /// `permanent`, in a way the worker says no other attempt would escape), returning nothing,
    /// a result, or one longer than the limit.
    Finish {
        worker: usize,
        pick: usize,
        success: bool,
        permanent: bool,
        returns: Returns,
    },
    /// A worker reports (or reports again) every result not yet acknowledged.
    Report { worker: usize },
    /// A worker says it started what it was given.
    Acknowledge { worker: usize },
    /// A worker hands back an attempt it held and had not said it started (the `pick`-th of
    /// those): it never runs.
    Release { worker: usize, pick: usize },
    /// A worker sends a result it was told about already, again.
    Duplicate { worker: usize, pick: usize },
    /// A worker's connection breaks (the worker lives on, its attempts too).
    Disconnect { worker: usize },
    /// A worker registers again, carrying what it runs.
    Reconnect { worker: usize },
    /// An old registration of a worker that registered again is declared lost at last.
    ExpireOld,
    /// A worker process is killed: its attempts and unreported results are gone.
    Kill { worker: usize },
    /// The oldest commit reaches the disk, or fails.
    Commit { ok: bool },
    /// The oldest commit that ended is handed back to the book.
    HandBack,
    /// The oldest read the book asked for is answered.
    Read,
    /// The oldest retry backoff ends.
    BackoffOver,
    /// The oldest attempt deadline (its timeout and margin) passes.
    DeadlinePassed,
    /// A client cancels a job (or, with `whole`, its batch).
    Cancel { pick: usize, whole: bool },
    /// A client retries a batch's failed jobs.
    Retry { pick: usize },
    /// A client retries one job (the `pick`-th of all, whatever its state).
    RetryJob { pick: usize },
    /// The coordinator is killed and restarted: the first `kept` commits in flight had reached
    /// the disk, the rest had not.
    Restart { kept: usize },
    /// The reconnect grace after a restart ends.
    GraceOver,
    /// A worker lies about a job it was not given.
    Lie { worker: usize, lie: Lie },
}

/// What an attempt returns.
#[derive(Debug, Clone, Copy)]
pub(super) enum Returns {
    Nothing,
    Result,
    TooLong,
}

/// What a lying worker says, about the `pick`-th live job.
#[derive(Debug, Clone)]
pub(super) struct Lie {
    pub(super) pick: usize,
    /// Under the lease another worker runs the job with, if one does (or else a made-up one).
    pub(super) steal: bool,
    /// It claims to carry an attempt (a made-up one) rather than to report a result.
    pub(super) carry: bool,
    /// The result it reports is a success.
    pub(super) success: bool,
    /// The attempt number it names for a made-up attempt.
    pub(super) attempt: u32,
}

pub(super) fn step() -> impl Strategy<Value = Step> {
    let worker = 0..WORKERS;
    prop_oneof![
        3 => (1..=3usize, 1..=3u32, any::<bool>(), prop::option::weighted(0.5, 0..3u8))
            .prop_map(|(jobs, max_attempts, timeout, key)| Step::Submit { jobs, max_attempts, timeout, key }),
        6 => worker.clone().prop_map(|worker| Step::Assign { worker }),
        8 => Just(Step::SchedulerReads),
        8 => Just(Step::LedgerReads),
        6 => (
            worker.clone(),
            0..4usize,
            prop::bool::weighted(0.6),
            prop::bool::weighted(0.3),
            prop_oneof![Just(Returns::Nothing), Just(Returns::Result), Just(Returns::TooLong)],
        )
            .prop_map(|(worker, pick, success, permanent, returns)| Step::Finish { worker, pick, success, permanent, returns }),
        5 => worker.clone().prop_map(|worker| Step::Report { worker }),
        4 => worker.clone().prop_map(|worker| Step::Acknowledge { worker }),
        2 => (worker.clone(), 0..4usize).prop_map(|(worker, pick)| Step::Release { worker, pick }),
        1 => (worker.clone(), 0..8usize).prop_map(|(worker, pick)| Step::Duplicate { worker, pick }),
        1 => worker.clone().prop_map(|worker| Step::Disconnect { worker }),
        2 => worker.clone().prop_map(|worker| Step::Reconnect { worker }),
        1 => Just(Step::ExpireOld),
        1 => worker.clone().prop_map(|worker| Step::Kill { worker }),
        6 => prop::bool::weighted(0.85).prop_map(|ok| Step::Commit { ok }),
        6 => Just(Step::HandBack),
        2 => Just(Step::Read),
        2 => Just(Step::BackoffOver),
        1 => Just(Step::DeadlinePassed),
        1 => (0..8usize, any::<bool>()).prop_map(|(pick, whole)| Step::Cancel { pick, whole }),
        1 => (0..4usize).prop_map(|pick| Step::Retry { pick }),
        1 => (0..12usize).prop_map(|pick| Step::RetryJob { pick }),
        1 => (0..3usize).prop_map(|kept| Step::Restart { kept }),
        1 => Just(Step::GraceOver),
        1 => (worker, 0..8usize, any::<bool>(), prop::bool::weighted(0.3), any::<bool>(), 1..=4u32)
            .prop_map(|(worker, pick, steal, carry, success, attempt)| Step::Lie {
                worker,
                lie: Lie { pick, steal, carry, success, attempt },
            }),
    ]
}
