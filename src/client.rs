//! The client library: submit batches and ask the coordinator about them.

use crate::job::{check_idempotency_key, new_idempotency_key, BatchId, JobId, JobSpec, JobState};
use crate::net::auth::Secret;
use crate::net::codec::CodecError;
use crate::net::connect::{self, ConnectError, Connection};
use crate::net::protocol::{
    CancelTarget, ClientRequest, ClientResponse, FromCoordinator, Role, ToCoordinator,
};
use crate::net::tls::ClientTls;
use crate::status::{BatchInfo, ClusterStatus, JobInfo, WorkerInfo};
use futures::SinkExt;
use std::time::Duration;
use tokio::time::Instant;

/// Jobs fetched per page by [`Client::jobs`].
const PAGE: u32 = 1_000;

/// How long a submission goes on being sent again after lost connections, by default.
pub const SUBMIT_RETRY_FOR: Duration = Duration::from_secs(30);

/// The first wait before dialing again after a lost connection; doubled each time, up to
/// [`MAX_RECONNECT_WAIT`].
const FIRST_RECONNECT_WAIT: Duration = Duration::from_millis(100);
const MAX_RECONNECT_WAIT: Duration = Duration::from_secs(2);

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
    /// The request is not one to send (an idempotency key drover does not take, ...).
    #[error("{0}")]
    Invalid(String),
}

pub use crate::status::Submitted;

/// A connection to the coordinator in the client role.
pub struct Client {
    connection: Connection,
    next_id: u64,
    /// Where and how it connected, to connect again when a submission's connection is lost.
    address: String,
    secret: Option<Secret>,
    tls: Option<ClientTls>,
    /// How long a submission goes on being sent again after lost connections.
    retry_for: Duration,
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
            address: address.to_string(),
            secret: secret.cloned(),
            tls: tls.cloned(),
            retry_for: SUBMIT_RETRY_FOR,
        })
    }

    /// How long [`Client::submit`] goes on sending a submission again after lost connections
    /// ([`SUBMIT_RETRY_FOR`] unless set); zero sends it once.
    pub fn retry_submissions_for(&mut self, retry_for: Duration) {
        self.retry_for = retry_for;
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
                // Turned away for good (a submission is not sent again after this), or for now.
                FromCoordinator::Refused {
                    reason,
                    permanent: true,
                } => return Err(ClientError::Connect(ConnectError::Refused(reason))),
                FromCoordinator::Refused { reason, .. } => {
                    return Err(ClientError::Connection(reason))
                }
                // An answer to an abandoned earlier request.
                _ => continue,
            }
        }
    }

    /// Queues a batch; returns once it is on the coordinator's disk, with those of its jobs no
    /// connected worker can take (they stay queued). The submission carries an idempotency key
    /// of its own, drawn at random, and is sent again under it if the connection is lost (see
    /// [`Client::submit_with_key`]): it queues one batch, however often it is sent.
    pub async fn submit(
        &mut self,
        name: &str,
        jobs: Vec<JobSpec>,
    ) -> Result<Submitted, ClientError> {
        let key = new_idempotency_key();
        let mut submitted = self.send_submission(name, jobs, &key).await?;
        // The key is this call's alone: a batch it made already was made by this submission,
        // sent before its connection was lost. That is no repeat to the caller.
        submitted.repeated = false;
        Ok(submitted)
    }

    /// Queues a batch under an idempotency key: if a batch was submitted under `key` already
    /// (by this client or any other, over HTTP too), the answer is that batch, marked
    /// `repeated`, and nothing new is queued. A connection lost before the answer is dialed
    /// again, with backoff, and the submission sent again under the same key for up to
    /// [`SUBMIT_RETRY_FOR`]; a refusal (a bad job, a full queue, a wrong token) is not retried.
    pub async fn submit_with_key(
        &mut self,
        name: &str,
        jobs: Vec<JobSpec>,
        key: &str,
    ) -> Result<Submitted, ClientError> {
        check_idempotency_key(key).map_err(ClientError::Invalid)?;
        self.send_submission(name, jobs, key).await
    }

    /// Sends a submission under `key`, and again after a lost connection.
    async fn send_submission(
        &mut self,
        name: &str,
        jobs: Vec<JobSpec>,
        key: &str,
    ) -> Result<Submitted, ClientError> {
        let request = ClientRequest::Submit {
            name: name.to_string(),
            jobs,
            idempotency_key: Some(key.to_string()),
        };
        let give_up = Instant::now() + self.retry_for;
        let mut wait = FIRST_RECONNECT_WAIT;
        loop {
            let lost = match self.call(request.clone()).await {
                Ok(ClientResponse::Submitted {
                    batch,
                    first_job,
                    jobs,
                    unplaceable,
                    repeated,
                }) => {
                    return Ok(Submitted {
                        batch,
                        first_job,
                        jobs,
                        unplaceable,
                        repeated,
                    })
                }
                Ok(other) => return Err(unexpected(other)),
                Err(ClientError::Connection(reason)) => reason,
                Err(error) => return Err(error),
            };
            tracing::warn!(
                "lost the connection to the coordinator while submitting ({lost}); \
                 submitting again under the same idempotency key {key}"
            );
            self.reconnect(give_up, &mut wait, lost).await?;
        }
    }

    /// Dials the coordinator again until it answers, waiting longer each time, until
    /// `give_up`. An error that trying again cannot help ends it at once.
    async fn reconnect(
        &mut self,
        give_up: Instant,
        wait: &mut Duration,
        mut lost: String,
    ) -> Result<(), ClientError> {
        loop {
            let now = Instant::now();
            if now + *wait > give_up {
                return Err(ClientError::Connection(format!(
                    "{lost}; gave up sending the submission again after {}",
                    humantime::format_duration(self.retry_for)
                )));
            }
            tokio::time::sleep(*wait).await;
            *wait = (*wait * 2).min(MAX_RECONNECT_WAIT);
            let dial = connect::connect_with(
                &self.address,
                Role::Client,
                self.secret.as_ref(),
                self.tls.as_ref(),
            );
            let left = give_up.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, dial).await {
                Ok(Ok(connection)) => {
                    self.connection = connection;
                    return Ok(());
                }
                Ok(Err(error)) if error.is_permanent() => return Err(error.into()),
                Ok(Err(error)) => lost = error.to_string(),
                Err(_) => lost = format!("cannot reach the coordinator at {}", self.address),
            }
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
            ClientResponse::Job(info) => Ok(info.record),
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
