use super::*;
use crate::fleet::{
    LaunchRequest, PoolConfig, ProcessConfig, Provider, ProviderConfig, ProviderFuture,
};
use crate::net::protocol::PoolMember;
use std::sync::Arc;
use std::time::Duration;

/// The rules never call the provider (the Fleet does); they only ask which machines it knows
/// are gone.
struct NeverCalled {
    gone: Vec<&'static str>,
}

impl Provider for NeverCalled {
    fn launch(&self, _: LaunchRequest) -> ProviderFuture<Vec<Machine>> {
        unreachable!()
    }
    fn terminate(&self, _: &str, _: Vec<String>) -> ProviderFuture<()> {
        unreachable!()
    }
    fn list(&self, _: &str, _: &str) -> ProviderFuture<Vec<Machine>> {
        unreachable!()
    }
    fn gone(&self, machine: &str) -> bool {
        self.gone.contains(&machine)
    }
}

const IDLE_MS: u64 = 10_000;
const BOOT_MS: u64 = 30_000;

fn pool(min: u32, max: u32, per_minute: u32) -> PoolState {
    pool_gone(min, max, per_minute, Vec::new())
}

/// A pool whose provider says these machines are gone.
fn pool_gone(min: u32, max: u32, per_minute: u32, gone: Vec<&'static str>) -> PoolState {
    let config = PoolConfig {
        name: "cpu".into(),
        min,
        max,
        slots: 1,
        labels: Vec::new(),
        idle_timeout: Duration::from_millis(IDLE_MS),
        boot_timeout: Duration::from_millis(BOOT_MS),
        max_launches_per_minute: per_minute,
        provider: ProviderConfig::Process(ProcessConfig {
            command: vec!["w".into()],
        }),
    };
    PoolState::new(Pool {
        config: Arc::new(config),
        provider: Arc::new(NeverCalled { gone }),
    })
}

/// A pool whose provider listed no machines.
fn listed(min: u32, max: u32, per_minute: u32) -> PoolState {
    listed_gone(min, max, per_minute, Vec::new())
}

fn listed_gone(min: u32, max: u32, per_minute: u32, gone: Vec<&'static str>) -> PoolState {
    let mut state = pool_gone(min, max, per_minute, gone);
    assert_eq!(state.decide(0, false, 0), vec![Action::List]);
    assert!(
        state.decide(5, true, 1).is_empty(),
        "nothing before the list"
    );
    state.listed(Ok(Vec::new()), 1);
    state
}

fn machines(ids: &[&str], at: u64) -> Vec<Machine> {
    ids.iter()
        .map(|id| Machine {
            id: id.to_string(),
            launched_at_ms: at,
        })
        .collect()
}

fn worker(id: WorkerId, machine: &str, attempts: usize, idle_since_ms: Option<u64>) -> PoolWorker {
    PoolWorker {
        worker: id,
        member: PoolMember {
            pool: "cpu".into(),
            machine: machine.into(),
        },
        attempts,
        idle_since_ms,
        draining: false,
    }
}

fn counts(state: &PoolState) -> (u32, u32, u32, u32) {
    let info = state.info();
    (info.desired, info.booting, info.idle, info.busy)
}

#[test]
fn demand_launches_at_once_within_max_and_booting_machines_count() {
    let mut state = listed(0, 3, 10);
    assert_eq!(state.decide(5, true, 100), vec![Action::Launch(3)], "max");
    assert_eq!(counts(&state), (3, 3, 0, 0));
    assert!(
        state.decide(5, true, 200).is_empty(),
        "one launch at a time"
    );
    state.launched(3, Ok(machines(&["a", "b", "c"], 300)), 300);
    assert_eq!(state.room(400), 0, "booting ones count against max");
    assert_eq!(state.info().launched, 3);
    // Registered and busy: the pool is at max.
    let workers = vec![
        worker(1, "a", 1, None),
        worker(2, "b", 1, None),
        worker(3, "c", 1, None),
    ];
    assert!(state.observe(workers, 500).is_empty());
    assert!(state.decide(5, true, 500).is_empty());
    assert_eq!(counts(&state), (3, 0, 0, 3));
}

