//! The tests' PostgreSQL servers themselves (tests/common/postgres.rs): that they start, answer,
//! replicate synchronously, and that a killed primary's standby can be promoted and written to.
//! The HA tests stand on these.

mod common;

use common::postgres::{multi_host_url, PgServer, PASSWORD};

#[test]
fn a_server_starts_answers_and_keeps_what_it_committed_across_a_kill() {
    let mut server = PgServer::start();
    assert_eq!(server.psql("SHOW fsync"), "on");
    assert_eq!(server.psql("SELECT current_user"), "drover");
    server.create_database("ledger");
    server.psql_in("ledger", "CREATE TABLE t (n int); INSERT INTO t VALUES (7)");
    assert!(server
        .url("ledger")
        .contains(&format!(":{}/ledger", server.port())));
    assert!(server.url("ledger").contains(PASSWORD));

    server.kill();
    assert!(!server.running());
    server.restart();
    assert_eq!(server.psql_in("ledger", "SELECT n FROM t"), "7");

    // Over TCP the password is checked.
    assert_eq!(
        server.psql_url(&server.url("ledger"), "SELECT n FROM t"),
        Ok("7".to_string())
    );
    let wrong = server.url("ledger").replace(PASSWORD, "wrong");
    let refused = server.psql_url(&wrong, "SELECT 1").unwrap_err();
    assert!(
        refused.contains("password authentication failed"),
        "{refused}"
    );

    let url = server.create_role_without_create_rights("reader", "reader-password", "ledger");
    assert!(url.starts_with("postgres://reader:reader-password@127.0.0.1:"));
    assert_eq!(server.psql_url(&url, "SELECT n FROM t").ok(), None);
    let denied = server
        .psql_url(&url, "CREATE TABLE mine (n int)")
        .unwrap_err();
    assert!(denied.contains("permission denied"), "{denied}");
    assert_eq!(server.psql_url(&url, "SELECT 1"), Ok("1".to_string()));
    server.stop();
    server.restart();
    assert_eq!(
        server.psql("SELECT rolsuper FROM pg_roles WHERE rolname = 'reader'"),
        "f"
    );
}

#[test]
fn a_synchronous_standby_has_every_commit_and_takes_over_when_promoted() {
    let (mut primary, standby) = PgServer::primary_with_sync_standby();
    primary.create_database("ledger");
    primary.psql_in("ledger", "CREATE TABLE t (n int); INSERT INTO t VALUES (1)");
    assert_eq!(
        primary.psql("SELECT sync_state FROM pg_stat_replication"),
        "sync"
    );
    // Synchronous commit: once the primary acknowledged, the standby has it (it may not have
    // replayed it yet, so wait for the replay, never for the commit).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while standby
        .try_psql_in("ledger", "SELECT count(*) FROM t")
        .as_deref()
        != Ok("1")
    {
        assert!(std::time::Instant::now() < deadline, "row not replayed");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(standby.psql("SELECT pg_is_in_recovery()"), "t");
    assert!(standby
        .try_psql_in("ledger", "INSERT INTO t VALUES (2)")
        .is_err());

    primary.psql_in("ledger", "INSERT INTO t VALUES (2)");
    primary.kill();
    standby.promote();
    standby.psql_in("ledger", "INSERT INTO t VALUES (3)");
    assert_eq!(
        standby.psql_in(
            "ledger",
            "SELECT string_agg(n::text, ',' ORDER BY n) FROM t"
        ),
        "1,2,3"
    );

    let url = multi_host_url(&[&primary, &standby], "ledger");
    assert_eq!(
        url,
        format!(
            "postgres://drover:{PASSWORD}@127.0.0.1:{},127.0.0.1:{}/ledger?target_session_attrs=read-write",
            primary.port(),
            standby.port()
        )
    );
}

/// A network namespace for one test, deleted on drop.
struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.0])
            .status();
    }
}

#[test]
fn a_server_in_a_network_namespace_answers_there_and_over_its_socket() {
    let name = format!("drover-pg-{}", std::process::id());
    let made = std::process::Command::new("ip")
        .args(["netns", "add", &name])
        .output()
        .expect("ip runs (scripts/test.sh installs iproute2)");
    if !made.status.success() {
        // As the chaos suite, whose PostgreSQL runs so: namespaces need root, which CI has.
        eprintln!(
            "SKIPPED: no network namespaces here ({})",
            String::from_utf8_lossy(&made.stderr).trim()
        );
        return;
    }
    let netns = Netns(name);
    let up = std::process::Command::new("ip")
        .args(["-n", &netns.0, "link", "set", "lo", "up"])
        .status()
        .unwrap();
    assert!(up.success());
    let server = PgServer::start_in(Some(&netns.0));
    assert_eq!(server.psql("SELECT 1"), "1");
    // Its TCP port is inside the namespace: from there with the password, not from here.
    let inside = std::process::Command::new("ip")
        .args(["netns", "exec", &netns.0, "psql", &server.url("postgres")])
        .args(["-XAtc", "SELECT 2"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&inside.stdout).trim(),
        "2",
        "{}",
        String::from_utf8_lossy(&inside.stderr)
    );
    assert!(std::net::TcpStream::connect(("127.0.0.1", server.port())).is_err());
    drop(server);
}
