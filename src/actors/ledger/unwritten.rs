//! Calls whose jobs run while their submission is written.
//!
//! A call's client is answered only with its job's final record: until then nothing about the
//! job has been acknowledged to anyone. So its job goes to a worker at once, and its submission
//! to disk with the commit that records its result: one flush to disk for the whole round trip,
//! where a batch's job costs two (queued, then recorded). Two rules keep that safe.
//!
//! - **Ids.** A coordinator that dies before a call's submission is written must not give the
//!   job's id to another job in its next run: a worker carrying the lost attempt back would be
//!   taken for that job's (its lease verifies by job id and number). So job ids are reserved on
//!   disk ahead of use ([`Change::ReserveJobs`]), a call runs unwritten only under the
//!   reservation, and a restarted ledger numbers its jobs from above it.
//! - **Order.** Until a commit carrying the submission is durable, every commit about the job
//!   carries it again (written again, it changes nothing), so whichever commit lands first writes
//!   the job before anything about it, and none that fails loses it. A submission no commit has
//!   carried for [`LedgerConfig::call_write_delay`](super::LedgerConfig) is written on its own.
//!
//! A crash before the submission is on disk loses the job and its run, and nothing else: the
//! client was told nothing, and sends its call again (under its idempotency key, the `Client`
//! does so by itself).

use super::book::{Commit, Pending};
use super::Ledger;
use crate::job::JobId;
use crate::storage::store::Change;
use actix::prelude::*;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// How many ids a reservation covers beyond the next job's.
const RESERVE_AHEAD: u64 = 4096;

/// A new reservation is written when fewer ids than this are left under the last one.
const RESERVE_LOW: u64 = 1024;

/// The longest a submission waits to be written again after failed commits (the wait doubles
/// from the delay with each).
const MOST_WRITE_WAIT: Duration = Duration::from_secs(1);

/// Calls' submissions not yet known durable, and the reservation of ids they run under.
#[derive(Default)]
pub(super) struct Unwritten {
    /// Job ids below this are reserved on disk (or on disk already).
    reserved: JobId,
    /// A reservation being written: the id it reserves below.
    reserving: Option<JobId>,
    /// A call came in this run: reservations are kept up from then on.
    calls_seen: bool,
    /// Each call's submission (a `Change::Submit`) with the number of commits in flight that
    /// carry it.
    calls: HashMap<JobId, (Change, u32)>,
    /// The idempotency keys of those calls: a repeat of one waits until the submission is on
    /// disk, as it would for a batch being written.
    keys: HashMap<JobId, Arc<str>>,
    /// Commits carrying submissions that failed in a row: the next write waits longer.
    failures: u32,
    /// A timer will write the submissions no commit carries.
    pub(super) write_due: bool,
}

/// Which calls' submissions a commit carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Carry {
    /// Those of the calls whose jobs it touches: a commit that decides something.
    Touched,
    /// None: notes going alone (they decide nothing, and a note about a job not on disk changes
    /// nothing there), so a call's job runs unwritten until its result or the delay.
    Nothing,
    /// Every one no commit in flight carries: the delay is over.
    All,
}

/// What a commit's end means for the calls.
#[derive(Default)]
pub(super) struct Ended {
    /// Some submission is carried by no commit now, and waits to be written again.
    pub(super) uncarried: bool,
    /// Calls' keys whose submission is on disk now, with their jobs.
    pub(super) keys_written: Vec<(Arc<str>, JobId)>,
}

/// What one commit carries for [`Unwritten`]: told back when it ends.
#[derive(Default)]
pub(super) struct Carried {
    /// The calls' jobs whose submission it carries.
    calls: Vec<JobId>,
    /// The reservation it writes.
    reserve: Option<JobId>,
}

impl Unwritten {
    /// Nothing reserved in this run yet: ids from `next_job` on are free.
    pub(super) fn new(next_job: JobId) -> Self {
        Unwritten {
            reserved: next_job,
            ..Unwritten::default()
        }
    }

    /// Whether a call's job `job` may run before its submission is written: its id is under a
    /// reservation on disk. Either way, reservations are kept up from now on.
    pub(super) fn may_run_unwritten(&mut self, job: JobId) -> bool {
        self.calls_seen = true;
        job < self.reserved
    }

    /// Keeps a call's submission (and its idempotency key, if it has one) until a commit
    /// carrying it is durable.
    pub(super) fn hold(&mut self, job: JobId, submission: Change, key: Option<Arc<str>>) {
        self.calls.insert(job, (submission, 0));
        if let Some(key) = key {
            self.keys.insert(job, key);
        }
    }

