//! EC2's errors as the Fleet shows them: the service's code and message on one line
//! (`InsufficientInstanceCapacity: ...`, `UnauthorizedOperation: ...`), or why no request got
//! an answer.

use crate::aws::{credentials_trouble, innermost, tidy, CredentialsTrouble};
use crate::fleet::ProviderError;
use aws_sdk_ec2::config::http::HttpResponse;
use aws_sdk_ec2::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use std::error::Error;

/// The error code of an instance id EC2 does not know (or no longer lists).
pub const NOT_FOUND: &str = "InvalidInstanceID.NotFound";

/// Why a request to `reach` (EC2's endpoint, in words) failed, in one line.
pub fn describe<E>(error: &SdkError<E, HttpResponse>, reach: &str) -> ProviderError
where
    E: ProvideErrorMetadata + Error + 'static,
{
    tracing::debug!(error = %DisplayErrorContext(error), "ec2 request failed");
    if let Some(trouble) = credentials_trouble(error) {
        return ProviderError::new(match trouble {
            CredentialsTrouble::NotFound => no_credentials(),
            CredentialsTrouble::TimedOut => {
                format!("{}; the credential chain timed out", no_credentials())
            }
            CredentialsTrouble::Failed(reason) => {
                format!("cannot load AWS credentials: {reason}")
            }
        });
    }
    if innermost(error) == super::NOT_LEADING {
        // Refused here, not by EC2 nor on the way to it.
        return ProviderError::new(format!("{reach}: {}", super::NOT_LEADING));
    }
    ProviderError::new(match error {
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            match (error.code(), error.message().map(tidy)) {
                (Some(code), Some(message)) if !message.is_empty() => format!("{code}: {message}"),
                (Some(code), _) => code.to_string(),
                (None, Some(message)) if !message.is_empty() => {
                    format!("HTTP {status}: {message}")
                }
                (None, _) => format!("HTTP {status} from {reach}: {}", innermost(error)),
            }
        }
        SdkError::DispatchFailure(_) => format!("cannot reach {reach}: {}", innermost(error)),
        SdkError::TimeoutError(_) => format!("no answer from {reach} in time"),
        SdkError::ResponseError(_) => {
            format!("unreadable answer from {reach}: {}", innermost(error))
        }
        _ => format!("cannot make the request: {}", innermost(error)),
    })
}

fn no_credentials() -> String {
    "no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) \
     in the coordinator's environment, or give its machine an instance profile"
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_ec2::error::ErrorMetadata;
    use aws_sdk_ec2::operation::run_instances::RunInstancesError;
    // The same body type as EC2's, which re-exports none.
    use aws_sdk_s3::primitives::SdkBody;

    fn refused(code: &str, message: &str, status: u16) -> SdkError<RunInstancesError> {
        let metadata = ErrorMetadata::builder().code(code).message(message).build();
        let raw = HttpResponse::new(status.try_into().unwrap(), SdkBody::empty());
        SdkError::service_error(RunInstancesError::generic(metadata), raw)
    }

    #[test]
    fn a_refusal_reads_as_the_services_code_and_message_on_one_line() {
        let error = refused(
            "InsufficientInstanceCapacity",
            "We currently do not have sufficient\n  p4d.24xlarge capacity.",
            500,
        );
        assert_eq!(
            describe(&error, "EC2").message,
            "InsufficientInstanceCapacity: We currently do not have sufficient p4d.24xlarge \
             capacity."
        );
        let long = refused("UnauthorizedOperation", &"x".repeat(5000), 403);
        let described = describe(&long, "EC2").message;
        assert!(described.starts_with("UnauthorizedOperation: xxx"));
        assert!(described.len() < 400, "{described}");
    }
}
