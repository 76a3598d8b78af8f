//! What a client or worker is told when it cannot connect: a coordinator that is not there, an
//! address that is not one, the HTTP port instead of the protocol port, no token or a token the
//! coordinator does not expect. Each is one plain line, through the real binaries. And how many
//! connections a coordinator takes: as many as its open-files limit holds.

mod common;

use common::*;
use std::time::Duration;
use tokio::net::TcpStream;

/// Runs the CLI with these arguments and environment, expects it to fail, and returns its one
/// line of error.
fn cli_error(args: &[&str], env: &[(&str, &str)]) -> String {
    let output = std::process::Command::new(CLI)
        .args(args)
        .env_remove("DROVER_TOKEN")
        .env_remove("DROVER_COORDINATOR")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let message = stderr_of(&output);
    assert_eq!(output.status.code(), Some(1), "{message}");
    assert_eq!(message.trim().lines().count(), 1, "{message}");
    message
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_coordinator_is_one_line_not_a_backtrace() {
    let address = format!("127.0.0.1:{}", free_port());
    let message = cli_error(&["batches", "--coordinator", &address], &[]);
    assert_eq!(
        message.trim(),
        format!(
            "drover: cannot reach the coordinator at {address}: connection refused: nothing \
             listens there (is the coordinator running, and is this its --listen address?)"
        )
    );
    // What is wrong with an address is said once, plainly.
    let message = cli_error(&["batches", "--coordinator", "127.0.0.1:http"], &[]);
    assert_eq!(
        message.trim(),
        "drover: \"127.0.0.1:http\" is not a coordinator address: the port \"http\" is not a \
         number from 1 to 65535"
    );
    let message = cli_error(&["batches", "--coordinator", "http://127.0.0.1:7701"], &[]);
    assert!(
        message.contains("give HOST:PORT, without a scheme"),
        "{message}"
    );
    let message = cli_error(
        &["batches", "--coordinator", "no-such-host.invalid:7700"],
        &[],
    );
    assert!(
        message.contains("cannot find the host \"no-such-host.invalid\""),
        "{message}"
    );
    assert!(
        !message.contains("failed to lookup address information"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_without_a_port_dials_the_default_protocol_port() {
    // No test listens on 7700; whether or not something else does, the port was added.
    let output = std::process::Command::new(CLI)
        .args(["batches", "--coordinator", "127.0.0.1"])
        .env_remove("DROVER_TOKEN")
        .output()
        .unwrap();
    let message = stderr_of(&output);
    assert!(
        output.status.success() || message.contains("127.0.0.1:7700"),
        "{message}"
    );
    assert!(!message.contains("invalid socket address"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_token_and_the_http_port_are_named_as_such() {
    let http = format!("127.0.0.1:{}", free_port());
    let mut cluster = Cluster::new(&["--http", &http]);
    cluster.coordinator_env = vec![
        ("DROVER_TOKEN".into(), "client-secret".into()),
        ("DROVER_WORKER_TOKEN".into(), "worker-secret".into()),
    ];
    cluster.start_coordinator().await;
    let address = cluster.address.clone();

    // No token is not a wrong one: the message says none was given, and how to give one.
    let message = cli_error(&["batches", "--coordinator", &address], &[]);
    assert!(
        message.contains(
            "no client token was given, and this coordinator requires one; set DROVER_TOKEN or \
             give --token-file FILE"
        ),
        "{message}"
    );
    assert!(!message.contains("wrong"), "{message}");
    let message = cli_error(
        &["batches", "--coordinator", &address],
        &[("DROVER_TOKEN", "guess")],
    );
    assert!(message.contains("wrong client token"), "{message}");
    cluster.start_worker("tokenless", 1, &[]);
    cluster
        .wait_worker_exit("tokenless", Duration::from_secs(30))
        .await;
    let log = cluster.worker_log("tokenless");
    assert!(
        log.contains("no worker token was given, and this coordinator requires one; set DROVER_WORKER_TOKEN or give --worker-token-file FILE"),
        "{log}"
    );

    // A client and a worker at the HTTP port are told so, not of a frame of a billion bytes.
    let message = cli_error(
        &["batches", "--coordinator", &http],
        &[("DROVER_TOKEN", "client-secret")],
    );
    assert!(
        message.contains(&format!(
            "{http} answers in HTTP: this is the coordinator's HTTP port (dashboard and API), \
             not its protocol port; the protocol port is 7700 unless the coordinator's --listen \
             says otherwise (--coordinator 127.0.0.1:7700)"
        )),
        "{message}"
    );
    assert!(!message.contains("exceeds the limit"), "{message}");
    let mut strayed = Cluster::new(&[]);
    strayed.address = http.clone();
    strayed.start_worker_with_env(
        "strayed",
        1,
        &[],
        &[("DROVER_WORKER_TOKEN", "worker-secret")],
    );
    let status = strayed
        .wait_worker_exit("strayed", Duration::from_secs(30))
        .await;
    assert!(!status.success());
    let log = strayed.worker_log("strayed");
    assert!(log.contains("answers in HTTP"), "{log}");

    // A token given to a coordinator that has none is named as that, not as a wrong one.
    let open = Cluster::start(&[]).await;
    let message = cli_error(
        &["batches", "--coordinator", &open.address],
        &[("DROVER_TOKEN", "client-secret")],
    );
    assert!(
        message.contains("a client token was given, but this coordinator has none configured"),
        "{message}"
    );
}

/// The soft open-files limit in a process's `/proc/PID/limits`.
fn open_files_limit_of(pid: u32) -> u64 {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .unwrap();
    line.split_whitespace()
        .find_map(|word| word.parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_takes_as_many_connections_as_its_open_files_limit_holds() {
    // Past the fixed limit of 4096 that a fleet of thousands once hit.
    const HELD: usize = 4200;
    let open_files = drover::net::raise_open_files_limit();
    assert!(
        open_files.limit > HELD as u64 + 300,
        "this test holds {HELD} connections and cannot raise its open-files limit past {} \
         (hard limit {}): run it as root, or raise the hard limit (ulimit -Hn)",
        open_files.limit,
        open_files.hard
    );
    let cluster = Cluster::start(&[]).await;
    // The limit is the coordinator's own open-files limit less a reserve, and it says so.
    let limit = open_files_limit_of(cluster.coordinator_pid());
    let log = cluster.coordinator_log();
    assert!(
        log.contains(&format!(
            "connection limit max_connections={}",
            drover::net::open_files::connections_within(limit)
        )) && log.contains(&format!("open_files_limit={limit}")),
        "{log}"
    );
    let mut held = Vec::with_capacity(HELD);
    for _ in 0..HELD {
        held.push(TcpStream::connect(&cluster.address).await.unwrap());
    }
    // A client arriving after all of them is served.
    let mut client = cluster.client().await;
    assert!(client.batches().await.unwrap().is_empty());
    let log = cluster.coordinator_log();
    assert!(!log.contains("connection limit reached"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_limit_beyond_the_open_files_limit_is_kept_and_said_at_start() {
    let cluster = Cluster::start(&["--max-connections", "100000000"]).await;
    let limit = open_files_limit_of(cluster.coordinator_pid());
    let log = cluster.coordinator_log();
    assert!(
        log.contains("connection limit max_connections=100000000 set_by=\"--max-connections\""),
        "{log}"
    );
    let warning = format!(
        "--max-connections 100000000 is more than the open-files limit of {limit} holds ({} \
         connections",
        drover::net::open_files::connections_within(limit)
    );
    assert!(log.contains(&warning), "{log}");
    assert!(cluster.client().await.batches().await.unwrap().is_empty());
}
