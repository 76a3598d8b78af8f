//! A pool of the elastic fleet as the views show it (`drover pools --json`, `/api/pools`,
//! `drover status`, the dashboard, `/metrics`).

use serde::{Deserialize, Serialize};

/// One pool's supply and what its provider did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolInfo {
    /// The pool's name.
    pub name: String,
    /// `ec2` or `process`.
    pub provider: String,
    /// The fewest workers it keeps.
    pub min: u32,
    /// The most it has at once.
    pub max: u32,
    /// How many machines the Fleet wants now (within min and max).
    pub desired: u32,
    /// Machines launched and not yet registered.
    pub booting: u32,
    /// Registered workers running nothing.
    pub idle: u32,
    /// Registered workers running something (or draining with something left).
    pub busy: u32,
    /// Machines launched since the coordinator started (adopted ones not counted).
    pub launched: u64,
    /// Launches that failed: refused by the provider, or never registered within the boot
    /// timeout.
    pub failed_launches: u64,
    /// Machines terminated since the coordinator started.
    pub terminated: u64,
    /// The provider's last error, while it stands (cleared by the next success). Always
    /// written (`null` when none): skipping it would break the binary protocol, whose frames
    /// carry no field names.
    #[serde(default)]
    pub last_error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_go_over_the_binary_protocol_with_or_without_an_error() {
        let pools = vec![
            PoolInfo {
                name: "cpu".into(),
                ..PoolInfo::default()
            },
            PoolInfo {
                name: "gpu".into(),
                last_error: Some("InsufficientInstanceCapacity: none left".into()),
                ..PoolInfo::default()
            },
        ];
        let bytes = postcard::to_allocvec(&pools).unwrap();
        assert_eq!(
            postcard::from_bytes::<Vec<PoolInfo>>(&bytes).unwrap(),
            pools
        );
    }
}
