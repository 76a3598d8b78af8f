//! Spot interruption notices. EC2 takes a spot instance back with two minutes' notice, given in
//! the instance metadata (`/latest/meta-data/spot/instance-action`, which answers 404 until
//! then). A worker started with `--spot-interruptions` reads it every [`POLL_INTERVAL`] over
//! IMDSv2 and, on a notice, drains as on SIGTERM: it takes nothing new and finishes what it
//! runs; what it has not finished when the instance goes is requeued at once, since its
//! connection closes with it.
//!
//! The metadata service is found as the AWS SDK finds it: `AWS_EC2_METADATA_SERVICE_ENDPOINT`,
//! else `http://169.254.169.254`.

use aws_config::imds::client::error::ImdsError;
use std::time::Duration;

/// How often the notice is looked for. AWS suggests every 5 seconds; a local request every 2
/// leaves more of the two minutes to the running jobs.
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);

/// Where the notice appears.
const INSTANCE_ACTION: &str = "/latest/meta-data/spot/instance-action";

/// Resolves once EC2 has given this instance notice, with the notice (`{"action": "terminate",
/// "time": ...}`). Until then it polls, saying once per new reason when the metadata cannot be
/// read (a worker not on EC2, say), and never gives up.
pub async fn interruption_notice() -> String {
    let provider_config = aws_config::provider_config::ProviderConfig::default()
        .with_http_client(crate::aws::http_client());
    let imds = aws_config::imds::Client::builder()
        .configure(&provider_config)
        .build();
    tracing::info!(
        every_s = POLL_INTERVAL.as_secs(),
        "watching the instance metadata for spot interruption notices"
    );
    let mut announced: Option<String> = None;
    loop {
        match imds.get(INSTANCE_ACTION).await {
            Ok(notice) => return notice.as_ref().trim().to_string(),
            Err(ImdsError::ErrorResponse(response))
                if response.response().status().as_u16() == 404 =>
            {
                if announced.take().is_some() {
                    tracing::info!("instance metadata readable again: no spot interruption notice");
                }
            }
            Err(error) => {
                let reason = crate::aws::innermost(&error);
                if announced.as_deref() != Some(reason.as_str()) {
                    tracing::warn!(
                        error = %reason,
                        "cannot read spot interruption notices from the instance metadata; \
                         trying again"
                    );
                    announced = Some(reason);
                }
            }
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}
