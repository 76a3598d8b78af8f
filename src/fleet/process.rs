//! The `process` provider: each machine is a worker process on the coordinator's own machine,
//! running the pool's `command` with what makes it the pool's worker in its environment.
//!
//! The children are started, signalled and reaped by one thread of the provider's own (the
//! "host"), never on an actor's event loop: a fork of a large process takes time, and the
//! thread that starts a child is the one whose end the child hears of. Each child is asked to
//! drain (SIGTERM) when that thread ends, which is when the coordinator stops or dies, so no
//! worker outlives its coordinator by more than the jobs it finishes. Their output goes to the
//! coordinator's standard error.

use super::provider::{LaunchRequest, Machine, Provider, ProviderError, ProviderFuture};
use super::PoolConfig;
use crate::job::now_ms;
use crate::net::auth::Secret;
use std::collections::HashMap;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// How often the host looks for children that exited, and for those to kill.
const REAP_EVERY: Duration = Duration::from_millis(100);
/// How long a worker asked to stop (SIGTERM) has before it is killed (SIGKILL). The Fleet
/// stops only workers that run nothing, so this is time to say goodbye, not to finish jobs.
const TERMINATE_GRACE: Duration = Duration::from_secs(10);
/// Variables of the coordinator's own that its workers must not see: the jobs they run would.
const NOT_FOR_WORKERS: &[&str] = &[
    "DROVER_TOKEN",
    "DROVER_TOKEN_FILE",
    "DROVER_READ_TOKEN",
    "DROVER_READ_TOKEN_FILE",
    "DROVER_WORKER_TOKEN",
    "DROVER_WORKER_TOKEN_FILE",
    "DROVER_LABELS",
];

/// Worker processes for one pool.
pub struct ProcessProvider {
    command: Vec<String>,
    secret: Option<Secret>,
    /// Drawn per provider, so machine ids (and worker names) of a coordinator started again
    /// differ from those of the workers its predecessor left draining.
    run: String,
    next: AtomicU64,
    host: mpsc::Sender<Request>,
}

enum Request {
    Launch {
        children: Vec<(String, Command)>,
        reply: oneshot::Sender<Result<Vec<Machine>, ProviderError>>,
    },
    Terminate {
        machines: Vec<String>,
        reply: oneshot::Sender<Result<(), ProviderError>>,
    },
    List {
        reply: oneshot::Sender<Result<Vec<Machine>, ProviderError>>,
    },
}

impl ProcessProvider {
    /// A provider of `pool`'s workers, each running `command` and given `secret` (the
    /// coordinator's worker secret) to join.
    pub fn new(pool: &PoolConfig, command: Vec<String>, secret: Option<Secret>) -> Self {
        let (host, requests) = mpsc::channel();
        let name = pool.name.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("pool-{name}"))
            .spawn(move || Host::new(name).run(requests));
        if let Err(error) = spawned {
            // Without its thread every request is answered with this error (its channel is
            // closed), which the Fleet shows on the pool.
            tracing::error!(pool = %pool.name, %error, "cannot start the thread of a process pool");
        }
        ProcessProvider {
            command,
            secret,
            run: format!("{:06x}", rand::random::<u32>() & 0xff_ffff),
            next: AtomicU64::new(1),
            host,
        }
    }

    /// The command for one worker of the pool, as machine `id`.
    fn command(
        &self,
        program: &str,
        args: &[String],
        request: &LaunchRequest,
        id: &str,
    ) -> Command {
        let pool = &request.pool;
        let mut command = Command::new(program);
        command.args(args);
        for variable in NOT_FOR_WORKERS {
            command.env_remove(variable);
        }
        command
            .env("DROVER_COORDINATOR", &request.coordinator)
            .env("DROVER_WORKER_NAME", id)
            .env("DROVER_POOL", &pool.name)
            .env("DROVER_MACHINE_ID", id)
            .env("DROVER_SLOTS", pool.slots.to_string());
        if !pool.labels.is_empty() {
            command.env("DROVER_LABELS", pool.labels.join(","));
        }
        if let Some(secret) = &self.secret {
            command.env(
                "DROVER_WORKER_TOKEN",
                std::ffi::OsStr::from_bytes(secret.as_bytes()),
            );
        }
        // Its output joins the coordinator's log; nothing reads its input.
        let stdout = std::io::stderr()
            .as_fd()
            .try_clone_to_owned()
            .map_or_else(|_| Stdio::null(), Stdio::from);
        command
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(Stdio::inherit());
        let parent = std::process::id();
        // SAFETY: the closure runs in the child between fork and exec and calls only prctl(2),
        // getppid(2) and raise(3), which are async-signal-safe.
        unsafe {
            command.pre_exec(move || {
                // Asked to drain when the thread that started it ends (the coordinator is gone);
                // if that happened already, at once.
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                if libc::getppid() as u32 != parent {
                    libc::raise(libc::SIGTERM);
                }
                Ok(())
            });
        }
        command
    }

    fn ask<T: Send + 'static>(
        &self,
        request: impl FnOnce(oneshot::Sender<Result<T, ProviderError>>) -> Request,
    ) -> ProviderFuture<T> {
        let (reply, answer) = oneshot::channel();
        let sent = self.host.send(request(reply));
        Box::pin(async move {
            if sent.is_err() {
                return Err(ProviderError::new(
                    "the process pool's thread is not running",
                ));
            }
            answer
                .await
                .unwrap_or_else(|_| Err(ProviderError::new("the process pool's thread stopped")))
        })
    }
}

