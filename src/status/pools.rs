//! A pool of the elastic fleet as the views show it (`drover pools --json`, `/api/pools`,
//! `drover status`, the dashboard, `/metrics`).

use serde::ser::SerializeStruct;
use serde::{Deserialize, Serialize, Serializer};

/// One pool's supply and what its provider did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
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
    /// The provider's last error, while it stands (cleared by the next success).
    /// JSON leaves it out when there is none; the wire always has it (see `Serialize`).
    #[serde(default)]
    pub last_error: Option<String>,
}

/// JSON (`drover pools --json`, `/api/pools`) has `last_error` only while one stands. The wire
/// (postcard) writes every field, in order: it has no names, so a field left out would shift the
/// ones after it (`skip_serializing_if` broke `drover pools` and `drover status` there).
impl Serialize for PoolInfo {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let error_shown = self.last_error.is_some() || !serializer.is_human_readable();
        let mut fields = serializer.serialize_struct("PoolInfo", 11 + usize::from(error_shown))?;
        fields.serialize_field("name", &self.name)?;
        fields.serialize_field("provider", &self.provider)?;
        fields.serialize_field("min", &self.min)?;
        fields.serialize_field("max", &self.max)?;
        fields.serialize_field("desired", &self.desired)?;
        fields.serialize_field("booting", &self.booting)?;
        fields.serialize_field("idle", &self.idle)?;
        fields.serialize_field("busy", &self.busy)?;
        fields.serialize_field("launched", &self.launched)?;
        fields.serialize_field("failed_launches", &self.failed_launches)?;
        fields.serialize_field("terminated", &self.terminated)?;
        if error_shown {
            fields.serialize_field("last_error", &self.last_error)?;
        } else {
            fields.skip_field("last_error")?;
        }
        fields.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(last_error: Option<&str>) -> PoolInfo {
        PoolInfo {
            name: "cpu".into(),
            provider: "process".into(),
            max: 4,
            launched: 2,
            last_error: last_error.map(str::to_string),
            ..PoolInfo::default()
        }
    }

    #[test]
    fn json_has_last_error_only_while_one_stands_and_the_wire_always() {
        for error in [None, Some("quota exceeded")] {
            let pool = pool(error);
            let json = serde_json::to_value(&pool).unwrap();
            assert_eq!(json.get("last_error").is_some(), error.is_some(), "{json}");
            assert_eq!(json["failed_launches"], 0);
            assert_eq!(serde_json::from_value::<PoolInfo>(json).unwrap(), pool);
            // In a list, as the status carries it: each pool read back whole.
            let both = vec![pool.clone(), pool.clone()];
            let bytes = postcard::to_allocvec(&both).unwrap();
            assert_eq!(postcard::from_bytes::<Vec<PoolInfo>>(&bytes).unwrap(), both);
        }
    }
}
