//! Content-MD5 for uploads to stores that take no streaming checksums: S3 and most
//! S3-compatible stores check it and refuse a body that does not match (BadDigest).

use base64::Engine;
use md5::Digest;
use std::io::{Read, Seek};
use std::path::Path;

/// The Content-MD5 of `length` bytes of a file from `offset`, if uploads carry one. Read
/// off the event loop: a worker's runtime is a single thread.
pub(super) async fn content_md5_of(
    wanted: bool,
    source: &Path,
    offset: u64,
    length: u64,
) -> Result<Option<String>, String> {
    if !wanted {
        return Ok(None);
    }
    let path = source.to_path_buf();
    let digest = tokio::task::spawn_blocking(move || md5_of_range(&path, offset, length))
        .await
        .map_err(|error| format!("cannot read {}: {error}", source.display()))?
        .map_err(|error| {
            format!(
                "cannot read {}: {}",
                source.display(),
                crate::storage::describe_io(&error)
            )
        })?;
    Ok(Some(digest))
}

/// The Content-MD5 header's value for these bytes: their MD5, in base64.
pub(super) fn base64_md5(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(bytes))
}

/// The Content-MD5 header's value for `length` bytes of a file from `offset`.
fn md5_of_range(path: &Path, offset: u64, length: u64) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    file.seek(std::io::SeekFrom::Start(offset))?;
    let mut reader = file.take(length);
    let mut hasher = md5::Md5::new();
    let mut buffer = vec![0u8; 256 * 1024];
    let mut read_in_all = 0u64;
    loop {
        let read = reader.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
        read_in_all += read as u64;
    }
    if read_in_all != length {
        return Err(std::io::Error::other(format!(
            "it shrank while being uploaded ({read_in_all} of {length} bytes from {offset})"
        )));
    }
    Ok(base64::engine::general_purpose::STANDARD.encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_range_of_a_file_has_the_md5_of_its_bytes_and_a_file_that_shrank_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("data");
        std::fs::write(&file, b"xxabcyy").unwrap();
        // MD5("abc") in base64, as RFC 1864 writes a Content-MD5.
        assert_eq!(
            content_md5_of(true, &file, 2, 3).await.unwrap().as_deref(),
            Some("kAFQmDzST7DWlj99KOF/cg==")
        );
        assert_eq!(base64_md5(b"abc"), "kAFQmDzST7DWlj99KOF/cg==");
        assert_eq!(content_md5_of(false, &file, 2, 3).await.unwrap(), None);
        let error = content_md5_of(true, &file, 2, 30).await.unwrap_err();
        assert!(error.contains("shrank"), "{error}");
    }
}
