//! A coordinator and workers in one process, on loopback: `drover local` and the examples.

use crate::coordinator::{self, CoordinatorConfig, SpawnedCoordinator, StartError};
use crate::job::LedgerId;
use crate::worker::{self, Handlers, WorkerConfig};
use std::path::PathBuf;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A running local cluster.
pub struct LocalCluster {
    /// The coordinator's address, for clients.
    pub address: String,
    /// Its ledger's own id: outputs go under `<to>ledger-<id>/`.
    pub ledger_id: LedgerId,
    coordinator: Option<SpawnedCoordinator>,
    shutdown: watch::Sender<bool>,
    workers: Vec<JoinHandle<()>>,
}

/// What a local cluster looks like.
pub struct LocalConfig {
    /// The coordinator's settings (its ledger directory, mainly).
    pub coordinator: CoordinatorConfig,
    /// How many workers.
    pub workers: usize,
    /// Slots per worker.
    pub slots: u32,
    /// Where the workers' scratch directories go.
    pub scratch_dir: PathBuf,
    /// The handlers every worker offers.
    pub handlers: Handlers,
}

impl LocalCluster {
    /// Starts the coordinator on a free loopback port and the workers on the current tokio
    /// runtime; they are named `worker-1`, `worker-2`, ...
    pub fn start(config: LocalConfig) -> Result<LocalCluster, StartError> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let coordinator = coordinator::spawn(listener, config.coordinator)?;
        let address = coordinator.local_addr.to_string();
        let ledger_id = coordinator.ledger_id;
        let (shutdown, watcher) = watch::channel(false);
        let workers = (1..=config.workers)
            .map(|index| {
                let worker_config = WorkerConfig {
                    coordinator: address.clone(),
                    name: format!("worker-{index}"),
                    slots: config.slots,
                    labels: Vec::new(),
                    scratch_dir: config.scratch_dir.join(format!("worker-{index}")),
                    secret: None,
                    handlers: config.handlers.clone(),
                    s3: Default::default(),
                    tls: None,
                    member: None,
                };
                let mut watcher = watcher.clone();
                tokio::spawn(async move {
                    let stop = async move {
                        let _ = watcher.wait_for(|stop| *stop).await;
                    };
                    if let Err(error) = worker::run(worker_config, stop).await {
                        tracing::error!(%error, "local worker stopped");
                    }
                })
            })
            .collect();
        Ok(LocalCluster {
            address,
            ledger_id,
            coordinator: Some(coordinator),
            shutdown,
            workers,
        })
    }

    /// Drains the workers, then stops the coordinator.
    pub async fn stop(mut self) {
        let _ = self.shutdown.send(true);
        for worker in self.workers.drain(..) {
            let _ = worker.await;
        }
        if let Some(coordinator) = self.coordinator.take() {
            let _ = tokio::task::spawn_blocking(move || coordinator.stop()).await;
        }
    }
}
