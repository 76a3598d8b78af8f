//! Leases the coordinator can check without its journal.
//!
//! A lease is the first 8 bytes of an HMAC-SHA256, under the ledger's secret lease key, of the
//! coordinator's epoch, the job, the attempt's number and the worker it went to. Workers cannot
//! forge one (they never see the key), and a restarted coordinator can tell an attempt it handed
//! out before it died from a made-up one even when that attempt's start never reached the disk.

use super::{JobId, Lease};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Told apart from every other use of the key.
const CONTEXT: &[u8] = b"drover lease\0";

/// The ledger's secret for leases: drawn when the ledger is made, kept in it, never sent.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct LeaseKey([u8; 32]);

impl LeaseKey {
    /// The key from its stored bytes.
    pub fn new(bytes: [u8; 32]) -> LeaseKey {
        LeaseKey(bytes)
    }

    /// The lease of attempt `attempt` of `job`, given to `worker` in `epoch`.
    pub fn lease(&self, epoch: u64, job: JobId, attempt: u32, worker: &str) -> Lease {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.0).expect("hmac takes keys of any length");
        mac.update(CONTEXT);
        mac.update(&epoch.to_be_bytes());
        mac.update(&job.to_be_bytes());
        mac.update(&attempt.to_be_bytes());
        mac.update(worker.as_bytes());
        let digest = mac.finalize().into_bytes();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        u64::from_be_bytes(first)
    }

    /// True when `lease` is the one this key gives that attempt (compared in constant time, so
    /// a worker trying leases learns nothing from how long a refusal takes).
    pub fn verifies(
        &self,
        lease: Lease,
        epoch: u64,
        job: JobId,
        attempt: u32,
        worker: &str,
    ) -> bool {
        let expected = self.lease(epoch, job, attempt, worker).to_be_bytes();
        let given = lease.to_be_bytes();
        expected
            .iter()
            .zip(given.iter())
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
    }
}

/// The key is a secret: never in logs.
impl std::fmt::Debug for LeaseKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LeaseKey(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_names_its_epoch_job_attempt_and_worker() {
        let key = LeaseKey::new([7; 32]);
        let lease = key.lease(3, 42, 2, "a");
        assert!(key.verifies(lease, 3, 42, 2, "a"));
        assert_eq!(lease, key.lease(3, 42, 2, "a"), "the same every time");
        for (epoch, job, attempt, worker) in [(4, 42, 2, "a"), (3, 43, 2, "a"), (3, 42, 3, "a")] {
            assert!(!key.verifies(lease, epoch, job, attempt, worker));
        }
        assert!(!key.verifies(lease, 3, 42, 2, "b"));
        assert!(!LeaseKey::new([8; 32]).verifies(lease, 3, 42, 2, "a"));
    }
}
