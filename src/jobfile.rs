//! The job file: JSON Lines, one job per line.
//!
//! ```text
//! {"cmd": ["sh", "-c", "echo hi"], "name": "greet", "env": {"LANG": "C"}}
//! {"handler": "sleep", "payload": "250", "priority": 5, "requires": ["gpu"], "slots": 2}
//! ```
//!
//! Fields: see [`FIELDS_HELP`]. A file with any bad line is refused whole, naming the line and
//! the field at fault (and, for a field it does not know, the one it probably meant).

use crate::job::{Input, JobSpec, Outputs, Task, DEFAULT_MAX_ATTEMPTS};
use base64::Engine;
use serde_json::{Map, Value};
use std::fmt;

/// The largest job line accepted, in bytes.
pub const MAX_LINE_BYTES: usize = 1024 * 1024;

const KNOWN_FIELDS: &[&str] = &[
    "name",
    "cmd",
    "env",
    "handler",
    "payload",
    "payload_base64",
    "requires",
    "slots",
    "priority",
    "timeout_s",
    "max_attempts",
    "inputs",
    "outputs",
];

/// The fields of a job, for `drover submit --help`.
pub const FIELDS_HELP: &str = "\
Job file: JSON Lines, one job per line, e.g.
  {\"cmd\": [\"sh\", \"-c\", \"echo hi\"], \"name\": \"greet\", \"timeout_s\": 60}
  {\"handler\": \"sleep\", \"payload\": \"250\", \"requires\": [\"gpu\"], \"slots\": 2}

Fields (a job has cmd or handler; the rest are optional):
  cmd             argv to run as a child process in a fresh scratch directory
  env             {\"NAME\": \"value\"} for cmd's environment
  handler         a function registered with the worker (stock: noop, sleep)
  payload         the handler's input, as text
  payload_base64  the handler's input, as base64
  name            a name for people to read
  requires        labels a worker must carry, e.g. [\"gpu\"]
  slots           slots the job takes on its worker (default 1)
  priority        higher runs first (default 0)
  timeout_s       seconds the whole attempt may take: inputs, run, outputs
  max_attempts    attempts before the job is failed (default 3)
  inputs          [{\"from\": \"s3://bucket/key\", \"to\": \"relative/path\"}] fetched first
  outputs         {\"from\": \"out\", \"to\": \"s3://bucket/prefix/\"} published after success";

/// What is wrong with a job file, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct JobFileError {
    /// The line, from 1; none when the fault is the file's as a whole (it holds no jobs).
    pub line: Option<usize>,
    /// The field at fault, if one is.
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for JobFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, &self.field) {
            (Some(line), Some(field)) => {
                write!(f, "line {line}, field {field:?}: {}", self.message)
            }
            (Some(line), None) => write!(f, "line {line}: {}", self.message),
            (None, Some(field)) => write!(f, "field {field:?}: {}", self.message),
            (None, None) => f.write_str(&self.message),
        }
    }
}

/// Parses a whole job file; any error refuses all of it.
///
/// ```
/// let jobs = drover::jobfile::parse("{\"cmd\": [\"true\"]}\n{\"handler\": \"noop\"}\n").unwrap();
/// assert_eq!(jobs.len(), 2);
/// assert_eq!(jobs[0].slots, 1);
///
/// let error = drover::jobfile::parse("{\"cmd\": [\"true\"], \"slots\": -1}").unwrap_err();
/// assert_eq!(error.to_string(), "line 1, field \"slots\": expected a positive integer, got -1");
/// ```
pub fn parse(text: &str) -> Result<Vec<JobSpec>, JobFileError> {
    let mut jobs = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        jobs.push(parse_line(index + 1, line)?);
    }
    if jobs.is_empty() {
        return Err(JobFileError {
            line: None,
            field: None,
            message: "the file holds no jobs".into(),
        });
    }
    Ok(jobs)
}

/// Parses one line (numbered from 1, for errors).
pub fn parse_line(line: usize, text: &str) -> Result<JobSpec, JobFileError> {
    let fail = |field: Option<&str>, message: String| JobFileError {
        line: Some(line),
        field: field.map(str::to_string),
        message,
    };
    if text.len() > MAX_LINE_BYTES {
        return Err(fail(
            None,
            format!(
                "line is {} bytes, more than the limit of {MAX_LINE_BYTES}",
                text.len()
            ),
        ));
    }
    let value: Value = serde_json::from_str(text).map_err(|error| fail(None, not_json(&error)))?;
    from_json(line, value)
}

/// A JSON error within one line: its column, not serde's "line 1" as well.
fn not_json(error: &serde_json::Error) -> String {
    let full = error.to_string();
    let at = format!(" at line {} column {}", error.line(), error.column());
    match full.strip_suffix(&at) {
        Some(what) if error.column() > 0 => {
            format!("not valid JSON at column {}: {what}", error.column())
        }
        Some(what) => format!("not valid JSON: {what}"),
        None => format!("not valid JSON: {full}"),
    }
}

/// Names other job systems use for a field of ours.
const ALIASES: &[(&str, &str)] = &[
    ("command", "cmd"),
    ("argv", "cmd"),
    ("args", "cmd"),
    ("labels", "requires"),
    ("cpus", "slots"),
    ("retries", "max_attempts"),
    ("attempts", "max_attempts"),
];

/// The known name closest to a misspelt one, if one is close enough to be what was meant.
fn suggestion<'a>(given: &str, known: &[&'a str]) -> Option<&'a str> {
    let given = given.to_ascii_lowercase();
    if let Some(meant) = ALIASES
        .iter()
        .find(|(alias, _)| *alias == given)
        .and_then(|(_, meant)| known.iter().find(|name| *name == meant))
    {
        return Some(meant);
    }
    known
        .iter()
        .map(|name| (strsim::damerau_levenshtein(&given, name), *name))
        .filter(|(distance, name)| {
            // A slip of a letter or two, or a name cut short (`timeout` for `timeout_s`).
            *distance <= (name.len() / 3).max(1)
                || (given.len() >= 3 && (name.starts_with(&given) || given.starts_with(name)))
        })
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, name)| name)
}

