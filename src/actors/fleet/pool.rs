//! One pool's machines and counters, and its rules: what to launch, drain, retire and
//! terminate, given what the Scheduler last said and what the provider answered. No I/O, no
//! actors, no clock of its own (times are ms since the Unix epoch, given): the Fleet carries
//! out the [`Action`]s it returns and hands back their outcomes.
//!
//! A machine goes: launched (or found by the provider's list at start) → booting → registered
//! (its worker, by `member.machine`) → asked to drain when idle past the pool's idle timeout →
//! gone from the Scheduler → retired → terminated. A booting machine past the boot timeout is
//! retired and terminated too; one whose worker went away unasked is held for a boot timeout
//! first (its worker may connect again, its jobs still running), unless the provider says the
//! machine is gone. A machine is terminated
//! only once the Scheduler has answered its retirement: no worker of it is connected, and one
//! that registers later takes nothing.

use super::Pool;
use crate::actors::scheduler::PoolWorker;
use crate::fleet::{Machine, ProviderError};
use crate::job::WorkerId;
use crate::status::PoolInfo;
use std::collections::{BTreeMap, VecDeque};

/// The first wait after a failed launch; doubled with each failure in a row, up to
/// [`MAX_BACKOFF_MS`].
const FIRST_BACKOFF_MS: u64 = 1000;
const MAX_BACKOFF_MS: u64 = 60_000;
/// The window of `max_launches_per_minute`.
const MINUTE_MS: u64 = 60_000;
/// A launched machine whose worker goes away unasked within this long of registering, before
/// it was seen running a job, is a failed launch: a worker that dies on start is not launched
/// again and again at the cap, but after a backoff.
const EARLY_MS: u64 = 60_000;
/// How often the provider is asked for the pool's machines again. A launch whose answer was
/// lost (the call failed or timed out after the cloud had started machines) leaves machines
/// nobody knows of: they are found and adopted within this long, so none is left running
/// unwatched. A failed launch asks at once (after its backoff).
const RELIST_MS: u64 = 60_000;
/// How long a terminated machine is remembered: a list asked before its termination was
/// answered does not bring it back.
const TERMINATED_MEMORY_MS: u64 = 10 * 60_000;

/// What the Fleet is to do for a pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Action {
    /// Ask the provider for the pool's machines (at start: adopt them).
    List,
    /// Launch this many machines.
    Launch(u32),
    /// Ask the Scheduler to drain this idle worker of this machine.
    Drain { machine: String, worker: WorkerId },
    /// Ask the Scheduler to retire this machine (before it is terminated).
    Retire(String),
    /// Terminate this machine.
    Terminate(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    /// Launched or adopted, its worker not registered yet; a failed launch past `deadline_ms`.
    Booting { deadline_ms: u64 },
    /// Its worker is connected.
    Registered(PoolWorker),
    /// Its worker is connected and was asked to drain (the answer is awaited).
    DrainAsked(PoolWorker),
    /// Its worker went away unasked: held until `deadline_ms` for it to connect again (a
    /// network stall or a coordinator's restart leaves its jobs running, and it hands them back
    /// when it does), then retired. `early` if that is a failed launch ([`EARLY_MS`]).
    Lost { deadline_ms: u64, early: bool },
    /// Its retirement was asked of the Scheduler; `failed` says why it counts as a failed
    /// launch, if it does.
    Retiring { failed: Option<String> },
    /// Its termination was asked of the provider.
    Terminating,
    /// Its termination failed: retired and terminated again from `retry_ms`.
    TerminateFailed { retry_ms: u64 },
}

#[derive(Debug)]
struct MachineState {
    /// The provider launched it or listed it: only such machines are ever terminated (a
    /// worker started by hand with `--pool` counts in the pool, and is only drained).
    ours: bool,
    /// Found at start rather than launched by this coordinator.
    adopted: bool,
    /// When its worker first registered.
    registered_at_ms: Option<u64>,
    /// Its worker ran a job, or stayed [`EARLY_MS`]: the launch worked, and the failures in a
    /// row end.
    proven: bool,
    phase: Phase,
}

impl MachineState {
    fn new(ours: bool, adopted: bool, phase: Phase) -> Self {
        MachineState {
            ours,
            adopted,
            registered_at_ms: None,
            proven: false,
            phase,
        }
    }
}

