//! A job's data: inputs fetched into its scratch directory before it runs, outputs published
//! after it succeeds.
//!
//! Outputs are exactly-once by construction: every attempt publishes under a prefix of its own,
//! `<to>ledger-<ledger id>/<job id>/attempt-<digest of its lease>/`, so two attempts never touch
//! each other's objects, and two ledgers (whose job ids both start at 1) never share a job's
//! directory. Once the coordinator has recorded an attempt's result, the worker writes
//! `<to>ledger-<ledger id>/<job id>/_manifest.json` naming that attempt's objects: the manifest
//! is the stable place to find a job's outputs, and any attempt prefix it does not name is a
//! leftover of a losing attempt.

use crate::job::{
    attempt_name, attempt_prefix, check_relative, job_prefix, lies_under, object_size,
    unscoped_job_prefix, Input, JobId, Lease, LedgerId, Location, ManifestOrder, OutputObject,
    Outputs, MAX_MANIFEST_BYTES, MAX_OUTPUT_OBJECTS,
};
use crate::storage::s3::{S3Settings, S3};
use crate::storage::uploads::{LeftOver, UploadJournal};
use crate::storage::{describe_io, FetchError};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The manifest's file name under the job's prefix ([`job_prefix`]).
pub const MANIFEST: &str = "_manifest.json";

/// The object stores a worker reaches; S3 is connected on first use.
#[derive(Clone, Default)]
pub struct Stores {
    settings: S3Settings,
    /// Where multipart uploads in flight are written down.
    journal: Option<UploadJournal>,
    s3: Arc<tokio::sync::OnceCell<S3>>,
}

impl Stores {
    /// Stores reached with these S3 settings, writing multipart uploads in flight down in
    /// `journal` (if there is one: without, a killed worker's uploads are left to the bucket's
    /// lifecycle rule).
    pub fn new(settings: S3Settings, journal: Option<UploadJournal>) -> Stores {
        Stores {
            settings,
            journal,
            s3: Arc::default(),
        }
    }

    /// A worker's stores: its multipart uploads written down in a journal in `journal_dir`,
    /// and those a killed worker left there aborted in the background (S3 may be slow to
    /// answer, or not there at all: the worker's start does not wait).
    pub async fn for_worker(settings: S3Settings, journal_dir: &Path) -> Stores {
        let dir = journal_dir.to_path_buf();
        let journal = match tokio::task::spawn_blocking(move || UploadJournal::open(dir)).await {
            Ok(Ok(journal)) => Some(journal),
            Ok(Err(error)) => {
                tracing::warn!(journal = %journal_dir.display(), %error, "cannot keep a journal of multipart uploads; those a kill cuts off are left to the bucket's lifecycle rule");
                None
            }
            Err(_) => None,
        };
        let stores = Stores::new(settings, journal);
        let sweeping = stores.clone();
        tokio::spawn(async move {
            let aborted = sweeping.abort_left_over().await;
            if aborted > 0 {
                tracing::warn!(
                    uploads = aborted,
                    "aborted multipart uploads left unfinished by workers that died"
                );
            }
        });
        stores
    }

    async fn s3(&self) -> &S3 {
        self.s3
            .get_or_init(|| async {
                let s3 = S3::connect(&self.settings).await;
                match &self.journal {
                    Some(journal) => s3.with_journal(journal.clone()),
                    None => s3,
                }
            })
            .await
    }

    /// Aborts the multipart uploads that workers killed on this machine left in the journal;
    /// returns how many. Connects to S3 only if there are any.
    pub async fn abort_left_over(&self) -> usize {
        let Some(journal) = self.journal.clone() else {
            return 0;
        };
        let left = tokio::task::spawn_blocking(move || journal.left_over())
            .await
            .unwrap_or_default();
        // A worker gone with nothing in flight left only its lock: no reason to reach S3
        // (which, without credentials, takes a while to say so).
        let (empty, left): (Vec<LeftOver>, Vec<LeftOver>) = left
            .into_iter()
            .partition(|instance| instance.entries.is_empty());
        for instance in empty {
            UploadJournal::forget(&instance.lock_path).await;
        }
        if left.is_empty() {
            return 0;
        }
        self.s3().await.abort_left_over(left).await
    }
}

