//! Finished jobs' records with their results, as programs receive them: one at a time as they
//! are recorded ([`Completion`], in pages after a cursor), or one job's ([`Resulted`]).
//!
//! A result is bytes. On the wire (postcard) it travels as bytes; in JSON it is `"result"` when
//! it is UTF-8 and `"result_base64"` otherwise, beside the record's own fields, and absent when
//! there is none: [`Resulted`] does that for any record.

use crate::job::{BatchId, JobId, JobState};
use base64::Engine as _;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A record and the result bytes recorded with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resulted<T> {
    /// The record.
    pub record: T,
    /// The recorded attempt's result, if it has one (a job not finished, or whose recorded
    /// attempt returned nothing, has none).
    pub result: Option<Vec<u8>>,
}

/// A finished job's final record: what a follower of a batch receives for each job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finished {
    /// Where this record is in recording order: a follower resumes after it.
    pub cursor: u64,
    /// The job.
    pub id: JobId,
    /// Its batch.
    pub batch: BatchId,
    /// Its name, if it has one.
    pub name: Option<String>,
    /// `succeeded`, `failed` or `cancelled`.
    pub state: JobState,
    /// The recorded attempt's exit code.
    pub exit_code: Option<i32>,
    /// The worker whose result was recorded.
    pub worker: Option<String>,
    /// How long the recorded attempt ran.
    pub duration_ms: Option<u64>,
    /// When the job finished (ms since the Unix epoch).
    pub finished_at_ms: u64,
    /// Why it failed or was cancelled.
    pub error: Option<String>,
}

/// A finished job's record with its result.
pub type Completion = Resulted<Finished>;

/// A page of finished jobs' records, in recording order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResultsPage {
    /// The records.
    pub results: Vec<Completion>,
    /// Where the next page starts: the last record's cursor, or the cursor asked for when the
    /// page is empty.
    pub cursor: u64,
    /// The batch followed is done and every one of its records has been given: nothing more
    /// will come (always false when following every batch).
    pub done: bool,
}

impl<T> Resulted<T> {
    /// A record without a result.
    pub fn bare(record: T) -> Self {
        Resulted {
            record,
            result: None,
        }
    }
}

/// The result as JSON has it: text when it is UTF-8, base64 when not.
#[derive(Serialize, Deserialize, Default)]
struct ResultJson {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    result: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    result_base64: Option<String>,
}

impl ResultJson {
    fn new(bytes: Option<&[u8]>) -> Self {
        match bytes.map(std::str::from_utf8) {
            None => ResultJson::default(),
            Some(Ok(text)) => ResultJson {
                result: Some(text.to_owned()),
                result_base64: None,
            },
            Some(Err(_)) => ResultJson {
                result: None,
                result_base64: bytes
                    .map(|bytes| base64::engine::general_purpose::STANDARD.encode(bytes)),
            },
        }
    }

    fn bytes<E: serde::de::Error>(self) -> Result<Option<Vec<u8>>, E> {
        match (self.result, self.result_base64) {
            (Some(_), Some(_)) => Err(E::custom("both result and result_base64 are given")),
            (Some(text), None) => Ok(Some(text.into_bytes())),
            (None, Some(encoded)) => base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .map(Some)
                .map_err(|error| E::custom(format!("result_base64: {error}"))),
            (None, None) => Ok(None),
        }
    }
}

/// JSON: the record's fields and the result's beside them.
#[derive(Serialize)]
struct FlatRef<'a, T> {
    #[serde(flatten)]
    record: &'a T,
    #[serde(flatten)]
    result: ResultJson,
}

#[derive(Deserialize)]
struct FlatOwned<T> {
    #[serde(flatten)]
    record: T,
    #[serde(flatten)]
    result: ResultJson,
}

/// The result on the wire as one byte string (see [`crate::job::wire_bytes`]): the same bytes
/// postcard writes for a `Vec<u8>`, in one copy rather than one call per byte.
struct WireBytes<'a>(&'a [u8]);

