//! The Registry actor: who is connected, whether they are alive, and how much each has done.
//!
//! It owns a worker's identity (its registration, name, address, labels), its liveness, and its
//! statistics; the Scheduler owns its slots, leases and draining, and the worker list joins
//! both ([`crate::actors::list_workers`]). It declares a worker lost when its session closes or
//! when it has been silent past the heartbeat timeout, and tells the Scheduler, which hands the
//! worker's attempts to the Ledger. It alone writes the [`WorkerDirectory`].

use crate::actors::scheduler::{Departure, Scheduler, WorkerGone, WorkerJoined};
use crate::actors::session::ToWorker;
use crate::job::{now_ms, AttemptResult, CarriedAttempt, Outcome, WorkerId};
use crate::net::protocol::PoolMember;
use crate::status::WorkerInfo;
use actix::prelude::*;
use dashmap::DashMap;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How often silence is checked: a frozen worker is declared lost at most this long after its
/// timeout passes.
const LIVENESS_SWEEP: Duration = Duration::from_millis(25);

/// A sweep this long after the previous one means the coordinator itself stalled (paused,
/// swapped out, starved of CPU).
const LATE_SWEEP: Duration = Duration::from_millis(250);

/// Workers that went away, kept for the status views (the newest this many, for this long).
const GONE_KEPT: usize = 100;
const GONE_FOR: Duration = Duration::from_secs(3600);

/// When a worker was last heard from (ms since the Unix epoch), written by its session on every
/// frame and read by the Registry's sweep: a shared clock, not shared state.
pub type LastSeen = Arc<AtomicU64>;

/// Where to reach each connected worker's session, by registration: read by any actor that
/// must tell a worker something, written only by the Registry (a worker is listed when it
/// registers and struck off when it is lost), so no actor keeps a session handle of its own.
#[derive(Clone, Default)]
pub struct WorkerDirectory(Arc<DashMap<WorkerId, Recipient<ToWorker>>>);