impl Provider for ProcessProvider {
    fn launch(&self, request: LaunchRequest) -> ProviderFuture<Vec<Machine>> {
        let Some((program, args)) = self.command.split_first() else {
            return Box::pin(async { Err(ProviderError::new("the pool's command is empty")) });
        };
        let children = (0..request.count)
            .map(|_| {
                let n = self.next.fetch_add(1, Ordering::Relaxed);
                let id = format!("{}-{}-{n}", request.pool.name, self.run);
                let command = self.command(program, args, &request, &id);
                (id, command)
            })
            .collect();
        self.ask(|reply| Request::Launch { children, reply })
    }

    fn terminate(&self, _pool: &str, machines: Vec<String>) -> ProviderFuture<()> {
        self.ask(|reply| Request::Terminate { machines, reply })
    }

    fn list(&self, _cluster: &str, _pool: &str) -> ProviderFuture<Vec<Machine>> {
        // Only this coordinator's children: those of a predecessor were asked to drain when it
        // ended, and any still finishing a job register and count in the pool all the same.
        self.ask(|reply| Request::List { reply })
    }
}

/// A worker process.
struct Alive {
    child: Child,
    launched_at_ms: u64,
    /// When it was asked to stop (it is killed after [`TERMINATE_GRACE`]).
    stopping_since: Option<Instant>,
}

/// The thread that starts, signals and reaps a pool's children.
struct Host {
    pool: String,
    children: HashMap<String, Alive>,
}

impl Host {
    fn new(pool: String) -> Self {
        Host {
            pool,
            children: HashMap::new(),
        }
    }

    fn run(mut self, requests: mpsc::Receiver<Request>) {
        loop {
            match requests.recv_timeout(REAP_EVERY) {
                Ok(request) => self.handle(request),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                // The coordinator is stopping: its workers drain and go.
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
            self.reap();
        }
        for alive in self.children.values() {
            signal(&alive.child, libc::SIGTERM);
        }
    }

    fn handle(&mut self, request: Request) {
        match request {
            Request::Launch { children, reply } => {
                let _ = reply.send(self.launch(children));
            }
            Request::Terminate { machines, reply } => {
                for id in machines {
                    // One already gone (drained and exited, or reaped) is not an error.
                    if let Some(alive) = self.children.get_mut(&id) {
                        if alive.stopping_since.is_none() {
                            signal(&alive.child, libc::SIGTERM);
                            alive.stopping_since = Some(Instant::now());
                        }
                    }
                }
                let _ = reply.send(Ok(()));
            }
            Request::List { reply } => {
                let machines = self
                    .children
                    .iter()
                    .filter(|(_, alive)| alive.stopping_since.is_none())
                    .map(|(id, alive)| Machine {
                        id: id.clone(),
                        launched_at_ms: alive.launched_at_ms,
                    })
                    .collect();
                let _ = reply.send(Ok(machines));
            }
        }
    }

    /// Starts the children; answers those that started, or why none did.
    fn launch(&mut self, children: Vec<(String, Command)>) -> Result<Vec<Machine>, ProviderError> {
        let mut started = Vec::new();
        let mut failure = None;
        for (id, mut command) in children {
            match command.spawn() {
                Ok(child) => {
                    let launched_at_ms = now_ms();
                    tracing::info!(pool = %self.pool, machine = %id, pid = child.id(), "worker process started");
                    started.push(Machine {
                        id: id.clone(),
                        launched_at_ms,
                    });
                    self.children.insert(
                        id,
                        Alive {
                            child,
                            launched_at_ms,
                            stopping_since: None,
                        },
                    );
                }
                Err(error) => {
                    let program = command.get_program().to_string_lossy().into_owned();
                    failure = Some(format!("cannot start {program:?}: {error}"));
                    break;
                }
            }
        }
        match failure {
            Some(message) if started.is_empty() => Err(ProviderError::new(message)),
            Some(message) => {
                tracing::warn!(pool = %self.pool, error = %message, started = started.len(), "fewer worker processes started than asked");
                Ok(started)
            }
            None => Ok(started),
        }
    }

    /// Collects the children that exited, and kills those that outstayed their grace.
    fn reap(&mut self) {
        let pool = &self.pool;
        self.children.retain(|id, alive| match alive.child.try_wait() {
            Ok(Some(status)) => {
                if status.success() || alive.stopping_since.is_some() {
                    tracing::info!(pool = %pool, machine = %id, %status, "worker process exited");
                } else {
                    tracing::warn!(pool = %pool, machine = %id, %status, "worker process exited unasked");
                }
                false
            }
            Ok(None) => {
                if alive
                    .stopping_since
                    .is_some_and(|since| since.elapsed() > TERMINATE_GRACE)
                {
                    tracing::warn!(pool = %pool, machine = %id, "worker process did not stop within {TERMINATE_GRACE:?} of SIGTERM; killing it");
                    let _ = alive.child.kill();
                }
                true
            }
            Err(error) => {
                tracing::warn!(pool = %pool, machine = %id, %error, "cannot wait for a worker process");
                true
            }
        });
    }
}

/// Sends `signal` to a child not yet reaped (so its pid is still its own).
fn signal(child: &Child, signal: i32) {
    let Ok(pid) = i32::try_from(child.id()) else {
        return;
    };
    // SAFETY: kill(2) on our own child, which has not been waited for, so the pid is not reused.
    unsafe {
        libc::kill(pid, signal);
    }
}
