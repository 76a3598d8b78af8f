//! The elastic fleet's pools as every view shows them: `drover pools` and `drover status` (the
//! real CLI), `/api/pools`, `/api/status`, `/metrics` and the dashboard in headless Chromium.
//! What is asserted comes from the configuration (names, providers, min and max, their order),
//! and the counts are compared across views, whatever the Fleet counted.

#[path = "common/browser.rs"]
mod browser;
mod common;

use browser::*;
use common::in_process::{process_pool, spawn_coordinator};
use common::*;
use drover::status::{ClusterStatus, PoolInfo};
use serde_json::{json, Value};
use std::time::Duration;

/// The fields of `drover pools --json` (DESIGN.md), beside `last_error` (null while none stands).
const FIELDS: [&str; 11] = [
    "name",
    "provider",
    "min",
    "max",
    "desired",
    "booting",
    "idle",
    "busy",
    "launched",
    "failed_launches",
    "terminated",
];

async fn get(address: &str, path: &str) -> HttpResponse {
    let response = http(address, "GET", path, &[], b"").await;
    assert_eq!(response.status, 200, "{path}: {response:?}");
    response
}

/// The value of the sample `name{labels}` on a metrics page.
fn sample(page: &str, name: &str, labels: &str) -> Option<u64> {
    let prefix = format!("{name}{{{labels}}} ");
    page.lines()
        .find_map(|line| line.strip_prefix(&prefix)?.parse().ok())
}

/// A pool's figures as `/metrics` has them, in the order of [`PoolInfo`]'s counts.
fn pool_from_metrics(page: &str, pool: &str) -> [u64; 9] {
    let label = format!("pool=\"{pool}\"");
    let by_state = |state: &str| format!("{label},state=\"{state}\"");
    let figures = [
        ("drover_pool_min_workers", label.clone()),
        ("drover_pool_max_workers", label.clone()),
        ("drover_pool_desired_workers", label.clone()),
        ("drover_pool_workers", by_state("booting")),
        ("drover_pool_workers", by_state("idle")),
        ("drover_pool_workers", by_state("busy")),
        ("drover_pool_launched_total", label.clone()),
        ("drover_pool_failed_launches_total", label.clone()),
        ("drover_pool_terminated_total", label.clone()),
    ];
    figures.map(|(name, labels)| {
        sample(page, name, &labels).unwrap_or_else(|| panic!("no {name}{{{labels}}} in\n{page}"))
    })
}

fn figures(pool: &PoolInfo) -> [u64; 9] {
    [
        pool.min.into(),
        pool.max.into(),
        pool.desired.into(),
        pool.booting.into(),
        pool.idle.into(),
        pool.busy.into(),
        pool.launched,
        pool.failed_launches,
        pool.terminated,
    ]
}