/// A pool: its machines, counters, and the state of its launches.
pub(super) struct PoolState {
    pub(super) pool: Pool,
    machines: BTreeMap<String, MachineState>,
    /// Machines asked of the provider whose answer has not come.
    launching: u32,
    /// The provider's list was answered, since the start and since the last failed launch:
    /// until then nothing is launched (its machines may be up already).
    listed: bool,
    listing: bool,
    /// When the provider was last asked for the list.
    list_asked_ms: u64,
    /// The first list was answered.
    ever_listed: bool,
    /// Machines terminated lately, with when.
    terminated_lately: BTreeMap<String, u64>,
    /// No launch (or list) before this.
    not_before_ms: u64,
    /// Failures in a row, for the backoff.
    failures: u32,
    /// Launches of the last minute: when, and how many machines.
    recent: VecDeque<(u64, u32)>,
    desired: u32,
    launched: u64,
    failed_launches: u64,
    terminated: u64,
    last_error: Option<String>,
}

impl PoolState {
    pub(super) fn new(pool: Pool) -> Self {
        PoolState {
            pool,
            machines: BTreeMap::new(),
            launching: 0,
            listed: false,
            listing: false,
            list_asked_ms: 0,
            ever_listed: false,
            terminated_lately: BTreeMap::new(),
            not_before_ms: 0,
            failures: 0,
            recent: VecDeque::new(),
            desired: 0,
            launched: 0,
            failed_launches: 0,
            terminated: 0,
            last_error: None,
        }
    }

    fn name(&self) -> &str {
        &self.pool.config.name
    }

    /// Machines that exist or are on their way, draining ones too, and those being terminated
    /// (so a provider whose terminations keep failing is not given a new machine each time
    /// one is retired): what `max` caps.
    pub(super) fn present(&self) -> u32 {
        u32::try_from(self.machines.len()).unwrap_or(u32::MAX) + self.launching
    }

    /// Machines booting, launches not yet answered included: supply on its way. A machine
    /// whose worker is lost and may come back counts too.
    pub(super) fn booting(&self) -> u32 {
        let booting = self
            .machines
            .values()
            .filter(|machine| matches!(machine.phase, Phase::Booting { .. } | Phase::Lost { .. }))
            .count();
        u32::try_from(booting).unwrap_or(u32::MAX) + self.launching
    }

    /// Connected workers that take jobs (not draining).
    fn active(&self) -> u32 {
        let active = self
            .machines
            .values()
            .filter(
                |machine| matches!(&machine.phase, Phase::Registered(worker) if !worker.draining),
            )
            .count();
        u32::try_from(active).unwrap_or(u32::MAX)
    }

    /// How many machines may be launched now: none while the provider's list is awaited, a
    /// launch is unanswered, or after a failure's backoff; else what `max` and the launches of
    /// the last minute leave.
    pub(super) fn room(&mut self, now_ms: u64) -> u32 {
        if !self.listed || self.launching > 0 || now_ms < self.not_before_ms {
            return 0;
        }
        while self
            .recent
            .front()
            .is_some_and(|(at, _)| now_ms.saturating_sub(*at) >= MINUTE_MS)
        {
            self.recent.pop_front();
        }
        let this_minute: u32 = self.recent.iter().map(|(_, count)| count).sum();
        let config = &self.pool.config;
        config
            .max
            .saturating_sub(self.present())
            .min(config.max_launches_per_minute.saturating_sub(this_minute))
    }

