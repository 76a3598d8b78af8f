//! The multipart uploads a worker has in flight, written down on its machine. An upload that is
//! never completed nor aborted is invisible in a listing, yet its parts stay stored (and
//! billed); one cut off inside a living worker (a timeout, a cancel) is aborted there and then,
//! and one cut off by the worker's death is aborted by the next worker started with the same
//! scratch directory, from what is written here.
//!
//! Each worker process writes under an instance id of its own (random, so a restarted
//! container's worker, which often has the same pid, never mistakes its predecessor's uploads
//! for its own), and holds `<instance>.lock` locked (`flock`) for as long as it lives: the
//! kernel lets go of the lock when the process dies, however it dies, so an instance whose lock
//! can be taken is gone, and only then are its uploads aborted.

use serde::{Deserialize, Serialize};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

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

/// This process's part of a journal directory: its instance id and the lock that says it lives.
#[derive(Debug)]
struct Instance {
    id: String,
    /// Held locked for the life of the process; never read.
    _lock: File,
    lock_path: PathBuf,
    next_entry: AtomicU64,
}

impl Drop for Instance {
    /// A worker that stops with nothing in flight leaves no lock behind. One with uploads still
    /// written down (an abort that failed) keeps it: the next worker finds them through it.
    fn drop(&mut self) {
        let Some(dir) = self.lock_path.parent() else {
            return;
        };
        let prefix = format!("{}-", self.id);
        let in_flight = std::fs::read_dir(dir).is_ok_and(|listing| {
            listing.flatten().any(|entry| {
                entry
                    .file_name()
                    .to_str()
                    .is_some_and(|name| name.starts_with(&prefix))
            })
        });
        if !in_flight {
            let _ = std::fs::remove_file(&self.lock_path);
        }
    }
}

/// A directory of uploads in flight, one file each (`<instance>-<n>.json`).
#[derive(Debug, Clone)]
pub struct UploadJournal {
    dir: PathBuf,
    instance: Arc<Instance>,
}

/// The uploads of a worker that is gone, found by [`UploadJournal::left_over`]; its lock is
/// held until this is dropped, so no other worker handles them at the same time.
#[derive(Debug)]
pub struct LeftOver {
    /// Its lock file.
    pub lock_path: PathBuf,
    /// Its entries, with the upload each holds, or `None` for one that cannot be read (half
    /// written).
    pub entries: Vec<(PathBuf, Option<InFlightUpload>)>,
    _lock: File,
}

