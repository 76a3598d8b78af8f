//! The pending queue: priority first, then round-robin across batches, then FIFO, with jobs
//! grouped by shape (slots and required labels) so a job no worker can take never blocks the
//! ones behind it.

use crate::job::{BatchId, JobId, Placement, SpecBytes};
use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

mod census;

pub use census::QueueCount;

/// A job waiting for a slot.
#[derive(Debug, Clone)]
pub struct PendingJob {
    /// The job.
    pub job: JobId,
    /// Its batch.
    pub batch: BatchId,
    /// The number the next attempt will carry.
    pub attempt: u32,
    /// Which of the job's turns in line this is: the Ledger takes a start only from its
    /// latest (an older one may still be on its way when the job is queued again).
    pub entry: u16,
    /// What it runs.
    pub spec: SpecBytes,
    /// Goes to the head of its batch's line: it had its place there already (it was taken out
    /// for a result that turned out not to be its own).
    pub ahead: bool,
}

/// A job as it waits in line: its batch and shape are those of the line it waits in.
#[derive(Debug)]
struct Queued {
    job: JobId,
    attempt: u32,
    entry: u16,
    spec: SpecBytes,
    /// When it was put in line: tells a job's latest entry from older ones.
    seq: u64,
}

/// What a worker must offer to take a job: slots, and labels.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Shape {
    slots: u32,
    requires: Vec<String>,
}

impl Shape {
    /// The shape of a job that takes `slots` and requires these labels.
    pub fn new(slots: u32, requires: &[String]) -> Shape {
        Shape::of_labels(slots, requires.to_vec())
    }

    fn of(placement: Placement) -> Shape {
        Shape::of_labels(placement.slots, placement.requires)
    }

    fn of_labels(slots: u32, mut requires: Vec<String>) -> Shape {
        requires.sort();
        requires.dedup();
        Shape { slots, requires }
    }

    /// Slots it takes.
    pub fn slots(&self) -> u32 {
        self.slots
    }

    /// Labels it requires, sorted, each once.
    pub fn requires(&self) -> &[String] {
        &self.requires
    }

    /// True when a worker with this many free slots and these labels can take it.
    pub fn fits(&self, free_slots: u32, labels: &HashSet<String>) -> bool {
        self.slots <= free_slots && self.requires.iter().all(|label| labels.contains(label))
    }
}

/// Jobs of one priority and shape, taken from their batches in turn.
#[derive(Debug, Default)]
struct ShapeQueue {
    turns: VecDeque<BatchId>,
    by_batch: HashMap<BatchId, VecDeque<Queued>>,
}

impl ShapeQueue {
    fn push(&mut self, batch: BatchId, job: Queued, ahead: bool) {
        let queue = self.by_batch.entry(batch).or_default();
        if queue.is_empty() {
            self.turns.push_back(batch);
        }
        if ahead {
            queue.push_front(job);
        } else {
            queue.push_back(job);
        }
    }

    fn pop(&mut self) -> Option<(BatchId, Queued)> {
        let batch = self.turns.pop_front()?;
        let queue = self.by_batch.get_mut(&batch)?;
        let job = queue.pop_front();
        if queue.is_empty() {
            self.by_batch.remove(&batch);
        } else {
            self.turns.push_back(batch);
        }
        job.map(|job| (batch, job))
    }

    fn is_empty(&self) -> bool {
        self.turns.is_empty()
    }
}

/// All pending jobs.
///
/// A withdrawn job's entry stays in line and is dropped when it comes round; a job withdrawn
/// and then put in line again (a cancel whose write failed, say) has two entries, of which only
/// the newest may run, or it would run twice under one attempt number.
#[derive(Debug, Default)]
pub struct PendingQueue {
    queues: BTreeMap<(Reverse<i32>, Shape), ShapeQueue>,
    /// Jobs withdrawn while in line, with the `seq` of the one entry of theirs that may still
    /// run (0: none). A job not here has at most one entry in line, and it may run. Marks of
    /// jobs no longer in line are pruned once they outnumber the jobs in line, so they never
    /// pile up, whatever ids withdrawals name.
    withdrawn: HashMap<JobId, u64>,
    next_seq: u64,
    len: usize,
}

