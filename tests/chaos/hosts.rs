//! Network hosts on one machine for the chaos suite: a network namespace for the coordinator and
//! one per worker, each worker joined to the coordinator's host by a veth link of its own, and the
//! test's own namespace joined to the coordinator's by one more (to submit and watch).
//!
//! Addresses come from 198.18.0.0/15, the range set aside for benchmarking, and no namespace has
//! a default route: nothing the suite sends can leave the machine. Namespace names carry the
//! test's pid, so runs side by side do not meet, and are deleted on drop, which also deletes their
//! links; namespaces left by a run that was killed are swept by the next one.
//!
//! Faults are set on a worker's link: a cut that sends no FIN or RST (the veth set down, or an
//! nftables table in the worker's host that drops everything on the link), and a lossy link (an
//! nftables `numgen random` rule; this kernel has no netem).

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

/// Every namespace of the suite starts so, followed by the pid of the test that made it.
const NAMESPACE_PREFIX: &str = "drover-chaos-";
/// The nftables table the faults live in, one per worker host.
const TABLE: &str = "drover_chaos";
/// The worker side of each worker's link, inside the worker's namespace.
const WORKER_LINK: &str = "eth0";

/// Why the hosts could not be built.
#[derive(Debug)]
pub enum BuildError {
    /// The machine does not let this process make network namespaces.
    Forbidden(String),
    /// Something else went wrong: a failure, not a reason to skip.
    Failed(String),
}

/// The namespaces and links of one run.
pub struct Hosts {
    /// The coordinator's namespace.
    pub coordinator: String,
    /// The workers' namespaces, in order.
    pub workers: Vec<String>,
    /// The coordinator's address as the test's own namespace reaches it.
    pub coordinator_address: Ipv4Addr,
    created: Vec<String>,
    /// The test's end of the coordinator's link, once made.
    test_link: Option<String>,
}