#[test]
fn launches_stay_within_the_cap_per_minute() {
    let mut state = listed(0, 100, 4);
    assert_eq!(state.decide(50, true, 0), vec![Action::Launch(4)]);
    state.launched(4, Ok(machines(&["a", "b", "c", "d"], 0)), 0);
    // They never register: failed launches at the boot timeout, and no launch loop.
    let actions = state.observe(Vec::new(), BOOT_MS);
    assert_eq!(actions.len(), 4);
    for id in ["a", "b", "c", "d"] {
        assert_eq!(
            state.retire_answered(id, None, BOOT_MS),
            Some(Action::Terminate(id.into()))
        );
        state.terminate_answered(id, Ok(()), BOOT_MS);
    }
    let info = state.info();
    assert_eq!((info.failed_launches, info.terminated), (4, 4));
    assert!(info
        .last_error
        .as_deref()
        .is_some_and(|error| error.contains("did not register within the boot timeout")));
    // A minute after the first launches, past the backoff: four more, no more.
    assert!(state.decide(50, true, MINUTE_MS - 1).is_empty(), "the cap");
    // The minute is also when the list is asked again.
    assert_eq!(
        state.decide(50, true, MINUTE_MS),
        vec![Action::List, Action::Launch(4)]
    );
}

#[test]
fn failures_back_off_longer_each_time_and_a_worker_that_runs_a_job_ends_it() {
    let mut state = listed(0, 10, 100);
    assert_eq!(state.decide(1, true, 0), vec![Action::Launch(1)]);
    state.launched(
        1,
        Err(ProviderError::new("InsufficientInstanceCapacity: none")),
        0,
    );
    let info = state.info();
    assert_eq!(info.failed_launches, 1);
    assert_eq!(
        info.last_error.as_deref(),
        Some("launch failed: InsufficientInstanceCapacity: none")
    );
    assert!(state.decide(1, true, 999).is_empty(), "one second");
    // The failed call may have started machines: the list comes first.
    assert_eq!(state.decide(1, true, 1000), vec![Action::List]);
    state.listed(Ok(Vec::new()), 1000);
    assert_eq!(state.decide(1, true, 1000), vec![Action::Launch(1)]);
    state.launched(1, Err(ProviderError::new("again")), 1000);
    assert!(state.decide(1, true, 2999).is_empty(), "two seconds");
    assert_eq!(state.decide(1, true, 3000), vec![Action::List]);
    state.listed(Ok(Vec::new()), 3000);
    assert_eq!(state.decide(1, true, 3000), vec![Action::Launch(1)]);
    state.launched(1, Ok(machines(&["a"], 3000)), 3000);
    assert_eq!(state.info().last_error, None, "cleared by a success");
    // Registered, it has not proven itself yet; running a job, it has.
    state.observe(vec![worker(1, "a", 0, Some(3100))], 3100);
    assert_eq!(state.failures, 2);
    state.observe(vec![worker(1, "a", 1, None)], 3200);
    assert_eq!(state.failures, 0);
    // Many failures: never more than a minute.
    for _ in 0..40 {
        state.failed("x".into(), 0);
    }
    assert_eq!(state.not_before_ms, MAX_BACKOFF_MS);
}

