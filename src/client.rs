//! The client library: submit batches and ask the coordinator about them, call one job and
//! get its result, follow finished jobs' records as they are recorded.

use crate::job::{check_idempotency_key, new_idempotency_key, BatchId, JobId, JobSpec, JobState};
use crate::net::auth::Secret;
use crate::net::codec::CodecError;
use crate::net::connect::{self, ConnectError, Connection};
use crate::net::protocol::{
    CancelTarget, ClientRequest, ClientResponse, FromCoordinator, Role, ToCoordinator,
};
use crate::net::tls::ClientTls;
use crate::status::{
    BatchInfo, ClusterStatus, Completion, JobInfo, PoolInfo, Resulted, ResultsPage, WorkerInfo,
};
use futures::{SinkExt, Stream};
use std::collections::VecDeque;
use std::time::Duration;
use tokio::time::Instant;

/// Jobs fetched per page by [`Client::jobs`].
const PAGE: u32 = 1_000;

/// How long a submission goes on being sent again after lost connections, by default (and a
/// call or a follow dials again after each).
pub const SUBMIT_RETRY_FOR: Duration = Duration::from_secs(30);

/// How long one request of [`Client::follow`] waits for the next record before asking again.
const FOLLOW_WAIT: Duration = Duration::from_secs(20);

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
    /// Where and how it connected, to connect again when a submission's, a call's or a
    /// follow's connection is lost.
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
    /// ([`SUBMIT_RETRY_FOR`] unless set), and how long [`Client::call`] and
    /// [`Client::follow`] go on dialing after each lost connection; zero sends once.
    pub fn retry_submissions_for(&mut self, retry_for: Duration) {
        self.retry_for = retry_for;
    }

    /// Sends one request as it is and waits for its answer (no retry: the typed methods say
    /// what is safe to send again).
    pub async fn request(&mut self, body: ClientRequest) -> Result<ClientResponse, ClientError> {
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
            let lost = match self.request(request.clone()).await {
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
            self.reconnect(give_up, &mut wait, lost, "sending the submission again")
                .await?;
        }
    }

    /// Dials the coordinator again until it answers, waiting longer each time, until
    /// `give_up`. An error that trying again cannot help ends it at once. `doing` says what
    /// was given up (`sending the submission again`).
    async fn reconnect(
        &mut self,
        give_up: Instant,
        wait: &mut Duration,
        mut lost: String,
        doing: &str,
    ) -> Result<(), ClientError> {
        loop {
            let now = Instant::now();
            if now + *wait > give_up {
                return Err(ClientError::Connection(format!(
                    "{lost}; gave up {doing} after {}",
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
        match self.request(ClientRequest::Batch(id)).await? {
            ClientResponse::Batch(info) => Ok(info),
            other => Err(unexpected(other)),
        }
    }

    /// Every batch.
    pub async fn batches(&mut self) -> Result<Vec<BatchInfo>, ClientError> {
        match self.request(ClientRequest::Batches).await? {
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
        match self.request(request).await? {
            ClientResponse::Batch(info) => Ok(info),
            other => Err(unexpected(other)),
        }
    }

    /// One job with its history.
    pub async fn job(&mut self, id: JobId) -> Result<JobInfo, ClientError> {
        Ok(self.job_with_result(id).await?.record)
    }

    /// One job with its history and its recorded result (a finished job's, if it has one).
    pub async fn job_with_result(&mut self, id: JobId) -> Result<Resulted<JobInfo>, ClientError> {
        match self.request(ClientRequest::Job(id)).await? {
            ClientResponse::Job(job) => Ok(*job),
            other => Err(unexpected(other)),
        }
    }

    /// Queues one job and answers with its final record and result once it is recorded, in
    /// one request. The call carries an idempotency key of its own, drawn at random; a
    /// connection lost before the answer is dialed again (after each loss, for up to
    /// [`SUBMIT_RETRY_FOR`]) and the call sent again under the same key, which waits for the
    /// job the first sending queued rather than queue another.
    pub async fn call(&mut self, spec: JobSpec) -> Result<Completion, ClientError> {
        self.call_with_key(spec, &new_idempotency_key()).await
    }

    /// [`Client::call`] under a key of the caller's: if a job was called (or a batch
    /// submitted) under `key` already, the answer is that job's record, waited for if it is
    /// not finished, and nothing new is queued.
    pub async fn call_with_key(
        &mut self,
        spec: JobSpec,
        key: &str,
    ) -> Result<Completion, ClientError> {
        check_idempotency_key(key).map_err(ClientError::Invalid)?;
        let request = ClientRequest::Call {
            spec,
            idempotency_key: Some(key.to_string()),
        };
        match self.request_again(request, "calling the job again").await? {
            ClientResponse::Called(completion) => Ok(*completion),
            other => Err(unexpected(other)),
        }
    }

    /// Sends a request that may be sent again, and again after each lost connection, dialing
    /// for up to the retry time after each loss.
    async fn request_again(
        &mut self,
        request: ClientRequest,
        doing: &str,
    ) -> Result<ClientResponse, ClientError> {
        loop {
            let lost = match self.request(request.clone()).await {
                Err(ClientError::Connection(reason)) => reason,
                answered => return answered,
            };
            tracing::warn!("lost the connection to the coordinator ({lost}); {doing}");
            let mut wait = FIRST_RECONNECT_WAIT;
            self.reconnect(Instant::now() + self.retry_for, &mut wait, lost, doing)
                .await?;
        }
    }

    /// One page of finished jobs' records after `after`, in the order they were recorded (of
    /// one batch, or of every batch): at once when there are some (or the batch is done),
    /// else as soon as one is recorded, or empty after `wait`. An unknown batch and a cursor
    /// beyond the last record are refused.
    pub async fn results(
        &mut self,
        batch: Option<BatchId>,
        after: u64,
        limit: u32,
        wait: Duration,
    ) -> Result<ResultsPage, ClientError> {
        let request = ClientRequest::Results {
            batch,
            after,
            limit,
            wait_ms: wait.as_millis().try_into().unwrap_or(u64::MAX),
        };
        match self
            .request_again(request, "asking for results again")
            .await?
        {
            ClientResponse::Results(page) => Ok(page),
            other => Err(unexpected(other)),
        }
    }

    /// Finished jobs' records as they are recorded, after the cursor `after` (0: from the
    /// first), of one batch or of every batch: each once, in recording order. Pages are asked
    /// for one at a time, each waiting for the next record, so a slow reader holds one page;
    /// a lost connection is dialed again and following resumes after the last record given,
    /// so nothing is missed or repeated. Following a batch ends after its last record once it
    /// is done; following every batch never ends. An error (an unknown batch, a cursor beyond
    /// the end, a coordinator out of reach) is the stream's last item.
    ///
    /// ```no_run
    /// # async fn follow(client: &mut drover::client::Client) -> Result<(), drover::client::ClientError> {
    /// use futures::StreamExt;
    /// let records = client.follow(Some(1), 0);
    /// let mut records = std::pin::pin!(records);
    /// while let Some(record) = records.next().await {
    ///     let record = record?;
    ///     println!("job {} {}", record.record.id, record.record.state);
    /// }
    /// # Ok(()) }
    /// ```
    pub fn follow(
        &mut self,
        batch: Option<BatchId>,
        after: u64,
    ) -> impl Stream<Item = Result<Completion, ClientError>> + '_ {
        let following = Following {
            client: self,
            batch,
            cursor: after,
            page: VecDeque::new(),
            ended: false,
        };
        futures::stream::unfold(following, |mut following| async move {
            let record = following.next().await?;
            Some((record, following))
        })
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
            let page = match self.request(request).await? {
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
        match self.request(ClientRequest::Workers).await? {
            ClientResponse::Workers(workers) => Ok(workers),
            other => Err(unexpected(other)),
        }
    }

    /// The elastic fleet's pools, in the order of the coordinator's configuration (none
    /// without `[[pool]]` tables).
    pub async fn pools(&mut self) -> Result<Vec<PoolInfo>, ClientError> {
        match self.request(ClientRequest::Pools).await? {
            ClientResponse::Pools(pools) => Ok(pools),
            other => Err(unexpected(other)),
        }
    }

    /// The cluster at a glance.
    pub async fn status(&mut self) -> Result<ClusterStatus, ClientError> {
        match self.request(ClientRequest::Status).await? {
            ClientResponse::Status(status) => Ok(*status),
            other => Err(unexpected(other)),
        }
    }

    /// Cancels a batch's or a job's unfinished jobs; returns how many were cancelled.
    pub async fn cancel(&mut self, target: CancelTarget) -> Result<u64, ClientError> {
        match self.request(ClientRequest::Cancel(target)).await? {
            ClientResponse::Changed(count) => Ok(count),
            other => Err(unexpected(other)),
        }
    }

    /// Puts a batch's failed jobs back to pending; returns how many.
    pub async fn retry(&mut self, batch: BatchId) -> Result<u64, ClientError> {
        match self.request(ClientRequest::Retry(batch)).await? {
            ClientResponse::Changed(count) => Ok(count),
            other => Err(unexpected(other)),
        }
    }

    /// Puts one failed or cancelled job back to pending; returns 1, or 0 if a retry of it was
    /// under way already.
    pub async fn retry_job(&mut self, job: JobId) -> Result<u64, ClientError> {
        match self.request(ClientRequest::RetryJob(job)).await? {
            ClientResponse::Changed(count) => Ok(count),
            other => Err(unexpected(other)),
        }
    }
}

/// Where a [`Client::follow`] is: the page being given out and the cursor of the last record
/// given.
struct Following<'a> {
    client: &'a mut Client,
    batch: Option<BatchId>,
    cursor: u64,
    page: VecDeque<Completion>,
    ended: bool,
}

impl Following<'_> {
    async fn next(&mut self) -> Option<Result<Completion, ClientError>> {
        loop {
            if let Some(record) = self.page.pop_front() {
                self.cursor = record.record.cursor;
                return Some(Ok(record));
            }
            if self.ended {
                return None;
            }
            let asked = self
                .client
                .results(self.batch, self.cursor, PAGE, FOLLOW_WAIT)
                .await;
            match asked {
                Ok(page) => {
                    self.ended = page.done;
                    if page.results.is_empty() {
                        self.cursor = self.cursor.max(page.cursor);
                    }
                    self.page.extend(page.results);
                }
                Err(error) => {
                    self.ended = true;
                    return Some(Err(error));
                }
            }
        }
    }
}

fn unexpected(response: ClientResponse) -> ClientError {
    let text = format!("{response:?}");
    ClientError::Unexpected(text.chars().take(200).collect())
}
