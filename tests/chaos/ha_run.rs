//! The chaos suite's second run: two coordinators on one PostgreSQL ledger instead of one on
//! SQLite. Both live on the coordinator's host (ports 7700 and 7701), and so does PostgreSQL;
//! they advertise the address the test reaches them at, which the workers reach too through a
//! route over their own link (so a cut link still cuts them off). Their faults: the leader
//! killed (the standby takes over; the killed one comes back as a standby), the standby killed,
//! and the leader frozen (past its lease the standby takes over, and the thawed one must step
//! down, exit with status 3, and say why).

use crate::common::ha::{Coordinator, Coordinators};
use crate::common::postgres::PgServer;
use crate::hosts::Hosts;
use std::path::Path;
use std::time::{Duration, Instant};

/// The exit status of a coordinator that found another one holding the ledger's lease.
pub const DEPOSED_EXIT: i32 = 3;

/// The coordinators and their database, killed when dropped (the coordinators first).
pub struct HaRun {
    pub coordinators: Coordinators,
    pub database: PgServer,
    /// Secrets the CLI needs to ask the coordinators (client token).
    client_env: Vec<(String, String)>,
    /// From a leader's kill to the standby naming itself leader, per kill.
    pub takeovers: Vec<Duration>,
    /// Coordinators that stepped down by themselves after being thawed.
    pub step_downs: usize,
}

impl HaRun {
    /// PostgreSQL and two coordinators on the coordinator's host, the first leading.
    pub async fn start(
        hosts: &Hosts,
        dir: &Path,
        port: u16,
        coordinator_env: &[(String, String)],
        args: &[String],
    ) -> HaRun {
        let database = PgServer::start_in(Some(&hosts.coordinator));
        database.create_database("drover");
        let members: Vec<Coordinator> = (0..2u16)
            .map(|i| {
                let address = format!("{}:{}", hosts.coordinator_address, port + i);
                let http = format!("{}:{}", hosts.coordinator_address, port + 100 + i);
                Coordinators::member(
                    &address,
                    &format!("0.0.0.0:{}", port + i),
                    &http,
                    Some(&hosts.coordinator),
                )
            })
            .collect();
        let mut coordinators = Coordinators::with_members(dir, &database.url("drover"), members);
        coordinators.env = coordinator_env.to_vec();
        coordinators.args.extend(args.iter().cloned());
        let client_env = coordinator_env
            .iter()
            .filter(|(key, _)| key == "DROVER_TOKEN")
            .cloned()
            .collect();
        let mut run = HaRun {
            coordinators,
            database,
            client_env,
            takeovers: Vec::new(),
            step_downs: 0,
        };
        run.coordinators.start(0).await;
        assert_eq!(run.leader().await, 0, "the first coordinator leads");
        run.coordinators.start(1).await;
        run
    }

    /// The coordinators' addresses, as workers and the CLI are given them.
    pub fn list(&self) -> String {
        self.coordinators.list()
    }

    /// The client token, for the coordinators' HTTP sides.
    fn token(&self) -> Option<&str> {
        self.client_env.first().map(|(_, token)| token.as_str())
    }

    /// Waits until the running coordinators agree on a leader, and returns it.
    pub async fn leader(&mut self) -> usize {
        let env: Vec<(String, String)> = self.client_env.clone();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        self.coordinators
            .wait_leader(&env, Duration::from_secs(60))
            .await
    }

    /// The leader's address, once one is agreed on.
    pub async fn leader_address(&mut self) -> String {
        let leader = self.leader().await;
        self.coordinators.members[leader].address.clone()
    }

    /// SIGKILL to the leader; waits until the other names itself leader (the time it took is
    /// kept), then starts the killed one again, after `pause`, as a standby.
    pub async fn kill_leader(&mut self, pause: Duration) -> Duration {
        self.heal().await;
        let leader = self.leader().await;
        let other = 1 - leader;
        let killed = Instant::now();
        self.coordinators.kill(leader);
        let deadline = killed + Duration::from_secs(60);
        while self
            .coordinators
            .serves(other, self.token(), Duration::from_secs(2))
            .await
            != Some(true)
        {
            assert!(
                Instant::now() < deadline,
                "the standby did not take over within a minute of the leader's kill:\n{}",
                self.coordinators.log_tails(30)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let took = killed.elapsed();
        self.takeovers.push(took);
        tokio::time::sleep(pause.saturating_sub(took)).await;
        self.coordinators.start(leader).await;
        took
    }

    /// SIGKILL to the standby, started again after `pause`.
    pub async fn kill_standby(&mut self, pause: Duration) {
        self.heal().await;
        let standby = 1 - self.leader().await;
        self.coordinators.kill(standby);
        tokio::time::sleep(pause).await;
        self.coordinators.start(standby).await;
    }

    /// SIGSTOP to the leader for `hold`, then SIGCONT. If the standby took over meanwhile, the
    /// thawed one must step down by itself (exit status 3, saying why); it is then started
    /// again as a standby. Returns whether the same coordinator leads throughout.
    pub async fn freeze_leader(&mut self, hold: Duration) -> bool {
        self.heal().await;
        let leader = self.leader().await;
        self.coordinators.signal(leader, libc::SIGSTOP);
        tokio::time::sleep(hold).await;
        self.coordinators.signal(leader, libc::SIGCONT);
        // Both may claim to lead for a moment after the thaw, until the old one finds it was
        // deposed and exits: the running ones agree once that is settled.
        if self.leader().await == leader {
            return true;
        }
        let status = self
            .coordinators
            .wait_exit(leader, Duration::from_secs(60))
            .await
            .unwrap_or_else(|| {
                panic!(
                    "the thawed old leader did not step down within a minute:\n{}",
                    self.coordinators.log_tails(30)
                )
            });
        self.stepped_down(leader, status).await;
        false
    }

    /// Starts again every coordinator that exited by itself (the driver only ever kills them
    /// with SIGKILL and starts them at once): each must have stepped down, deposed, and said so.
    /// A leader thawed just before its lease was taken leaves so, after its fault was over.
    pub async fn heal(&mut self) {
        for i in 0..self.coordinators.members.len() {
            if let Some(status) = self.coordinators.exited(i) {
                self.stepped_down(i, status).await;
            }
        }
    }

    /// Checks that coordinator `i` exited as deposed, saying so, and starts it again.
    async fn stepped_down(&mut self, i: usize, status: std::process::ExitStatus) {
        assert_eq!(
            status.code(),
            Some(DEPOSED_EXIT),
            "coordinator {i} exited {status}:\n{}",
            self.coordinators.log_tails(30)
        );
        let log = self.coordinators.log(i).to_lowercase();
        assert!(
            log.contains("deposed"),
            "the deposed leader does not say why it stepped down:\n{}",
            self.coordinators.log_tails(30)
        );
        self.step_downs += 1;
        self.coordinators.start(i).await;
    }

    /// Every coordinator's log, over all its starts.
    pub fn logs(&self) -> String {
        self.coordinators.logs()
    }

    /// A query's rows on the ledger, each a line of `|`-separated fields.
    pub fn query(&self, sql: &str) -> String {
        self.database.psql_in("drover", sql)
    }
}
