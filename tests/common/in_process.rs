//! A coordinator started in the test's own process, for configurations no flag gives yet (pools
//! built as values), with the same [`Cluster`] around it for the CLI, workers and HTTP.

use super::{free_port, Cluster, WORKER};
use drover::coordinator::{CoordinatorConfig, SpawnedCoordinator};
use drover::fleet::{PoolConfig, ProcessConfig, ProviderConfig};
use std::time::Duration;

/// Starts a coordinator on loopback with HTTP, configured by `configure`; the returned
/// [`Cluster`] has its addresses (`address`, `http_address()`). It stops when dropped.
pub fn spawn_coordinator(
    configure: impl FnOnce(&mut CoordinatorConfig),
) -> (Cluster, SpawnedCoordinator) {
    let http = format!("127.0.0.1:{}", free_port());
    let mut cluster = Cluster::new(&["--http", &http]);
    let mut config = CoordinatorConfig::new(cluster.data_dir());
    config.http = Some(http);
    configure(&mut config);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let coordinator = drover::coordinator::spawn(listener, config).expect("the coordinator starts");
    cluster.address = coordinator.local_addr.to_string();
    (cluster, coordinator)
}

/// A pool of local `drover-worker` processes that keeps none (`min` 0) unless jobs ask for them.
pub fn process_pool(name: &str, max: u32, labels: &[&str]) -> PoolConfig {
    PoolConfig {
        name: name.into(),
        min: 0,
        max,
        slots: 1,
        labels: labels.iter().map(|label| label.to_string()).collect(),
        idle_timeout: Duration::from_secs(60),
        boot_timeout: Duration::from_secs(30),
        max_launches_per_minute: 10,
        provider: ProviderConfig::Process(ProcessConfig {
            command: vec![WORKER.into()],
        }),
    }
}
