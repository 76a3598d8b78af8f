//! Failures of real processes: a worker killed or frozen, the coordinator killed mid-batch.

mod common;

use common::*;
use drover::job::{AttemptResult, CarriedAttempt, JobSpec, JobState, LeaseKey, Outcome};
use drover::net::connect::{connect, next};
use drover::net::protocol::{FromCoordinator, Role, ToCoordinator};
use drover::status::JobInfo;
use futures::SinkExt;
use std::collections::HashSet;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_workers_jobs_move_at_once_not_after_the_timeout() {
    // A long heartbeat timeout: only the closed connection can explain a quick move.
    let mut cluster = Cluster::start(&["--heartbeat-timeout", "60s"]).await;
    cluster.start_worker("doomed", 1, &[]);
    cluster.wait_for_workers(1).await;
    let mut client = cluster.client().await;
    let file_job = drover::jobfile::parse_line(1, &recording_job(1.0)).unwrap();
    let submitted = client.submit("kill", vec![file_job]).await.unwrap();
    let running = wait_running(&mut client, submitted.first_job, Duration::from_secs(30)).await;
    assert_eq!(running.worker.as_deref(), Some("doomed"));

    cluster.start_worker("survivor", 1, &[]);
    cluster.wait_for_workers(2).await;
    let killed_at = Instant::now();
    cluster.signal_worker("doomed", libc::SIGKILL);
    let moved = loop {
        let job = client.job(submitted.first_job).await.unwrap();
        if job.worker.as_deref() == Some("survivor") {
            break job;
        }
        assert!(
            killed_at.elapsed() < Duration::from_secs(30),
            "job did not move: {job:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(
        killed_at.elapsed() < Duration::from_secs(30),
        "moved long before the 60s heartbeat timeout"
    );
    assert_eq!(moved.lost_attempts, 1);

    let info = wait_batch_done(&mut client, submitted.batch, Duration::from_secs(30)).await;
    assert_eq!(info.succeeded, 1);
    let job = client.job(submitted.first_job).await.unwrap();
    assert_eq!(job.worker.as_deref(), Some("survivor"));
    assert_eq!((job.attempts, job.lost_attempts), (2, 1));
    assert_eq!(job.history.len(), 1);
    assert_eq!(job.history[0].outcome, "lost");
    assert_eq!(job.history[0].worker, "doomed");

    // The status views show the dead worker as lost, with the attempt it took down.
    let workers = client.workers().await.unwrap();
    let doomed = workers
        .iter()
        .find(|worker| worker.name == "doomed")
        .expect("the lost worker is still listed");
    assert_eq!(doomed.state, "lost");
    assert_eq!(doomed.lost, 1);
    assert!(doomed.gone_at_ms.is_some());
    let status = client.status().await.unwrap();
    assert_eq!(status.workers.lost, 1);
    assert_eq!(status.workers.idle, 1, "the survivor is idle: {status:?}");
    let failure = &status.stats.recent_failures[0];
    assert_eq!(
        (
            failure.job,
            failure.worker.as_str(),
            failure.outcome.as_str()
        ),
        (submitted.first_job, "doomed", "lost")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_workers_jobs_move_after_the_timeout_and_its_late_result_is_not_recorded() {
    let mut cluster = Cluster::start(&["--heartbeat-timeout", "1s"]).await;
    cluster.start_worker("frozen", 1, &[]);
    cluster.wait_for_workers(1).await;
    let mut client = cluster.client().await;
    let job = drover::jobfile::parse_line(1, &recording_job(1.0)).unwrap();
    let submitted = client.submit("freeze", vec![job]).await.unwrap();
    wait_running(&mut client, submitted.first_job, Duration::from_secs(30)).await;
    cluster.start_worker("thawed", 1, &[]);
    cluster.wait_for_workers(2).await;

    cluster.signal_worker("frozen", libc::SIGSTOP);
    let frozen_at = Instant::now();
    // The job runs elsewhere once the frozen worker has been silent for the timeout.
    loop {
        let job = client.job(submitted.first_job).await.unwrap();
        if job.worker.as_deref() == Some("thawed") {
            break;
        }
        assert!(
            frozen_at.elapsed() < Duration::from_secs(30),
            "job never moved: {job:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // A figure for the notes, not an assertion: the bound is the timeout (1s) plus 100 ms.
    eprintln!(
        "frozen worker's job running elsewhere {} ms after SIGSTOP (heartbeat timeout 1000 ms)",
        frozen_at.elapsed().as_millis()
    );
    let info = wait_batch_done(&mut client, submitted.batch, Duration::from_secs(30)).await;
    assert_eq!(info.succeeded, 1);
    let recorded = client.job(submitted.first_job).await.unwrap();
    assert_eq!(recorded.worker.as_deref(), Some("thawed"));
    assert_eq!(recorded.lost_attempts, 1);
    assert!(
        recorded.history[0]
            .error
            .as_deref()
            .unwrap()
            .contains("heartbeat timeout"),
        "{recorded:?}"
    );

    // Thawed, the frozen worker finds its child finished, reconnects on its own and reports a
    // success that must be acknowledged as a duplicate, not recorded.
    cluster.signal_worker("frozen", libc::SIGCONT);
    let job_id = submitted.first_job;
    let after = cluster
        .wait_for_job(job_id, "the late result to be counted", |job| {
            job.duplicates > 0
        })
        .await;
    assert!(cluster
        .coordinator_log()
        .contains("late result for a finished job"));
    let workers = cluster.wait_for_workers(2).await;
    assert!(
        workers.iter().any(|worker| worker.name == "frozen"),
        "it registered again"
    );
    assert_eq!(
        after.duplicates, 1,
        "the late result is counted as a duplicate"
    );
    assert_eq!(
        JobInfo {
            duplicates: 0,
            ..after
        },
        recorded,
        "the record did not change"
    );
    assert_eq!(
        cluster.runs_of(submitted.first_job),
        2,
        "it ran twice, recorded once"
    );
    assert_eq!(
        client
            .jobs(Some(submitted.batch), None)
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_coordinator_loses_no_worker_and_runs_nothing_twice() {
    let mut cluster = Cluster::start(&["--heartbeat-timeout", "2s"]).await;
    for name in ["a", "b", "c", "d"] {
        cluster.start_worker(name, 2, &[]);
    }
    cluster.wait_for_workers(4).await;
    let mut client = cluster.client().await;
    // Long enough to be running still when the coordinator thaws.
    let lines: Vec<String> = (0..8).map(|_| recording_job(12.0)).collect();
    let submitted = client
        .submit("long", drover::jobfile::parse(&lines.join("\n")).unwrap())
        .await
        .unwrap();
    let ids: Vec<u64> = (submitted.first_job..submitted.first_job + 8).collect();
    for id in &ids {
        wait_running(&mut client, *id, Duration::from_secs(30)).await;
    }
    // Every slot busy, the coordinator frozen for three heartbeat timeouts: the workers'
    // heartbeats wait unread in its sockets meanwhile.
    cluster.signal_coordinator(libc::SIGSTOP);
    tokio::time::sleep(Duration::from_secs(6)).await;
    cluster.signal_coordinator(libc::SIGCONT);

    // Each running job is listed once, on the worker that runs it.
    let mut client = cluster.client().await;
    let workers = client.workers().await.unwrap();
    let mut listed: Vec<u64> = workers
        .iter()
        .flat_map(|worker| worker.current.iter().map(|current| current.job))
        .collect();
    listed.sort_unstable();
    assert_eq!(listed, ids, "{workers:?}");
    let info = wait_batch_done(&mut client, submitted.batch, Duration::from_secs(60)).await;
    assert_eq!(info.succeeded, 8, "{info:?}");
    for id in &ids {
        assert_eq!(
            cluster.runs_of(*id),
            1,
            "job {id} ran again after the freeze"
        );
        let job = client.job(*id).await.unwrap();
        assert_eq!(
            (job.attempts, job.lost_attempts),
            (1, 0),
            "job {id}: {job:?}"
        );
    }
    let workers = client.workers().await.unwrap();
    assert!(
        workers.iter().all(|worker| worker.gone_at_ms.is_none()),
        "no worker was lost: {workers:?}"
    );
    let log = cluster.coordinator_log();
    assert!(!log.contains("worker lost"), "{log}");
    assert!(log.contains("the coordinator stalled"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_coordinator_killed_mid_batch_loses_nothing_and_records_nothing_twice() {
    let mut cluster = Cluster::start(&[]).await;
    cluster.start_worker("a", 4, &[]);
    cluster.start_worker("b", 4, &[]);
    cluster.wait_for_workers(2).await;
    let total = 120;
    let lines: Vec<String> = (0..total).map(|_| recording_job(0.05)).collect();
    let jobs = drover::jobfile::parse(&lines.join("\n")).unwrap();
    let mut client = cluster.client().await;
    let submitted = client.submit("restart", jobs).await.unwrap();
    // Kill it with a good part of the batch done and the rest pending or running.
    wait_for(Duration::from_secs(60), "a third of the batch", || async {
        let info = cluster.client().await.batch(submitted.batch).await.ok()?;
        (info.succeeded >= total / 3).then_some(())
    })
    .await;
    cluster
        .restart_coordinator(Duration::from_millis(500))
        .await;

    // Workers come back by themselves; the batch finishes.
    cluster.wait_for_workers(2).await;
    let mut client = cluster.client().await;
    let info = wait_batch_done(&mut client, submitted.batch, Duration::from_secs(120)).await;
    assert_eq!(info.total, total);
    assert_eq!(info.succeeded, total, "{info:?}");
    let jobs = client.jobs(Some(submitted.batch), None).await.unwrap();
    let ids: HashSet<u64> = jobs.iter().map(|job| job.id).collect();
    assert_eq!(
        ids.len(),
        total as usize,
        "every acknowledged job is there once"
    );
    let mut reruns = 0;
    for job in &jobs {
        assert_eq!(job.state, JobState::Succeeded);
        let runs = cluster.runs_of(job.id);
        assert!(runs >= 1, "job {} never ran", job.id);
        reruns += runs - 1;
    }
    // What ran through the outage was reported or taken back when the workers reconnected.
    assert_eq!(reruns, 0, "jobs ran again because of the restart");
    // The log has every job once.
    let log = cluster.cli(&["log", "--batch", &submitted.batch.to_string()]);
    assert_eq!(stdout_of(&log).lines().count(), total as usize);

    // And the restarted coordinator keeps taking work.
    let next = client
        .submit("after-restart", vec![JobSpec::exec(["true"])])
        .await
        .unwrap();
    assert_eq!(
        wait_batch_done(&mut client, next.batch, Duration::from_secs(30))
            .await
            .succeeded,
        1
    );
}

/// The secret lease key kept in the ledger of a stopped coordinator.
fn lease_key_of(cluster: &Cluster) -> LeaseKey {
    let conn = rusqlite::Connection::open(cluster.data_dir().join("ledger.sqlite")).unwrap();
    let bytes: Vec<u8> = conn
        .query_row(
            "SELECT value FROM meta WHERE key = 'lease_key'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    LeaseKey::new(bytes.try_into().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_whose_start_never_reached_the_disk_takes_its_job_back_after_a_restart() {
    // The test's worker does not heartbeat: a long timeout keeps it.
    let mut cluster = Cluster::start(&["--heartbeat-timeout", "60s"]).await;
    let mut client = cluster.client().await;
    let submitted = client
        .submit("lost start", vec![JobSpec::exec(["true"])])
        .await
        .unwrap();
    let job = submitted.first_job;
    // As if the job had been handed to a worker just before a kill -9 that lost the write of its
    // start: the lease the first run (epoch 1) gave that attempt, which only the ledger's key
    // makes.
    cluster.kill_coordinator();
    let lease = lease_key_of(&cluster).lease(1, job, 1, "survivor");
    cluster.start_coordinator().await;

    // The worker comes back carrying it: the job is taken back by it, not run again.
    let mut worker = connect(&cluster.address, Role::Worker, None).await.unwrap();
    let carried = CarriedAttempt {
        lease,
        job,
        attempt: 1,
        slots: 1,
        epoch: 1,
    };
    worker
        .send(ToCoordinator::Register {
            name: "survivor".into(),
            instance: rand::random(),
            slots: 1,
            labels: Vec::new(),
            carried: vec![carried],
            results: Vec::new(),
            member: None,
        })
        .await
        .unwrap();
    let mut client = cluster.client().await;
    let running = wait_running(&mut client, job, Duration::from_secs(30)).await;
    assert_eq!(running.worker.as_deref(), Some("survivor"));
    worker
        .send(ToCoordinator::Results(vec![AttemptResult {
            lease,
            job,
            attempt: 1,
            outcome: Outcome::Succeeded,
            exit_code: Some(0),
            started_at_ms: drover::job::now_ms(),
            duration_ms: 1,
            output_tail: String::new(),
            result: Vec::new(),
            error: None,
            outputs: Vec::new(),
            permanent: false,
            epoch: 1,
        }]))
        .await
        .unwrap();
    let info = wait_batch_done(&mut client, submitted.batch, Duration::from_secs(30)).await;
    assert_eq!(info.succeeded, 1);
    let recorded = client.job(job).await.unwrap();
    assert_eq!(recorded.attempts, 1, "{recorded:?}");
    // The worker was neither told to stop the attempt nor given the job anew.
    while let Ok(Ok(message)) =
        tokio::time::timeout(Duration::from_millis(500), next(&mut worker)).await
    {
        assert!(
            !matches!(
                message,
                FromCoordinator::Assign(_) | FromCoordinator::Kill(_)
            ),
            "the job's attempt was stopped or the job given again: {message:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_finished_while_the_coordinator_was_down_are_reported_after_it_returns() {
    let mut cluster = Cluster::start(&[]).await;
    cluster.start_worker("patient", 1, &[]);
    cluster.wait_for_workers(1).await;
    let mut client = cluster.client().await;
    let job = drover::jobfile::parse_line(1, &recording_job(1.5)).unwrap();
    let submitted = client.submit("outage", vec![job]).await.unwrap();
    wait_running(&mut client, submitted.first_job, Duration::from_secs(30)).await;
    // The job finishes during the outage.
    cluster.restart_coordinator(Duration::from_secs(2)).await;
    let mut client = cluster.client().await;
    let info = wait_batch_done(&mut client, submitted.batch, Duration::from_secs(30)).await;
    assert_eq!(info.succeeded, 1);
    let job = client.job(submitted.first_job).await.unwrap();
    assert_eq!(job.worker.as_deref(), Some("patient"));
    assert_eq!(
        cluster.runs_of(submitted.first_job),
        1,
        "the result from before the restart was accepted, not run again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempts_running_through_a_coordinator_restart_are_taken_back_not_run_again() {
    let mut cluster = Cluster::start(&[]).await;
    cluster.start_worker("steady", 2, &[]);
    cluster.start_worker("calm", 2, &[]);
    cluster.wait_for_workers(2).await;
    let mut client = cluster.client().await;
    let lines: Vec<String> = (0..4).map(|_| recording_job(4.0)).collect();
    let submitted = client
        .submit("long", drover::jobfile::parse(&lines.join("\n")).unwrap())
        .await
        .unwrap();
    let ids: Vec<u64> = (submitted.first_job..submitted.first_job + 4).collect();
    let mut ran_on = Vec::new();
    for id in &ids {
        ran_on.push(
            wait_running(&mut client, *id, Duration::from_secs(30))
                .await
                .worker,
        );
    }
    cluster
        .restart_coordinator(Duration::from_millis(300))
        .await;

    // The workers reconnect within the grace and say what they still run: each job is taken
    // back by its attempt, shown running where it runs, and recorded when it finishes.
    let shown: HashSet<u64> = wait_for(
        Duration::from_secs(30),
        "the carried jobs listed on their workers",
        || async {
            let workers = cluster.try_client().await?.workers().await.ok()?;
            let shown: HashSet<u64> = workers
                .iter()
                .filter(|worker| worker.gone_at_ms.is_none())
                .flat_map(|worker| worker.jobs.iter().copied())
                .collect();
            (shown.len() == 4).then_some(shown)
        },
    )
    .await;
    assert_eq!(shown, ids.iter().copied().collect());
    let mut client = cluster.client().await;
    let info = wait_batch_done(&mut client, submitted.batch, Duration::from_secs(60)).await;
    assert_eq!(info.succeeded, 4, "{info:?}");
    for (id, worker) in ids.iter().zip(ran_on) {
        assert_eq!(
            cluster.output_lines(*id),
            vec!["1".to_string()],
            "job {id} ran again after the restart"
        );
        let job = client.job(*id).await.unwrap();
        assert_eq!(job.worker, worker, "job {id} recorded from another worker");
        assert_eq!(job.attempts, 1, "job {id}: {job:?}");
    }
    assert!(
        cluster
            .coordinator_log()
            .contains("jobs taken back by the attempts their worker kept running"),
        "{}",
        cluster.coordinator_log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_that_failed_while_the_coordinator_was_down_counts_and_keeps_its_number() {
    let mut cluster = Cluster::start(&["--retry-backoff", "100ms"]).await;
    cluster.start_worker("only", 1, &[]);
    cluster.wait_for_workers(1).await;
    let mut client = cluster.client().await;
    // The first attempt fails after a while; later ones succeed.
    let job = drover::jobfile::parse_line(
        1,
        r#"{"cmd": ["sh", "-c", "echo $DROVER_ATTEMPT >> \"$OUT/$DROVER_JOB_ID\"; sleep 1; [ $DROVER_ATTEMPT -gt 1 ]"]}"#,
    )
    .unwrap();
    let submitted = client.submit("fails-in-outage", vec![job]).await.unwrap();
    wait_running(&mut client, submitted.first_job, Duration::from_secs(30)).await;
    // The attempt fails during the outage; its worker reports it on reconnecting.
    cluster.restart_coordinator(Duration::from_secs(2)).await;

    let mut client = cluster.client().await;
    let info = wait_batch_done(&mut client, submitted.batch, Duration::from_secs(60)).await;
    assert_eq!(info.succeeded, 1, "{info:?}");
    assert_eq!(
        cluster.output_lines(submitted.first_job),
        vec!["1", "2"],
        "the retry after the outage reused the failed attempt's number"
    );
    let job = client.job(submitted.first_job).await.unwrap();
    assert_eq!(job.attempts, 2, "{job:?}");
    let failed: Vec<(u32, &str)> = job
        .history
        .iter()
        .map(|attempt| (attempt.attempt, attempt.outcome.as_str()))
        .collect();
    assert_eq!(failed, vec![(1, "failed")], "{job:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_last_write_recovers_to_the_last_commit() {
    let mut cluster = Cluster::start(&[]).await;
    let mut client = cluster.client().await;
    let kept = client
        .submit("kept", vec![JobSpec::call("noop", Vec::new()); 100])
        .await
        .unwrap();

    // A large submission, and the coordinator killed once its commit is writing the log.
    let wal = cluster
        .data_dir()
        .join(format!("{}-wal", drover::storage::sqlite::LEDGER_FILE));
    let wal_size = || std::fs::metadata(&wal).map_or(0, |meta| meta.len());
    let before = wal_size();
    let mut submitter = cluster.client().await;
    // Sent once: the point is what the kill leaves on disk, not the retry after it.
    submitter.retry_submissions_for(Duration::ZERO);
    let submitting = tokio::spawn(async move {
        submitter
            .submit("torn", vec![JobSpec::call("noop", vec![1; 16]); 150_000])
            .await
    });
    wait_for(
        Duration::from_secs(30),
        "the commit to reach the log",
        || async { (wal_size() > before + (1 << 20)).then_some(()) },
    )
    .await;
    cluster.kill_coordinator();
    let answered = submitting.await.unwrap();

    // And the write-ahead log ends in half a frame, as a write torn by power loss would leave it.
    {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new().append(true).open(&wal).unwrap();
        file.write_all(&[0xA5; 1500]).unwrap();
    }

    cluster.start_coordinator().await;
    let mut client = cluster.client().await;
    let batches = client.batches().await.unwrap();
    let first = &batches[0];
    assert_eq!(
        (first.id, first.total, first.pending),
        (kept.batch, 100, 100)
    );
    // The torn batch is all there or not at all; only an acknowledged one must be there.
    let ledger = rusqlite::Connection::open_with_flags(
        cluster
            .data_dir()
            .join(drover::storage::sqlite::LEDGER_FILE),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let rows: i64 = ledger
        .query_row(
            "SELECT COUNT(*) FROM jobs WHERE batch <> ?1",
            [kept.batch as i64],
            |row| row.get(0),
        )
        .unwrap();
    assert!(
        rows == 0 || rows == 150_000,
        "a batch was half written: {rows} rows"
    );
    match &answered {
        Ok(_) => assert_eq!(rows, 150_000, "an acknowledged batch is all there"),
        Err(error) => assert!(
            matches!(error, drover::client::ClientError::Connection(_)),
            "the submission was cut by the kill, not refused: {error}"
        ),
    }
    assert_eq!(batches.len(), 1 + usize::from(rows > 0), "{batches:?}");
    eprintln!(
        "torn write: the interrupted batch was {} after restart",
        if rows > 0 { "kept whole" } else { "absent" }
    );
    let log = cluster.coordinator_log();
    assert!(!log.contains("panicked"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_past_its_timeout_is_taken_back_from_a_worker_that_only_heartbeats() {
    use drover::net::connect::{connect, next};
    use drover::net::protocol::{FromCoordinator, Role, ToCoordinator};
    use futures::SinkExt;
    let mut cluster = Cluster::start(&["--heartbeat-timeout", "2s"]).await;
    // A worker that takes the job, says it started it, and from then on only heartbeats.
    let mut silent = connect(&cluster.address, Role::Worker, None).await.unwrap();
    silent
        .send(ToCoordinator::Register {
            name: "silent".into(),
            instance: rand::random(),
            slots: 1,
            labels: Vec::new(),
            carried: Vec::new(),
            results: Vec::new(),
            member: None,
        })
        .await
        .unwrap();
    let mut client = cluster.client().await;
    let job =
        drover::jobfile::parse_line(1, r#"{"cmd": ["true"], "timeout_s": 1, "max_attempts": 2}"#)
            .unwrap();
    let submitted = client.submit("held", vec![job]).await.unwrap();
    let began = Instant::now();
    let mut heartbeat = tokio::time::interval(Duration::from_millis(300));
    let mut held = None;
    let killed = loop {
        tokio::select! {
            _ = heartbeat.tick() => silent.send(ToCoordinator::Heartbeat).await.unwrap(),
            message = next(&mut silent) => match message.unwrap() {
                FromCoordinator::Assign(assignments) => {
                    let leases: Vec<u64> = assignments.iter().map(|a| a.lease).collect();
                    held = leases.first().copied();
                    silent.send(ToCoordinator::Started(leases)).await.unwrap();
                }
                FromCoordinator::Kill(leases) => break leases,
                _ => {}
            },
        }
        assert!(
            began.elapsed() < Duration::from_secs(60),
            "never taken back"
        );
    };
    assert_eq!(Some(killed[0]), held, "the held attempt is stopped");
    eprintln!(
        "attempt with a 1 s timeout taken back {} ms after submission",
        began.elapsed().as_millis()
    );
    // Its job runs again on an honest worker.
    cluster.start_worker("honest", 1, &[]);
    let info = wait_batch_done(&mut client, submitted.batch, Duration::from_secs(30)).await;
    assert_eq!(info.succeeded, 1, "{info:?}");
    let record = client.job(submitted.first_job).await.unwrap();
    assert_eq!(record.worker.as_deref(), Some("honest"));
    assert_eq!(record.history[0].outcome, "timed_out");
    let error = record.history[0].error.as_deref().unwrap_or_default();
    assert!(error.contains("taken back by the coordinator"), "{error}");
    drop(silent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_killed_worker_ran_dies_with_it_or_at_its_next_start() {
    use drover::worker::orphans::running;
    let mut cluster = Cluster::start(&[]).await;
    cluster.start_worker("doomed", 1, &[]);
    cluster.wait_for_workers(1).await;
    // The job's own process, and one it leaves in the background.
    let line = r#"{"cmd": ["sh", "-c", "sleep 600 & echo $$ $! > \"$OUT/pids\"; wait"]}"#;
    let mut client = cluster.client().await;
    let submitted = client
        .submit(
            "orphans",
            vec![drover::jobfile::parse_line(1, line).unwrap()],
        )
        .await
        .unwrap();
    let pids_file = cluster.out_dir().join("pids");
    let pids: Vec<u32> = wait_for(Duration::from_secs(30), "the job to start", || async {
        let text = std::fs::read_to_string(&pids_file).ok()?;
        let pids: Vec<u32> = text
            .split_whitespace()
            .filter_map(|pid| pid.parse().ok())
            .collect();
        (pids.len() == 2).then_some(pids)
    })
    .await;
    let (job_process, background) = (pids[0], pids[1]);
    assert!(running(job_process) && running(background));

    cluster.signal_worker("doomed", libc::SIGKILL);
    cluster
        .wait_worker_exit("doomed", Duration::from_secs(10))
        .await;
    wait_for(
        Duration::from_secs(10),
        "the job's process to die with its worker",
        || async { (!running(job_process)).then_some(()) },
    )
    .await;

    // The worker starts again on this machine: what its job left running goes.
    std::fs::remove_file(&pids_file).unwrap();
    cluster.start_worker("doomed", 1, &[]);
    wait_for(
        Duration::from_secs(30),
        "the background process to be swept",
        || async { (!running(background)).then_some(()) },
    )
    .await;
    // Said once the process is gone: the line may come a moment after.
    wait_for(
        Duration::from_secs(10),
        "the sweep in the worker's log",
        || async {
            cluster
                .worker_log("doomed")
                .contains("killed a process left running by a worker that died")
                .then_some(())
        },
    )
    .await;
    client
        .cancel(drover::job::CancelTarget::Batch(submitted.batch))
        .await
        .unwrap();
}
