//! The Fleet actor: starts and stops the pools' machines with demand.
//!
//! It owns each pool's machines (launched, booting, registered, draining, terminating) and its
//! counters. On every tick it takes demand and supply from the Scheduler in one snapshot
//! ([`ViewForFleet`]: the jobs in line no free slot takes, and each pool's connected workers,
//! busy or idle since when), shares the demand among the pools ([`share`]), lets each pool
//! decide ([`pool`]), and carries out what they decided: the provider's calls on tasks of their
//! own, so a slow cloud API never holds its event loop, and the Scheduler's word before any
//! worker is drained or machine terminated.
//!
//! Its invariant: a machine is terminated only after the Scheduler said no worker of it is
//! connected, and from then on keeps any worker of it that registers from taking a job; a
//! worker is drained only in the Scheduler's own step that finds it running and holding
//! nothing. So no machine whose worker runs or holds a job is ever terminated.

mod pool;
mod share;

use crate::actors::scheduler::{DrainIdle, FleetView, PoolWorker, Retire, Scheduler, ViewForFleet};
use crate::fleet::{LaunchRequest, PoolConfig, Provider, ProviderError, ProviderFuture};
use crate::ha::LeaseClock;
use crate::job::now_ms;
use crate::net::protocol::PoolMember;
use crate::status::PoolInfo;
use actix::prelude::*;
use pool::{Action, PoolState};
use std::sync::Arc;
use std::time::Duration;

/// How often the Fleet looks at demand and supply: a job waits at most this long before a
/// machine is launched for it.
const TICK: Duration = Duration::from_millis(250);
/// A gap between two looks at the pools longer than this is a pause: the coordinator stalled
/// (frozen, or its loop held up) or did not hold the lease.
const UNWATCHED_MS: u64 = 2_000;
/// The longest a provider's list or termination may take: past it, a hung call counts as a
/// failure (and is tried again) rather than leaving its pool waiting for good.
const PROVIDER_TIMEOUT: Duration = Duration::from_secs(120);

/// `call`, failed with a message saying so if it takes longer than `limit`.
fn bounded<T: Send + 'static>(
    call: ProviderFuture<T>,
    limit: Duration,
    what: &'static str,
) -> ProviderFuture<T> {
    Box::pin(async move {
        tokio::time::timeout(limit, call).await.unwrap_or_else(|_| {
            Err(ProviderError::new(format!(
                "the provider's {what} did not answer within {}",
                humantime::format_duration(limit)
            )))
        })
    })
}

/// One pool with its provider.
pub struct Pool {
    /// What it is.
    pub config: Arc<PoolConfig>,
    /// Where its machines come from.
    pub provider: Arc<dyn Provider>,
}

/// What the Fleet needs to know besides its pools.
pub struct FleetContext {
    /// The cluster's id (the ledger's), the tag on every machine.
    pub cluster: String,
    /// The protocol address(es) a launched worker is given to connect to (`host:port[,…]`).
    pub coordinator: String,
    /// Asked for demand and supply in one snapshot, and for the word before any worker is
    /// drained or machine terminated: it alone knows what each worker runs.
    pub scheduler: Addr<Scheduler>,
    /// The lease this coordinator leads under. The Fleet acts only while it holds on this
    /// machine's clock: a coordinator frozen past its lease, then thawed, must not launch or
    /// terminate before it learns that another leads and adopted the machines.
    pub lease: LeaseClock,
}

/// Keeps each pool between its min and max, as demand asks.
pub struct Fleet {
    pools: Vec<PoolState>,
    context: FleetContext,
    /// A snapshot was asked of the Scheduler and not answered yet.
    viewing: bool,
    /// This coordinator no longer leads: it launches and terminates nothing more.
    stepped_down: bool,
    /// When the Fleet last looked at the pools under the lease (ms since the Unix epoch): a
    /// longer gap than a few ticks is time nobody watched the machines.
    looked_ms: Option<u64>,
    /// The last tick found the lease not held (said once).
    lease_lapsed: bool,
}

