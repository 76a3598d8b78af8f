//! The ledger file across versions and mishaps: ledgers written by the release before versions
//! and by the last releases of schema versions 2, 3 and 4 open, migrate and go on; a newer, damaged or
//! foreign file is refused, named, and left as it was; a coordinator stopped with SIGTERM leaves
//! its ledger closed and tidy.

mod common;

use common::*;
use drover::job::{JobSpec, JobState};
use drover::storage::sqlite::schema::SCHEMA_VERSION;
use drover::storage::sqlite::LEDGER_FILE;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The release-before-versions ledger (see tests/fixtures/make-ledger-v0.sh).
fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ledger-v0.sqlite")
}

fn user_version(path: &Path) -> i64 {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.query_row("PRAGMA user_version", [], |row| row.get(0))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ledger_from_before_versions_opens_with_every_job_and_goes_on() {
    let mut cluster = Cluster::new(&[]);
    std::fs::create_dir_all(cluster.data_dir()).unwrap();
    let ledger = cluster.data_dir().join(LEDGER_FILE);
    std::fs::copy(fixture(), &ledger).unwrap();
    assert_eq!(user_version(&ledger), 0);
    cluster.start_coordinator().await;
    let mut client = cluster.client().await;

    // Every batch with its counts.
    let batches = client.batches().await.unwrap();
    let counts: Vec<_> = batches
        .iter()
        .map(|batch| {
            (
                batch.id,
                batch.name.as_str(),
                batch.total,
                batch.pending,
                batch.succeeded,
                batch.failed,
                batch.cancelled,
                batch.done,
            )
        })
        .collect();
    assert_eq!(
        counts,
        vec![
            (1, "finished", 8, 0, 5, 2, 1, true),
            (2, "waiting", 6, 5, 0, 0, 1, false),
        ]
    );

    // Every job with its state and record.
    let jobs = client.jobs(None, None).await.unwrap();
    let states: Vec<(u64, &str, JobState)> = jobs
        .iter()
        .map(|job| (job.id, job.name.as_deref().unwrap_or(""), job.state))
        .collect();
    use JobState::*;
    assert_eq!(
        states,
        vec![
            (1, "ok-1", Succeeded),
            (2, "ok-2", Succeeded),
            (3, "call-1", Succeeded),
            (4, "with-output", Succeeded),
            (5, "lost-once", Succeeded),
            (6, "fails-twice", Failed),
            (7, "fails-once", Failed),
            (8, "never-placed", Cancelled),
            (9, "waiting-1", Pending),
            (10, "waiting-2", Pending),
            (11, "waiting-3", Pending),
            (12, "waiting-4", Pending),
            (13, "waiting-5", Pending),
            (14, "cancelled-while-waiting", Cancelled),
        ]
    );
    let call = client.job(3).await.unwrap();
    assert_eq!(call.output_tail.as_deref(), Some("called"));
    let published = client.job(4).await.unwrap();
    assert_eq!(published.outputs.len(), 1, "{published:?}");
    assert!(published.outputs[0].url.ends_with("/part"));
    let lost = client.job(5).await.unwrap();
    assert_eq!((lost.attempts, lost.lost_attempts), (2, 1));
    assert_eq!(lost.history[0].outcome, "lost");
    let failed = client.job(6).await.unwrap();
    assert_eq!(failed.attempts, 2);
    assert_eq!(failed.exit_code, Some(3));
    let outcomes: Vec<_> = failed.history.iter().map(|a| a.attempt).collect();
    assert_eq!(outcomes, vec![1, 2]);
    // The completion log of the finished batch, a line per job.
    let log = cluster.cli(&["log", "--batch", "1"]);
    assert!(log.status.success(), "{}", stderr_of(&log));
    assert_eq!(stdout_of(&log).lines().count(), 8);

    // The pending jobs run, and ids go on from where they were.
    cluster.start_worker("upgraded", 2, &[]);
    let waiting = wait_batch_done(&mut client, 2, Duration::from_secs(60)).await;
    assert_eq!((waiting.succeeded, waiting.cancelled), (5, 1));
    assert_eq!(
        client.job(9).await.unwrap().output_tail.as_deref(),
        Some("w-1")
    );
    let next = client
        .submit("after", vec![JobSpec::call("noop", b"n".to_vec()); 2])
        .await
        .unwrap();
    assert_eq!((next.batch, next.first_job), (3, 15));
    wait_batch_done(&mut client, 3, Duration::from_secs(60)).await;

    // The file is at today's version, and opens again as it is.
    let status = cluster.terminate_coordinator();
    assert!(status.success(), "{status:?}");
    assert_eq!(user_version(&ledger), SCHEMA_VERSION);
    cluster.start_coordinator().await;
    let mut client = cluster.client().await;
    assert_eq!(client.batches().await.unwrap().len(), 3);
    assert_eq!(client.jobs(None, None).await.unwrap().len(), 16);
    assert!(cluster.coordinator_log().contains("ledger schema migrated"));
}

/// The ledger of the last release of schema version 2, from before ledgers had ids (see
/// tests/fixtures/make-ledger-v2.sh).
fn fixture_v2() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ledger-v2.sqlite")
}

