//! What a worker tells the coordinator of its attempts after each event: results (new ones,
//! and those unacknowledged too long), attempts started, held assignments handed back; written
//! as one write, once attempts that could end at once have.

use super::{frames_of, Worker, RESEND_AFTER};
use crate::job::AttemptResult;
use crate::net::connect::Connection;
use crate::net::protocol::ToCoordinator;
use futures::SinkExt;
use std::time::Instant;

/// The most times the worker lets attempts that can end at once do so before it writes what it
/// has for the coordinator (see [`Worker::settle`]).
const MAX_SETTLE_ROUNDS: usize = 64;

impl Worker {
    /// Lets attempts that can end without waiting (a handler that answers at once) do so, so
    /// their results go in the frame about to be written and the slots they free take held
    /// assignments: short jobs then cost the coordinator one frame for several. An attempt
    /// that waits for anything (a process, a timer, I/O) is not waited for.
    pub(super) async fn settle(&mut self) {
        for _ in 0..MAX_SETTLE_ROUNDS {
            tokio::task::yield_now().await;
            let mut ended = false;
            while let Ok((result, outputs)) = self.finished_rx.try_recv() {
                self.finished(result, outputs);
                ended = true;
            }
            if !ended {
                return;
            }
        }
    }

    /// Results not yet sent, and with `resend`, those sent too long ago without an
    /// acknowledgement (looked for now and then, not at every frame: the outbox holds every
    /// result until its commit).
    pub(super) fn due_results(&mut self, now: Instant, resend: bool) -> Vec<AttemptResult> {
        let mut due = Vec::with_capacity(self.unsent.len());
        for lease in self.unsent.drain(..) {
            if let Some(outgoing) = self.outbox.get_mut(&lease) {
                if outgoing.sent_at.is_none() {
                    outgoing.sent_at = Some(now);
                    due.push(outgoing.result.clone());
                }
            }
        }
        if resend {
            for outgoing in self.outbox.values_mut() {
                if outgoing
                    .sent_at
                    .is_some_and(|sent| now.duration_since(sent) >= RESEND_AFTER)
                {
                    outgoing.sent_at = Some(now);
                    due.push(outgoing.result.clone());
                }
            }
        }
        due
    }

    /// Writes what the coordinator has to learn, as one write: results first (their slots
    /// free), then the attempts started, then the assignments handed back.
    pub(super) async fn tell(
        &mut self,
        connection: &mut Connection,
        resend: bool,
    ) -> Result<(), String> {
        if !self.started.is_empty() {
            // Attempts just started may end at once: their results go in this write too.
            self.settle().await;
        }
        let due = self.due_results(Instant::now(), resend);
        let mut frames: Vec<ToCoordinator> = frames_of(due)
            .into_iter()
            .map(ToCoordinator::Results)
            .collect();
        if !self.started.is_empty() {
            frames.push(ToCoordinator::Started(std::mem::take(&mut self.started)));
        }
        if !self.released.is_empty() {
            frames.push(ToCoordinator::Released(std::mem::take(&mut self.released)));
        }
        if frames.is_empty() {
            return Ok(());
        }
        for frame in frames {
            connection
                .feed(frame)
                .await
                .map_err(|error| error.to_string())?;
        }
        connection.flush().await.map_err(|error| error.to_string())
    }
}