impl Fleet {
    /// A fleet of these pools.
    pub fn new(pools: Vec<Pool>, context: FleetContext) -> Self {
        Fleet {
            pools: pools.into_iter().map(PoolState::new).collect(),
            context,
            viewing: false,
            stepped_down: false,
            looked_ms: None,
            lease_lapsed: false,
        }
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        if self.viewing || self.stepped_down {
            return;
        }
        if !self.context.lease.is_valid() {
            if !self.lease_lapsed {
                self.lease_lapsed = true;
                tracing::warn!("the ledger's lease is not held: the fleet launches and terminates nothing until it is");
            }
            return;
        }
        if std::mem::take(&mut self.lease_lapsed) {
            tracing::info!("the ledger's lease is held again: the fleet acts again");
        }
        let now = now_ms();
        if let Some(looked) = self.looked_ms {
            let paused = now.saturating_sub(looked);
            if paused > UNWATCHED_MS {
                tracing::info!(paused_ms = paused, "the fleet looks at its pools again; their machines' deadlines move on by the time nobody watched them");
                for pool in &mut self.pools {
                    pool.resumed(paused);
                }
            }
        }
        self.looked_ms = Some(now);
        self.viewing = true;
        let view = self.context.scheduler.send(ViewForFleet);
        ctx.spawn(view.into_actor(self).map(|view, fleet, ctx| {
            fleet.viewing = false;
            match view {
                Ok(view) => fleet.decide(view, ctx),
                Err(error) => tracing::warn!(%error, "the scheduler did not answer the fleet"),
            }
        }));
    }

    /// Every pool's decision on one snapshot, carried out.
    fn decide(&mut self, view: FleetView, ctx: &mut Context<Self>) {
        if self.stepped_down || !self.context.lease.is_valid() {
            return;
        }
        let now = now_ms();
        let FleetView { demand, workers } = view;
        let mut by_pool: Vec<Vec<PoolWorker>> = vec![Vec::new(); self.pools.len()];
        for worker in workers {
            let index = self
                .pools
                .iter()
                .position(|pool| pool.pool.config.name == worker.member.pool);
            match index {
                Some(index) => by_pool[index].push(worker),
                None => {
                    tracing::debug!(pool = %worker.member.pool, "a worker names a pool not configured here")
                }
            }
        }
        let mut actions: Vec<(usize, Action)> = Vec::new();
        for (index, (pool, workers)) in self.pools.iter_mut().zip(by_pool).enumerate() {
            actions.extend(
                pool.observe(workers, now)
                    .into_iter()
                    .map(|action| (index, action)),
            );
        }
        let offers: Vec<share::Offer<'_>> = self
            .pools
            .iter_mut()
            .map(|pool| {
                let room = pool.room(now);
                let booting = pool.booting();
                share::Offer {
                    labels: &pool.pool.config.labels,
                    slots: pool.pool.config.slots,
                    booting,
                    room,
                }
            })
            .collect();
        let shares = share::share(&demand, offers);
        for (index, (pool, part)) in self.pools.iter_mut().zip(shares).enumerate() {
            actions.extend(
                pool.decide(part.launch, part.wanted, now)
                    .into_iter()
                    .map(|action| (index, action)),
            );
        }
        for (index, action) in actions {
            self.act(index, action, ctx);
        }
    }

