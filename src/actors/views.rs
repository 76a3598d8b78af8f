//! The views that join what the Ledger knows of jobs with why the Scheduler's line keeps them
//! waiting, each owner asked for its part; the Session and the HTTP side answer with these.

use crate::actors::ledger::{
    GetBatch, GetJob, Ledger, LedgerError, ListJobs, SubmitBatch, WaitingOutOfLine,
};
use crate::actors::queue::Shape;
use crate::actors::scheduler::{Scheduler, Unplaceable, WaitingInLine, WhyWaiting};
use crate::job::{BatchId, JobId, JobSpec, JobState};
use crate::status::{BatchInfo, JobInfo, Resulted, Submitted, Waiting};
use actix::{Addr, MailboxError};
use std::collections::HashMap;

/// Queues a batch and says which of its jobs no worker connected now can take, and why (they
/// are queued all the same: such a worker may connect later). Under an idempotency key that
/// made a batch already, that batch is the answer.
pub async fn submit(
    ledger: &Addr<Ledger>,
    scheduler: &Addr<Scheduler>,
    name: String,
    jobs: Vec<JobSpec>,
    idempotency_key: Option<String>,
) -> Result<Submitted, LedgerError> {
    let mut shapes: HashMap<Shape, u64> = HashMap::new();
    for job in &jobs {
        *shapes
            .entry(Shape::new(job.slots, &job.requires))
            .or_default() += 1;
    }
    let submit = SubmitBatch {
        name,
        jobs,
        idempotency_key,
    };
    let mut submitted = ledger.send(submit).await??;
    let mut shapes: Vec<(Shape, u64)> = shapes.into_iter().collect();
    shapes.sort_unstable();
    // A warning only: a batch on disk is acknowledged whatever becomes of it.
    submitted.unplaceable = scheduler
        .send(Unplaceable(shapes))
        .await
        .unwrap_or_default();
    Ok(submitted)
}

/// One job with its history and, while it is pending, why it waits.
pub async fn job(
    ledger: &Addr<Ledger>,
    scheduler: &Addr<Scheduler>,
    id: JobId,
) -> Result<Resulted<JobInfo>, LedgerError> {
    let mut job = ledger.send(GetJob(id)).await??;
    explain(scheduler, std::slice::from_mut(&mut job.record)).await?;
    Ok(job)
}

/// A page of jobs, each pending one with why it waits.
pub async fn jobs(
    ledger: &Addr<Ledger>,
    scheduler: &Addr<Scheduler>,
    list: ListJobs,
) -> Result<Vec<JobInfo>, LedgerError> {
    let mut jobs = ledger.send(list).await??;
    explain(scheduler, &mut jobs).await?;
    Ok(jobs)
}

/// One batch's progress, with its pending jobs by why they wait.
pub async fn batch(
    ledger: &Addr<Ledger>,
    scheduler: &Addr<Scheduler>,
    id: BatchId,
) -> Result<BatchInfo, LedgerError> {
    let (info, waiting) = futures::join!(
        ledger.send(GetBatch(id)),
        waiting(ledger, scheduler, Some(id))
    );
    let mut info = info??;
    if info.pending > 0 {
        info.waiting = waiting?;
    }
    Ok(info)
}

/// Pending jobs, of one batch or of all, by why they wait: those in line as the Scheduler
/// sees them, then those the Ledger holds out of line.
pub async fn waiting(
    ledger: &Addr<Ledger>,
    scheduler: &Addr<Scheduler>,
    batch: Option<BatchId>,
) -> Result<Vec<Waiting>, MailboxError> {
    let (in_line, out_of_line) = futures::join!(
        scheduler.send(WaitingInLine { batch }),
        ledger.send(WaitingOutOfLine { batch })
    );
    let mut waiting = in_line?;
    waiting.extend(out_of_line?);
    Ok(waiting)
}

/// Gives each pending job whose reason the Ledger does not hold the Scheduler's, in one
/// question for the page.
async fn explain(scheduler: &Addr<Scheduler>, jobs: &mut [JobInfo]) -> Result<(), LedgerError> {
    let asked: HashMap<JobId, BatchId> = jobs
        .iter()
        .filter(|job| job.state == JobState::Pending && job.waiting.is_none())
        .map(|job| (job.id, job.batch))
        .collect();
    if asked.is_empty() {
        return Ok(());
    }
    let mut reasons = scheduler.send(WhyWaiting(asked)).await?;
    for job in jobs {
        if let Some(reason) = reasons.remove(&job.id) {
            job.waiting = Some(reason);
        }
    }
    Ok(())
}
