//! Network hosts on one machine for the chaos suite: a network namespace for the coordinator and
//! one per worker, each worker joined to the coordinator's host by a veth link of its own, and the
//! test's own namespace joined to the coordinator's by one more (to submit and watch).
//!
//! Addresses come from 198.18.0.0/15, the range set aside for benchmarking, and no namespace has
//! a default route: nothing the suite sends can leave the machine. Namespace names carry the
//! test's pid and start time, so runs side by side do not meet; they are deleted on drop, which
//! also deletes their links.
//!
//! Faults are set on a worker's link: a cut that sends no FIN or RST (the veth set down, or an
//! nftables table in the worker's host that drops everything on the link), and a lossy link (an
//! nftables `numgen random` rule; this kernel has no netem).

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

/// The nftables table the faults live in, one per worker host.
const TABLE: &str = "drover_chaos";
/// The worker side of each worker's link, inside the worker's namespace.
const WORKER_LINK: &str = "eth0";

/// The namespaces and links of one run.
pub struct Hosts {
    /// The coordinator's namespace.
    pub coordinator: String,
    /// The workers' namespaces, in order.
    pub workers: Vec<String>,
    /// The coordinator's address as the test's own namespace reaches it.
    pub coordinator_address: Ipv4Addr,
    created: Vec<String>,
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
    /// Builds a coordinator host and `workers` worker hosts. An error says what the machine
    /// refused (namespaces need root, or CAP_NET_ADMIN and CAP_SYS_ADMIN).
    pub fn build(workers: usize) -> Result<Hosts, String> {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.subsec_micros());
        let pid = std::process::id();
        let prefix = format!("drover-chaos-{pid}-{stamp}");
        // The test's side of its link lives in the test's namespace: a unique name of at most
        // 15 bytes, and a /30 of its own within 198.19.0.0/16.
        let slot = pid % 16_384;
        let base = Ipv4Addr::new(198, 19, (slot / 64) as u8, (slot % 64 * 4) as u8);
        let near = Ipv4Addr::from(u32::from(base) + 1);
        let far = Ipv4Addr::from(u32::from(base) + 2);
        let mut hosts = Hosts {
            coordinator: format!("{prefix}-c"),
            workers: (1..=workers).map(|i| format!("{prefix}-w{i}")).collect(),
            coordinator_address: far,
            created: Vec::new(),
        };
        let coordinator = hosts.coordinator.clone();
        hosts.add_namespace(&coordinator)?;
        let test_link = format!("drv{:x}", (pid << 8) ^ stamp);
        let test_link = &test_link[..test_link.len().min(15)];
        ip(&[
            "link",
            "add",
            test_link,
            "type",
            "veth",
            "peer",
            "name",
            "up0",
            "netns",
            &coordinator,
        ])?;
        ip(&["addr", "add", &format!("{near}/30"), "dev", test_link])?;
        ip(&["link", "set", test_link, "up"])?;
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
        for i in 1..=workers {
            let worker = hosts.workers[i - 1].clone();
            hosts.add_namespace(&worker)?;
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
        Ok(hosts)
    }

    fn add_namespace(&mut self, name: &str) -> Result<(), String> {
        ip(&["netns", "add", name])?;
        self.created.push(name.to_string());
        ip(&["-n", name, "link", "set", "lo", "up"])
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

    /// Sets worker `i`'s link down at the coordinator's end: both ends lose carrier, packets
    /// vanish, and neither side's TCP hears a FIN or RST.
    pub fn link_down(&self, i: usize) -> Result<(), String> {
        ip(&[
            "-n",
            &self.coordinator,
            "link",
            "set",
            &Hosts::coordinator_link(i),
            "down",
        ])
    }

    /// Sets worker `i`'s link up again.
    pub fn link_up(&self, i: usize) -> Result<(), String> {
        ip(&[
            "-n",
            &self.coordinator,
            "link",
            "set",
            &Hosts::coordinator_link(i),
            "up",
        ])
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
        // Deleting a namespace deletes its links, the test's end of the first one included.
        for name in self.created.iter().rev() {
            if let Err(error) = ip(&["netns", "del", name]) {
                eprintln!("cannot delete network namespace {name}: {error}");
            }
        }
    }
}
