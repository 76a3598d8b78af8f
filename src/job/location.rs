//! Where a job's data lives: the URLs of its inputs and outputs, checked at submit time.

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
}