    /// Carries out one pool's action: the provider's or Scheduler's answer comes back to the
    /// pool on this actor's loop.
    fn act(&mut self, index: usize, action: Action, ctx: &mut Context<Self>) {
        let Some(pool) = self.pools.get(index) else {
            return;
        };
        let provider = pool.pool.provider.clone();
        let config = pool.pool.config.clone();
        match action {
            Action::List => {
                let listing = bounded(
                    provider.list(&self.context.cluster, &config.name),
                    PROVIDER_TIMEOUT,
                    "list",
                );
                ctx.spawn(listing.into_actor(self).map(move |answer, fleet, _| {
                    fleet.pools[index].listed(answer, now_ms());
                }));
            }
            Action::Launch(count) => {
                tracing::info!(pool = %config.name, machines = count, "launching");
                // A launch may take as long as a boot (the provider may wait for its machines
                // to start), and at least as long as any other call.
                let limit = config.boot_timeout.max(PROVIDER_TIMEOUT);
                let launching = bounded(
                    provider.launch(LaunchRequest {
                        pool: config,
                        count,
                        cluster: self.context.cluster.clone(),
                        coordinator: self.context.coordinator.clone(),
                    }),
                    limit,
                    "launch",
                );
                ctx.spawn(launching.into_actor(self).map(move |answer, fleet, _| {
                    fleet.pools[index].launched(count, answer, now_ms());
                }));
            }
            Action::Drain { machine, worker } => {
                let idle = humantime::format_duration(config.idle_timeout);
                let drain = self.context.scheduler.send(DrainIdle {
                    worker,
                    reason: format!("pool {} scales in: idle for {idle}", config.name),
                });
                ctx.spawn(drain.into_actor(self).map(move |answer, fleet, _| {
                    fleet.pools[index].drain_answered(&machine, answer.unwrap_or(false));
                }));
            }
            Action::Retire(machine) => {
                let retire = self.context.scheduler.send(Retire(PoolMember {
                    pool: config.name.clone(),
                    machine: machine.clone(),
                }));
                ctx.spawn(retire.into_actor(self).map(move |answer, fleet, ctx| {
                    // Unanswered, the worst is assumed: a worker of it may be connected.
                    let registered = answer.unwrap_or(Some(0));
                    let next = fleet.pools[index].retire_answered(&machine, registered, now_ms());
                    if let Some(next) = next {
                        if fleet.stepped_down || !fleet.context.lease.is_valid() {
                            fleet.pools[index].retire_deferred(&machine, now_ms());
                        } else {
                            fleet.act(index, next, ctx);
                        }
                    }
                }));
            }
            Action::Terminate(machine) => {
                let terminating = bounded(
                    provider.terminate(&config.name, vec![machine.clone()]),
                    PROVIDER_TIMEOUT,
                    "termination",
                );
                ctx.spawn(terminating.into_actor(self).map(move |answer, fleet, _| {
                    fleet.pools[index].terminate_answered(&machine, answer, now_ms());
                }));
            }
        }
    }
}

impl Actor for Fleet {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if self.pools.is_empty() {
            return;
        }
        self.tick(ctx);
        ctx.run_interval(TICK, |fleet, ctx| fleet.tick(ctx));
    }
}

/// Each pool as the views show it, in the order of the configuration.
#[derive(Message)]
#[rtype(result = "Vec<PoolInfo>")]
pub struct ListPools;

impl Handler<ListPools> for Fleet {
    type Result = MessageResult<ListPools>;

    fn handle(&mut self, _: ListPools, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.pools.iter().map(PoolState::info).collect())
    }
}

/// This coordinator no longer leads: its fleet launches and terminates nothing more (the next
/// leader adopts the machines).
#[derive(Message)]
#[rtype(result = "()")]
pub struct FleetStepDown;

impl Handler<FleetStepDown> for Fleet {
    type Result = ();

    fn handle(&mut self, _: FleetStepDown, _: &mut Context<Self>) {
        if !self.stepped_down && !self.pools.is_empty() {
            tracing::info!("no longer leading: the fleet launches and terminates nothing more");
        }
        self.stepped_down = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_provider_call_that_hangs_fails_at_its_limit_with_a_message() {
        actix_rt::System::new().block_on(async {
            let hung: ProviderFuture<()> = Box::pin(std::future::pending());
            let answer = bounded(hung, Duration::from_millis(20), "termination").await;
            assert_eq!(
                answer,
                Err(ProviderError::new(
                    "the provider's termination did not answer within 20ms"
                ))
            );
            let quick: ProviderFuture<u32> = Box::pin(async { Ok(7) });
            assert_eq!(bounded(quick, Duration::from_secs(1), "list").await, Ok(7));
        });
    }
}
