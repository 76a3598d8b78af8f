//! How `drover submit` submits (under the user's idempotency key, saying so when it had
//! made a batch already, or under one of its own) and says what it queued.

use super::{print_json, text};
use crate::client::{Client, Submitted};
use crate::job::JobSpec;
use crate::status::BatchInfo;

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

/// A waited-for batch as `submit --wait --json` prints it: the contract's `{"batch", "jobs"}`
/// and `"repeated"`, as without `--wait`, and the batch's counts beside them.
pub(super) fn waited_batch(info: &BatchInfo, repeated: bool) -> anyhow::Result<serde_json::Value> {
    let mut object = serde_json::to_value(info)?;
    if let Some(fields) = object.as_object_mut() {
        fields.insert("batch".into(), info.id.into());
        fields.insert("jobs".into(), info.total.into());
        fields.insert("repeated".into(), repeated.into());
    }
    Ok(object)
}

pub(super) fn print_submitted(submitted: &Submitted, json: bool) -> anyhow::Result<()> {
    if json {
        print_json(&serde_json::json!({
            "batch": submitted.batch,
            "jobs": submitted.jobs,
            "repeated": submitted.repeated,
        }))
    } else {
        println!("{}", submitted.batch);
        Ok(())
    }
}

/// Says at once, on standard error, which of a batch's jobs no connected worker can take and
/// why: without it, `submit --wait` would wait for them in silence.
pub(super) fn warn_unplaceable(submitted: &Submitted) {
    for group in &submitted.unplaceable {
        let jobs = if group.jobs == 1 { "job" } else { "jobs" };
        eprintln!(
            "drover: warning: {} {jobs} of batch {} cannot start on any connected worker ({}); \
             queued until one that can connects",
            group.jobs,
            submitted.batch,
            text::line(&group.reason)
        );
    }
}
