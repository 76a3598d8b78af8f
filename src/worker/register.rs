//! Registering with the coordinator that leads: which to dial first, and what goes with the
//! registration (attempts still running, results not yet acknowledged).

use super::{Worker, RESULTS_PER_FRAME};
use crate::net::codec::DEFAULT_MAX_FRAME;
use crate::net::connect::{self, ConnectError, Connection};
use crate::net::protocol::{CarriedAttempt, FromCoordinator, Role, ToCoordinator};
use futures::SinkExt;
use std::time::{Duration, Instant};

/// How long the coordinator may take to answer a registration.
const REGISTRATION_TIMEOUT: Duration = Duration::from_secs(10);
/// Results that go with a registration, at most: the rest follow in frames of their own, so no
/// stored result can keep a worker from registering.
const REGISTER_RESULT_BYTES: usize = 1024 * 1024;

impl Worker {
    /// Registers with the coordinator that leads; answers the connection and its address.
    pub(super) async fn connect(&mut self) -> Result<(Connection, String), ConnectError> {
        let (mut connection, coordinator) = connect::connect_to_leader(
            &self.dial_order(),
            Role::Worker,
            self.config.secret.as_ref(),
            self.config.tls.as_ref(),
        )
        .await?;
        let carried = self
            .running
            .iter()
            .map(|(lease, running)| CarriedAttempt {
                lease: *lease,
                job: running.job,
                attempt: running.attempt,
                slots: running.slots,
                epoch: running.epoch,
            })
            .collect();
        // What is unacknowledged goes with the registration, before any new assignment, as far
        // as a small frame goes; the rest follows at once in frames of its own.
        let now = Instant::now();
        let mut results = Vec::new();
        let mut bytes = 0;
        self.unsent.clear();
        for (lease, outgoing) in self.outbox.iter_mut() {
            let size = outgoing.result.encoded_size();
            if results.len() == RESULTS_PER_FRAME || bytes + size > REGISTER_RESULT_BYTES {
                outgoing.sent_at = None;
                self.unsent.push(*lease);
                continue;
            }
            bytes += size;
            outgoing.sent_at = Some(now);
            results.push(outgoing.result.clone());
        }
        let register = ToCoordinator::Register {
            member: self.config.member.clone(),
            name: self.config.name.clone(),
            instance: self.instance,
            slots: self.config.slots,
            labels: self.config.labels.clone(),
            carried,
            results,
        };
        let broken = |reason: String| ConnectError::Handshake {
            address: coordinator.clone(),
            reason,
        };
        connection
            .send(register)
            .await
            .map_err(|error| broken(error.to_string()))?;
        let answer = tokio::time::timeout(REGISTRATION_TIMEOUT, connect::next(&mut connection))
            .await
            .map_err(|_| broken("no answer to the registration".into()))?;
        match answer.map_err(broken)? {
            FromCoordinator::Registered {
                heartbeat_interval_ms,
                max_result_bytes,
            } => {
                self.heartbeat = Duration::from_millis(heartbeat_interval_ms.clamp(50, 60_000));
                self.max_result_bytes = result_limit(max_result_bytes);
            }
            refused @ FromCoordinator::Refused { .. } => {
                return Err(connect::refusal(refused, &coordinator))
            }
            other => {
                return Err(broken(format!(
                    "unexpected answer to registration: {other:?}"
                )))
            }
        }
        tracing::info!(
            %coordinator,
            name = %self.config.name,
            slots = self.config.slots,
            carried = self.running.len(),
            "registered"
        );
        Ok((connection, coordinator))
    }

    /// The coordinators to dial, the one whose session ended last put last.
    fn dial_order(&self) -> String {
        let Some(last) = &self.last_lost else {
            return self.config.coordinator.clone();
        };
        let Ok(list) = crate::net::address::parse_list(&self.config.coordinator) else {
            return self.config.coordinator.clone();
        };
        let (others, lost): (Vec<_>, Vec<_>) = list
            .into_iter()
            .partition(|address| address.to_string() != *last);
        others
            .iter()
            .chain(&lost)
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// The limit on results the coordinator gave, within what this worker's frames carry (a
/// coordinator checks its own against its frames; this one's are [`DEFAULT_MAX_FRAME`]).
fn result_limit(told: u64) -> usize {
    let most = crate::job::most_result_bytes(DEFAULT_MAX_FRAME);
    usize::try_from(told).map_or(most, |told| told.min(most))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_keeps_results_to_what_its_frames_carry() {
        assert_eq!(result_limit(1000), 1000);
        assert_eq!(
            result_limit(u64::MAX),
            crate::job::most_result_bytes(DEFAULT_MAX_FRAME)
        );
    }
}
