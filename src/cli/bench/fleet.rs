//! `drover bench --idle-workers N`: a fleet of idle workers held inside this process (each one
//! connection, a registration and a heartbeat a second, without N processes), how long it takes
//! to register, and what its heartbeats cost the coordinator in CPU and memory.

use super::{cpu_time_of, memory_of, ms};
use crate::client::Client;
use crate::net::connect;
use crate::net::open_files::connections_within;
use crate::net::protocol::{FromCoordinator, Role, ToCoordinator};
use anyhow::bail;
use futures::SinkExt;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// Descriptors this process needs beside its idle workers' connections: its clients, the HTTP
/// probes, the pipes of the processes it starts, the runtime's own.
const OWN_FILES: u64 = 64;

/// Quiet after the last registration before the heartbeats are measured, so that the burst of
/// registrations is not counted as heartbeat load.
const SETTLE: Duration = Duration::from_secs(2);

/// How long the heartbeats are measured over.
const HEARTBEAT_WINDOW: Duration = Duration::from_secs(10);

/// Raises this process's open-files limit (the coordinator and workers it starts inherit it)
/// and checks that it holds `idle` workers' connections here and `connections` at the
/// coordinator, before anything is started.
pub(super) fn make_room(idle: usize, connections: usize) -> anyhow::Result<()> {
    let open_files = crate::net::raise_open_files_limit();
    let here = idle as u64 + OWN_FILES;
    if open_files.limit < here || connections_within(open_files.limit) < connections {
        bail!(
            "--idle-workers {idle} needs {here} open files in this process and room for \
             {connections} connections at the coordinator, but the open-files limit is {} (hard \
             limit {}): raise the hard limit (as root, `ulimit -Hn {}`) or give fewer idle workers",
            open_files.limit,
            open_files.hard,
            here.max(connections as u64 + crate::net::open_files::RESERVED),
        );
    }
    Ok(())
}

/// The idle workers, stopped when this is dropped.
pub(super) struct IdleFleet {
    workers: Vec<JoinHandle<()>>,
    /// The coordinator's CPU time per second while they only heartbeat (0 without them).
    pub background: f64,
}

impl Drop for IdleFleet {
    fn drop(&mut self) {
        for worker in &self.workers {
            worker.abort();
        }
    }
}

/// Starts `count` idle workers beside the `already` connected ones, waits until all are
/// registered, and prints how long that took and what their heartbeats cost the coordinator.
pub(super) async fn start(
    client: &mut Client,
    address: &str,
    coordinator: u32,
    already: usize,
    count: usize,
) -> anyhow::Result<IdleFleet> {
    let (resident_before, _) = memory_of(coordinator)?;
    let clock = Instant::now();
    let mut fleet = IdleFleet {
        workers: start_idle_workers(address, count),
        background: 0.0,
    };
    wait_for_workers(client, already + count).await?;
    if count == 0 {
        return Ok(fleet);
    }
    println!(
        "fleet: {count} idle workers (one connection each, in this process) registered in {:.1}s",
        clock.elapsed().as_secs_f64()
    );
    tokio::time::sleep(SETTLE).await;
    let coordinator_before = cpu_time_of(coordinator)?;
    let own_before = cpu_time_of(std::process::id())?;
    let clock = Instant::now();
    tokio::time::sleep(HEARTBEAT_WINDOW).await;
    let elapsed = clock.elapsed();
    let coordinator_cpu = cpu_time_of(coordinator)?.saturating_sub(coordinator_before);
    let own_cpu = cpu_time_of(std::process::id())?.saturating_sub(own_before);
    let (resident, _) = memory_of(coordinator)?;
    let share = |cpu: Duration| cpu.as_secs_f64() * 100.0 / elapsed.as_secs_f64();
    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    let added = resident.saturating_sub(resident_before);
    fleet.background = coordinator_cpu.as_secs_f64() / elapsed.as_secs_f64();
    println!(
        "  their heartbeats (one a second each) over {:.1}s: the coordinator used {:.1}% of one \
         core = {:.1} us per worker per second; its resident memory {:.1} MiB, {:.1} MiB more \
         than before they connected = {:.1} KiB per worker (this process, holding their ends: \
         {:.1}% of one core)",
        elapsed.as_secs_f64(),
        share(coordinator_cpu),
        coordinator_cpu.as_secs_f64() * 1e6 / elapsed.as_secs_f64() / count as f64,
        mib(resident),
        mib(added),
        added as f64 / 1024.0 / count as f64,
        share(own_cpu),
    );
    Ok(fleet)
}

/// Waits until `count` workers are connected, allowing a minute and a little more for each
/// worker (thousands register in a burst).
pub(super) async fn wait_for_workers(client: &mut Client, count: usize) -> anyhow::Result<()> {
    let within = Duration::from_secs(60) + Duration::from_millis(10) * count as u32;
    let deadline = Instant::now() + within;
    loop {
        let workers = client.status().await?.workers;
        let connected = (workers.idle + workers.busy + workers.draining) as usize;
        if connected >= count {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "only {connected} of {count} workers registered within {:.0}s",
                ms(within) / 1000.0
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Workers as the coordinator sees idle ones: each connects, registers with one slot, and
/// heartbeats as asked. They are not whole workers: without a scratch directory or an upload
/// journal each holds one descriptor, its connection, so that ten thousand fit in this process.
fn start_idle_workers(address: &str, count: usize) -> Vec<JoinHandle<()>> {
    (0..count)
        .map(|index| {
            tokio::spawn(idle_worker(
                address.to_string(),
                format!("idle-{}", index + 1),
            ))
        })
        .collect()
}

/// One idle worker, connected again whenever its connection is lost.
async fn idle_worker(address: String, name: String) {
    let instance = rand::random::<u64>();
    loop {
        if let Err(error) = idle_session(&address, &name, instance).await {
            tracing::debug!(worker = %name, %error, "idle worker disconnected, connecting again");
        }
        // Spread out, so that thousands do not come back at the same instant.
        let pause = Duration::from_millis(200 + rand::random::<u64>() % 800);
        tokio::time::sleep(pause).await;
    }
}

/// Registers and heartbeats until the connection ends. Given work (nothing is submitted while
/// the fleet is measured, but another client might), it hands it back and drains, so that the
/// work goes to a real worker.
async fn idle_session(address: &str, name: &str, instance: u64) -> anyhow::Result<()> {
    let mut connection = connect::connect(address, Role::Worker, None).await?;
    connection
        .send(ToCoordinator::Register {
            member: None,
            name: name.to_string(),
            instance,
            slots: 1,
            labels: Vec::new(),
            carried: Vec::new(),
            results: Vec::new(),
        })
        .await?;
    let interval = match connect::next(&mut connection)
        .await
        .map_err(anyhow::Error::msg)?
    {
        FromCoordinator::Registered {
            heartbeat_interval_ms,
            ..
        } => Duration::from_millis(heartbeat_interval_ms.clamp(50, 60_000)),
        other => bail!("registration answered with {other:?}"),
    };
    let mut heartbeat = tokio::time::interval(interval);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = heartbeat.tick() => connection.send(ToCoordinator::Heartbeat).await?,
            message = connect::next(&mut connection) => {
                if let FromCoordinator::Assign(assignments) = message.map_err(anyhow::Error::msg)? {
                    let leases = assignments.iter().map(|assignment| assignment.lease).collect();
                    connection.send(ToCoordinator::Draining).await?;
                    connection.send(ToCoordinator::Released(leases)).await?;
                }
            }
        }
    }
}
