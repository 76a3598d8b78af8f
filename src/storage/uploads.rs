//! The multipart uploads a worker has in flight, written down on its machine. An upload that is
//! never completed nor aborted is invisible in a listing, yet its parts stay stored (and
//! billed); one cut off inside a living worker (a timeout, a cancel) is aborted there and then,
//! and one cut off by the worker's death is aborted by the next worker started on the machine
//! with the same scratch directory, from what is written here.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// An upload in flight, as written down.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InFlightUpload {
    /// Its bucket.
    pub bucket: String,
    /// The key it will complete as.
    pub key: String,
    /// The id S3 gave it.
    pub upload_id: String,
}

/// A directory of uploads in flight, one file each, named for the worker process that started
/// the upload (`<pid>-<n>.json`), so a worker never touches a living worker's uploads.
#[derive(Debug, Clone)]
pub struct UploadJournal {
    dir: PathBuf,
}

/// Tells this process's entries apart.
static NEXT_ENTRY: AtomicU64 = AtomicU64::new(1);

impl UploadJournal {
    /// The journal in `dir` (made when the first upload is written down).
    pub fn new(dir: impl Into<PathBuf>) -> UploadJournal {
        UploadJournal { dir: dir.into() }
    }

    /// Where it is.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes an upload down and returns its entry. If it cannot be written, the upload goes on
    /// all the same (and is still aborted if it fails or is cut off), with a warning: only a
    /// kill would leave it behind.
    pub async fn record(&self, upload: &InFlightUpload) -> Option<PathBuf> {
        let name = format!(
            "{}-{}.json",
            std::process::id(),
            NEXT_ENTRY.fetch_add(1, Ordering::Relaxed)
        );
        let entry = self.dir.join(name);
        let partial = entry.with_extension("partial");
        let written = async {
            tokio::fs::create_dir_all(&self.dir).await?;
            let text = serde_json::to_vec(upload).map_err(std::io::Error::other)?;
            tokio::fs::write(&partial, text).await?;
            // Whole or absent: a worker killed while writing leaves only a `.partial`.
            tokio::fs::rename(&partial, &entry).await
        };
        match written.await {
            Ok(()) => Some(entry),
            Err(error) => {
                tracing::warn!(
                    journal = %self.dir.display(),
                    %error,
                    "cannot write down a multipart upload in flight; a worker killed during it would leave it behind"
                );
                let _ = tokio::fs::remove_file(&partial).await;
                None
            }
        }
    }

    /// Crosses an upload off: it was completed or aborted.
    pub async fn forget(entry: &Path) {
        if let Err(error) = tokio::fs::remove_file(entry).await {
            if error.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(entry = %entry.display(), %error, "cannot cross off a finished upload");
            }
        }
    }

    /// The entries of worker processes no longer running (as `running` tells by pid), with the
    /// upload each holds, or `None` for one that cannot be read (half written, or not ours).
    pub fn left_over(
        &self,
        running: impl Fn(u32) -> bool,
    ) -> Vec<(PathBuf, Option<InFlightUpload>)> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let me = std::process::id();
        let mut left = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            let Some(pid) = path
                .file_name()
                .and_then(|name| name.to_str())
                .and_then(|name| name.split_once('-'))
                .and_then(|(pid, _)| pid.parse::<u32>().ok())
            else {
                continue;
            };
            if pid == me || running(pid) {
                continue;
            }
            let upload = (path.extension().is_some_and(|ext| ext == "json"))
                .then(|| std::fs::read(&path).ok())
                .flatten()
                .and_then(|bytes| serde_json::from_slice(&bytes).ok());
            left.push((path, upload));
        }
        left.sort_by(|a, b| a.0.cmp(&b.0));
        left
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upload(key: &str) -> InFlightUpload {
        InFlightUpload {
            bucket: "b".into(),
            key: key.into(),
            upload_id: "id".into(),
        }
    }

    #[tokio::test]
    async fn only_uploads_of_processes_no_longer_running_are_left_over() {
        let dir = tempfile::tempdir().unwrap();
        let journal = UploadJournal::new(dir.path().join("uploads"));
        assert!(journal.left_over(|_| false).is_empty(), "no journal yet");
        let mine = journal.record(&upload("mine")).await.unwrap();
        // Entries of other processes: one dead with a whole entry, one dead mid-write, one alive.
        std::fs::write(
            journal.dir().join("4000001-1.json"),
            serde_json::to_vec(&upload("dead")).unwrap(),
        )
        .unwrap();
        std::fs::write(journal.dir().join("4000001-2.partial"), b"{\"buck").unwrap();
        std::fs::write(
            journal.dir().join("4000002-1.json"),
            serde_json::to_vec(&upload("alive")).unwrap(),
        )
        .unwrap();
        let left = journal.left_over(|pid| pid == 4_000_002);
        let found: Vec<(String, Option<String>)> = left
            .iter()
            .map(|(path, upload)| {
                (
                    path.file_name().unwrap().to_string_lossy().into_owned(),
                    upload.as_ref().map(|upload| upload.key.clone()),
                )
            })
            .collect();
        assert_eq!(
            found,
            vec![
                ("4000001-1.json".to_string(), Some("dead".to_string())),
                ("4000001-2.partial".to_string(), None),
            ]
        );
        UploadJournal::forget(&mine).await;
        assert!(!mine.exists());
    }
}
