//! Any bytes sent to a real coordinator's port, as the first thing a peer says: the coordinator
//! answers or closes, and never panics (a panic anywhere aborts this process, which is the
//! crash libFuzzer reports). One coordinator serves every input.
#![no_main]

use drover::coordinator::{self, CoordinatorConfig, SpawnedCoordinator};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Target {
    _coordinator: SpawnedCoordinator,
    _ledger: tempfile::TempDir,
    address: std::net::SocketAddr,
    runtime: tokio::runtime::Runtime,
}

fn target() -> &'static Target {
    static TARGET: OnceLock<Target> = OnceLock::new();
    TARGET.get_or_init(|| {
        let ledger = tempfile::tempdir().expect("a temporary directory");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let config = CoordinatorConfig {
            handshake_timeout: Duration::from_millis(200),
            ..CoordinatorConfig::new(ledger.path())
        };
        let coordinator = coordinator::spawn(listener, config).expect("a coordinator");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        Target {
            address: coordinator.local_addr,
            _coordinator: coordinator,
            _ledger: ledger,
            runtime,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let target = target();
    target.runtime.block_on(async {
        let Ok(mut stream) = tokio::net::TcpStream::connect(target.address).await else {
            return;
        };
        let _ = stream.write_all(data).await;
        let _ = stream.shutdown().await;
        // Whatever it answers, briefly; the coordinator's own deadline closes the rest.
        let mut answer = [0u8; 4096];
        let _ = tokio::time::timeout(Duration::from_millis(20), async {
            while let Ok(read) = stream.read(&mut answer).await {
                if read == 0 {
                    break;
                }
            }
        })
        .await;
    });
});