#[test]
fn idle_workers_are_drained_after_the_idle_timeout_longest_idle_first_down_to_min() {
    let mut state = listed(1, 4, 10);
    state.decide(3, true, 0);
    state.launched(3, Ok(machines(&["a", "b", "c"], 0)), 0);
    // The later views (a busy) come after b was asked to drain: the Scheduler says it drains.
    let view = |busy_a: bool| {
        vec![
            worker(1, "a", usize::from(busy_a), (!busy_a).then_some(1000)),
            PoolWorker {
                draining: busy_a,
                ..worker(2, "b", 0, Some(500))
            },
            worker(3, "c", 0, Some(2000)),
        ]
    };
    state.observe(view(false), 1000);
    assert!(state.decide(0, false, 500 + IDLE_MS - 1).is_empty());
    // Only b is idle long enough.
    assert_eq!(
        state.decide(0, false, 500 + IDLE_MS),
        vec![Action::Drain {
            machine: "b".into(),
            worker: 2
        }]
    );
    assert!(
        state.decide(0, false, 500 + IDLE_MS + 1).is_empty(),
        "asked once"
    );
    state.drain_answered("b", true);
    // Jobs in line of a kind it serves: nothing is drained.
    assert!(state.decide(0, true, 2000 + IDLE_MS).is_empty());
    // a and c are idle long enough, but min is 1: a (idle longest) goes; b is draining.
    assert_eq!(
        state.decide(0, false, 2000 + IDLE_MS),
        vec![Action::Drain {
            machine: "a".into(),
            worker: 1
        }]
    );
    // The Scheduler found a busy meanwhile: it stays.
    state.drain_answered("a", false);
    state.observe(view(true), 2000 + IDLE_MS);
    assert_eq!(counts(&state).3, 1);
    // b's worker left: its machine is retired, then terminated.
    let mut left = view(true);
    left.remove(1);
    assert_eq!(
        state.observe(left, 3000 + IDLE_MS),
        vec![Action::Retire("b".into())]
    );
    assert_eq!(
        state.retire_answered("b", None, 3000 + IDLE_MS),
        Some(Action::Terminate("b".into()))
    );
    state.terminate_answered("b", Ok(()), 3000 + IDLE_MS);
    let info = state.info();
    assert_eq!((info.terminated, info.failed_launches), (1, 0));
    assert_eq!((info.idle, info.busy), (1, 1));
}

#[test]
fn a_machine_whose_worker_came_back_is_not_terminated() {
    let mut state = listed(0, 2, 10);
    state.decide(1, true, 0);
    state.launched(1, Ok(machines(&["a"], 0)), 0);
    state.observe(vec![worker(1, "a", 1, None)], 100);
    // Its worker is lost (a network stall; its job still runs there): the machine is held for
    // it, shown booting, and counted against max.
    assert!(state.observe(Vec::new(), 200).is_empty());
    assert_eq!(counts(&state), (1, 1, 0, 0));
    assert_eq!(state.present(), 1);
    assert!(state.observe(Vec::new(), 200 + BOOT_MS - 1).is_empty());
    // It connects again to hand its job back, and stays.
    assert!(state
        .observe(vec![worker(7, "a", 1, None)], 300 + BOOT_MS)
        .is_empty());
    assert_eq!(counts(&state), (1, 0, 0, 1));
    // Retired meanwhile, its worker registered again before the Scheduler answered.
    state.observe(Vec::new(), 400 + BOOT_MS);
    assert_eq!(
        state.observe(Vec::new(), 400 + 2 * BOOT_MS),
        vec![Action::Retire("a".into())]
    );
    assert_eq!(state.retire_answered("a", Some(8), 450 + 2 * BOOT_MS), None);
    state.observe(vec![worker(8, "a", 0, Some(250))], 500 + 2 * BOOT_MS);
    let info = state.info();
    assert_eq!((info.idle, info.terminated), (1, 0));
    // Lost past the grace: retired, and not a failed launch (it ran a job).
    state.observe(Vec::new(), 0);
    assert_eq!(
        state.observe(Vec::new(), 400 + BOOT_MS),
        vec![Action::Retire("a".into())]
    );
    // A termination that fails is tried again later, and counted once.
    state.retire_answered("a", None, 400);
    state.terminate_answered("a", Err(ProviderError::new("throttled")), 400);
    assert!(state.observe(Vec::new(), 401).is_empty());
    // Through the Scheduler again, which renews its retired mark.
    assert_eq!(
        state.observe(Vec::new(), 400 + MAX_BACKOFF_MS / 4),
        vec![Action::Retire("a".into())]
    );
    assert_eq!(
        state.retire_answered("a", None, 400 + MAX_BACKOFF_MS / 4),
        Some(Action::Terminate("a".into()))
    );
    state.terminate_answered("a", Ok(()), 500 + MAX_BACKOFF_MS / 4);
    assert_eq!(state.info().terminated, 1);
}

