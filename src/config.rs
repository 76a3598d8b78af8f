//! `drover.toml`: defaults for the binaries' flags, in the usual order flag > environment > file >
//! built-in default.
//!
//! ```toml
//! [coordinator]
//! data_dir = "/var/lib/drover"
//! heartbeat_timeout = "10s"
//!
//! [worker]
//! coordinator = "head:7700"
//! labels = ["gpu", "ssd"]
//!
//! [client]
//! coordinator = "head:7700"
//!
//! [[pool]]            # the elastic fleet's pools: see `crate::fleet::config`
//! name = "cpu"
//! provider = "process"
//! max = 4
//! [pool.process]
//! command = ["drover-worker"]
//! ```
//!
//! The file is `./drover.toml`, or the one `DROVER_CONFIG` names. A key is a flag's name (with
//! `_` or `-`); its value becomes the flag's environment variable unless that is already set, so
//! clap applies the order above without knowing about the file.

use std::path::{Path, PathBuf};

/// The environment variable that names the file.
pub const CONFIG_ENV: &str = "DROVER_CONFIG";
const DEFAULT_FILE: &str = "drover.toml";

/// What is wrong with the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// It could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// It is not valid TOML, or not of the expected shape.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// The file and its text: the one `DROVER_CONFIG` names, else `./drover.toml` if there is
/// one, else none.
fn read() -> Result<Option<(PathBuf, String)>, ConfigError> {
    let path = match std::env::var_os(CONFIG_ENV) {
        Some(path) => PathBuf::from(path),
        None if Path::new(DEFAULT_FILE).exists() => PathBuf::from(DEFAULT_FILE),
        None => return Ok(None),
    };
    let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
        path: path.clone(),
        source,
    })?;
    Ok(Some((path, text)))
}

/// Reads the file (if there is one) and sets the environment variables of the keys in the
/// `section` for this binary. Call it before parsing flags, while the process has one thread.
pub fn apply(section: &str, command: &clap::Command) -> Result<(), ConfigError> {
    let Some((path, text)) = read()? else {
        return Ok(());
    };
    let defaults = defaults(&text, section, command).map_err(|message| ConfigError::Invalid {
        path: path.clone(),
        message,
    })?;
    for (variable, value) in defaults {
        if std::env::var_os(&variable).is_none() {
            std::env::set_var(variable, value);
        }
    }
    Ok(())
}

/// The elastic fleet's pools: the `[[pool]]` tables of the same file, each checked (see
/// [`crate::fleet::parse_pools`]); none without a file.
pub fn pools() -> Result<Vec<crate::fleet::PoolConfig>, ConfigError> {
    let Some((path, text)) = read()? else {
        return Ok(Vec::new());
    };
    crate::fleet::parse_pools(&text).map_err(|message| ConfigError::Invalid { path, message })
}

/// The (environment variable, value) pairs the file's `section` sets for `command`.
pub fn defaults(
    text: &str,
    section: &str,
    command: &clap::Command,
) -> Result<Vec<(String, String)>, String> {
    let table: toml::Table = text
        .parse()
        .map_err(|error: toml::de::Error| error.message().to_string())?;
    let mut pairs = Vec::new();
    for (key, value) in &table {
        match value {
            toml::Value::Table(_)
                if ["coordinator", "worker", "client"].contains(&key.as_str()) => {}
            // The fleet's pools, read and checked by `pools`.
            toml::Value::Array(_) | toml::Value::Table(_) if key == "pool" => {}
            toml::Value::Table(_) => {
                return Err(format!(
                    "unknown section [{key}]: expected [coordinator], [worker], [client] or \
                     [[pool]]"
                ))
            }
            _ => {
                return Err(format!(
                    "key {key:?} must be inside [coordinator], [worker], [client] or [[pool]]"
                ))
            }
        }
    }
    let Some(toml::Value::Table(keys)) = table.get(section) else {
        return Ok(pairs);
    };
    for (key, value) in keys {
        let id = key.replace('-', "_");
        let argument = command
            .get_arguments()
            .find(|argument| argument.get_id().as_str() == id)
            .ok_or_else(|| {
                format!("[{section}] has no setting {key:?}; see --help for the flags")
            })?;
        let variable = argument
            .get_env()
            .and_then(|variable| variable.to_str())
            .ok_or_else(|| format!("[{section}] {key:?} cannot be set from the file"))?;
        let text = match value {
            toml::Value::String(text) => text.clone(),
            toml::Value::Integer(number) => number.to_string(),
            toml::Value::Float(number) => number.to_string(),
            toml::Value::Boolean(flag) => flag.to_string(),
            toml::Value::Array(items) => items
                .iter()
                .map(|item| match item {
                    toml::Value::String(text) => Ok(text.clone()),
                    other => Ok(other.to_string()),
                })
                .collect::<Result<Vec<_>, String>>()?
                .join(","),
            other => return Err(format!("[{section}] {key:?}: unsupported value {other}")),
        };
        pairs.push((variable.to_string(), text));
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Arg, Command};

    fn command() -> Command {
        Command::new("t")
            .arg(Arg::new("data_dir").long("data-dir").env("DROVER_DATA_DIR"))
            .arg(Arg::new("labels").long("label").env("DROVER_LABELS"))
            .arg(Arg::new("verbose").long("verbose"))
    }

    #[test]
    fn a_section_sets_the_flags_environment_variables() {
        let text = "[coordinator]\ndata-dir = \"/var/lib/drover\"\nlabels = [\"gpu\", \"ssd\"]\n[worker]\ndata_dir = \"x\"\n";
        let pairs = defaults(text, "coordinator", &command()).unwrap();
        assert_eq!(
            pairs,
            vec![
                ("DROVER_DATA_DIR".to_string(), "/var/lib/drover".to_string()),
                ("DROVER_LABELS".to_string(), "gpu,ssd".to_string()),
            ]
        );
        assert!(defaults(text, "client", &command()).unwrap().is_empty());
    }

    #[test]
    fn pools_are_left_to_the_fleet() {
        let text = "[coordinator]\ndata_dir = \"d\"\n[[pool]]\nname = \"cpu\"\n\
                    [pool.process]\ncommand = [\"w\"]\n";
        for section in ["coordinator", "worker", "client"] {
            assert!(defaults(text, section, &command()).is_ok(), "{section}");
        }
    }

    #[test]
    fn mistakes_are_named() {
        let error = |text: &str| defaults(text, "coordinator", &command()).unwrap_err();
        assert_eq!(
            error("[coordinator]\ndata_dri = \"x\""),
            "[coordinator] has no setting \"data_dri\"; see --help for the flags"
        );
        assert_eq!(
            error("[coordinator]\nverbose = true"),
            "[coordinator] \"verbose\" cannot be set from the file"
        );
        assert_eq!(
            error("data_dir = \"x\""),
            "key \"data_dir\" must be inside [coordinator], [worker], [client] or [[pool]]"
        );
        assert!(
            error("[coordinator\n").contains("invalid"),
            "{}",
            error("[coordinator\n")
        );
    }
}
