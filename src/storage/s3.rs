//! S3 for workers: streamed downloads (large objects in parallel ranged parts), uploads
//! (large files by multipart upload, aborted however they are cut off: see [`super::uploads`]),
//! and the one place that turns the SDK's errors into
//! messages that name the URL and the reason.
//!
//! Credentials and region come the AWS way (environment, profile, instance role) through
//! aws-config; `AWS_ENDPOINT_URL` or an explicit endpoint reaches S3-compatible stores.

use super::uploads::{InFlightUpload, LeftOver, UploadJournal};
use super::FetchError;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::{ByteStream, Length};
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use std::path::Path;
use std::sync::Arc;
use tokio::io::{AsyncSeekExt, AsyncWriteExt};

/// Objects at least this large are fetched in parallel ranged parts and sent by multipart upload.
pub const PART_SIZE: u64 = 16 * 1024 * 1024;
/// Parts in flight at once, per object.
const PARTS_IN_FLIGHT: usize = 4;

/// How to reach S3.
#[derive(Debug, Clone, Default)]
pub struct S3Settings {
    /// An endpoint for S3-compatible stores (else `AWS_ENDPOINT_URL`, else AWS).
    pub endpoint: Option<String>,
    /// Address buckets as `endpoint/bucket/key` instead of `bucket.endpoint/key`.
    pub path_style: bool,
}

/// A connected S3 client.
#[derive(Clone)]
pub struct S3 {
    client: aws_sdk_s3::Client,
    /// Where multipart uploads in flight are written down, if anywhere.
    journal: Option<UploadJournal>,
}

/// `s3://bucket/key`, for messages.
fn url(bucket: &str, key: &str) -> String {
    format!("s3://{bucket}/{key}")
}

fn failed(bucket: &str, key: &str, error: impl std::error::Error) -> String {
    format!("{}: {}", url(bucket, key), DisplayErrorContext(error))
}

/// Like [`failed`], telling an object or bucket that does not exist from other failures.
fn fetch_failed<E>(bucket: &str, key: &str, error: SdkError<E, HttpResponse>) -> FetchError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let missing = matches!(
        error.code(),
        Some("NoSuchKey" | "NoSuchBucket" | "NotFound")
    ) || error
        .raw_response()
        .is_some_and(|response| response.status().as_u16() == 404);
    FetchError {
        message: failed(bucket, key, error),
        missing,
    }
}