#[test]
fn machines_found_at_start_are_adopted_and_workers_of_others_count_but_are_never_terminated() {
    let mut state = pool(1, 4, 10);
    assert_eq!(state.decide(0, false, 0), vec![Action::List]);
    state.listed(Ok(machines(&["old-1", "old-2"], 0)), 10);
    // Adopted as booting (demand counts them, so asks nothing more of the pool): nothing is
    // launched, and min is met.
    assert!(state.decide(0, true, 20).is_empty());
    assert_eq!(counts(&state), (2, 2, 0, 0));
    // One registers; a worker started by hand for the pool registers too.
    let view = || {
        vec![
            worker(1, "old-1", 1, None),
            worker(2, "by-hand", 0, Some(30)),
        ]
    };
    state.observe(view(), 40);
    assert_eq!(counts(&state), (2, 1, 1, 1));
    assert_eq!(
        state.info().launched,
        0,
        "adopted machines are not launches"
    );
    // The one never registering is terminated at the boot timeout, not counted as a failed
    // launch of this coordinator's.
    let actions = state.observe(view(), 10 + BOOT_MS);
    assert_eq!(actions, vec![Action::Retire("old-2".into())]);
    assert_eq!(
        state.retire_answered("old-2", None, 10 + BOOT_MS),
        Some(Action::Terminate("old-2".into()))
    );
    state.terminate_answered("old-2", Ok(()), 10 + BOOT_MS);
    assert_eq!(state.info().failed_launches, 0);
    // The one started by hand is drained at the idle timeout (the pool is above min)...
    assert_eq!(
        state.decide(0, false, 10 + BOOT_MS),
        vec![Action::Drain {
            machine: "by-hand".into(),
            worker: 2
        }]
    );
    state.drain_answered("by-hand", true);
    // ...and once gone, forgotten: never terminated, it is not the provider's.
    assert!(state
        .observe(vec![worker(1, "old-1", 1, None)], 20 + BOOT_MS)
        .is_empty());
    let info = state.info();
    assert_eq!((info.terminated, info.busy, info.idle), (1, 1, 0));
}

#[test]
fn a_list_that_fails_is_asked_again_after_a_backoff_and_nothing_launches_meanwhile() {
    let mut state = pool(1, 4, 10);
    assert_eq!(state.decide(3, true, 0), vec![Action::List]);
    state.listed(Err(ProviderError::new("AccessDenied: no")), 0);
    assert_eq!(
        state.info().last_error.as_deref(),
        Some("cannot list the pool's machines: AccessDenied: no")
    );
    assert!(state.decide(3, true, 999).is_empty());
    assert_eq!(state.decide(3, true, 1000), vec![Action::List]);
}

#[test]
fn a_machine_the_provider_knows_is_gone_is_retired_at_once() {
    let mut state = listed_gone(0, 2, 10, vec!["a"]);
    state.decide(2, true, 0);
    state.launched(2, Ok(machines(&["a", "b"], 0)), 0);
    state.observe(vec![worker(1, "a", 1, None), worker(2, "b", 1, None)], 100);
    // Both workers are lost; the provider knows a is gone, not b.
    assert_eq!(
        state.observe(Vec::new(), 200),
        vec![Action::Retire("a".into())]
    );
    assert_eq!(
        state.retire_answered("a", None, 200),
        Some(Action::Terminate("a".into()))
    );
    state.terminate_answered("a", Ok(()), 200);
    assert_eq!(counts(&state), (2, 1, 0, 0), "b is held");
    assert_eq!(state.info().failed_launches, 0, "a ran a job");
}

