//! What the Fleet asks of the Scheduler: the demand its workers' free slots do not meet, each
//! pool worker's load, and the two words that make scale-in safe. A worker is asked to drain
//! only here, in the same step that finds it running and holding nothing and marks it draining,
//! so no job can reach it in between; and a machine is retired (about to be terminated) only
//! here, where a worker of it that registers meanwhile is seen, or is kept from taking anything.

use super::{Scheduler, ToWorker};
use crate::actors::queue::Shape;
use crate::job::{now_ms, WorkerId};
use crate::net::protocol::PoolMember;
use actix::prelude::*;
use std::collections::{HashMap, HashSet};

/// How long a retired machine is remembered: far longer than any registration of its worker
/// could be on its way.
const RETIRED_FOR_MS: u64 = 3600 * 1000;

/// Jobs in line that the free slots of connected workers do not take: what more workers would
/// run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Demand {
    /// What each needs.
    pub shape: Shape,
    /// How many.
    pub jobs: u64,
}

/// A connected worker the fleet started (or one started by hand for a pool).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolWorker {
    /// Its registration.
    pub worker: WorkerId,
    /// Its pool and machine.
    pub member: PoolMember,
    /// Slots it offers.
    pub slots: u32,
    /// Attempts it runs or holds (carried ones too).
    pub attempts: usize,
    /// While it runs and holds nothing, since when (ms since the Unix epoch).
    pub idle_since_ms: Option<u64>,
    /// It was asked to drain, or said it drains.
    pub draining: bool,
}

/// Demand and the pools' workers, as one snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FleetView {
    /// Jobs in line beyond what free slots take, by shape.
    pub demand: Vec<Demand>,
    /// Every connected worker with a pool.
    pub workers: Vec<PoolWorker>,
}

/// The Fleet's view of demand and supply.
#[derive(Message)]
#[rtype(result = "FleetView")]
pub struct ViewForFleet;

impl Handler<ViewForFleet> for Scheduler {
    type Result = MessageResult<ViewForFleet>;

    fn handle(&mut self, _: ViewForFleet, _ctx: &mut Context<Self>) -> Self::Result {
        let free: Vec<(u32, &HashSet<String>)> = self
            .workers
            .values()
            .filter(|slots| !slots.draining && slots.free > 0)
            .map(|slots| (slots.free, &slots.labels))
            .collect();
        let census = self
            .pending
            .census(None)
            .into_iter()
            .map(|queue| (queue.shape, queue.jobs));
        let demand = beyond_free_slots(census, free);
        let workers = self
            .workers
            .iter()
            .filter_map(|(id, slots)| {
                let member = slots.member.clone()?;
                Some(PoolWorker {
                    worker: *id,
                    member,
                    slots: slots.total,
                    attempts: slots.running.len() + slots.carried.len(),
                    idle_since_ms: slots.idle_since(),
                    draining: slots.draining,
                })
            })
            .collect();
        MessageResult(FleetView { demand, workers })
    }
}

/// The jobs of each queue (in the order they are served) that these free slots (with their
/// workers' labels) do not take, merged by shape.
fn beyond_free_slots(
    queues: impl Iterator<Item = (Shape, u64)>,
    mut free: Vec<(u32, &HashSet<String>)>,
) -> Vec<Demand> {
    let mut demand: Vec<Demand> = Vec::new();
    for (shape, mut jobs) in queues {
        for (slots, labels) in free.iter_mut() {
            if jobs == 0 {
                break;
            }
            if !shape.fits(*slots, labels) {
                continue;
            }
            let fit = u64::from(*slots / shape.slots().max(1)).min(jobs);
            *slots -= (fit as u32) * shape.slots();
            jobs -= fit;
        }
        if jobs == 0 {
            continue;
        }
        match demand.iter_mut().find(|known| known.shape == shape) {
            Some(known) => known.jobs += jobs,
            None => demand.push(Demand { shape, jobs }),
        }
    }
    demand
}

/// Asks an idle worker to drain (the fleet scales its pool in): answered true once it is
/// marked draining, so it is given nothing more, and told; false, and left as it is, if it
/// runs or holds anything, drains already, or is gone.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct DrainIdle {
    /// Its registration.
    pub worker: WorkerId,
    /// Why, for its log.
    pub reason: String,
}

impl Handler<DrainIdle> for Scheduler {
    type Result = bool;

