//! The dashboard in a real browser: headless Chromium, driven through chromedriver, against a
//! live coordinator with workers and batches. Needs Debian's `chromium` and `chromium-driver`
//! (`.ci/run` installs them). Leaves a screenshot at `target/tmp/dashboard.png`.

#[path = "common/browser.rs"]
mod browser;
mod common;

use browser::*;
use common::*;
use fantoccini::Locator;
use std::time::{Duration, Instant};

const TOKEN: &str = "dashboard-secret";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_workers_and_progress_live() {
    let http_address = format!("127.0.0.1:{}", free_port());
    let mut cluster = Cluster::new(&["--http", &http_address]);
    cluster
        .coordinator_env
        .push(("DROVER_TOKEN".into(), TOKEN.into()));
    cluster.start_coordinator().await;
    cluster.start_worker("alpha", 2, &[]);
    cluster.start_worker("beta", 2, &[]);
    cluster.wait_for_workers(2).await;
    let mut client = cluster.client_with(TOKEN).await;

    let (_driver, browser) = start_browser().await;
    browser
        .goto(&format!("http://{http_address}/"))
        .await
        .unwrap();

    // Both workers appear, each with its own row.
    for name in ["alpha", "beta"] {
        let css = format!("#workers tr[data-worker='{name}'] td.state");
        wait_for(
            Duration::from_secs(20),
            &format!("worker {name} on the page"),
            || async { text_of(&browser, &css).await },
        )
        .await;
    }

    // No pools configured: no pools section (`tests/pool_views.rs` shows one).
    let pools = attributes_of(&browser, "#pools-section", "class").await;
    assert_eq!(pools, ["hidden"], "the pools section is there, hidden");
    assert!(attributes_of(&browser, "#pools tr[data-pool]", "data-pool")
        .await
        .is_empty());

    // Submitted once the page is up: its progress moves while the page is open, without a
    // reload.
    let jobs = (0..24)
        .map(|_| drover::jobfile::parse_line(1, &recording_job(0.5)).unwrap())
        .collect();
    let batch = client.submit("squares", jobs).await.unwrap().batch;
    let done_css = format!("#batches tr[data-batch='{batch}'] td.done");
    let mut seen: Vec<String> = Vec::new();
    let mut saw_running_job = false;
    let mut screenshot_taken = false;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(done) = text_of(&browser, &done_css).await {
            if seen.last() != Some(&done) {
                seen.push(done.clone());
            }
            if done == "24/24" {
                break;
            }
            if !screenshot_taken && !done.starts_with("0/") {
                // Mid-run, with workers busy: the picture worth keeping.
                let png = browser.screenshot().await.unwrap();
                let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
                std::fs::write(&path, png).unwrap();
                eprintln!("dashboard screenshot: {}", path.display());
                screenshot_taken = true;
            }
        }
        if let Some(current) = text_of(&browser, "#workers td.current").await {
            saw_running_job |= current.contains('(');
        }
        assert!(
            Instant::now() < deadline,
            "the batch did not reach 24/24 on the page; seen {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        seen.len() >= 3,
        "the progress changed several times on the open page: {seen:?}"
    );
    assert!(screenshot_taken, "a screenshot was kept mid-run");
    assert!(
        saw_running_job,
        "a worker's current job was shown with its age"
    );
    assert_eq!(
        text_of(
            &browser,
            &format!("#batches tr[data-batch='{batch}'] td.eta")
        )
        .await
        .as_deref(),
        Some("done")
    );
    // Each worker's done count, as the page shows it, adds up to the batch.
    // The page re-renders every poll, so an element found may be replaced before it is read:
    // each count is read again until it is there.
    let mut done_by_workers = 0;
    for name in ["alpha", "beta"] {
        let css = format!("#workers tr[data-worker='{name}'] td.worker-done");
        done_by_workers += wait_for(Duration::from_secs(10), "a worker's done count", || async {
            text_of(&browser, &css).await?.parse::<u64>().ok()
        })
        .await;
    }
    assert_eq!(done_by_workers, 24);
    let heights = attributes_of(&browser, "#chart rect", "height").await;
    assert!(
        heights
            .iter()
            .any(|height| height.parse::<f64>().unwrap_or(0.0) > 0.0),
        "the throughput chart shows the finished jobs"
    );

    // A worker that drains and leaves is shown calmly, as left: not in red, not as lost.
    cluster.start_worker("gamma", 1, &[]);
    let gamma = "#workers tr[data-worker='gamma']";
    wait_for(
        Duration::from_secs(20),
        "worker gamma on the page",
        || async { text_of(&browser, &format!("{gamma} td.state")).await },
    )
    .await;
    cluster.signal_worker("gamma", libc::SIGTERM);
    let heard = wait_for(Duration::from_secs(20), "gamma shown as left", || async {
        let state = text_of(&browser, &format!("{gamma} td.state")).await?;
        let heard = text_of(&browser, &format!("{gamma} td.heartbeat")).await?;
        (state == "left").then_some(heard)
    })
    .await;
    assert!(heard.starts_with("left "), "{heard}");
    let class = attributes_of(&browser, &format!("{gamma} td.heartbeat"), "class")
        .await
        .concat();
    assert!(
        !class.contains("stale"),
        "a clean leave is no alarm: {class}"
    );

    // Read-only without the client secret: no buttons. With it, a running batch can be cancelled.
    let long = client
        .submit(
            "long",
            vec![drover::jobfile::parse_line(1, &recording_job(60.0)).unwrap()],
        )
        .await
        .unwrap()
        .batch;
    let row = format!("#batches tr[data-batch='{long}']");
    wait_for(
        Duration::from_secs(20),
        "the long batch on the page",
        || async { text_of(&browser, &format!("{row} td.done")).await },
    )
    .await;
    assert!(
        browser
            .find_all(Locator::Css(&format!("{row} button")))
            .await
            .unwrap()
            .is_empty(),
        "no actions without the token"
    );
    browser
        .find(Locator::Css("#token"))
        .await
        .unwrap()
        .send_keys(TOKEN)
        .await
        .unwrap();
    browser
        .find(Locator::Css("#token-save"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    // The rows are redrawn every second, so a button found may be gone by the click: find and
    // click again until the batch is cancelled.
    let button = format!("{row} button");
    let button = &button;
    let browser = &browser;
    let mut labels = Vec::new();
    let mut cancelled = false;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cancelled {
        assert!(
            Instant::now() < deadline,
            "the cancel button did not cancel; saw {labels:?}"
        );
        if let Ok(found) = browser.find(Locator::Css(button)).await {
            if let Ok(label) = found.text().await {
                labels.push(label);
            }
            let _ = found.click().await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        cancelled = client.batch(long).await.unwrap().cancelled == 1;
    }
    assert!(labels.iter().all(|label| label == "cancel"), "{labels:?}");
    let cancelled = wait_batch_done(&mut client, long, Duration::from_secs(30)).await;
    assert_eq!((cancelled.cancelled, cancelled.succeeded), (1, 0));

    // A job no worker can take: the page says why it waits.
    assert!(text_of(browser, "#waiting li").await.is_none());
    let mut tpu_job = drover::job::JobSpec::exec(["true"]);
    tpu_job.requires = vec!["tpu".into()];
    let stuck = client.submit("stuck", vec![tpu_job]).await.unwrap();
    assert_eq!(stuck.unplaceable.len(), 1, "{stuck:?}");
    let shown = wait_for(
        Duration::from_secs(20),
        "why the job waits, on the page",
        || async { text_of(browser, "#waiting li.blocked").await },
    )
    .await;
    assert_eq!(shown, "1 job: no connected worker has label tpu");
    browser.clone().close().await.unwrap();
}