/// Where the v2 fixture's jobs publish: a fixed path, as the fixture names it. Held locked (and
/// emptied) while a test uses it, so two runs of the suite on one machine take turns.
struct FixtureOutputs {
    _lock: std::fs::File,
}

const FIXTURE_V2_OUTPUTS: &str = "/tmp/drover-fixture-ledger-v2";

impl FixtureOutputs {
    fn take() -> FixtureOutputs {
        use std::os::fd::AsRawFd;
        let lock = std::fs::File::create(format!("{FIXTURE_V2_OUTPUTS}.lock")).unwrap();
        // SAFETY: flock(2) on a descriptor this function owns.
        assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
        let _ = std::fs::remove_dir_all(FIXTURE_V2_OUTPUTS);
        FixtureOutputs { _lock: lock }
    }

    fn published() -> PathBuf {
        Path::new(FIXTURE_V2_OUTPUTS).join("published")
    }
}

impl Drop for FixtureOutputs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(FIXTURE_V2_OUTPUTS);
    }
}

fn manifest(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ledger_of_schema_version_2_gets_an_id_and_its_outputs_go_where_they_should() {
    let _outputs = FixtureOutputs::take();
    let published = FixtureOutputs::published();
    let mut cluster = Cluster::new(&[]);
    std::fs::create_dir_all(cluster.data_dir()).unwrap();
    let ledger = cluster.data_dir().join(LEDGER_FILE);
    std::fs::copy(fixture_v2(), &ledger).unwrap();
    assert_eq!(user_version(&ledger), 2);
    cluster.start_coordinator().await;
    let mut client = cluster.client().await;

    // Every batch with its counts, every job with its state.
    let counts: Vec<_> = client
        .batches()
        .await
        .unwrap()
        .iter()
        .map(|batch| {
            (
                batch.id,
                batch.name.clone(),
                (batch.total, batch.pending, batch.succeeded),
                (batch.failed, batch.cancelled, batch.done),
            )
        })
        .collect();
    assert_eq!(
        counts,
        vec![
            (1, "finished".to_string(), (7, 0, 4), (2, 1, true)),
            (2, "waiting".to_string(), (5, 4, 0), (0, 1, false)),
        ]
    );
    use JobState::*;
    let states: Vec<(u64, JobState)> = client
        .jobs(None, None)
        .await
        .unwrap()
        .iter()
        .map(|job| (job.id, job.state))
        .collect();
    assert_eq!(
        states,
        vec![
            (1, Succeeded),
            (2, Succeeded),
            (3, Succeeded),
            (4, Succeeded),
            (5, Failed),
            (6, Failed),
            (7, Cancelled),
            (8, Pending),
            (9, Pending),
            (10, Pending),
            (11, Pending),
            (12, Cancelled),
        ]
    );
    // The completions stay as they were recorded: outputs in the layout of the time, failures
    // with their attempts (a command that could not start was tried twice then).
    let with_output = client.job(3).await.unwrap();
    let old_dir = format!("file://{}/3/attempt-", published.display());
    assert!(
        with_output.outputs[0].url.starts_with(&old_dir),
        "{with_output:?}"
    );
    let fails_twice = client.job(5).await.unwrap();
    assert_eq!((fails_twice.attempts, fails_twice.exit_code), (2, Some(3)));
    assert_eq!(fails_twice.history.len(), 2);
    let cannot_start = client.job(6).await.unwrap();
    assert_eq!(cannot_start.attempts, 2);
    assert!(cannot_start
        .error
        .as_deref()
        .unwrap()
        .starts_with("failed 2 of 2 attempts; last: cannot start \"no-such-command-xyz\""));
    let log = cluster.cli(&["log", "--batch", "1"]);
    assert!(log.status.success(), "{}", stderr_of(&log));
    assert_eq!(stdout_of(&log).lines().count(), 7);

    // The ledger has an id of its own now.
    let id = client.status().await.unwrap().stats.ledger;
    assert!(
        id.len() == 16 && id.chars().all(|c| c.is_ascii_hexdigit()),
        "{id}"
    );

    // The pending jobs run; the one with outputs publishes under the ledger's directory.
    cluster.start_worker("upgraded", 2, &[]);
    let waiting = wait_batch_done(&mut client, 2, Duration::from_secs(60)).await;
    assert_eq!((waiting.succeeded, waiting.cancelled), (4, 1));
    let job_dir = published.join(format!("ledger-{id}")).join("9");
    let later = client.job(9).await.unwrap();
    assert!(
        later.outputs[0]
            .url
            .starts_with(&format!("file://{}/attempt-", job_dir.display())),
        "{later:?}"
    );
    let written = wait_for(Duration::from_secs(30), "job 9's manifest", || async {
        std::fs::read(job_dir.join("_manifest.json")).ok()
    })
    .await;
    let written: serde_json::Value = serde_json::from_slice(&written).unwrap();
    assert_eq!(written["objects"][0]["url"], later.outputs[0].url);

    // Job 4's manifest, unconfirmed in the old ledger, is written where the old layout has it,
    // beside its objects; nothing of the old ledger's jobs lands in the new layout.
    let old_manifest = published.join("4").join("_manifest.json");
    wait_for(Duration::from_secs(30), "job 4's manifest", || async {
        old_manifest.exists().then_some(())
    })
    .await;
    let repaired = manifest(&old_manifest);
    let recorded = client.job(4).await.unwrap();
    assert_eq!(repaired["objects"][0]["url"], recorded.outputs[0].url);
    assert!(repaired["attempt_prefix"]
        .as_str()
        .unwrap()
        .starts_with(&format!("file://{}/4/attempt-", published.display())));
    let mut top: Vec<String> = std::fs::read_dir(&published)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    top.sort();
    assert_eq!(top, vec!["4".to_string(), format!("ledger-{id}")]);

    // At today's version, with the same id, after a restart.
    assert!(cluster.terminate_coordinator().success());
    assert_eq!(user_version(&ledger), SCHEMA_VERSION);
    cluster.start_coordinator().await;
    let mut client = cluster.client().await;
    assert_eq!(client.status().await.unwrap().stats.ledger, id);
    assert_eq!(client.jobs(None, None).await.unwrap().len(), 12);
}

/// Starts a coordinator on `data_dir` that must refuse to start; returns what it said.
fn refused_start(data_dir: &Path) -> String {
    let output = Command::new(COORDINATOR)
        .args(["--listen", "127.0.0.1:0", "--http", "off", "--data-dir"])
        .arg(data_dir)
        .env_remove("DROVER_TOKEN")
        .env_remove("DROVER_WORKER_TOKEN")
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let said = stderr_of(&output);
    assert!(!output.status.success(), "it started: {said}");
    assert!(!said.contains("panicked"), "{said}");
    said
}

/// Puts `bytes` where a ledger goes, for a refusal test.
fn ledger_of(bytes: &[u8]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join(LEDGER_FILE);
    std::fs::write(&ledger, bytes).unwrap();
    (dir, ledger)
}

#[test]
fn a_ledger_from_a_newer_drover_is_refused_naming_both_versions() {
    let mut newer = std::fs::read(fixture()).unwrap();
    // user_version lives in the database header, at byte 60.
    let newer_version = SCHEMA_VERSION as i32 + 3;
    newer[60..64].copy_from_slice(&newer_version.to_be_bytes());
    let (dir, ledger) = ledger_of(&newer);
    let said = refused_start(dir.path());
    assert!(said.contains(&ledger.display().to_string()), "{said}");
    assert!(
        said.contains(&format!("schema version {newer_version}")),
        "{said}"
    );
    assert!(said.contains(&format!("up to {SCHEMA_VERSION}")), "{said}");
    assert!(std::fs::read(&ledger).unwrap() == newer, "left as it was");
}

#[test]
fn damaged_and_foreign_ledgers_are_refused_and_left_as_they_were() {
    let whole = std::fs::read(fixture()).unwrap();
    let junk = b"these are not the bytes of a database; ".repeat(200);
    let foreign_bytes = {
        let path = tempfile::NamedTempFile::new().unwrap();
        let conn = rusqlite::Connection::open(path.path()).unwrap();
        conn.execute_batch("CREATE TABLE jobs (id INTEGER PRIMARY KEY, spec BLOB);")
            .unwrap();
        drop(conn);
        std::fs::read(path.path()).unwrap()
    };
    let without_attempts = {
        let path = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(path.path(), &whole).unwrap();
        let conn = rusqlite::Connection::open(path.path()).unwrap();
        conn.execute_batch("DROP TABLE attempts;").unwrap();
        drop(conn);
        std::fs::read(path.path()).unwrap()
    };
    for (what, bytes, expected) in [
        ("not a database", junk.clone(), "not an SQLite database"),
        ("truncated", whole[..whole.len() / 2].to_vec(), "damaged"),
        ("empty", Vec::new(), "empty (0 bytes)"),
        (
            "another program's database",
            foreign_bytes,
            "no table \"meta\"",
        ),
        ("missing a table", without_attempts, "no table \"attempts\""),
    ] {
        let (dir, ledger) = ledger_of(&bytes);
        let said = refused_start(dir.path());
        assert!(
            said.contains(&ledger.display().to_string()),
            "{what}: the message names the file: {said}"
        );
        assert!(said.contains(expected), "{what}: {said}");
        assert!(
            std::fs::read(&ledger).unwrap() == bytes,
            "{what}: the file is left as it was"
        );
    }
}

#[test]
fn a_data_directory_that_cannot_be_made_or_written_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"").unwrap();
    let below_a_file = file.join("data");
    let said = refused_start(&below_a_file);
    assert!(said.contains(&below_a_file.display().to_string()), "{said}");
    assert!(said.contains("cannot create its directory"), "{said}");

    // A read-only file system (root ignores permission bits, so a mount is the real test).
    let data = dir.path().join("read-only");
    let Some(_tmpfs) = mount_tmpfs(&data, "1m") else {
        return;
    };
    let remounted = Command::new("mount")
        .args(["-o", "remount,ro"])
        .arg(&data)
        .status()
        .unwrap();
    assert!(remounted.success());
    let said = refused_start(&data);
    assert!(said.contains(&data.display().to_string()), "{said}");
    assert!(said.contains("cannot"), "{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_the_ledger_after_its_last_commit_with_no_log_left() {
    let mut cluster = Cluster::start(&[]).await;
    cluster.start_worker("w", 4, &[]);
    let mut client = cluster.client().await;
    let done = client
        .submit("done", vec![JobSpec::call("noop", b"x".to_vec()); 50])
        .await
        .unwrap();
    wait_batch_done(&mut client, done.batch, Duration::from_secs(60)).await;
    // Jobs still running when it stops: their results may still be arriving.
    let running = client
        .submit("running", vec![JobSpec::call("sleep", b"300".to_vec()); 8])
        .await
        .unwrap();
    let ledger = cluster.data_dir().join(LEDGER_FILE);
    let wal = cluster.data_dir().join(format!("{LEDGER_FILE}-wal"));
    assert!(wal.exists(), "a running ledger writes ahead");
    let status = cluster.terminate_coordinator();
    assert!(
        status.success(),
        "{status:?}: {}",
        cluster.coordinator_log()
    );
    assert!(
        !wal.exists(),
        "the write-ahead log is folded in and removed"
    );
    assert!(cluster.coordinator_log().contains("ledger closed"));

    // Everything acknowledged is in the file itself.
    let conn = rusqlite::Connection::open(&ledger).unwrap();
    let (succeeded, pending): (i64, i64) = conn
        .query_row(
            "SELECT SUM(state = 'succeeded'), SUM(batch = ?1) FROM jobs",
            [running.batch as i64],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .unwrap();
    assert!(succeeded >= 50, "{succeeded}");
    assert_eq!(pending, 8);
    drop(conn);
    cluster.start_coordinator().await;
    let mut client = cluster.client().await;
    let info = client.batch(done.batch).await.unwrap();
    assert_eq!(info.succeeded, 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_coordinator_on_the_same_data_directory_is_refused() {
    let cluster = Cluster::start(&[]).await;
    let said = refused_start(&cluster.data_dir());
    assert!(
        said.contains("another coordinator is using this data directory"),
        "{said}"
    );
    // The first one serves on, its ledger untouched.
    let mut client = cluster.client().await;
    client
        .submit("still", vec![JobSpec::call("noop", Vec::new())])
        .await
        .unwrap();
}

/// The last release of ledger schema version 3, before batches had idempotency keys (see
/// tests/fixtures/make-ledger-v3.sh).
fn fixture_v3() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ledger-v3.sqlite")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ledger_of_schema_version_3_takes_idempotency_keys_and_goes_on() {
    let mut cluster = Cluster::new(&[]);
    std::fs::create_dir_all(cluster.data_dir()).unwrap();
    let ledger = cluster.data_dir().join(LEDGER_FILE);
    std::fs::copy(fixture_v3(), &ledger).unwrap();
    assert_eq!(user_version(&ledger), 3);
    cluster.start_coordinator().await;
    let mut client = cluster.client().await;

    // Every batch with its counts, every job with its state.
    let counts: Vec<_> = client
        .batches()
        .await
        .unwrap()
        .iter()
        .map(|batch| {
            (
                batch.id,
                batch.name.clone(),
                (batch.total, batch.pending, batch.succeeded),
                (batch.failed, batch.cancelled, batch.done),
            )
        })
        .collect();
    assert_eq!(
        counts,
        vec![
            (1, "finished".to_string(), (4, 0, 2), (1, 1, true)),
            (2, "waiting".to_string(), (3, 2, 0), (0, 1, false)),
        ]
    );
    use JobState::*;
    let states: Vec<(u64, JobState)> = client
        .jobs(None, None)
        .await
        .unwrap()
        .iter()
        .map(|job| (job.id, job.state))
        .collect();
    assert_eq!(
        states,
        vec![
            (1, Succeeded),
            (2, Succeeded),
            (3, Failed),
            (4, Cancelled),
            (5, Pending),
            (6, Pending),
            (7, Cancelled),
        ]
    );
    assert_eq!(client.job(3).await.unwrap().exit_code, Some(3));

    // The pending jobs run.
    cluster.start_worker("upgraded", 2, &[]);
    let waiting = wait_batch_done(&mut client, 2, Duration::from_secs(60)).await;
    assert_eq!((waiting.succeeded, waiting.cancelled), (2, 1));
    assert_eq!(
        client.job(5).await.unwrap().output_tail.as_deref(),
        Some("w-1")
    );

    // New submissions take keys; ids go on from where they were.
    let jobs = vec![JobSpec::call("noop", b"n".to_vec()); 2];
    let keyed = client
        .submit_with_key("keyed", jobs.clone(), "after-upgrade")
        .await
        .unwrap();
    assert_eq!(
        (keyed.batch, keyed.first_job, keyed.repeated),
        (3, 8, false)
    );
    let again = client
        .submit_with_key("keyed", jobs.clone(), "after-upgrade")
        .await
        .unwrap();
    assert_eq!((again.batch, again.first_job, again.repeated), (3, 8, true));
    wait_batch_done(&mut client, 3, Duration::from_secs(60)).await;

    // The old batches have no key; the new one has its own, and keeps it across a restart.
    let keys = || {
        let conn = rusqlite::Connection::open(&ledger).unwrap();
        let mut statement = conn
            .prepare("SELECT id, idempotency_key FROM batches ORDER BY id")
            .unwrap();
        statement
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .unwrap()
            .collect::<Result<Vec<(u64, Option<String>)>, _>>()
            .unwrap()
    };
    assert!(cluster.terminate_coordinator().success());
    assert_eq!(user_version(&ledger), SCHEMA_VERSION);
    assert_eq!(
        keys(),
        vec![(1, None), (2, None), (3, Some("after-upgrade".to_string()))]
    );
    cluster.start_coordinator().await;
    let mut client = cluster.client().await;
    let replayed = client
        .submit_with_key("keyed", jobs, "after-upgrade")
        .await
        .unwrap();
    assert_eq!(
        (
            replayed.batch,
            replayed.first_job,
            replayed.jobs,
            replayed.repeated
        ),
        (3, 8, 2, true)
    );
    assert_eq!(client.batches().await.unwrap().len(), 3);
    assert!(cluster.coordinator_log().contains("ledger schema migrated"));
}

/// The last release of ledger schema version 4, before finished jobs kept their result and had
/// a cursor (see tests/fixtures/make-ledger-v4.sh).
fn fixture_v4() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ledger-v4.sqlite")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ledger_of_schema_version_4_numbers_its_finished_jobs_and_serves_their_records() {
    let mut cluster = Cluster::new(&[]);
    std::fs::create_dir_all(cluster.data_dir()).unwrap();
    let ledger = cluster.data_dir().join(LEDGER_FILE);
    std::fs::copy(fixture_v4(), &ledger).unwrap();
    assert_eq!(user_version(&ledger), 4);
    cluster.start_coordinator().await;
    let mut client = cluster.client().await;
    use JobState::*;

    // Every finished job keeps its record, and has a cursor in the order the jobs finished
    // (job 3 was retried, and finished again after job 5); none has a result.
    let every = client.results(None, 0, 100, Duration::ZERO).await.unwrap();
    let records: Vec<(u64, u64, u64, JobState, Option<&str>)> = every
        .results
        .iter()
        .map(|record| {
            assert_eq!(record.result, None);
            let record = &record.record;
            (
                record.cursor,
                record.id,
                record.batch,
                record.state,
                record.name.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        records,
        vec![
            (1, 4, 1, Cancelled, Some("never-placed")),
            (2, 1, 1, Succeeded, Some("ok-1")),
            (3, 2, 1, Succeeded, Some("call-1")),
            (4, 5, 2, Succeeded, Some("keyed-1")),
            (5, 3, 1, Failed, Some("fails")),
            (6, 8, 3, Cancelled, Some("cancelled-while-waiting")),
        ]
    );
    assert_eq!((every.cursor, every.done), (6, false));
    let failed = &every.results[4].record;
    assert_eq!(failed.exit_code, Some(3));
    assert!(
        failed
            .error
            .as_deref()
            .unwrap()
            .contains("last: exited with code 3"),
        "{failed:?}"
    );
    let job = client.job_with_result(2).await.unwrap();
    assert_eq!(
        (job.record.output_tail.as_deref(), job.result),
        (Some("called"), None)
    );

    // One batch's pages, two at a time: the last says the batch is done.
    let first = client.results(Some(1), 0, 2, Duration::ZERO).await.unwrap();
    let second = client
        .results(Some(1), first.cursor, 2, Duration::ZERO)
        .await
        .unwrap();
    let ids = |page: &drover::status::ResultsPage| -> Vec<u64> {
        page.results.iter().map(|record| record.record.id).collect()
    };
    assert_eq!(
        (ids(&first), first.cursor, first.done),
        (vec![4, 1], 2, false)
    );
    assert_eq!(
        (ids(&second), second.cursor, second.done),
        (vec![2, 3], 5, true)
    );
    let error = client
        .results(Some(1), 7, 2, Duration::ZERO)
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("beyond the end"), "{error}");

    // The pending jobs run, recorded after the last cursor, with their results; the key made
    // before the upgrade still answers with its batch.
    cluster.start_worker("upgraded", 1, &[]);
    let waiting = wait_batch_done(&mut client, 3, Duration::from_secs(60)).await;
    assert_eq!((waiting.succeeded, waiting.cancelled), (2, 1));
    let after = client
        .results(Some(3), 0, 100, Duration::ZERO)
        .await
        .unwrap();
    let mut ran: Vec<(u64, Option<Vec<u8>>)> = after
        .results
        .iter()
        .filter(|record| record.record.cursor > 6)
        .map(|record| (record.record.id, record.result.clone()))
        .collect();
    ran.sort();
    assert_eq!(
        ran,
        vec![
            (6, Some(b"w-1".to_vec())),
            (7, Some(b"waiting-2\n".to_vec()))
        ]
    );
    assert_eq!(after.results.len(), 3);
    assert!(after.done);
    let keyed = client
        .submit_with_key(
            "keyed",
            vec![JobSpec::call("noop", b"k".to_vec())],
            "before-upgrade",
        )
        .await
        .unwrap();
    assert_eq!((keyed.batch, keyed.first_job, keyed.repeated), (2, 5, true));
    let called = client
        .call(JobSpec::call("noop", b"new".to_vec()))
        .await
        .unwrap();
    assert_eq!(
        (called.record.id, called.record.cursor, called.result),
        (9, 9, Some(b"new".to_vec()))
    );

    assert!(cluster.terminate_coordinator().success());
    assert_eq!(user_version(&ledger), SCHEMA_VERSION);
    assert!(cluster.coordinator_log().contains("ledger schema migrated"));
}
