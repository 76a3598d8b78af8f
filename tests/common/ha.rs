//! Several coordinators on one ledger (PostgreSQL), as real processes: one leads, the others
//! stand by. Workers and the CLI are given the list of their addresses; the workers and the test
//! directory live in a [`Cluster`] whose `address` is that list (see [`Coordinators::cluster`]).

use super::{command_in, free_port, Cluster, CLI, COORDINATOR};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// The lease's time to live the HA tests run with: the default.
pub const LEASE_TTL: &str = "2s";

/// One coordinator process slot: where it listens and advertises itself, and its process.
pub struct Coordinator {
    /// What it advertises and peers dial (`host:port`).
    pub address: String,
    /// What it listens on.
    pub listen: String,
    /// Its HTTP address.
    pub http: String,
    /// The network namespace it runs in, if any.
    pub netns: Option<String>,
    child: Option<Child>,
    starts: usize,
}

/// The coordinators of one ledger, killed when dropped.
pub struct Coordinators {
    dir: PathBuf,
    /// The `--ledger` URL they share.
    pub ledger: String,
    /// Flags every coordinator gets besides the listen, HTTP, advertise and ledger ones.
    pub args: Vec<String>,
    /// Environment every coordinator gets (tokens).
    pub env: Vec<(String, String)>,
    pub members: Vec<Coordinator>,
}

impl Coordinators {
    /// `count` coordinators on loopback ports of their own, sharing `ledger`; their logs go to
    /// `dir` (not started yet).
    pub fn on_loopback(dir: &Path, ledger: &str, count: usize) -> Coordinators {
        let members = (0..count)
            .map(|_| {
                let address = format!("127.0.0.1:{}", free_port());
                Coordinator {
                    listen: address.clone(),
                    address,
                    http: format!("127.0.0.1:{}", free_port()),
                    netns: None,
                    child: None,
                    starts: 0,
                }
            })
            .collect();
        Coordinators::with_members(dir, ledger, members)
    }

    /// Coordinators placed by the caller (network hosts of their own, say).
    pub fn with_members(dir: &Path, ledger: &str, members: Vec<Coordinator>) -> Coordinators {
        Coordinators {
            dir: dir.to_path_buf(),
            ledger: ledger.to_string(),
            args: vec!["--lease-ttl".into(), LEASE_TTL.into()],
            env: Vec::new(),
            members,
        }
    }

    /// A coordinator slot on `listen`, advertised as `address`, in `netns` (not started).
    pub fn member(address: &str, listen: &str, http: &str, netns: Option<&str>) -> Coordinator {
        Coordinator {
            address: address.to_string(),
            listen: listen.to_string(),
            http: http.to_string(),
            netns: netns.map(str::to_string),
            child: None,
            starts: 0,
        }
    }

    /// The addresses, comma-separated, as workers and clients are given them.
    pub fn list(&self) -> String {
        let addresses: Vec<&str> = self.members.iter().map(|c| c.address.as_str()).collect();
        addresses.join(",")
    }

    /// A cluster for workers and the CLI that dial the list (its own coordinator is never
    /// started).
    pub fn cluster(&self) -> Cluster {
        let mut cluster = Cluster::new(&[]);
        cluster.address = self.list();
        cluster
    }

    fn log_path(&self, i: usize, start: usize) -> PathBuf {
        self.dir.join(format!("coordinator{i}-{start}.log"))
    }

    /// What coordinator `i` logged, over all its starts.
    pub fn log(&self, i: usize) -> String {
        (1..=self.members[i].starts)
            .map(|start| std::fs::read_to_string(self.log_path(i, start)).unwrap_or_default())
            .collect()
    }

    /// What they all logged, each log headed by its coordinator.
    pub fn logs(&self) -> String {
        (0..self.members.len())
            .map(|i| {
                format!(
                    "---- coordinator {i} ({})\n{}",
                    self.members[i].address,
                    self.log(i)
                )
            })
            .collect()
    }

    /// The last lines of every log: for a failing assertion.
    pub fn log_tails(&self, lines: usize) -> String {
        (0..self.members.len())
            .map(|i| {
                let log = self.log(i);
                let all: Vec<&str> = log.lines().collect();
                format!(
                    "---- coordinator {i} ({}), last {lines} lines\n{}\n",
                    self.members[i].address,
                    all[all.len().saturating_sub(lines)..].join("\n")
                )
            })
            .collect()
    }

    /// Starts coordinator `i` and waits until it listens (as leader or standby).
    pub async fn start(&mut self, i: usize) {
        assert!(
            self.members[i].child.is_none(),
            "coordinator {i} already running"
        );
        self.members[i].starts += 1;
        let log = std::fs::File::create(self.log_path(i, self.members[i].starts)).unwrap();
        let data_dir = self.dir.join(format!("coordinator{i}-data"));
        let member = &self.members[i];
        let child = command_in(member.netns.as_deref(), COORDINATOR)
            .args(["--listen", &member.listen, "--advertise", &member.address])
            .args(["--http", &member.http, "--ledger", &self.ledger])
            .arg("--data-dir")
            .arg(&data_dir)
            .args(&self.args)
            .env_remove("DROVER_TOKEN")
            .env_remove("DROVER_WORKER_TOKEN")
            .env_remove("DROVER_READ_TOKEN")
            .env_remove("DROVER_LEDGER")
            .envs(self.env.iter().cloned())
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.members[i].child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.members[i].child.as_mut().unwrap().try_wait().unwrap() {
                self.members[i].child = None;
                panic!(
                    "coordinator {i} exited on start ({status}):\n{}",
                    self.log(i)
                );
            }
            if self.listening(i) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "coordinator {i} did not listen within 30s:\n{}",
                self.log(i)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether coordinator `i`'s port takes connections (from the test's own namespace).
    fn listening(&self, i: usize) -> bool {
        std::net::TcpStream::connect_timeout(
            &self.members[i].address.parse().unwrap(),
            Duration::from_millis(200),
        )
        .is_ok()
    }

