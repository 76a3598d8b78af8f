//! Why jobs in line wait, in words: the queue's census read against the workers connected now.
//! A reason is worked out per queue (a priority and a shape), never per job, so it costs the
//! same for ten jobs in line as for two hundred thousand.

use super::{Scheduler, WorkerSlots};
use crate::actors::queue::{QueueCount, Shape};
use crate::job::{BatchId, JobId};
use crate::status::{Waiting, WorkerInfo};
use actix::prelude::*;
use std::collections::HashMap;

/// Why a job that some connected worker can take still waits.
const FREE_SLOT: &str = "waiting for a free slot";

/// What a connected worker offers, as far as whether it could ever take a job of some shape
/// goes: the Scheduler's own slots, or a worker as a client's list shows it.
trait Offer {
    fn total_slots(&self) -> u32;
    fn has_label(&self, label: &str) -> bool;
    fn draining(&self) -> bool;
}

impl Offer for WorkerSlots {
    fn total_slots(&self) -> u32 {
        self.total
    }
    fn has_label(&self, label: &str) -> bool {
        self.labels.contains(label)
    }
    fn draining(&self) -> bool {
        self.draining
    }
}

impl Offer for WorkerInfo {
    fn total_slots(&self) -> u32 {
        self.slots
    }
    fn has_label(&self, label: &str) -> bool {
        self.labels.iter().any(|own| own == label)
    }
    fn draining(&self) -> bool {
        self.state == "draining"
    }
}

/// Why none of these workers (as `drover workers` lists them; those gone are passed over) can
/// take a job of this shape, in the words a submission's warning uses, or None when one can:
/// for a client that has only the list (`drover run`, whose one request answers only once
/// the job is done).
pub fn blocker_among(shape: &Shape, workers: &[WorkerInfo]) -> Option<String> {
    blocker(
        shape,
        workers.iter().filter(|worker| worker.gone_at_ms.is_none()),
    )
}

/// Why no connected worker can ever take a job of this shape, or None when one can: no worker
/// at all, a label none has, or more slots than any that has the labels.
fn blocker<'a, W: Offer + 'a>(
    shape: &Shape,
    workers: impl Iterator<Item = &'a W> + Clone,
) -> Option<String> {
    let mut taking = workers
        .clone()
        .filter(|worker| !worker.draining())
        .peekable();
    if taking.peek().is_none() {
        return Some(if workers.clone().next().is_none() {
            "no worker is connected".to_string()
        } else {
            "no connected worker takes new jobs: all are draining".to_string()
        });
    }
    let taking = taking.collect::<Vec<_>>();
    let labelled: Vec<&W> = taking
        .iter()
        .copied()
        .filter(|worker| shape.requires().iter().all(|label| worker.has_label(label)))
        .collect();
    if labelled.is_empty() {
        let missing: Vec<&str> = shape
            .requires()
            .iter()
            .filter(|label| !taking.iter().any(|worker| worker.has_label(label)))
            .map(String::as_str)
            .collect();
        return Some(match missing[..] {
            [] => format!(
                "no connected worker has all of the labels {}",
                shape.requires().join(", ")
            ),
            [label] => format!("no connected worker has label {label}"),
            _ => format!("no connected worker has labels {}", missing.join(", ")),
        });
    }
    let largest = labelled
        .iter()
        .map(|worker| worker.total_slots())
        .max()
        .unwrap_or(0);
    if largest >= shape.slots() {
        return None;
    }
    let which = match shape.requires() {
        [] => "worker".to_string(),
        [label] => format!("worker with label {label}"),
        labels => format!("worker with labels {}", labels.join(", ")),
    };
    Some(format!(
        "needs {} slots; the largest {which} has {largest}",
        shape.slots()
    ))
}

/// Groups of jobs by reason, those that wait for a worker first, each reason once.
fn grouped(groups: impl Iterator<Item = (u64, String, bool)>) -> Vec<Waiting> {
    let mut merged: Vec<Waiting> = Vec::new();
    for (jobs, reason, blocked) in groups {
        match merged.iter_mut().find(|group| group.reason == reason) {
            Some(group) => group.jobs += jobs,
            None => merged.push(Waiting {
                jobs,
                reason,
                blocked,
            }),
        }
    }
    merged.sort_by_key(|group| !group.blocked);
    merged
}