    /// How long submissions no commit carries wait to be written: the delay, doubled for each
    /// carrying commit that failed in a row.
    pub(super) fn write_wait(&self, delay: Duration) -> Duration {
        delay
            .saturating_mul(1 << self.failures.min(16))
            .min(MOST_WRITE_WAIT.max(delay))
    }

    /// Puts in front of `changes` the submissions `carry` says, and after them a new
    /// reservation if the ids reserved run low.
    pub(super) fn carry(
        &mut self,
        changes: &mut Vec<Change>,
        carry: Carry,
        next_job: JobId,
    ) -> Carried {
        let mut carried = Carried::default();
        if !self.calls.is_empty() && carry != Carry::Nothing {
            let mut seen = HashSet::new();
            let mut jobs: Vec<JobId> = Vec::new();
            for change in changes.iter() {
                touched_jobs(change, &mut |job| {
                    if self.calls.contains_key(&job) && seen.insert(job) {
                        jobs.push(job);
                    }
                });
            }
            if carry == Carry::All {
                for (job, (_, carriers)) in &self.calls {
                    if *carriers == 0 && seen.insert(*job) {
                        jobs.push(*job);
                    }
                }
            }
            if !jobs.is_empty() {
                let mut with: Vec<Change> = Vec::with_capacity(jobs.len() + changes.len());
                for job in &jobs {
                    if let Some((submission, carriers)) = self.calls.get_mut(job) {
                        *carriers += 1;
                        with.push(submission.clone());
                    }
                }
                with.append(changes);
                *changes = with;
                carried.calls = jobs;
            }
        }
        if self.calls_seen && self.reserving.is_none() && next_job + RESERVE_LOW > self.reserved {
            let below = next_job + RESERVE_AHEAD;
            changes.push(Change::ReserveJobs(below));
            self.reserving = Some(below);
            carried.reserve = Some(below);
        }
        carried
    }

    /// A commit that carried `carried` ended: what it means for the calls.
    pub(super) fn ended(&mut self, carried: Carried, durable: bool) -> Ended {
        if let Some(below) = carried.reserve {
            if durable {
                self.reserved = self.reserved.max(below);
            }
            self.reserving = None;
        }
        let mut ended = Ended::default();
        if carried.calls.is_empty() {
            return ended;
        }
        if durable {
            self.failures = 0;
        } else {
            self.failures = self.failures.saturating_add(1);
        }
        for job in carried.calls {
            if durable {
                self.calls.remove(&job);
                if let Some(key) = self.keys.remove(&job) {
                    ended.keys_written.push((key, job));
                }
            } else if let Some((_, carriers)) = self.calls.get_mut(&job) {
                *carriers = carriers.saturating_sub(1);
                ended.uncarried |= *carriers == 0;
            }
        }
        ended
    }

    /// No submission waits.
    pub(super) fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }
}

/// Calls `each` with every job a change touches (a submission touches none that is not new).
fn touched_jobs(change: &Change, each: &mut impl FnMut(JobId)) {
    match change {
        Change::Submit { .. } | Change::ReserveJobs(_) => {}
        Change::Finish(order) => each(order.job),
        Change::Attempt(row) => each(row.job),
        Change::Started(rows) => rows.iter().for_each(|row| each(row.job)),
        Change::Duplicates(pairs) => pairs.iter().for_each(|(job, _)| each(*job)),
        Change::ManifestsWritten(jobs)
        | Change::ManifestsAbandoned(jobs)
        | Change::Reopen(jobs) => jobs.iter().copied().for_each(each),
    }
}