/// Brings every input into the scratch directory. An input that does not exist (no such file,
/// key or bucket) is told from other failures: no second attempt would find it.
pub async fn fetch_inputs(
    stores: &Stores,
    inputs: &[Input],
    scratch: &Path,
) -> Result<(), FetchError> {
    for input in inputs {
        let target = scratch.join(&input.to);
        let whole_prefix = input.from.ends_with('/');
        match Location::parse(&input.from)? {
            Location::File(source) => {
                let copied = if whole_prefix {
                    copy_tree(&source, &target).await
                } else {
                    copy_file(&source, &target, Copy::Scratch).await.map(|_| ())
                };
                if let Err(error) = copied {
                    // The source itself is not there (rather than, say, the scratch disk full).
                    let missing = error.kind() == std::io::ErrorKind::NotFound
                        && matches!(tokio::fs::try_exists(&source).await, Ok(false));
                    return Err(FetchError {
                        message: format!(
                            "cannot fetch input {}: {}",
                            input.from,
                            describe_io(&error)
                        ),
                        missing,
                    });
                }
            }
            Location::S3 { bucket, key } => {
                let s3 = stores.s3().await;
                let in_words = |error: FetchError| FetchError {
                    message: format!("cannot fetch input {error}"),
                    missing: error.missing,
                };
                let objects = if whole_prefix || key.is_empty() {
                    let mut objects = Vec::new();
                    for found in s3.list(&bucket, &key).await.map_err(in_words)? {
                        let Some(relative) = found.strip_prefix(key.as_str()).map(str::to_string)
                        else {
                            continue;
                        };
                        if relative.is_empty() || relative.ends_with('/') {
                            continue;
                        }
                        check_relative(&relative).map_err(|error| {
                            format!("cannot fetch input s3://{bucket}/{found}: {error}")
                        })?;
                        objects.push((found, target.join(relative)));
                    }
                    objects
                } else {
                    vec![(key, target)]
                };
                for (key, path) in objects {
                    if let Some(parent) = path.parent() {
                        tokio::fs::create_dir_all(parent).await.map_err(|error| {
                            format!("cannot fetch input: {}", describe_io(&error))
                        })?;
                    }
                    s3.download(&bucket, &key, &path).await.map_err(in_words)?;
                }
            }
        }
    }
    Ok(())
}

/// Makes the outputs directory in the scratch directory before the job runs.
pub async fn make_outputs_dir(outputs: &Outputs, scratch: &Path) -> Result<(), String> {
    tokio::fs::create_dir_all(scratch.join(&outputs.from))
        .await
        .map_err(|error| {
            format!(
                "cannot make outputs directory {}: {}",
                outputs.from,
                describe_io(&error)
            )
        })
}

/// Publishes the files under `scratch/<outputs.from>` below this attempt's own prefix.
pub async fn publish_outputs(
    stores: &Stores,
    outputs: &Outputs,
    scratch: &Path,
    ledger: LedgerId,
    job: JobId,
    lease: Lease,
) -> Result<Vec<OutputObject>, String> {
    let source = scratch.join(&outputs.from);
    let files = list_files(&source, scratch).await.map_err(|error| {
        format!(
            "cannot read outputs directory {}: {}",
            outputs.from,
            describe_io(&error)
        )
    })?;
    let prefix = attempt_prefix(&outputs.to, ledger, job, lease)?;
    check_manifest_size(outputs, &files, &prefix)?;
    let mut published = Vec::with_capacity(files.len());
    match Location::parse(&prefix)? {
        Location::File(directory) => {
            for relative in files {
                let target = directory.join(&relative);
                let (size, etag) = copy_file(&source.join(&relative), &target, Copy::Published)
                    .await
                    .map_err(|error| {
                        format!(
                            "cannot publish output {}: {}",
                            relative.display(),
                            describe_io(&error)
                        )
                    })?;
                published.push(OutputObject {
                    url: format!("file://{}", target.display()),
                    size,
                    etag,
                });
            }
        }
        Location::S3 { bucket, key } => {
            let s3 = stores.s3().await;
            for relative in files {
                let object_key = format!("{key}{}", relative.to_string_lossy());
                let (size, etag) = s3
                    .upload(&source.join(&relative), &bucket, &object_key)
                    .await
                    .map_err(|error| format!("cannot publish output {error}"))?;
                published.push(OutputObject {
                    url: format!("s3://{bucket}/{object_key}"),
                    size,
                    etag,
                });
            }
        }
    }
    Ok(published)
}