#[test]
fn a_worker_that_dies_soon_after_registering_is_a_failed_launch_with_backoff() {
    let mut state = listed(0, 10, 100);
    let mut now = 0;
    for (round, id) in ["a", "b", "c"].into_iter().enumerate() {
        assert_eq!(
            state.decide(1, true, now),
            vec![Action::Launch(1)],
            "round {round}"
        );
        state.launched(1, Ok(machines(&[id], now)), now);
        state.observe(vec![worker(1, id, 0, Some(now))], now + 100);
        // It goes at once, never back: held for the grace, then a failed launch.
        assert!(state.observe(Vec::new(), now + 200).is_empty());
        now += 200 + BOOT_MS;
        assert_eq!(
            state.observe(Vec::new(), now),
            vec![Action::Retire(id.into())]
        );
        state.retire_answered(id, None, now);
        state.terminate_answered(id, Ok(()), now);
        let info = state.info();
        assert_eq!(info.failed_launches, round as u64 + 1);
        assert!(info
            .last_error
            .as_deref()
            .is_some_and(|error| error.contains("went away soon after registering")));
        // The backoff doubles each time: no launch before it has passed.
        let backoff = FIRST_BACKOFF_MS << round;
        let actions = state.decide(1, true, now + backoff - 1);
        assert!(
            !actions
                .iter()
                .any(|action| matches!(action, Action::Launch(_))),
            "{actions:?}"
        );
        if actions == [Action::List] {
            // Asked again each minute.
            state.listed(Ok(Vec::new()), now + backoff - 1);
        }
        now += backoff;
    }
}

#[test]
fn machines_being_terminated_count_against_max() {
    let mut state = listed(0, 1, 100);
    assert_eq!(state.decide(1, true, 0), vec![Action::Launch(1)]);
    state.launched(1, Ok(machines(&["a"], 0)), 0);
    state.observe(vec![worker(1, "a", 1, None)], 100);
    state.observe(
        vec![PoolWorker {
            draining: true,
            ..worker(1, "a", 0, Some(100))
        }],
        200,
    );
    // Drained and gone: retired, then its termination fails.
    assert_eq!(
        state.observe(Vec::new(), 300),
        vec![Action::Retire("a".into())]
    );
    assert_eq!(state.room(300), 0, "retiring");
    state.retire_answered("a", None, 300);
    assert_eq!(state.room(300), 0, "terminating");
    state.terminate_answered("a", Err(ProviderError::new("throttled")), 300);
    assert!(state.decide(1, true, 400).is_empty(), "no launch past max");
    state.observe(Vec::new(), 300 + MAX_BACKOFF_MS / 4);
    state.retire_answered("a", None, 300 + MAX_BACKOFF_MS / 4);
    state.terminate_answered("a", Ok(()), 300 + MAX_BACKOFF_MS / 4);
    assert_eq!(
        state.decide(1, true, 400 + MAX_BACKOFF_MS / 4),
        vec![Action::Launch(1)]
    );
}

#[test]
fn machines_of_a_launch_whose_answer_was_lost_are_found_by_the_list_and_adopted() {
    let mut state = listed(0, 4, 100);
    assert_eq!(state.decide(2, true, 0), vec![Action::Launch(2)]);
    // The call timed out, but the cloud started both machines.
    state.launched(
        2,
        Err(ProviderError::new(
            "the provider's launch did not answer within 2m",
        )),
        10,
    );
    assert_eq!(state.info().failed_launches, 2);
    assert_eq!(state.decide(2, true, 1010), vec![Action::List]);
    assert!(
        state.decide(2, true, 1011).is_empty(),
        "no launch before the list"
    );
    state.listed(Ok(machines(&["lost-1", "lost-2"], 5)), 1020);
    // They are supply on its way (demand is given net of booting machines).
    assert!(state.decide(0, true, 1030).is_empty());
    assert_eq!(counts(&state).1, 2, "both booting");
    // One registers and counts; the other never does and is terminated at the boot timeout,
    // not counted a second time as a failed launch.
    state.observe(vec![worker(1, "lost-1", 0, Some(1100))], 1100);
    let retire = state.observe(vec![worker(1, "lost-1", 0, Some(1100))], 1020 + BOOT_MS);
    assert_eq!(retire, vec![Action::Retire("lost-2".into())]);
    assert_eq!(
        state.retire_answered("lost-2", None, 1020 + BOOT_MS),
        Some(Action::Terminate("lost-2".into()))
    );
    state.terminate_answered("lost-2", Ok(()), 1030 + BOOT_MS);
    let info = state.info();
    assert_eq!(
        (info.idle, info.failed_launches, info.terminated),
        (1, 2, 1),
        "{info:?}"
    );
}