impl Serialize for WireBytes<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        crate::job::wire_bytes::serialize(self.0, serializer)
    }
}

struct WireBuf(Vec<u8>);

impl<'de> Deserialize<'de> for WireBuf {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        crate::job::wire_bytes::deserialize(deserializer).map(WireBuf)
    }
}

impl<T: Serialize> Serialize for Resulted<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            FlatRef {
                record: &self.record,
                result: ResultJson::new(self.result.as_deref()),
            }
            .serialize(serializer)
        } else {
            (&self.record, self.result.as_deref().map(WireBytes)).serialize(serializer)
        }
    }
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Resulted<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            let flat = FlatOwned::<T>::deserialize(deserializer)?;
            Ok(Resulted {
                record: flat.record,
                result: flat.result.bytes()?,
            })
        } else {
            let (record, result) = <(T, Option<WireBuf>)>::deserialize(deserializer)?;
            Ok(Resulted {
                record,
                result: result.map(|bytes| bytes.0),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finished() -> Finished {
        Finished {
            cursor: 7,
            id: 3,
            batch: 1,
            name: Some("three".into()),
            state: JobState::Succeeded,
            exit_code: Some(0),
            worker: Some("w1".into()),
            duration_ms: Some(12),
            finished_at_ms: 1_700_000_000_000,
            error: None,
        }
    }

    #[test]
    fn json_says_result_for_text_result_base64_for_bytes_and_nothing_for_none() {
        let text = Resulted {
            record: finished(),
            result: Some(b"{\"answer\": 42}".to_vec()),
        };
        let json = serde_json::to_value(&text).unwrap();
        assert_eq!(json["result"], "{\"answer\": 42}");
        assert_eq!(json["id"], 3);
        assert!(json.get("result_base64").is_none());

        let binary = Resulted {
            record: finished(),
            result: Some(vec![0xff, 0x00, 0x80]),
        };
        let json = serde_json::to_value(&binary).unwrap();
        assert_eq!(json["result_base64"], "/wCA");
        assert!(json.get("result").is_none());

        let none = Resulted::bare(finished());
        let json = serde_json::to_value(&none).unwrap();
        assert!(json.get("result").is_none() && json.get("result_base64").is_none());

        for value in [text, binary, none] {
            let again: Completion =
                serde_json::from_str(&serde_json::to_string(&value).unwrap()).unwrap();
            assert_eq!(again, value);
        }
    }

    #[test]
    fn the_wire_carries_the_bytes_as_they_are() {
        let value = Resulted {
            record: finished(),
            result: Some(vec![0, 1, 2, 255]),
        };
        let bytes = postcard::to_allocvec(&value).unwrap();
        assert_eq!(postcard::from_bytes::<Completion>(&bytes).unwrap(), value);
        // Written as one byte string, the same bytes as a plain Vec<u8> would be.
        let plain = postcard::to_allocvec(&(&value.record, &value.result)).unwrap();
        assert_eq!(bytes, plain);
        let page = ResultsPage {
            results: vec![value],
            cursor: 7,
            done: true,
        };
        let bytes = postcard::to_allocvec(&page).unwrap();
        assert_eq!(postcard::from_bytes::<ResultsPage>(&bytes).unwrap(), page);
    }

    #[test]
    fn json_with_both_spellings_or_bad_base64_is_refused() {
        let mut json = serde_json::to_value(Resulted::bare(finished())).unwrap();
        json["result"] = "a".into();
        json["result_base64"] = "YQ==".into();
        assert!(serde_json::from_value::<Completion>(json.clone())
            .unwrap_err()
            .to_string()
            .contains("both"));
        json.as_object_mut().unwrap().remove("result");
        json["result_base64"] = "***".into();
        assert!(serde_json::from_value::<Completion>(json)
            .unwrap_err()
            .to_string()
            .contains("result_base64"));
    }
}