/// Refuses, before anything is uploaded, outputs whose manifest would not fit the limits: one
/// result must always fit a frame, or the worker holding it could never report it.
fn check_manifest_size(outputs: &Outputs, files: &[PathBuf], prefix: &str) -> Result<(), String> {
    // Every object's URL starts with the attempt's prefix.
    let prefix = prefix.len();
    // An entity tag is at most a SHA-256 in hex, or a multipart ETag: 80 bytes covers both.
    let bytes: usize = files
        .iter()
        .map(|relative| object_size("", "") + prefix + relative.as_os_str().len() + 80)
        .sum();
    if files.len() > MAX_OUTPUT_OBJECTS || bytes > MAX_MANIFEST_BYTES {
        return Err(format!(
            "outputs: {} files under {}, a manifest of about {} KiB, above the limit of {} files \
             and {} KiB; publish fewer, larger files (an archive of them, say)",
            files.len(),
            outputs.from,
            bytes / 1024,
            MAX_OUTPUT_OBJECTS,
            MAX_MANIFEST_BYTES / 1024
        ));
    }
    Ok(())
}

/// Writes the manifest of the recorded attempt, `_manifest.json` under its job's prefix; safe
/// to repeat.
///
/// An attempt recorded by a drover from before ledgers had ids published under `<to><job>/`
/// (and before that, in a directory named by its lease itself): a manifest asked for such an
/// attempt (one not confirmed before the upgrade) goes where its objects are, beside them.
pub async fn publish_manifest(stores: &Stores, order: &ManifestOrder) -> Result<(), String> {
    let (job, lease, to) = (order.job, order.lease, &order.outputs.to);
    let scoped = job_prefix(to, order.ledger, job)?;
    let unscoped = unscoped_job_prefix(to, job)?;
    let layouts = [
        (scoped.clone(), attempt_name(lease)),
        (unscoped.clone(), attempt_name(lease)),
        (unscoped, format!("attempt-{lease:016x}")),
    ];
    let (job_prefix, attempt_prefix) = layouts
        .into_iter()
        .map(|(job_prefix, attempt)| {
            let attempt_prefix = format!("{job_prefix}{attempt}/");
            (job_prefix, attempt_prefix)
        })
        .find(|(_, attempt_prefix)| {
            order
                .objects
                .iter()
                .all(|object| lies_under(&object.url, attempt_prefix))
        })
        .unwrap_or_else(|| {
            let attempt_prefix = format!("{scoped}{}/", attempt_name(lease));
            (scoped, attempt_prefix)
        });
    let manifest_url = format!("{job_prefix}{MANIFEST}");
    let manifest = serde_json::json!({
        "ledger": order.ledger.to_string(),
        "job": job,
        "attempt_prefix": attempt_prefix,
        "objects": order.objects,
    });
    let text = serde_json::to_vec_pretty(&manifest).map_err(|error| error.to_string())?;
    match Location::parse(&manifest_url)? {
        Location::File(path) => write_atomically(&path, &text).await.map_err(|error| {
            format!(
                "cannot write manifest {manifest_url}: {}",
                describe_io(&error)
            )
        }),
        Location::S3 { bucket, key } => stores.s3().await.put(&bucket, &key, text).await,
    }
}

/// Copies a file through a temporary name, so no reader ever sees it half written; returns its
/// size and SHA-256.
/// Where a copy goes, and so whether it must be on disk before it counts.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Copy {
    /// An input in the scratch directory: it lives as long as the attempt.
    Scratch,
    /// A published output: it must survive the worker.
    Published,
}

