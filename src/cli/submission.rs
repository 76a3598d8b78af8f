//! How `drover submit` submits: under the user's idempotency key, saying so when it had
//! made a batch already, or under one of its own.

use crate::client::{Client, Submitted};
use crate::job::JobSpec;

/// `--idempotency-key`: what the coordinator takes, checked before anything is read or sent.
pub(super) fn parse_idempotency_key(text: &str) -> Result<String, String> {
    crate::job::check_idempotency_key(text).map(|()| text.to_string())
}

/// Submits under the key given, if one was (saying on standard error when the key had made a
/// batch already: that batch is the answer, and nothing new was queued), or under one of its own.
pub(super) async fn submit(
    client: &mut Client,
    name: &str,
    jobs: Vec<JobSpec>,
    key: Option<&str>,
) -> anyhow::Result<Submitted> {
    let Some(key) = key else {
        return Ok(client.submit(name, jobs).await?);
    };
    let submitted = client.submit_with_key(name, jobs, key).await?;
    if submitted.repeated {
        eprintln!(
            "drover: already submitted as batch {} (idempotency key {key}); nothing new was queued",
            submitted.batch
        );
    }
    Ok(submitted)
}
