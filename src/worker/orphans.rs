//! Nothing a job started outlives its worker.
//!
//! A job's process is its worker's child and dies with it (`PR_SET_PDEATHSIG`, set as the child
//! starts). What the job itself started in the background is reparented instead, so every
//! process of a job carries the worker's pid in `DROVER_WORKER_PID`, and a worker starting on a
//! machine kills the processes that carry the pid of a worker no longer running: what a worker
//! killed with SIGKILL left behind.

use std::path::Path;

/// The environment variable naming the worker process an exec job belongs to.
pub const WORKER_PID_VAR: &str = "DROVER_WORKER_PID";

/// Kills the processes left by workers that are gone; returns how many it killed.
pub fn sweep() -> usize {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let me = std::process::id();
    let mut killed = 0;
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<u32>().ok())
        else {
            continue;
        };
        // Another user's processes, or ones already gone, cannot be read: not ours to judge.
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        let Some(worker) = worker_of(&environ) else {
            continue;
        };
        if worker == me || running(worker) {
            continue;
        }
        // SAFETY: kill(2) on a process that carries the pid of a worker that is gone; no
        // memory is involved.
        if unsafe { libc::kill(pid as i32, libc::SIGKILL) } == 0 {
            tracing::warn!(
                pid,
                worker_pid = worker,
                "killed a process left running by a worker that died"
            );
            killed += 1;
        }
    }
    killed
}

/// The worker pid a process's environment names, if it names one.
fn worker_of(environ: &[u8]) -> Option<u32> {
    let prefix = format!("{WORKER_PID_VAR}=");
    environ
        .split(|byte| *byte == 0)
        .find_map(|variable| variable.strip_prefix(prefix.as_bytes()))
        .and_then(|value| std::str::from_utf8(value).ok())
        .and_then(|value| value.parse().ok())
}

/// True while the process runs (a zombie, waiting to be reaped, no longer does).
pub fn running(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("stat"))
    else {
        return false;
    };
    // The state follows the command name, which is in parentheses and may hold anything.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .is_some_and(|state| state != "Z" && state != "X")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worker_is_read_from_the_environment() {
        let environ = b"PATH=/bin\0DROVER_WORKER_PID=4242\0HOME=/root\0";
        assert_eq!(worker_of(environ), Some(4242));
        assert_eq!(worker_of(b"PATH=/bin\0"), None);
        assert_eq!(worker_of(b"DROVER_WORKER_PID=x\0"), None);
        assert!(running(std::process::id()));
        assert!(!running(u32::MAX));
    }
}
