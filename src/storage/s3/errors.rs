//! The one place that turns the S3 SDK's errors into a reason a person acts on: one line, no
//! debug dump ("no such key", "access denied: check ...", "cannot reach http://...: connection
//! refused"). The caller puts the object's URL in front.

use crate::aws::{credentials_trouble, innermost, tidy, CredentialsTrouble};
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use std::error::Error;

/// What a reason may name about the client: where it sends requests, and whether it sends
/// the SDK's streaming checksums (which some S3-compatible stores refuse).
#[derive(Debug, Clone)]
pub(crate) struct Reach {
    /// The endpoint in words: its URL, or "AWS S3 (region ...)".
    pub endpoint: String,
    /// A custom endpoint is set (an S3-compatible store, not AWS).
    pub custom_endpoint: bool,
    /// Uploads carry the SDK's streaming checksums (aws-chunked bodies with trailers).
    pub streaming_checksums: bool,
}

/// The reason for a bucket that is not there.
pub(crate) const NO_SUCH_BUCKET: &str =
    "no such bucket: check its name and the endpoint, or create it";

/// Why a request failed, in one line.
pub(crate) fn describe<E>(error: &SdkError<E, HttpResponse>, reach: &Reach) -> String
where
    E: ProvideErrorMetadata + Error + 'static,
{
    tracing::debug!(error = %DisplayErrorContext(error), "s3 request failed");
    match error {
        SdkError::ServiceError(_) => {
            let status = error.raw_response().map(|raw| raw.status().as_u16());
            let said_nothing = error.code().is_none() && error.message().is_none();
            if said_nothing && status.is_some_and(|status| (200..300).contains(&status)) {
                // A success the SDK could not read (a store's XML not as S3 writes it, say).
                return format!(
                    "unreadable answer from {} (HTTP {}): {}",
                    reach.endpoint,
                    status.unwrap_or_default(),
                    innermost(error)
                );
            }
            refusal(error.code(), error.message(), status, reach)
        }
        SdkError::DispatchFailure(failure) => {
            if let Some(missing) = credentials_problem(error) {
                return missing;
            }
            if failure.is_timeout() {
                no_answer(reach)
            } else if failure.is_io() {
                format!(
                    "cannot reach {}: {}; check the address and that the store is up",
                    reach.endpoint,
                    innermost(error)
                )
            } else {
                format!(
                    "cannot send the request to {}: {}",
                    reach.endpoint,
                    innermost(error)
                )
            }
        }
        SdkError::TimeoutError(_) => no_answer(reach),
        SdkError::ResponseError(_) => format!(
            "unreadable answer from {} (is it an S3 server?): {}",
            reach.endpoint,
            innermost(error)
        ),
        SdkError::ConstructionFailure(_) => {
            if let Some(missing) = credentials_problem(error) {
                return missing;
            }
            format!("cannot make the request: {}", innermost(error))
        }
        _ => innermost(error),
    }
}

fn no_answer(reach: &Reach) -> String {
    format!(
        "no answer from {} in time; check that the store is up and reachable from this machine",
        reach.endpoint
    )
}

/// A store's refusal, by its error code (and HTTP status, for answers without a body, such
/// as a HEAD's).
fn refusal(
    code: Option<&str>,
    message: Option<&str>,
    status: Option<u16>,
    reach: &Reach,
) -> String {
    // A HEAD's 404 names no code; the SDK calls it "NotFound".
    let code = code.filter(|code| *code != "NotFound" || status != Some(404));
    match (code, status) {
        (Some("NoSuchKey"), _) | (None, Some(404)) => "no such key".into(),
        (Some("NoSuchBucket"), _) => NO_SUCH_BUCKET.into(),
        (Some("AccessDenied" | "AllAccessDisabled" | "AccountProblem"), _) => format!(
            "access denied ({}): check the worker's credentials and the bucket's policy",
            code.unwrap_or_default()
        ),
        (Some("InvalidAccessKeyId" | "NotSignedUp"), _) => format!(
            "the store does not know this access key ({}): check AWS_ACCESS_KEY_ID, or the \
             profile in use",
            code.unwrap_or_default()
        ),
        (Some("SignatureDoesNotMatch"), _) => {
            "the request's signature does not match (SignatureDoesNotMatch): check \
             AWS_SECRET_ACCESS_KEY, or the profile in use"
                .into()
        }
        (Some(code @ ("ExpiredToken" | "InvalidToken" | "TokenRefreshRequired")), _) => {
            format!("the session credentials have expired or are invalid ({code}): renew them")
        }
        (Some("RequestTimeTooSkewed"), _) => {
            "this machine's clock is too far from the store's (RequestTimeTooSkewed): set it \
             right (NTP)"
                .into()
        }
        (Some(code @ ("PermanentRedirect" | "AuthorizationHeaderMalformed")), _)
        | (Some(code @ "IllegalLocationConstraintException"), _) => format!(
            "the bucket is in another region ({code}): set AWS_REGION to the bucket's region"
        ),
        (None, Some(301)) => {
            "the bucket is in another region (HTTP 301): set AWS_REGION to the bucket's region"
                .into()
        }
        (None, Some(403)) => {
            "access denied (HTTP 403): check the worker's credentials (AWS_ACCESS_KEY_ID, \
             AWS_SECRET_ACCESS_KEY) and the bucket's policy"
                .into()
        }
        (Some(code @ ("BadDigest" | "InvalidDigest" | "XAmzContentSHA256Mismatch")), _) => {
            format!("the store received other bytes than were sent ({code}): they were damaged on the way")
        }
        (Some("NoSuchUpload"), _) => {
            "the multipart upload is gone (NoSuchUpload): it was aborted meanwhile".into()
        }
        (Some(code @ ("SlowDown" | "ServiceUnavailable" | "Throttling")), _) => {
            format!("the store asked to slow down ({code}) and went on asking through the retries")
        }
        (code, status) => {
            let mut reason = match (code, status) {
                (Some(code), Some(status)) => format!("{code} (HTTP {status})"),
                (Some(code), None) => code.to_string(),
                (None, Some(status)) => format!("HTTP {status}"),
                (None, None) => "refused".into(),
            };
            if let Some(message) = message.map(tidy).filter(|message| !message.is_empty()) {
                reason.push_str(": ");
                reason.push_str(&message);
            }
            // Stores that do not take aws-chunked bodies say so in many ways, all of them a
            // bad request of some kind.
            let bad_request = matches!(status, Some(400 | 411 | 501))
                || matches!(code, Some("InvalidRequest" | "NotImplemented"));
            if reach.streaming_checksums && reach.custom_endpoint && bad_request {
                reason.push_str(
                    " (if this store refuses the SDK's streaming checksums, start the worker \
                     with --s3-checksums when-required)",
                );
            }
            reason
        }
    }
}