impl Ledger {
    /// Writes, after the delay, the calls' submissions no commit carried meanwhile.
    pub(super) fn write_calls_later(&mut self, ctx: &mut Context<Self>) {
        if self.unwritten.write_due || self.unwritten.is_empty() {
            return;
        }
        self.unwritten.write_due = true;
        let wait = self.unwritten.write_wait(self.call_write_delay);
        ctx.run_later(wait, |ledger, ctx| {
            ledger.unwritten.write_due = false;
            if ledger.closing || ledger.unwritten.is_empty() {
                return;
            }
            let commit = Commit {
                changes: Vec::new(),
                then: Pending::Note("call submissions"),
            };
            let commit = ledger.with_notes(commit);
            ledger.commit_with(commit, Carry::All, ctx.address(), None);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::store::StartRow;

    fn submission(job: JobId) -> Change {
        Change::Submit {
            batch: job,
            name: "call".into(),
            submitted_at_ms: 1,
            first_job: job,
            jobs: Arc::new(Vec::new()),
            idempotency_key: None,
        }
    }

    fn started(job: JobId) -> Change {
        Change::Started(vec![StartRow {
            job,
            lease: 7,
            attempt: 1,
            worker: "w".into(),
        }])
    }

    fn submitted(changes: &[Change]) -> Vec<JobId> {
        changes
            .iter()
            .filter_map(|change| match change {
                Change::Submit { first_job, .. } => Some(*first_job),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_call_runs_unwritten_only_under_a_reservation_on_disk() {
        let mut unwritten = Unwritten::new(10);
        assert!(!unwritten.may_run_unwritten(10));
        // The next commit reserves ids ahead; only once it is durable do they count.
        let mut changes = vec![submission(10)];
        let carried = unwritten.carry(&mut changes, Carry::Touched, 11);
        assert!(
            matches!(changes.last(), Some(Change::ReserveJobs(below)) if *below == 11 + RESERVE_AHEAD)
        );
        assert!(!unwritten.may_run_unwritten(11));
        // A failed reservation reserves nothing, and the next commit tries again.
        assert!(!unwritten.ended(carried, false).uncarried);
        assert!(!unwritten.may_run_unwritten(11));
        let mut changes = Vec::new();
        let carried = unwritten.carry(&mut changes, Carry::Touched, 11);
        assert_eq!(changes.len(), 1);
        unwritten.ended(carried, true);
        assert!(unwritten.may_run_unwritten(11));
        assert!(!unwritten.may_run_unwritten(11 + RESERVE_AHEAD));
        // Running low, the next commit reserves more.
        let mut changes = Vec::new();
        unwritten.carry(
            &mut changes,
            Carry::Touched,
            11 + RESERVE_AHEAD - RESERVE_LOW + 1,
        );
        assert!(matches!(changes[..], [Change::ReserveJobs(_)]));
    }

    #[test]
    fn every_commit_about_a_call_carries_its_submission_until_one_is_durable() {
        let mut unwritten = Unwritten::new(1);
        unwritten.reserved = 100;
        assert!(unwritten.may_run_unwritten(5));
        unwritten.hold(5, submission(5), Some(Arc::from("key")));
        // Notes about the job, alone, carry nothing; nor does a commit about another job.
        let mut notes = vec![started(5)];
        let carried = unwritten.carry(&mut notes, Carry::Nothing, 7);
        assert!(submitted(&notes).is_empty());
        assert!(!unwritten.ended(carried, true).uncarried);
        let mut other = vec![started(6)];
        let carried = unwritten.carry(&mut other, Carry::Touched, 7);
        assert!(submitted(&other).is_empty());
        assert!(!unwritten.ended(carried, true).uncarried);
        // Two commits about the job, in flight together: both carry it, first.
        let mut first = vec![started(5)];
        let first_carried = unwritten.carry(&mut first, Carry::Touched, 7);
        assert_eq!(submitted(&first[..1]), vec![5]);
        let mut second = vec![started(6), started(5)];
        let second_carried = unwritten.carry(&mut second, Carry::Touched, 7);
        assert_eq!(submitted(&second[..1]), vec![5]);
        // The first fails: the second still carries it, nothing waits to be written.
        assert!(!unwritten.ended(first_carried, false).uncarried);
        // The second fails too: now it waits, longer after each failure, and a write of all
        // carries it.
        let delay = Duration::from_millis(20);
        assert!(unwritten.ended(second_carried, false).uncarried);
        assert_eq!(unwritten.write_wait(delay), Duration::from_millis(80));
        let mut alone = Vec::new();
        let carried = unwritten.carry(&mut alone, Carry::All, 7);
        assert_eq!(submitted(&alone), vec![5]);
        // Durable: its key is written, it is forgotten, and later commits about the job carry
        // nothing.
        let ended = unwritten.ended(carried, true);
        assert!(!ended.uncarried);
        assert_eq!(ended.keys_written, vec![(Arc::from("key"), 5)]);
        assert_eq!(unwritten.write_wait(delay), delay);
        assert!(unwritten.is_empty());
        let mut later = vec![started(5)];
        unwritten.carry(&mut later, Carry::All, 7);
        assert!(submitted(&later).is_empty());
    }
}
