//! The open-files limit: raised as far as the process may, since every connection holds a
//! descriptor, and how many connections it leaves room for.

use std::sync::OnceLock;

/// Descriptors kept out of the connection limit for what else a coordinator opens: the ledger
/// (SQLite's database and journal files, or PostgreSQL connections), logs, HTTP clients, S3
/// connections and the runtime's own (epoll, event descriptors).
pub const RESERVED: u64 = 256;

/// How far the hard limit is raised when the process may (as root, or with
/// `CAP_SYS_RESOURCE`), if the kernel allows that many (`/proc/sys/fs/nr_open`): systemd's own
/// default hard limit, enough for hundreds of thousands of connections. A descriptor costs
/// nothing until it is opened, so a high limit holds no memory of itself.
pub const HARD_CEILING: u64 = 524_288;

/// The limits (soft, hard) this process had before it first raised them: what the programs it
/// starts are given back (see [`give_back`]).
static STARTED_WITH: OnceLock<(u64, u64)> = OnceLock::new();

/// The open-files limit of this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFiles {
    /// The limit in force (the soft one): the most descriptors the process may hold.
    pub limit: u64,
    /// The hard limit: how far the soft one may be raised without privilege.
    pub hard: u64,
    /// The limit in force before [`raise_open_files_limit`] raised it.
    pub was: u64,
}

impl OpenFiles {
    /// The limit in force now, as it is.
    pub fn now() -> OpenFiles {
        let (soft, hard) = get().unwrap_or((u64::MAX, u64::MAX));
        OpenFiles {
            limit: soft,
            hard,
            was: soft,
        }
    }

    /// How many connections this limit leaves room for: see [`connections_within`].
    pub fn connections(&self) -> usize {
        connections_within(self.limit)
    }
}

/// How many connections a limit of `open_files` descriptors leaves room for: all but
/// [`RESERVED`] of them (a quarter, for a limit under 1024).
pub fn connections_within(open_files: u64) -> usize {
    let room = open_files - RESERVED.min(open_files / 4);
    usize::try_from(room).unwrap_or(usize::MAX)
}

/// Raises this process's open-files limit as far as it may: the hard limit toward
/// [`HARD_CEILING`] (within the kernel's `nr_open`) when the process is allowed to, and the soft
/// limit to the hard one. A coordinator with thousands of workers, or a process holding many
/// worker connections, needs a descriptor for each. Never lowers either limit.
pub fn raise_open_files_limit() -> OpenFiles {
    let Some((soft, hard)) = get() else {
        return OpenFiles::now();
    };
    STARTED_WITH.get_or_init(|| (soft, hard));
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|text| text.trim().parse::<u64>().ok());
    for (new_soft, new_hard) in wanted(soft, hard, nr_open) {
        if set(new_soft, new_hard) {
            break;
        }
    }
    let (limit, hard) = get().unwrap_or((soft, hard));
    OpenFiles {
        limit,
        hard,
        was: soft,
    }
}

/// The limits this process had before it raised them, if it did: for [`give_back`].
pub fn started_with() -> Option<(u64, u64)> {
    STARTED_WITH.get().copied()
}

/// Sets the open-files limits `(soft, hard)` of [`started_with`], in a child between fork and
/// exec: a job gets the limit its worker was started with, since programs that walk every
/// descriptor up to the limit (closing them all before an exec, `select`) slow down or fail
/// under a raised one. Calls only setrlimit(2), which is async-signal-safe; a refusal leaves
/// the child with the raised limit, which it may run with all the same.
pub fn give_back((soft, hard): (u64, u64)) {
    let limit = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: setrlimit only reads the struct passed by pointer.
    unsafe {
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
    }
}

/// The limits to try setting, in order, until one is allowed: a higher hard limit (allowed
/// only with privilege), then the soft limit at the hard one.
fn wanted(soft: u64, hard: u64, nr_open: Option<u64>) -> Vec<(u64, u64)> {
    let mut tries = Vec::new();
    if let Some(nr_open) = nr_open {
        let ceiling = HARD_CEILING.min(nr_open);
        if hard < ceiling {
            tries.push((ceiling, ceiling));
        }
    }
    if soft < hard {
        tries.push((hard, hard));
    }
    tries
}

/// The soft and hard limits, or None if they cannot be read.
fn get() -> Option<(u64, u64)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct passed by pointer.
    let read = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    read.then_some((limit.rlim_cur, limit.rlim_max))
}

/// Sets both limits; false if the kernel refused.
fn set(soft: u64, hard: u64) -> bool {
    let limit = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: setrlimit only reads the struct passed by pointer.
    let set = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } == 0;
    if !set {
        tracing::debug!(
            soft,
            hard,
            error = %std::io::Error::last_os_error(),
            "cannot set the open-files limit"
        );
    }
    set
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_the_limit_less_a_reserve() {
        assert_eq!(connections_within(20_000), 19_744);
        assert_eq!(connections_within(HARD_CEILING), 524_032);
        // A fleet of 10,000 fits within systemd's default hard limit, not within 4096.
        assert!(connections_within(HARD_CEILING) > 10_000);
        assert!(connections_within(4096) < 10_000);
        // Small limits keep a quarter, not more than they have.
        assert_eq!(connections_within(1024), 768);
        assert_eq!(connections_within(256), 192);
        assert_eq!(connections_within(0), 0);
    }

    #[test]
    fn the_hard_limit_is_raised_toward_the_ceiling_within_nr_open() {
        // Root under a low hard limit: the ceiling first, the hard limit if refused.
        assert_eq!(
            wanted(1024, 4096, Some(1_048_576)),
            vec![(HARD_CEILING, HARD_CEILING), (4096, 4096)]
        );
        // The kernel allows fewer than the ceiling: as many as it allows.
        assert_eq!(
            wanted(1024, 4096, Some(65_536)),
            vec![(65_536, 65_536), (4096, 4096)]
        );
        // Already high: only the soft limit moves, and nothing is lowered.
        assert_eq!(
            wanted(1024, 1_048_576, Some(1_048_576)),
            vec![(1_048_576, 1_048_576)]
        );
        assert_eq!(wanted(HARD_CEILING, HARD_CEILING, Some(1_048_576)), vec![]);
        // No nr_open to read (not Linux): soft to hard only.
        assert_eq!(wanted(1024, 4096, None), vec![(4096, 4096)]);
    }

    #[test]
    fn raising_never_lowers_the_limit() {
        let before = OpenFiles::now();
        let raised = raise_open_files_limit();
        assert!(raised.limit >= before.limit);
        assert!(raised.hard >= before.hard);
        assert_eq!(raised.limit, raised.hard);
        assert_eq!(raised.was, before.limit);
        assert_eq!(OpenFiles::now().limit, raised.limit);
        // What it started with is kept for the programs it starts.
        assert_eq!(started_with(), Some((before.limit, before.hard)));
    }
}
