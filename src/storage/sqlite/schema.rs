//! The ledger's tables, their version, and the migrations between versions.
//!
//! The version is SQLite's `user_version`. Version 0 is a ledger from before there were
//! versions (its tables are those of version 1) or a new, empty file. Opening a ledger runs the
//! migrations from its version to [`SCHEMA_VERSION`] in one transaction, so an upgrade either
//! happens whole or not at all; a ledger of a newer version is refused, never read half-way.

use crate::storage::store::StoreError;
use rusqlite::{Connection, TransactionBehavior};
use std::path::Path;

/// The version this drover writes.
pub const SCHEMA_VERSION: i64 = 2;

/// Each migration takes a ledger from the version before it to its own. Never edit one that has
/// been released: ledgers in the field went through it as it was. Add the next instead.
const MIGRATIONS: [(i64, &str); 2] = [
    // 1: the tables as the first releases wrote them (CREATE ... IF NOT EXISTS, so a ledger of
    // that time, which has them but no version, passes through unchanged).
    (
        1,
        "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
         CREATE TABLE IF NOT EXISTS batches (
             id INTEGER PRIMARY KEY,
             name TEXT NOT NULL,
             submitted_at_ms INTEGER NOT NULL,
             total INTEGER NOT NULL);
         CREATE TABLE IF NOT EXISTS jobs (
             id INTEGER PRIMARY KEY,
             batch INTEGER NOT NULL,
             name TEXT,
             spec BLOB NOT NULL,
             state TEXT NOT NULL,
             attempts INTEGER NOT NULL DEFAULT 0,
             lost_attempts INTEGER NOT NULL DEFAULT 0,
             failures INTEGER NOT NULL DEFAULT 0,
             queued_at_ms INTEGER NOT NULL,
             worker TEXT,
             started_at_ms INTEGER,
             finished_at_ms INTEGER,
             duration_ms INTEGER,
             exit_code INTEGER,
             output_tail TEXT,
             error TEXT,
             duplicates INTEGER NOT NULL DEFAULT 0,
             lease INTEGER,
             outputs TEXT,
             manifest_written INTEGER NOT NULL DEFAULT 0);
         CREATE INDEX IF NOT EXISTS jobs_by_batch ON jobs (batch, id);
         CREATE INDEX IF NOT EXISTS jobs_unfinished ON jobs (id) WHERE state = 'pending';
         CREATE TABLE IF NOT EXISTS attempts (
             job INTEGER NOT NULL,
             attempt INTEGER NOT NULL,
             worker TEXT NOT NULL,
             outcome TEXT NOT NULL,
             started_at_ms INTEGER NOT NULL,
             finished_at_ms INTEGER NOT NULL,
             exit_code INTEGER,
             error TEXT);
         CREATE INDEX IF NOT EXISTS attempts_by_job ON attempts (job);",
    ),
    // 2: stored specs say which format they are in (see `spec_format`); every spec written so
    // far is in format 1.
    (
        2,
        "ALTER TABLE jobs ADD COLUMN spec_format INTEGER NOT NULL DEFAULT 1;",
    ),
];

/// The tables every ledger of version 1 or later has, with columns the code reads.
const TABLES: [(&str, &[&str]); 4] = [
    ("meta", &["key", "value"]),
    ("batches", &["id", "name", "submitted_at_ms", "total"]),
    (
        "jobs",
        &[
            "id",
            "batch",
            "name",
            "spec",
            "state",
            "attempts",
            "lost_attempts",
            "failures",
            "queued_at_ms",
            "worker",
            "lease",
            "outputs",
            "manifest_written",
        ],
    ),
    ("attempts", &["job", "attempt", "worker", "outcome"]),
];

/// Brings the ledger at `path` to [`SCHEMA_VERSION`]: creates the tables of a new one, migrates
/// an older one, refuses a newer or a damaged one. Returns the version it found.
pub fn prepare(conn: &mut Connection, path: &Path) -> Result<i64, StoreError> {
    let refuse = |reason: String| StoreError::Open {
        path: path.to_path_buf(),
        reason,
    };
    let found: i64 = conn
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(|error| refuse(describe(&error)))?;
    if found > SCHEMA_VERSION {
        return Err(refuse(format!(
            "it was written by a newer drover (ledger schema version {found}); this drover \
             reads versions up to {SCHEMA_VERSION}. Run the newer drover, or upgrade this one"
        )));
    }
    if found < 0 {
        return Err(refuse(format!(
            "its schema version {found} is not one drover writes; is it a drover ledger?"
        )));
    }
    let unversioned = found == 0 && has_tables(conn).map_err(|error| refuse(describe(&error)))?;
    if unversioned {
        // From before versions: it must be a whole ledger of that time, not some other file.
        check_tables(conn).map_err(refuse)?;
    }
    if found == SCHEMA_VERSION {
        check_tables(conn).map_err(refuse)?;
        return Ok(found);
    }
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|error| refuse(describe(&error)))?;
    for (version, sql) in MIGRATIONS.iter().filter(|(version, _)| *version > found) {
        tx.execute_batch(sql).map_err(|error| {
            refuse(format!(
                "migration to schema version {version} failed, nothing was changed: {}",
                describe(&error)
            ))
        })?;
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)
        .map_err(|error| refuse(describe(&error)))?;
    tx.commit().map_err(|error| refuse(describe(&error)))?;
    if found > 0 || unversioned {
        tracing::info!(
            path = %path.display(),
            from = found,
            to = SCHEMA_VERSION,
            "ledger schema migrated"
        );
    }
    check_tables(conn).map_err(refuse)?;
    Ok(found)
}

fn has_tables(conn: &Connection) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table'",
        [],
        |row| row.get::<_, i64>(0),
    )
    .map(|count| count > 0)
}

fn check_tables(conn: &Connection) -> Result<(), String> {
    for (table, columns) in TABLES {
        let mut statement = conn
            .prepare(&format!("PRAGMA table_info({table})"))
            .map_err(|error| describe(&error))?;
        let present: Vec<String> = statement
            .query_map([], |row| row.get::<_, String>(1))
            .and_then(|rows| rows.collect())
            .map_err(|error| describe(&error))?;
        if present.is_empty() {
            return Err(format!(
                "it has no table {table:?}: it is damaged, or not a drover ledger"
            ));
        }
        if let Some(missing) = columns
            .iter()
            .find(|column| !present.iter().any(|name| name == *column))
        {
            return Err(format!(
                "its table {table:?} has no column {missing:?}: it is damaged, or not a drover ledger"
            ));
        }
    }
    Ok(())
}

/// SQLite's words for a file that is not what it should be, in ours.
pub fn describe(error: &rusqlite::Error) -> String {
    match error.sqlite_error_code() {
        Some(rusqlite::ErrorCode::NotADatabase) => "it is not an SQLite database".into(),
        Some(rusqlite::ErrorCode::DatabaseCorrupt) => {
            format!("it is damaged (truncated or overwritten: {error})")
        }
        Some(rusqlite::ErrorCode::CannotOpen) => {
            format!(
                "it cannot be opened ({error}); check that its directory exists and is writable"
            )
        }
        Some(rusqlite::ErrorCode::ReadOnly) | Some(rusqlite::ErrorCode::PermissionDenied) => {
            format!("it cannot be written ({error}); check the permissions of the file and its directory")
        }
        _ => error.to_string(),
    }
}
