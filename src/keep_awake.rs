//! Keeping this machine's CPUs from halting while jobs move (`--keep-cpus-awake`).
//!
//! One call's round trip hands work from thread to thread six times: client, coordinator,
//! worker, coordinator, ledger writer, coordinator, client. A CPU with nothing to run halts,
//! and on a virtual machine waking a halted CPU goes through the hypervisor: tens of
//! microseconds at each hand-off, more than the coordinator's own work for the call. With this
//! on, the coordinator runs one spinning thread per CPU it may run on, for a short window after
//! each message from an authenticated worker or client (heartbeats aside). The spinners run at
//! the lowest priority there is (`SCHED_IDLE`), so any other thread of the same control group
//! that wakes takes their CPU at once, and the CPU is never halted when it does.
//!
//! It is off by default: while jobs move, every one of those CPUs is busy. The spinners park
//! once no message has come for the window, so an idle coordinator uses no CPU. Under a CPU
//! quota (a container's limit), their time counts against it: there, leave it off.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

/// The process's spinners, once [`start`]ed. Process-wide because what it keeps awake is the
/// machine's CPUs, and because the places that [`poke`] it (every received message) should
/// not each carry a handle.
static KEEPER: OnceLock<Arc<Keeper>> = OnceLock::new();

/// The spinners, and when they were last told of a message.
struct Keeper {
    /// The spinners keep going this long (in nanoseconds) after the last poke.
    window_ns: u64,
    /// What [`Keeper::last_poke`] counts from.
    epoch: Instant,
    /// Nanoseconds from `epoch` to the last poke.
    last_poke: AtomicU64,
    /// Spinner `i` has parked, or is about to.
    parked: Vec<AtomicBool>,
    /// The spinners, by the same index, for unparking.
    threads: OnceLock<Vec<Thread>>,
}

/// Why the CPUs cannot be kept awake.
#[derive(Debug, thiserror::Error)]
pub enum KeepAwakeError {
    /// Only Linux has `SCHED_IDLE`; elsewhere a spinner would compete with real work.
    #[error("--keep-cpus-awake needs Linux (its spinners run at SCHED_IDLE priority)")]
    Unsupported,
    /// The window is zero.
    #[error("--keep-cpus-awake needs a window longer than zero, such as 2ms")]
    ZeroWindow,
    /// It was started already in this process.
    #[error("the CPUs are kept awake already")]
    Started,
    /// Which CPUs this process may run on could not be read.
    #[error("--keep-cpus-awake: cannot read which CPUs this process may run on: {0}")]
    AllowedCpus(std::io::Error),
    /// A spinner could not be started, placed on its CPU or given the lowest priority.
    #[error("--keep-cpus-awake: cannot {step} the spinner of CPU {cpu}: {source}")]
    Spinner {
        /// The CPU.
        cpu: usize,
        /// What failed: "start", "pin", or "lower the priority of".
        step: &'static str,
        /// Why.
        source: std::io::Error,
    },
}

/// Starts one spinner per CPU this process may run on (its affinity when it starts), each for
/// `window` after every [`poke`]. Answers how many. A failure leaves the spinners started so
/// far parked for good: the caller is expected to stop.
pub fn start(window: Duration) -> Result<usize, KeepAwakeError> {
    if window.is_zero() {
        return Err(KeepAwakeError::ZeroWindow);
    }
    if KEEPER.get().is_some() {
        return Err(KeepAwakeError::Started);
    }
    let cpus = sched::allowed_cpus()?;
    let keeper = Arc::new(Keeper {
        window_ns: u64::try_from(window.as_nanos()).unwrap_or(u64::MAX),
        epoch: Instant::now(),
        last_poke: AtomicU64::new(0),
        parked: cpus.iter().map(|_| AtomicBool::new(false)).collect(),
        threads: OnceLock::new(),
    });
    let mut threads = Vec::with_capacity(cpus.len());
    for (index, &cpu) in cpus.iter().enumerate() {
        // Each spinner says whether it could take its place and priority before it spins: a
        // spinner at normal priority would take CPU from real work.
        let (placed_tx, placed_rx) = std::sync::mpsc::channel();
        let spinner = Arc::clone(&keeper);
        let thread = std::thread::Builder::new()
            .name(format!("drover-awake-{cpu}"))
            .spawn(move || match sched::lowest_priority_on(cpu) {
                Ok(()) => {
                    let _ = placed_tx.send(Ok(()));
                    spinner.spin(index);
                }
                Err(failed) => {
                    let _ = placed_tx.send(Err(failed));
                }
            })
            .map_err(|source| KeepAwakeError::Spinner {
                cpu,
                step: "start",
                source,
            })?;
        let placed = placed_rx
            .recv()
            .unwrap_or_else(|_| Err(("start", std::io::Error::other("it exited"))));
        if let Err((step, source)) = placed {
            return Err(KeepAwakeError::Spinner { cpu, step, source });
        }
        threads.push(thread.thread().clone());
    }
    let count = threads.len();
    // Every spinner is known before the first poke can reach one.
    let _ = keeper.threads.set(threads);
    KEEPER.set(keeper).map_err(|_| KeepAwakeError::Started)?;
    Ok(count)
}

