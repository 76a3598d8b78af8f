//! The ledger's tables in PostgreSQL, their version, and the migrations between versions.
//!
//! The version is the `schema_version` row of `meta`. Whoever connects first creates the tables;
//! every connect runs the migrations from the version found to [`SCHEMA_VERSION`] in one
//! transaction, under a transaction-level advisory lock, so two coordinators starting at once do
//! it once, and an upgrade happens whole or not at all. A ledger of a newer version is refused.
//!
//! Beyond SQLite's tables (`meta`, `batches`, `jobs`, `attempts`), PostgreSQL has the lease
//! (`lease`: one row, who leads at which epoch until when, by the database's clock), the
//! coordinators seen (`coordinators`), and each epoch's last group commit (`commit_marks`),
//! which tells a writer whose connection died during COMMIT whether it happened.
//!
//! Version 2 keeps results: a finished job's `result` (its recorded attempt's bytes) and its
//! `cursor` (its place in recording order, for followers of results). The migration numbers
//! the jobs already finished in the order they finished.

use super::connect::{classify, Failure, Target};
use rand::RngCore;
use tokio_postgres::Client;

/// The version this drover writes.
pub const SCHEMA_VERSION: i64 = 2;

/// The advisory lock that serialises schema changes between coordinators ("drover" in ASCII).
const SCHEMA_LOCK: i64 = 0x6472_6f76_6572;

/// Each migration takes a ledger from the version before it to its own. Never edit one that has
/// been released: add the next instead.
const MIGRATIONS: [(i64, &str); 2] = [
    (
        1,
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value BIGINT, bytes BYTEA);
     CREATE TABLE batches (
         id BIGINT PRIMARY KEY,
         name TEXT NOT NULL,
         submitted_at_ms BIGINT NOT NULL,
         total BIGINT NOT NULL,
         idempotency_key TEXT);
     CREATE UNIQUE INDEX batches_by_idempotency_key ON batches (idempotency_key)
         WHERE idempotency_key IS NOT NULL;
     CREATE TABLE jobs (
         id BIGINT PRIMARY KEY,
         batch BIGINT NOT NULL,
         name TEXT,
         spec BYTEA NOT NULL,
         spec_format INTEGER NOT NULL,
         state TEXT NOT NULL,
         attempts BIGINT NOT NULL DEFAULT 0,
         lost_attempts BIGINT NOT NULL DEFAULT 0,
         failures BIGINT NOT NULL DEFAULT 0,
         queued_at_ms BIGINT NOT NULL,
         worker TEXT,
         started_at_ms BIGINT,
         finished_at_ms BIGINT,
         duration_ms BIGINT,
         exit_code INTEGER,
         output_tail TEXT,
         error TEXT,
         duplicates BIGINT NOT NULL DEFAULT 0,
         lease BIGINT,
         outputs TEXT,
         manifest_written SMALLINT NOT NULL DEFAULT 0,
         started_lease BIGINT,
         started_worker TEXT)
         -- Room in each page, so that a job's start and its result are written beside it
         -- (HOT updates: no new index entries). For the same reason no index names `state`:
         -- the unfinished jobs are read once per term, by a scan.
         WITH (fillfactor = 50);
     CREATE INDEX jobs_by_batch ON jobs (batch, id);
     CREATE TABLE attempts (
         id BIGSERIAL PRIMARY KEY,
         job BIGINT NOT NULL,
         attempt BIGINT NOT NULL,
         worker TEXT NOT NULL,
         outcome TEXT NOT NULL,
         started_at_ms BIGINT NOT NULL,
         finished_at_ms BIGINT NOT NULL,
         exit_code INTEGER,
         error TEXT);
     CREATE INDEX attempts_by_job ON attempts (job, id);
     CREATE TABLE lease (
         id INTEGER PRIMARY KEY CHECK (id = 1),
         holder TEXT,
         address TEXT,
         http TEXT,
         epoch BIGINT NOT NULL,
         expires_at TIMESTAMPTZ NOT NULL);
     INSERT INTO lease (id, epoch, expires_at) VALUES (1, 0, '-infinity');
     CREATE TABLE coordinators (
         address TEXT PRIMARY KEY,
         http TEXT,
         role TEXT NOT NULL,
         last_seen TIMESTAMPTZ NOT NULL);
     CREATE TABLE commit_marks (epoch BIGINT PRIMARY KEY, seq BIGINT NOT NULL);",
    ),
    (
        2,
        // A finish now changes an indexed column (`cursor`), so it is no longer a HOT update;
        // the start, the frequent one, still is (it changes neither `cursor` nor `state`). The
        // indexes are partial: pending jobs have no cursor, and cost nothing in them.
        // `jobs_unnumbered` holds the finished jobs without a cursor, which only a coordinator
        // of version 1 still leading after the migration makes: empty but for a rolling
        // upgrade, it lets every term find them at once (see `replay.rs`).
        "ALTER TABLE jobs ADD COLUMN result BYTEA, ADD COLUMN cursor BIGINT;
         UPDATE jobs SET cursor = numbered.cursor
         FROM (SELECT id, row_number() OVER (ORDER BY finished_at_ms, id) AS cursor
               FROM jobs WHERE state <> 'pending') AS numbered
         WHERE jobs.id = numbered.id;
         CREATE UNIQUE INDEX jobs_by_cursor ON jobs (cursor) WHERE cursor IS NOT NULL;
         CREATE INDEX jobs_by_batch_cursor ON jobs (batch, cursor) WHERE cursor IS NOT NULL;
         CREATE INDEX jobs_unnumbered ON jobs (finished_at_ms, id)
             WHERE cursor IS NULL AND state <> 'pending';",
    ),
];

