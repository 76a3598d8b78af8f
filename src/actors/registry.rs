//! The Registry actor: every connected worker, its liveness and its statistics.
//!
//! It declares a worker lost when its session closes or when it has been silent past the
//! heartbeat timeout, and tells the Scheduler, which hands the worker's attempts to the Ledger.

use crate::actors::scheduler::{Scheduler, WorkerGone, WorkerJoined};
use crate::actors::session::{Close, Session};
use crate::job::{now_ms, AttemptResult, JobId, Lease, Outcome, WorkerId};
use crate::net::protocol::CarriedAttempt;
use crate::status::{CurrentJob, WorkerInfo};
use actix::prelude::*;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How often silence is checked: a frozen worker is declared lost at most this long after its
/// timeout passes.
const LIVENESS_SWEEP: Duration = Duration::from_millis(25);

/// A sweep this long after the previous one means the event loop was blocked.
const LATE_SWEEP: Duration = Duration::from_millis(250);

/// Workers that went away, kept for the status views (the newest this many, for this long).
const GONE_KEPT: usize = 100;
const GONE_FOR: Duration = Duration::from_secs(3600);

/// When a worker was last heard from (ms since the Unix epoch), written by its session on every
/// frame and read by the Registry's sweep: a shared clock, not shared state.
pub type LastSeen = Arc<AtomicU64>;

struct WorkerEntry {
    name: Arc<str>,
    address: String,
    session: Addr<Session>,
    slots: u32,
    labels: Vec<String>,
    last_seen: LastSeen,
    connected_at_ms: u64,
    draining: bool,
    /// Attempts it runs: lease → (job, when assigned).
    running: HashMap<Lease, (JobId, u64)>,
    done: u64,
    failed: u64,
    /// Attempts lost with earlier registrations of the same name (within `GONE_FOR`).
    lost: u64,
    busy_ms: u64,
}

impl WorkerEntry {
    fn info(&self, now: u64) -> WorkerInfo {
        let mut current: Vec<CurrentJob> = self
            .running
            .values()
            .map(|&(job, since_ms)| CurrentJob { job, since_ms })
            .collect();
        current.sort_unstable_by_key(|running| running.job);
        let state = if self.draining {
            "draining"
        } else if current.is_empty() {
            "idle"
        } else {
            "busy"
        };
        WorkerInfo {
            name: self.name.to_string(),
            address: self.address.clone(),
            slots: self.slots,
            labels: self.labels.clone(),
            running: current.len() as u32,
            jobs: current.iter().map(|running| running.job).collect(),
            done: self.done,
            failed: self.failed,
            busy_ms: self.busy_ms,
            last_seen_ms: now.saturating_sub(self.last_seen.load(Ordering::Relaxed)),
            connected_at_ms: self.connected_at_ms,
            state: state.to_string(),
            lost: self.lost,
            current,
            gone_at_ms: None,
        }
    }
}

/// Knows every connected worker.
pub struct Registry {
    scheduler: Addr<Scheduler>,
    heartbeat_timeout: Duration,
    last_sweep_ms: u64,
    next_worker: WorkerId,
    workers: BTreeMap<WorkerId, WorkerEntry>,
    /// Recently gone workers as they were last seen, newest first.
    gone: VecDeque<WorkerInfo>,
}

impl Registry {
    /// A registry that declares workers lost after `heartbeat_timeout` of silence.
    pub fn new(scheduler: Addr<Scheduler>, heartbeat_timeout: Duration) -> Self {
        Registry {
            scheduler,
            heartbeat_timeout,
            last_sweep_ms: now_ms(),
            next_worker: 1,
            workers: BTreeMap::new(),
            gone: VecDeque::new(),
        }
    }

