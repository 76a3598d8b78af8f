//! Keeping this machine's CPUs from halting while jobs move (`--keep-cpus-awake`).
//!
//! One call's round trip hands work from thread to thread six times: client, coordinator,
//! worker, coordinator, ledger writer, coordinator, client. A CPU with nothing to run halts,
//! and on a virtual machine waking a halted CPU goes through the hypervisor: tens of
//! microseconds at each hand-off, more than the coordinator's own work for the call. With this
//! on, the coordinator runs one spinning thread per CPU for a short window after each message
//! it receives. The spinners run at the lowest priority there is (`SCHED_IDLE`), so any other
//! thread that wakes takes their CPU at once, and the CPU is never halted when it does.
//!
//! It is off by default: while jobs move, every CPU of the machine is busy. The spinners park
//! once no message has come for the window, so an idle coordinator uses no CPU.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::thread::Thread;
use std::time::{Duration, Instant};

/// The process's spinners, once [`start`]ed. Process-wide because what it keeps awake is the
/// machine's CPUs, and because the places that [`poke`] it (every received message) should
/// not each carry a handle.
static KEEPER: OnceLock<Keeper> = OnceLock::new();

/// The spinners, and when they were last told of a message.
struct Keeper {
    /// The spinners keep going this long after the last poke.
    window: Duration,
    /// What [`Keeper::last_poke`] counts from.
    epoch: Instant,
    /// Nanoseconds from `epoch` to the last poke.
    last_poke: AtomicU64,
    /// Set by a spinner before it parks; the next poke unparks them all.
    parked: AtomicBool,
    /// One per CPU, for unparking.
    spinners: OnceLock<Vec<Thread>>,
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
    /// A spinner could not be placed on its CPU or given the lowest priority.
    #[error("cannot start a spinner: {0}")]
    Spinner(#[from] std::io::Error),
}

/// Starts one spinner per CPU this process may run on, each for `window` after every
/// [`poke`]. Answers how many.
pub fn start(window: Duration) -> Result<usize, KeepAwakeError> {
    if window.is_zero() {
        return Err(KeepAwakeError::ZeroWindow);
    }
    let cpus = sched::allowed_cpus()?;
    let keeper = Keeper {
        window,
        epoch: Instant::now(),
        last_poke: AtomicU64::new(0),
        parked: AtomicBool::new(false),
        spinners: OnceLock::new(),
    };
    KEEPER.set(keeper).map_err(|_| KeepAwakeError::Started)?;
    let keeper = KEEPER.get().expect("set just above");
    let mut spinners = Vec::with_capacity(cpus.len());
    for cpu in cpus {
        // Each spinner says whether it could take its place and priority before it spins: a
        // spinner at normal priority would take CPU from real work.
        let (placed_tx, placed_rx) = std::sync::mpsc::channel();
        let spinner = std::thread::Builder::new()
            .name(format!("drover-awake-{cpu}"))
            .spawn(move || match sched::lowest_priority_on(cpu) {
                Ok(()) => {
                    let _ = placed_tx.send(Ok(()));
                    keeper.spin();
                }
                Err(error) => {
                    let _ = placed_tx.send(Err(error));
                }
            })?;
        placed_rx
            .recv()
            .unwrap_or_else(|_| Err(std::io::Error::other("the spinner exited")))?;
        spinners.push(spinner.thread().clone());
    }
    let count = spinners.len();
    let _ = keeper.spinners.set(spinners);
    Ok(count)
}

/// Tells the spinners, if started, that a message came: they keep their CPUs awake for the
/// window from now. Cheap enough for every message: a clock read and two atomics.
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
        // Sequentially consistent with the spinner's `parked` then `last_poke`: either the
        // spinner sees this poke before it parks, or this sees it parked and unparks it.
        self.last_poke.store(self.now(), Ordering::SeqCst);
        if self.parked.load(Ordering::SeqCst) && self.parked.swap(false, Ordering::SeqCst) {
            for spinner in self.spinners.get().into_iter().flatten() {
                spinner.unpark();
            }
        }
    }

    /// Whether the last poke is less than the window ago.
    fn recent(&self) -> bool {
        let since = self
            .now()
            .saturating_sub(self.last_poke.load(Ordering::SeqCst));
        since < self.window.as_nanos() as u64
    }

    fn spin(&self) -> ! {
        loop {
            while self.recent() {
                // A few hundred cycles between clock reads.
                for _ in 0..64 {
                    std::hint::spin_loop();
                }
            }
            self.parked.store(true, Ordering::SeqCst);
            if !self.recent() {
                std::thread::park();
            }
        }
    }
}

#[cfg(target_os = "linux")]
mod sched {
    use std::io;

    /// The CPUs this process may run on.
    pub fn allowed_cpus() -> io::Result<Vec<usize>> {
        // SAFETY: a zeroed cpu_set_t is an empty set, and the call writes at most its size.
        let set = unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
                return Err(io::Error::last_os_error());
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
    /// any process may take for itself.
    pub fn lowest_priority_on(cpu: usize) -> io::Result<()> {
        // SAFETY: the set is a valid cpu_set_t, and pid 0 is the calling thread.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                return Err(io::Error::last_os_error());
            }
            let lowest = libc::sched_param { sched_priority: 0 };
            if libc::sched_setscheduler(0, libc::SCHED_IDLE, &lowest) != 0 {
                return Err(io::Error::last_os_error());
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

    pub fn lowest_priority_on(_cpu: usize) -> std::io::Result<()> {
        Err(std::io::Error::other("SCHED_IDLE is Linux's"))
    }
}
