//! How the workers reach S3: the settings (endpoint, addressing, checksums) and the client
//! they make, from the standard AWS configuration (environment, profile, instance role).

use super::errors::Reach;
use aws_sdk_s3::config::{RequestChecksumCalculation, ResponseChecksumValidation};

/// How to reach S3.
#[derive(Debug, Clone, Default)]
pub struct S3Settings {
    /// An endpoint for S3-compatible stores (else `AWS_ENDPOINT_URL`, else AWS).
    pub endpoint: Option<String>,
    /// Address buckets as `endpoint/bucket/key` instead of `bucket.endpoint/key`.
    pub path_style: bool,
    /// How uploads carry their checksums; unset, `when-required` with a custom endpoint (or
    /// as `AWS_REQUEST_CHECKSUM_CALCULATION` says), else `when-supported`.
    pub checksums: Option<S3Checksums>,
}

/// How uploads carry their checksums.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum S3Checksums {
    /// The SDK's flexible checksums: a CRC32 in a trailer of an aws-chunked body, as AWS takes
    /// it. Many S3-compatible stores do not.
    WhenSupported,
    /// Plain bodies with a Content-MD5 header, which S3-compatible stores take and most check;
    /// responses are checked where the operation requires it.
    WhenRequired,
}

impl std::fmt::Display for S3Checksums {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            S3Checksums::WhenSupported => "when-supported",
            S3Checksums::WhenRequired => "when-required",
        })
    }
}

/// A client from the standard AWS configuration and these settings; where it sends requests,
/// for messages; and how its uploads carry checksums.
pub(super) async fn client(settings: &S3Settings) -> (aws_sdk_s3::Client, Reach, S3Checksums) {
    let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(crate::aws::http_client())
        .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(5))
        .load()
        .await;
    let mut config =
        aws_sdk_s3::config::Builder::from(&shared).force_path_style(settings.path_style);
    if let Some(endpoint) = &settings.endpoint {
        config = config.endpoint_url(endpoint);
    }
    let region = match shared.region() {
        Some(region) => region.to_string(),
        None => {
            // S3-compatible stores rarely care; AWS itself needs one and will say so.
            config = config.region(aws_sdk_s3::config::Region::new("us-east-1"));
            "us-east-1".to_string()
        }
    };
    let endpoint = settings
        .endpoint
        .clone()
        .or_else(|| std::env::var("AWS_ENDPOINT_URL_S3").ok())
        .or_else(|| shared.endpoint_url().map(str::to_string))
        .filter(|endpoint| !endpoint.is_empty());
    // aws-config always has a value for these; only a variable set says the user chose it.
    let chosen = |variable: &str| std::env::var_os(variable).is_some_and(|v| !v.is_empty());
    let aws_request_checksums = chosen("AWS_REQUEST_CHECKSUM_CALCULATION")
        .then(|| shared.request_checksum_calculation())
        .flatten();
    let checksums = settings
        .checksums
        .unwrap_or(match (aws_request_checksums, &endpoint) {
            (Some(RequestChecksumCalculation::WhenRequired), _) => S3Checksums::WhenRequired,
            (Some(_), _) | (None, None) => S3Checksums::WhenSupported,
            (None, Some(_)) => S3Checksums::WhenRequired,
        });
    config = match checksums {
        S3Checksums::WhenSupported => {
            config.request_checksum_calculation(RequestChecksumCalculation::WhenSupported)
        }
        S3Checksums::WhenRequired => {
            config.request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        }
    };
    // The AWS variable for responses is kept unless drover was told explicitly.
    if settings.checksums.is_some() || !chosen("AWS_RESPONSE_CHECKSUM_VALIDATION") {
        config = config.response_checksum_validation(match checksums {
            S3Checksums::WhenSupported => ResponseChecksumValidation::WhenSupported,
            S3Checksums::WhenRequired => ResponseChecksumValidation::WhenRequired,
        });
    }
    let reach = Reach {
        endpoint: endpoint
            .clone()
            .unwrap_or_else(|| format!("AWS S3 (region {region})")),
        custom_endpoint: endpoint.is_some(),
        streaming_checksums: checksums == S3Checksums::WhenSupported,
    };
    tracing::info!(endpoint = %reach.endpoint, %checksums, "s3 client ready");
    (
        aws_sdk_s3::Client::from_conf(config.build()),
        reach,
        checksums,
    )
}