    /// Takes in the pool's connected workers: machines whose worker registered, workers of
    /// machines this coordinator did not launch (they count in the pool all the same), and
    /// machines whose worker is gone or that never registered in time, which are retired.
    pub(super) fn observe(&mut self, workers: Vec<PoolWorker>, now_ms: u64) -> Vec<Action> {
        let mut seen = std::collections::HashSet::new();
        for worker in workers {
            let id = worker.member.machine.clone();
            seen.insert(id.clone());
            let machine = self.machines.entry(id.clone()).or_insert_with(|| {
                tracing::info!(pool = %worker.member.pool, machine = %id, "a worker of this pool registered from a machine this coordinator did not launch; it counts in the pool");
                MachineState::new(false, true, Phase::Booting { deadline_ms: 0 })
            });
            let registered_at = *machine.registered_at_ms.get_or_insert(now_ms);
            if !machine.adopted
                && !machine.proven
                && (worker.attempts > 0 || now_ms.saturating_sub(registered_at) >= EARLY_MS)
            {
                // A launch that worked.
                machine.proven = true;
                self.failures = 0;
                self.not_before_ms = 0;
            }
            match &machine.phase {
                Phase::Booting { .. } | Phase::Registered(_) => {
                    machine.phase = Phase::Registered(worker)
                }
                Phase::Lost { .. } => {
                    tracing::info!(pool = %self.pool.config.name, machine = %id, "the machine's worker is back");
                    machine.phase = Phase::Registered(worker);
                }
                Phase::DrainAsked(_) => machine.phase = Phase::DrainAsked(worker),
                // Being retired or terminated: it registered late, and the Scheduler keeps it
                // from taking anything.
                _ => {}
            }
        }
        let mut actions = Vec::new();
        let boot_timeout = self.pool.config.boot_timeout;
        let mut forgotten = Vec::new();
        let name = self.pool.config.name.clone();
        let provider = self.pool.provider.clone();
        for (id, machine) in self.machines.iter_mut() {
            if let Phase::Registered(worker) | Phase::DrainAsked(worker) = &machine.phase {
                if seen.contains(id) {
                    continue;
                }
                if !machine.ours {
                    // Not ours to terminate: forgotten once its worker is gone.
                    forgotten.push(id.clone());
                    continue;
                }
                let asked = worker.draining || matches!(machine.phase, Phase::DrainAsked(_));
                if asked {
                    machine.phase = Phase::Retiring { failed: None };
                    actions.push(Action::Retire(id.clone()));
                    continue;
                }
                tracing::warn!(pool = %name, machine = %id, grace = ?boot_timeout, "the machine's worker went away unasked; the machine is held for it to connect again");
                machine.phase = Phase::Lost {
                    deadline_ms: now_ms + boot_timeout.as_millis() as u64,
                    early: !machine.adopted && !machine.proven,
                };
            }
            match &machine.phase {
                Phase::Lost { deadline_ms, early } => {
                    let gone = provider.gone(id);
                    if !gone && now_ms < *deadline_ms {
                        continue;
                    }
                    if gone {
                        tracing::warn!(pool = %name, machine = %id, "the machine's worker went away unasked and the provider says the machine is gone; terminating it (another is launched if demand asks)");
                    } else {
                        tracing::warn!(pool = %name, machine = %id, grace = ?boot_timeout, "the machine's worker went away unasked and did not connect again; terminating the machine (another is launched if demand asks)");
                    }
                    machine.phase = Phase::Retiring {
                        failed: early.then(|| {
                            format!("the worker of machine {id} went away soon after registering; terminated")
                        }),
                    };
                    actions.push(Action::Retire(id.clone()));
                }
                Phase::Booting { deadline_ms } if now_ms >= *deadline_ms => {
                    tracing::warn!(pool = %name, machine = %id, boot_timeout = ?boot_timeout, "machine did not register within the boot timeout; terminating it");
                    machine.phase = Phase::Retiring {
                        failed: (!machine.adopted).then(|| {
                            format!("machine {id} did not register within the boot timeout ({boot_timeout:?}); terminated")
                        }),
                    };
                    actions.push(Action::Retire(id.clone()));
                }
                // Through the Scheduler again: a worker of it may have connected meanwhile, and
                // its retired mark is renewed.
                Phase::TerminateFailed { retry_ms } if now_ms >= *retry_ms => {
                    machine.phase = Phase::Retiring { failed: None };
                    actions.push(Action::Retire(id.clone()));
                }
                _ => {}
            }
        }
        for id in forgotten {
            self.machines.remove(&id);
        }
        actions
    }

    /// Decides, given `extra`: the machines more that demand asks of this pool, and whether
    /// any job in line is of a kind it serves (then none of its workers is drained).
    pub(super) fn decide(&mut self, extra: u32, wanted: bool, now_ms: u64) -> Vec<Action> {
        let mut actions = Vec::new();
        if !self.listed {
            if !self.listing && now_ms >= self.not_before_ms {
                self.listing = true;
                self.list_asked_ms = now_ms;
                actions.push(Action::List);
            }
            return actions;
        }
        if !self.listing
            && self.launching == 0
            && now_ms.saturating_sub(self.list_asked_ms) >= RELIST_MS
        {
            self.listing = true;
            self.list_asked_ms = now_ms;
            actions.push(Action::List);
        }
        let config = self.pool.config.clone();
        let (active, booting) = (self.active(), self.booting());
        // At least min, whatever the demand.
        let extra = extra.max(config.min.saturating_sub(active + booting));
        let mut drains = Vec::new();
        if !wanted && extra == 0 {
            let idle_ms = config.idle_timeout.as_millis() as u64;
            let mut idle: Vec<(u64, &String, WorkerId)> = self
                .machines
                .iter()
                .filter_map(|(id, machine)| match &machine.phase {
                    Phase::Registered(worker) if !worker.draining => {
                        let since = worker.idle_since_ms?;
                        (now_ms.saturating_sub(since) >= idle_ms).then_some((
                            since,
                            id,
                            worker.worker,
                        ))
                    }
                    _ => None,
                })
                .collect();
            idle.sort();
            let spare = (active + booting).saturating_sub(config.min) as usize;
            drains = idle
                .into_iter()
                .take(spare)
                .map(|(_, id, worker)| (id.clone(), worker))
                .collect();
        }
        let drained = u32::try_from(drains.len()).unwrap_or(u32::MAX);
        self.desired = (active + booting + extra)
            .saturating_sub(drained)
            .clamp(config.min, config.max);
        for (machine, worker) in drains {
            if let Some(state) = self.machines.get_mut(&machine) {
                if let Phase::Registered(known) = &state.phase {
                    state.phase = Phase::DrainAsked(known.clone());
                }
            }
            actions.push(Action::Drain { machine, worker });
        }
        let launch = extra.min(self.room(now_ms));
        if launch > 0 {
            self.launching += launch;
            self.recent.push_back((now_ms, launch));
            actions.push(Action::Launch(launch));
        }
        actions
    }