async fn copy_file(source: &Path, target: &Path, kind: Copy) -> std::io::Result<(u64, String)> {
    if let Some(parent) = target.parent() {
        tokio::fs::create_dir_all(parent).await?;
    }
    let partial = partial_name(target);
    let copied = async {
        let mut reader = tokio::fs::File::open(source).await?;
        let mut writer = tokio::fs::File::create(&partial).await?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut buffer = vec![0u8; 256 * 1024];
        loop {
            let read = reader.read(&mut buffer).await?;
            if read == 0 {
                break;
            }
            hasher.update(&buffer[..read]);
            writer.write_all(&buffer[..read]).await?;
            size += read as u64;
        }
        if kind == Copy::Published {
            writer.sync_all().await?;
        }
        tokio::fs::rename(&partial, target).await?;
        let digest = hasher.finalize();
        let etag: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
        Ok((size, etag))
    }
    .await;
    if copied.is_err() {
        let _ = tokio::fs::remove_file(&partial).await;
    }
    copied
}

async fn write_atomically(target: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(parent) = target.parent() {
        tokio::fs::create_dir_all(parent).await?;
    }
    let partial = partial_name(target);
    let written = async {
        let mut file = tokio::fs::File::create(&partial).await?;
        file.write_all(bytes).await?;
        file.sync_all().await?;
        tokio::fs::rename(&partial, target).await
    }
    .await;
    if written.is_err() {
        let _ = tokio::fs::remove_file(&partial).await;
    }
    written
}

fn partial_name(target: &Path) -> PathBuf {
    let mut name = target.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".partial-{}", std::process::id()));
    target.with_file_name(name)
}

async fn copy_tree(source: &Path, target: &Path) -> std::io::Result<()> {
    for relative in list_files(source, source).await? {
        copy_file(
            &source.join(&relative),
            &target.join(&relative),
            Copy::Scratch,
        )
        .await?;
    }
    Ok(())
}