/// "unknown field", with what was probably meant.
fn unknown(given: &str, known: &[&str], what: &str) -> String {
    match suggestion(given, known) {
        Some(meant) => format!("unknown {what}; did you mean `{meant}`?"),
        None => format!("unknown {what}; known ones: {}", known.join(", ")),
    }
}

/// One job from its JSON value (a line already parsed, or an element of an HTTP submission),
/// with the same fields and checks as a line of the file; `line` numbers it for errors.
pub fn from_json(line: usize, value: Value) -> Result<JobSpec, JobFileError> {
    let fail = |field: Option<&str>, message: String| JobFileError {
        line: Some(line),
        field: field.map(str::to_string),
        message,
    };
    let Value::Object(object) = value else {
        return Err(fail(None, "expected a JSON object".into()));
    };
    if let Some(field) = object
        .keys()
        .find(|key| !KNOWN_FIELDS.contains(&key.as_str()))
    {
        return Err(fail(Some(field), unknown(field, KNOWN_FIELDS, "field")));
    }
    let fields = Fields {
        object: &object,
        fail: &fail,
    };

    let task = match (object.get("cmd"), object.get("handler")) {
        (Some(_), Some(_)) => {
            return Err(fail(
                Some("handler"),
                "a job has either cmd or handler, not both".into(),
            ))
        }
        (None, None) => {
            return Err(fail(
                Some("cmd"),
                "missing: a job needs cmd (argv) or handler".into(),
            ))
        }
        (Some(cmd), None) => {
            let cmd = fields.strings("cmd", cmd)?;
            if cmd.first().is_none_or(|program| program.is_empty()) {
                return Err(fail(Some("cmd"), "must name a program".into()));
            }
            for field in ["payload", "payload_base64"] {
                if object.contains_key(field) {
                    return Err(fail(
                        Some(field),
                        "only call jobs (with handler) take a payload".into(),
                    ));
                }
            }
            Task::Exec {
                cmd,
                env: fields.env()?,
            }
        }
        (None, Some(handler)) => {
            let Value::String(handler) = handler else {
                return Err(fail(Some("handler"), "expected a string".into()));
            };
            if handler.is_empty() {
                return Err(fail(Some("handler"), "must not be empty".into()));
            }
            if object.contains_key("env") {
                return Err(fail(
                    Some("env"),
                    "only exec jobs (with cmd) take env".into(),
                ));
            }
            Task::Call {
                handler: handler.clone(),
                payload: fields.payload()?,
            }
        }
    };
    let requires = match object.get("requires") {
        Some(value) => fields.strings("requires", value)?,
        None => Vec::new(),
    };
    if requires.iter().any(String::is_empty) {
        return Err(fail(Some("requires"), "labels must not be empty".into()));
    }
    let name = match object.get("name") {
        None | Some(Value::Null) => None,
        Some(Value::String(name)) => Some(name.clone()),
        Some(_) => return Err(fail(Some("name"), "expected a string".into())),
    };
    let timeout_s = match object.get("timeout_s") {
        None | Some(Value::Null) => None,
        Some(_) => Some(fields.positive("timeout_s")?),
    };
    let spec = JobSpec {
        name,
        task,
        requires,
        slots: fields.positive_or("slots", 1)?,
        priority: fields.priority()?,
        timeout_s,
        max_attempts: fields.positive_or("max_attempts", DEFAULT_MAX_ATTEMPTS)?,
        inputs: fields.inputs()?,
        outputs: fields.outputs()?,
    };
    // The same checks the coordinator makes; their messages start with the field's name.
    spec.validate()
        .map_err(|error| match error.split_once(": ") {
            Some((field, message)) => fail(Some(field), message.to_string()),
            None => fail(None, error),
        })?;
    Ok(spec)
}

