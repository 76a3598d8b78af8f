//! What workers' attempts did, as the Scheduler and the sessions report it: each report is one
//! event for the book, whose effects the Ledger carries out.

use super::book::{LostAttempt, Started, WorkerRef};
use super::Ledger;
use crate::job::{now_ms, AttemptResult, CarriedAttempt, JobId, Lease};
use actix::prelude::*;
use std::sync::Arc;

/// The Scheduler handed jobs to a worker.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AttemptsStarted {
    /// The worker.
    pub worker: WorkerRef,
    /// The attempts.
    pub started: Vec<Started>,
}

impl Handler<AttemptsStarted> for Ledger {
    type Result = ();

    fn handle(&mut self, started: AttemptsStarted, ctx: &mut Context<Self>) {
        if self.closing {
            return;
        }
        let effects = self
            .book
            .attempts_started(&started.worker, &started.started, now_ms());
        self.carry_out(ctx, effects, None);
    }
}

/// A worker handed back attempts it held and never started: their jobs go back in line.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AttemptsReturned {
    /// The worker.
    pub worker: WorkerRef,
    /// The attempts, as (job, lease).
    pub returned: Vec<(JobId, Lease)>,
}

impl Handler<AttemptsReturned> for Ledger {
    type Result = ();

    fn handle(&mut self, returned: AttemptsReturned, ctx: &mut Context<Self>) {
        if self.closing {
            return;
        }
        let effects = self
            .book
            .attempts_returned(&returned.worker, &returned.returned);
        self.carry_out(ctx, effects, None);
    }
}

/// A worker registered with attempts it kept running across a reconnect or a coordinator restart.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AttemptsCarried {
    /// The worker.
    pub worker: WorkerRef,
    /// The attempts.
    pub carried: Vec<CarriedAttempt>,
}

impl Handler<AttemptsCarried> for Ledger {
    type Result = ();

    fn handle(&mut self, carried: AttemptsCarried, ctx: &mut Context<Self>) {
        if self.closing {
            return;
        }
        let effects = self
            .book
            .attempts_carried(&carried.worker, &carried.carried, now_ms());
        self.carry_out(ctx, effects, None);
    }
}

/// A worker's results, in the order the Scheduler saw them.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ResultsArrived {
    /// The worker, which is told what became of them.
    pub worker: WorkerRef,
    /// The results.
    pub results: Vec<AttemptResult>,
}

impl Handler<ResultsArrived> for Ledger {
    type Result = ();

    fn handle(&mut self, arrived: ResultsArrived, ctx: &mut Context<Self>) {
        if self.closing {
            return;
        }
        let effects = self
            .book
            .results(&arrived.worker, &arrived.results, now_ms());
        self.carry_out(ctx, effects, None);
    }
}

/// A worker is gone; its attempts are lost and their jobs go back to pending at once.
#[derive(Message)]
#[rtype(result = "()")]
pub struct WorkerLost {
    /// The worker's name.
    pub worker_name: Arc<str>,
    /// Its attempts.
    pub attempts: Vec<LostAttempt>,
    /// Why it was declared lost.
    pub reason: String,
}

impl Handler<WorkerLost> for Ledger {
    type Result = ();

    fn handle(&mut self, lost: WorkerLost, ctx: &mut Context<Self>) {
        if self.closing {
            return;
        }
        let effects =
            self.book
                .worker_lost(&lost.worker_name, &lost.attempts, &lost.reason, now_ms());
        self.carry_out(ctx, effects, None);
    }
}

/// A worker wrote the manifests of these recorded attempts.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ManifestsWritten(pub Vec<Lease>);

impl Handler<ManifestsWritten> for Ledger {
    type Result = ();

    fn handle(&mut self, ManifestsWritten(leases): ManifestsWritten, ctx: &mut Context<Self>) {
        if self.closing {
            return;
        }
        let effects = self.book.manifests_written(&leases);
        self.carry_out(ctx, effects, None);
    }
}
