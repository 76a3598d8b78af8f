//! `[[pool]]` tables in `drover.toml`: what each pool is, checked before the coordinator starts.
//!
//! ```toml
//! [[pool]]
//! name = "cpu"
//! provider = "process"          # or "ec2"
//! min = 0
//! max = 4
//! slots = 1
//! labels = ["ssd"]
//! idle_timeout = "60s"          # idle this long, a worker is drained and stopped
//! boot_timeout = "30s"          # not registered this long after launch: a failed launch
//! max_launches_per_minute = 20
//! [pool.process]
//! command = ["drover-worker", "--scratch-dir", "/tmp/drover"]
//!
//! [[pool]]
//! name = "gpu"
//! provider = "ec2"
//! max = 8
//! labels = ["gpu"]
//! [pool.ec2]
//! region = "us-east-1"
//! launch_template = "lt-0123"   # or image_id with instance_type
//! subnet_id = "subnet-0123"
//! security_group_ids = ["sg-0123"]
//! instance_profile = "drover-worker"
//! market = "spot"               # or "on-demand"
//! worker_token_parameter = "/drover/worker-token"   # an SSM parameter (SecureString)
//! ```

use serde::{Deserialize, Serialize};
use std::time::Duration;

mod parse;
#[cfg(test)]
mod tests;

pub use parse::parse_pools;

/// One pool of workers the coordinator starts and stops.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolConfig {
    /// Its name: in tags, in `drover pools`, and given to its workers (`--pool`).
    pub name: String,
    /// The fewest workers it keeps, busy or not.
    pub min: u32,
    /// The most workers it has at once, booting ones included.
    pub max: u32,
    /// Slots each of its workers offers.
    pub slots: u32,
    /// Labels each of its workers has: it serves jobs that require a subset of them.
    pub labels: Vec<String>,
    /// How long a worker is idle before it is drained and stopped (never below `min`).
    pub idle_timeout: Duration,
    /// How long a launched machine has to register before it counts as a failed launch and is
    /// stopped.
    pub boot_timeout: Duration,
    /// The most launches in any minute, whatever the demand: a pool that cannot boot does not
    /// loop.
    pub max_launches_per_minute: u32,
    /// Where its machines come from.
    pub provider: ProviderConfig,
}

/// Where a pool's machines come from, with the provider's settings.
#[derive(Debug, Clone, PartialEq)]
pub enum ProviderConfig {
    /// Worker processes on the coordinator's machine.
    Process(ProcessConfig),
    /// EC2 instances.
    Ec2(Box<Ec2Config>),
}

impl ProviderConfig {
    /// The provider's name as written in the file and shown in `drover pools`.
    pub fn kind(&self) -> &'static str {
        match self {
            ProviderConfig::Process(_) => "process",
            ProviderConfig::Ec2(_) => "ec2",
        }
    }
}

/// `[pool.process]`: workers as local processes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessConfig {
    /// The worker's command line (program first). The provider adds what makes it the pool's
    /// worker (coordinator, name, pool, machine id, slots, labels, token) through the
    /// environment, so the command needs none of them.
    pub command: Vec<String>,
}

/// Spot or on-demand instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Market {
    /// Billed by the second at the on-demand price.
    #[default]
    OnDemand,
    /// Cheaper, and taken back with two minutes' notice.
    Spot,
}

/// Where an instance's worker finds the worker token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// An SSM parameter (SecureString) the instance profile may read.
    SsmParameter(String),
    /// A file on the instance (baked into the image, or fetched by the launch template).
    File(String),
    /// Written in the user data itself: only when the user asked for it
    /// (`worker_token_in_user_data = true`), since anyone who may describe the instance can
    /// read user data.
    InUserData,
}

/// `[pool.ec2]`: workers on EC2 instances.
#[derive(Debug, Clone, PartialEq)]
pub struct Ec2Config {
    /// The region (required).
    pub region: String,
    /// A launch template (id `lt-…` or name); otherwise `image_id` and `instance_type`.
    pub launch_template: Option<String>,
    /// The AMI.
    pub image_id: Option<String>,
    /// The instance type.
    pub instance_type: Option<String>,
    /// The subnet.
    pub subnet_id: Option<String>,
    /// Security groups.
    pub security_group_ids: Vec<String>,
    /// The instance profile (name or ARN) the instances run as.
    pub instance_profile: Option<String>,
    /// Spot or on-demand.
    pub market: Market,
    /// The user-data template, with `{coordinator}`, `{pool}`, `{slots}`, `{labels}` and
    /// `{token}` (the shell that fetches the token) replaced; it must start `drover-worker`.
    /// A built-in one when not given.
    pub user_data: Option<String>,
    /// Where the worker finds its token.
    pub token: TokenSource,
}
