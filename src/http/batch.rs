//! A batch as JSON: `{"name": "...", "jobs": [{"cmd": [...]}, ...]}`, each job with the fields of
//! a job file line, and optionally `"idempotency_key": "..."`. Any bad job refuses the whole
//! batch, naming it and its field.
//!
//! The body is read job by job: each job's JSON tree lives only while it is turned into a spec,
//! so a batch of 600,000 jobs costs the coordinator its specs, not a tree of the whole body
//! (which was some ten times the body, and stayed as resident memory after the request).

use super::ApiError;
use crate::job::{check_idempotency_key, JobSpec};
use crate::jobfile;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use std::fmt;

/// A batch as the body has it.
#[derive(Debug)]
pub(super) struct Batch {
    pub(super) name: String,
    pub(super) jobs: Vec<JobSpec>,
    pub(super) idempotency_key: Option<String>,
}

/// Reads a batch; a refusal names the field at fault.
pub(super) fn parse(body: &[u8]) -> Result<Batch, ApiError> {
    let mut refused = None;
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let read = deserializer
        .deserialize_map(BatchVisitor {
            refused: &mut refused,
        })
        .and_then(|batch| deserializer.end().map(|()| batch));
    match (read, refused) {
        (_, Some(refusal)) => Err(refusal),
        (Ok(batch), None) => Ok(batch),
        (Err(error), None) if error.is_data() => Err(ApiError::bad_request(
            None,
            "expected a JSON object: {\"name\": ..., \"jobs\": [...]}".into(),
        )),
        (Err(error), None) => Err(ApiError::bad_request(
            None,
            format!("the body is not valid JSON: {error}"),
        )),
    }
}

/// Refuses with `refusal`, which [`parse`] returns instead of the parser's own error.
fn refuse<E: de::Error>(refused: &mut Option<ApiError>, refusal: ApiError) -> E {
    let error = E::custom(&refusal.message);
    *refused = Some(refusal);
    error
}

struct BatchVisitor<'a> {
    refused: &'a mut Option<ApiError>,
}

impl<'de> Visitor<'de> for BatchVisitor<'_> {
    type Value = Batch;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a batch: {\"name\": ..., \"jobs\": [...]}")
    }

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
        let mut name = None;
        let mut jobs = None;
        let mut idempotency_key = None;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "name" => match map.next_value::<Value>()? {
                    Value::String(text) if !text.trim().is_empty() => name = Some(text),
                    _ => {
                        return Err(refuse(
                            self.refused,
                            ApiError::bad_request(
                                Some("name".into()),
                                "must be a non-empty string".into(),
                            ),
                        ))
                    }
                },
                "idempotency_key" => {
                    let key = match map.next_value::<Value>()? {
                        Value::String(key) => check_idempotency_key(&key).map(|()| key),
                        _ => Err("must be a string".into()),
                    };
                    match key {
                        Ok(key) => idempotency_key = Some(key),
                        Err(reason) => {
                            return Err(refuse(
                                self.refused,
                                ApiError::bad_request(Some("idempotency_key".into()), reason),
                            ))
                        }
                    }
                }
                "jobs" => {
                    let mut specs = Vec::new();
                    map.next_value_seed(JobsSeed {
                        specs: &mut specs,
                        refused: self.refused,
                    })?;
                    if specs.is_empty() {
                        return Err(refuse(
                            self.refused,
                            ApiError::bad_request(
                                Some("jobs".into()),
                                "the batch has no jobs".into(),
                            ),
                        ));
                    }
                    jobs = Some(specs);
                }
                unknown => {
                    let unknown = unknown.to_string();
                    map.next_value::<IgnoredAny>()?;
                    return Err(refuse(
                        self.refused,
                        ApiError::bad_request(
                            Some(unknown.clone()),
                            format!(
                                "unknown field {unknown:?}; a batch has \"name\", \"jobs\" \
                                 and \"idempotency_key\""
                            ),
                        ),
                    ));
                }
            }
        }
        let Some(jobs) = jobs else {
            return Err(refuse(
                self.refused,
                ApiError::bad_request(
                    Some("jobs".into()),
                    "missing: a batch needs a jobs array".into(),
                ),
            ));
        };
        Ok(Batch {
            name: name.unwrap_or_else(|| "http".into()),
            jobs,
            idempotency_key,
        })
    }
}

/// The jobs array, one job at a time.
struct JobsSeed<'a> {
    specs: &'a mut Vec<JobSpec>,
    refused: &'a mut Option<ApiError>,
}