/// Every regular file under `root`, relative to it, in a stable order. Symbolic links are
/// followed where they lead inside `boundary` (and said so in the worker's log), and refused
/// where they lead outside it, or nowhere: a job's data never reaches beyond what it names.
async fn list_files(root: &Path, boundary: &Path) -> std::io::Result<Vec<PathBuf>> {
    let boundary = tokio::fs::canonicalize(boundary).await?;
    let mut files = Vec::new();
    let mut directories = vec![PathBuf::new()];
    // Directories reached through links, by where they really are: a loop is walked once.
    let mut seen = std::collections::HashSet::new();
    while let Some(directory) = directories.pop() {
        let mut entries = tokio::fs::read_dir(root.join(&directory)).await?;
        while let Some(entry) = entries.next_entry().await? {
            let mut kind = entry.file_type().await?;
            let relative = directory.join(entry.file_name());
            if kind.is_symlink() {
                let path = root.join(&relative);
                let target = tokio::fs::canonicalize(&path).await.map_err(|error| {
                    std::io::Error::other(format!(
                        "{} is a link to nothing that exists ({error})",
                        relative.display()
                    ))
                })?;
                if !target.starts_with(&boundary) {
                    return Err(std::io::Error::other(format!(
                        "{} is a link to {}, outside {}: links are followed only within it",
                        relative.display(),
                        target.display(),
                        boundary.display()
                    )));
                }
                kind = tokio::fs::metadata(&target).await?.file_type();
                if kind.is_dir() && !seen.insert(target.clone()) {
                    continue;
                }
                tracing::info!(link = %relative.display(), target = %target.display(), "following a link");
            }
            if kind.is_dir() {
                directories.push(relative);
            } else if kind.is_file() {
                files.push(relative);
            }
        }
    }
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn inputs_arrive_and_outputs_are_published_per_attempt_with_a_manifest() {
        let world = tempfile::tempdir().unwrap();
        let data = world.path().join("data");
        std::fs::create_dir_all(data.join("set/deep")).unwrap();
        std::fs::write(data.join("one.txt"), "one").unwrap();
        std::fs::write(data.join("set/a.txt"), "a").unwrap();
        std::fs::write(data.join("set/deep/b.txt"), "bb").unwrap();
        let scratch = world.path().join("scratch");
        let inputs = vec![
            Input {
                from: format!("file://{}", data.join("one.txt").display()),
                to: "in/one.txt".into(),
            },
            Input {
                from: format!("file://{}/", data.join("set").display()),
                to: "in/set".into(),
            },
        ];
        fetch_inputs(&Stores::default(), &inputs, &scratch)
            .await
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(scratch.join("in/one.txt")).unwrap(),
            "one"
        );
        assert_eq!(
            std::fs::read_to_string(scratch.join("in/set/deep/b.txt")).unwrap(),
            "bb"
        );

        std::fs::create_dir_all(scratch.join("out/sub")).unwrap();
        std::fs::write(scratch.join("out/sub/result.txt"), "abc").unwrap();
        let outputs = Outputs {
            from: "out".into(),
            to: format!("file://{}", world.path().join("results").display()),
        };
        let ledger = LedgerId(0x5f0c);
        let objects = publish_outputs(&Stores::default(), &outputs, &scratch, ledger, 7, 0xab)
            .await
            .unwrap();
        assert_eq!(objects.len(), 1);
        assert_eq!(objects[0].size, 3);
        // SHA-256 of "abc".
        assert_eq!(
            objects[0].etag,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let job_dir = world.path().join("results/ledger-0000000000005f0c/7");
        let published = job_dir.join(attempt_name(0xab)).join("sub/result.txt");
        assert_eq!(objects[0].url, format!("file://{}", published.display()));
        assert_eq!(std::fs::read_to_string(&published).unwrap(), "abc");

        let order = ManifestOrder {
            job: 7,
            lease: 0xab,
            outputs,
            objects: objects.clone(),
            ledger,
        };
        publish_manifest(&Stores::default(), &order).await.unwrap();
        let manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(job_dir.join(MANIFEST)).unwrap()).unwrap();
        assert_eq!(manifest["objects"][0]["etag"], objects[0].etag);
        assert_eq!(manifest["ledger"], "0000000000005f0c");
        assert!(manifest["attempt_prefix"]
            .as_str()
            .unwrap()
            .ends_with(&format!(
                "/ledger-0000000000005f0c/7/{}/",
                attempt_name(0xab)
            )));
    }

    /// A manifest asked for an attempt recorded before ledgers had ids (or before attempt
    /// directories were digests): written beside its objects, where that release's readers
    /// look.
    #[tokio::test]
    async fn a_manifest_of_an_attempt_from_an_older_layout_goes_beside_its_objects() {
        let world = tempfile::tempdir().unwrap();
        let results = format!("file://{}/results/", world.path().display());
        for attempt in [attempt_name(0xab), "attempt-00000000000000ab".to_string()] {
            let prefix = format!("{results}7/{attempt}/");
            let order = ManifestOrder {
                job: 7,
                lease: 0xab,
                outputs: Outputs {
                    from: "out".into(),
                    to: results.clone(),
                },
                objects: vec![OutputObject {
                    url: format!("{prefix}r.txt"),
                    size: 1,
                    etag: "e".into(),
                }],
                ledger: LedgerId(1),
            };
            publish_manifest(&Stores::default(), &order).await.unwrap();
            let manifest: serde_json::Value = serde_json::from_slice(
                &std::fs::read(world.path().join("results/7").join(MANIFEST)).unwrap(),
            )
            .unwrap();
            assert_eq!(manifest["attempt_prefix"], prefix.as_str());
            assert!(!world
                .path()
                .join("results/ledger-0000000000000001")
                .exists());
        }
    }

    #[tokio::test]
    async fn a_missing_input_names_its_url() {
        let world = tempfile::tempdir().unwrap();
        let inputs = vec![Input {
            from: "file:///nonexistent/drover-input".into(),
            to: "x".into(),
        }];
        let error = fetch_inputs(&Stores::default(), &inputs, world.path())
            .await
            .unwrap_err();
        assert!(
            error
                .message
                .starts_with("cannot fetch input file:///nonexistent/drover-input: "),
            "{error}"
        );
        assert!(error.missing, "no attempt would find it");

        // Present, but the scratch directory cannot take it: another attempt may pass.
        let source = world.path().join("there");
        std::fs::write(&source, "x").unwrap();
        let inputs = vec![Input {
            from: format!("file://{}", source.display()),
            to: "below-a-file/x".into(),
        }];
        std::fs::write(world.path().join("scratch"), "a file, not a directory").unwrap();
        let error = fetch_inputs(&Stores::default(), &inputs, &world.path().join("scratch"))
            .await
            .unwrap_err();
        assert!(!error.missing, "{error}");
    }
}