/// Runs a command to its end; its stderr is the error.
fn run(program: &str, args: &[&str], input: Option<&str>) -> Result<(), String> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| format!("cannot run {program}: {error}"))?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin
            .write_all(text.as_bytes())
            .map_err(|error| format!("{program}: {error}"))?;
    }
    let output = child
        .wait_with_output()
        .map_err(|error| format!("{program}: {error}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    run("ip", args, None)
}

impl Hosts {
    /// Builds a coordinator host and `workers` worker hosts (none: a lone coordinator host,
    /// reached from the test's own namespace).
    pub fn build(workers: usize) -> Result<Hosts, BuildError> {
        sweep_stale();
        let pid = std::process::id();
        let prefix = format!("{NAMESPACE_PREFIX}{pid}");
        let coordinator = format!("{prefix}-c");
        if let Err(error) = ip(&["netns", "add", &coordinator]) {
            return Err(
                if error.contains("Operation not permitted") || error.contains("Permission denied")
                {
                    BuildError::Forbidden(error)
                } else {
                    BuildError::Failed(error)
                },
            );
        }
        let (near, far) = free_test_link_addresses().map_err(BuildError::Failed)?;
        let mut hosts = Hosts {
            coordinator: coordinator.clone(),
            workers: (1..=workers).map(|i| format!("{prefix}-w{i}")).collect(),
            coordinator_address: far,
            created: vec![coordinator.clone()],
            test_link: None,
        };
        hosts.wire(&prefix, near, far).map_err(BuildError::Failed)?;
        if workers > 0 {
            // Fail now, not minutes into the run, where the kernel lacks nftables or `numgen`.
            hosts.lossy(1, 1).map_err(BuildError::Failed)?;
            hosts.firewall_heal(1).map_err(BuildError::Failed)?;
        }
        Ok(hosts)
    }

    /// Makes the worker namespaces and every link.
    fn wire(&mut self, prefix: &str, near: Ipv4Addr, far: Ipv4Addr) -> Result<(), String> {
        let coordinator = self.coordinator.clone();
        ip(&["-n", &coordinator, "link", "set", "lo", "up"])?;
        // The test's end lives in the test's own namespace: a name unique there (at most 15
        // bytes: "drv" and the pid in hex).
        let test_link = format!("drv{:x}", std::process::id());
        ip(&[
            "link",
            "add",
            &test_link,
            "type",
            "veth",
            "peer",
            "name",
            "up0",
            "netns",
            &coordinator,
        ])?;
        self.test_link = Some(test_link.clone());
        ip(&["addr", "add", &format!("{near}/30"), "dev", &test_link])?;
        ip(&["link", "set", &test_link, "up"])?;
        ip(&[
            "-n",
            &coordinator,
            "addr",
            "add",
            &format!("{far}/30"),
            "dev",
            "up0",
        ])?;
        ip(&["-n", &coordinator, "link", "set", "up0", "up"])?;
        for i in 1..=self.workers.len() {
            let worker = format!("{prefix}-w{i}");
            ip(&["netns", "add", &worker])?;
            self.created.push(worker.clone());
            ip(&["-n", &worker, "link", "set", "lo", "up"])?;
            let link = Hosts::coordinator_link(i);
            ip(&[
                "link",
                "add",
                &link,
                "netns",
                &coordinator,
                "type",
                "veth",
                "peer",
                "name",
                WORKER_LINK,
                "netns",
                &worker,
            ])?;
            let (coordinator_side, worker_side) = Hosts::link_addresses(i);
            ip(&[
                "-n",
                &coordinator,
                "addr",
                "add",
                &format!("{coordinator_side}/24"),
                "dev",
                &link,
            ])?;
            ip(&[
                "-n",
                &worker,
                "addr",
                "add",
                &format!("{worker_side}/24"),
                "dev",
                WORKER_LINK,
            ])?;
            ip(&["-n", &coordinator, "link", "set", &link, "up"])?;
            ip(&["-n", &worker, "link", "set", WORKER_LINK, "up"])?;
        }
        Ok(())
    }

    /// The coordinator's end of worker `i`'s link (1-based), inside the coordinator's namespace.
    fn coordinator_link(i: usize) -> String {
        format!("w{i}")
    }

    /// The two ends' addresses of worker `i`'s link: a /24 of its own.
    fn link_addresses(i: usize) -> (Ipv4Addr, Ipv4Addr) {
        let subnet = i as u8;
        (
            Ipv4Addr::new(198, 18, subnet, 1),
            Ipv4Addr::new(198, 18, subnet, 2),
        )
    }

    /// The coordinator's address as worker `i` (1-based) dials it.
    pub fn coordinator_for(i: usize, port: u16) -> String {
        format!("{}:{port}", Hosts::link_addresses(i).0)
    }

    /// Routes each worker host to `address` (one of the coordinator host's, reached so far only
    /// from the test's namespace) over its own link, so link faults still cut it off.
    pub fn route_workers_to(&self, address: Ipv4Addr) -> Result<(), String> {
        for (at, worker) in self.workers.iter().enumerate() {
            let (coordinator_side, _) = Hosts::link_addresses(at + 1);
            ip(&[
                "-n",
                worker,
                "route",
                "add",
                &format!("{address}/32"),
                "via",
                &coordinator_side.to_string(),
            ])?;
        }
        Ok(())
    }

    /// Sets worker `i`'s link down at the coordinator's end: both ends lose carrier, packets
    /// vanish, and neither side's TCP hears a FIN or RST.
    pub fn link_down(&self, i: usize) -> Result<(), String> {
        self.set_link(i, "down")
    }

    /// Sets worker `i`'s link up again.
    pub fn link_up(&self, i: usize) -> Result<(), String> {
        self.set_link(i, "up")
    }

    fn set_link(&self, i: usize, state: &str) -> Result<(), String> {
        let link = Hosts::coordinator_link(i);
        ip(&["-n", &self.coordinator, "link", "set", &link, state])
    }

    /// Drops every packet on worker `i`'s link in both directions, silently.
    pub fn firewall_cut(&self, i: usize) -> Result<(), String> {
        self.set_table(i, "drop")
    }

    /// Drops `percent` of the packets on worker `i`'s link in each direction, at random.
    pub fn lossy(&self, i: usize, percent: u32) -> Result<(), String> {
        self.set_table(i, &format!("numgen random mod 100 < {percent} drop"))
    }

    /// Removes what `firewall_cut` or `lossy` set on worker `i`'s link.
    pub fn firewall_heal(&self, i: usize) -> Result<(), String> {
        run(
            "ip",
            &[
                "netns",
                "exec",
                &self.workers[i - 1],
                "nft",
                "delete",
                "table",
                "inet",
                TABLE,
            ],
            None,
        )
    }

    fn set_table(&self, i: usize, verdict: &str) -> Result<(), String> {
        let rules = format!(
            "table inet {TABLE} {{
                chain input {{ type filter hook input priority 0; policy accept; iifname \"{WORKER_LINK}\" {verdict}; }}
                chain output {{ type filter hook output priority 0; policy accept; oifname \"{WORKER_LINK}\" {verdict}; }}
            }}"
        );
        run(
            "ip",
            &["netns", "exec", &self.workers[i - 1], "nft", "-f", "-"],
            Some(&rules),
        )
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        // Deleting a namespace deletes its links, the test's end of the first one included, but
        // that end goes later, from the kernel's cleanup work: deleted here, it is gone before
        // the next hosts of this process (named alike) are built.
        if let Some(link) = &self.test_link {
            if let Err(error) = ip(&["link", "del", link]) {
                eprintln!("cannot delete link {link}: {error}");
            }
        }
        for name in self.created.iter().rev() {
            if let Err(error) = ip(&["netns", "del", name]) {
                eprintln!("cannot delete network namespace {name}: {error}");
            }
        }
    }
}

/// Deletes namespaces left by runs that were killed before they could clean up: those whose pid
/// is no longer a process. Their links go with them.
fn sweep_stale() {
    let Ok(output) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        let Some(pid) = name
            .strip_prefix(NAMESPACE_PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        // A run of ours under this pid before a reboot or in another pid namespace is stale too.
        if pid == std::process::id() || !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = ip(&["netns", "del", name]);
        }
    }
}

/// Two addresses for the test's link to the coordinator: a /30 in 198.19.0.0/16 that no link in
/// the test's namespace uses yet (another run's, say).
fn free_test_link_addresses() -> Result<(Ipv4Addr, Ipv4Addr), String> {
    let output = Command::new("ip")
        .args(["-o", "-4", "addr", "show"])
        .output()
        .map_err(|error| format!("cannot run ip: {error}"))?;
    let in_use = String::from_utf8_lossy(&output.stdout).into_owned();
    let start = std::process::id() % 16_384;
    (0..16_384)
        .map(|step| (start + step) % 16_384)
        .map(|slot| {
            let base = u32::from(Ipv4Addr::new(198, 19, 0, 0)) + slot * 4;
            (Ipv4Addr::from(base + 1), Ipv4Addr::from(base + 2))
        })
        .find(|(near, far)| {
            !in_use.contains(&format!("inet {near}/")) && !in_use.contains(&format!("inet {far}/"))
        })
        .ok_or_else(|| "no free /30 left in 198.19.0.0/16".to_string())
}