/// Tells the spinners, if started, that a message came: they keep their CPUs awake for the
/// window from now. Cheap enough for every message: a clock read and an atomic load per CPU,
/// and after a quiet spell an unpark per CPU.
pub fn poke() {
    if let Some(keeper) = KEEPER.get() {
        keeper.poke();
    }
}

impl Keeper {
    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn poke(&self) {
        // Sequentially consistent with a spinner's `parked` store then `last_poke` load: either
        // the spinner sees this poke before it parks, or this sees it parked.
        self.last_poke.fetch_max(self.now(), Ordering::SeqCst);
        for index in 0..self.parked.len() {
            self.wake(index);
        }
    }

    /// Unparks spinner `index` if it is parked.
    fn wake(&self, index: usize) {
        // A load first: while jobs move no spinner is parked, and the flags stay shared.
        if self.parked[index].load(Ordering::SeqCst)
            && self.parked[index].swap(false, Ordering::SeqCst)
        {
            if let Some(thread) = self.threads.get().and_then(|threads| threads.get(index)) {
                thread.unpark();
            }
        }
    }

    /// Whether the last poke is less than the window ago.
    fn recent(&self) -> bool {
        let since = self
            .now()
            .saturating_sub(self.last_poke.load(Ordering::SeqCst));
        since < self.window_ns
    }

    fn spin(&self, index: usize) -> ! {
        loop {
            while self.recent() {
                for _ in 0..64 {
                    std::hint::spin_loop();
                }
            }
            self.parked[index].store(true, Ordering::SeqCst);
            if self.recent() {
                self.parked[index].store(false, Ordering::SeqCst);
                continue;
            }
            std::thread::park();
            // Woken by a poke, or spuriously: either way, spinning again until it parks anew.
            self.parked[index].store(false, Ordering::SeqCst);
        }
    }
}

#[cfg(target_os = "linux")]
mod sched {
    use super::KeepAwakeError;
    use std::io;

    /// The CPUs this process may run on.
    pub fn allowed_cpus() -> Result<Vec<usize>, KeepAwakeError> {
        // SAFETY: a zeroed cpu_set_t is an empty set, and the call writes at most its size.
        let set = unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
                return Err(KeepAwakeError::AllowedCpus(io::Error::last_os_error()));
            }
            set
        };
        let cpus = (0..libc::CPU_SETSIZE as usize)
            // SAFETY: the index is below CPU_SETSIZE, the set's size.
            .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
            .collect();
        Ok(cpus)
    }

    /// Pins the calling thread to `cpu` and gives it the lowest priority (`SCHED_IDLE`), which
    /// any process may take for itself; on failure, which of the two failed.
    pub fn lowest_priority_on(cpu: usize) -> Result<(), (&'static str, io::Error)> {
        // SAFETY: the set is a valid cpu_set_t, and pid 0 is the calling thread.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                return Err(("pin", io::Error::last_os_error()));
            }
            let lowest = libc::sched_param { sched_priority: 0 };
            if libc::sched_setscheduler(0, libc::SCHED_IDLE, &lowest) != 0 {
                return Err(("lower the priority of", io::Error::last_os_error()));
            }
        }
        Ok(())
    }
}

#[cfg(not(target_os = "linux"))]
mod sched {
    use super::KeepAwakeError;

    pub fn allowed_cpus() -> Result<Vec<usize>, KeepAwakeError> {
        Err(KeepAwakeError::Unsupported)
    }

    pub fn lowest_priority_on(_cpu: usize) -> Result<(), (&'static str, std::io::Error)> {
        Err((
            "lower the priority of",
            std::io::Error::other("SCHED_IDLE is Linux's"),
        ))
    }
}