impl Scheduler {
    fn blocker(&self, shape: &Shape) -> Option<String> {
        blocker(shape, self.workers.values())
    }

    /// True when some worker taking jobs could take jobs of either shape: jobs of one then
    /// compete with jobs of the other for its slots.
    fn compete(&self, one: &Shape, other: &Shape) -> bool {
        self.workers.values().any(|worker| {
            !worker.draining
                && one.fits(worker.total, &worker.labels)
                && other.fits(worker.total, &worker.labels)
        })
    }

    /// Why the jobs found in line wait: their queue's blocker, or their turn, counting the
    /// jobs served before them in their queue and in every earlier queue that competes for
    /// the same workers.
    fn why_in_line(
        &self,
        census: &[QueueCount],
        places: HashMap<JobId, (usize, u64)>,
    ) -> HashMap<JobId, String> {
        let blockers: Vec<Option<String>> = census
            .iter()
            .map(|queue| self.blocker(&queue.shape))
            .collect();
        let mut before: HashMap<usize, u64> = HashMap::new();
        places
            .into_iter()
            .map(|(job, (index, in_queue))| {
                if let Some(blocker) = &blockers[index] {
                    return (job, blocker.clone());
                }
                let earlier = *before.entry(index).or_insert_with(|| {
                    census[..index]
                        .iter()
                        .zip(&blockers)
                        .filter(|(queue, blocker)| {
                            blocker.is_none() && self.compete(&queue.shape, &census[index].shape)
                        })
                        .map(|(queue, _)| queue.jobs)
                        .sum()
                });
                let ahead = earlier + in_queue;
                let turn = if ahead == 0 {
                    "next in line".to_string()
                } else {
                    format!("{ahead} ahead")
                };
                (job, format!("{FREE_SLOT} ({turn})"))
            })
            .collect()
    }
}

/// Why these pending jobs (each named with its batch) wait, for those found in line.
#[derive(Message)]
#[rtype(result = "HashMap<JobId, String>")]
pub struct WhyWaiting(pub HashMap<JobId, BatchId>);

impl Handler<WhyWaiting> for Scheduler {
    type Result = MessageResult<WhyWaiting>;

    fn handle(&mut self, WhyWaiting(jobs): WhyWaiting, _ctx: &mut Context<Self>) -> Self::Result {
        if jobs.is_empty() {
            return MessageResult(HashMap::new());
        }
        let (census, places) = self.pending.places(&jobs);
        MessageResult(self.why_in_line(&census, places))
    }
}

/// The jobs in line, of one batch or of all, by why they wait.
#[derive(Message)]
#[rtype(result = "Vec<Waiting>")]
pub struct WaitingInLine {
    /// Only this batch's.
    pub batch: Option<BatchId>,
}

impl Handler<WaitingInLine> for Scheduler {
    type Result = MessageResult<WaitingInLine>;

    fn handle(&mut self, asked: WaitingInLine, _ctx: &mut Context<Self>) -> Self::Result {
        let census = self.pending.census(asked.batch);
        MessageResult(grouped(census.into_iter().map(
            |queue| match self.blocker(&queue.shape) {
                Some(blocker) => (queue.jobs, blocker, true),
                None => (queue.jobs, FREE_SLOT.to_string(), false),
            },
        )))
    }
}

/// Of these shapes, each with how many jobs have it, those no connected worker can take, by
/// why: what a submission warns of.
#[derive(Message)]
#[rtype(result = "Vec<Waiting>")]
pub struct Unplaceable(pub Vec<(Shape, u64)>);

impl Handler<Unplaceable> for Scheduler {
    type Result = MessageResult<Unplaceable>;

