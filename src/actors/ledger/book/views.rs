//! What the book tells the views: batches, unfinished jobs, statistics. Finished jobs are read
//! from the store; the book overlays what only memory knows (that a job runs, and where).

use super::{BatchCounts, Book, LiveJob, Phase};
use crate::actors::ledger::error::LedgerError;
use crate::job::{BatchId, JobId};
use crate::status::{BatchInfo, JobCounts, JobInfo, JobStatistics, Waiting};

/// Why a job waiting out its backoff waits, for a group of them.
const IN_BACKOFF: &str = "retrying after backoff";
/// Why a job held back after a restart waits.
const HELD_BACK: &str =
    "held back after the coordinator restarted, for a reconnecting worker that may still run it";

/// Unfinished batches listed as the busiest in a status.
const BUSIEST_BATCHES: usize = 5;

impl Book {
    /// One batch's progress.
    pub(crate) fn batch(&self, id: BatchId, now: u64) -> Result<BatchInfo, LedgerError> {
        self.batches
            .get(&id)
            .map(|counts| counts.info(id, now))
            .ok_or(LedgerError::NoBatch(id))
    }

    /// Every batch, or with a limit the newest that many; oldest first either way.
    pub(crate) fn batches(&self, limit: Option<usize>, now: u64) -> Vec<BatchInfo> {
        let newest = limit.unwrap_or(self.batches.len());
        let mut batches: Vec<BatchInfo> = self
            .batches
            .iter()
            .rev()
            .take(newest)
            .map(|(id, counts)| counts.info(*id, now))
            .collect();
        batches.reverse();
        batches
    }

    /// An unfinished job as memory knows it (its history comes from the store).
    pub(crate) fn live_job(&self, id: JobId) -> Option<JobInfo> {
        self.jobs.get(&id).map(|job| self.live_info(id, job))
    }

    fn live_info(&self, id: JobId, job: &LiveJob) -> JobInfo {
        let state = job.state();
        JobInfo {
            id,
            batch: job.batch,
            name: job.spec.decode().ok().and_then(|spec| spec.name),
            state,
            attempts: job.attempts,
            lost_attempts: job.lost,
            worker: job.worker_name(),
            exit_code: None,
            duration_ms: None,
            queued_at_ms: self
                .batches
                .get(&job.batch)
                .map_or(0, |counts| counts.submitted_at_ms),
            started_at_ms: job.running.as_ref().map(|running| running.started_at_ms),
            finished_at_ms: None,
            output_tail: None,
            error: None,
            duplicates: 0,
            outputs: Vec::new(),
            history: Vec::new(),
            waiting: self.why_waiting(id, job),
        }
    }

    /// Why a pending job waits, if the book is what holds it: its backoff, or the grace after a
    /// restart. A job in line is the Scheduler's to explain.
    fn why_waiting(&self, id: JobId, job: &LiveJob) -> Option<String> {
        match job.phase {
            Phase::Backoff => Some(format!(
                "{IN_BACKOFF} ({} of {} attempts failed)",
                job.failures,
                job.max_attempts()
            )),
            Phase::Queued if !self.held_back.is_empty() && self.held_back.contains(&id) => {
                Some(HELD_BACK.to_string())
            }
            _ => None,
        }
    }

    /// The pending jobs of one batch, or of all, that the book holds rather than the queue, by
    /// why they wait.
    pub(crate) fn waiting(&self, batch: Option<BatchId>) -> Vec<Waiting> {
        let backoff: u64 = match batch {
            Some(batch) => self.batches.get(&batch).map_or(0, |counts| counts.backoff),
            None => self.batches.values().map(|counts| counts.backoff).sum(),
        };
        // Only right after a restart: a pass over the jobs held back.
        let held = self
            .held_back
            .iter()
            .filter_map(|id| self.jobs.get(id))
            .filter(|job| job.phase == Phase::Queued && batch.is_none_or(|b| job.batch == b))
            .count() as u64;
        [(backoff, IN_BACKOFF), (held, HELD_BACK)]
            .into_iter()
            .filter(|(jobs, _)| *jobs > 0)
            .map(|(jobs, reason)| Waiting {
                jobs,
                reason: reason.to_string(),
                blocked: false,
            })
            .collect()
    }

    /// A page of unfinished jobs, pending or running, in id order: chosen by id first, so a
    /// million pending jobs are not all described for one page.
    pub(crate) fn unfinished_page(
        &self,
        batch: Option<BatchId>,
        waiting: bool,
        after: JobId,
        limit: usize,
    ) -> Vec<JobInfo> {
        let mut ids: Vec<JobId> = self
            .jobs
            .iter()
            .filter(|(id, job)| {
                **id > after
                    && batch.is_none_or(|batch| job.batch == batch)
                    && job.phase.waiting() == waiting
            })
            .map(|(id, _)| *id)
            .collect();
        let limit = limit.min(ids.len());
        if limit > 0 {
            ids.select_nth_unstable(limit - 1);
        }
        ids.truncate(limit);
        ids.sort_unstable();
        ids.iter()
            .map(|id| self.live_info(*id, &self.jobs[id]))
            .collect()
    }

    /// The store sees unfinished jobs as pending; memory knows better.
    pub(crate) fn overlay(&self, page: &mut [JobInfo]) {
        for info in page.iter_mut() {
            if let Some(job) = self.jobs.get(&info.id) {
                let history = std::mem::take(&mut info.history);
                *info = self.live_info(info.id, job);
                info.history = history;
            }
        }
    }

    /// Jobs by state, throughput, timings, failures and the busiest batches.
    pub(crate) fn statistics(&self, now: u64) -> JobStatistics {
        let mut jobs = JobCounts::default();
        for counts in self.batches.values() {
            let shown = counts.shown();
            jobs.pending += shown.pending;
            jobs.running += shown.running;
            jobs.succeeded += shown.succeeded;
            jobs.failed += shown.failed;
            jobs.cancelled += shown.cancelled;
        }
        let mut busiest: Vec<(&BatchId, &BatchCounts)> = self
            .batches
            .iter()
            .filter(|(_, counts)| counts.unfinished())
            .collect();
        busiest.sort_by_key(|(id, counts)| {
            (
                std::cmp::Reverse(counts.running),
                std::cmp::Reverse(counts.pending),
                **id,
            )
        });
        JobStatistics {
            jobs,
            jobs_per_s: self.stats.jobs_per_s(),
            per_second: self.stats.per_second(120),
            run: self.stats.run(),
            wait: self.stats.wait(),
            duplicates: self.duplicates,
            recent_failures: self.stats.recent_failures(),
            busiest: busiest
                .into_iter()
                .take(BUSIEST_BATCHES)
                .map(|(id, counts)| counts.info(*id, now))
                .collect(),
            batches: self.batches.len() as u64,
            started_at_ms: self.stats.started_at_ms(),
            ledger: self.ledger.to_string(),
        }
    }

    /// Unfinished jobs held in memory.
    pub(crate) fn unfinished(&self) -> usize {
        self.jobs.len()
    }

    /// Where a job is, if it is unfinished.
    pub(crate) fn phase(&self, id: JobId) -> Option<super::Phase> {
        self.jobs.get(&id).map(|job| job.phase)
    }
}
