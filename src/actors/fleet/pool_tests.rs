use super::*;
use crate::fleet::{
    LaunchRequest, PoolConfig, ProcessConfig, Provider, ProviderConfig, ProviderFuture,
};
use crate::net::protocol::PoolMember;
use std::sync::Arc;
use std::time::Duration;

/// The rules never call the provider: the Fleet does.
struct NeverCalled;

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
}

const IDLE_MS: u64 = 10_000;
const BOOT_MS: u64 = 30_000;

fn pool(min: u32, max: u32, per_minute: u32) -> PoolState {
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
        provider: Arc::new(NeverCalled),
    })
}

/// A pool whose provider listed no machines.
fn listed(min: u32, max: u32, per_minute: u32) -> PoolState {
    let mut state = pool(min, max, per_minute);
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
        slots: 1,
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
    assert_eq!(state.decide(50, true, MINUTE_MS), vec![Action::Launch(4)]);
}

#[test]
fn failures_back_off_longer_each_time_and_a_registration_ends_it() {
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
    assert_eq!(state.decide(1, true, 1000), vec![Action::Launch(1)]);
    state.launched(1, Err(ProviderError::new("again")), 1000);
    assert!(state.decide(1, true, 2999).is_empty(), "two seconds");
    assert_eq!(state.decide(1, true, 3000), vec![Action::Launch(1)]);
    state.launched(1, Ok(machines(&["a"], 3000)), 3000);
    assert_eq!(state.info().last_error, None, "cleared by a success");
    state.observe(vec![worker(1, "a", 0, Some(3100))], 3100);
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
    let view = |busy_a: bool| {
        vec![
            worker(1, "a", usize::from(busy_a), (!busy_a).then_some(1000)),
            worker(2, "b", 0, Some(500)),
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
    // Its worker is lost (its jobs go back to the queue): the machine is retired...
    assert_eq!(
        state.observe(Vec::new(), 200),
        vec![Action::Retire("a".into())]
    );
    // ...but its worker registered again before the Scheduler answered.
    assert_eq!(state.retire_answered("a", Some(7), 250), None);
    state.observe(vec![worker(7, "a", 0, Some(250))], 300);
    let info = state.info();
    assert_eq!((info.idle, info.terminated), (1, 0));
    // A termination that fails is tried again later, and counted once.
    state.observe(Vec::new(), 400);
    state.retire_answered("a", None, 400);
    state.terminate_answered("a", Err(ProviderError::new("throttled")), 400);
    assert!(state.observe(Vec::new(), 401).is_empty());
    assert_eq!(
        state.observe(Vec::new(), 400 + MAX_BACKOFF_MS / 4),
        vec![Action::Terminate("a".into())]
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
