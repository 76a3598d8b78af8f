//! Real PostgreSQL servers for the tests, from Debian's `postgresql` package (`scripts/test.sh`
//! installs it): each in a fresh temporary directory, on a free loopback port, with its unix
//! socket in that directory, fsync on (durability is what the tests check), and a superuser
//! `drover` that logs in over TCP with a password (scram-sha-256), as a coordinator would.
//!
//! The server refuses to run as root and the tests run as root, so every server program runs as
//! the `postgres` user, which owns the directory. The calls block: they are quick, and what they
//! wait for lives in other processes.

use super::free_port;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The password of the `drover` role on every test server.
pub const PASSWORD: &str = "drover-test-password";
/// The superuser every test server is made with.
pub const USER: &str = "drover";

/// How long a server may take to accept connections (a standby's first start, on a busy machine).
const READY_WITHIN: Duration = Duration::from_secs(60);

/// One PostgreSQL server process, killed (with its backends) and its directory removed on drop.
pub struct PgServer {
    port: u16,
    bin: PathBuf,
    /// Owned by the `postgres` user: `data/` (the cluster), the socket, `server.log`.
    dir: tempfile::TempDir,
    /// The postmaster, leader of its own process group (so a kill takes its backends too, as the
    /// loss of its machine would).
    postmaster: Option<Child>,
    /// Who the server programs run as: the `postgres` user when the tests run as root.
    owner: Option<(u32, u32)>,
    /// The network namespace the server runs in, if not the tests' own (its socket, a file, is
    /// reached from anywhere; its loopback port only from inside).
    netns: Option<String>,
}

/// Where Debian puts the server's programs: `/usr/lib/postgresql/<version>/bin`, the newest
/// version if there are several.
fn bin_dir() -> PathBuf {
    let versions = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("postgres").is_file().then_some((version, bin))
        })
        .max_by_key(|(version, _)| *version);
    match versions {
        Some((_, bin)) => bin,
        None => panic!(
            "PostgreSQL server programs not found under /usr/lib/postgresql/*/bin: \
             run scripts/test.sh, which installs postgresql"
        ),
    }
}

/// The `postgres` user's uid and gid when running as root (the server refuses root), else None
/// (the programs run as whoever runs the tests).
fn server_owner() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let name = std::ffi::CString::new("postgres").unwrap();
    // SAFETY: getpwnam with a valid C string; the record is read at once, before any other call
    // that could reuse its static buffer.
    let record = unsafe { libc::getpwnam(name.as_ptr()) };
    assert!(
        !record.is_null(),
        "no `postgres` user to run PostgreSQL as (the server refuses root): \
         run scripts/test.sh, which installs postgresql"
    );
    // SAFETY: checked non-null just above.
    let record = unsafe { &*record };
    Some((record.pw_uid, record.pw_gid))
}

fn chown(path: &Path, owner: Option<(u32, u32)>) {
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
    }
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

impl PgServer {
    /// A fresh server, started and accepting connections.
    pub fn start() -> PgServer {
        PgServer::start_in(None)
    }

    /// A fresh server in network namespace `netns` (made with `ip netns add`): reached on its
    /// loopback port from processes in that namespace, and by the tests' psql over its socket.
    pub fn start_in(netns: Option<&str>) -> PgServer {
        let mut server = PgServer::initdb();
        server.netns = netns.map(str::to_string);
        server.configure(&[]);
        server.launch();
        server
    }

