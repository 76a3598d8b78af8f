//! Who may read over HTTP, seen from another machine: the coordinator runs in a network
//! namespace of its own and is reached over a veth link from the test's namespace (an address
//! beyond loopback), and from inside its own namespace on loopback. The hosts are the chaos
//! suite's (`chaos/hosts.rs`); they need root, and where the machine forbids namespaces the tests
//! say `SKIPPED` and why. CI runs as root.

#[path = "common/browser.rs"]
mod browser;
mod common;
#[allow(dead_code)]
#[path = "chaos/hosts.rs"]
mod hosts;

use common::*;
use fantoccini::Locator;
use hosts::{BuildError, Hosts};
use std::os::fd::AsRawFd;
use std::time::Duration;

const CLIENT_TOKEN: &str = "client-secret-for-http";
const READ_TOKEN: &str = "read-only-secret";
/// A job name that must not be read by anyone without a token.
const SECRET_NAME: &str = "payroll-of-the-board";

/// One test's hosts at a time: a process's hosts are named for its pid.
static HOSTS_IN_USE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The hosts, with this test's turn to have them, or None (after saying so) where the machine
/// does not allow namespaces.
async fn hosts() -> Option<(tokio::sync::MutexGuard<'static, ()>, Hosts)> {
    let turn = HOSTS_IN_USE.lock().await;
    match Hosts::build(0) {
        Ok(hosts) => Some((turn, hosts)),
        Err(BuildError::Forbidden(reason)) => {
            eprintln!("SKIPPED: this machine does not allow network namespaces ({reason})");
            None
        }
        Err(BuildError::Failed(reason)) => panic!(
            "cannot build the network hosts: {reason}\n(the test needs iproute2; \
             scripts/test.sh installs it)"
        ),
    }
}

/// A coordinator on a host of its own, listening on every address there; its HTTP port is
/// `http_port`. Not started yet.
fn remote_cluster(hosts: &Hosts, http_port: u16, env: &[(&str, &str)]) -> Cluster {
    let port = free_port();
    let mut cluster = Cluster::new(&["--http", &format!("0.0.0.0:{http_port}")]);
    cluster.address = format!("{}:{port}", hosts.coordinator_address);
    cluster.listen = Some(format!("0.0.0.0:{port}"));
    cluster.coordinator_netns = Some(hosts.coordinator.clone());
    cluster.coordinator_env = env
        .iter()
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect();
    cluster
}

/// An HTTP request made from inside a network namespace (on its loopback, say): on a thread of
/// its own that joins the namespace, with a runtime of its own, so its socket is made there.
fn http_in(netns: &str, address: &str, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
    let file = std::fs::File::open(format!("/run/netns/{netns}")).unwrap();
    let address = address.to_string();
    let path = path.to_string();
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect();
    std::thread::spawn(move || {
        // SAFETY: setns(2) moves this thread only, into the namespace of a file we hold open.
        let joined = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(joined, 0, "setns: {}", std::io::Error::last_os_error());
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect();
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(http(&address, "GET", &path, &headers, b""))
    })
    .join()
    .unwrap()
}

