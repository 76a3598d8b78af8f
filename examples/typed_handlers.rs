//! Typed handlers: a worker's handler takes and returns Rust types, read from and written to
//! JSON (`Handlers::register_json`); the client follows the batch and reads each result back
//! as the same type, as soon as it is recorded. A payload that is not the handler's input fails
//! its job at once, saying why.
//!
//! Run it with `cargo run --example typed_handlers`.

use drover::client::Client;
use drover::coordinator::CoordinatorConfig;
use drover::job::JobSpec;
use drover::local::{LocalCluster, LocalConfig};
use drover::status::Completion;
use drover::worker::Handlers;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// What the `measure` handler takes.
#[derive(Serialize, Deserialize)]
struct Measure {
    text: String,
}

/// What it returns: the job's result.
#[derive(Serialize, Deserialize, Debug)]
struct Measured {
    words: usize,
    longest: String,
}

fn handlers() -> Handlers {
    let mut handlers = Handlers::stock();
    handlers.register_json::<Measure, Measured>("measure", |_context, measure| async move {
        let longest = measure
            .text
            .split_whitespace()
            .max_by_key(|word| word.chars().count())
            .ok_or("measure: the text has no words")?;
        Ok(Measured {
            words: measure.text.split_whitespace().count(),
            longest: longest.to_string(),
        })
    });
    handlers
}

fn measure(name: &str, text: &str) -> anyhow::Result<JobSpec> {
    let payload = serde_json::to_vec(&Measure { text: text.into() })?;
    let mut job = JobSpec::call("measure", payload);
    job.name = Some(name.into());
    Ok(job)
}

/// One line for a finished job: its result read back as a `Measured`, or why it failed.
fn describe(completion: &Completion) -> String {
    let record = &completion.record;
    let name = record.name.as_deref().unwrap_or("-");
    let result = completion.result.as_deref().unwrap_or_default();
    match serde_json::from_slice::<Measured>(result) {
        Ok(measured) => format!("{name:<8} {}: {measured:?}", record.state),
        Err(_) => format!(
            "{name:<8} {}: {}",
            record.state,
            record.error.as_deref().unwrap_or("no result")
        ),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    drover::logging::init("warn");
    let scratch = tempfile::tempdir()?;
    let cluster = LocalCluster::start(LocalConfig {
        coordinator: CoordinatorConfig::new(scratch.path().join("ledger")),
        workers: 2,
        slots: 2,
        scratch_dir: scratch.path().join("scratch"),
        handlers: handlers(),
    })?;
    let mut client = Client::connect(&cluster.address, None).await?;
    while client.workers().await?.len() < 2 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let mut jobs = vec![
        measure("proverb", "a rolling stone gathers no moss")?,
        measure("motto", "lose nothing and record everything once")?,
    ];
    // The handler's own error may pass next time: tried up to `max_attempts` (once here).
    let mut empty = measure("empty", "   ")?;
    empty.max_attempts = 1;
    jobs.push(empty);
    // Not a `Measure`: the job fails for good, naming the handler and what serde found.
    let mut unreadable = JobSpec::call("measure", br#"{"txet": "typo"}"#.to_vec());
    unreadable.name = Some("typo".into());
    jobs.push(unreadable);
    let submitted = client.submit("typed", jobs).await?;
    println!("batch {}: results as they are recorded", submitted.batch);
    {
        let records = client.follow(Some(submitted.batch), 0);
        let mut records = std::pin::pin!(records);
        while let Some(completion) = records.next().await {
            println!("  {}", describe(&completion?));
        }
    }

    // One job and its result in one request.
    let called = client
        .call(measure("called", "one request there and back")?)
        .await?;
    println!("one call, one request:\n  {}", describe(&called));

    cluster.stop().await;
    Ok(())
}
