//! Call handlers: named functions a worker runs for `call` jobs.

use futures::future::BoxFuture;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// What a handler learns about the attempt it serves.
#[derive(Debug, Clone)]
pub struct CallContext {
    /// The job.
    pub job: u64,
    /// Its batch.
    pub batch: u64,
    /// The attempt's number.
    pub attempt: u32,
    /// The attempt's scratch directory, when the job has inputs or outputs: its inputs are
    /// there, and its outputs go there.
    pub scratch: Option<std::path::PathBuf>,
}

/// A handler: payload in, output (or an error message) out.
pub type Handler =
    Arc<dyn Fn(CallContext, Vec<u8>) -> BoxFuture<'static, Result<Vec<u8>, String>> + Send + Sync>;

/// The handlers a worker offers, by name.
#[derive(Clone, Default)]
pub struct Handlers {
    /// Shared: every attempt gets a copy of the table, and copying it must cost nothing.
    by_name: Arc<HashMap<String, Handler>>,
}

impl Handlers {
    /// No handlers at all.
    pub fn empty() -> Self {
        Handlers::default()
    }

    /// The stock worker's handlers: `noop` echoes its payload, `sleep` waits for the number of
    /// milliseconds in its payload.
    pub fn stock() -> Self {
        let mut handlers = Handlers::empty();
        handlers.register("noop", |_context, payload| async move { Ok(payload) });
        handlers.register("sleep", |_context, payload| async move {
            let text = String::from_utf8_lossy(&payload);
            let millis: u64 = text.trim().parse().map_err(|_| {
                format!("sleep: payload must be a number of milliseconds, got {text:?}")
            })?;
            tokio::time::sleep(Duration::from_millis(millis)).await;
            Ok(Vec::new())
        });
        handlers
    }

    /// Adds (or replaces) a handler.
    pub fn register<F, Fut>(&mut self, name: &str, handler: F) -> &mut Self
    where
        F: Fn(CallContext, Vec<u8>) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<Vec<u8>, String>> + Send + 'static,
    {
        let boxed: Handler = Arc::new(move |context, payload| Box::pin(handler(context, payload)));
        Arc::make_mut(&mut self.by_name).insert(name.to_string(), boxed);
        self
    }

    /// The handler of that name.
    pub fn get(&self, name: &str) -> Option<Handler> {
        self.by_name.get(name).cloned()
    }
}
