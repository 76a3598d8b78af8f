//! What the Scheduler keeps of each worker: its slots, the attempts that hold them, and the
//! attempts it holds beyond them.
//!
//! A worker whose recent jobs were short may be handed a few more than its free slots take: it
//! starts each the moment a slot frees, in the order they came, so a job of a millisecond does
//! not wait a round trip to the coordinator. The Scheduler counts the worker's slots by the
//! worker's own rule (a held attempt takes its slots once the attempts ahead of it free them),
//! so it knows which attempts wait. Those are asked back when another worker is idle, or when
//! they waited too long; the worker hands back the ones it had not started, and only then do
//! their jobs go elsewhere.

use crate::actors::ledger::WorkerRef;
use crate::actors::queue::Shape;
use crate::job::{JobId, Lease, WorkerId};
use crate::net::protocol::PoolMember;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

/// The stretch of work a worker holds: as many jobs beyond its free slots as it runs in this
/// time, by the mean run time of its recent attempts. Jobs that take this long or longer are
/// not held: a round trip is small beside them.
const HOLD_SPAN_US: u64 = 2_000;
/// The most jobs a worker holds beyond its free slots.
pub(super) const MAX_HELD: usize = 8;
/// The run time assumed of a worker that has reported nothing yet, or whose held jobs waited
/// too long: it holds nothing until its attempts show its jobs are short.
const UNKNOWN_RUN_US: u64 = 2 * HOLD_SPAN_US;

/// An attempt assigned to a worker.
#[derive(Debug, Clone, Copy)]
pub(super) struct Held {
    pub(super) job: JobId,
    pub(super) slots: u32,
    /// When it was assigned, given its slots after waiting for them, or carried into this
    /// registration (ms since the Unix epoch).
    pub(super) since_ms: u64,
    /// The worker said it started it (carried attempts run by definition).
    pub(super) started: bool,
    /// Held beyond the worker's free slots, waiting for slots of its own.
    pub(super) waiting: bool,
    /// The worker was asked to hand it back.
    pub(super) asked_back: bool,
}

/// A worker's slots as the Scheduler sees them.
pub(super) struct WorkerSlots {
    pub(super) name: Arc<str>,
    /// The worker process, which registrations of the same worker share.
    pub(super) instance: u64,
    pub(super) labels: HashSet<String>,
    pub(super) total: u32,
    /// Slots not taken by the attempts that run (held ones take none until they start).
    pub(super) free: u32,
    pub(super) draining: bool,
    /// The pool and machine it was started for, if the fleet started it.
    pub(super) member: Option<PoolMember>,
    /// When it last was given or gave back an attempt (or registered): while it runs nothing,
    /// idle since then (ms since the Unix epoch).
    pub(super) last_busy_ms: u64,
    /// Attempts assigned on this registration, held ones too.
    pub(super) running: HashMap<Lease, Held>,
    /// Attempts the worker kept running from an earlier registration.
    pub(super) carried: HashMap<Lease, Held>,
    /// Held attempts, in the order the worker starts them, with what each needs.
    waiting: VecDeque<(Lease, Shape)>,
    /// The mean run time of its recent attempts, in µs (a moving average).
    run_us: u64,
}

impl WorkerSlots {
    /// A worker offering `total` slots, running nothing.
    pub(super) fn new(
        name: Arc<str>,
        instance: u64,
        labels: HashSet<String>,
        total: u32,
    ) -> WorkerSlots {
        WorkerSlots {
            name,
            instance,
            labels,
            total,
            free: total,
            draining: false,
            member: None,
            last_busy_ms: 0,
            running: HashMap::new(),
            carried: HashMap::new(),
            waiting: VecDeque::new(),
            run_us: UNKNOWN_RUN_US,
        }
    }

    pub(super) fn worker_ref(&self, id: WorkerId) -> WorkerRef {
        WorkerRef {
            id,
            name: self.name.clone(),
        }
    }

    /// True when it has room for another job now: a free slot, or room to hold one more.
    pub(super) fn has_room(&self, hold: bool) -> bool {
        if self.draining {
            return false;
        }
        if hold {
            self.waiting.len() < self.hold_limit()
        } else {
            self.free > 0
        }
    }

