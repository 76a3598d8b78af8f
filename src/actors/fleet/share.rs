//! Demand shared out among the pools: which pool launches how many machines for the jobs in line
//! that no free slot takes.
//!
//! A pool serves a job when the job's required labels are among the pool's and its slots fit
//! one worker's. Each kind of job goes first to the machines already booting in the pools that
//! serve it (they will take it when they register), then to new machines, in the order the pools
//! are configured, each pool up to what it may launch now (its max, its launches per minute, its
//! backoff): a pool that cannot launch leaves the jobs to the next one.

use crate::actors::queue::Shape;
use crate::actors::scheduler::Demand;

/// What a pool offers the demand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Offer<'a> {
    /// Its workers' labels.
    pub labels: &'a [String],
    /// Slots per worker.
    pub slots: u32,
    /// Machines booting, not yet spoken for.
    pub booting: u32,
    /// Machines it may launch now.
    pub room: u32,
}

impl Offer<'_> {
    /// Jobs of this shape one of its workers runs at once; 0 if it serves none.
    fn per_worker(&self, shape: &Shape) -> u64 {
        let labelled = shape
            .requires()
            .iter()
            .all(|label| self.labels.contains(label));
        if !labelled || shape.slots() > self.slots {
            return 0;
        }
        u64::from(self.slots / shape.slots().max(1))
    }
}

/// A pool's part of the demand.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Share {
    /// Machines to launch for it.
    pub launch: u32,
    /// Some job in line is of a kind the pool serves: none of its workers should be drained.
    pub wanted: bool,
}

/// Each pool's share of the demand, in the order of `offers`.
pub(super) fn share(demand: &[Demand], mut offers: Vec<Offer<'_>>) -> Vec<Share> {
    let mut shares = vec![Share::default(); offers.len()];
    for wanted in demand {
        let mut jobs = wanted.jobs;
        let per: Vec<u64> = offers
            .iter()
            .map(|offer| offer.per_worker(&wanted.shape))
            .collect();
        for (index, share) in shares.iter_mut().enumerate() {
            share.wanted |= per[index] > 0;
        }
        // Machines on their way first, then new ones.
        for booting in [true, false] {
            for (index, offer) in offers.iter_mut().enumerate() {
                if jobs == 0 || per[index] == 0 {
                    continue;
                }
                let available = if booting { offer.booting } else { offer.room };
                let machines = u32::try_from(jobs.div_ceil(per[index]))
                    .unwrap_or(u32::MAX)
                    .min(available);
                jobs = jobs.saturating_sub(u64::from(machines) * per[index]);
                if booting {
                    offer.booting -= machines;
                } else {
                    offer.room -= machines;
                    shares[index].launch += machines;
                }
            }
        }
    }
    shares
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demand(slots: u32, requires: &[&str], jobs: u64) -> Demand {
        let requires: Vec<String> = requires.iter().map(|label| label.to_string()).collect();
        Demand {
            shape: Shape::new(slots, &requires),
            jobs,
        }
    }

    fn offer(labels: &[String], slots: u32, booting: u32, room: u32) -> Offer<'_> {
        Offer {
            labels,
            slots,
            booting,
            room,
        }
    }

    #[test]
    fn booting_machines_are_counted_before_any_launch() {
        let none: Vec<String> = Vec::new();
        // Ten jobs of one slot, workers of four: three machines; one is booting.
        let shares = share(&[demand(1, &[], 10)], vec![offer(&none, 4, 1, 8)]);
        assert_eq!(
            shares,
            vec![Share {
                launch: 2,
                wanted: true
            }]
        );
        // Enough booting: nothing more.
        let shares = share(&[demand(1, &[], 10)], vec![offer(&none, 4, 3, 8)]);
        assert_eq!(shares[0].launch, 0);
        // Within what the pool may launch now.
        let shares = share(&[demand(1, &[], 100)], vec![offer(&none, 1, 0, 4)]);
        assert_eq!(shares[0].launch, 4);
    }

    #[test]
    fn a_pool_serves_jobs_whose_labels_it_has_and_whose_slots_fit() {
        let gpu = vec!["gpu".to_string(), "ssd".to_string()];
        let plain: Vec<String> = Vec::new();
        let shares = share(
            &[demand(1, &["gpu"], 3), demand(8, &[], 1), demand(2, &[], 3)],
            vec![offer(&plain, 2, 0, 10), offer(&gpu, 4, 0, 10)],
        );
        assert_eq!(
            shares,
            vec![
                // Three jobs of two slots: one each on workers of two.
                Share {
                    launch: 3,
                    wanted: true
                },
                // Three gpu jobs of one slot fit one worker of four; eight slots fit no pool.
                Share {
                    launch: 1,
                    wanted: true
                },
            ]
        );
        let shares = share(&[demand(1, &["tpu"], 3)], vec![offer(&gpu, 4, 0, 10)]);
        assert_eq!(shares, vec![Share::default()], "no pool has tpu");
    }

    #[test]
    fn jobs_a_pool_cannot_launch_for_go_to_the_next_that_serves_them() {
        let plain: Vec<String> = Vec::new();
        let shares = share(
            &[demand(1, &[], 10)],
            vec![offer(&plain, 1, 1, 3), offer(&plain, 1, 2, 100)],
        );
        // Three booting machines take three jobs; the first pool launches three, the second
        // the four left.
        assert_eq!(shares[0].launch, 3);
        assert_eq!(shares[1].launch, 4);
        assert!(shares[0].wanted && shares[1].wanted);
    }
}