    /// The provider's list answered: machines it names that this pool does not know of are
    /// adopted as booting (their workers register, or they are terminated at the boot
    /// timeout). At start they are a predecessor's; later, a launch's whose answer was lost.
    pub(super) fn listed(&mut self, answer: Result<Vec<Machine>, ProviderError>, now_ms: u64) {
        self.listing = false;
        let machines = match answer {
            Ok(machines) => machines,
            Err(error) => {
                return self.failed(format!("cannot list the pool's machines: {error}"), now_ms)
            }
        };
        self.listed = true;
        self.terminated_lately
            .retain(|_, at| now_ms.saturating_sub(*at) < TERMINATED_MEMORY_MS);
        let deadline_ms = now_ms + self.pool.config.boot_timeout.as_millis() as u64;
        let mut found = Vec::new();
        for machine in machines {
            if self.terminated_lately.contains_key(&machine.id) {
                continue;
            }
            match self.machines.get_mut(&machine.id) {
                Some(known) => known.ours = true,
                None => {
                    found.push(machine.id.clone());
                    self.machines.insert(
                        machine.id,
                        MachineState::new(true, true, Phase::Booting { deadline_ms }),
                    );
                }
            }
        }
        let first = !std::mem::replace(&mut self.ever_listed, true);
        if found.is_empty() {
            return;
        }
        if first {
            tracing::info!(pool = %self.name(), machines = found.len(), "adopted the pool's machines left running");
        } else {
            tracing::warn!(pool = %self.name(), machines = ?found, "found machines of the pool this coordinator had no record of (a launch whose answer was lost); adopted them: their workers register, or they are terminated at the boot timeout");
        }
    }

    /// The provider answered a launch of `count`.
    pub(super) fn launched(
        &mut self,
        count: u32,
        answer: Result<Vec<Machine>, ProviderError>,
        now_ms: u64,
    ) {
        self.launching = self.launching.saturating_sub(count);
        let machines = match answer {
            Ok(machines) => machines,
            Err(error) => {
                self.failed_launches += u64::from(count);
                // The call may have started machines all the same: the next launch waits for
                // the list, which adopts them.
                self.listed = false;
                return self.failed(format!("launch failed: {error}"), now_ms);
            }
        };
        let started = u32::try_from(machines.len()).unwrap_or(u32::MAX);
        self.launched += u64::from(started);
        self.failed_launches += u64::from(count.saturating_sub(started));
        if started == 0 {
            return self.failed(
                format!("the provider started none of the {count} machines asked for"),
                now_ms,
            );
        }
        self.last_error = None;
        tracing::info!(pool = %self.name(), machines = ?machines.iter().map(|machine| machine.id.as_str()).collect::<Vec<_>>(), "launched");
        let deadline_ms = now_ms + self.pool.config.boot_timeout.as_millis() as u64;
        for machine in machines {
            // Its worker may have registered before the answer came: the machine is ours all
            // the same.
            self.machines
                .entry(machine.id)
                .and_modify(|known| {
                    known.ours = true;
                    known.adopted = false;
                })
                .or_insert(MachineState::new(
                    true,
                    false,
                    Phase::Booting { deadline_ms },
                ));
        }
    }

    /// The Scheduler answered a drain: `drained` false means the worker took a job first (or
    /// went), and it stays as it is.
    pub(super) fn drain_answered(&mut self, machine: &str, drained: bool) {
        let Some(state) = self.machines.get_mut(machine) else {
            return;
        };
        if let Phase::DrainAsked(worker) = &state.phase {
            let mut worker = worker.clone();
            worker.draining = drained;
            if drained {
                tracing::info!(pool = %self.pool.config.name, machine, "idle past the pool's idle timeout: its worker drains, then the machine is terminated");
            }
            state.phase = Phase::Registered(worker);
        }
    }