    fn handle(&mut self, drain: DrainIdle, _ctx: &mut Context<Self>) -> bool {
        let Some(slots) = self.workers.get_mut(&drain.worker) else {
            return false;
        };
        if slots.draining || slots.idle_since().is_none() {
            return false;
        }
        slots.draining = true;
        self.directory.tell(
            drain.worker,
            ToWorker::Drain {
                reason: drain.reason,
            },
        );
        true
    }
}

/// The fleet is about to terminate a machine. Answered with the registration of a worker of
/// that machine that is connected, if one is (then the machine must stay); else, from now on, a
/// worker of that machine that registers takes nothing and is told to drain.
#[derive(Message)]
#[rtype(result = "Option<WorkerId>")]
pub struct Retire(pub PoolMember);

impl Handler<Retire> for Scheduler {
    type Result = Option<WorkerId>;

    fn handle(&mut self, Retire(member): Retire, _ctx: &mut Context<Self>) -> Option<WorkerId> {
        if let Some((id, _)) = self
            .workers
            .iter()
            .find(|(_, slots)| slots.member.as_ref() == Some(&member))
        {
            return Some(*id);
        }
        self.retired.add(member, now_ms());
        None
    }
}

/// Machines retired, with when.
#[derive(Default)]
pub(super) struct Retired(HashMap<PoolMember, u64>);

impl Retired {
    fn add(&mut self, member: PoolMember, now: u64) {
        let forget_before = now.saturating_sub(RETIRED_FOR_MS);
        self.0.retain(|_, at| *at >= forget_before);
        self.0.insert(member, now);
    }

