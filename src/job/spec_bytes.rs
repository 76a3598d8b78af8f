//! Job specs kept in their encoded form.
//!
//! The coordinator never runs a job, so it keeps each spec as the bytes it writes to the ledger
//! and sends to workers: one small shared allocation per job instead of a tree of strings, and no
//! re-encoding on the way out. What the scheduler needs is decoded from the front of the bytes.

use super::JobSpec;
use serde::{de, Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::sync::Arc;

/// A [`JobSpec`] in its postcard encoding; cheap to clone.
#[derive(Clone, PartialEq, Eq)]
pub struct SpecBytes(Arc<[u8]>);

/// The leading fields of a [`JobSpec`]: what placing, retrying and timing a job needs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Placement {
    /// Higher runs first.
    pub priority: i32,
    /// Slots it occupies.
    pub slots: u32,
    /// Labels a worker must carry.
    pub requires: Vec<String>,
    /// Attempts that may fail before the job is failed.
    pub max_attempts: u32,
    /// Wall-clock limit of one attempt.
    pub timeout_s: Option<u32>,
}

impl SpecBytes {
    /// Encodes a spec.
    pub fn encode(spec: &JobSpec) -> SpecBytes {
        // Encoding into a Vec fails only on a serializer error, which plain data cannot cause.
        let bytes = postcard::to_allocvec(spec).unwrap_or_default();
        SpecBytes(Arc::from(bytes))
    }

    /// Wraps bytes read back from the ledger or the wire.
    pub fn from_bytes(bytes: &[u8]) -> SpecBytes {
        SpecBytes(Arc::from(bytes))
    }

    /// The encoded bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The whole spec.
    pub fn decode(&self) -> Result<JobSpec, postcard::Error> {
        postcard::from_bytes(&self.0)
    }

    /// Only the leading fields, without decoding (or allocating for) the task.
    pub fn placement(&self) -> Result<Placement, postcard::Error> {
        postcard::take_from_bytes::<Placement>(&self.0).map(|(placement, _rest)| placement)
    }
}

impl From<&JobSpec> for SpecBytes {
    fn from(spec: &JobSpec) -> Self {
        SpecBytes::encode(spec)
    }
}

impl fmt::Debug for SpecBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.decode() {
            Ok(spec) => spec.fmt(f),
            Err(_) => write!(f, "SpecBytes(<{} undecodable bytes>)", self.0.len()),
        }
    }
}

impl Serialize for SpecBytes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for SpecBytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct BytesVisitor;
        impl<'de> de::Visitor<'de> for BytesVisitor {
            type Value = SpecBytes;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an encoded job spec")
            }
            fn visit_bytes<E: de::Error>(self, bytes: &[u8]) -> Result<SpecBytes, E> {
                Ok(SpecBytes::from_bytes(bytes))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<SpecBytes, A::Error> {
                let mut bytes = Vec::new();
                while let Some(byte) = seq.next_element::<u8>()? {
                    bytes.push(byte);
                }
                Ok(SpecBytes::from_bytes(&bytes))
            }
        }
        deserializer.deserialize_bytes(BytesVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_reads_the_front_of_any_spec() {
        let mut spec = JobSpec::exec(["sh", "-c", "true"]);
        spec.priority = -3;
        spec.slots = 4;
        spec.requires = vec!["gpu".into(), "ssd".into()];
        spec.max_attempts = 7;
        spec.timeout_s = Some(9);
        spec.name = Some("n".into());
        let bytes = SpecBytes::encode(&spec);
        assert_eq!(bytes.decode().unwrap(), spec);
        assert_eq!(
            bytes.placement().unwrap(),
            Placement {
                priority: -3,
                slots: 4,
                requires: vec!["gpu".into(), "ssd".into()],
                max_attempts: 7,
                timeout_s: Some(9),
            }
        );
    }

    #[test]
    fn spec_bytes_travel_as_bytes() {
        let bytes = SpecBytes::encode(&JobSpec::call("noop", b"x".to_vec()));
        let wire = postcard::to_allocvec(&bytes).unwrap();
        assert_eq!(
            wire.len(),
            bytes.as_bytes().len() + 1,
            "a length byte, then the bytes"
        );
        let back: SpecBytes = postcard::from_bytes(&wire).unwrap();
        assert_eq!(back, bytes);
        assert!(SpecBytes::from_bytes(&[0xff; 3]).decode().is_err());
    }
}
