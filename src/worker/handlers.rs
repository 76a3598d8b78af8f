//! Call handlers: named functions a worker runs for `call` jobs, on bytes or on JSON.

use futures::future::BoxFuture;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::HashMap;
use std::future::Future;
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

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallError {
    /// What went wrong, in words.
    pub message: String,
    /// Another attempt would fail the same way (a payload the handler cannot read): the job
    /// fails now rather than after `max_attempts`.
    pub permanent: bool,
}

impl From<String> for CallError {
    /// A failure that may pass next time.
    fn from(message: String) -> Self {
        CallError {
            message,
            permanent: false,
        }
    }
}

/// A handler: payload in, result bytes (or why not) out.
pub type Handler = Arc<
    dyn Fn(CallContext, Vec<u8>) -> BoxFuture<'static, Result<Vec<u8>, CallError>> + Send + Sync,
>;

/// A function [`Handlers::register_json`] takes: `Fn(CallContext, In) -> impl Future<Output =
/// Result<Out, String>>`. Every such closure or function has it; there is nothing to implement.
pub trait JsonHandler<In, Out>:
    Fn(CallContext, In) -> <Self as JsonHandler<In, Out>>::Future + Send + Sync + 'static
{
    /// What the function returns.
    type Future: Future<Output = Result<Out, String>> + Send + 'static;
}

impl<In, Out, F, Fut> JsonHandler<In, Out> for F
where
    F: Fn(CallContext, In) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Out, String>> + Send + 'static,
{
    type Future = Fut;
}

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

    /// Adds (or replaces) a handler on bytes: the job's payload in, its result out (at most
    /// the coordinator's `--max-result-bytes`, or the attempt fails). An error fails the
    /// attempt with that message, and the job is tried again up to its `max_attempts`.
    ///
    /// ```
    /// use drover::worker::Handlers;
    ///
    /// let mut handlers = Handlers::stock();
    /// handlers.register("upper", |_context, payload| async move {
    ///     Ok(payload.to_ascii_uppercase())
    /// });
    /// ```
    pub fn register<F, Fut>(&mut self, name: &str, handler: F) -> &mut Self
    where
        F: Fn(CallContext, Vec<u8>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<u8>, String>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let boxed: Handler = Arc::new(move |context, payload| {
            let returned = handler(context, payload);
            Box::pin(async move { returned.await.map_err(CallError::from) })
        });
        Arc::make_mut(&mut self.by_name).insert(name.to_string(), boxed);
        self
    }

    /// Adds (or replaces) a handler on JSON: the job's payload is read as an `In`, and the
    /// `Out` returned is the job's result, written as JSON.
    ///
    /// A payload that is not an `In` fails the attempt for good (another attempt would read
    /// the same bytes), with a message naming the handler and what serde found wrong; an
    /// error the function returns fails the attempt with that message, to be tried again up to
    /// the job's `max_attempts`.
    ///
    /// ```
    /// use drover::worker::Handlers;
    /// use serde::{Deserialize, Serialize};
    ///
    /// #[derive(Deserialize)]
    /// struct Add {
    ///     a: i64,
    ///     b: i64,
    /// }
    ///
    /// #[derive(Serialize)]
    /// struct Sum {
    ///     sum: i64,
    /// }
    ///
    /// let mut handlers = Handlers::stock();
    /// handlers.register_json::<Add, Sum>("add", |_context, add| async move {
    ///     let sum = add.a.checked_add(add.b).ok_or("the sum overflows")?;
    ///     Ok(Sum { sum })
    /// });
    /// // A job {"handler": "add", "payload": "{\"a\": 2, \"b\": 3}"} has the result {"sum":5}.
    /// # let context = drover::worker::CallContext { job: 1, batch: 1, attempt: 1, scratch: None };
    /// # let add = handlers.get("add").unwrap();
    /// # let result = futures::executor::block_on(add(context, br#"{"a": 2, "b": 3}"#.to_vec()));
    /// # assert_eq!(result.unwrap(), br#"{"sum":5}"#);
    /// ```
    pub fn register_json<In, Out>(
        &mut self,
        name: &str,
        handler: impl JsonHandler<In, Out>,
    ) -> &mut Self
    where
        In: DeserializeOwned + Send + 'static,
        Out: Serialize + 'static,
    {
        let handler = Arc::new(handler);
        let named = Arc::<str>::from(name);
        let boxed: Handler = Arc::new(move |context, payload| {
            let input = match serde_json::from_slice::<In>(&payload) {
                Ok(input) => input,
                Err(error) => {
                    let failure = CallError {
                        message: format!(
                            "handler {named:?}: the payload is not its JSON input: {error}"
                        ),
                        permanent: true,
                    };
                    return Box::pin(std::future::ready(Err(failure)));
                }
            };
            let returned = handler(context, input);
            let named = named.clone();
            Box::pin(async move {
                let output = returned.await.map_err(CallError::from)?;
                serde_json::to_vec(&output).map_err(|error| {
                    CallError::from(format!(
                        "handler {named:?}: cannot write its result as JSON: {error}"
                    ))
                })
            })
        });
        Arc::make_mut(&mut self.by_name).insert(name.to_string(), boxed);
        self
    }

    /// The handler of that name.
    pub fn get(&self, name: &str) -> Option<Handler> {
        self.by_name.get(name).cloned()
    }
}
