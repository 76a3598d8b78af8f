//! What the views ask of the pending queue: how many jobs wait in each queue, and where given
//! jobs wait in line, without one question per job.

use super::{PendingQueue, Queued, Shape};
use crate::job::{BatchId, JobId};
use std::cmp::Reverse;
use std::collections::{HashMap, VecDeque};

/// The jobs waiting in one queue (of one priority and shape), for the views.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueCount {
    /// Its priority.
    pub priority: i32,
    /// Its shape.
    pub shape: Shape,
    /// Jobs in it that may run.
    pub jobs: u64,
}

impl PendingQueue {
    /// True when this entry may run: its job was not withdrawn since it was put in line.
    fn may_run(&self, queued: &Queued) -> bool {
        self.withdrawn
            .get(&queued.job)
            .is_none_or(|valid| *valid == queued.seq)
    }

    /// Entries of a line that may run: its length, unless some job was withdrawn meanwhile.
    fn live(&self, line: &VecDeque<Queued>) -> u64 {
        if self.withdrawn.is_empty() {
            line.len() as u64
        } else {
            line.iter().filter(|queued| self.may_run(queued)).count() as u64
        }
    }

    /// How many jobs that may run wait in each queue, in the order queues are served; of one
    /// batch, or of all. A count per line, but for a pass over the lines while withdrawn jobs
    /// are still in them.
    pub fn census(&self, batch: Option<BatchId>) -> Vec<QueueCount> {
        self.queues
            .iter()
            .map(|((Reverse(priority), shape), queue)| {
                let jobs = match batch {
                    Some(batch) => queue.by_batch.get(&batch).map_or(0, |line| self.live(line)),
                    None => queue.by_batch.values().map(|line| self.live(line)).sum(),
                };
                QueueCount {
                    priority: *priority,
                    shape: shape.clone(),
                    jobs,
                }
            })
            .filter(|count| count.jobs > 0)
            .collect()
    }

    /// Where each of these jobs (named with its batch) waits in line, if it does: the index of
    /// its queue in the census of all jobs (returned too), and how many jobs of that queue are
    /// served before it (the queue takes its batches in turn). Reads the lines of the batches
    /// named, and counts the others.
    pub fn places(
        &self,
        jobs: &HashMap<JobId, BatchId>,
    ) -> (Vec<QueueCount>, HashMap<JobId, (usize, u64)>) {
        // How many jobs asked about each batch has: its lines are read until all are found.
        let mut wanted: HashMap<BatchId, usize> = HashMap::new();
        for batch in jobs.values() {
            *wanted.entry(*batch).or_default() += 1;
        }
        let mut census = Vec::new();
        let mut found = HashMap::new();
        for ((Reverse(priority), shape), queue) in &self.queues {
            // How many of each batch's line may run, in the order of their turns.
            let lengths: Vec<u64> = queue
                .turns
                .iter()
                .map(|batch| queue.by_batch.get(batch).map_or(0, |line| self.live(line)))
                .collect();
            let count: u64 = lengths.iter().sum();
            if count == 0 {
                continue;
            }
            let index = census.len();
            census.push(QueueCount {
                priority: *priority,
                shape: shape.clone(),
                jobs: count,
            });
            for (turn, batch) in queue.turns.iter().enumerate() {
                let Some(line) = queue.by_batch.get(batch) else {
                    continue;
                };
                let Some(left) = wanted.get_mut(batch).filter(|left| **left > 0) else {
                    continue;
                };
                let mut others: Option<RoundRobin> = None;
                let live = line.iter().filter(|queued| self.may_run(queued));
                for (position, queued) in live.enumerate() {
                    if jobs.get(&queued.job) != Some(batch) {
                        continue;
                    }
                    let position = position as u64;
                    let others = others.get_or_insert_with(|| RoundRobin::new(&lengths, turn));
                    found.insert(queued.job, (index, position + others.ahead(position)));
                    *left -= 1;
                    if *left == 0 {
                        break;
                    }
                }
            }
        }
        (census, found)
    }
}

/// The other batches of a queue as seen from one batch's line: how many of their jobs are
/// served before the line's job at a given position, the queue taking one job of each batch in
/// turn.
struct RoundRobin {
    /// Live lengths of the batches whose turn comes first, sorted, with running sums.
    before: CappedSums,
    /// And of those whose turn comes after.
    after: CappedSums,
}

