//! Where a job's data lives: the URLs of its inputs and outputs, checked at submit time.

use super::{JobId, LedgerId};
use std::path::{Component, Path, PathBuf};

/// A parsed data URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A path on the worker's machine (`file:///abs/path`, with a trailing `/` for a directory).
    File(PathBuf),
    /// An object, or with a key ending in `/` (or empty) a prefix, in an S3 bucket.
    S3 {
        /// The bucket.
        bucket: String,
        /// The key or prefix.
        key: String,
    },
}

impl Location {
    /// Parses a URL; the error says what is wrong in words for a job file's author.
    pub fn parse(url: &str) -> Result<Location, String> {
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(format!(
                "{url:?} is not a URL: expected s3://bucket/key or file:///path"
            ));
        };
        match scheme {
            "file" => {
                if !rest.starts_with('/') {
                    return Err(format!(
                        "{url:?}: a file URL needs an absolute path (file:///dir/name)"
                    ));
                }
                Ok(Location::File(PathBuf::from(rest)))
            }
            "s3" => {
                let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
                let valid =
                    |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.';
                if bucket.len() < 3 || bucket.len() > 63 || !bucket.chars().all(valid) {
                    return Err(format!(
                        "{url:?}: {bucket:?} is not a bucket name (3 to 63 of a-z, 0-9, '-', '.')"
                    ));
                }
                Ok(Location::S3 {
                    bucket: bucket.to_string(),
                    key: key.to_string(),
                })
            }
            other => Err(format!(
                "{url:?}: unknown scheme {other:?}; expected s3:// or file://"
            )),
        }
    }
}

/// The name of a ledger's own directory under a job's `to`: `ledger-` and its id. Job ids
/// start at 1 in every ledger, so without it two ledgers' job 1 would share a directory and a
/// manifest.
pub fn ledger_dir(ledger: LedgerId) -> String {
    format!("ledger-{ledger}")
}

/// The prefix of one job's outputs, as a URL ending in `/`: `<to>ledger-<id>/<job>/`. The job's
/// manifest is written there once a result is recorded; each attempt publishes in a directory
/// of its own below it.
pub fn job_prefix(to: &str, ledger: LedgerId, job: JobId) -> Result<String, String> {
    prefix_url(to, &[ledger_dir(ledger), job.to_string()])
}

/// The prefix of one job's outputs as drover wrote it before ledgers had ids: `<to><job>/`.
/// Only manifests of attempts recorded then are still written there.
pub fn unscoped_job_prefix(to: &str, job: JobId) -> Result<String, String> {
    prefix_url(to, &[job.to_string()])
}

/// The prefix under which one attempt of a job publishes its outputs, as a URL ending in `/`:
/// `<to>ledger-<id>/<job>/<attempt_name>/`. Attempts never share one, nor do ledgers.
pub fn attempt_prefix(
    to: &str,
    ledger: LedgerId,
    job: JobId,
    lease: u64,
) -> Result<String, String> {
    Ok(format!(
        "{}{}/",
        job_prefix(to, ledger, job)?,
        attempt_name(lease)
    ))
}

/// `to` with `steps` below it, as a URL ending in `/`.
fn prefix_url(to: &str, steps: &[String]) -> Result<String, String> {
    Ok(match Location::parse(to)? {
        Location::File(root) => {
            let path = steps.iter().fold(root, |path, step| path.join(step));
            format!("file://{}/", path.display())
        }
        Location::S3 { bucket, key } => {
            format!("s3://{bucket}/{}{}/", with_slash(&key), steps.join("/"))
        }
    })
}

/// The name of an attempt's own directory under its job's outputs: `attempt-` and 16 hex digits
/// of a one-way digest of its lease. Outputs sit in buckets every worker can list, and a lease
/// is what a worker proves an attempt is its own with: the name must not give it away.
pub fn attempt_name(lease: u64) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update(b"drover attempt outputs\0")
        .chain_update(lease.to_le_bytes())
        .finalize();
    let mut name = String::with_capacity(24);
    name.push_str("attempt-");
    for byte in &digest[..8] {
        name.push_str(&format!("{byte:02x}"));
    }
    name
}

