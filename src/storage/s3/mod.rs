//! S3 for workers: streamed downloads (large objects in parallel ranged parts) and uploads
//! (large files by multipart upload, aborted however they are cut off: see [`super::uploads`]).
//! Every failure reads as the URL and a reason a person acts on, made in one place
//! ([`errors`]).
//!
//! Credentials and region come the AWS way (environment, profile, instance role) through
//! aws-config; `AWS_ENDPOINT_URL` or an explicit endpoint reaches S3-compatible stores.
//!
//! Integrity of uploads: on AWS the SDK's flexible checksums (a CRC32 sent as a trailer of an
//! aws-chunked body, checked by S3). Many S3-compatible stores refuse such bodies (Garage:
//! "Invalid payload signature") or, worse, store the chunk framing as the object's bytes, so
//! with a custom endpoint the worker sends plain bodies instead, each with a Content-MD5, which
//! S3 and most S3-compatible stores check (a mismatch is refused as BadDigest).

mod errors;
mod integrity;
mod settings;

pub use settings::{S3Checksums, S3Settings};

use super::uploads::{InFlightUpload, LeftOver, UploadJournal};
use super::FetchError;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::{ByteStream, Length};
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use errors::Reach;
use std::path::Path;
use std::sync::Arc;
use tokio::io::{AsyncSeekExt, AsyncWriteExt};

/// Objects at least this large are fetched in parallel ranged parts and sent by multipart upload.
pub const PART_SIZE: u64 = 16 * 1024 * 1024;
/// Parts in flight at once, per object.
const PARTS_IN_FLIGHT: usize = 4;

/// A connected S3 client.
#[derive(Clone)]
pub struct S3 {
    client: aws_sdk_s3::Client,
    /// Where multipart uploads in flight are written down, if anywhere.
    journal: Option<UploadJournal>,
    /// Where requests go, for messages.
    reach: Arc<Reach>,
    /// Uploads carry a Content-MD5 of their body (when the SDK sends no checksum of its own).
    content_md5: bool,
}

/// `s3://bucket/key`, for messages.
fn url(bucket: &str, key: &str) -> String {
    format!("s3://{bucket}/{key}")
}

/// Whether an error says the object or its bucket does not exist, which no second try changes.
fn is_missing<E>(error: &SdkError<E, HttpResponse>) -> bool
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    matches!(
        error.code(),
        Some("NoSuchKey" | "NoSuchBucket" | "NotFound")
    ) || error
        .raw_response()
        .is_some_and(|response| response.status().as_u16() == 404)
}

impl S3 {
    /// Builds a client from the standard AWS configuration and these settings.
    pub async fn connect(settings: &S3Settings) -> S3 {
        let (client, reach, checksums) = settings::client(settings).await;
        S3 {
            client,
            journal: None,
            reach: Arc::new(reach),
            content_md5: checksums == S3Checksums::WhenRequired,
        }
    }

    /// `url: reason` for a failed request.
    fn failed<E>(&self, bucket: &str, key: &str, error: SdkError<E, HttpResponse>) -> String
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        format!(
            "{}: {}",
            url(bucket, key),
            errors::describe(&error, &self.reach)
        )
    }

    /// `url: reason` for a HEAD of an object that failed: its 404 names no code, so whether the
    /// key or the bucket is missing is asked of the bucket. Either is missing for good.
    async fn head_failed<E>(
        &self,
        bucket: &str,
        key: &str,
        error: SdkError<E, HttpResponse>,
    ) -> FetchError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let missing = is_missing(&error);
        let not_found = error
            .raw_response()
            .is_some_and(|raw| raw.status().as_u16() == 404);
        if not_found {
            if let Err(bucket_error) = self.client.head_bucket().bucket(bucket).send().await {
                if bucket_error
                    .raw_response()
                    .is_some_and(|raw| raw.status().as_u16() == 404)
                {
                    return FetchError {
                        message: format!("{}: {}", url(bucket, key), errors::NO_SUCH_BUCKET),
                        missing: true,
                    };
                }
            }
        }
        FetchError {
            message: self.failed(bucket, key, error),
            missing,
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
        let head = match self
            .client
            .head_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
        {
            Ok(head) => head,
            Err(error) => return Err(self.head_failed(bucket, key, error).await),
        };
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
            .map_err(|error| self.failed(bucket, key, error))?;
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
            let page = page.map_err(|error| FetchError {
                missing: is_missing(&error),
                message: self.failed(bucket, prefix, error),
            })?;
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
            let content_md5 = integrity::content_md5_of(self.content_md5, source, 0, size).await?;
            let body = ByteStream::from_path(source)
                .await
                .map_err(|error| format!("cannot read {}: {error}", source.display()))?;
            let put = self
                .client
                .put_object()
                .bucket(bucket)
                .key(key)
                .body(body)
                .set_content_md5(content_md5)
                .send()
                .await
                .map_err(|error| self.failed(bucket, key, error))?;
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
            .map_err(|error| self.failed(bucket, key, error))?;
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
                .map_err(|error| self.failed(bucket, key, error)),
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
                    upload_id = %upload.upload_id,
                    error = %self.failed(&upload.bucket, &upload.key, error),
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
                let content_md5 =
                    integrity::content_md5_of(s3.content_md5, &source, offset, length).await?;
                let number = index as i32 + 1;
                let part = s3
                    .client
                    .upload_part()
                    .bucket(&bucket)
                    .key(&key)
                    .upload_id(&upload_id)
                    .part_number(number)
                    .body(body)
                    .set_content_md5(content_md5)
                    .send()
                    .await
                    .map_err(|error| s3.failed(&bucket, &key, error))?;
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
        let content_md5 = self.content_md5.then(|| integrity::base64_md5(&bytes));
        self.client
            .put_object()
            .bucket(bucket)
            .key(key)
            .set_content_md5(content_md5)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(|error| self.failed(bucket, key, error))?;
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