impl PendingQueue {
    /// Adds a job at the back of its batch's line (at its head if it is `ahead`); an earlier
    /// entry of the same job that was withdrawn stays withdrawn.
    pub fn push(&mut self, job: PendingJob) {
        self.next_seq += 1;
        let seq = self.next_seq;
        if let Some(valid) = self.withdrawn.get_mut(&job.job) {
            *valid = seq;
        }
        let (priority, shape) = match job.spec.placement() {
            Ok(placement) => (placement.priority, Shape::of(placement)),
            Err(error) => {
                // Specs are encoded by the ledger itself; this would be a bug, not bad input.
                tracing::error!(job = job.job, %error, "unreadable job spec, queued with defaults");
                (
                    0,
                    Shape {
                        slots: 1,
                        requires: Vec::new(),
                    },
                )
            }
        };
        let queued = Queued {
            job: job.job,
            attempt: job.attempt,
            entry: job.entry,
            spec: job.spec,
            seq,
        };
        self.queues
            .entry((Reverse(priority), shape))
            .or_default()
            .push(job.batch, queued, job.ahead);
        self.len += 1;
    }

    /// Marks jobs to be dropped when they reach the front (they were cancelled).
    pub fn withdraw(&mut self, jobs: impl IntoIterator<Item = JobId>) {
        // Marks only matter for jobs in line; with none in line there is nothing to mark.
        if self.len == 0 {
            return;
        }
        self.withdrawn.extend(jobs.into_iter().map(|job| (job, 0)));
        if self.withdrawn.len() > 2 * self.len + 1024 {
            self.prune();
        }
    }

    /// Drops the marks of jobs with no entry in line: one pass over the line, once marks
    /// outnumber the jobs in it, so a constant cost per mark.
    fn prune(&mut self) {
        let mut in_line = HashSet::with_capacity(self.withdrawn.len().min(self.len));
        for queue in self.queues.values() {
            for line in queue.by_batch.values() {
                for queued in line {
                    if self.withdrawn.contains_key(&queued.job) {
                        in_line.insert(queued.job);
                    }
                }
            }
        }
        self.withdrawn.retain(|job, _| in_line.contains(job));
    }

