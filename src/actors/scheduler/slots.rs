//! What the Scheduler keeps of each worker: its slots and the attempts that hold them.

use crate::actors::ledger::WorkerRef;
use crate::job::{JobId, Lease, WorkerId};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// An attempt a worker holds slots for.
#[derive(Debug, Clone, Copy)]
pub(super) struct Held {
    pub(super) job: JobId,
    pub(super) slots: u32,
    /// When it was assigned, or carried into this registration (ms since the Unix epoch).
    pub(super) since_ms: u64,
    /// The worker said it started it (carried attempts run by definition).
    pub(super) started: bool,
}

/// A worker's slots as the Scheduler sees them.
pub(super) struct WorkerSlots {
    pub(super) name: Arc<str>,
    /// The worker process, which registrations of the same worker share.
    pub(super) instance: u64,
    pub(super) labels: HashSet<String>,
    pub(super) total: u32,
    pub(super) free: u32,
    pub(super) draining: bool,
    /// Attempts assigned on this registration.
    pub(super) running: HashMap<Lease, Held>,
    /// Attempts the worker kept running from an earlier registration.
    pub(super) carried: HashMap<Lease, Held>,
}

impl WorkerSlots {
    pub(super) fn worker_ref(&self, id: WorkerId) -> WorkerRef {
        WorkerRef {
            id,
            name: self.name.clone(),
        }
    }

    /// Frees an attempt's slots, once: returns what it held, if it held anything.
    pub(super) fn release(&mut self, lease: Lease) -> Option<Held> {
        let held = self
            .running
            .remove(&lease)
            .or_else(|| self.carried.remove(&lease))?;
        self.free = self.free.saturating_add(held.slots).min(self.total);
        Some(held)
    }
}