    fn lose(&mut self, worker: WorkerId, reason: String) {
        let Some(entry) = self.workers.remove(&worker) else {
            return;
        };
        let now = now_ms();
        let mut last = entry.info(now);
        let left = entry.draining && entry.running.is_empty();
        last.state = if left { "left" } else { "lost" }.to_string();
        last.lost = entry.lost + entry.running.len() as u64;
        last.current.clear();
        last.jobs.clear();
        last.running = 0;
        last.gone_at_ms = Some(now);
        if self.gone.len() == GONE_KEPT {
            self.gone.pop_back();
        }
        self.gone.push_front(last);
        if left {
            tracing::info!(worker = %entry.name, address = %entry.address, "worker drained and left");
        } else {
            tracing::warn!(
                worker = %entry.name,
                address = %entry.address,
                running = entry.running.len(),
                %reason,
                "worker lost, its jobs go back to pending"
            );
        }
        entry.session.do_send(Close {
            reason: reason.clone(),
        });
        self.scheduler.do_send(WorkerGone { worker, reason });
    }

    fn sweep(&mut self) {
        let now = now_ms();
        let since_last = now.saturating_sub(self.last_sweep_ms);
        self.last_sweep_ms = now;
        if since_last > LATE_SWEEP.as_millis() as u64 {
            // The coordinator's thread was busy: heartbeats may be waiting unread in the
            // sockets. Let the sessions read them before anyone is judged silent.
            tracing::debug!(late_ms = since_last, "liveness sweep ran late, deferring");
            return;
        }
        let forget_before = now.saturating_sub(GONE_FOR.as_millis() as u64);
        while self
            .gone
            .back()
            .is_some_and(|gone| gone.gone_at_ms.unwrap_or(0) < forget_before)
        {
            self.gone.pop_back();
        }
        let timeout_ms = self.heartbeat_timeout.as_millis() as u64;
        let silent: Vec<(WorkerId, u64)> = self
            .workers
            .iter()
            .filter_map(|(id, entry)| {
                let silent_ms = now.saturating_sub(entry.last_seen.load(Ordering::Relaxed));
                (silent_ms > timeout_ms).then_some((*id, silent_ms))
            })
            .collect();
        for (worker, silent_ms) in silent {
            let reason = format!(
                "silent for {:.1}s, past the heartbeat timeout of {:.1}s",
                silent_ms as f64 / 1000.0,
                timeout_ms as f64 / 1000.0
            );
            self.lose(worker, reason);
        }
    }
}

impl Actor for Registry {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(LIVENESS_SWEEP, |registry, _ctx| registry.sweep());
    }
}

/// A worker finished its handshake and announces itself; answered with its registration id.
#[derive(Message)]
#[rtype(result = "WorkerId")]
pub struct RegisterWorker {
    /// Its name.
    pub name: String,
    /// Its address.
    pub address: String,
    /// Its session.
    pub session: Addr<Session>,
    /// Slots it offers.
    pub slots: u32,
    /// Its labels.
    pub labels: Vec<String>,
    /// Attempts it kept running from an earlier registration.
    pub carried: Vec<CarriedAttempt>,
    /// Results it had not had acknowledged.
    pub results: Vec<AttemptResult>,
    /// Updated by the session on every frame.
    pub last_seen: LastSeen,
}

impl Handler<RegisterWorker> for Registry {
    type Result = WorkerId;

    fn handle(&mut self, register: RegisterWorker, _ctx: &mut Context<Self>) -> WorkerId {
        let worker = self.next_worker;
        self.next_worker += 1;
        let name: Arc<str> = Arc::from(register.name);
        // Back again: no longer listed among the gone, but what it lost still counts.
        let mut lost = 0;
        self.gone.retain(|gone| {
            let same = gone.name == *name;
            if same {
                lost += gone.lost;
            }
            !same
        });
        tracing::info!(
            worker = %name,
            address = %register.address,
            slots = register.slots,
            labels = ?register.labels,
            carried = register.carried.len(),
            "worker registered"
        );
        // What it kept running is what it runs now, as far as anyone watching is concerned, and
        // no longer what an earlier registration of it (not yet found gone) runs.
        let now = now_ms();
        for other in self.workers.values_mut() {
            for carried in &register.carried {
                other.running.remove(&carried.lease);
            }
        }
        let running = register
            .carried
            .iter()
            .map(|carried| (carried.lease, (carried.job, now)))
            .collect();
        self.scheduler.do_send(WorkerJoined {
            worker,
            name: name.clone(),
            session: register.session.clone(),
            slots: register.slots,
            labels: register.labels.clone(),
            carried: register.carried,
            results: register.results,
        });
        self.workers.insert(
            worker,
            WorkerEntry {
                name,
                address: register.address,
                session: register.session,
                slots: register.slots,
                labels: register.labels,
                last_seen: register.last_seen,
                connected_at_ms: now,
                draining: false,
                running,
                done: 0,
                failed: 0,
                lost,
                busy_ms: 0,
            },
        );
        worker
    }
}