impl UploadJournal {
    /// Opens the journal in `dir` (made if needed) for this process, under a new instance id.
    /// Blocking: call it where a little file I/O may wait.
    pub fn open(dir: impl Into<PathBuf>) -> std::io::Result<UploadJournal> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)?;
        let id = format!("{:016x}", rand::random::<u64>());
        let lock_path = dir.join(format!("{id}.lock"));
        let lock = File::create(&lock_path)?;
        lock.try_lock().map_err(std::io::Error::other)?;
        Ok(UploadJournal {
            dir,
            instance: Arc::new(Instance {
                id,
                _lock: lock,
                lock_path,
                next_entry: AtomicU64::new(1),
            }),
        })
    }

    /// Where it is.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes an upload down and returns its entry. If it cannot be written, the upload goes on
    /// all the same (and is still aborted if it fails or is cut off), with a warning: only a
    /// kill would leave it behind.
    pub async fn record(&self, upload: &InFlightUpload) -> Option<PathBuf> {
        let n = self.instance.next_entry.fetch_add(1, Ordering::Relaxed);
        let entry = self.dir.join(format!("{}-{n}.json", self.instance.id));
        let partial = entry.with_extension("partial");
        let written = async {
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

    /// The uploads of worker instances that are gone (their lock could be taken), each with
    /// that lock held. Blocking.
    pub fn left_over(&self) -> Vec<LeftOver> {
        let Ok(listing) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut locks = Vec::new();
        let mut entries: Vec<(String, PathBuf)> = Vec::new();
        for item in listing.flatten() {
            let path = item.path();
            let Some(name) = path.file_name().and_then(|name| name.to_str()) else {
                continue;
            };
            if let Some(instance) = name.strip_suffix(".lock") {
                if instance != self.instance.id {
                    locks.push((instance.to_string(), path));
                }
            } else if let Some((instance, _)) = name.split_once('-') {
                if instance != self.instance.id {
                    entries.push((instance.to_string(), path));
                }
            }
        }
        let mut gone = Vec::new();
        for (instance, lock_path) in locks {
            let Ok(lock) = File::open(&lock_path) else {
                continue;
            };
            // Held by a living worker: its uploads are its own business.
            if lock.try_lock().is_err() {
                continue;
            }
            let mut own: Vec<(PathBuf, Option<InFlightUpload>)> = entries
                .iter()
                .filter(|(of, _)| *of == instance)
                .map(|(_, path)| {
                    let upload = (path.extension().is_some_and(|ext| ext == "json"))
                        .then(|| std::fs::read(path).ok())
                        .flatten()
                        .and_then(|bytes| serde_json::from_slice(&bytes).ok());
                    (path.clone(), upload)
                })
                .collect();
            own.sort_by(|a, b| a.0.cmp(&b.0));
            gone.push(LeftOver {
                lock_path,
                entries: own,
                _lock: lock,
            });
        }
        gone
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

    fn keys(left: &LeftOver) -> Vec<Option<String>> {
        left.entries
            .iter()
            .map(|(_, upload)| upload.as_ref().map(|upload| upload.key.clone()))
            .collect()
    }

    #[tokio::test]
    async fn only_uploads_of_instances_that_are_gone_are_left_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("uploads");
        let mine = UploadJournal::open(&path).unwrap();
        let mine_entry = mine.record(&upload("mine")).await.unwrap();
        // Another worker, alive, with an upload in flight.
        let alive = UploadJournal::open(&path).unwrap();
        alive.record(&upload("alive")).await.unwrap();
        // One that died: a whole entry, and one it was writing when it died.
        std::fs::write(path.join("00000000000000aa.lock"), b"").unwrap();
        std::fs::write(
            path.join("00000000000000aa-1.json"),
            serde_json::to_vec(&upload("dead")).unwrap(),
        )
        .unwrap();
        std::fs::write(path.join("00000000000000aa-2.partial"), b"{\"buck").unwrap();

        let left = mine.left_over();
        assert_eq!(left.len(), 1, "{left:?}");
        assert_eq!(left[0].lock_path, path.join("00000000000000aa.lock"));
        assert_eq!(keys(&left[0]), vec![Some("dead".to_string()), None]);
        // While one worker handles them, another finds the instance locked.
        assert!(alive
            .left_over()
            .iter()
            .all(|other| other.lock_path != left[0].lock_path));
        drop(left);

        // A worker that is gone, even one of this process, is found once its lock is let go.
        drop(alive);
        let left = mine.left_over();
        let found: Vec<Vec<Option<String>>> = left.iter().map(keys).collect();
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(
            found.contains(&vec![Some("alive".to_string())]),
            "{found:?}"
        );
        UploadJournal::forget(&mine_entry).await;
        assert!(!mine_entry.exists());
    }

    #[tokio::test]
    async fn a_worker_that_stops_with_nothing_in_flight_leaves_no_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("uploads");
        let done = UploadJournal::open(&path).unwrap();
        let entry = done.record(&upload("finished")).await.unwrap();
        UploadJournal::forget(&entry).await;
        let stuck = UploadJournal::open(&path).unwrap();
        stuck.record(&upload("abort failed")).await.unwrap();
        drop(done);
        drop(stuck);
        let left: Vec<String> = std::fs::read_dir(&path)
            .unwrap()
            .flatten()
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .collect();
        // Only the worker with an upload still written down keeps its lock, for the next one.
        assert_eq!(left.len(), 2, "{left:?}");
        assert_eq!(
            left.iter().filter(|name| name.ends_with(".lock")).count(),
            1
        );
    }
}
