//! The formats of job specs as the ledger stores them.
//!
//! A spec is stored as its postcard encoding, which has no field names: a field added, removed or
//! reordered in [`JobSpec`] reads old bytes wrongly. So every stored spec carries the number of
//! its format, and this module reads each format there has been into today's spec. Format 1 is
//! [`JobSpec`]'s encoding as of schema version 2 (and of every ledger before versions), pinned by
//! the test below: when that test fails, `JobSpec` changed, and the change needs format 2 here,
//! with a frozen copy of the format-1 struct that old rows are read with.

use crate::job::{JobId, SpecBytes};
use crate::storage::store::StoreError;

/// The format new specs are stored in.
pub const CURRENT: u32 = 1;

/// Reads a stored spec of any known format as today's.
pub fn load(job: JobId, format: u32, bytes: &[u8]) -> Result<SpecBytes, StoreError> {
    let spec = match format {
        1 => SpecBytes::from_bytes(bytes),
        newer if newer > CURRENT => {
            return Err(StoreError::CorruptSpec {
                job,
                reason: format!(
                    "its spec format {newer} is newer than this drover reads (up to {CURRENT})"
                ),
            })
        }
        unknown => {
            return Err(StoreError::CorruptSpec {
                job,
                reason: format!("spec format {unknown} is unknown"),
            })
        }
    };
    // Checked when read, so a damaged ledger is reported at startup, not at assignment.
    spec.placement().map_err(|error| StoreError::CorruptSpec {
        job,
        reason: error.to_string(),
    })?;
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{Input, JobSpec, Outputs, Task};

    fn every_field() -> JobSpec {
        JobSpec {
            priority: -2,
            slots: 3,
            requires: vec!["gpu".into()],
            max_attempts: 4,
            timeout_s: Some(60),
            name: Some("n".into()),
            task: Task::Exec {
                cmd: vec!["sh".into(), "-c".into(), "true".into()],
                env: vec![("K".into(), "V".into())],
            },
            inputs: vec![Input {
                from: "s3://b/k".into(),
                to: "in".into(),
            }],
            outputs: Some(Outputs {
                from: "out".into(),
                to: "s3://b/o/".into(),
            }),
        }
    }

    /// Format 1, byte for byte. If this fails, `JobSpec`'s encoding changed: ledgers hold
    /// specs in the old one. Add format 2 (see the module's documentation), do not edit this.
    #[test]
    fn format_1_is_pinned() {
        let bytes = SpecBytes::encode(&every_field());
        let hex: String = bytes
            .as_bytes()
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        assert_eq!(
            hex,
            "0303010367707504013c01016e0003027368022d630474727565\
             01014b0156010873333a2f2f622f6b02696e01036f75740973333a2f2f622f6f2f"
        );
        assert_eq!(
            load(1, 1, bytes.as_bytes()).unwrap().decode().unwrap(),
            every_field()
        );
    }

    #[test]
    fn unknown_and_newer_formats_and_damaged_bytes_are_refused_with_the_job() {
        let bytes = SpecBytes::encode(&every_field());
        let newer = load(7, CURRENT + 1, bytes.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(
            newer.contains("job 7") && newer.contains("newer"),
            "{newer}"
        );
        assert!(load(7, 0, bytes.as_bytes()).is_err());
        let damaged = load(8, 1, &[0xff, 0xff, 0xff]).unwrap_err().to_string();
        assert!(damaged.contains("job 8"), "{damaged}");
    }
}