impl RoundRobin {
    /// Seen from the batch whose turn is `turn`, given every batch's line length in turn order.
    fn new(lengths: &[u64], turn: usize) -> RoundRobin {
        RoundRobin {
            before: CappedSums::new(lengths[..turn].iter().copied()),
            after: CappedSums::new(lengths[turn + 1..].iter().copied()),
        }
    }

    /// Jobs of other batches served before the job `position` places from the line's head:
    /// up to `position + 1` of each batch whose turn comes first, up to `position` of the rest.
    fn ahead(&self, position: u64) -> u64 {
        self.before.sum_capped(position + 1) + self.after.sum_capped(position)
    }
}

/// Numbers from which the sum of each capped at some value is quick to take.
struct CappedSums {
    sorted: Vec<u64>,
    /// `prefix[i]`: the sum of the `i` smallest.
    prefix: Vec<u64>,
}

impl CappedSums {
    fn new(numbers: impl Iterator<Item = u64>) -> CappedSums {
        let mut sorted: Vec<u64> = numbers.collect();
        sorted.sort_unstable();
        let mut prefix = Vec::with_capacity(sorted.len() + 1);
        prefix.push(0);
        for number in &sorted {
            prefix.push(prefix.last().copied().unwrap_or(0) + number);
        }
        CappedSums { sorted, prefix }
    }

    /// The sum of min(n, cap) over the numbers.
    fn sum_capped(&self, cap: u64) -> u64 {
        let below = self.sorted.partition_point(|number| *number < cap);
        self.prefix[below] + cap * (self.sorted.len() - below) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{drain, job, job_with};
    use super::*;

    #[test]
    fn places_count_the_jobs_served_first_across_batches_in_turn() {
        let mut queue = PendingQueue::default();
        // Batches of different sizes, pushed interleaved, and one of higher priority.
        let sizes = [(1, 5u64), (2, 1), (3, 3), (4, 7)];
        let mut next = 1;
        let mut all = HashMap::new();
        for round in 0..7 {
            for (batch, size) in sizes {
                if round < size {
                    queue.push(job(next, batch, 0, &[]));
                    all.insert(next, batch);
                    next += 1;
                }
            }
        }
        queue.push(job(next, 9, 5, &[]));
        all.insert(next, 9);
        let (census, places) = queue.places(&all);
        assert_eq!(
            census
                .iter()
                .map(|count| (count.priority, count.jobs))
                .collect::<Vec<_>>(),
            vec![(5, 1), (0, 16)]
        );
        assert_eq!(places[&next], (0, 0));
        // In its queue, each job has as many before it as the queue serves first.
        let served: Vec<JobId> = drain(&mut queue, &[]);
        assert_eq!(served[0], next);
        for (rank, id) in served[1..].iter().enumerate() {
            assert_eq!(places[id], (1, rank as u64), "job {id}");
        }
        // Only the jobs asked about are placed; a job not in line is not.
        for id in 1..=4 {
            queue.push(job(id, 1, 0, &[]));
        }
        let (_, places) = queue.places(&HashMap::from([(3, 1), (77, 1)]));
        assert_eq!(places, HashMap::from([(3, (0, 2))]));
    }

    #[test]
    fn census_counts_what_may_run_by_queue_and_batch() {
        let mut queue = PendingQueue::default();
        queue.push(job(1, 1, 0, &["gpu"]));
        queue.push(job(2, 1, 0, &[]));
        queue.push(job(3, 2, 0, &[]));
        queue.push(job_with(4, 2, 0, &[], 4));
        queue.withdraw([3]);
        let counts = |census: Vec<QueueCount>| -> Vec<(u32, Vec<String>, u64)> {
            census
                .into_iter()
                .map(|count| {
                    (
                        count.shape.slots(),
                        count.shape.requires().to_vec(),
                        count.jobs,
                    )
                })
                .collect()
        };
        assert_eq!(
            counts(queue.census(None)),
            vec![
                (1, vec![], 1),
                (1, vec!["gpu".to_string()], 1),
                (4, vec![], 1)
            ]
        );
        assert_eq!(counts(queue.census(Some(2))), vec![(4, vec![], 1)]);
        assert!(queue.census(Some(7)).is_empty());
    }
}