/// An Authorization header's value.
fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// Submits one named job (no worker runs it) and returns its batch.
async fn submit_named_job(cluster: &Cluster) -> u64 {
    let mut client = cluster.client().await;
    let mut spec = drover::job::JobSpec::exec(["true"]);
    spec.name = Some(SECRET_NAME.into());
    client.submit(SECRET_NAME, vec![spec]).await.unwrap().batch
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_loopback_reads_need_the_client_or_read_token() {
    let Some((_turn, hosts)) = hosts().await else {
        return;
    };
    let http_port = free_port();
    let mut cluster = remote_cluster(
        &hosts,
        http_port,
        &[
            ("DROVER_TOKEN", CLIENT_TOKEN),
            ("DROVER_READ_TOKEN", READ_TOKEN),
        ],
    );
    cluster.start_coordinator().await;
    let batch = submit_named_job(&cluster).await;
    let remote = format!("{}:{http_port}", hosts.coordinator_address);
    let reads = [
        "/api/status".to_string(),
        "/api/workers".to_string(),
        "/api/pools".to_string(),
        "/api/batches".to_string(),
        format!("/api/batches/{batch}"),
        "/api/jobs/1".to_string(),
        "/api/jobs/999".to_string(),
    ];

    // From another machine, without a token or with a wrong one: 401, and nothing of the job.
    let wrong = bearer("wrong");
    for path in &reads {
        for headers in [vec![], vec![("Authorization", wrong.as_str())]] {
            let response = http(&remote, "GET", path, &headers, b"").await;
            assert_eq!(response.status, 401, "{path} {headers:?}: {response:?}");
            assert!(
                response
                    .headers
                    .to_ascii_lowercase()
                    .contains("www-authenticate: bearer"),
                "{response:?}"
            );
            assert!(!response.body.contains(SECRET_NAME), "{response:?}");
        }
    }
    let refused = http(&remote, "GET", "/api/jobs/1", &[], b"").await;
    assert!(
        refused.json()["error"]
            .as_str()
            .unwrap()
            .contains("Authorization: Bearer"),
        "the refusal says how to read: {refused:?}"
    );

    // With the read token or the client token: the data, and what the caller may do.
    for (token, may) in [(READ_TOKEN, "read"), (CLIENT_TOKEN, "change")] {
        let auth = [("Authorization", bearer(token))];
        let auth = [(auth[0].0, auth[0].1.as_str())];
        for path in &reads[..6] {
            let response = http(&remote, "GET", path, &auth, b"").await;
            assert_eq!(response.status, 200, "{path}: {response:?}");
            assert!(
                response
                    .headers
                    .to_ascii_lowercase()
                    .contains(&format!("x-drover-access: {may}")),
                "{response:?}"
            );
        }
        let job = http(&remote, "GET", "/api/jobs/1", &auth, b"").await;
        assert_eq!(job.json()["name"], SECRET_NAME);
        let unknown = http(&remote, "GET", "/api/jobs/999", &auth, b"").await;
        assert_eq!(unknown.status, 404);
    }

    // The read token reads only.
    let json = ("Content-Type", "application/json");
    let reader = bearer(READ_TOKEN);
    let cancel = format!("/api/batches/{batch}/cancel");
    let response = http(
        &remote,
        "POST",
        &cancel,
        &[json, ("Authorization", &reader)],
        b"",
    )
    .await;
    assert_eq!(response.status, 403, "{response:?}");
    assert!(response.body.contains("may only read"), "{response:?}");
    assert_eq!(
        cluster.client().await.batch(batch).await.unwrap().cancelled,
        0
    );

    // The page and the metrics are open, and the metrics hold no job data.
    for path in ["/", "/assets/dashboard.js", "/assets/dashboard.css"] {
        assert_eq!(
            http(&remote, "GET", path, &[], b"").await.status,
            200,
            "{path}"
        );
    }
    let metrics = http(&remote, "GET", "/metrics", &[], b"").await;
    assert_eq!(metrics.status, 200);
    assert!(
        metrics.body.contains("drover_jobs{state=\"pending\"} 1"),
        "{}",
        metrics.body
    );
    assert!(!metrics.body.contains(SECRET_NAME), "{}", metrics.body);

    // On the coordinator's own machine, by a loopback name, reads need no token.
    let local = format!("127.0.0.1:{http_port}");
    let response = http_in(&hosts.coordinator, &local, "/api/jobs/1", &[]);
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.json()["name"], SECRET_NAME);
    assert!(response
        .headers
        .to_ascii_lowercase()
        .contains("x-drover-access: read"));
    // A page whose name was rebound to 127.0.0.1 sends its own name, whatever else it says
    // (headers a page may set on its own requests): it reads nothing.
    for forwarded in [
        vec![],
        vec![("X-Forwarded-Host", "localhost")],
        vec![("Forwarded", "host=localhost")],
    ] {
        let mut headers = vec![("Host", "attacker.example")];
        headers.extend(forwarded);
        let rebound = http_in(&hosts.coordinator, &local, "/api/jobs/1", &headers);
        assert_eq!(rebound.status, 401, "{headers:?}: {rebound:?}");
    }

    // The client token changes, from anywhere.
    let client = bearer(CLIENT_TOKEN);
    let response = http(
        &remote,
        "POST",
        &cancel,
        &[json, ("Authorization", &client)],
        b"",
    )
    .await;
    assert_eq!(response.status, 200, "{response:?}");

    // With no token configured, HTTP is for loopback only, as the binary protocol is.
    cluster.kill_coordinator();
    cluster.coordinator_env.clear();
    cluster.start_coordinator().await;
    let response = http(&remote, "GET", "/api/status", &[], b"").await;
    assert_eq!(response.status, 401, "{response:?}");
    assert!(
        response.body.contains("loopback only") && response.body.contains("DROVER_READ_TOKEN"),
        "{response:?}"
    );
    let response = http(
        &remote,
        "GET",
        "/api/jobs/1",
        &[("Authorization", &bearer("anything"))],
        b"",
    )
    .await;
    assert_eq!(response.status, 401, "{response:?}");
    let response = http_in(&hosts.coordinator, &local, "/api/status", &[]);
    assert_eq!(response.status, 200, "{response:?}");
    assert!(response
        .headers
        .to_ascii_lowercase()
        .contains("x-drover-access: change"));
    assert!(
        cluster
            .coordinator_log()
            .contains("answered on loopback only"),
        "the coordinator says so at start:\n{}",
        cluster.coordinator_log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_asks_a_remote_reader_for_a_token_once() {
    let Some((_turn, hosts)) = hosts().await else {
        return;
    };
    let http_port = free_port();
    let mut cluster = remote_cluster(
        &hosts,
        http_port,
        &[
            ("DROVER_TOKEN", CLIENT_TOKEN),
            ("DROVER_READ_TOKEN", READ_TOKEN),
        ],
    );
    cluster.start_coordinator().await;
    let batch = submit_named_job(&cluster).await;
    let (_driver, browser) = browser::start_browser().await;
    let page = format!("http://{}:{http_port}/", hosts.coordinator_address);
    browser.goto(&page).await.unwrap();

    // Without a token the page loads, shows no data, and asks for one.
    let said = wait_for(
        Duration::from_secs(20),
        "the page to ask for a token",
        || async {
            let connection = browser::text_of(&browser, "#connection").await?;
            (connection == "token needed").then_some(())?;
            browser::text_of(&browser, "#token-needed").await
        },
    )
    .await;
    assert!(said.contains("needs a token"), "{said}");
    let row = format!("#batches tr[data-batch='{batch}']");
    assert!(browser::text_of(&browser, &row).await.is_none());

    // The read token, entered once: the data, and no buttons to change anything.
    let token_field = browser.find(Locator::Css("#token")).await.unwrap();
    token_field.send_keys(READ_TOKEN).await.unwrap();
    browser
        .find(Locator::Css("#token-save"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let shown = wait_for(Duration::from_secs(20), "the batch on the page", || async {
        browser::text_of(&browser, &format!("{row} td:nth-child(2)")).await
    })
    .await;
    assert_eq!(shown, SECRET_NAME);
    assert_eq!(
        browser::text_of(&browser, "#connection").await.as_deref(),
        Some("live")
    );
    assert!(browser
        .find_all(Locator::Css(&format!("{row} button")))
        .await
        .unwrap()
        .is_empty());

    // Kept for the session: a reload asks nothing and shows the data.
    browser.refresh().await.unwrap();
    wait_for(
        Duration::from_secs(20),
        "the batch after a reload",
        || async { browser::text_of(&browser, &format!("{row} td:nth-child(2)")).await },
    )
    .await;
    assert_eq!(
        browser
            .find(Locator::Css("#token-needed"))
            .await
            .unwrap()
            .attr("class")
            .await
            .unwrap()
            .as_deref(),
        Some("notice hidden")
    );

    // The client token: the page offers to cancel.
    let token_field = browser.find(Locator::Css("#token")).await.unwrap();
    token_field.clear().await.unwrap();
    token_field.send_keys(CLIENT_TOKEN).await.unwrap();
    browser
        .find(Locator::Css("#token-save"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let label = wait_for(Duration::from_secs(20), "a cancel button", || async {
        browser::text_of(&browser, &format!("{row} button")).await
    })
    .await;
    assert_eq!(label, "cancel");
    browser.close().await.unwrap();
}
