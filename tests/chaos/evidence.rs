//! What the chaos suite checks at the end comes from: the completion log (`drover log`) and
//! the ledger itself, SQLite's file or PostgreSQL's tables.

use crate::common::{stderr_of, stdout_of};
use crate::ha_run::HaRun;
use crate::Chaos;
use drover::status::JobInfo;
use std::collections::HashMap;

/// The batch's story, as the completion log and the ledger tell it.
pub struct Evidence {
    /// The completion log's lines per job.
    pub logged: HashMap<u64, Vec<JobInfo>>,
    /// The batch's job ids, per the ledger: first and count.
    pub first_job: u64,
    pub total: u64,
    /// Duplicate results counted by the ledger.
    pub duplicates: u64,
    /// Attempts lost with their worker, per the ledger.
    pub lost_attempts: u64,
    /// The lease of the attempt each finished job was recorded from, per the ledger.
    pub recorded: HashMap<u64, u64>,
}

/// What the completion log and the ledger say of `batch`.
pub fn gather(chaos: &Chaos, batch: u64) -> Evidence {
    let output = chaos.cluster.cli(&["log", "--batch", &batch.to_string()]);
    assert!(
        output.status.success(),
        "drover log failed: {}",
        stderr_of(&output)
    );
    let mut logged: HashMap<u64, Vec<JobInfo>> = HashMap::new();
    for line in stdout_of(&output).lines() {
        let job: JobInfo = serde_json::from_str(line)
            .unwrap_or_else(|error| panic!("completion log line not a job ({error}): {line}"));
        logged.entry(job.id).or_default().push(job);
    }
    let facts = match &chaos.ha {
        Some(ha) => postgres_facts(ha, batch),
        None => sqlite_facts(chaos, batch),
    };
    Evidence { logged, ..facts }
}

/// The ledger's side of the evidence from the SQLite file (no completion log: `logged` empty).
fn sqlite_facts(chaos: &Chaos, batch: u64) -> Evidence {
    let ledger = rusqlite::Connection::open_with_flags(
        chaos
            .cluster
            .data_dir()
            .join(drover::storage::sqlite::LEDGER_FILE),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("the ledger opens");
    let (first_job, total): (i64, i64) = ledger
        .query_row(
            "SELECT COALESCE(MIN(id), 0), COUNT(*) FROM jobs WHERE batch = ?1",
            [batch as i64],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .unwrap();
    let (duplicates, lost_attempts): (i64, i64) = ledger
        .query_row(
            "SELECT COALESCE(SUM(duplicates), 0), COALESCE(SUM(lost_attempts), 0)
             FROM jobs WHERE batch = ?1",
            [batch as i64],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .unwrap();
    // Leases are stored as SQLite's signed integers, bit for bit.
    let recorded = ledger
        .prepare("SELECT id, lease FROM jobs WHERE batch = ?1 AND lease IS NOT NULL")
        .unwrap()
        .query_map([batch as i64], |row| {
            Ok((row.get::<_, i64>(0)? as u64, row.get::<_, i64>(1)? as u64))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    Evidence {
        logged: HashMap::new(),
        first_job: first_job as u64,
        total: total as u64,
        duplicates: duplicates as u64,
        lost_attempts: lost_attempts as u64,
        recorded,
    }
}

/// The ledger's side of the evidence from PostgreSQL, through psql (no completion log).
fn postgres_facts(ha: &HaRun, batch: u64) -> Evidence {
    let numbers = |sql: &str| -> Vec<i64> {
        ha.query(sql)
            .split('|')
            .map(|field| {
                field
                    .trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("not a number from {sql:?}: {field:?}"))
            })
            .collect()
    };
    let counts = numbers(&format!(
        "SELECT COALESCE(MIN(id), 0), COUNT(*), COALESCE(SUM(duplicates), 0), \
         COALESCE(SUM(lost_attempts), 0) FROM jobs WHERE batch = {batch}"
    ));
    // Leases are stored as signed 64-bit integers, bit for bit.
    let recorded = ha
        .query(&format!(
            "SELECT id, lease FROM jobs WHERE batch = {batch} AND lease IS NOT NULL"
        ))
        .lines()
        .map(|line| {
            let (id, lease) = line.split_once('|').expect("id|lease");
            (
                id.parse::<i64>().unwrap() as u64,
                lease.parse::<i64>().unwrap() as u64,
            )
        })
        .collect();
    Evidence {
        logged: HashMap::new(),
        first_job: counts[0] as u64,
        total: counts[1] as u64,
        duplicates: counts[2] as u64,
        lost_attempts: counts[3] as u64,
        recorded,
    }
}
