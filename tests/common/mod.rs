//! Helpers for integration tests: a real coordinator and real worker processes on loopback.
#![allow(dead_code)]

use drover::client::Client;
use drover::net::auth::Secret;
use drover::status::{BatchInfo, JobInfo, WorkerInfo};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub mod ha;
pub mod imds;
pub mod in_process;
pub mod lost_answers;
#[cfg(feature = "ec2")]
pub mod moto;
pub mod postgres;
pub mod s3;
pub mod store;

pub const COORDINATOR: &str = env!("CARGO_BIN_EXE_drover-coordinator");
pub const WORKER: &str = env!("CARGO_BIN_EXE_drover-worker");
pub const CLI: &str = env!("CARGO_BIN_EXE_drover");

/// A coordinator and workers as child processes, killed when dropped.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub address: String,
    pub coordinator_args: Vec<String>,
    pub coordinator_env: Vec<(String, String)>,
    /// The network namespace the coordinator runs in, when it has a host of its own.
    pub coordinator_netns: Option<String>,
    /// What the coordinator listens on, when not `address` (every address of its own host).
    pub listen: Option<String>,
    coordinator: Option<Child>,
    coordinator_starts: usize,
    workers: Vec<(String, Child)>,
}

/// A command for `program`, run inside a network namespace if one is given.
fn command_in(netns: Option<&str>, program: &str) -> Command {
    match netns {
        // `ip netns exec` execs the program itself, so the child's pid is the program's.
        Some(netns) => {
            let mut command = Command::new("ip");
            command.args(["netns", "exec", netns, program]);
            command
        }
        None => Command::new(program),
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Cluster {
    /// A cluster whose coordinator runs with these extra flags (not started yet).
    pub fn new(coordinator_args: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("out")).unwrap();
        Cluster {
            address: format!("127.0.0.1:{}", free_port()),
            dir,
            coordinator_args: coordinator_args.iter().map(|arg| arg.to_string()).collect(),
            coordinator_env: Vec::new(),
            coordinator_netns: None,
            listen: None,
            coordinator: None,
            coordinator_starts: 0,
            workers: Vec::new(),
        }
    }

    /// Starts a cluster's coordinator and waits until it answers.
    pub async fn start(coordinator_args: &[&str]) -> Cluster {
        let mut cluster = Cluster::new(coordinator_args);
        cluster.start_coordinator().await;
        cluster
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Where jobs write what they want checked: `out/<job id>`.
    pub fn out_dir(&self) -> PathBuf {
        self.dir.path().join("out")
    }

    /// Connects as a client, sends `ask(id)` every 30 ms and never reads an answer, until the
    /// coordinator cuts the connection for not reading (and logs so). Panics if it never does.
    pub async fn ask_without_reading(
        &self,
        ask: impl Fn(u64) -> drover::net::protocol::ClientRequest,
    ) {
        use drover::net::protocol::{Role, ToCoordinator};
        use futures::SinkExt;
        let mut connection = drover::net::connect::connect(&self.address, Role::Client, None)
            .await
            .unwrap();
        let mut sent = 0u64;
        for id in 1..=100u64 {
            let request = ToCoordinator::Request { id, body: ask(id) };
            if connection.send(request).await.is_err() {
                break;
            }
            sent = id;
            tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        }
        assert!(sent < 100, "the coordinator never cut the client off");
        wait_for(
            std::time::Duration::from_secs(10),
            "the disconnection in the log",
            || async {
                self.coordinator_log()
                    .contains("not reading:")
                    .then_some(())
            },
        )
        .await;
    }

    pub fn coordinator_log(&self) -> String {
        (1..=self.coordinator_starts)
            .map(|start| {
                std::fs::read_to_string(self.dir.path().join(format!("coordinator-{start}.log")))
                    .unwrap_or_default()
            })
            .collect()
    }

    pub fn worker_log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("worker-{name}.log")))
            .unwrap_or_default()
    }

    pub async fn start_coordinator(&mut self) {
        assert!(self.coordinator.is_none(), "coordinator already running");
        self.coordinator_starts += 1;
        let log = std::fs::File::create(
            self.dir
                .path()
                .join(format!("coordinator-{}.log", self.coordinator_starts)),
        )
        .unwrap();
        let listen = self.listen.as_deref().unwrap_or(&self.address);
        let child = command_in(self.coordinator_netns.as_deref(), COORDINATOR)
            .args(["--listen", listen, "--data-dir"])
            .arg(self.data_dir())
            .args(&self.coordinator_args)
            .args(
                self.http_address()
                    .is_none()
                    .then_some(["--http", "off"])
                    .into_iter()
                    .flatten(),
            )
            .env_remove("DROVER_TOKEN")
            .env_remove("DROVER_WORKER_TOKEN")
            .env_remove("DROVER_READ_TOKEN")
            .envs(self.coordinator_env.iter().cloned())
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.coordinator = Some(child);
        self.wait_for_port().await;
    }

    async fn wait_for_port(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(&self.address).await.is_err() {
            assert!(
                Instant::now() < deadline,
                "coordinator did not listen within 30s:\n{}",
                self.coordinator_log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn coordinator_pid(&self) -> u32 {
        self.coordinator.as_ref().expect("coordinator running").id()
    }

    /// Kills the coordinator with SIGKILL.
    pub fn kill_coordinator(&mut self) {
        let mut child = self.coordinator.take().expect("coordinator running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// Sends a signal to the coordinator (SIGSTOP to freeze it, SIGCONT to thaw it).
    pub fn signal_coordinator(&self, signal: i32) {
        let pid = self.coordinator_pid() as i32;
        // SAFETY: kill(2) on a child process we started; no memory is involved.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    }

    /// Stops the coordinator with SIGTERM and waits for it to exit.
    pub fn terminate_coordinator(&mut self) -> std::process::ExitStatus {
        let mut child = self.coordinator.take().expect("coordinator running");
        // SAFETY: kill(2) on a child process we started; no memory is involved.
        assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
        child.wait().unwrap()
    }

    /// Kills the coordinator with SIGKILL, leaves it down for `down`, and starts it again on
    /// the same ledger and address.
    pub async fn restart_coordinator(&mut self, down: Duration) {
        self.kill_coordinator();
        tokio::time::sleep(down).await;
        self.start_coordinator().await;
    }

    /// Starts a worker with extra flags.
    pub fn start_worker(&mut self, name: &str, slots: u32, extra: &[&str]) {
        self.start_worker_with_env(name, slots, extra, &[]);
    }

    pub fn start_worker_with_env(
        &mut self,
        name: &str,
        slots: u32,
        extra: &[&str],
        env: &[(&str, &str)],
    ) {
        let address = self.address.clone();
        self.spawn_worker(None, &address, name, slots, extra, env);
    }

    /// Starts a worker dialling `coordinator` (an address, or a comma-separated list) rather
    /// than this cluster's own address.
    pub fn start_worker_at(&mut self, coordinator: &str, name: &str, slots: u32, extra: &[&str]) {
        self.spawn_worker(None, coordinator, name, slots, extra, &[]);
    }

    /// Starts a worker inside a network namespace, dialling the coordinator at `coordinator`.
    /// A worker of the same name that has exited is replaced (a restart after a kill).
    pub fn start_worker_in(
        &mut self,
        netns: &str,
        coordinator: &str,
        name: &str,
        slots: u32,
        env: &[(&str, &str)],
    ) {
        self.spawn_worker(Some(netns), coordinator, name, slots, &[], env);
    }

    fn spawn_worker(
        &mut self,
        netns: Option<&str>,
        coordinator: &str,
        name: &str,
        slots: u32,
        extra: &[&str],
        env: &[(&str, &str)],
    ) {
        if let Some(at) = self.workers.iter().position(|(worker, _)| worker == name) {
            let exited = self.workers[at].1.try_wait().unwrap();
            assert!(exited.is_some(), "worker {name} is already running");
            self.workers.remove(at);
        }
        // Appended to, so a restarted worker's log follows its earlier life's.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("worker-{name}.log")))
            .unwrap();
        let mut command = command_in(netns, WORKER);
        if !extra.contains(&"--scratch-dir") {
            command
                .arg("--scratch-dir")
                .arg(self.dir.path().join("scratch").join(name));
        }
        let child = command
            .args([
                "--coordinator",
                coordinator,
                "--name",
                name,
                "--slots",
                &slots.to_string(),
            ])
            .args(extra)
            .env_remove("DROVER_WORKER_TOKEN")
            .envs(
                env.iter()
                    .map(|(key, value)| (key.to_string(), value.to_string())),
            )
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .env("OUT", self.out_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.workers.push((name.to_string(), child));
    }

    pub fn worker_pid(&self, name: &str) -> u32 {
        self.workers
            .iter()
            .find(|(worker, _)| worker == name)
            .expect("no such worker")
            .1
            .id()
    }

    /// Sends a signal to a worker process.
    pub fn signal_worker(&self, name: &str, signal: i32) {
        let pid = self.worker_pid(name) as i32;
        // SAFETY: kill(2) on a child process we started; no memory is involved.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    }

    /// Waits for a worker process to exit and returns its status.
    pub async fn wait_worker_exit(
        &mut self,
        name: &str,
        within: Duration,
    ) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            let child = &mut self
                .workers
                .iter_mut()
                .find(|(worker, _)| worker == name)
                .expect("no such worker")
                .1;
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "worker {name} did not exit within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A client with the coordinator's client token, if it has one.
    pub async fn client(&self) -> Client {
        Client::connect(&self.address, self.client_secret().as_ref())
            .await
            .expect("client connects")
    }

    /// A client on a fresh connection, or None while the coordinator is not answering (it may
    /// be restarting).
    pub async fn try_client(&self) -> Option<Client> {
        Client::connect(&self.address, self.client_secret().as_ref())
            .await
            .ok()
    }

    /// Where this coordinator's jobs publish under the outputs prefix `root`: its ledger's own
    /// directory, `root/ledger-<id>`, as `drover status` names it.
    pub async fn outputs_dir(&self, root: &Path) -> PathBuf {
        let status = self.client().await.status().await.expect("status");
        root.join(format!("ledger-{}", status.stats.ledger))
    }

    pub async fn client_with(&self, token: &str) -> Client {
        Client::connect(&self.address, Secret::from_text(token).as_ref())
            .await
            .expect("client connects")
    }

    /// Waits until `count` workers are connected, and returns those (not the recently gone).
    pub async fn wait_for_workers(&self, count: usize) -> Vec<WorkerInfo> {
        wait_for(
            Duration::from_secs(30),
            "workers to register",
            || async move {
                let mut client = self.try_client().await?;
                let mut workers = client.workers().await.ok()?;
                workers.retain(|worker| worker.gone_at_ms.is_none());
                (workers.len() >= count).then_some(workers)
            },
        )
        .await
    }

    /// The client token the coordinator was started with, if any.
    pub fn client_token(&self) -> Option<&str> {
        self.coordinator_env
            .iter()
            .find(|(key, _)| key == "DROVER_TOKEN")
            .map(|(_, token)| token.as_str())
    }

    pub fn client_secret(&self) -> Option<Secret> {
        self.client_token().and_then(Secret::from_text)
    }

    /// The HTTP address given with `--http`, if any.
    pub fn http_address(&self) -> Option<&str> {
        let at = self
            .coordinator_args
            .iter()
            .position(|arg| arg == "--http")?;
        self.coordinator_args.get(at + 1).map(String::as_str)
    }

    /// Waits until a job satisfies `done`, polling on fresh connections (the coordinator may
    /// restart meanwhile), and returns it.
    pub async fn wait_for_job(
        &self,
        job: u64,
        what: &str,
        done: impl Fn(&JobInfo) -> bool,
    ) -> JobInfo {
        let done = &done;
        wait_for(Duration::from_secs(30), what, || async move {
            let mut client = self.try_client().await?;
            let info = client.job(job).await.ok()?;
            done(&info).then_some(info)
        })
        .await
    }

    /// Runs the `drover` CLI against this cluster, with the client token if there is one.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(CLI)
            .args(args)
            .env("DROVER_COORDINATOR", &self.address)
            .env_remove("DROVER_TOKEN")
            .envs(self.client_token().map(|token| ("DROVER_TOKEN", token)))
            .env("NO_COLOR", "1")
            .current_dir(self.dir.path())
            .output()
            .unwrap()
    }

    /// Runs the `drover` CLI with `DROVER_COORDINATOR` set to `coordinator` (an address, or a
    /// comma-separated list).
    pub fn cli_via(&self, coordinator: &str, args: &[&str]) -> Output {
        Command::new(CLI)
            .args(args)
            .env("DROVER_COORDINATOR", coordinator)
            .env_remove("DROVER_TOKEN")
            .envs(self.client_token().map(|token| ("DROVER_TOKEN", token)))
            .env("NO_COLOR", "1")
            .current_dir(self.dir.path())
            .output()
            .unwrap()
    }

    /// Writes a job file into the test directory.
    pub fn job_file(&self, name: &str, lines: &[String]) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        path
    }

    /// What a job's attempts appended to `out/<id>`, a line each.
    pub fn output_lines(&self, job: u64) -> Vec<String> {
        std::fs::read_to_string(self.out_dir().join(job.to_string()))
            .map(|text| text.lines().map(str::to_string).collect())
            .unwrap_or_default()
    }

    /// How many times a job ran: the lines it appended to `out/<id>`.
    pub fn runs_of(&self, job: u64) -> usize {
        self.output_lines(job).len()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for (_, child) in &mut self.workers {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(child) = &mut self.coordinator {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A job line that appends one line to `$OUT/<job id>`, then sleeps.
pub fn recording_job(sleep_s: f64) -> String {
    format!(
        r#"{{"cmd": ["sh", "-c", "echo $DROVER_ATTEMPT >> \"$OUT/$DROVER_JOB_ID\"; sleep {sleep_s}"]}}"#
    )
}

/// What a worker's scratch directory holds besides its journal of uploads and the workers'
/// own places (`attempts/<instance>/` and its lock): attempts' leftovers, and anything else.
pub fn attempt_dirs_left(scratch: &Path) -> Vec<String> {
    let names = |dir: &Path| -> Vec<String> {
        std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .flatten()
                    .map(|entry| entry.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let attempts = scratch.join(drover::worker::scratch::ATTEMPTS_DIR);
    let mut left: Vec<String> = names(scratch)
        .into_iter()
        .filter(|name| {
            name != drover::worker::UPLOADS_DIR && name != drover::worker::scratch::ATTEMPTS_DIR
        })
        .collect();
    for place in names(&attempts) {
        if !place.ends_with(".lock") {
            left.extend(names(&attempts.join(&place)));
        }
    }
    left
}

/// Polls `check` until it returns Some, or panics after `within`.
pub async fn wait_for<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until a batch is done.
pub async fn wait_batch_done(client: &mut Client, batch: u64, within: Duration) -> BatchInfo {
    let deadline = Instant::now() + within;
    loop {
        let info = client
            .wait_batch(batch, Duration::from_millis(500))
            .await
            .unwrap();
        if info.done {
            return info;
        }
        assert!(
            Instant::now() < deadline,
            "batch {batch} not done within {within:?}: {info:?}"
        );
    }
}

/// Waits until a job is running, and returns it.
pub async fn wait_running(client: &mut Client, job: u64, within: Duration) -> JobInfo {
    let deadline = Instant::now() + within;
    loop {
        let info = client.job(job).await.unwrap();
        if info.state == drover::job::JobState::Running {
            return info;
        }
        assert!(
            Instant::now() < deadline,
            "job {job} not running within {within:?}: {info:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub fn stderr_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

pub fn stdout_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// An HTTP response as a test sees it.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: String,
    pub body: String,
    /// The body as it came, byte for byte (`body` is it as lossy UTF-8).
    pub bytes: Vec<u8>,
}

impl HttpResponse {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|error| panic!("not JSON ({error}): {}", self.body))
    }
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`), read to the end: plain
/// bytes on a real socket, so what is tested is what any client would see.
pub async fn http(
    address: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("host"))
    {
        head.push_str(&format!("Host: {address}\r\n"));
    }
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut raw = head.into_bytes();
    raw.extend_from_slice(body);
    exchange(address, raw).await
}

/// A POST whose body of `size` bytes is sent in chunks (`Transfer-Encoding: chunked`), so the
/// server cannot know its size up front.
pub async fn http_chunked(
    address: &str,
    path: &str,
    headers: &[(&str, &str)],
    size: usize,
) -> HttpResponse {
    let mut raw = format!(
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n"
    );
    for (name, value) in headers {
        raw.push_str(&format!("{name}: {value}\r\n"));
    }
    raw.push_str("\r\n");
    let mut raw = raw.into_bytes();
    let chunk = vec![b' '; 1 << 20];
    let mut left = size;
    while left > 0 {
        let part = left.min(chunk.len());
        raw.extend_from_slice(format!("{part:x}\r\n").as_bytes());
        raw.extend_from_slice(&chunk[..part]);
        raw.extend_from_slice(b"\r\n");
        left -= part;
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    exchange(address, raw).await
}

/// Writes the request while reading the answer: a server may answer (413, 401) and close before
/// it has read everything, and the answer must still be seen.
async fn exchange(address: &str, request: Vec<u8>) -> HttpResponse {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let writing = tokio::spawn(async move {
        let _ = writer.write_all(&request).await;
        // Kept open until the answer is read: closing early is a different request.
        std::future::pending::<()>().await;
        drop(writer);
    });
    let mut raw = Vec::new();
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        match reader.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(read) => raw.extend_from_slice(&buffer[..read]),
        }
    }
    writing.abort();
    let Some(end) = raw.windows(4).position(|window| window == b"\r\n\r\n") else {
        panic!("no HTTP response: {:?}", String::from_utf8_lossy(&raw));
    };
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let rest = &raw[end + 4..];
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {head:?}"));
    let bytes = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(rest)
    } else {
        rest.to_vec()
    };
    HttpResponse {
        status,
        headers: head,
        body: String::from_utf8_lossy(&bytes).into_owned(),
        bytes,
    }
}

fn dechunk(mut rest: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    while let Some(line_end) = rest.windows(2).position(|window| window == b"\r\n") {
        let size = std::str::from_utf8(&rest[..line_end])
            .ok()
            .and_then(|size| usize::from_str_radix(size.trim(), 16).ok())
            .unwrap_or(0);
        let after = &rest[line_end + 2..];
        if size == 0 || after.len() < size {
            break;
        }
        body.extend_from_slice(&after[..size]);
        rest = after[size..]
            .strip_prefix(b"\r\n")
            .unwrap_or(&after[size..]);
    }
    body
}

/// A small tmpfs mounted for a test, unmounted when dropped.
pub struct Tmpfs(PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Mounts a tmpfs of `size` (`1m`, `4m`) at `path`, or None where the machine does not allow it
/// (it needs root; CI runs as root).
pub fn mount_tmpfs(path: &Path, size: &str) -> Option<Tmpfs> {
    std::fs::create_dir_all(path).ok()?;
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(path)
        .status()
        .is_ok_and(|status| status.success());
    if !mounted {
        eprintln!("SKIPPED: this machine does not let the test mount a small tmpfs (needs root)");
    }
    mounted.then(|| Tmpfs(path.to_path_buf()))
}