struct Fields<'a, F: Fn(Option<&str>, String) -> JobFileError> {
    object: &'a Map<String, Value>,
    fail: &'a F,
}

impl<F: Fn(Option<&str>, String) -> JobFileError> Fields<'_, F> {
    fn strings(&self, field: &str, value: &Value) -> Result<Vec<String>, JobFileError> {
        let expected = || (self.fail)(Some(field), "expected an array of strings".into());
        let Value::Array(items) = value else {
            return Err(expected());
        };
        items
            .iter()
            .map(|item| item.as_str().map(str::to_string).ok_or_else(expected))
            .collect()
    }

    fn env(&self) -> Result<Vec<(String, String)>, JobFileError> {
        match self.object.get("env") {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Object(vars)) => vars
                .iter()
                .map(|(key, value)| match value {
                    Value::String(value) if !key.is_empty() && !key.contains('=') => {
                        Ok((key.clone(), value.clone()))
                    }
                    Value::String(_) => Err((self.fail)(
                        Some("env"),
                        format!("{key:?} is not a valid variable name"),
                    )),
                    _ => Err((self.fail)(
                        Some("env"),
                        format!("value of {key:?} must be a string"),
                    )),
                })
                .collect(),
            Some(_) => Err((self.fail)(
                Some("env"),
                "expected an object of strings".into(),
            )),
        }
    }

    fn payload(&self) -> Result<Vec<u8>, JobFileError> {
        match (
            self.object.get("payload"),
            self.object.get("payload_base64"),
        ) {
            (Some(_), Some(_)) => Err((self.fail)(
                Some("payload_base64"),
                "give payload or payload_base64, not both".into(),
            )),
            (Some(Value::String(text)), None) => Ok(text.as_bytes().to_vec()),
            (Some(_), None) => Err((self.fail)(Some("payload"), "expected a string".into())),
            (None, Some(Value::String(encoded))) => base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .map_err(|error| {
                    (self.fail)(Some("payload_base64"), format!("not valid base64: {error}"))
                }),
            (None, Some(_)) => Err((self.fail)(
                Some("payload_base64"),
                "expected a string".into(),
            )),
            (None, None) => Ok(Vec::new()),
        }
    }

    /// A `{"from": ..., "to": ...}` object, as (from, to).
    fn pair(&self, field: &str, value: &Value) -> Result<(String, String), JobFileError> {
        let Value::Object(pair) = value else {
            return Err((self.fail)(
                Some(field),
                "expected an object with \"from\" and \"to\"".into(),
            ));
        };
        if let Some(key) = pair.keys().find(|key| *key != "from" && *key != "to") {
            let message = format!("{key:?}: {}", unknown(key, &["from", "to"], "key"));
            return Err((self.fail)(Some(field), message));
        }
        let text = |key: &str| match pair.get(key) {
            Some(Value::String(text)) => Ok(text.clone()),
            Some(_) => Err((self.fail)(
                Some(&format!("{field}.{key}")),
                "expected a string".into(),
            )),
            None => Err((self.fail)(
                Some(&format!("{field}.{key}")),
                "missing".into(),
            )),
        };
        Ok((text("from")?, text("to")?))
    }

    fn inputs(&self) -> Result<Vec<Input>, JobFileError> {
        match self.object.get("inputs") {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(index, item)| {
                    let (from, to) = self.pair(&format!("inputs[{index}]"), item)?;
                    Ok(Input { from, to })
                })
                .collect(),
            Some(_) => Err((self.fail)(
                Some("inputs"),
                "expected an array of {\"from\", \"to\"} objects".into(),
            )),
        }
    }

    fn outputs(&self) -> Result<Option<Outputs>, JobFileError> {
        match self.object.get("outputs") {
            None | Some(Value::Null) => Ok(None),
            Some(value) => {
                let (from, to) = self.pair("outputs", value)?;
                Ok(Some(Outputs { from, to }))
            }
        }
    }

    fn positive(&self, field: &str) -> Result<u32, JobFileError> {
        let value = self.object.get(field);
        value
            .and_then(Value::as_u64)
            .filter(|number| (1..=u32::MAX as u64).contains(number))
            .map(|number| number as u32)
            .ok_or_else(|| {
                (self.fail)(
                    Some(field),
                    format!(
                        "expected a positive integer, got {}",
                        value.map_or("nothing".into(), Value::to_string)
                    ),
                )
            })
    }

    fn positive_or(&self, field: &str, default: u32) -> Result<u32, JobFileError> {
        match self.object.get(field) {
            None | Some(Value::Null) => Ok(default),
            Some(_) => self.positive(field),
        }
    }

    fn priority(&self) -> Result<i32, JobFileError> {
        match self.object.get("priority") {
            None | Some(Value::Null) => Ok(0),
            Some(value) => value
                .as_i64()
                .and_then(|number| i32::try_from(number).ok())
                .ok_or_else(|| {
                    (self.fail)(
                        Some("priority"),
                        format!("expected an integer, got {value}"),
                    )
                }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_exec_and_call_jobs() {
        let jobs = parse(concat!(
            "{\"cmd\": [\"sh\", \"-c\", \"echo hi\"], \"name\": \"greet\", \"env\": {\"A\": \"1\"}, \"timeout_s\": 30}\n",
            "\n",
            "{\"handler\": \"sleep\", \"payload\": \"250\", \"priority\": -2, \"requires\": [\"gpu\"], \"slots\": 2, \"max_attempts\": 5}\n",
            "{\"handler\": \"noop\", \"payload_base64\": \"aGk=\"}\n",
        ))
        .unwrap();
        assert_eq!(jobs.len(), 3);
        assert_eq!(jobs[0].name.as_deref(), Some("greet"));
        assert_eq!(
            jobs[0].task,
            Task::Exec {
                cmd: vec!["sh".into(), "-c".into(), "echo hi".into()],
                env: vec![("A".into(), "1".into())]
            }
        );
        assert_eq!(jobs[0].timeout_s, Some(30));
        assert_eq!(jobs[0].max_attempts, DEFAULT_MAX_ATTEMPTS);
        assert_eq!(
            (jobs[1].priority, jobs[1].slots, jobs[1].max_attempts),
            (-2, 2, 5)
        );
        assert_eq!(jobs[1].requires, vec!["gpu".to_string()]);
        assert_eq!(
            jobs[2].task,
            Task::Call {
                handler: "noop".into(),
                payload: b"hi".to_vec()
            }
        );
    }

    fn error_of(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn errors_name_the_line_and_field() {
        let good = "{\"cmd\": [\"true\"]}\n";
        assert_eq!(
            error_of(&format!(
                "{good}{good}{{\"cmd\": [\"true\"], \"slots\": 0}}\n"
            )),
            "line 3, field \"slots\": expected a positive integer, got 0"
        );
        assert_eq!(
            error_of("{\"cmd\": \"true\"}"),
            "line 1, field \"cmd\": expected an array of strings"
        );
        assert_eq!(
            error_of("{\"cmd\": []}"),
            "line 1, field \"cmd\": must name a program"
        );
        assert_eq!(
            error_of("{\"name\": \"x\"}"),
            "line 1, field \"cmd\": missing: a job needs cmd (argv) or handler"
        );
        assert_eq!(
            error_of("{\"cmd\": [\"true\"], \"slot\": 2}"),
            "line 1, field \"slot\": unknown field; did you mean `slots`?"
        );
        assert_eq!(
            error_of(&format!("{good}{{\"cmd\": [\"true\"]")),
            "line 2: not valid JSON at column 16: EOF while parsing an object"
        );
        assert_eq!(error_of("[1, 2]"), "line 1: expected a JSON object");
        assert_eq!(
            error_of("{\"handler\": \"noop\", \"payload_base64\": \"!!\"}"),
            "line 1, field \"payload_base64\": not valid base64: Invalid symbol 33, offset 0."
        );
        assert_eq!(
            error_of("{\"cmd\": [\"true\"], \"priority\": 1.5}"),
            "line 1, field \"priority\": expected an integer, got 1.5"
        );
        assert_eq!(error_of("\n\n"), "the file holds no jobs");
        assert_eq!(error_of(""), "the file holds no jobs");
        assert_eq!(
            error_of(r#"{"cmd": ["true"], "inputs": [{"from": "file:///d/a", "to": "../a"}]}"#),
            r#"line 1, field "inputs[0].to": "../a" must not contain '..'"#
        );
        assert_eq!(
            error_of(r#"{"cmd": ["true"], "inputs": [{"from": "gs://b/a", "to": "a"}]}"#),
            r#"line 1, field "inputs[0].from": "gs://b/a": unknown scheme "gs"; expected s3:// or file://"#
        );
        assert_eq!(
            error_of(r#"{"cmd": ["true"], "outputs": {"from": "/abs", "to": "file:///o/"}}"#),
            r#"line 1, field "outputs.from": "/abs" must be relative to the scratch directory"#
        );
        assert_eq!(
            error_of(r#"{"cmd": ["true"], "outputs": {"from": "out"}}"#),
            r#"line 1, field "outputs.to": missing"#
        );
    }

    #[test]
    fn a_misspelt_field_is_named_with_what_was_meant() {
        for (given, meant) in [
            ("timeout", "timeout_s"),
            ("tiemout_s", "timeout_s"),
            ("Slots", "slots"),
            ("max_attempt", "max_attempts"),
            ("require", "requires"),
            ("input", "inputs"),
            ("command", "cmd"),
            ("retries", "max_attempts"),
        ] {
            let message = error_of(&format!("{{\"cmd\": [\"true\"], \"{given}\": 1}}"));
            assert_eq!(
                message,
                format!("line 1, field \"{given}\": unknown field; did you mean `{meant}`?")
            );
        }
        // Nothing close: the known fields instead of a guess.
        let message = error_of("{\"cmd\": [\"true\"], \"colour\": 1}");
        assert!(message.ends_with("unknown field; known ones: name, cmd, env, handler, payload, payload_base64, requires, slots, priority, timeout_s, max_attempts, inputs, outputs"), "{message}");
        assert_eq!(
            error_of(r#"{"cmd": ["true"], "inputs": [{"form": "file:///a", "to": "a"}]}"#),
            r#"line 1, field "inputs[0]": "form": unknown key; did you mean `from`?"#
        );
    }

    #[test]
    fn the_help_names_every_field() {
        for field in KNOWN_FIELDS {
            assert!(
                FIELDS_HELP.contains(&format!("\n  {field} ")),
                "{field} is missing from the help"
            );
        }
    }

    #[test]
    fn any_byte_soup_is_an_error_not_a_panic() {
        for text in [
            "\u{0}",
            "{",
            "}",
            "{\"cmd\": [1]}",
            "{\"cmd\": [\"a\"], \"env\": {\"=\": \"x\"}}",
            "null",
            "{\"handler\": 3}",
        ] {
            assert!(parse(text).is_err(), "{text:?} should be refused");
        }
    }
}