#[test]
fn the_list_is_asked_again_every_minute_and_brings_back_no_machine_terminated_meanwhile() {
    let mut state = listed(0, 4, 100);
    assert_eq!(state.decide(1, true, 0), vec![Action::Launch(1)]);
    state.launched(1, Ok(machines(&["a"], 0)), 0);
    assert!(state.decide(0, false, RELIST_MS - 1).is_empty());
    assert_eq!(state.decide(0, false, RELIST_MS), vec![Action::List]);
    assert!(
        state.decide(0, false, RELIST_MS + 1).is_empty(),
        "not while a list is awaited"
    );
    // "a" never registered: terminated before the list (asked while it ran) is answered.
    let boot = state.observe(Vec::new(), BOOT_MS);
    assert_eq!(boot, vec![Action::Retire("a".into())]);
    state.retire_answered("a", None, BOOT_MS);
    state.terminate_answered("a", Ok(()), BOOT_MS);
    state.listed(Ok(machines(&["a", "unknown"], 0)), RELIST_MS + 10);
    assert_eq!(counts(&state).1, 1, "only the unknown machine is adopted");
    assert!(state.decide(0, false, 2 * RELIST_MS - 1).is_empty());
    assert_eq!(state.decide(0, false, 2 * RELIST_MS), vec![Action::List]);
}

#[test]
fn time_nobody_watched_moves_the_deadlines_on_and_is_judged_by_none() {
    const PAUSE_MS: u64 = 60_000;
    let mut state = listed(0, 2, 10);
    state.decide(2, true, 0);
    state.launched(2, Ok(machines(&["a", "b"], 0)), 0);
    // "b" registers, then its worker goes away unasked: held for the boot timeout.
    state.observe(vec![worker(1, "b", 1, None)], 100);
    assert!(state.observe(Vec::new(), 200).is_empty());
    // The coordinator stalls, or loses its lease, for a minute: neither machine is judged
    // on that minute, and each keeps the time it had left.
    state.resumed(PAUSE_MS);
    assert!(state.observe(Vec::new(), BOOT_MS + 200).is_empty());
    assert!(state.observe(Vec::new(), PAUSE_MS + BOOT_MS - 1).is_empty());
    assert_eq!(
        state.observe(Vec::new(), PAUSE_MS + BOOT_MS),
        vec![Action::Retire("a".into())],
        "the boot timeout, a minute later"
    );
    assert_eq!(
        state.observe(Vec::new(), PAUSE_MS + BOOT_MS + 200),
        vec![Action::Retire("b".into())],
        "the lost worker's grace, a minute later"
    );
}

#[test]
fn a_termination_the_lease_lapsed_before_is_asked_again_without_a_provider_error() {
    let mut state = listed(0, 1, 10);
    state.decide(1, true, 0);
    state.launched(1, Ok(machines(&["a"], 0)), 0);
    assert_eq!(
        state.observe(Vec::new(), BOOT_MS),
        vec![Action::Retire("a".into())]
    );
    assert_eq!(
        state.retire_answered("a", None, BOOT_MS),
        Some(Action::Terminate("a".into()))
    );
    let failed = state.info().last_error;
    // The lease lapsed before the termination was asked of the provider.
    state.retire_deferred("a", BOOT_MS + 10);
    assert_eq!(
        state.info().last_error,
        failed,
        "no error of the provider's"
    );
    assert_eq!(state.info().terminated, 0);
    // Through the Scheduler again at the next look, then terminated.
    assert_eq!(
        state.observe(Vec::new(), BOOT_MS + 20),
        vec![Action::Retire("a".into())]
    );
    assert_eq!(
        state.retire_answered("a", None, BOOT_MS + 20),
        Some(Action::Terminate("a".into()))
    );
    state.terminate_answered("a", Ok(()), BOOT_MS + 30);
    assert_eq!(state.info().terminated, 1);
}
