//! A worker's side of its session: its registration checked and handed on, and what the
//! coordinator's actors tell it ([`ToWorker`]) written as frames.

use super::{Phase, Session};
use crate::actors::registry::RegisterWorker;
use crate::job::{Assignment, AttemptResult, Lease, ManifestOrder};
use crate::net::protocol::{CarriedAttempt, FromCoordinator, ToCoordinator};
use actix::prelude::*;

/// The longest worker name and label accepted.
const MAX_NAME_LEN: usize = 256;
/// The most labels a worker may carry.
const MAX_LABELS: usize = 64;

impl Session {
    pub(super) fn on_register(&mut self, ctx: &mut Context<Self>, register: ToCoordinator) {
        let ToCoordinator::Register {
            name,
            instance,
            slots,
            labels,
            carried,
            mut results,
            member,
        } = register
        else {
            return;
        };
        results.iter_mut().for_each(AttemptResult::bound);
        if name.is_empty() || name.len() > MAX_NAME_LEN {
            return self.refuse(
                ctx,
                format!("worker name must have 1 to {MAX_NAME_LEN} bytes"),
            );
        }
        if slots == 0 {
            return self.refuse(ctx, "a worker must offer at least one slot".into());
        }
        if slots > self.shared.max_worker_slots {
            return self.refuse(
                ctx,
                format!(
                    "this worker offers {slots} slots, more than the {} a worker may offer \
                     (the coordinator's --max-worker-slots); give it fewer with --slots",
                    self.shared.max_worker_slots
                ),
            );
        }
        if let Err(reason) = check_carried(&carried, slots) {
            return self.refuse(ctx, reason);
        }
        if labels.len() > MAX_LABELS
            || labels
                .iter()
                .any(|label| label.is_empty() || label.len() > MAX_NAME_LEN)
        {
            return self.refuse(
                ctx,
                format!("at most {MAX_LABELS} labels of 1 to {MAX_NAME_LEN} bytes each"),
            );
        }
        if let Some(member) = &member {
            if [&member.pool, &member.machine]
                .iter()
                .any(|field| field.is_empty() || field.len() > MAX_NAME_LEN)
            {
                return self.refuse(
                    ctx,
                    format!("a worker's pool and machine id must have 1 to {MAX_NAME_LEN} bytes"),
                );
            }
        }
        let register = RegisterWorker {
            name,
            member,
            instance,
            address: self.peer.to_string(),
            session: ctx.address().recipient(),
            slots,
            labels,
            carried,
            results,
            last_seen: self.last_seen.clone(),
        };
        // Nothing else from this peer may be handled before it has a registration, so this one
        // wait on another actor is intended.
        self.shared
            .registry
            .send(register)
            .into_actor(self)
            .map(|registered, session, ctx| match registered {
                Ok(Ok(worker)) => {
                    session.phase = Phase::Worker(worker);
                    session.send(
                        ctx,
                        FromCoordinator::Registered {
                            heartbeat_interval_ms: session.shared.heartbeat_interval.as_millis()
                                as u64,
                            max_result_bytes: session.shared.max_result_bytes as u64,
                        },
                    );
                }
                Ok(Err(taken)) => session.close_with(ctx, taken.reason, taken.permanent),
                Err(_) => ctx.stop(),
            })
            .wait(ctx);
    }
}

/// What the coordinator's actors tell a worker; its session writes each as a frame.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub enum ToWorker {
    /// Jobs to run.
    Assign(Vec<Assignment>),
    /// Attempts to stop (their jobs were cancelled, or recorded from another attempt).
    Kill(Vec<Lease>),
    /// Held attempts to hand back if they have not started.
    Release(Vec<Lease>),
    /// Manifests to write for recorded attempts whose own worker did not confirm them.
    WriteManifests(Vec<ManifestOrder>),
    /// Results it may forget.
    Acked(Vec<Lease>),
    /// Successes recorded as their jobs' results.
    Recorded(Vec<Lease>),
    /// The worker should take nothing new, finish what it runs and exit (the fleet scales its
    /// pool in, or its machine is going away).
    Drain {
        /// Why, for the worker's log.
        reason: String,
    },
    /// The worker was declared lost: close the connection (the Registry has forgotten it, so it
    /// must not be reported lost again).
    Close {
        /// Why.
        reason: String,
    },
}

impl Handler<ToWorker> for Session {
    type Result = ();

    fn handle(&mut self, message: ToWorker, ctx: &mut Context<Self>) {
        let frame = match message {
            ToWorker::Assign(assignments) => FromCoordinator::Assign(assignments),
            ToWorker::Kill(leases) => FromCoordinator::Kill(leases),
            ToWorker::Release(leases) => FromCoordinator::Release(leases),
            ToWorker::WriteManifests(orders) => FromCoordinator::WriteManifests(orders),
            ToWorker::Acked(leases) => FromCoordinator::Acked(leases),
            ToWorker::Recorded(leases) => FromCoordinator::Recorded(leases),
            ToWorker::Drain { reason } => FromCoordinator::Drain { reason },
            ToWorker::Close { reason } => {
                self.close_reason = reason;
                self.phase = Phase::Closed;
                self.writer.close();
                ctx.stop();
                return;
            }
        };
        self.send(ctx, frame);
    }
}

/// A worker's carried attempts must be ones it could be running: each named once, numbered from
/// 1, holding slots, and together no more than it offers. The Ledger gives jobs back to them.
fn check_carried(carried: &[CarriedAttempt], slots: u32) -> Result<(), String> {
    let mut leases = std::collections::HashSet::with_capacity(carried.len());
    let mut jobs = std::collections::HashSet::with_capacity(carried.len());
    let mut held: u64 = 0;
    for attempt in carried {
        if !leases.insert(attempt.lease) || !jobs.insert(attempt.job) {
            return Err("carried attempts must name each lease and job once".into());
        }
        if attempt.attempt == 0 || attempt.slots == 0 {
            return Err("a carried attempt has a number and slots from 1".into());
        }
        held += u64::from(attempt.slots);
    }
    if held > u64::from(slots) {
        return Err(format!(
            "carried attempts hold {held} slots, more than the {slots} offered"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn carried(lease: u64, job: u64, attempt: u32, slots: u32) -> CarriedAttempt {
        CarriedAttempt {
            lease,
            job,
            attempt,
            slots,
            epoch: 1,
        }
    }

    #[test]
    fn carried_attempts_must_be_ones_the_worker_could_be_running() {
        assert!(check_carried(&[], 1).is_ok());
        assert!(check_carried(&[carried(1, 10, 1, 2), carried(2, 11, 3, 2)], 4).is_ok());
        for (bad, slots) in [
            (vec![carried(1, 10, 1, 1), carried(1, 11, 1, 1)], 4),
            (vec![carried(1, 10, 1, 1), carried(2, 10, 2, 1)], 4),
            (vec![carried(1, 10, 0, 1)], 4),
            (vec![carried(1, 10, 1, 0)], 4),
            (vec![carried(1, 10, 1, 3), carried(2, 11, 1, 2)], 4),
            (
                vec![carried(1, 10, 1, u32::MAX), carried(2, 11, 1, u32::MAX)],
                u32::MAX,
            ),
        ] {
            assert!(check_carried(&bad, slots).is_err(), "{bad:?}");
        }
    }
}