/// A pool's row on the dashboard, cell by cell, as `renderPools` writes it.
fn dashboard_row(pool: &PoolInfo) -> Value {
    json!({
        "pool": pool.name,
        "cells": [
            pool.name.clone(),
            pool.provider.clone(),
            format!("{} / {}", pool.min, pool.max),
            pool.desired.to_string(),
            pool.booting.to_string(),
            pool.idle.to_string(),
            pool.busy.to_string(),
            pool.launched.to_string(),
            pool.failed_launches.to_string(),
            pool.terminated.to_string(),
            pool.last_error.clone().unwrap_or_else(|| "–".into()),
        ],
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_view_shows_the_configured_pools_alike() {
    let (cluster, coordinator) = spawn_coordinator(|config| {
        config.pools = vec![
            process_pool("cpu", 3, &[]),
            process_pool("ssd", 2, &["ssd"]),
        ];
    });
    let http_address = cluster.http_address().unwrap().to_string();

    // `drover pools --json`: the contract's fields, the configured pools in their order.
    let output = cluster.cli(&["pools", "--json"]);
    assert!(output.status.success(), "{}", stderr_of(&output));
    let raw: Value = serde_json::from_str(&stdout_of(&output)).unwrap();
    for pool in raw.as_array().expect("a JSON array") {
        let mut keys: Vec<&str> = pool
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .filter(|key| *key != "last_error")
            .collect();
        keys.sort_unstable();
        let mut expected = FIELDS.to_vec();
        expected.sort_unstable();
        assert_eq!(keys, expected, "{pool}");
    }
    let pools: Vec<PoolInfo> = serde_json::from_value(raw).unwrap();
    let configured: Vec<(&str, &str, u32, u32)> = pools
        .iter()
        .map(|pool| (&*pool.name, &*pool.provider, pool.min, pool.max))
        .collect();
    assert_eq!(
        configured,
        [("cpu", "process", 0, 3), ("ssd", "process", 0, 2)]
    );

    // The same pools in `drover status --json`, `/api/pools` and `/api/status`.
    let output = cluster.cli(&["status", "--json"]);
    assert!(output.status.success(), "{}", stderr_of(&output));
    let status: ClusterStatus = serde_json::from_str(&stdout_of(&output)).unwrap();
    assert_eq!(status.pools, pools);
    let over_http: Vec<PoolInfo> =
        serde_json::from_str(&get(&http_address, "/api/pools").await.body).unwrap();
    assert_eq!(over_http, pools);
    let status: ClusterStatus =
        serde_json::from_str(&get(&http_address, "/api/status").await.body).unwrap();
    assert_eq!(status.pools, pools);

    // `/metrics`: each pool's figures, labelled by pool.
    let page = get(&http_address, "/metrics").await.body;
    for pool in &pools {
        assert_eq!(
            pool_from_metrics(&page, &pool.name),
            figures(pool),
            "{pool:?}"
        );
    }

    // As people read them: a table row each, and a line each in the status screen.
    let output = cluster.cli(&["pools"]);
    assert!(output.status.success(), "{}", stderr_of(&output));
    let table = stdout_of(&output);
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("NAME") && lines[0].contains("LAST ERROR"),
        "{table}"
    );
    for (line, pool) in lines[1..].iter().zip(&pools) {
        let cells: Vec<&str> = line.split_whitespace().collect();
        let max = format!("{}/{}", pool.min, pool.max);
        assert_eq!(cells[..3], [&*pool.name, "process", &*max], "{table}");
    }
    assert_eq!(lines.len(), 3, "{table}");
    let screen = stdout_of(&cluster.cli(&["status"]));
    for pool in &pools {
        let line = format!(
            "{} (process, 0-{}): {} desired, {} booting, {} idle, {} busy",
            pool.name, pool.max, pool.desired, pool.booting, pool.idle, pool.busy
        );
        assert!(screen.contains(&line), "{line}\n{screen}");
    }
    assert!(screen.contains("\npools      cpu (process"), "{screen}");

    // The dashboard: a pools section, a row each, the figures of `/api/pools`.
    let (_driver, browser) = start_browser().await;
    browser
        .goto(&format!("http://{http_address}/"))
        .await
        .unwrap();
    // The page is redrawn every second: the section and its rows are read in one script.
    let script = "const section = document.getElementById('pools-section');\
                  return { hidden: section.classList.contains('hidden'),\
                  rows: Array.from(section.querySelectorAll('tbody tr')).map(row => ({\
                  pool: row.dataset.pool,\
                  cells: Array.from(row.cells).map(cell => cell.textContent) })) };";
    let shown = wait_for(Duration::from_secs(20), "the pools on the page", || async {
        let shown = browser.execute(script, vec![]).await.ok()?;
        (shown["rows"].as_array()?.len() == pools.len()).then_some(shown)
    })
    .await;
    assert_eq!(shown["hidden"], false, "{shown}");
    let over_http: Vec<PoolInfo> =
        serde_json::from_str(&get(&http_address, "/api/pools").await.body).unwrap();
    let expected: Vec<Value> = over_http.iter().map(dashboard_row).collect();
    assert_eq!(shown["rows"], Value::Array(expected));
    browser.close().await.unwrap();
    tokio::task::spawn_blocking(move || coordinator.stop())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_without_pools_shows_none() {
    let http_address = format!("127.0.0.1:{}", free_port());
    let cluster = Cluster::start(&["--http", &http_address]).await;

    let output = cluster.cli(&["pools"]);
    assert!(output.status.success(), "{}", stderr_of(&output));
    assert!(
        stdout_of(&output).starts_with("no pools configured"),
        "{}",
        stdout_of(&output)
    );
    let output = cluster.cli(&["pools", "--json"]);
    assert!(output.status.success(), "{}", stderr_of(&output));
    assert_eq!(
        serde_json::from_str::<Value>(&stdout_of(&output)).unwrap(),
        json!([])
    );

    let output = cluster.cli(&["status", "--json"]);
    let status: Value = serde_json::from_str(&stdout_of(&output)).unwrap();
    assert_eq!(status["pools"], json!([]), "{status}");
    let screen = stdout_of(&cluster.cli(&["status"]));
    assert!(!screen.contains("\npools "), "{screen}");

    assert_eq!(get(&http_address, "/api/pools").await.json(), json!([]));
    assert_eq!(
        get(&http_address, "/api/status").await.json()["pools"],
        json!([])
    );
    let page = get(&http_address, "/metrics").await.body;
    assert!(!page.contains("drover_pool"), "{page}");
    assert!(page.contains("drover_workers"), "{page}");
}
