//! A client's requests, from the wire to the actors and back: each [`ClientRequest`] becomes the
//! message of the actor that owns the answer, and its typed answer (or refusal) a
//! [`ClientResponse`].

use super::{results, SessionContext};
use crate::actors::fleet::ListPools;
use crate::actors::ledger::{
    Cancel, LedgerError, ListBatches, ListJobs, Retry, RetryJob, WaitBatch,
};
use crate::actors::{cluster_status, list_workers, views};
use crate::net::protocol::{ClientRequest, ClientResponse};
use std::sync::Arc;
use std::time::Duration;

/// Serves one request.
pub(super) async fn answer(shared: Arc<SessionContext>, request: ClientRequest) -> ClientResponse {
    let (ledger, scheduler) = (&shared.ledger, &shared.scheduler);
    let answered: Result<ClientResponse, LedgerError> = match request {
        ClientRequest::Submit {
            name,
            jobs,
            idempotency_key,
        } => views::submit(ledger, scheduler, name, jobs, idempotency_key)
            .await
            .map(|submitted| ClientResponse::Submitted {
                batch: submitted.batch,
                first_job: submitted.first_job,
                jobs: submitted.jobs,
                unplaceable: submitted.unplaceable,
                repeated: submitted.repeated,
            }),
        ClientRequest::Batch(id) => views::batch(ledger, scheduler, id)
            .await
            .map(ClientResponse::Batch),
        ClientRequest::Batches => ledger
            .send(ListBatches { newest: None })
            .await
            .map(ClientResponse::Batches)
            .map_err(LedgerError::from),
        ClientRequest::WaitBatch { batch, timeout_ms } => flatten(
            ledger
                .send(WaitBatch {
                    batch,
                    timeout: Duration::from_millis(timeout_ms),
                })
                .await,
        )
        .map(ClientResponse::Batch),
        ClientRequest::Job(id) => views::job(ledger, scheduler, id)
            .await
            .map(|job| ClientResponse::Job(Box::new(job))),
        ClientRequest::Jobs {
            batch,
            state,
            after,
            limit,
        } => {
            let list = ListJobs {
                batch,
                state,
                after,
                limit,
            };
            views::jobs(ledger, scheduler, list)
                .await
                .map(ClientResponse::Jobs)
        }
        ClientRequest::Cancel(target) => {
            flatten(ledger.send(Cancel(target)).await).map(ClientResponse::Changed)
        }
        ClientRequest::Retry(batch) => {
            flatten(ledger.send(Retry(batch)).await).map(ClientResponse::Changed)
        }
        ClientRequest::RetryJob(job) => {
            flatten(ledger.send(RetryJob(job)).await).map(ClientResponse::Changed)
        }
        ClientRequest::Pools => shared
            .fleet
            .send(ListPools)
            .await
            .map(ClientResponse::Pools)
            .map_err(LedgerError::from),
        ClientRequest::Workers => list_workers(&shared.registry, &shared.scheduler)
            .await
            .map(ClientResponse::Workers)
            .map_err(LedgerError::from),
        ClientRequest::Status => cluster_status(
            &shared.ledger,
            &shared.registry,
            &shared.scheduler,
            &shared.fleet,
            &shared.cluster,
        )
        .await
        .map(|status| ClientResponse::Status(Box::new(status)))
        .map_err(LedgerError::from),
        ClientRequest::Results {
            batch,
            after,
            limit,
            wait_ms,
        } => results::results(&shared, batch, after, limit, wait_ms).await,
        ClientRequest::Call {
            spec,
            idempotency_key,
        } => results::call(&shared, spec, idempotency_key).await,
    };
    answered.unwrap_or_else(|error| ClientResponse::Error(error.to_string()))
}

fn flatten<T>(
    answer: Result<Result<T, LedgerError>, actix::MailboxError>,
) -> Result<T, LedgerError> {
    answer.map_err(LedgerError::from).and_then(|answer| answer)
}