impl S3 {
    /// Builds a client from the standard AWS configuration and these settings.
    pub async fn connect(settings: &S3Settings) -> S3 {
        use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
            .build_https();
        let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .http_client(http)
            .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(5))
            .load()
            .await;
        let mut config =
            aws_sdk_s3::config::Builder::from(&shared).force_path_style(settings.path_style);
        if let Some(endpoint) = &settings.endpoint {
            config = config.endpoint_url(endpoint);
        }
        if shared.region().is_none() {
            // S3-compatible stores rarely care; AWS itself needs one and will say so.
            config = config.region(aws_sdk_s3::config::Region::new("us-east-1"));
        }
        S3 {
            client: aws_sdk_s3::Client::from_conf(config.build()),
            journal: None,
        }
    }

    /// The same client, writing its multipart uploads in flight down in `journal`.
    pub fn with_journal(mut self, journal: UploadJournal) -> S3 {
        self.journal = Some(journal);
        self
    }

    /// The underlying client, for tests and tools.
    pub fn client(&self) -> &aws_sdk_s3::Client {
        &self.client
    }

    /// Downloads one object to `target`, streamed to disk; large ones in parallel parts.
    pub async fn download(&self, bucket: &str, key: &str, target: &Path) -> Result<(), FetchError> {
        let head = self
            .client
            .head_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|error| fetch_failed(bucket, key, error))?;
        let size = head.content_length().unwrap_or(0).max(0) as u64;
        let file = tokio::fs::File::create(target).await.map_err(|error| {
            format!(
                "{}: cannot create {}: {}",
                url(bucket, key),
                target.display(),
                error
            )
        })?;
        file.set_len(size).await.map_err(|error| {
            format!(
                "{}: cannot size {}: {}",
                url(bucket, key),
                target.display(),
                error
            )
        })?;
        drop(file);
        let ranges: Vec<(u64, u64)> = if size < 2 * PART_SIZE {
            vec![(0, size)]
        } else {
            (0..size.div_ceil(PART_SIZE))
                .map(|part| (part * PART_SIZE, ((part + 1) * PART_SIZE).min(size)))
                .collect()
        };
        let parts = Arc::new(tokio::sync::Semaphore::new(PARTS_IN_FLIGHT));
        let mut tasks = tokio::task::JoinSet::new();
        for (start, end) in ranges {
            let (s3, bucket, key, target, parts) = (
                self.clone(),
                bucket.to_string(),
                key.to_string(),
                target.to_path_buf(),
                parts.clone(),
            );
            tasks.spawn(async move {
                let _permit = parts
                    .acquire_owned()
                    .await
                    .map_err(|error| error.to_string())?;
                s3.download_range(&bucket, &key, &target, start, end).await
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.map_err(|error| format!("{}: download task failed: {error}", url(bucket, key)))??;
        }
        Ok(())
    }

    async fn download_range(
        &self,
        bucket: &str,
        key: &str,
        target: &Path,
        start: u64,
        end: u64,
    ) -> Result<(), String> {
        if start == end {
            return Ok(());
        }
        let object = self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .range(format!("bytes={}-{}", start, end - 1))
            .send()
            .await
            .map_err(|error| failed(bucket, key, error))?;
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .open(target)
            .await
            .map_err(|error| {
                format!(
                    "{}: cannot open {}: {error}",
                    url(bucket, key),
                    target.display()
                )
            })?;
        file.seek(std::io::SeekFrom::Start(start))
            .await
            .map_err(|error| format!("{}: {error}", url(bucket, key)))?;
        let mut body = object.body.into_async_read();
        let copied = tokio::io::copy_buf(&mut body, &mut file)
            .await
            .map_err(|error| {
                format!(
                    "{}: {}",
                    url(bucket, key),
                    crate::storage::describe_io(&error)
                )
            })?;
        file.flush().await.map_err(|error| {
            format!(
                "{}: {}",
                url(bucket, key),
                crate::storage::describe_io(&error)
            )
        })?;
        if copied != end - start {
            return Err(format!(
                "{}: got {copied} bytes of a {}-byte range",
                url(bucket, key),
                end - start
            ));
        }
        Ok(())
    }

    /// Every key under a prefix.
    pub async fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<String>, FetchError> {
        let mut keys = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|error| fetch_failed(bucket, prefix, error))?;
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|object| object.key().map(str::to_string)),
            );
        }
        Ok(keys)
    }

    /// Uploads a file; returns its size and ETag. Large files go by multipart upload, so a
    /// worker killed midway leaves no object under the key.
    pub async fn upload(
        &self,
        source: &Path,
        bucket: &str,
        key: &str,
    ) -> Result<(u64, String), String> {
        let size = tokio::fs::metadata(source)
            .await
            .map_err(|error| format!("cannot read {}: {error}", source.display()))?
            .len();
        if size < 2 * PART_SIZE {
            let body = ByteStream::from_path(source)
                .await
                .map_err(|error| format!("cannot read {}: {error}", source.display()))?;
            let put = self
                .client
                .put_object()
                .bucket(bucket)
                .key(key)
                .body(body)
                .send()
                .await
                .map_err(|error| failed(bucket, key, error))?;
            return Ok((
                size,
                put.e_tag()
                    .unwrap_or_default()
                    .trim_matches('"')
                    .to_string(),
            ));
        }
        let upload = self
            .client
            .create_multipart_upload()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|error| failed(bucket, key, error))?;
        let upload = InFlightUpload {
            bucket: bucket.to_string(),
            key: key.to_string(),
            upload_id: upload.upload_id().unwrap_or_default().to_string(),
        };
        let upload_id = upload.upload_id.clone();
        // From here on the upload is aborted however this ends, even if this future is
        // dropped (a timeout, a cancel), while it is written down too.
        let mut unfinished = Unfinished(Some((self.clone(), upload.clone(), None)));
        if let Some(journal) = &self.journal {
            let entry = journal.record(&upload).await;
            if let Some(held) = unfinished.0.as_mut() {
                held.2 = entry;
            }
        }
        let parts = self
            .upload_parts(source, bucket, key, &upload_id, size)
            .await;
        let completed = match parts {
            Ok(parts) => self
                .client
                .complete_multipart_upload()
                .bucket(bucket)
                .key(key)
                .upload_id(&upload_id)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(parts))
                        .build(),
                )
                .send()
                .await
                .map_err(|error| failed(bucket, key, error)),
            Err(error) => Err(error),
        };
        let Some((s3, upload, entry)) = unfinished.0.take() else {
            unreachable!("taken only here");
        };
        match completed {
            Ok(done) => {
                if let Some(entry) = entry {
                    UploadJournal::forget(&entry).await;
                }
                Ok((
                    size,
                    done.e_tag()
                        .unwrap_or_default()
                        .trim_matches('"')
                        .to_string(),
                ))
            }
            Err(error) => {
                s3.abort(upload, entry).await;
                Err(error)
            }
        }
    }

    /// Aborts a multipart upload and crosses it off the journal; one S3 no longer knows counts
    /// as aborted. Returns whether it is gone; if not, its entry stays for the next worker.
    async fn abort(&self, upload: InFlightUpload, entry: Option<std::path::PathBuf>) -> bool {
        let aborted = self
            .client
            .abort_multipart_upload()
            .bucket(&upload.bucket)
            .key(&upload.key)
            .upload_id(&upload.upload_id)
            .send()
            .await;
        let gone = match aborted {
            Ok(_) => true,
            Err(error)
                if error
                    .as_service_error()
                    .is_some_and(|error| error.is_no_such_upload()) =>
            {
                true
            }
            Err(error) => {
                tracing::warn!(
                    url = %url(&upload.bucket, &upload.key),
                    upload_id = %upload.upload_id,
                    error = %DisplayErrorContext(error),
                    "cannot abort an unfinished multipart upload"
                );
                false
            }
        };
        if gone {
            if let Some(entry) = entry {
                UploadJournal::forget(&entry).await;
            }
        }
        gone
    }

    /// Aborts the multipart uploads of workers that are gone, found in their journal; returns
    /// how many. An entry that cannot be read is dropped; one whose abort fails stays, for the
    /// next worker to try.
    pub async fn abort_left_over(&self, left: Vec<LeftOver>) -> usize {
        let mut aborted = 0;
        for instance in left {
            let mut kept = 0;
            for (entry, upload) in &instance.entries {
                match upload {
                    Some(upload) => {
                        if self.abort(upload.clone(), Some(entry.clone())).await {
                            aborted += 1;
                        } else {
                            kept += 1;
                        }
                    }
                    None => UploadJournal::forget(entry).await,
                }
            }
            if kept == 0 {
                UploadJournal::forget(&instance.lock_path).await;
            }
        }
        aborted
    }

    async fn upload_parts(
        &self,
        source: &Path,
        bucket: &str,
        key: &str,
        upload_id: &str,
        size: u64,
    ) -> Result<Vec<CompletedPart>, String> {
        let permits = Arc::new(tokio::sync::Semaphore::new(PARTS_IN_FLIGHT));
        let mut tasks = tokio::task::JoinSet::new();
        for index in 0..size.div_ceil(PART_SIZE) {
            let offset = index * PART_SIZE;
            let length = PART_SIZE.min(size - offset);
            let (s3, source, bucket, key, upload_id, permits) = (
                self.clone(),
                source.to_path_buf(),
                bucket.to_string(),
                key.to_string(),
                upload_id.to_string(),
                permits.clone(),
            );
            tasks.spawn(async move {
                let _permit = permits
                    .acquire_owned()
                    .await
                    .map_err(|error| error.to_string())?;
                let body = ByteStream::read_from()
                    .path(&source)
                    .offset(offset)
                    .length(Length::Exact(length))
                    .build()
                    .await
                    .map_err(|error| format!("cannot read {}: {error}", source.display()))?;
                let number = index as i32 + 1;
                let part = s3
                    .client
                    .upload_part()
                    .bucket(&bucket)
                    .key(&key)
                    .upload_id(&upload_id)
                    .part_number(number)
                    .body(body)
                    .send()
                    .await
                    .map_err(|error| failed(&bucket, &key, error))?;
                Ok::<_, String>(
                    CompletedPart::builder()
                        .part_number(number)
                        .set_e_tag(part.e_tag().map(str::to_string))
                        .build(),
                )
            });
        }
        let mut parts = Vec::new();
        while let Some(done) = tasks.join_next().await {
            parts.push(
                done.map_err(|error| {
                    format!("{}: upload task failed: {error}", url(bucket, key))
                })??,
            );
        }
        parts.sort_by_key(|part| part.part_number());
        Ok(parts)
    }

    /// Writes a small object in one request.
    pub async fn put(&self, bucket: &str, key: &str, bytes: Vec<u8>) -> Result<(), String> {
        self.client
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(|error| failed(bucket, key, error))?;
        Ok(())
    }
}

/// A multipart upload not yet completed nor aborted: dropped so (its future was cut off), it is
/// aborted on a task of its own.
struct Unfinished(Option<(S3, InFlightUpload, Option<std::path::PathBuf>)>);

impl Drop for Unfinished {
    fn drop(&mut self) {
        let Some((s3, upload, entry)) = self.0.take() else {
            return;
        };
        // With no runtime left (the worker is exiting), the journal keeps it for the next
        // worker.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                s3.abort(upload, entry).await;
            });
        }
    }
}