/// Creates or migrates the schema, and draws the ledger's id and lease key if it has none.
pub async fn prepare(client: &mut Client, target: &Target) -> Result<(), Failure> {
    let fail = |error: tokio_postgres::Error| match classify(&error, target) {
        Failure::Refused(reason) => Failure::Refused(format!("cannot set up its tables: {reason}")),
        unreachable => unreachable,
    };
    let tx = client.transaction().await.map_err(fail)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])
        .await
        .map_err(fail)?;
    let row = tx
        .query_one(
            "SELECT to_regclass('meta') IS NOT NULL, to_regclass('jobs') IS NOT NULL",
            &[],
        )
        .await
        .map_err(fail)?;
    let (has_meta, has_jobs): (bool, bool) = (row.get(0), row.get(1));
    let from = if has_meta {
        tx.query_opt("SELECT value FROM meta WHERE key = 'schema_version'", &[])
            .await
            .map_err(fail)?
            .and_then(|row| row.get::<_, Option<i64>>(0))
            .ok_or_else(|| {
                Failure::Refused(format!(
                    "database {:?} has a table \"meta\" without a drover schema version: it is \
                     not a drover ledger; give drover a database of its own",
                    target.database()
                ))
            })?
    } else if has_jobs {
        return Err(Failure::Refused(format!(
            "database {:?} has a table \"jobs\" but no drover \"meta\": it is another program's; \
             give drover a database of its own",
            target.database()
        )));
    } else {
        0
    };
    if from > SCHEMA_VERSION {
        return Err(Failure::Refused(format!(
            "database {:?} holds a ledger written by a newer drover (PostgreSQL ledger schema \
             version {from}); this drover reads versions up to {SCHEMA_VERSION}. Run the newer \
             drover, or upgrade this one",
            target.database()
        )));
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(version, _)| *version > from) {
        tx.batch_execute(sql)
            .await
            .map_err(|error| match fail(error) {
                Failure::Refused(reason) => Failure::Refused(format!(
                    "migration to schema version {version} failed, nothing was changed: {reason}"
                )),
                unreachable => unreachable,
            })?;
    }
    if from < SCHEMA_VERSION {
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ('schema_version', $1)
             ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            &[&SCHEMA_VERSION],
        )
        .await
        .map_err(fail)?;
    }
    // Drawn here, once: whoever commits first sets them, later draws are dropped.
    let mut key = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut key);
    let id = rand::thread_rng().next_u64() as i64;
    tx.execute(
        "INSERT INTO meta (key, value, bytes) VALUES ('ledger_id', $1, NULL), ('lease_key', NULL, $2)
         ON CONFLICT (key) DO NOTHING",
        &[&id, &&key[..]],
    )
    .await
    .map_err(fail)?;
    tx.commit().await.map_err(fail)?;
    if from == 0 {
        tracing::info!(ledger = %target.shown, "new ledger created in PostgreSQL");
    } else if from < SCHEMA_VERSION {
        tracing::info!(ledger = %target.shown, from, to = SCHEMA_VERSION, "ledger schema migrated");
    }
    Ok(())
}
