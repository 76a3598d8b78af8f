//! A real browser for the dashboard tests: headless Chromium, driven through chromedriver.
//! Needs Debian's `chromium` and `chromium-driver` (`scripts/test.sh` installs them).
#![allow(dead_code)]

use crate::common::{free_port, wait_for};
pub use fantoccini::Client as Browser;
use fantoccini::{ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// chromedriver as a child process, killed when dropped.
pub struct Driver {
    child: Child,
    port: u16,
    _profile: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn program(variable: &str, default: &str) -> String {
    std::env::var(variable).unwrap_or_else(|_| default.to_string())
}

pub async fn start_browser() -> (Driver, Browser) {
    let chromedriver = program("CHROMEDRIVER", "/usr/bin/chromedriver");
    let chromium = program("CHROMIUM", "/usr/bin/chromium");
    for path in [&chromedriver, &chromium] {
        assert!(
            std::path::Path::new(path).exists(),
            "{path} is missing: install Debian's chromium and chromium-driver \
             (apt-get install chromium chromium-driver), as .ci/run does"
        );
    }
    let port = free_port();
    let child = Command::new(&chromedriver)
        .arg(format!("--port={port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let driver = Driver {
        child,
        port,
        _profile: tempfile::tempdir().unwrap(),
    };
    let address = format!("127.0.0.1:{port}");
    wait_for(
        Duration::from_secs(30),
        "chromedriver to listen",
        || async { tokio::net::TcpStream::connect(&address).await.ok() },
    )
    .await;
    // No network beyond loopback here: keep Chromium from trying to reach Google at start.
    let capabilities = json!({
        "goog:chromeOptions": {
            "binary": chromium,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--window-size=1280,1000",
                format!("--user-data-dir={}", driver._profile.path().display()),
            ]
        }
    });
    let serde_json::Value::Object(capabilities) = capabilities else {
        unreachable!("a JSON object literal")
    };
    // chromedriver speaks plain HTTP on loopback: no TLS client needed.
    let browser = ClientBuilder::new(HttpConnector::new())
        .capabilities(capabilities)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("a Chromium session");
    (driver, browser)
}

/// The text of the first element `css` finds, or None if there is none yet.
pub async fn text_of(browser: &Browser, css: &str) -> Option<String> {
    let element = browser.find(Locator::Css(css)).await.ok()?;
    element.text().await.ok()
}

/// The attribute `name` of every element `css` finds, read in one script so that a page
/// re-rendering between two WebDriver calls cannot leave a stale element in hand.
pub async fn attributes_of(browser: &Browser, css: &str, name: &str) -> Vec<String> {
    let script = "return Array.from(document.querySelectorAll(arguments[0]))\
                  .map(element => element.getAttribute(arguments[1]) || '');";
    let values = browser
        .execute(script, vec![json!(css), json!(name)])
        .await
        .expect("the page runs a script");
    serde_json::from_value(values).expect("a list of strings")
}
