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
pub const SCHEMA_VERSION: i64 = 5;

/// Each migration takes a ledger from the version before it to its own. Never edit one that has
/// been released: ledgers in the field went through it as it was. Add the next instead.
const MIGRATIONS: [(i64, &str); 5] = [
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
    // far is in format 1. An unfinished job records its latest attempt's start (lease and
    // worker), so a restarted coordinator knows which attempt a reconnecting worker may carry.
    (
        2,
        "ALTER TABLE jobs ADD COLUMN spec_format INTEGER NOT NULL DEFAULT 1;
         ALTER TABLE jobs ADD COLUMN started_lease INTEGER;
         ALTER TABLE jobs ADD COLUMN started_worker TEXT;",
    ),
    // 3: the ledger has an id of its own, drawn at random (SQLite's random() reads the system's
    // entropy): outputs go under a directory named for it, so two ledgers whose job ids both
    // start at 1 never share a job's directory or manifest. A ledger made before gets its id
    // here; the manifests of jobs it recorded already stay where its objects are. It has a
    // secret lease key too (32 random bytes, a blob in the integer column): leases are made
    // with it, so a restarted coordinator can check a lease it handed out whose start never
    // reached the disk.
    (
        3,
        "INSERT OR IGNORE INTO meta (key, value) VALUES ('ledger_id', random());
         INSERT OR IGNORE INTO meta (key, value) VALUES ('lease_key', randomblob(32));",
    ),
    // 4: a batch may carry the idempotency key it was submitted with; one batch per key, which
    // the index enforces even if memory were wrong. Batches from before have none.
    (
        4,
        "ALTER TABLE batches ADD COLUMN idempotency_key TEXT;
         CREATE UNIQUE INDEX batches_by_idempotency_key ON batches (idempotency_key)
             WHERE idempotency_key IS NOT NULL;",
    ),
    // 5: a finished job keeps its recorded attempt's result, and has a cursor: its place in
    // recording order, which followers of results resume after. Jobs finished before get
    // theirs here, in the order they finished. The highest cursor ever drawn is kept in meta,
    // so one cleared by a retry is never drawn again.
    (
        5,
        "ALTER TABLE jobs ADD COLUMN result BLOB;
         ALTER TABLE jobs ADD COLUMN cursor INTEGER;
         UPDATE jobs SET cursor = numbered.n
             FROM (SELECT id, ROW_NUMBER() OVER (ORDER BY finished_at_ms, id) AS n FROM jobs
                   WHERE state IN ('succeeded', 'failed', 'cancelled')) AS numbered
             WHERE jobs.id = numbered.id;
         INSERT INTO meta (key, value) SELECT 'last_cursor', COALESCE(MAX(cursor), 0) FROM jobs;
         CREATE UNIQUE INDEX jobs_by_cursor ON jobs (cursor) WHERE cursor IS NOT NULL;
         CREATE INDEX jobs_by_batch_cursor ON jobs (batch, cursor) WHERE cursor IS NOT NULL;",
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

/// What an opened file turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// An empty database: a new ledger is made in it.
    New,
    /// A whole ledger of this schema version (0: from before versions).
    Ledger(i64),
}

/// Looks at the file at `path` without changing it: a new database, or a whole drover ledger of
/// this or an earlier version. Anything else (a newer ledger, another program's database, a
/// damaged file) is refused with what is wrong.
pub fn inspect(conn: &Connection, path: &Path) -> Result<Found, StoreError> {
    let refuse = |reason: String| StoreError::Open {
        path: path.to_path_buf(),
        reason,
    };
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(|error| refuse(describe(&error)))?;
    if version > SCHEMA_VERSION {
        return Err(refuse(format!(
            "it was written by a newer drover (ledger schema version {version}); this drover \
             reads versions up to {SCHEMA_VERSION}. Run the newer drover, or upgrade this one"
        )));
    }
    if version < 0 {
        return Err(refuse(format!(
            "its schema version {version} is not one drover writes; is it a drover ledger?"
        )));
    }
    if version == 0 && !has_tables(conn).map_err(|error| refuse(describe(&error)))? {
        return Ok(Found::New);
    }
    check_tables(conn).map_err(refuse)?;
    Ok(Found::Ledger(version))
}

/// Brings what [`inspect`] found to [`SCHEMA_VERSION`]: the migrations after its version, in
/// one transaction, so an upgrade happens whole or not at all.
pub fn migrate(conn: &mut Connection, path: &Path, found: Found) -> Result<(), StoreError> {
    let refuse = |reason: String| StoreError::Open {
        path: path.to_path_buf(),
        reason,
    };
    let from = match found {
        Found::New => 0,
        Found::Ledger(version) => version,
    };
    if from == SCHEMA_VERSION {
        return Ok(());
    }
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|error| refuse(describe(&error)))?;
    for (version, sql) in MIGRATIONS.iter().filter(|(version, _)| *version > from) {
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
    if found != Found::New {
        tracing::info!(
            path = %path.display(),
            from,
            to = SCHEMA_VERSION,
            "ledger schema migrated"
        );
    }
    check_tables(conn).map_err(refuse)
}

/// Inspects and migrates in one step: for a connection that is new or known to be a ledger.
pub fn prepare(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let found = inspect(conn, path)?;
    migrate(conn, path, found)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn version(conn: &Connection) -> i64 {
        conn.query_row("PRAGMA user_version", [], |row| row.get(0))
            .unwrap()
    }

    fn columns(conn: &Connection, table: &str) -> Vec<String> {
        let mut statement = conn
            .prepare(&format!("PRAGMA table_info({table})"))
            .unwrap();
        statement
            .query_map([], |row| row.get(1))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    #[test]
    fn a_new_ledger_gets_every_table_at_this_version() {
        let mut conn = Connection::open_in_memory().unwrap();
        assert_eq!(inspect(&conn, Path::new("new")).unwrap(), Found::New);
        prepare(&mut conn, Path::new("new")).unwrap();
        assert_eq!(version(&conn), SCHEMA_VERSION);
        assert!(columns(&conn, "jobs").contains(&"spec_format".to_string()));
        assert_eq!(
            inspect(&conn, Path::new("new")).unwrap(),
            Found::Ledger(SCHEMA_VERSION)
        );
        let mut other = Connection::open_in_memory().unwrap();
        prepare(&mut other, Path::new("other")).unwrap();
        assert_ne!(
            ledger_id(&conn),
            ledger_id(&other),
            "each ledger draws its own id"
        );
        assert_eq!(lease_key(&conn).len(), 32);
        assert_ne!(lease_key(&conn), lease_key(&other), "and its own lease key");
    }

    fn lease_key(conn: &Connection) -> Vec<u8> {
        conn.query_row(
            "SELECT value FROM meta WHERE key = 'lease_key'",
            [],
            |row| row.get(0),
        )
        .unwrap()
    }

    #[test]
    fn a_ledger_of_version_2_gets_an_id_and_a_lease_key_once() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(MIGRATIONS[0].1).unwrap();
        conn.execute_batch(MIGRATIONS[1].1).unwrap();
        conn.execute_batch("INSERT INTO meta (key, value) VALUES ('epoch', 7)")
            .unwrap();
        conn.pragma_update(None, "user_version", 2).unwrap();
        assert_eq!(inspect(&conn, Path::new("v2")).unwrap(), Found::Ledger(2));
        prepare(&mut conn, Path::new("v2")).unwrap();
        let (id, key) = (ledger_id(&conn), lease_key(&conn));
        assert_eq!(key.len(), 32);
        prepare(&mut conn, Path::new("v2")).unwrap();
        assert_eq!((ledger_id(&conn), lease_key(&conn)), (id, key), "kept");
        let replayed = crate::storage::sqlite::replay::replay(&mut conn).unwrap();
        assert_eq!(replayed.epoch, 8, "epochs go on");
    }

    #[test]
    fn a_ledger_of_version_3_takes_one_batch_per_idempotency_key() {
        let mut conn = Connection::open_in_memory().unwrap();
        for (_, sql) in &MIGRATIONS[..3] {
            conn.execute_batch(sql).unwrap();
        }
        conn.execute_batch(
            "INSERT INTO batches (id, name, submitted_at_ms, total) VALUES (1, 'old', 5, 1)",
        )
        .unwrap();
        conn.pragma_update(None, "user_version", 3).unwrap();
        assert_eq!(inspect(&conn, Path::new("v3")).unwrap(), Found::Ledger(3));
        prepare(&mut conn, Path::new("v3")).unwrap();
        assert_eq!(version(&conn), SCHEMA_VERSION);
        let insert = |id: i64, key: Option<&str>| {
            conn.execute(
                "INSERT INTO batches (id, name, submitted_at_ms, total, idempotency_key)
                 VALUES (?1, 'b', 6, 1, ?2)",
                rusqlite::params![id, key],
            )
        };
        // Batches with no key, old and new, as many as there are.
        insert(2, None).unwrap();
        insert(3, None).unwrap();
        insert(4, Some("k-1")).unwrap();
        let error = insert(5, Some("k-1")).unwrap_err();
        assert_eq!(
            error.sqlite_error_code(),
            Some(rusqlite::ErrorCode::ConstraintViolation),
            "{error}"
        );
        let old: Option<String> = conn
            .query_row(
                "SELECT idempotency_key FROM batches WHERE id = 1",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(old, None, "a batch from before has no key");
    }

    #[test]
    fn a_ledger_of_version_4_numbers_its_finished_jobs_in_the_order_they_finished() {
        let mut conn = Connection::open_in_memory().unwrap();
        for (_, sql) in &MIGRATIONS[..4] {
            conn.execute_batch(sql).unwrap();
        }
        // Job 3 finished first, 1 and 4 together (by id then), 2 is pending.
        conn.execute_batch(
            "INSERT INTO jobs (id, batch, spec, state, queued_at_ms, finished_at_ms) VALUES
                 (1, 1, x'00', 'succeeded', 5, 30),
                 (2, 1, x'00', 'pending', 5, NULL),
                 (3, 1, x'00', 'failed', 5, 10),
                 (4, 1, x'00', 'cancelled', 5, 30);",
        )
        .unwrap();
        let spec = crate::job::SpecBytes::encode(&crate::job::JobSpec::call("noop", Vec::new()));
        conn.execute("UPDATE jobs SET spec = ?1 WHERE id = 2", [spec.as_bytes()])
            .unwrap();
        conn.pragma_update(None, "user_version", 4).unwrap();
        assert_eq!(inspect(&conn, Path::new("v4")).unwrap(), Found::Ledger(4));
        prepare(&mut conn, Path::new("v4")).unwrap();
        assert_eq!(version(&conn), SCHEMA_VERSION);
        let cursors: Vec<(i64, Option<i64>)> = conn
            .prepare("SELECT id, cursor FROM jobs ORDER BY id")
            .unwrap()
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            cursors,
            vec![(1, Some(2)), (2, None), (3, Some(1)), (4, Some(3))]
        );
        let replayed = crate::storage::sqlite::replay::replay(&mut conn).unwrap();
        assert_eq!(replayed.last_cursor, 3);
        let error = conn
            .execute("UPDATE jobs SET cursor = 1 WHERE id = 4", [])
            .unwrap_err();
        assert_eq!(
            error.sqlite_error_code(),
            Some(rusqlite::ErrorCode::ConstraintViolation),
            "a cursor is one job's: {error}"
        );
    }

    fn ledger_id(conn: &Connection) -> i64 {
        conn.query_row(
            "SELECT value FROM meta WHERE key = 'ledger_id'",
            [],
            |row| row.get(0),
        )
        .unwrap()
    }

    #[test]
    fn an_unversioned_ledger_is_migrated_keeping_its_rows() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(MIGRATIONS[0].1).unwrap();
        conn.execute_batch(
            "INSERT INTO jobs (id, batch, spec, state, queued_at_ms) VALUES (1, 1, x'00', 'pending', 5)",
        )
        .unwrap();
        assert_eq!(inspect(&conn, Path::new("old")).unwrap(), Found::Ledger(0));
        prepare(&mut conn, Path::new("old")).unwrap();
        assert_eq!(version(&conn), SCHEMA_VERSION);
        let format: i64 = conn
            .query_row("SELECT spec_format FROM jobs WHERE id = 1", [], |row| {
                row.get(0)
            })
            .unwrap();
        assert_eq!(format, 1, "specs written before formats are format 1");
        // An id, drawn once: opening it again keeps it.
        let id = ledger_id(&conn);
        prepare(&mut conn, Path::new("old")).unwrap();
        assert_eq!(ledger_id(&conn), id);
    }

    #[test]
    fn a_migration_that_fails_changes_nothing() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(MIGRATIONS[0].1).unwrap();
        // Someone added the column by hand: migration 2 cannot add it again.
        conn.execute_batch(
            "ALTER TABLE jobs ADD COLUMN spec_format INTEGER; CREATE TABLE extra (x);",
        )
        .unwrap();
        let error = prepare(&mut conn, Path::new("odd"))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("migration to schema version 2 failed, nothing was changed"),
            "{error}"
        );
        assert_eq!(version(&conn), 0);
        assert!(columns(&conn, "extra").contains(&"x".to_string()));
    }

    #[test]
    fn newer_and_foreign_databases_are_refused_unchanged() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE notes (text TEXT);")
            .unwrap();
        let error = inspect(&conn, Path::new("foreign"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("no table \"meta\""), "{error}");
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        let error = inspect(&conn, Path::new("newer")).unwrap_err().to_string();
        assert!(
            error.contains("newer drover") && error.contains("newer"),
            "{error}"
        );
    }
}