/// Credentials that could not be found or loaded, if that is what stopped the request.
fn credentials_problem(error: &(dyn Error + 'static)) -> Option<String> {
    Some(match credentials_trouble(error)? {
        CredentialsTrouble::NotFound => no_credentials(),
        CredentialsTrouble::TimedOut => {
            format!("{}; the credential chain timed out", no_credentials())
        }
        CredentialsTrouble::Failed(reason) => format!("cannot load AWS credentials: {reason}"),
    })
}

fn no_credentials() -> String {
    "no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) \
     in the worker's environment, or give its machine an instance profile"
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_s3::error::ErrorMetadata;
    use aws_sdk_s3::operation::get_object::GetObjectError;
    use aws_sdk_s3::primitives::SdkBody;

    fn reach(streaming_checksums: bool) -> Reach {
        Reach {
            endpoint: "http://127.0.0.1:9".into(),
            custom_endpoint: true,
            streaming_checksums,
        }
    }

    fn refused(code: Option<&str>, message: &str, status: u16) -> SdkError<GetObjectError> {
        let mut metadata = ErrorMetadata::builder().message(message);
        if let Some(code) = code {
            metadata = metadata.code(code);
        }
        let raw = HttpResponse::new(status.try_into().unwrap(), SdkBody::empty());
        SdkError::service_error(GetObjectError::generic(metadata.build()), raw)
    }

    #[test]
    fn a_code_the_map_does_not_know_reads_as_code_status_and_message_on_one_line() {
        let error = refused(
            Some("InternalError"),
            "We encountered an internal error.\n  Please try again.",
            500,
        );
        assert_eq!(
            describe(&error, &reach(true)),
            "InternalError (HTTP 500): We encountered an internal error. Please try again."
        );
        let long = refused(Some("Odd"), &"x".repeat(2000), 500);
        assert!(describe(&long, &reach(false)).len() < 400);
    }

    #[test]
    fn a_bad_request_from_a_custom_store_suggests_the_checksum_setting_only_where_it_applies() {
        let error = refused(
            Some("InvalidRequest"),
            "Bad request: Invalid payload signature",
            400,
        );
        let with_trailers = describe(&error, &reach(true));
        assert!(
            with_trailers.starts_with(
                "InvalidRequest (HTTP 400): Bad request: Invalid payload signature (if this store"
            ),
            "{with_trailers}"
        );
        assert!(with_trailers.contains("--s3-checksums when-required"));
        assert!(!describe(&error, &reach(false)).contains("--s3-checksums"));
    }

    #[test]
    fn a_success_the_sdk_could_not_read_says_so_and_names_the_endpoint() {
        // As moto answers a completed multipart upload (its XML root is not S3's).
        let raw = HttpResponse::new(200.try_into().unwrap(), SdkBody::empty());
        let error: SdkError<GetObjectError> = SdkError::service_error(
            GetObjectError::unhandled("encountered invalid XML root"),
            raw,
        );
        assert_eq!(
            describe(&error, &reach(false)),
            "unreadable answer from http://127.0.0.1:9 (HTTP 200): encountered invalid XML root"
        );
    }

    #[test]
    fn a_refusal_without_a_body_is_read_from_its_status() {
        assert_eq!(
            describe(&refused(None, "", 404), &reach(true)),
            "no such key"
        );
        assert!(describe(&refused(None, "", 403), &reach(true)).starts_with("access denied"));
        assert!(
            describe(&refused(Some("AccessDenied"), "", 403), &reach(true))
                .starts_with("access denied (AccessDenied): check the worker's credentials")
        );
    }
}