    fn handle(
        &mut self,
        Unplaceable(shapes): Unplaceable,
        _ctx: &mut Context<Self>,
    ) -> Self::Result {
        MessageResult(grouped(shapes.into_iter().filter_map(|(shape, jobs)| {
            self.blocker(&shape).map(|blocker| (jobs, blocker, true))
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::sync::Arc;

    fn worker(slots: u32, labels: &[&str], draining: bool) -> WorkerSlots {
        let labels = labels
            .iter()
            .map(|label| label.to_string())
            .collect::<HashSet<_>>();
        let mut worker = WorkerSlots::new(Arc::from("w"), 1, labels, slots);
        worker.draining = draining;
        worker
    }

    fn shape(slots: u32, requires: &[&str]) -> Shape {
        let requires: Vec<String> = requires.iter().map(|label| label.to_string()).collect();
        Shape::new(slots, &requires)
    }

    fn why(shape: &Shape, workers: &[WorkerSlots]) -> Option<String> {
        blocker(shape, workers.iter())
    }

    fn listed(slots: u32, labels: &[&str], state: &str, gone: bool) -> WorkerInfo {
        serde_json::from_value(serde_json::json!({
            "id": 1, "name": "w", "address": "a", "slots": slots, "labels": labels,
            "running": 0, "jobs": [], "done": 0, "failed": 0, "busy_ms": 0,
            "last_seen_ms": 0, "connected_at_ms": 0, "state": state, "lost": 0,
            "current": [], "gone_at_ms": gone.then_some(5),
        }))
        .expect("a worker as listed")
    }

    #[test]
    fn a_client_with_the_list_of_workers_finds_the_same_blockers() {
        let fleet = [
            listed(2, &["gpu"], "idle", false),
            listed(8, &["tpu"], "idle", true),
            listed(8, &[], "draining", false),
        ];
        assert_eq!(
            blocker_among(&shape(1, &["tpu"]), &fleet).as_deref(),
            Some("no connected worker has label tpu"),
            "a gone worker takes nothing"
        );
        assert_eq!(
            blocker_among(&shape(4, &[]), &fleet).as_deref(),
            Some("needs 4 slots; the largest worker has 2"),
            "a draining worker takes nothing new"
        );
        assert_eq!(blocker_among(&shape(2, &["gpu"]), &fleet), None);
        assert_eq!(
            blocker_among(&shape(1, &[]), &[]).as_deref(),
            Some("no worker is connected")
        );
    }

    #[test]
    fn a_blocker_names_what_no_connected_worker_offers() {
        let fleet = [worker(2, &["gpu"], false), worker(2, &["ssd"], false)];
        assert_eq!(why(&shape(1, &[]), &fleet), None);
        assert_eq!(why(&shape(2, &["gpu"]), &fleet), None);
        assert_eq!(
            why(&shape(1, &["tpu"]), &fleet).as_deref(),
            Some("no connected worker has label tpu")
        );
        assert_eq!(
            why(&shape(1, &["tpu", "gpu", "fpga"]), &fleet).as_deref(),
            Some("no connected worker has labels fpga, tpu")
        );
        assert_eq!(
            why(&shape(1, &["ssd", "gpu"]), &fleet).as_deref(),
            Some("no connected worker has all of the labels gpu, ssd")
        );
        assert_eq!(
            why(&shape(4, &[]), &fleet).as_deref(),
            Some("needs 4 slots; the largest worker has 2")
        );
        assert_eq!(
            why(
                &shape(3, &["gpu"]),
                &[worker(8, &[], false), worker(2, &["gpu"], false)]
            )
            .as_deref(),
            Some("needs 3 slots; the largest worker with label gpu has 2")
        );
        assert_eq!(
            why(&shape(1, &[]), &[]).as_deref(),
            Some("no worker is connected")
        );
        // A draining worker takes nothing new.
        assert_eq!(
            why(&shape(1, &[]), &[worker(2, &[], true)]).as_deref(),
            Some("no connected worker takes new jobs: all are draining")
        );
        assert_eq!(
            why(
                &shape(1, &["gpu"]),
                &[worker(2, &["gpu"], true), worker(2, &[], false)]
            )
            .as_deref(),
            Some("no connected worker has label gpu")
        );
    }

    #[test]
    fn groups_merge_by_reason_those_waiting_for_a_worker_first() {
        let groups = grouped(
            [
                (2, FREE_SLOT.to_string(), false),
                (1, "no connected worker has label tpu".to_string(), true),
                (3, FREE_SLOT.to_string(), false),
            ]
            .into_iter(),
        );
        assert_eq!(
            groups,
            vec![
                Waiting {
                    jobs: 1,
                    reason: "no connected worker has label tpu".into(),
                    blocked: true
                },
                Waiting {
                    jobs: 5,
                    reason: FREE_SLOT.into(),
                    blocked: false
                },
            ]
        );
    }
}