    /// The best job a worker with these free slots and labels can take, with its shape.
    pub fn pop_for(
        &mut self,
        free_slots: u32,
        labels: &HashSet<String>,
    ) -> Option<(PendingJob, Shape)> {
        let mut emptied = Vec::new();
        let mut found = None;
        'queues: for (key, queue) in self.queues.iter_mut() {
            if !key.1.fits(free_slots, labels) {
                continue;
            }
            while let Some((batch, queued)) = queue.pop() {
                self.len -= 1;
                let runs = match self.withdrawn.get_mut(&queued.job) {
                    None => true,
                    Some(valid) if *valid == queued.seq => {
                        // Entries of it still in line (one put back ahead of them) are older
                        // ones: none of them may run now.
                        *valid = 0;
                        true
                    }
                    Some(_) => false,
                };
                if runs {
                    let job = PendingJob {
                        job: queued.job,
                        batch,
                        attempt: queued.attempt,
                        entry: queued.entry,
                        spec: queued.spec,
                        ahead: false,
                    };
                    found = Some((job, key.1.clone()));
                    if queue.is_empty() {
                        emptied.push(key.clone());
                    }
                    break 'queues;
                }
            }
            emptied.push(key.clone());
        }
        for key in emptied {
            self.queues.remove(&key);
        }
        if self.len == 0 {
            self.withdrawn.clear();
        }
        found
    }

    /// True when the job waits in line and may run.
    #[cfg(test)]
    pub fn holds(&self, job: JobId) -> bool {
        self.queues.values().any(|queue| {
            queue.by_batch.values().any(|line| {
                line.iter().any(|queued| {
                    queued.job == job
                        && self
                            .withdrawn
                            .get(&job)
                            .is_none_or(|valid| *valid == queued.seq)
                })
            })
        })
    }

    /// Jobs waiting, counting withdrawn ones not yet dropped.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::JobSpec;

    pub(super) fn job_with(
        id: JobId,
        batch: BatchId,
        priority: i32,
        requires: &[&str],
        slots: u32,
    ) -> PendingJob {
        let mut spec = JobSpec::call("noop", Vec::new());
        spec.priority = priority;
        spec.slots = slots;
        spec.requires = requires.iter().map(|label| label.to_string()).collect();
        PendingJob {
            job: id,
            batch,
            attempt: 1,
            entry: 1,
            spec: SpecBytes::encode(&spec),
            ahead: false,
        }
    }

    pub(super) fn job(id: JobId, batch: BatchId, priority: i32, requires: &[&str]) -> PendingJob {
        job_with(id, batch, priority, requires, 1)
    }

    pub(super) fn drain(queue: &mut PendingQueue, labels: &[&str]) -> Vec<JobId> {
        let labels: HashSet<String> = labels.iter().map(|label| label.to_string()).collect();
        std::iter::from_fn(|| queue.pop_for(1, &labels).map(|(job, _)| job.job)).collect()
    }

    #[test]
    fn priority_then_round_robin_across_batches_then_fifo() {
        let mut queue = PendingQueue::default();
        for id in 1..=3 {
            queue.push(job(id, 1, 0, &[]));
        }
        for id in 4..=5 {
            queue.push(job(id, 2, 0, &[]));
        }
        queue.push(job(6, 3, 5, &[]));
        assert_eq!(drain(&mut queue, &[]), vec![6, 1, 4, 2, 5, 3]);
        assert!(queue.is_empty());
    }

    #[test]
    fn unmatched_requirements_do_not_block_others() {
        let mut queue = PendingQueue::default();
        queue.push(job(1, 1, 9, &["gpu"]));
        queue.push(job(2, 1, 0, &[]));
        assert_eq!(drain(&mut queue, &[]), vec![2]);
        assert_eq!(queue.len(), 1);
        assert_eq!(drain(&mut queue, &["gpu", "ssd"]), vec![1]);
    }

    #[test]
    fn slots_are_respected() {
        let mut queue = PendingQueue::default();
        queue.push(job_with(1, 1, 0, &[], 4));
        assert!(queue.pop_for(3, &HashSet::new()).is_none());
        let (big, shape) = queue.pop_for(4, &HashSet::new()).unwrap();
        let slots = shape.slots();
        assert_eq!((big.job, slots), (1, 4));
    }

    #[test]
    fn withdrawn_jobs_are_skipped() {
        let mut queue = PendingQueue::default();
        for id in 1..=3 {
            queue.push(job(id, 1, 0, &[]));
        }
        queue.withdraw([2]);
        assert_eq!(drain(&mut queue, &[]), vec![1, 3]);
        assert!(queue.is_empty());
    }

    #[test]
    fn a_job_withdrawn_and_queued_again_runs_once() {
        let mut queue = PendingQueue::default();
        queue.push(job(1, 1, 0, &[]));
        queue.push(job(2, 1, 0, &[]));
        queue.withdraw([1]);
        queue.push(job(1, 1, 0, &[]));
        assert_eq!(drain(&mut queue, &[]), vec![2, 1]);
        // Withdrawn again after that: neither entry runs.
        queue.push(job(3, 1, 0, &[]));
        queue.push(job(1, 1, 0, &[]));
        queue.withdraw([1]);
        queue.push(job(1, 1, 0, &[]));
        queue.withdraw([1]);
        assert_eq!(drain(&mut queue, &[]), vec![3]);
    }

    #[test]
    fn a_job_put_back_ahead_runs_first_in_its_batch_and_once() {
        let mut queue = PendingQueue::default();
        for id in 1..=3 {
            queue.push(job(id, 1, 0, &[]));
        }
        queue.withdraw([3]);
        queue.push(PendingJob {
            ahead: true,
            ..job(3, 1, 0, &[])
        });
        assert_eq!(drain(&mut queue, &[]), vec![3, 1, 2]);
        assert!(queue.is_empty());
        assert!(queue.withdrawn.is_empty());
    }

    #[test]
    fn marks_of_jobs_not_in_line_are_pruned() {
        let mut queue = PendingQueue::default();
        queue.push(job(1, 1, 0, &[]));
        queue.withdraw(1_000..101_000);
        assert!(
            queue.withdrawn.len() <= 2 + 1024,
            "{}",
            queue.withdrawn.len()
        );
        // Put in line after, it runs.
        queue.push(job(5_000, 1, 0, &[]));
        assert_eq!(drain(&mut queue, &[]), vec![1, 5_000]);
    }
}
