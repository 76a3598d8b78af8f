//! The ledger stores driven directly, as the job book drives them: the changes it asks for,
//! commits waited for, and a PostgreSQL term campaigned for.

use drover::ha::{Cluster, Leadership, MemberRole, Peer, Term};
use drover::job::{JobSpec, JobState, SpecBytes, Task};
use drover::metrics::Metrics;
use drover::storage::postgres::PgLeadership;
use drover::storage::store::{AttemptRow, Change, LedgerStore, StartRow, StoreError, WorkOrder};
use futures::executor::block_on;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The lease's time to live in the store tests.
pub const TTL: Duration = Duration::from_secs(1);

/// A coordinator's address, with an HTTP address made from it.
pub fn peer(address: &str) -> Peer {
    Peer {
        address: address.into(),
        http: Some(format!("{address}-http")),
    }
}

/// A job's spec that names `n`.
pub fn spec(n: u64) -> SpecBytes {
    SpecBytes::encode(&JobSpec {
        priority: 0,
        slots: 1,
        requires: vec![],
        max_attempts: 3,
        timeout_s: None,
        name: Some(format!("job {n}")),
        task: Task::Exec {
            cmd: vec!["true".into(), n.to_string()],
            env: vec![],
        },
        inputs: vec![],
        outputs: None,
    })
}

/// Batch `batch` of `count` jobs from `first_job` (the even ones named).
pub fn submit(batch: u64, first_job: u64, count: u64, key: Option<&str>) -> Change {
    Change::Submit {
        batch,
        name: format!("batch {batch}"),
        submitted_at_ms: 1_000 + batch,
        first_job,
        jobs: Arc::new(
            (first_job..first_job + count)
                .map(|job| ((job % 2 == 0).then(|| format!("n{job}")), spec(job)))
                .collect(),
        ),
        idempotency_key: key.map(Arc::from),
    }
}

/// `job` finished in `state` under `lease`, at cursor `job`, with the result "result JOB".
pub fn finish(job: u64, state: JobState, lease: u64) -> Change {
    let result = format!("result {job}");
    finished(job, state, lease, job, Some(result.as_bytes()))
}

/// `job` finished in `state` under `lease`, at `cursor`, with `result`.
pub fn finished(
    job: u64,
    state: JobState,
    lease: u64,
    cursor: u64,
    result: Option<&[u8]>,
) -> Change {
    Change::Finish(Box::new(WorkOrder {
        job,
        state,
        lease: Some(lease),
        outputs: (state == JobState::Succeeded).then(|| "[]".to_string()),
        worker: Some("w1".into()),
        attempts: 2,
        lost_attempts: 1,
        failures: u32::from(state == JobState::Failed),
        started_at_ms: Some(2_000 + job),
        finished_at_ms: 3_000 + job,
        duration_ms: Some(1_000),
        exit_code: Some(if state == JobState::Succeeded { 0 } else { 3 }),
        output_tail: Some(format!("tail {job}")),
        error: (state != JobState::Succeeded).then(|| format!("error {job}")),
        result: result.map(Arc::from),
        cursor,
    }))
}

/// An attempt of `job` that was not recorded.
pub fn attempt(job: u64, lease: u64, number: u32, outcome: &'static str) -> Change {
    Change::Attempt(Box::new(AttemptRow {
        job,
        lease,
        attempt: number,
        worker: format!("w{number}"),
        outcome,
        started_at_ms: 10 * job,
        finished_at_ms: 10 * job + 5,
        exit_code: (outcome == "failed").then_some(1),
        error: Some(format!("{outcome} {job}")),
    }))
}

/// Starts: (job, lease, attempt, worker).
pub fn started(rows: &[(u64, u64, u32, &str)]) -> Change {
    Change::Started(
        rows.iter()
            .map(|(job, lease, attempt, worker)| StartRow {
                job: *job,
                lease: *lease,
                attempt: *attempt,
                worker: Arc::from(*worker),
            })
            .collect(),
    )
}

/// Commits `changes` and waits for the outcome.
pub fn commit(store: &dyn LedgerStore, changes: Vec<Change>) -> Result<(), StoreError> {
    let (tx, rx) = mpsc::channel();
    store.commit(
        changes,
        Box::new(move |result| {
            let _ = tx.send(result);
        }),
    );
    rx.recv().unwrap()
}

/// Campaigns and waits for the term.
pub fn lead(url: &str, me: Peer) -> (Term, watch::Receiver<Cluster>) {
    let leadership = PgLeadership::new(url, TTL, Arc::new(Metrics::default())).unwrap();
    let (cluster, seen) = watch::channel(empty_cluster(&me));
    let term = block_on(leadership.campaign(me, cluster)).unwrap();
    (term, seen)
}

/// The cluster as a campaigner sees it before it knows anyone.
pub fn empty_cluster(me: &Peer) -> Cluster {
    Cluster {
        me: me.clone(),
        role: MemberRole::Standby,
        leader: None,
        members: vec![],
    }
}
