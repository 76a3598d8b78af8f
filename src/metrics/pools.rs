//! The elastic fleet's pools on `/metrics`: one series per pool (label `pool`), written from the
//! status the page is rendered from, as the other gauges are.
//!
//! The Fleet keeps its own counts (launches, failures, terminations since it started), so they
//! are exported as they are at the scrape rather than counted again here: a collector writes the
//! last snapshot, and a coordinator without pools writes nothing.

use crate::status::PoolInfo;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use std::sync::{Arc, Mutex};

/// The pools as last seen, written on every scrape.
#[derive(Debug, Clone, Default)]
pub(super) struct PoolMetrics {
    pools: Arc<Mutex<Vec<PoolInfo>>>,
}

/// A per-pool gauge: its name, help and value.
type GaugeOf = (&'static str, &'static str, fn(&PoolInfo) -> u32);

/// A per-pool counter: its name (without `_total`, which the encoder adds), help and value.
type CounterOf = (&'static str, &'static str, fn(&PoolInfo) -> u64);

const GAUGES: [GaugeOf; 3] = [
    (
        "drover_pool_min_workers",
        "The fewest workers the pool keeps (its min).",
        |pool| pool.min,
    ),
    (
        "drover_pool_max_workers",
        "The most workers the pool has at once, booting ones included (its max).",
        |pool| pool.max,
    ),
    (
        "drover_pool_desired_workers",
        "Machines the fleet wants the pool to have now, within its min and max.",
        |pool| pool.desired,
    ),
];

const COUNTERS: [CounterOf; 3] = [
    (
        "drover_pool_launched",
        "Machines the pool launched since the coordinator started (adopted ones not counted).",
        |pool| pool.launched,
    ),
    (
        "drover_pool_failed_launches",
        "Launches that failed: refused by the provider, or not registered within the boot timeout.",
        |pool| pool.failed_launches,
    ),
    (
        "drover_pool_terminated",
        "Machines of the pool terminated since the coordinator started.",
        |pool| pool.terminated,
    ),
];

impl PoolMetrics {
    /// Keeps `pools` for the next encoding.
    pub(super) fn set(&self, pools: &[PoolInfo]) {
        *self.snapshot() = pools.to_vec();
    }

    fn snapshot(&self) -> std::sync::MutexGuard<'_, Vec<PoolInfo>> {
        // A panic while the lock was held left a whole snapshot or none: it is still one.
        self.pools
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Collector for PoolMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let pools = self.snapshot();
        if pools.is_empty() {
            return Ok(());
        }
        for (name, help, value) in GAUGES {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for pool in pools.iter() {
                let labels = [("pool", pool.name.as_str())];
                ConstGauge::new(i64::from(value(pool))).encode(family.encode_family(&labels)?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "drover_pool_workers",
            "The pool's machines by state: booting (launched, not registered yet), idle \
             (registered, running nothing) and busy (running something, or draining with \
             something left).",
            None,
            MetricType::Gauge,
        )?;
        for pool in pools.iter() {
            for (state, count) in [
                ("booting", pool.booting),
                ("idle", pool.idle),
                ("busy", pool.busy),
            ] {
                let labels = [("pool", pool.name.as_str()), ("state", state)];
                ConstGauge::new(i64::from(count)).encode(family.encode_family(&labels)?)?;
            }
        }
        for (name, help, value) in COUNTERS {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for pool in pools.iter() {
                let labels = [("pool", pool.name.as_str())];
                ConstCounter::new(value(pool)).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::metrics::Metrics;
    use crate::status::{ClusterStatus, JobStatistics, PoolInfo};

    fn status(pools: Vec<PoolInfo>) -> ClusterStatus {
        let mut status = ClusterStatus::assemble(JobStatistics::default(), &[], Vec::new());
        status.pools = pools;
        status
    }

    #[test]
    fn each_pool_has_its_gauges_and_counters_and_none_are_written_without_pools() {
        let metrics = Metrics::new();
        let cpu = PoolInfo {
            name: "cpu".into(),
            provider: "process".into(),
            min: 1,
            max: 4,
            desired: 3,
            booting: 1,
            idle: 0,
            busy: 2,
            launched: 5,
            failed_launches: 2,
            terminated: 1,
            last_error: Some("no capacity".into()),
        };
        let odd = PoolInfo {
            name: "a\"b".into(),
            provider: "ec2".into(),
            ..PoolInfo::default()
        };
        let text = metrics.render(&status(vec![cpu, odd]));
        for line in [
            "drover_pool_min_workers{pool=\"cpu\"} 1",
            "drover_pool_max_workers{pool=\"cpu\"} 4",
            "drover_pool_desired_workers{pool=\"cpu\"} 3",
            "drover_pool_workers{pool=\"cpu\",state=\"booting\"} 1",
            "drover_pool_workers{pool=\"cpu\",state=\"idle\"} 0",
            "drover_pool_workers{pool=\"cpu\",state=\"busy\"} 2",
            "drover_pool_launched_total{pool=\"cpu\"} 5",
            "drover_pool_failed_launches_total{pool=\"cpu\"} 2",
            "drover_pool_terminated_total{pool=\"cpu\"} 1",
            "drover_pool_max_workers{pool=\"a\\\"b\"} 0",
            "# TYPE drover_pool_launched counter",
            "# TYPE drover_pool_workers gauge",
        ] {
            assert!(text.lines().any(|seen| seen == line), "{line}\n{text}");
        }
        assert!(!text.contains("no capacity"), "errors are not metrics");
        assert!(text.ends_with("# EOF\n"), "{text}");
        // Pools gone from the status are gone from the page.
        let text = metrics.render(&status(Vec::new()));
        assert!(!text.contains("drover_pool"), "{text}");
    }
}
