//! Byte strings carried as one run of bytes (`#[serde(with = "crate::job::wire_bytes")]`):
//! postcard writes them exactly as it writes a `Vec<u8>` (a length, then the bytes), but as one
//! copy rather than one call per byte, which a result of a mebibyte notices. Reads either form.

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Serializer;
use std::fmt;

/// Writes the bytes as one byte string.
pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_bytes(bytes)
}

/// Reads a byte string, or a sequence of bytes.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
    deserializer.deserialize_byte_buf(BytesVisitor)
}

struct BytesVisitor;

impl<'de> Visitor<'de> for BytesVisitor {
    type Value = Vec<u8>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("bytes")
    }

    fn visit_bytes<E: de::Error>(self, bytes: &[u8]) -> Result<Vec<u8>, E> {
        Ok(bytes.to_vec())
    }

    fn visit_byte_buf<E: de::Error>(self, bytes: Vec<u8>) -> Result<Vec<u8>, E> {
        Ok(bytes)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
        // Bounded by what the sequence holds, not by what it claims.
        let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64 * 1024));
        while let Some(byte) = seq.next_element::<u8>()? {
            bytes.push(byte);
        }
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct Plain {
        bytes: Vec<u8>,
    }

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct Wire {
        #[serde(with = "super")]
        bytes: Vec<u8>,
    }

    #[test]
    fn postcard_writes_them_as_it_writes_a_vec_of_bytes() {
        let bytes: Vec<u8> = (0..=255).chain([0xff, 0, 0x80]).collect();
        let plain = postcard::to_allocvec(&Plain {
            bytes: bytes.clone(),
        })
        .unwrap();
        let wire = postcard::to_allocvec(&Wire {
            bytes: bytes.clone(),
        })
        .unwrap();
        assert_eq!(plain, wire, "the same bytes on the wire");
        assert_eq!(postcard::from_bytes::<Wire>(&plain).unwrap().bytes, bytes);
        // JSON (a list of numbers either way) reads back too.
        let json = serde_json::to_string(&Wire {
            bytes: bytes.clone(),
        })
        .unwrap();
        assert_eq!(serde_json::from_str::<Wire>(&json).unwrap().bytes, bytes);
    }
}