/// A worker's session ended.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SessionClosed {
    /// The worker.
    pub worker: WorkerId,
    /// Why.
    pub reason: String,
}

impl Handler<SessionClosed> for Registry {
    type Result = ();

    fn handle(&mut self, closed: SessionClosed, _ctx: &mut Context<Self>) {
        self.lose(closed.worker, closed.reason);
    }
}

/// A worker is draining.
#[derive(Message)]
#[rtype(result = "()")]
pub struct WorkerDraining(pub WorkerId);

impl Handler<WorkerDraining> for Registry {
    type Result = ();

    fn handle(&mut self, WorkerDraining(worker): WorkerDraining, _ctx: &mut Context<Self>) {
        if let Some(entry) = self.workers.get_mut(&worker) {
            tracing::info!(worker = %entry.name, "worker draining");
            entry.draining = true;
        }
    }
}

/// The Scheduler gave a worker attempts: (lease, job).
#[derive(Message)]
#[rtype(result = "()")]
pub struct JobsAssigned {
    /// The worker.
    pub worker: WorkerId,
    /// The attempts.
    pub jobs: Vec<(Lease, JobId)>,
}

impl Handler<JobsAssigned> for Registry {
    type Result = ();

    fn handle(&mut self, assigned: JobsAssigned, _ctx: &mut Context<Self>) {
        if let Some(entry) = self.workers.get_mut(&assigned.worker) {
            let now = now_ms();
            entry.running.extend(
                assigned
                    .jobs
                    .into_iter()
                    .map(|(lease, job)| (lease, (job, now))),
            );
        }
    }
}

/// Attempts ended on a worker: (lease, outcome, run time in ms).
#[derive(Message)]
#[rtype(result = "()")]
pub struct JobsEnded {
    /// The worker.
    pub worker: WorkerId,
    /// The attempts.
    pub ended: Vec<(Lease, Outcome, u64)>,
}

impl Handler<JobsEnded> for Registry {
    type Result = ();

    fn handle(&mut self, ended: JobsEnded, _ctx: &mut Context<Self>) {
        let Some(entry) = self.workers.get_mut(&ended.worker) else {
            return;
        };
        for (lease, outcome, duration_ms) in ended.ended {
            entry.running.remove(&lease);
            // Killed attempts (cancelled, or beaten by another) are left out of the time per
            // job, which is busy time over done and failed ones.
            match outcome {
                Outcome::Succeeded => entry.done += 1,
                Outcome::Failed | Outcome::TimedOut => entry.failed += 1,
                Outcome::Killed => continue,
            }
            entry.busy_ms = entry.busy_ms.saturating_add(duration_ms);
        }
    }
}

/// Every connected worker, then the recently gone ones, for `drover workers`.
#[derive(Message)]
#[rtype(result = "Vec<WorkerInfo>")]
pub struct ListWorkers;

impl Handler<ListWorkers> for Registry {
    type Result = MessageResult<ListWorkers>;

    fn handle(&mut self, _: ListWorkers, _ctx: &mut Context<Self>) -> Self::Result {
        let now = now_ms();
        let mut workers: Vec<WorkerInfo> =
            self.workers.values().map(|entry| entry.info(now)).collect();
        workers.extend(self.gone.iter().cloned());
        MessageResult(workers)
    }
}