    /// How many jobs it may hold beyond its free slots now.
    fn hold_limit(&self) -> usize {
        let fits = HOLD_SPAN_US / self.run_us.max(1);
        usize::try_from(fits).map_or(MAX_HELD, |fits| fits.min(MAX_HELD))
    }

    /// Since when it has run and held nothing, if it runs and holds nothing now.
    pub(super) fn idle_since(&self) -> Option<u64> {
        (self.running.is_empty() && self.carried.is_empty()).then_some(self.last_busy_ms)
    }

    /// Attempts held, waiting for slots.
    pub(super) fn held(&self) -> usize {
        self.waiting.len()
    }

    /// Gives it an attempt: into its free slots, or, with `hold`, held until they free.
    pub(super) fn assign(&mut self, lease: Lease, job: JobId, shape: Shape, hold: bool, now: u64) {
        let slots = shape.slots();
        self.last_busy_ms = now;
        if hold {
            self.waiting.push_back((lease, shape));
        } else {
            self.free = self.free.saturating_sub(slots);
        }
        let held = Held {
            job,
            slots,
            since_ms: now,
            started: false,
            waiting: hold,
            asked_back: false,
        };
        self.running.insert(lease, held);
    }

    /// An attempt ran this long (as its worker measured it): the estimate of how long its jobs
    /// take moves a quarter of the way to it.
    pub(super) fn ran(&mut self, duration_ms: u64) {
        let sample = duration_ms.saturating_mul(1000);
        self.run_us = self.run_us - self.run_us / 4 + sample / 4;
    }

    /// Frees an attempt's slots, once: returns what it held, if it held anything. Held
    /// attempts that fit the free slots now take them, in order, as the worker starts them.
    pub(super) fn release(&mut self, lease: Lease, now: u64) -> Option<Held> {
        let held = self
            .running
            .remove(&lease)
            .or_else(|| self.carried.remove(&lease))?;
        self.last_busy_ms = now;
        if held.waiting {
            self.waiting.retain(|(waiting, _)| *waiting != lease);
        } else {
            self.free = self.free.saturating_add(held.slots).min(self.total);
        }
        while let Some((next, shape)) = self.waiting.front() {
            if shape.slots() > self.free {
                break;
            }
            self.free -= shape.slots();
            if let Some(started) = self.running.get_mut(next) {
                started.waiting = false;
                started.since_ms = now;
            }
            self.waiting.pop_front();
        }
        Some(held)
    }

    /// Held attempts not yet asked back, not started, that a worker with `free` slots and
    /// these labels could run: as many as its slots take, from those this worker would start
    /// last. Marked as asked back.
    pub(super) fn ask_back(&mut self, mut free: u32, labels: &HashSet<String>) -> Vec<Lease> {
        let mut asked = Vec::new();
        for (lease, shape) in self.waiting.iter().rev() {
            if free == 0 {
                break;
            }
            let Some(held) = self.running.get_mut(lease) else {
                continue;
            };
            if held.asked_back || held.started || !shape.fits(free, labels) {
                continue;
            }
            held.asked_back = true;
            free -= shape.slots();
            asked.push(*lease);
        }
        asked
    }