impl<'de> DeserializeSeed<'de> for JobsSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for JobsSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of jobs")
    }

    fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<(), S::Error> {
        let mut index = 0;
        while let Some(job) = seq.next_element::<Value>()? {
            match jobfile::from_json(index + 1, job) {
                Ok(spec) => self.specs.push(spec),
                Err(error) => {
                    let field = match &error.field {
                        Some(field) => format!("jobs[{index}].{field}"),
                        None => format!("jobs[{index}]"),
                    };
                    let message = format!("{field}: {}", error.message);
                    return Err(refuse(
                        self.refused,
                        ApiError::bad_request(Some(field), message),
                    ));
                }
            }
            index += 1;
        }
        Ok(())
    }

    fn visit_map<M: MapAccess<'de>>(self, _map: M) -> Result<(), M::Error> {
        Err(self.not_an_array())
    }

    fn visit_str<E: de::Error>(self, _text: &str) -> Result<(), E> {
        Err(self.not_an_array())
    }

    fn visit_i64<E: de::Error>(self, _number: i64) -> Result<(), E> {
        Err(self.not_an_array())
    }

    fn visit_u64<E: de::Error>(self, _number: u64) -> Result<(), E> {
        Err(self.not_an_array())
    }

    fn visit_f64<E: de::Error>(self, _number: f64) -> Result<(), E> {
        Err(self.not_an_array())
    }

    fn visit_bool<E: de::Error>(self, _value: bool) -> Result<(), E> {
        Err(self.not_an_array())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Err(self.not_an_array())
    }
}

impl JobsSeed<'_> {
    fn not_an_array<E: de::Error>(self) -> E {
        refuse(
            self.refused,
            ApiError::bad_request(Some("jobs".into()), "must be an array of jobs".into()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::StatusCode;

    fn error_of(body: &str) -> ApiError {
        parse(body.as_bytes()).unwrap_err()
    }

    #[test]
    fn batches_parse_like_job_files() {
        let batch =
            parse(br#"{"name": "x", "jobs": [{"cmd": ["true"]}, {"handler": "noop"}]}"#).unwrap();
        assert_eq!(batch.name, "x");
        assert_eq!(batch.jobs.len(), 2);
        assert_eq!(batch.idempotency_key, None);
        let keyed = parse(br#"{"idempotency_key": "k-1", "jobs": [{"cmd": ["true"]}]}"#).unwrap();
        assert_eq!(keyed.idempotency_key.as_deref(), Some("k-1"));
    }

    #[test]
    fn a_bad_idempotency_key_is_refused_naming_it() {
        for body in [
            r#"{"idempotency_key": 7, "jobs": [{"cmd": ["true"]}]}"#,
            r#"{"idempotency_key": "", "jobs": [{"cmd": ["true"]}]}"#,
            r#"{"idempotency_key": "two words", "jobs": [{"cmd": ["true"]}]}"#,
        ] {
            let error = error_of(body);
            assert_eq!(error.status, StatusCode::BAD_REQUEST);
            assert_eq!(error.field.as_deref(), Some("idempotency_key"), "{body}");
        }
    }

    #[test]
    fn bad_batches_name_the_field() {
        let error = error_of(r#"{"jobs": [{"cmd": ["true"]}, {"cmd": ["true"], "slots": 0}]}"#);
        assert_eq!(error.status, StatusCode::BAD_REQUEST);
        assert_eq!(error.field.as_deref(), Some("jobs[1].slots"));
        assert_eq!(error_of(r#"{"jobs": []}"#).field.as_deref(), Some("jobs"));
        assert_eq!(error_of(r#"{"name": "x"}"#).field.as_deref(), Some("jobs"));
        assert_eq!(error_of(r#"{"jobs": {}}"#).field.as_deref(), Some("jobs"));
        assert_eq!(
            error_of(r#"{"name": 3, "jobs": [{"cmd": ["true"]}]}"#)
                .field
                .as_deref(),
            Some("name")
        );
        assert_eq!(error_of(r#"{"jobz": []}"#).field.as_deref(), Some("jobz"));
        assert_eq!(
            error_of(r#"{"jobs": [{"command": ["true"]}]}"#)
                .field
                .as_deref(),
            Some("jobs[0].command")
        );
        assert_eq!(
            error_of(r#"{"jobs": [7]}"#).field.as_deref(),
            Some("jobs[0]")
        );
        assert_eq!(error_of("[1, 2").field, None);
        assert_eq!(error_of("[1, 2]").field, None);
    }
}