    /// True when this worker's machine was retired.
    pub(super) fn holds(&self, member: Option<&PoolMember>) -> bool {
        member.is_some_and(|member| self.0.contains_key(member))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actors::queue::PendingJob;
    use crate::actors::registry::WorkerDirectory;
    use crate::actors::scheduler::{Enqueue, WorkerJoined};
    use crate::ha::LeaseClock;
    use crate::job::{JobSpec, LeaseKey, LedgerId, SpecBytes};
    use std::sync::{Arc, Mutex};

    /// A worker's session as the Scheduler reaches it: it keeps what it is told.
    struct Session(Arc<Mutex<Vec<&'static str>>>);

    impl Actor for Session {
        type Context = Context<Self>;
    }

    impl Handler<ToWorker> for Session {
        type Result = ();

        fn handle(&mut self, message: ToWorker, _: &mut Context<Self>) {
            let told = match message {
                ToWorker::Assign(_) => "assign",
                ToWorker::Drain { .. } => "drain",
                _ => "other",
            };
            self.0.lock().unwrap().push(told);
        }
    }

    fn member(machine: &str) -> PoolMember {
        PoolMember {
            pool: "cpu".into(),
            machine: machine.into(),
        }
    }

    fn joined(worker: WorkerId, machine: &str) -> WorkerJoined {
        WorkerJoined {
            worker,
            name: Arc::from(machine),
            instance: worker,
            slots: 1,
            labels: Vec::new(),
            member: Some(member(machine)),
            carried: Vec::new(),
            results: Vec::new(),
        }
    }

    fn job(id: u64) -> Enqueue {
        Enqueue(vec![PendingJob {
            job: id,
            batch: 1,
            attempt: 1,
            entry: 1,
            spec: SpecBytes::encode(&JobSpec::call("noop", Vec::new())),
            ahead: false,
        }])
    }

    #[test]
    fn a_drained_worker_and_one_of_a_retired_machine_are_given_nothing() {
        actix_rt::System::new().block_on(async {
            let directory = WorkerDirectory::default();
            // The Ledger and Registry are never started: what is sent to them is dropped.
            let scheduler = Scheduler::new(
                Context::new().address(),
                Context::new().address(),
                directory.clone(),
                LedgerId(1),
                LeaseKey::new([7; 32]),
                1,
                LeaseClock::forever(),
            )
            .start();
            let told: Vec<Arc<Mutex<Vec<&'static str>>>> = (0..3).map(|_| Arc::default()).collect();
            for (worker, log) in (1..).zip(&told) {
                directory.list(worker, Session(log.clone()).start().recipient());
            }
            // Machine "a" is retired before its worker registers; "b" and "c" are not.
            assert_eq!(scheduler.send(Retire(member("a"))).await.unwrap(), None);
            for (worker, machine) in [(1, "a"), (2, "b"), (3, "c")] {
                scheduler.send(joined(worker, machine)).await.unwrap();
            }
            // c is idle: drained at once; b takes the first job, and cannot be drained then.
            assert!(scheduler
                .send(DrainIdle {
                    worker: 3,
                    reason: "scale in".into()
                })
                .await
                .unwrap());
            scheduler.send(job(10)).await.unwrap();
            scheduler.send(job(11)).await.unwrap();
            // Assignment runs once the messages already sent are handled.
            let mut view = scheduler.send(ViewForFleet).await.unwrap();
            for _ in 0..100 {
                if view.workers.iter().any(|worker| worker.attempts > 0) {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                view = scheduler.send(ViewForFleet).await.unwrap();
            }
            let drain_b = DrainIdle {
                worker: 2,
                reason: "scale in".into(),
            };
            assert!(!scheduler.send(drain_b).await.unwrap(), "b runs a job");
            let drain_a = DrainIdle {
                worker: 1,
                reason: "scale in".into(),
            };
            assert!(!scheduler.send(drain_a).await.unwrap(), "a drains already");
            // The worker of b is connected: its machine stays.
            assert_eq!(scheduler.send(Retire(member("b"))).await.unwrap(), Some(2));
            // What the sessions were told, once each has heard something.
            for _ in 0..100 {
                if told.iter().all(|log| !log.lock().unwrap().is_empty()) {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            let told: Vec<Vec<&str>> = told.iter().map(|log| log.lock().unwrap().clone()).collect();
            assert_eq!(told, vec![vec!["drain"], vec!["assign"], vec!["drain"]]);
            let states: Vec<(&str, usize, bool)> = view
                .workers
                .iter()
                .map(|worker| {
                    (
                        worker.member.machine.as_str(),
                        worker.attempts,
                        worker.draining,
                    )
                })
                .collect();
            assert_eq!(
                states,
                vec![("a", 0, true), ("b", 1, false), ("c", 0, true)]
            );
            // The second job waits: no worker takes it, so it is demand.
            assert_eq!(
                view.demand,
                vec![Demand {
                    shape: Shape::new(1, &[]),
                    jobs: 1
                }]
            );
        });
    }

    fn shape(slots: u32, requires: &[&str]) -> Shape {
        let requires: Vec<String> = requires.iter().map(|label| label.to_string()).collect();
        Shape::new(slots, &requires)
    }

    fn labels(labels: &[&str]) -> HashSet<String> {
        labels.iter().map(|label| label.to_string()).collect()
    }

    #[test]
    fn demand_is_what_free_slots_do_not_take() {
        let plain = labels(&[]);
        let gpu = labels(&["gpu"]);
        let demand = beyond_free_slots(
            [
                (shape(1, &[]), 5),
                (shape(2, &["gpu"]), 3),
                (shape(1, &[]), 1),
                (shape(8, &[]), 1),
            ]
            .into_iter(),
            vec![(3, &plain), (3, &gpu)],
        );
        assert_eq!(
            demand,
            vec![
                // Five of one slot: three on the plain worker, two on the gpu one (one left).
                // Then none of two slots fits the gpu worker's one slot left; the sixth job of
                // one slot takes it.
                Demand {
                    shape: shape(2, &["gpu"]),
                    jobs: 3
                },
                Demand {
                    shape: shape(8, &[]),
                    jobs: 1
                },
            ]
        );
        assert!(beyond_free_slots([(shape(1, &[]), 2)].into_iter(), vec![(2, &plain)]).is_empty());
        assert_eq!(
            beyond_free_slots(
                [(shape(1, &[]), 2), (shape(1, &[]), 3)].into_iter(),
                Vec::new()
            ),
            vec![Demand {
                shape: shape(1, &[]),
                jobs: 5
            }],
            "merged by shape, across priorities"
        );
    }

    #[test]
    fn a_retired_machine_is_known_for_an_hour() {
        let member = |machine: &str| PoolMember {
            pool: "cpu".into(),
            machine: machine.into(),
        };
        let mut retired = Retired::default();
        retired.add(member("a"), 1_000);
        assert!(retired.holds(Some(&member("a"))));
        assert!(!retired.holds(Some(&member("b"))));
        assert!(!retired.holds(None));
        retired.add(member("b"), 1_000 + RETIRED_FOR_MS + 1);
        assert!(!retired.holds(Some(&member("a"))), "forgotten");
        assert!(retired.holds(Some(&member("b"))));
    }
}
