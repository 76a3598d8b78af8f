//! Manifests the book waits to hear are written: a recorded attempt's worker writes its job's
//! manifest; one not confirmed in time is asked of another worker. Writing one twice is harmless.

use crate::job::{object_size, JobId, Lease, LedgerId, ManifestOrder, MAX_MANIFEST_BYTES};
use crate::storage::store::Unpublished;
use std::collections::HashMap;

/// A manifest not confirmed this long after it was asked for is asked of another worker.
pub(crate) const REPAIR_AFTER_MS: u64 = 5_000;

/// The most bytes of one order for a manifest sent to a worker (an estimate, see
/// [`order_size`]): it must fit a frame. Workers refuse larger outputs, so only a ledger written
/// before they did can hold one; it is given up, with the reason in the log.
pub(crate) const MAX_ORDER_BYTES: usize = MAX_MANIFEST_BYTES + 64 * 1024;

/// An order's size on the wire, at most.
pub fn order_size(order: &ManifestOrder) -> usize {
    256 + order.outputs.from.len()
        + order.outputs.to.len()
        + order
            .objects
            .iter()
            .map(|object| object_size(&object.url, &object.etag))
            .sum::<usize>()
}

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
    /// Those found on disk unconfirmed at startup, in `ledger`: due at once.
    pub(crate) fn replayed(found: Vec<Unpublished>, ledger: LedgerId) -> Manifests {
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
                    ledger,
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

    /// Those asked for long enough ago to ask again, now; and the jobs of those too large to
    /// send to any worker, given up.
    pub(crate) fn due(&mut self, now: u64) -> (Vec<ManifestOrder>, Vec<JobId>) {
        let mut due = Vec::new();
        let mut too_large = Vec::new();
        for waiting in self.waiting.values_mut() {
            if now.saturating_sub(waiting.asked_at_ms) < REPAIR_AFTER_MS {
                continue;
            }
            let size = order_size(&waiting.order);
            if size > MAX_ORDER_BYTES {
                tracing::error!(
                    job = waiting.order.job,
                    objects = waiting.order.objects.len(),
                    bytes = size,
                    limit = MAX_ORDER_BYTES,
                    "the job's outputs manifest is too large to send to a worker; it is not written again"
                );
                too_large.push(waiting.order.lease);
                continue;
            }
            waiting.asked_at_ms = now;
            due.push(waiting.order.clone());
        }
        let abandoned = self.written(&too_large);
        (due, abandoned)
    }
}
