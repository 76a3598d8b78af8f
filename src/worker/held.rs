//! The assignments a worker holds until it has the slots for them.
//!
//! The coordinator may hand a worker more than its free slots take (a few short jobs, so the
//! next one is there the moment a slot frees, without a round trip). They start in the order
//! they came, each once the slots it takes are free; the first that does not fit holds back the
//! ones behind it. The coordinator counts a worker's slots by the same rule, so both agree on
//! which attempts run and which wait. A held assignment that has not started can be handed back;
//! once handed back it never starts.

use crate::job::Lease;
use crate::net::protocol::Assignment;
use std::collections::VecDeque;

/// Assignments waiting for slots, and the slots the running attempts take.
pub(super) struct Held {
    waiting: VecDeque<(Assignment, u32)>,
    /// Slots the attempts started and not yet ended take.
    used: u32,
    total: u32,
}

impl Held {
    /// Nothing held, nothing running, on a worker offering `total` slots.
    pub(super) fn new(total: u32) -> Held {
        Held {
            waiting: VecDeque::new(),
            used: 0,
            total,
        }
    }

    /// Takes assignments, behind those already held.
    pub(super) fn push(&mut self, assignments: Vec<Assignment>) {
        for assignment in assignments {
            let slots = assignment
                .spec
                .placement()
                .map_or(1, |placement| placement.slots);
            self.waiting.push_back((assignment, slots));
        }
    }

    /// The assignments that start now, in order, with the slots each takes (counted as used
    /// from now on).
    pub(super) fn startable(&mut self) -> Vec<(Assignment, u32)> {
        let mut starting = Vec::new();
        while let Some((_, slots)) = self.waiting.front() {
            if self.used.saturating_add(*slots) > self.total {
                break;
            }
            self.used += *slots;
            starting.extend(self.waiting.pop_front());
        }
        starting
    }

    /// An attempt that took `slots` ended (or was carried into this run: see [`Held::carry`]).
    pub(super) fn ended(&mut self, slots: u32) {
        self.used = self.used.saturating_sub(slots);
    }

    /// Hands back the held assignments among `leases`: they will never start. Returns their
    /// leases.
    pub(super) fn release(&mut self, leases: &[Lease]) -> Vec<Lease> {
        let mut released = Vec::new();
        self.waiting.retain(|(assignment, _)| {
            let asked = leases.contains(&assignment.lease);
            if asked {
                released.push(assignment.lease);
            }
            !asked
        });
        released
    }

    /// Hands back every held assignment; returns their leases.
    pub(super) fn release_all(&mut self) -> Vec<Lease> {
        self.waiting
            .drain(..)
            .map(|(assignment, _)| assignment.lease)
            .collect()
    }

    /// True when nothing waits.
    pub(super) fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{JobSpec, LedgerId, SpecBytes};

    fn assignment(lease: Lease, slots: u32) -> Assignment {
        let mut spec = JobSpec::call("noop", Vec::new());
        spec.slots = slots;
        Assignment {
            lease,
            job: lease,
            batch: 1,
            attempt: 1,
            spec: SpecBytes::encode(&spec),
            ledger: LedgerId(1),
            epoch: 1,
        }
    }

    fn leases(started: &[(Assignment, u32)]) -> Vec<Lease> {
        started
            .iter()
            .map(|(assignment, _)| assignment.lease)
            .collect()
    }

    #[test]
    fn held_assignments_start_in_order_as_their_slots_free() {
        let mut held = Held::new(2);
        held.push(vec![assignment(1, 1), assignment(2, 2), assignment(3, 1)]);
        // The second takes two slots: it waits for the first, and holds back the third.
        assert_eq!(leases(&held.startable()), vec![1]);
        assert!(held.startable().is_empty());
        held.ended(1);
        assert_eq!(leases(&held.startable()), vec![2]);
        held.ended(2);
        assert_eq!(leases(&held.startable()), vec![3]);
        assert!(held.is_empty());
    }

    #[test]
    fn only_assignments_still_held_are_handed_back_and_they_never_start() {
        let mut held = Held::new(1);
        held.push(vec![assignment(1, 1), assignment(2, 1), assignment(3, 1)]);
        assert_eq!(leases(&held.startable()), vec![1]);
        // The running one cannot be handed back; an unknown one is not there to hand back.
        assert_eq!(held.release(&[1, 3, 9]), vec![3]);
        held.ended(1);
        assert_eq!(leases(&held.startable()), vec![2]);
        held.ended(1);
        assert!(held.startable().is_empty());
        held.push(vec![assignment(4, 1), assignment(5, 1)]);
        assert_eq!(leases(&held.startable()), vec![4]);
        assert_eq!(held.release_all(), vec![5]);
        assert!(held.is_empty());
    }
}