/// A prefix ending in `/` (or empty).
pub fn with_slash(prefix: &str) -> String {
    if prefix.is_empty() || prefix.ends_with('/') {
        prefix.to_string()
    } else {
        format!("{prefix}/")
    }
}

/// True when `url` names an object under `prefix` itself: no `.`, `..` or empty step after it.
pub fn lies_under(url: &str, prefix: &str) -> bool {
    url.strip_prefix(prefix).is_some_and(|rest| {
        !rest.is_empty()
            && rest
                .split('/')
                .all(|step| !step.is_empty() && step != "." && step != "..")
    })
}

/// Checks a path meant to stay inside a job's scratch directory.
pub fn check_relative(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("must not be empty".into());
    }
    let path_ref = Path::new(path);
    if path_ref.is_absolute() {
        return Err(format!(
            "{path:?} must be relative to the scratch directory"
        ));
    }
    if path_ref
        .components()
        .any(|part| matches!(part, Component::ParentDir))
    {
        return Err(format!("{path:?} must not contain '..'"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_paths_are_checked() {
        assert_eq!(
            Location::parse("file:///data/x").unwrap(),
            Location::File("/data/x".into())
        );
        assert!(Location::parse("file://data/x")
            .unwrap_err()
            .contains("absolute path"));
        assert!(Location::parse("ftp://h/x")
            .unwrap_err()
            .contains("unknown scheme \"ftp\""));
        assert!(Location::parse("/data/x")
            .unwrap_err()
            .contains("not a URL"));
        assert_eq!(
            Location::parse("s3://my-bucket/a/b.txt").unwrap(),
            Location::S3 {
                bucket: "my-bucket".into(),
                key: "a/b.txt".into()
            }
        );
        assert!(Location::parse("s3://B/x")
            .unwrap_err()
            .contains("not a bucket name"));
        assert!(check_relative("in/a.txt").is_ok());
        assert!(check_relative("/etc/passwd")
            .unwrap_err()
            .contains("relative"));
        assert!(check_relative("a/../../b").unwrap_err().contains(".."));
        assert!(check_relative("").is_err());
    }

    #[test]
    fn an_attempts_prefix_holds_only_what_lies_under_it() {
        let ledger = LedgerId(0x5f0c);
        let name = attempt_name(0xab);
        assert!(name.starts_with("attempt-") && name.len() == 24, "{name}");
        assert!(!name.contains("ab0000") && !name.contains("00000000000000ab"));
        assert_ne!(name, attempt_name(0xac));
        let prefix = attempt_prefix("s3://b-1/out", ledger, 7, 0xab).unwrap();
        assert_eq!(
            prefix,
            format!("s3://b-1/out/ledger-0000000000005f0c/7/{name}/")
        );
        assert_eq!(
            attempt_prefix("file:///data/out/", ledger, 7, 0xab).unwrap(),
            format!("file:///data/out/ledger-0000000000005f0c/7/{name}/")
        );
        assert_eq!(
            job_prefix("s3://b-1/", ledger, 7).unwrap(),
            "s3://b-1/ledger-0000000000005f0c/7/"
        );
        assert_eq!(
            unscoped_job_prefix("file:///data/out", 7).unwrap(),
            "file:///data/out/7/"
        );
        assert!(lies_under(&format!("{prefix}r.csv"), &prefix));
        assert!(lies_under(&format!("{prefix}deep/er/r.csv"), &prefix));
        for outside in [
            prefix.clone(),
            format!("{prefix}../{}/r.csv", attempt_name(0xac)),
            format!("{prefix}a/./b"),
            format!("{prefix}a//b"),
            format!("{prefix}a/"),
            format!("s3://b-1/out/ledger-0000000000005f0c/7/{name}c/r.csv"),
            format!("s3://b-1/out/ledger-0000000000005f0d/7/{name}/r.csv"),
            format!("s3://b-1/out/7/{name}/r.csv"),
            "file:///etc/shadow".to_string(),
        ] {
            assert!(!lies_under(&outside, &prefix), "{outside}");
        }
    }

    #[test]
    fn two_ledgers_never_share_a_jobs_prefix() {
        let one = job_prefix("file:///out/", LedgerId(1), 1).unwrap();
        let other = job_prefix("file:///out/", LedgerId(2), 1).unwrap();
        assert!(!one.starts_with(&other) && !other.starts_with(&one));
    }
}