    /// When its oldest held attempt has waited since before `before_ms`, its jobs are not as
    /// short as they were: every held attempt is asked back, and it holds nothing more until
    /// its attempts show short jobs again. Returns the attempts asked back.
    pub(super) fn ask_back_stale(&mut self, before_ms: u64) -> Vec<Lease> {
        let oldest = self
            .waiting
            .front()
            .and_then(|(lease, _)| self.running.get(lease))
            .map(|held| held.since_ms);
        if oldest.is_none_or(|since| since >= before_ms) {
            return Vec::new();
        }
        self.run_us = self.run_us.max(UNKNOWN_RUN_US);
        let mut asked = Vec::new();
        for (lease, _) in &self.waiting {
            if let Some(held) = self.running.get_mut(lease) {
                if !held.asked_back && !held.started {
                    held.asked_back = true;
                    asked.push(*lease);
                }
            }
        }
        asked
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(total: u32) -> WorkerSlots {
        WorkerSlots::new("w".into(), 1, HashSet::new(), total)
    }

    fn shape(slots: u32) -> Shape {
        Shape::new(slots, &[])
    }

    /// A worker whose recent jobs ran in no time at all.
    fn running_short_jobs(total: u32) -> WorkerSlots {
        let mut slots = worker(total);
        for _ in 0..40 {
            slots.ran(0);
        }
        slots
    }

    #[test]
    fn a_worker_holds_jobs_only_once_its_jobs_are_short_and_as_many_as_they_are_short() {
        let mut slots = worker(1);
        assert!(!slots.has_room(true), "nothing known of its jobs yet");
        for _ in 0..40 {
            slots.ran(0);
        }
        assert_eq!(slots.hold_limit(), MAX_HELD);
        for _ in 0..40 {
            slots.ran(1);
        }
        assert_eq!(slots.hold_limit(), 2, "two jobs of a millisecond");
        slots.ran(60_000);
        assert_eq!(slots.hold_limit(), 0, "one long job is enough to stop");
        slots.draining = true;
        assert!(!slots.has_room(false) && !slots.has_room(true));
    }

    #[test]
    fn a_worker_is_idle_since_its_last_attempt_ended() {
        let mut slots = running_short_jobs(2);
        slots.last_busy_ms = 5;
        assert_eq!(slots.idle_since(), Some(5));
        slots.assign(1, 10, shape(1), false, 10);
        slots.assign(2, 11, shape(1), true, 12);
        assert_eq!(slots.idle_since(), None);
        slots.release(1, 20);
        assert_eq!(slots.idle_since(), None, "it still holds one");
        slots.release(2, 30);
        assert_eq!(slots.idle_since(), Some(30));
    }

    #[test]
    fn held_attempts_take_slots_in_order_as_the_worker_starts_them() {
        let mut slots = running_short_jobs(2);
        slots.assign(1, 10, shape(1), false, 0);
        slots.assign(2, 11, shape(1), false, 0);
        slots.assign(3, 12, shape(2), true, 0);
        slots.assign(4, 13, shape(1), true, 0);
        assert_eq!((slots.free, slots.held()), (0, 2));
        // One slot frees: the two-slot job at the head waits on, and holds back the one behind.
        slots.release(1, 5);
        assert_eq!((slots.free, slots.held()), (1, 2));
        slots.release(2, 6);
        assert_eq!((slots.free, slots.held()), (0, 1));
        assert!(!slots.running[&3].waiting);
        assert_eq!(
            slots.running[&3].since_ms, 6,
            "running since it got its slots"
        );
        slots.release(3, 7);
        assert_eq!((slots.free, slots.held()), (1, 0));
        // A held attempt that ends (or is handed back) before its turn takes no slots back.
        slots.assign(5, 14, shape(1), false, 8);
        slots.assign(6, 15, shape(1), true, 8);
        slots.release(6, 9);
        assert_eq!((slots.free, slots.held()), (0, 0));
    }

    #[test]
    fn only_held_attempts_not_started_are_asked_back_and_each_once() {
        let mut slots = running_short_jobs(1);
        slots.assign(1, 10, shape(1), false, 0);
        slots.assign(2, 11, shape(1), true, 0);
        slots.assign(3, 12, Shape::new(1, &["gpu".into()]), true, 0);
        slots.assign(4, 13, shape(1), true, 0);
        slots.running.get_mut(&4).unwrap().started = true;
        let plain = HashSet::new();
        // From the back: 4 started, 3 needs a label the idle worker lacks.
        assert_eq!(slots.ask_back(2, &plain), vec![2]);
        assert!(slots.ask_back(2, &plain).is_empty(), "asked once");
        let gpu: HashSet<String> = ["gpu".to_string()].into();
        assert_eq!(slots.ask_back(1, &gpu), vec![3]);
        assert!(slots.ask_back(1, &gpu).is_empty());
    }

    #[test]
    fn held_attempts_that_waited_too_long_are_asked_back_and_holding_stops() {
        let mut slots = running_short_jobs(1);
        slots.assign(1, 10, shape(1), false, 100);
        slots.assign(2, 11, shape(1), true, 100);
        slots.assign(3, 12, shape(1), true, 150);
        assert!(
            slots.ask_back_stale(100).is_empty(),
            "not waited long enough"
        );
        assert_eq!(slots.ask_back_stale(101), vec![2, 3]);
        assert!(!slots.has_room(true), "it holds nothing more for now");
        assert!(slots.ask_back_stale(200).is_empty(), "asked once");
    }
}