impl WorkerDirectory {
    /// Sends `message` to a worker's session; false if the worker is no longer connected.
    pub fn tell(&self, worker: WorkerId, message: ToWorker) -> bool {
        match self.0.get(&worker) {
            Some(session) => {
                session.do_send(message);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
impl WorkerDirectory {
    /// Lists a worker's session, as the Registry does when it registers (for tests of the
    /// actors that tell workers things).
    pub(crate) fn list(&self, worker: WorkerId, session: Recipient<ToWorker>) {
        self.0.insert(worker, session);
    }
}

struct WorkerEntry {
    name: Arc<str>,
    /// The worker process (see [`crate::net::protocol::ToCoordinator::Register`]).
    instance: u64,
    address: String,
    labels: Vec<String>,
    /// The pool and machine it was started for, if the fleet started it.
    member: Option<PoolMember>,
    last_seen: LastSeen,
    connected_at_ms: u64,
    done: u64,
    failed: u64,
    /// Attempts lost with earlier registrations of the same name (within `GONE_FOR`).
    lost: u64,
    busy_ms: u64,
}

impl WorkerEntry {
    /// What the Registry knows of it; the Scheduler's part (what it runs, whether it drains) is
    /// joined in by [`crate::actors::list_workers`].
    fn info(&self, id: WorkerId, now: u64) -> WorkerInfo {
        WorkerInfo {
            id,
            // Not `to_string`, which formats an `Arc<str>` through `Display`.
            name: String::from(&*self.name),
            address: self.address.clone(),
            slots: 0,
            labels: self.labels.clone(),
            running: 0,
            jobs: Vec::new(),
            done: self.done,
            failed: self.failed,
            busy_ms: self.busy_ms,
            last_seen_ms: now.saturating_sub(self.last_seen.load(Ordering::Relaxed)),
            connected_at_ms: self.connected_at_ms,
            state: "idle".to_string(),
            lost: self.lost,
            current: Vec::new(),
            gone_at_ms: None,
        }
    }
}

/// Knows every connected worker.
pub struct Registry {
    scheduler: Addr<Scheduler>,
    directory: WorkerDirectory,
    heartbeat_timeout: Duration,
    last_sweep_ms: u64,
    /// When the coordinator last came back from a stall of its own: silence is counted from
    /// here at the earliest, so a worker is judged only on what was read since.
    resumed_at_ms: u64,
    /// The earliest moment (ms since the Unix epoch) a connected worker can be silent past the
    /// timeout: sweeps before then look at no worker, so that thousands of workers are not all
    /// read forty times a second. A worker's last-seen time only grows, so a moment worked out
    /// from what was read can only come early, never late.
    next_silence_ms: u64,
    next_worker: WorkerId,
    workers: BTreeMap<WorkerId, WorkerEntry>,
    /// The registration holding each name: one live worker per name.
    by_name: HashMap<Arc<str>, WorkerId>,
    /// Names a live worker holds that another process asked for, since when: a holder heard
    /// from long after is known to be alive (see [`Registry::name_taken`]).
    contested: HashMap<Arc<str>, u64>,
    /// Recently gone workers as they were last seen, newest first.
    gone: VecDeque<WorkerInfo>,
}

impl Registry {
    /// A registry that declares workers lost after `heartbeat_timeout` of silence, and lists
    /// connected workers in `directory`.
    pub fn new(
        scheduler: Addr<Scheduler>,
        directory: WorkerDirectory,
        heartbeat_timeout: Duration,
    ) -> Self {
        Registry {
            scheduler,
            directory,
            heartbeat_timeout,
            last_sweep_ms: now_ms(),
            resumed_at_ms: 0,
            next_silence_ms: u64::MAX,
            next_worker: 1,
            workers: BTreeMap::new(),
            by_name: HashMap::new(),
            contested: HashMap::new(),
            gone: VecDeque::new(),
        }
    }

    /// Forgets a worker's registration for `reason` and has its attempts lost. One `superseded`
    /// by a new registration of the same process is not listed among the gone: it is back.
    fn lose(
        &mut self,
        ctx: &mut Context<Self>,
        worker: WorkerId,
        reason: String,
        superseded: bool,
    ) {
        let Some(entry) = self.workers.remove(&worker) else {
            return;
        };
        if self.by_name.get(&entry.name) == Some(&worker) {
            self.by_name.remove(&entry.name);
            self.contested.remove(&entry.name);
        }
        if let Some((_, session)) = self.directory.0.remove(&worker) {
            session.do_send(ToWorker::Close {
                reason: reason.clone(),
            });
        }
        let now = now_ms();
        if !superseded {
            // Listed among the gone at once, so a registration of the same name that comes
            // before the Scheduler's answer finds it (and what it lost).
            let mut last = entry.info(worker, now);
            last.gone_at_ms = Some(now);
            last.state = "lost".to_string();
            if self.gone.len() == GONE_KEPT {
                self.gone.pop_back();
            }
            self.gone.push_front(last);
        }
        let gone = self.scheduler.send(WorkerGone {
            worker,
            reason: reason.clone(),
        });
        // Whether it left or was lost, and what it lost, the Scheduler knows: it held the
        // attempts and knew the worker was draining.
        ctx.spawn(gone.into_actor(self).map(move |departure, registry, _ctx| {
            let departure = departure.ok().flatten().unwrap_or_default();
            let left = departure.draining && departure.attempts == 0;
            if superseded {
                tracing::info!(worker = %entry.name, address = %entry.address, lost = departure.attempts, "worker reconnected; its earlier connection is closed");
            } else if left {
                let pool = entry.member.as_ref().map(|member| member.pool.as_str());
                tracing::info!(worker = %entry.name, address = %entry.address, pool, "worker drained and left");
            } else {
                tracing::warn!(
                    worker = %entry.name,
                    address = %entry.address,
                    running = departure.attempts,
                    %reason,
                    "worker lost, its jobs go back to pending"
                );
            }
            registry.departed(worker, &entry.name, departure);
        }));
    }

    /// Completes the record of a gone worker with what the Scheduler says of it; if it
    /// registered again meanwhile, what it lost counts for the new registration.
    fn departed(&mut self, worker: WorkerId, name: &str, departure: Departure) {
        let left = departure.draining && departure.attempts == 0;
        let lost = departure.attempts as u64;
        if let Some(record) = self.gone.iter_mut().find(|gone| gone.id == worker) {
            record.state = if left { "left" } else { "lost" }.to_string();
            record.slots = departure.slots;
            record.lost += lost;
        } else if let Some(back) = self
            .by_name
            .get(name)
            .and_then(|id| self.workers.get_mut(id))
        {
            back.lost += lost;
        }
    }

    fn sweep(&mut self, ctx: &mut Context<Self>) {
        let now = now_ms();
        let since_last = now.saturating_sub(self.last_sweep_ms);
        self.last_sweep_ms = now;
        if since_last > LATE_SWEEP.as_millis() as u64 {
            // The coordinator stalled: heartbeats sent meanwhile wait unread in the sockets,
            // and the sweeps it missed now come back to back. Every worker gets a whole
            // heartbeat timeout from now to be heard, so the coordinator's own stall never
            // makes a worker lost.
            self.resumed_at_ms = now;
            let level_ms = self.heartbeat_timeout.as_millis() as u64 / 2;
            if since_last > level_ms {
                tracing::warn!(
                    stalled_ms = since_last,
                    "the coordinator stalled; workers are judged on what is heard from now on"
                );
            } else {
                tracing::debug!(stalled_ms = since_last, "liveness sweep ran late");
            }
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
        if now <= self.next_silence_ms {
            return;
        }
        let mut next_silence_ms = u64::MAX;
        let silent: Vec<(WorkerId, u64)> = self
            .workers
            .iter()
            .filter_map(|(id, entry)| {
                let heard_ms = entry
                    .last_seen
                    .load(Ordering::Relaxed)
                    .max(self.resumed_at_ms);
                let silent_ms = now.saturating_sub(heard_ms);
                if silent_ms > timeout_ms {
                    return Some((*id, silent_ms));
                }
                next_silence_ms = next_silence_ms.min(heard_ms.saturating_add(timeout_ms));
                None
            })
            .collect();
        self.next_silence_ms = next_silence_ms;
        for (worker, silent_ms) in silent {
            let reason = format!(
                "silent for {:.1}s, past the heartbeat timeout of {:.1}s",
                silent_ms as f64 / 1000.0,
                timeout_ms as f64 / 1000.0
            );
            self.lose(ctx, worker, reason, false);
        }
    }

    /// The refusal of a registration for a name that `holder`, a live worker of another
    /// process, holds. It is for now while the holder may be a dead worker not yet found silent
    /// (its machine rebooted, a worker restarted under the same name), and for good once the
    /// holder has been heard from long after the name was first asked for: then two live
    /// workers have the same name.
    fn name_taken(&mut self, holder: WorkerId, name: &Arc<str>) -> NameTaken {
        let now = now_ms();
        let timeout_ms = self.heartbeat_timeout.as_millis() as u64;
        let since = *self.contested.entry(name.clone()).or_insert(now);
        let (address, heard_ms) = self
            .workers
            .get(&holder)
            .map(|entry| {
                (
                    entry.address.as_str(),
                    entry.last_seen.load(Ordering::Relaxed),
                )
            })
            .unwrap_or(("an unknown address", now));
        let alive = now.saturating_sub(since) >= timeout_ms
            && heard_ms >= since.saturating_add(timeout_ms / 2);
        let reason = format!(
            "the name {name:?} is taken by a live worker (registration {holder}, at {address}, \
             heard from {:.1}s ago); give this worker another name with --name{}",
            now.saturating_sub(heard_ms) as f64 / 1000.0,
            if alive {
                ""
            } else {
                " (trying again in case that one is a dead worker not yet found silent)"
            }
        );
        NameTaken {
            reason,
            permanent: alive,
        }
    }
}

/// A registration refused because its name is taken.
#[derive(Debug)]
pub struct NameTaken {
    /// Why, in words for the worker's user.
    pub reason: String,
    /// True once the holder is known to be alive: the worker should give up.
    pub permanent: bool,
}

impl Actor for Registry {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(LIVENESS_SWEEP, |registry, ctx| registry.sweep(ctx));
    }
}

/// A worker finished its handshake and announces itself; answered with its registration id,
/// or a refusal when another live worker holds its name.
#[derive(Message)]
#[rtype(result = "Result<WorkerId, NameTaken>")]
pub struct RegisterWorker {
    /// Its name.
    pub name: String,
    /// Its process (see [`crate::net::protocol::ToCoordinator::Register`]).
    pub instance: u64,
    /// Its address.
    pub address: String,
    /// Its session.
    pub session: Recipient<ToWorker>,
    /// Slots it offers.
    pub slots: u32,
    /// Its labels.
    pub labels: Vec<String>,
    /// The pool and machine it was started for, if the fleet started it.
    pub member: Option<PoolMember>,
    /// Attempts it kept running from an earlier registration.
    pub carried: Vec<CarriedAttempt>,
    /// Results it had not had acknowledged, handled before it is given anything.
    pub results: Vec<AttemptResult>,
    /// Updated by the session on every frame.
    pub last_seen: LastSeen,
}

impl Handler<RegisterWorker> for Registry {
    type Result = Result<WorkerId, NameTaken>;

    fn handle(
        &mut self,
        register: RegisterWorker,
        ctx: &mut Context<Self>,
    ) -> Result<WorkerId, NameTaken> {
        let name: Arc<str> = Arc::from(register.name);
        // One live worker per name: the same process coming back replaces its old registration
        // (not yet found gone); another process is refused.
        let holder = self.by_name.get(&name).and_then(|id| {
            let entry = self.workers.get(id)?;
            Some((*id, entry.instance))
        });
        let superseded = match holder {
            Some((holder, instance)) if instance == register.instance => Some(holder),
            Some((holder, _)) => return Err(self.name_taken(holder, &name)),
            None => None,
        };
        self.contested.remove(&name);
        let worker = self.next_worker;
        self.next_worker += 1;
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
            pool = register.member.as_ref().map(|member| member.pool.as_str()),
            machine = register.member.as_ref().map(|member| member.machine.as_str()),
            carried = register.carried.len(),
            "worker registered"
        );
        self.directory.0.insert(worker, register.session);
        self.scheduler.do_send(WorkerJoined {
            worker,
            name: name.clone(),
            instance: register.instance,
            slots: register.slots,
            labels: register.labels.clone(),
            member: register.member.clone(),
            carried: register.carried,
            results: register.results,
        });
        self.by_name.insert(name.clone(), worker);
        let heard_ms = register
            .last_seen
            .load(Ordering::Relaxed)
            .max(self.resumed_at_ms);
        let timeout_ms = self.heartbeat_timeout.as_millis() as u64;
        self.next_silence_ms = self
            .next_silence_ms
            .min(heard_ms.saturating_add(timeout_ms));
        self.workers.insert(
            worker,
            WorkerEntry {
                name,
                instance: register.instance,
                address: register.address,
                labels: register.labels,
                member: register.member,
                last_seen: register.last_seen,
                connected_at_ms: now_ms(),
                done: 0,
                failed: 0,
                lost,
                busy_ms: 0,
            },
        );
        // After the Scheduler heard of the new registration, so that the attempts it carries
        // are not lost with the old one.
        if let Some(old) = superseded {
            let reason = "the worker reconnected; this connection is replaced".to_string();
            self.lose(ctx, old, reason, true);
        }
        Ok(worker)
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

    fn handle(&mut self, closed: SessionClosed, ctx: &mut Context<Self>) {
        self.lose(ctx, closed.worker, closed.reason, false);
    }
}

/// Attempts ended on a worker: (outcome, run time in ms), for its statistics.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AttemptsEnded {
    /// The worker.
    pub worker: WorkerId,
    /// The attempts.
    pub ended: Vec<(Outcome, u64)>,
}

impl Handler<AttemptsEnded> for Registry {
    type Result = ();

    fn handle(&mut self, ended: AttemptsEnded, _ctx: &mut Context<Self>) {
        let Some(entry) = self.workers.get_mut(&ended.worker) else {
            return;
        };
        for (outcome, duration_ms) in ended.ended {
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

/// Every connected worker by registration (identity, liveness, statistics), and the recently
/// gone ones.
#[derive(Message)]
#[rtype(result = "Registered")]
pub struct ListRegistered;

/// The Registry's part of the worker list.
pub struct Registered {
    /// Connected workers, in order of registration, with room for the gone ones to follow:
    /// the list of thousands of workers is made once, not moved again.
    pub connected: Vec<WorkerInfo>,
    /// Recently gone workers, newest first.
    pub gone: Vec<WorkerInfo>,
}

impl Handler<ListRegistered> for Registry {
    type Result = MessageResult<ListRegistered>;

    fn handle(&mut self, _: ListRegistered, _ctx: &mut Context<Self>) -> Self::Result {
        let now = now_ms();
        let mut connected = Vec::with_capacity(self.workers.len() + self.gone.len());
        connected.extend(self.workers.iter().map(|(id, entry)| entry.info(*id, now)));
        MessageResult(Registered {
            connected,
            gone: self.gone.iter().cloned().collect(),
        })
    }
}

/// The connected workers' registrations, in order, and how many recently gone workers were
/// lost: the Registry's part of the status's counts.
#[derive(Message)]
#[rtype(result = "RegisteredCount")]
pub struct CountRegistered;

/// The Registry's part of the status's counts.
pub struct RegisteredCount {
    /// Connected workers, in order.
    pub connected: Vec<WorkerId>,
    /// Recently gone workers that were lost (not drained and left).
    pub lost: u64,
}

impl Handler<CountRegistered> for Registry {
    type Result = MessageResult<CountRegistered>;

    fn handle(&mut self, _: CountRegistered, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(RegisteredCount {
            connected: self.workers.keys().copied().collect(),
            lost: self.gone.iter().filter(|gone| gone.state == "lost").count() as u64,
        })
    }
}