    /// A primary and a synchronous standby streaming from it (made with `pg_basebackup -R`, in
    /// hot standby so it answers reads): every commit the primary acknowledges is on both.
    pub fn primary_with_sync_standby() -> (PgServer, PgServer) {
        let primary = PgServer::start();
        let mut standby = PgServer::empty(primary.bin.clone(), primary.owner);
        let data = standby.data_dir();
        // The slot keeps on the primary whatever WAL the standby has not received yet.
        let backup = standby
            .command("pg_basebackup")
            .arg("--pgdata")
            .arg(&data)
            .args(["--write-recovery-conf", "--wal-method=stream", "--no-sync"])
            .args(["--create-slot", "--slot", "standby"])
            .arg("--dbname")
            .arg(primary.conninfo("postgres"))
            .output()
            .unwrap();
        assert!(
            backup.status.success(),
            "pg_basebackup failed: {}",
            text(&backup)
        );
        // The copy carries the primary's settings: the standby's own come after and win.
        // `synchronous_standby_names` stays empty on the standby, so once promoted alone it does
        // not wait for a standby of its own that does not exist.
        standby.configure(&["hot_standby = on", "synchronous_standby_names = ''"]);
        standby.launch();
        primary.psql("ALTER SYSTEM SET synchronous_standby_names = '*'");
        primary.psql("ALTER SYSTEM SET synchronous_commit = on");
        primary.psql("SELECT pg_reload_conf()");
        let deadline = Instant::now() + READY_WITHIN;
        while primary.psql("SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'")
            != "1"
        {
            assert!(
                Instant::now() < deadline,
                "the standby did not become synchronous within {READY_WITHIN:?}:\n{}",
                standby.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        (primary, standby)
    }

    /// A cluster made by initdb (not started), its superuser `drover` with the known password.
    fn initdb() -> PgServer {
        let server = PgServer::empty(bin_dir(), server_owner());
        let password_file = server.dir.path().join("password");
        std::fs::write(&password_file, PASSWORD).unwrap();
        chown(&password_file, server.owner);
        let output = server
            .command("initdb")
            .arg("--pgdata")
            .arg(server.data_dir())
            .args(["--username", USER, "--pwfile"])
            .arg(&password_file)
            // Password over TCP, as coordinators connect; the socket is only reachable through
            // the private directory, by the tests' own psql.
            .args(["--auth-host=scram-sha-256", "--auth-local=trust"])
            .args(["--encoding=UTF8", "--locale=C"])
            // The server's own writes are fsynced (see configure); initdb's files need not be:
            // no test loses power.
            .arg("--no-sync")
            .output()
            .unwrap();
        assert!(output.status.success(), "initdb failed: {}", text(&output));
        server
    }

    /// A temporary directory for a server, owned by whoever runs it, with a free port.
    fn empty(bin: PathBuf, owner: Option<(u32, u32)>) -> PgServer {
        // A short path: the socket's must fit in 107 bytes.
        let dir = tempfile::Builder::new()
            .prefix("drover-pg-")
            .tempdir_in("/tmp")
            .unwrap();
        chown(dir.path(), owner);
        PgServer {
            port: free_port(),
            bin,
            dir,
            postmaster: None,
            owner,
            netns: None,
        }
    }

    /// Appends this server's settings to its `postgresql.conf` (later lines win), then `extra`.
    fn configure(&self, extra: &[&str]) {
        let settings = [
            "listen_addresses = '127.0.0.1'".to_string(),
            format!("port = {}", self.port),
            format!("unix_socket_directories = '{}'", self.dir.path().display()),
            "fsync = on".to_string(),
            "synchronous_commit = on".to_string(),
            "full_page_writes = on".to_string(),
            "max_connections = 100".to_string(),
            // Several servers share a small machine.
            "shared_buffers = 32MB".to_string(),
            "max_wal_senders = 5".to_string(),
            "max_replication_slots = 5".to_string(),
            "wal_level = replica".to_string(),
            "logging_collector = off".to_string(),
        ];
        let mut conf = String::from("\n# drover tests\n");
        for line in settings
            .iter()
            .map(String::as_str)
            .chain(extra.iter().copied())
        {
            conf.push_str(line);
            conf.push('\n');
        }
        let path = self.data_dir().join("postgresql.conf");
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str(&conf);
        std::fs::write(&path, text).unwrap();
    }

    /// A server program, run as the server's owner, in its directory.
    fn command(&self, program: &str) -> Command {
        let mut command = self.command_as_me(program);
        if let Some((uid, gid)) = self.owner {
            command.uid(uid).gid(gid);
        }
        command
    }

    /// A server program in its directory, not yet switched to the server's owner.
    fn command_as_me(&self, program: &str) -> Command {
        let mut command = Command::new(self.bin.join(program));
        command
            .current_dir(self.dir.path())
            .env_remove("PGDATA")
            .env_remove("PGHOST")
            .env_remove("PGPORT")
            .env_remove("PGUSER")
            .env_remove("PGPASSWORD")
            .env_remove("PGDATABASE")
            .env("LC_ALL", "C")
            .stdin(Stdio::null());
        command
    }

    /// The postmaster's command: in the server's network namespace if it has one. Entering a
    /// namespace needs root, and the standard library switches user before the `pre_exec`
    /// hook runs, so there the hook does both, in that order.
    fn postmaster_command(&self) -> (Command, Option<std::fs::File>) {
        let Some(netns) = &self.netns else {
            return (self.command("postgres"), None);
        };
        let namespace = std::fs::File::open(Path::new("/run/netns").join(netns))
            .unwrap_or_else(|error| panic!("network namespace {netns}: {error}"));
        let fd = std::os::fd::AsRawFd::as_raw_fd(&namespace);
        let owner = self.owner;
        let mut command = self.command_as_me("postgres");
        // SAFETY: the hook only makes system calls (setns, setgroups, setgid, setuid), which are
        // async-signal-safe, on a descriptor kept open by the caller until after spawn.
        unsafe {
            command.pre_exec(move || {
                let check = |result: i32| {
                    if result == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                };
                check(libc::setns(fd, libc::CLONE_NEWNET))?;
                if let Some((uid, gid)) = owner {
                    check(libc::setgroups(0, std::ptr::null()))?;
                    check(libc::setgid(gid))?;
                    check(libc::setuid(uid))?;
                }
                Ok(())
            });
        }
        (command, Some(namespace))
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Starts the postmaster and waits until it accepts connections.
    fn launch(&mut self) {
        assert!(self.postmaster.is_none(), "PostgreSQL already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("server.log"))
            .unwrap();
        let (mut command, _namespace) = self.postmaster_command();
        let child = command
            .arg("-D")
            .arg(self.data_dir())
            .process_group(0)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.postmaster = Some(child);
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if let Some(status) = self.postmaster.as_mut().unwrap().try_wait().unwrap() {
                self.postmaster = None;
                panic!("PostgreSQL exited on start ({status}):\n{}", self.log());
            }
            let ready = self
                .command("pg_isready")
                .args(["--quiet", "--host"])
                .arg(self.dir.path())
                .args(["--port", &self.port.to_string()])
                .status()
                .unwrap();
            if ready.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "PostgreSQL did not accept connections within {READY_WITHIN:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The loopback port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `host:port` on loopback.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The URL a coordinator is given for database `db`, as the `drover` superuser.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://{USER}:{PASSWORD}@127.0.0.1:{}/{db}", self.port)
    }

    /// A libpq connection string to `db` over TCP with the password (pg_basebackup, replication).
    fn conninfo(&self, db: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={USER} password={PASSWORD} dbname={db} \
             application_name=standby",
            self.port
        )
    }

    /// What the server has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Runs SQL through the bundled psql (over the socket, as `drover`, in database `postgres`)
    /// and returns its output, unaligned and trimmed; panics if it fails.
    pub fn psql(&self, sql: &str) -> String {
        self.psql_in("postgres", sql)
    }

    /// Runs SQL through psql in database `db`; panics if it fails.
    pub fn psql_in(&self, db: &str, sql: &str) -> String {
        self.try_psql_in(db, sql)
            .unwrap_or_else(|error| panic!("psql failed on {sql:?}: {error}"))
    }

    /// Runs SQL through psql in database `db`: its output, or what went wrong.
    pub fn try_psql_in(&self, db: &str, sql: &str) -> Result<String, String> {
        // Run as the tests' own user: the socket's directory is private, the role trusted on it.
        let mut psql = Command::new(self.bin.join("psql"));
        psql.arg("--host")
            .arg(self.dir.path())
            .args(["--port", &self.port.to_string(), "--username", USER])
            .args(["--dbname", db]);
        run_psql(psql, sql)
    }

    /// Runs the SQL file at `path` (a plain `pg_dump`, meta-commands and all) through psql in
    /// database `db`, stopping at its first error; panics if it fails.
    pub fn psql_file(&self, db: &str, path: &Path) {
        let output = Command::new(self.bin.join("psql"))
            .arg("--host")
            .arg(self.dir.path())
            .args(["--port", &self.port.to_string(), "--username", USER])
            .args([
                "--dbname",
                db,
                "--no-psqlrc",
                "--quiet",
                "--set",
                "ON_ERROR_STOP=1",
            ])
            .arg("--file")
            .arg(path)
            .env_remove("PGPASSWORD")
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "psql --file {} failed: {}",
            path.display(),
            text(&output)
        );
    }

    /// Runs SQL through psql connecting to `url` over TCP, with the URL's role and password, as
    /// a coordinator would: its output, or what went wrong.
    pub fn psql_url(&self, url: &str, sql: &str) -> Result<String, String> {
        let mut psql = Command::new(self.bin.join("psql"));
        psql.arg(url);
        run_psql(psql, sql)
    }

    /// Creates database `name`, owned by `drover`.
    pub fn create_database(&self, name: &str) {
        self.psql(&format!("CREATE DATABASE \"{name}\""));
    }

    /// A role that may log in to `db` with `password` but not create anything in its schema
    /// (PostgreSQL 15 and later grant nothing on `public` to others), and its URL.
    pub fn create_role_without_create_rights(
        &self,
        role: &str,
        password: &str,
        db: &str,
    ) -> String {
        self.psql(&format!(
            "CREATE ROLE \"{role}\" LOGIN PASSWORD '{password}' NOSUPERUSER NOCREATEDB NOCREATEROLE"
        ));
        self.psql_in(
            db,
            &format!("REVOKE CREATE ON SCHEMA public FROM PUBLIC, \"{role}\""),
        );
        self.psql(&format!("GRANT CONNECT ON DATABASE \"{db}\" TO \"{role}\""));
        format!("postgres://{role}:{password}@127.0.0.1:{}/{db}", self.port)
    }

    /// The postmaster's pid, while it runs.
    pub fn pid(&self) -> u32 {
        self.postmaster.as_ref().expect("PostgreSQL running").id()
    }

    /// Whether the postmaster runs (it has not been killed or stopped, and has not exited).
    pub fn running(&mut self) -> bool {
        match &mut self.postmaster {
            Some(child) => child.try_wait().unwrap().is_none(),
            None => false,
        }
    }

    /// SIGKILL to the postmaster and every backend, as the loss of its machine: nothing is
    /// flushed or said goodbye to.
    pub fn kill(&mut self) {
        let mut child = self.postmaster.take().expect("PostgreSQL running");
        // SAFETY: kill(2) on the process group of a child we started; no memory is involved.
        unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
        child.wait().unwrap();
        // The backends die with it, but a restart needs their shared memory released: wait
        // until none of the group is left but zombies.
        let group = child.id();
        let deadline = Instant::now() + READY_WITHIN;
        while group_alive(group) {
            assert!(
                Instant::now() < deadline,
                "PostgreSQL backends outlived SIGKILL"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// A fast shutdown (SIGINT: open sessions are ended, everything committed is kept), waited
    /// for.
    pub fn stop(&mut self) {
        let mut child = self.postmaster.take().expect("PostgreSQL running");
        // SAFETY: kill(2) on a child process we started; no memory is involved.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        child.wait().unwrap();
    }

    /// Starts it again on the same directory and port (after `stop` or `kill`, or stops it first).
    pub fn restart(&mut self) {
        if self.running() {
            self.stop();
        }
        self.postmaster = None;
        self.launch();
    }

    /// Promotes a standby to primary and waits until it accepts writes.
    pub fn promote(&self) {
        // pg_promote waits (up to the given seconds) for the promotion to finish.
        let promoted = self.psql("SELECT pg_promote(true, 60)");
        assert_eq!(promoted, "t", "promotion failed:\n{}", self.log());
        let deadline = Instant::now() + READY_WITHIN;
        while self.psql("SELECT pg_is_in_recovery()") != "f" {
            assert!(
                Instant::now() < deadline,
                "the promoted standby is still in recovery:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.postmaster.take() {
            // SAFETY: kill(2) on the process group of a child we started.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
        }
    }
}

/// Whether any process of process group `group` is still alive (not a zombie).
fn group_alive(group: u32) -> bool {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| std::fs::read_to_string(entry.path().join("stat")).ok())
        .any(|stat| {
            // After the command's closing parenthesis: state, ppid, pgrp.
            let fields: Vec<&str> = stat
                .rsplit_once(')')
                .map(|(_, rest)| rest.split_whitespace().collect())
                .unwrap_or_default();
            fields.len() > 2 && fields[0] != "Z" && fields[2] == group.to_string()
        })
}

/// One URL naming several servers, as a coordinator is given a replicated database: libpq's
/// multi-host form, which connects to whichever of them is writable.
pub fn multi_host_url(servers: &[&PgServer], db: &str) -> String {
    let hosts: Vec<String> = servers.iter().map(|server| server.host()).collect();
    format!(
        "postgres://{USER}:{PASSWORD}@{}/{db}?target_session_attrs=read-write",
        hosts.join(",")
    )
}

/// Runs `sql` with a psql command that already says where to connect: its unaligned output, or
/// what went wrong.
fn run_psql(mut psql: Command, sql: &str) -> Result<String, String> {
    let output = psql
        .args(["--no-psqlrc", "--no-align", "--tuples-only", "--quiet"])
        .args(["--set", "ON_ERROR_STOP=1", "--command", sql])
        .env_remove("PGPASSWORD")
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
    } else {
        Err(text(&output).trim().to_string())
    }
}
