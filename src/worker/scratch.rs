//! Where a worker's attempts get their directories. Workers of one user on a machine share the
//! scratch directory (by default `$TMPDIR/drover-scratch-<uid>`), so each worker process keeps
//! its attempts under a directory of its own, `attempts/<instance>/`, and holds
//! `attempts/<instance>.lock` locked (`flock`) while it lives: the kernel lets go of the lock
//! however the process dies. A worker that stops removes its own; one that starts removes what
//! workers that died left (an attempt cut off by a kill leaves its directory behind), once their
//! lock can be taken. So nothing piles up, however workers come and go.

use std::fs::File;
use std::path::{Path, PathBuf};

/// Under the scratch directory, where the workers' attempt directories are.
pub const ATTEMPTS_DIR: &str = "attempts";

/// This worker's place in a scratch directory, held for its life.
#[derive(Debug)]
pub struct Scratch {
    dir: PathBuf,
    lock_path: PathBuf,
    /// Held locked for the life of the worker; never read.
    _lock: File,
}

impl Scratch {
    /// Takes a place of this worker's own under `root`, and removes the places of workers that
    /// are gone; returns it and how many it removed. Blocking: call it where file I/O may wait.
    pub fn open(root: &Path) -> std::io::Result<(Scratch, usize)> {
        let attempts = root.join(ATTEMPTS_DIR);
        std::fs::create_dir_all(&attempts)?;
        let instance = format!("{:016x}", rand::random::<u64>());
        let lock_path = attempts.join(format!("{instance}.lock"));
        let lock = File::create(&lock_path)?;
        lock.try_lock().map_err(std::io::Error::other)?;
        let dir = attempts.join(&instance);
        std::fs::create_dir_all(&dir)?;
        let removed = remove_gone(&attempts, &instance);
        Ok((
            Scratch {
                dir,
                lock_path,
                _lock: lock,
            },
            removed,
        ))
    }

    /// [`Scratch::open`] off the event loop, saying what it removed.
    pub async fn take(root: &Path) -> std::io::Result<Scratch> {
        let root = root.to_path_buf();
        let (scratch, removed) = tokio::task::spawn_blocking(move || Scratch::open(&root))
            .await
            .map_err(std::io::Error::other)??;
        if removed > 0 {
            tracing::info!(
                workers = removed,
                "removed the scratch directories of workers that died"
            );
        }
        Ok(scratch)
    }

    /// Where this worker's attempts make their directories.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Scratch {
    /// A worker that stops leaves nothing: its attempts have ended (their directories are gone
    /// with them, or, for one cut off, go now), and its lock goes last.
    fn drop(&mut self) {
        if let Err(error) = std::fs::remove_dir_all(&self.dir) {
            if error.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(scratch = %self.dir.display(), %error, "cannot remove this worker's scratch directory");
            }
        }
        let _ = std::fs::remove_file(&self.lock_path);
    }
}

/// Removes the places of workers that are gone: a lock that can be taken, with its directory,
/// and a directory whose lock is missing (its worker died between making the two, or someone
/// removed it). Returns how many places it removed.
fn remove_gone(attempts: &Path, own: &str) -> usize {
    let Ok(listing) = std::fs::read_dir(attempts) else {
        return 0;
    };
    let mut removed = 0;
    for entry in listing.flatten() {
        let path = entry.path();
        let Some(name) = path.file_name().and_then(|name| name.to_str()) else {
            continue;
        };
        let instance = name.strip_suffix(".lock").unwrap_or(name);
        if instance == own
            || instance.len() != 16
            || !instance.bytes().all(|b| b.is_ascii_hexdigit())
        {
            continue;
        }
        let lock_path = attempts.join(format!("{instance}.lock"));
        if name.ends_with(".lock") {
            let Ok(lock) = File::open(&lock_path) else {
                continue;
            };
            // Held by a living worker: its attempts are its own business.
            if lock.try_lock().is_err() {
                continue;
            }
            let _ = std::fs::remove_dir_all(attempts.join(instance));
            let _ = std::fs::remove_file(&lock_path);
            removed += 1;
        } else if !lock_path.exists() && std::fs::remove_dir_all(&path).is_ok() {
            // Made after its lock: a living worker's directory always has one beside it.
            removed += 1;
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_leaves_nothing_and_clears_what_dead_ones_left() {
        let root = tempfile::tempdir().unwrap();
        let (alive, _) = Scratch::open(root.path()).unwrap();
        std::fs::create_dir(alive.dir().join("job-1-attempt-1-a")).unwrap();
        // A worker that died mid-attempt: its lock, not held, and an attempt's directory.
        let attempts = root.path().join(ATTEMPTS_DIR);
        let dead = attempts.join("00000000000000aa");
        std::fs::create_dir_all(dead.join("job-2-attempt-1-b")).unwrap();
        std::fs::write(dead.join("job-2-attempt-1-b").join("half-written"), b"x").unwrap();
        std::fs::write(attempts.join("00000000000000aa.lock"), b"").unwrap();

        let (starting, removed) = Scratch::open(root.path()).unwrap();
        assert_eq!(removed, 1, "the dead worker's place, not the living one's");
        assert!(!dead.exists());
        assert!(alive.dir().join("job-1-attempt-1-a").exists());

        drop(alive);
        drop(starting);
        let left: Vec<_> = std::fs::read_dir(&attempts).unwrap().flatten().collect();
        assert!(left.is_empty(), "{left:?}");
    }
}
