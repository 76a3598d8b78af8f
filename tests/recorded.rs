//! Results as the ledger records them: kept byte for byte with the recorded attempt, in the
//! ledger file itself, read back with their job and in pages in recording order, across a
//! restart; and a retried job recorded again under a new cursor.

mod common;

use common::*;
use drover::job::{JobSpec, JobState};
use drover::status::Completion;
use drover::storage::sqlite::LEDGER_FILE;
use std::time::Duration;

/// (cursor, job, state, result) of each record.
fn summary(records: &[Completion]) -> Vec<(u64, u64, JobState, Option<Vec<u8>>)> {
    records
        .iter()
        .map(|record| {
            (
                record.record.cursor,
                record.record.id,
                record.record.state,
                record.result.clone(),
            )
        })
        .collect()
}

/// What the ledger file holds for finished jobs: (cursor, job, result), in cursor order.
fn on_disk(cluster: &Cluster) -> Vec<(u64, u64, Option<Vec<u8>>)> {
    let conn = rusqlite::Connection::open(cluster.data_dir().join(LEDGER_FILE)).unwrap();
    let mut statement = conn
        .prepare("SELECT cursor, id, result FROM jobs WHERE cursor IS NOT NULL ORDER BY cursor")
        .unwrap();
    statement
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_are_kept_byte_for_byte_and_read_back_by_job_and_by_page_after_a_restart() {
    let mut cluster = Cluster::start(&[]).await;
    cluster.start_worker("w1", 2, &[]);
    cluster.wait_for_workers(1).await;
    let mut client = cluster.client().await;

    // A call's result is what its handler returned, every byte of it (not UTF-8 either).
    let payload: Vec<u8> = (0..=255u8).rev().chain(*b"\r\n\0end").collect();
    let called = client
        .call(JobSpec::call("noop", payload.clone()))
        .await
        .unwrap();
    assert_eq!(called.record.state, JobState::Succeeded);
    assert_eq!(called.result.as_deref(), Some(&payload[..]));
    assert_eq!(called.record.name, None);

    // An exec job's is its standard output, as it wrote it; nothing written is no result.
    let jobs = vec![
        JobSpec::exec(["sh", "-c", r"printf '\000\377two\n'; echo noise >&2"]),
        JobSpec::exec(["true"]),
        JobSpec::call("noop", Vec::new()),
    ];
    let batch = client.submit("bytes", jobs).await.unwrap();
    wait_batch_done(&mut client, batch.batch, Duration::from_secs(60)).await;
    let two = b"\0\xfftwo\n".to_vec();
    let job = client.job_with_result(batch.first_job).await.unwrap();
    assert_eq!(job.result.as_deref(), Some(&two[..]));
    assert!(
        job.record
            .output_tail
            .as_deref()
            .is_some_and(|tail| tail.contains("noise")),
        "the tail is kept for display: {:?}",
        job.record.output_tail
    );
    assert_eq!(
        client
            .job_with_result(batch.first_job + 1)
            .await
            .unwrap()
            .result,
        None
    );

    // Pages: every batch's, in recording order; one batch's, done once it is.
    let every = client.results(None, 0, 100, Duration::ZERO).await.unwrap();
    assert_eq!(every.results.len(), 4);
    assert_eq!(
        (every.results[0].record.id, every.results[0].result.clone()),
        (called.record.id, Some(payload.clone()))
    );
    assert!(!every.done, "following every batch never ends");
    let page = client
        .results(Some(batch.batch), 0, 100, Duration::ZERO)
        .await
        .unwrap();
    let mut ids: Vec<u64> = page.results.iter().map(|record| record.record.id).collect();
    ids.sort_unstable();
    assert_eq!(
        ids,
        (batch.first_job..batch.first_job + 3).collect::<Vec<_>>()
    );
    assert!(page.done);
    assert_eq!(page.cursor, every.cursor);
    let before = summary(&page.results);

    // Two at a time: the first page is not the last, the second is.
    let first = client
        .results(Some(batch.batch), 0, 2, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!((first.results.len(), first.done), (2, false));
    let second = client
        .results(Some(batch.batch), first.cursor, 2, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!((second.results.len(), second.done), (1, true));

    // In the ledger file, byte for byte, and the same after a restart.
    assert!(cluster.terminate_coordinator().success());
    let stored = on_disk(&cluster);
    assert_eq!(stored.len(), 4);
    assert_eq!(
        stored[0],
        (called.record.cursor, called.record.id, Some(payload))
    );
    assert!(stored.contains(&(
        page.results[0].record.cursor,
        page.results[0].record.id,
        page.results[0].result.clone()
    )));
    assert!(stored
        .iter()
        .any(|(_, id, result)| *id == batch.first_job && result.as_deref() == Some(&two[..])));
    cluster.start_coordinator().await;
    let mut client = cluster.client().await;
    let again = client
        .results(Some(batch.batch), 0, 100, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(summary(&again.results), before);
    assert!(again.done);
    let job = client.job_with_result(batch.first_job).await.unwrap();
    assert_eq!(job.result.as_deref(), Some(&two[..]));

    // Past the last record: refused, saying so. The next record goes after it.
    let error = client
        .results(None, every.cursor + 1, 10, Duration::ZERO)
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("beyond the end"), "{error}");
    cluster.start_worker("w2", 1, &[]);
    let next = client
        .call(JobSpec::call("noop", b"after".to_vec()))
        .await
        .unwrap();
    assert_eq!(next.record.cursor, every.cursor + 1);
    assert_eq!(next.result.as_deref(), Some(&b"after"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_job_is_recorded_again_under_a_new_cursor_and_found_there_only() {
    let mut cluster = Cluster::start(&["--retry-backoff", "50ms"]).await;
    cluster.start_worker("w1", 1, &[]);
    cluster.wait_for_workers(1).await;
    let mut client = cluster.client().await;
    // It fails (printing `first`) until `$OUT/second` exists, then succeeds printing `second`.
    let mut flaky = JobSpec::exec([
        "sh",
        "-c",
        r#"if [ -f "$OUT/second" ]; then printf second; else printf first; exit 3; fi"#,
    ]);
    flaky.max_attempts = 1;
    let batch = client.submit("flaky", vec![flaky]).await.unwrap();
    let job = batch.first_job;
    wait_batch_done(&mut client, batch.batch, Duration::from_secs(60)).await;
    let failed = client
        .results(Some(batch.batch), 0, 10, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(
        summary(&failed.results),
        vec![(
            failed.cursor,
            job,
            JobState::Failed,
            Some(b"first".to_vec())
        )],
        "a failure keeps what it printed"
    );
    let other = client
        .call(JobSpec::call("noop", b"between".to_vec()))
        .await
        .unwrap();
    assert!(other.record.cursor > failed.cursor);

    std::fs::write(cluster.out_dir().join("second"), b"").unwrap();
    assert_eq!(client.retry_job(job).await.unwrap(), 1);
    let done = wait_batch_done(&mut client, batch.batch, Duration::from_secs(60)).await;
    assert_eq!(done.succeeded, 1);
    let page = client
        .results(Some(batch.batch), 0, 10, Duration::ZERO)
        .await
        .unwrap();
    let retried = summary(&page.results);
    assert_eq!(
        retried.len(),
        1,
        "found under its new cursor only: {retried:?}"
    );
    assert_eq!(
        (retried[0].1, retried[0].2, retried[0].3.clone()),
        (job, JobState::Succeeded, Some(b"second".to_vec()))
    );
    assert!(
        retried[0].0 > other.record.cursor,
        "recorded after what was recorded before it"
    );
    // A follower that had read past the first record finds the job again after it.
    let after_first = client
        .results(None, failed.cursor, 10, Duration::ZERO)
        .await
        .unwrap();
    let ids: Vec<u64> = after_first
        .results
        .iter()
        .map(|record| record.record.id)
        .collect();
    assert_eq!(ids, vec![other.record.id, job]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_repeated_under_its_key_gets_the_one_jobs_record_and_a_cancelled_one_its_own() {
    let mut cluster = Cluster::start(&[]).await;
    cluster.start_worker("w1", 1, &[]);
    cluster.wait_for_workers(1).await;
    let gated = JobSpec::exec([
        "sh",
        "-c",
        r#"while [ ! -f "$OUT/go" ]; do sleep 0.02; done; printf called"#,
    ]);
    let call = |spec: JobSpec, key: &'static str| {
        let address = cluster.address.clone();
        tokio::spawn(async move {
            let mut caller = drover::client::Client::connect(&address, None)
                .await
                .unwrap();
            caller.call_with_key(spec, key).await
        })
    };
    let calls_made = || async {
        let batches = cluster.client().await.batches().await.unwrap();
        batches.iter().filter(|batch| batch.name == "call").count()
    };

    // The first call queues the job; the same key again, while it runs, waits for that job.
    let first = call(gated.clone(), "the-key");
    wait_for(Duration::from_secs(30), "the call's job", || async {
        (calls_made().await == 1).then_some(())
    })
    .await;
    let second = call(JobSpec::call("noop", b"not queued".to_vec()), "the-key");
    std::fs::write(cluster.out_dir().join("go"), b"").unwrap();
    let first = first.await.unwrap().unwrap();
    let second = second.await.unwrap().unwrap();
    assert_eq!(first.result.as_deref(), Some(&b"called"[..]));
    assert_eq!(second, first);
    // Once it is finished, the same key is answered with its record, read back.
    let third = call(JobSpec::call("noop", Vec::new()), "the-key")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(third, first);
    assert_eq!(calls_made().await, 1, "one job for the key");

    // A called job cancelled while it waits answers its call with its cancelled record.
    let mut needs = JobSpec::call("noop", Vec::new());
    needs.requires = vec!["nobody-has-this".into()];
    let waiting = call(needs, "cancelled-key");
    let id = wait_for(Duration::from_secs(30), "the second call's job", || async {
        let mut client = cluster.client().await;
        let batches = client.batches().await.unwrap();
        let batch = batches.iter().filter(|batch| batch.name == "call").nth(1)?;
        // Listed once written: a call's job runs while it is (see `ledger::unwritten`).
        Some(client.jobs(Some(batch.id), None).await.unwrap().first()?.id)
    })
    .await;
    let mut client = cluster.client().await;
    client
        .cancel(drover::job::CancelTarget::Job(id))
        .await
        .unwrap();
    let cancelled = waiting.await.unwrap().unwrap();
    assert_eq!(
        (
            cancelled.record.id,
            cancelled.record.state,
            cancelled.record.error.as_deref(),
            cancelled.result
        ),
        (id, JobState::Cancelled, Some("cancelled by a user"), None)
    );
    assert!(cancelled.record.cursor > first.record.cursor);
}
