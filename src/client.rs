//! The client library: submit batches and ask the coordinator about them.

use crate::job::{BatchId, JobId, JobSpec, JobState};
use crate::net::auth::Secret;
use crate::net::codec::CodecError;
use crate::net::connect::{self, ConnectError, Connection};
use crate::net::protocol::{
    CancelTarget, ClientRequest, ClientResponse, FromCoordinator, Role, ToCoordinator,
};
use crate::status::{BatchInfo, ClusterStatus, JobInfo, WorkerInfo};
use futures::SinkExt;
use std::time::Duration;

/// Jobs fetched per page by [`Client::jobs`].
const PAGE: u32 = 1_000;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No connection could be made.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The connection broke.
    #[error("lost the connection to the coordinator: {0}")]
    Connection(String),
    /// The request does not fit in one frame.
    #[error("the request is {size} bytes encoded, above the frame limit of {limit} bytes; split the batch into smaller ones")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The coordinator answered with an error.
    #[error("{0}")]
    Coordinator(String),
    /// The coordinator answered something else than the request calls for.
    #[error("unexpected answer from the coordinator: {0}")]
    Unexpected(String),
}

pub use crate::status::Submitted;

/// A connection to the coordinator in the client role.
pub struct Client {
    connection: Connection,
    next_id: u64,
}

impl Client {
    /// Connects in the clear and authenticates with the client secret. `address` is one
    /// coordinator's (`head:7700`) or several, separated by commas (`a:7700,b:7700`): the one
    /// that leads answers.
    pub async fn connect(address: &str, secret: Option<&Secret>) -> Result<Client, ClientError> {
        Client::connect_with(address, secret, None).await
    }

    /// Connects, over TLS if `tls` is given, and authenticates with the client secret, to the
    /// coordinator that leads among those of `address`.
    pub async fn connect_with(
        address: &str,
        secret: Option<&Secret>,
        tls: Option<&crate::net::tls::ClientTls>,
    ) -> Result<Client, ClientError> {
        let connection = connect::connect_with(address, Role::Client, secret, tls).await?;
        Ok(Client {
            connection,
            next_id: 1,
        })
    }

    /// Sends one request and waits for its answer.
    pub async fn call(&mut self, body: ClientRequest) -> Result<ClientResponse, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        self.connection
            .send(ToCoordinator::Request { id, body })
            .await
            .map_err(|error| match error {
                CodecError::TooLarge { size, limit } => ClientError::TooLarge { size, limit },
                other => ClientError::Connection(other.to_string()),
            })?;
        loop {
            match connect::next(&mut self.connection)
                .await
                .map_err(ClientError::Connection)?
            {
                FromCoordinator::Response { id: answered, body } if answered == id => {
                    return match body {
                        ClientResponse::Error(message) => Err(ClientError::Coordinator(message)),
                        body => Ok(body),
                    };
                }
                FromCoordinator::Refused { reason, .. } => {
                    return Err(ClientError::Connection(reason))
                }
                // An answer to an abandoned earlier request.
                _ => continue,
            }
        }
    }

    /// Queues a batch; returns once it is on the coordinator's disk, with those of its jobs no
    /// connected worker can take (they stay queued).
    pub async fn submit(
        &mut self,
        name: &str,
        jobs: Vec<JobSpec>,
    ) -> Result<Submitted, ClientError> {
        let request = ClientRequest::Submit {
            name: name.to_string(),
            jobs,
        };
        match self.call(request).await? {
            ClientResponse::Submitted {
                batch,
                first_job,
                jobs,
                unplaceable,
            } => Ok(Submitted {
                batch,
                first_job,
                jobs,
                unplaceable,
            }),
            other => Err(unexpected(other)),
        }
    }

    /// One batch's progress.
    pub async fn batch(&mut self, id: BatchId) -> Result<BatchInfo, ClientError> {
        match self.call(ClientRequest::Batch(id)).await? {
            ClientResponse::Batch(info) => Ok(info),
            other => Err(unexpected(other)),
        }
    }

    /// Every batch.
    pub async fn batches(&mut self) -> Result<Vec<BatchInfo>, ClientError> {
        match self.call(ClientRequest::Batches).await? {
            ClientResponse::Batches(batches) => Ok(batches),
            other => Err(unexpected(other)),
        }
    }

    /// Waits until the batch is done or `timeout` passes; returns its progress either way.
    pub async fn wait_batch(
        &mut self,
        id: BatchId,
        timeout: Duration,
    ) -> Result<BatchInfo, ClientError> {
        let request = ClientRequest::WaitBatch {
            batch: id,
            timeout_ms: timeout.as_millis() as u64,
        };
        match self.call(request).await? {
            ClientResponse::Batch(info) => Ok(info),
            other => Err(unexpected(other)),
        }
    }

    /// One job with its history.
    pub async fn job(&mut self, id: JobId) -> Result<JobInfo, ClientError> {
        match self.call(ClientRequest::Job(id)).await? {
            ClientResponse::Job(info) => Ok(*info),
            other => Err(unexpected(other)),
        }
    }

    /// All jobs matching the filters, in id order.
    pub async fn jobs(
        &mut self,
        batch: Option<BatchId>,
        state: Option<JobState>,
    ) -> Result<Vec<JobInfo>, ClientError> {
        let mut all = Vec::new();
        let mut after = 0;
        loop {
            let request = ClientRequest::Jobs {
                batch,
                state,
                after,
                limit: PAGE,
            };
            let page = match self.call(request).await? {
                ClientResponse::Jobs(page) => page,
                other => return Err(unexpected(other)),
            };
            let full = page.len() == PAGE as usize;
            if let Some(last) = page.last() {
                after = last.id;
            }
            all.extend(page);
            if !full {
                return Ok(all);
            }
        }
    }

    /// Connected workers.
    pub async fn workers(&mut self) -> Result<Vec<WorkerInfo>, ClientError> {
        match self.call(ClientRequest::Workers).await? {
            ClientResponse::Workers(workers) => Ok(workers),
            other => Err(unexpected(other)),
        }
    }

    /// The cluster at a glance.
    pub async fn status(&mut self) -> Result<ClusterStatus, ClientError> {
        match self.call(ClientRequest::Status).await? {
            ClientResponse::Status(status) => Ok(*status),
            other => Err(unexpected(other)),
        }
    }

    /// Cancels a batch's or a job's unfinished jobs; returns how many were cancelled.
    pub async fn cancel(&mut self, target: CancelTarget) -> Result<u64, ClientError> {
        match self.call(ClientRequest::Cancel(target)).await? {
            ClientResponse::Changed(count) => Ok(count),
            other => Err(unexpected(other)),
        }
    }

    /// Puts a batch's failed jobs back to pending; returns how many.
    pub async fn retry(&mut self, batch: BatchId) -> Result<u64, ClientError> {
        match self.call(ClientRequest::Retry(batch)).await? {
            ClientResponse::Changed(count) => Ok(count),
            other => Err(unexpected(other)),
        }
    }

    /// Puts one failed or cancelled job back to pending; returns 1, or 0 if a retry of it was
    /// under way already.
    pub async fn retry_job(&mut self, job: JobId) -> Result<u64, ClientError> {
        match self.call(ClientRequest::RetryJob(job)).await? {
            ClientResponse::Changed(count) => Ok(count),
            other => Err(unexpected(other)),
        }
    }
}

fn unexpected(response: ClientResponse) -> ClientError {
    let text = format!("{response:?}");
    ClientError::Unexpected(text.chars().take(200).collect())
}
