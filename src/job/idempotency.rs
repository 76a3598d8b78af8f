//! A submission's idempotency key: the name a client gives one submission, so that sending it
//! again (a retry after a lost connection, or a script run twice) returns the batch it made
//! rather than queueing a second one.

use rand::RngCore;

/// The longest key accepted, in bytes.
pub const MAX_IDEMPOTENCY_KEY: usize = 128;

/// Checks a key as given by a user or a peer: 1 to [`MAX_IDEMPOTENCY_KEY`] bytes of printable
/// ASCII with no spaces, so it reads the same in a header, a log line and a terminal. The error
/// says what is wrong, never repeating a key that may be long or unprintable.
pub fn check_idempotency_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("the idempotency key is empty".into());
    }
    if key.len() > MAX_IDEMPOTENCY_KEY {
        return Err(format!(
            "the idempotency key is {} bytes long, above the limit of {MAX_IDEMPOTENCY_KEY}",
            key.len()
        ));
    }
    if let Some(at) = key.bytes().position(|byte| !byte.is_ascii_graphic()) {
        return Err(format!(
            "the idempotency key has a character that is not printable ASCII, or a space, at \
             byte {}; use letters, digits and punctuation",
            at + 1
        ));
    }
    Ok(())
}

/// A new key for one submission: 128 random bits, as 32 hex digits.
pub fn new_idempotency_key() -> String {
    let mut bits = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut bits);
    bits.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_short_printable_ascii() {
        assert!(check_idempotency_key("nightly-2026-12-01/run:3").is_ok());
        assert!(check_idempotency_key(&"k".repeat(MAX_IDEMPOTENCY_KEY)).is_ok());
        let long = check_idempotency_key(&"k".repeat(MAX_IDEMPOTENCY_KEY + 1)).unwrap_err();
        assert!(long.contains("129 bytes") && long.contains("128"), "{long}");
        assert!(check_idempotency_key("").unwrap_err().contains("empty"));
        for bad in ["two words", "tab\there", "é", "line\n", "nul\0"] {
            let error = check_idempotency_key(bad).unwrap_err();
            assert!(error.contains("not printable ASCII"), "{bad:?}: {error}");
            assert!(!error.contains(bad), "the key is not repeated: {error}");
        }
    }

    #[test]
    fn new_keys_are_valid_and_differ() {
        let (a, b) = (new_idempotency_key(), new_idempotency_key());
        assert_eq!(a.len(), 32);
        assert!(check_idempotency_key(&a).is_ok());
        assert_ne!(a, b);
    }
}
