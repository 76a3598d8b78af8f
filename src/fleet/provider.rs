//! What the Fleet asks of a provider of machines: launch, terminate, list its own.

use super::config::PoolConfig;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// A provider's answer, awaited off the Fleet's event loop.
pub type ProviderFuture<T> = Pin<Box<dyn Future<Output = Result<T, ProviderError>> + Send>>;

/// Why a provider could not do what it was asked, in the provider's own words (shown in
/// `drover pools` and the log).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ProviderError {
    /// The provider's message (for EC2, its error code and message: `InsufficientInstanceCapacity: …`).
    pub message: String,
}

impl ProviderError {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        ProviderError {
            message: message.into(),
        }
    }
}

/// A machine a provider started for a pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    /// The provider's id for it (an instance id, `process-<pid>`): its worker registers with
    /// it (`--machine-id`), which is how the Fleet knows the worker is the machine's.
    pub id: String,
    /// When it was launched (ms since the Unix epoch), for the boot timeout.
    pub launched_at_ms: u64,
}

/// What to launch.
#[derive(Debug, Clone)]
pub struct LaunchRequest {
    /// The pool.
    pub pool: Arc<PoolConfig>,
    /// How many machines.
    pub count: u32,
    /// The cluster's id (the ledger's): machines are tagged with it.
    pub cluster: String,
    /// The protocol address(es) workers connect to (`host:port[,host:port]`).
    pub coordinator: String,
}

/// Starts and stops one kind of machine. Calls may take seconds (an EC2 API); the Fleet awaits
/// them on a task of their own.
pub trait Provider: Send + Sync + 'static {
    /// Launches up to `request.count` machines; answers those that started (maybe fewer).
    fn launch(&self, request: LaunchRequest) -> ProviderFuture<Vec<Machine>>;
    /// Stops these machines (ids from [`Provider::launch`] or [`Provider::list`]). Stopping one
    /// already gone is not an error.
    fn terminate(&self, pool: &str, machines: Vec<String>) -> ProviderFuture<()>;
    /// The machines tagged with `cluster` and `pool` that are alive (starting or running): a
    /// restarted coordinator adopts these rather than launching more.
    fn list(&self, cluster: &str, pool: &str) -> ProviderFuture<Vec<Machine>>;
    /// True when the provider knows this machine is gone (a process that exited): the Fleet
    /// then retires it at once rather than waiting for its worker to connect again. False when
    /// it cannot tell cheaply, without I/O (it is asked on the Fleet's event loop).
    fn gone(&self, _machine: &str) -> bool {
        false
    }
}