    pub fn pid(&self, i: usize) -> u32 {
        self.members[i]
            .child
            .as_ref()
            .expect("coordinator running")
            .id()
    }

    pub fn running(&mut self, i: usize) -> bool {
        match &mut self.members[i].child {
            Some(child) => child.try_wait().unwrap().is_none(),
            None => false,
        }
    }

    /// How coordinator `i` exited, if it has exited by itself since it was started (then it is
    /// no longer counted as running).
    pub fn exited(&mut self, i: usize) -> Option<ExitStatus> {
        let status = self.members[i].child.as_mut()?.try_wait().unwrap()?;
        self.members[i].child = None;
        Some(status)
    }

    /// SIGKILL to coordinator `i`, waited for.
    pub fn kill(&mut self, i: usize) {
        let mut child = self.members[i].child.take().expect("coordinator running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// Sends a signal to coordinator `i` (SIGSTOP, SIGCONT).
    pub fn signal(&self, i: usize, signal: i32) {
        let pid = self.pid(i) as i32;
        // SAFETY: kill(2) on a child process we started; no memory is involved.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    }

    /// Waits for coordinator `i` to exit by itself, and returns how it exited (None if it is
    /// still running after `within`).
    pub async fn wait_exit(&mut self, i: usize, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            let child = self.members[i].child.as_mut().expect("coordinator started");
            if let Some(status) = child.try_wait().unwrap() {
                self.members[i].child = None;
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Which coordinator leads, by asking coordinator `i` alone (`drover status --json`, within
    /// `within`): the member whose address its `"leader"` names.
    pub fn leader_per(&self, i: usize, env: &[(&str, &str)], within: Duration) -> Option<usize> {
        let status = status_json(&self.members[i].address, env, within)?;
        let leader = status.get("leader")?.as_str()?;
        self.members
            .iter()
            .position(|member| member.address == leader)
    }

    /// Whether coordinator `i` serves as the leader, by its HTTP side alone (a standby answers
    /// with a redirect or 503 and sends nobody on; a frozen one does not answer): None when it
    /// gives no answer within `within`. `token` is the client token, if the coordinators have one.
    pub async fn serves(&self, i: usize, token: Option<&str>, within: Duration) -> Option<bool> {
        let bearer = token.map(|token| format!("Bearer {token}"));
        let headers: Vec<(&str, &str)> = bearer
            .as_deref()
            .map(|value| ("Authorization", value))
            .into_iter()
            .collect();
        let http = &self.members[i].http;
        let answer = tokio::time::timeout(within, async {
            // Refused (not started, or killed): no answer.
            tokio::net::TcpStream::connect(http).await.ok()?;
            Some(super::http(http, "GET", "/api/status", &headers, b"").await)
        })
        .await
        .ok()??;
        Some(answer.status == 200)
    }

    /// Waits until the running coordinators agree that one of them leads, and returns it.
    pub async fn wait_leader(&mut self, env: &[(&str, &str)], within: Duration) -> usize {
        let deadline = Instant::now() + within;
        loop {
            let running: Vec<usize> = (0..self.members.len())
                .filter(|&i| self.running(i))
                .collect();
            let answers: Vec<Option<usize>> = running
                .iter()
                .map(|&i| self.leader_per(i, env, Duration::from_secs(5)))
                .collect();
            if let Some(Some(leader)) = answers.first() {
                if running.contains(leader) && answers.iter().all(|a| *a == Some(*leader)) {
                    return *leader;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no leader agreed on within {within:?} ({answers:?} from {running:?}):\n{}",
                self.log_tails(30)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Coordinators {
    fn drop(&mut self) {
        for member in &mut self.members {
            if let Some(child) = &mut member.child {
                // A frozen process dies of SIGKILL all the same.
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// `drover status --json` from the coordinators at `address` (one or a list), within `within`.
pub fn status_json(
    address: &str,
    env: &[(&str, &str)],
    within: Duration,
) -> Option<serde_json::Value> {
    let output = cli_within(address, env, &["status", "--json"], within)?;
    if !output.status.success() {
        return None;
    }
    serde_json::from_slice(&output.stdout).ok()
}

/// Runs the `drover` CLI against `address` (one or a list) with `env`, and gives up (killing
/// it) after `within`: a frozen coordinator takes connections and never answers.
pub fn cli_within(
    address: &str,
    env: &[(&str, &str)],
    args: &[&str],
    within: Duration,
) -> Option<Output> {
    let mut command = Command::new(CLI);
    command
        .args(args)
        .env("DROVER_COORDINATOR", address)
        .env_remove("DROVER_TOKEN")
        .envs(env.iter().copied())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    run_within(command, within)
}

/// Runs a command to its end, or kills it after `within`.
pub fn run_within(mut command: Command, within: Duration) -> Option<Output> {
    let child = command.spawn().unwrap();
    let pid = child.id() as i32;
    let (send, receive) = std::sync::mpsc::channel();
    // Read in a thread of its own, so a full pipe never stalls the child while we wait.
    std::thread::spawn(move || {
        let _ = send.send(child.wait_with_output());
    });
    match receive.recv_timeout(within) {
        Ok(output) => Some(output.unwrap()),
        Err(_) => {
            // SAFETY: kill(2) on a child process we started and have not reaped yet (its waiter
            // thread reaps it once it dies).
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let _ = receive.recv();
            None
        }
    }
}
