//! Manifests the book waits to hear are written: a recorded attempt's worker writes its job's
//! manifest; one not confirmed in time is asked of another worker. Writing one twice is harmless.

use crate::job::{JobId, Lease, ManifestOrder};
use crate::storage::store::Unpublished;
use std::collections::HashMap;

/// A manifest not confirmed this long after it was asked for is asked of another worker.
pub(crate) const REPAIR_AFTER_MS: u64 = 5_000;

/// Recorded attempts whose manifest no worker has confirmed writing, by lease.
#[derive(Debug, Default)]
pub(crate) struct Manifests {
    waiting: HashMap<Lease, Waiting>,
}

#[derive(Debug)]
struct Waiting {
    order: ManifestOrder,
    asked_at_ms: u64,
}

impl Manifests {
    /// Those found on disk unconfirmed at startup: due at once.
    pub(crate) fn replayed(found: Vec<Unpublished>) -> Manifests {
        let waiting = found
            .into_iter()
            .filter_map(|found| {
                let outputs = found.spec.decode().ok()?.outputs?;
                let objects = serde_json::from_str(&found.objects).ok()?;
                let order = ManifestOrder {
                    job: found.job,
                    lease: found.lease,
                    outputs,
                    objects,
                };
                Some((
                    found.lease,
                    Waiting {
                        order,
                        asked_at_ms: 0,
                    },
                ))
            })
            .collect();
        Manifests { waiting }
    }

    /// The recording worker was asked to write these at `now`.
    pub(crate) fn asked(&mut self, orders: Vec<ManifestOrder>, now: u64) {
        for order in orders {
            self.waiting.insert(
                order.lease,
                Waiting {
                    order,
                    asked_at_ms: now,
                },
            );
        }
    }

    /// Some worker wrote these; returns their jobs (those still waited for).
    pub(crate) fn written(&mut self, leases: &[Lease]) -> Vec<JobId> {
        leases
            .iter()
            .filter_map(|lease| self.waiting.remove(lease))
            .map(|waiting| waiting.order.job)
            .collect()
    }

    /// Those asked for long enough ago to ask again, now.
    pub(crate) fn due(&mut self, now: u64) -> Vec<ManifestOrder> {
        self.waiting
            .values_mut()
            .filter(|waiting| now.saturating_sub(waiting.asked_at_ms) >= REPAIR_AFTER_MS)
            .map(|waiting| {
                waiting.asked_at_ms = now;
                waiting.order.clone()
            })
            .collect()
    }
}
