//! One pool's machines and counters, and its rules: what to launch, drain, retire and
//! terminate, given what the Scheduler last said and what the provider answered. No I/O, no
//! actors, no clock of its own (times are ms since the Unix epoch, given): the Fleet carries
//! out the [`Action`]s it returns and hands back their outcomes.
//!
//! A machine goes: launched (or found by the provider's list at start) → booting → registered
//! (its worker, by `member.machine`) → asked to drain when idle past the pool's idle timeout →
//! gone from the Scheduler → retired → terminated. A booting machine past the boot timeout, and
//! one whose worker went away unasked, are retired and terminated too. A machine is terminated
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
    /// Its retirement was asked of the Scheduler; `failed` if it never registered in time.
    Retiring { failed: bool },
    /// Its termination was asked of the provider.
    Terminating,
    /// Its termination failed: asked again from `retry_ms`.
    TerminateFailed { retry_ms: u64 },
}

#[derive(Debug)]
struct MachineState {
    /// The provider launched it or listed it: only such machines are ever terminated (a
    /// worker started by hand with `--pool` counts in the pool, and is only drained).
    ours: bool,
    /// Found at start rather than launched by this coordinator.
    adopted: bool,
    phase: Phase,
}

/// A pool: its machines, counters, and the state of its launches.
pub(super) struct PoolState {
    pub(super) pool: Pool,
    machines: BTreeMap<String, MachineState>,
    /// Machines asked of the provider whose answer has not come.
    launching: u32,
    /// The provider's list was answered: until then nothing is launched (its machines may be
    /// up already).
    listed: bool,
    listing: bool,
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

    /// Machines that exist or are on their way, draining ones too: what `max` caps.
    pub(super) fn present(&self) -> u32 {
        let alive = self
            .machines
            .values()
            .filter(|machine| {
                matches!(
                    machine.phase,
                    Phase::Booting { .. } | Phase::Registered(_) | Phase::DrainAsked(_)
                )
            })
            .count();
        u32::try_from(alive).unwrap_or(u32::MAX) + self.launching
    }

    /// Machines booting, launches not yet answered included: supply on its way.
    pub(super) fn booting(&self) -> u32 {
        let booting = self
            .machines
            .values()
            .filter(|machine| matches!(machine.phase, Phase::Booting { .. }))
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
                MachineState {
                    ours: false,
                    adopted: true,
                    phase: Phase::Booting { deadline_ms: 0 },
                }
            });
            match &machine.phase {
                Phase::Booting { .. } => {
                    if !machine.adopted {
                        // A launch that worked.
                        self.failures = 0;
                        self.not_before_ms = 0;
                        self.last_error = None;
                    }
                    machine.phase = Phase::Registered(worker);
                }
                Phase::Registered(_) => machine.phase = Phase::Registered(worker),
                Phase::DrainAsked(_) => machine.phase = Phase::DrainAsked(worker),
                // Being retired or terminated: it registered late, and the Scheduler keeps it
                // from taking anything.
                _ => {}
            }
        }
        let mut actions = Vec::new();
        let boot_timeout = self.pool.config.boot_timeout;
        let mut forgotten = Vec::new();
        for (id, machine) in self.machines.iter_mut() {
            match &machine.phase {
                Phase::Registered(worker) | Phase::DrainAsked(worker) if !seen.contains(id) => {
                    if !machine.ours {
                        // Not ours to terminate: forgotten once its worker is gone.
                        forgotten.push(id.clone());
                        continue;
                    }
                    if !worker.draining {
                        tracing::warn!(pool = %self.pool.config.name, machine = %id, "the machine's worker went away unasked; terminating the machine (another is launched if demand asks)");
                    }
                    machine.phase = Phase::Retiring { failed: false };
                    actions.push(Action::Retire(id.clone()));
                }
                Phase::Booting { deadline_ms } if now_ms >= *deadline_ms => {
                    tracing::warn!(pool = %self.pool.config.name, machine = %id, boot_timeout = ?boot_timeout, "machine did not register within the boot timeout; terminating it");
                    machine.phase = Phase::Retiring {
                        failed: !machine.adopted,
                    };
                    actions.push(Action::Retire(id.clone()));
                }
                Phase::TerminateFailed { retry_ms } if now_ms >= *retry_ms => {
                    machine.phase = Phase::Terminating;
                    actions.push(Action::Terminate(id.clone()));
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
                actions.push(Action::List);
            }
            return actions;
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

    /// The provider's list answered: its machines are adopted as booting (their workers
    /// register, or they are terminated at the boot timeout).
    pub(super) fn listed(&mut self, answer: Result<Vec<Machine>, ProviderError>, now_ms: u64) {
        self.listing = false;
        match answer {
            Ok(machines) => {
                self.listed = true;
                if !machines.is_empty() {
                    tracing::info!(pool = %self.name(), machines = machines.len(), "adopted the pool's machines left running");
                }
                let deadline_ms = now_ms + self.pool.config.boot_timeout.as_millis() as u64;
                for machine in machines {
                    self.machines
                        .entry(machine.id)
                        .and_modify(|known| known.ours = true)
                        .or_insert(MachineState {
                            ours: true,
                            adopted: true,
                            phase: Phase::Booting { deadline_ms },
                        });
                }
            }
            Err(error) => self.failed(format!("cannot list the pool's machines: {error}"), now_ms),
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
                .or_insert(MachineState {
                    ours: true,
                    adopted: false,
                    phase: Phase::Booting { deadline_ms },
                });
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
        let Phase::Retiring { failed } = state.phase else {
            return None;
        };
        if registered.is_some() {
            // Its worker is back: the next view says how it does.
            state.phase = Phase::Booting {
                deadline_ms: now_ms + self.pool.config.boot_timeout.as_millis() as u64,
            };
            return None;
        }
        if failed {
            self.failed_launches += 1;
            let boot_timeout = self.pool.config.boot_timeout;
            self.failed(
                format!("machine {machine} did not register within the boot timeout ({boot_timeout:?}); terminated"),
                now_ms,
            );
        }
        let state = self.machines.get_mut(machine)?;
        state.phase = Phase::Terminating;
        Some(Action::Terminate(machine.to_string()))
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
