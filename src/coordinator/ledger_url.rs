//! Which ledger a `--ledger` URL names, and the [`Leadership`] that leads it.
//!
//! No URL (or `sqlite://`, with no path) is SQLite in `--data-dir`, as always; `postgres://` or
//! `postgresql://` is a PostgreSQL database shared by every coordinator of the cluster. Anything
//! else is refused with the URL (its password masked) and what is accepted, before any port is
//! bound.

use super::{CoordinatorConfig, StartError};
use crate::ha::sqlite::SqliteLeadership;
use crate::ha::Leadership;
use crate::metrics::Metrics;
use std::sync::Arc;
use std::time::Duration;

/// What a `--ledger` URL names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LedgerLocation {
    /// SQLite in the data directory.
    Sqlite,
    /// A PostgreSQL database, by its URL (as given: it holds the password).
    Postgres(String),
}

/// What `--ledger` accepts, for the messages that refuse something else.
const ACCEPTED: &str = "give postgres://USER:PASSWORD@HOST[,HOST2...]/DATABASE for PostgreSQL, \
                        or leave --ledger unset for SQLite in --data-dir";

/// Reads a `--ledger` URL.
pub fn parse(url: Option<&str>) -> Result<LedgerLocation, StartError> {
    let Some(url) = url.map(str::trim).filter(|url| !url.is_empty()) else {
        return Ok(LedgerLocation::Sqlite);
    };
    let refuse =
        |why: &str| StartError::LedgerUrl(format!("--ledger {:?}: {why}; {ACCEPTED}", mask(url)));
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(refuse("not a ledger URL (it has no scheme://)"));
    };
    match scheme.to_ascii_lowercase().as_str() {
        "postgres" | "postgresql" => Ok(LedgerLocation::Postgres(url.to_string())),
        "sqlite" if rest.is_empty() => Ok(LedgerLocation::Sqlite),
        "sqlite" => Err(StartError::LedgerUrl(format!(
            "--ledger {:?}: a SQLite ledger lives in --data-dir; give --data-dir DIR and leave \
             --ledger unset (or give sqlite:// with no path)",
            mask(url)
        ))),
        "" => Err(refuse("the scheme is missing")),
        other => Err(refuse(&format!(
            "drover keeps no ledger in {other:?} databases"
        ))),
    }
}

/// The leadership of the ledger `url` names: SQLite in `config.data_dir`, or PostgreSQL with
/// a lease of `lease_ttl`.
pub fn leadership(
    url: Option<&str>,
    config: &CoordinatorConfig,
    lease_ttl: Duration,
) -> Result<Arc<dyn Leadership>, StartError> {
    match parse(url)? {
        LedgerLocation::Sqlite => Ok(Arc::new(SqliteLeadership::new(
            &config.data_dir,
            config.metrics.clone(),
        ))),
        LedgerLocation::Postgres(url) => {
            postgres_leadership(&url, lease_ttl, config.metrics.clone())
        }
    }
}

/// The leadership of a PostgreSQL ledger.
fn postgres_leadership(
    url: &str,
    lease_ttl: Duration,
    metrics: Arc<Metrics>,
) -> Result<Arc<dyn Leadership>, StartError> {
    let leadership = crate::storage::postgres::PgLeadership::new(url, lease_ttl, metrics)
        .map_err(StartError::Ledger)?;
    Ok(Arc::new(leadership))
}

/// A URL fit for a message or a log: its password, in the user part or as a `password=`
/// parameter, replaced by `***`.
pub fn mask(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    // The user part ends at the last '@' before the query.
    let query_at = rest.find('?').unwrap_or(rest.len());
    let (authority, tail) = match rest[..query_at].rfind('@') {
        Some(at) => {
            let (userinfo, hosts) = rest.split_at(at);
            let user = match userinfo.split_once(':') {
                Some((user, _password)) => format!("{user}:***"),
                None => userinfo.to_string(),
            };
            let query_at = query_at - at;
            let (hosts, query) = hosts.split_at(query_at);
            (format!("{user}{hosts}"), query)
        }
        None => {
            let (authority, query) = rest.split_at(query_at);
            (authority.to_string(), query)
        }
    };
    let query = tail
        .split_inclusive(['?', '&'])
        .map(|part| {
            let lower = part.to_ascii_lowercase();
            match lower.strip_prefix("password=") {
                Some(_) => {
                    let end = if part.ends_with(['&']) { "&" } else { "" };
                    format!("password=***{end}")
                }
                None => part.to_string(),
            }
        })
        .collect::<String>();
    format!("{scheme}://{authority}{query}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ledger_urls_are_read_or_refused_with_what_is_accepted() {
        assert_eq!(parse(None).unwrap(), LedgerLocation::Sqlite);
        assert_eq!(parse(Some(" ")).unwrap(), LedgerLocation::Sqlite);
        assert_eq!(parse(Some("sqlite://")).unwrap(), LedgerLocation::Sqlite);
        let url = "postgres://drover:secret@db1,db2/drover?target_session_attrs=read-write";
        assert_eq!(
            parse(Some(url)).unwrap(),
            LedgerLocation::Postgres(url.into())
        );
        assert!(matches!(
            parse(Some("postgresql://h/db")).unwrap(),
            LedgerLocation::Postgres(_)
        ));
        for (url, says) in [
            (
                "mysql://root:hunter2@db/drover",
                "no ledger in \"mysql\" databases",
            ),
            ("garbage", "not a ledger URL"),
            ("://host/db", "the scheme is missing"),
            ("sqlite:///var/lib/drover", "lives in --data-dir"),
        ] {
            let error = parse(Some(url)).unwrap_err().to_string();
            assert!(error.contains(says), "{url}: {error}");
            assert!(!error.contains("hunter2"), "{error}");
        }
    }

    #[test]
    fn passwords_are_masked() {
        for (url, masked) in [
            (
                "postgres://drover:s3cr@t/x@db1,db2/drover?sslmode=require",
                "postgres://drover:***@db1,db2/drover?sslmode=require",
            ),
            ("postgres://db/drover", "postgres://db/drover"),
            ("postgres://drover@db/drover", "postgres://drover@db/drover"),
            (
                "postgres://db/drover?user=u&password=p&sslmode=require",
                "postgres://db/drover?user=u&password=***&sslmode=require",
            ),
            ("garbage", "garbage"),
        ] {
            assert_eq!(mask(url), masked, "{url}");
        }
    }
}