    /// The Scheduler answered a retirement: `registered` names a worker of the machine that is
    /// connected (it came back, and the machine stays); else the machine is terminated.
    pub(super) fn retire_answered(
        &mut self,
        machine: &str,
        registered: Option<WorkerId>,
        now_ms: u64,
    ) -> Option<Action> {
        let state = self.machines.get_mut(machine)?;
        let Phase::Retiring { failed } = &state.phase else {
            return None;
        };
        let failed = failed.clone();
        if registered.is_some() {
            // Its worker is back: the next view says how it does.
            state.phase = Phase::Booting {
                deadline_ms: now_ms + self.pool.config.boot_timeout.as_millis() as u64,
            };
            return None;
        }
        if let Some(message) = failed {
            self.failed_launches += 1;
            self.failed(message, now_ms);
        }
        let state = self.machines.get_mut(machine)?;
        state.phase = Phase::Terminating;
        Some(Action::Terminate(machine.to_string()))
    }

    /// The Fleet did not look at the pool for `paused_ms` (its coordinator stalled, or did not
    /// hold the lease): the deadlines of machines booting, lost or to be terminated again move
    /// on by as much, so none is judged on time in which nobody watched it.
    pub(super) fn resumed(&mut self, paused_ms: u64) {
        for machine in self.machines.values_mut() {
            match &mut machine.phase {
                Phase::Booting { deadline_ms }
                | Phase::Lost { deadline_ms, .. }
                | Phase::TerminateFailed {
                    retry_ms: deadline_ms,
                } => *deadline_ms = deadline_ms.saturating_add(paused_ms),
                _ => {}
            }
        }
    }

    /// A termination decided on was not asked of the provider (the coordinator lost its lease
    /// first): the machine is retired and terminated again at the next look, by this
    /// coordinator if it leads then. Not an error of the provider's.
    pub(super) fn retire_deferred(&mut self, machine: &str, now_ms: u64) {
        if let Some(state) = self.machines.get_mut(machine) {
            state.phase = Phase::TerminateFailed { retry_ms: now_ms };
        }
    }

    /// The provider answered a termination.
    pub(super) fn terminate_answered(
        &mut self,
        machine: &str,
        answer: Result<(), ProviderError>,
        now_ms: u64,
    ) {
        match answer {
            Ok(()) => {
                tracing::info!(pool = %self.name(), machine, "machine terminated");
                self.terminated += 1;
                self.machines.remove(machine);
                self.terminated_lately.insert(machine.to_string(), now_ms);
            }
            Err(error) => {
                let message = format!("cannot terminate machine {machine}: {error}");
                tracing::warn!(pool = %self.name(), %message, "terminating again in a while");
                self.last_error = Some(message);
                if let Some(state) = self.machines.get_mut(machine) {
                    state.phase = Phase::TerminateFailed {
                        retry_ms: now_ms + MAX_BACKOFF_MS / 4,
                    };
                }
            }
        }
    }

    /// A launch (or the list) failed: said, and no launch for a while, longer each time.
    fn failed(&mut self, message: String, now_ms: u64) {
        self.failures = self.failures.saturating_add(1);
        let backoff = FIRST_BACKOFF_MS
            .saturating_mul(1 << self.failures.saturating_sub(1).min(16))
            .min(MAX_BACKOFF_MS);
        self.not_before_ms = now_ms + backoff;
        tracing::warn!(pool = %self.name(), error = %message, backoff_ms = backoff, "no launch before the backoff has passed");
        self.last_error = Some(message);
    }

    /// The pool as the views show it.
    pub(super) fn info(&self) -> PoolInfo {
        let config = &self.pool.config;
        let workers = self
            .machines
            .values()
            .filter_map(|machine| match &machine.phase {
                Phase::Registered(worker) | Phase::DrainAsked(worker) => Some(worker),
                _ => None,
            });
        let (busy, idle) = workers.fold((0, 0), |(busy, idle), worker| {
            if worker.attempts > 0 {
                (busy + 1, idle)
            } else {
                (busy, idle + 1)
            }
        });
        PoolInfo {
            name: config.name.clone(),
            provider: config.provider.kind().to_string(),
            min: config.min,
            max: config.max,
            desired: self.desired,
            booting: self.booting(),
            idle,
            busy,
            launched: self.launched,
            failed_launches: self.failed_launches,
            terminated: self.terminated,
            last_error: self.last_error.clone(),
        }
    }
}

#[cfg(test)]
#[path = "pool_tests.rs"]
mod tests;
