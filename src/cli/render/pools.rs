//! The elastic fleet's pools as people read them: the `drover pools` table and the pool lines
//! of `drover status`.

use super::{table, text};
use crate::status::PoolInfo;

/// What `drover pools` says for a coordinator without pools.
const NO_POOLS: &str = "no pools configured: this coordinator starts and stops no workers itself \
     (see [[pool]] in the README)";

/// The `drover pools` table. A provider's error longer than a cell shows is written out in
/// full below the table: it is what the user has to act on.
pub fn pools(pools: &[PoolInfo]) -> String {
    if pools.is_empty() {
        return NO_POOLS.to_string();
    }
    let rows: Vec<Vec<String>> = pools
        .iter()
        .map(|pool| {
            vec![
                pool.name.clone(),
                pool.provider.clone(),
                format!("{}/{}", pool.min, pool.max),
                pool.desired.to_string(),
                pool.booting.to_string(),
                pool.idle.to_string(),
                pool.busy.to_string(),
                pool.launched.to_string(),
                pool.failed_launches.to_string(),
                pool.terminated.to_string(),
                pool.last_error.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let mut out = table(
        &[
            "NAME",
            "PROVIDER",
            "MIN/MAX",
            "DESIRED",
            "BOOTING",
            "IDLE",
            "BUSY",
            "LAUNCHED",
            "FAILED",
            "TERMINATED",
            "LAST ERROR",
        ],
        &rows,
    );
    for pool in pools {
        let Some(error) = &pool.last_error else {
            continue;
        };
        if text::cell(error) != text::line(error) {
            out.push_str(&format!(
                "\n{}: {}",
                text::line(&pool.name),
                text::line(error)
            ));
        }
    }
    out
}

/// One line per pool for `drover status`: `cpu (process, 0-4): 2 desired, 1 booting, 0 idle,
/// 1 busy; 3 launched, 0 failed, 1 terminated`, and its provider's last error if one stands;
/// lines after the first begin with `indent`.
pub fn pool_lines(pools: &[PoolInfo], indent: &str) -> String {
    let lines: Vec<String> = pools
        .iter()
        .map(|pool| {
            let mut line = format!(
                "{} ({}, {}-{}): {} desired, {} booting, {} idle, {} busy; {} launched, {} failed, {} terminated",
                text::line(&pool.name),
                text::line(&pool.provider),
                pool.min,
                pool.max,
                pool.desired,
                pool.booting,
                pool.idle,
                pool.busy,
                pool.launched,
                pool.failed_launches,
                pool.terminated,
            );
            if let Some(error) = &pool.last_error {
                line.push_str(&format!("; last error: {}", text::line(error)));
            }
            line
        })
        .collect();
    lines.join(indent)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(name: &str, last_error: Option<&str>) -> PoolInfo {
        PoolInfo {
            name: name.into(),
            provider: "ec2".into(),
            min: 1,
            max: 8,
            desired: 3,
            booting: 1,
            idle: 0,
            busy: 2,
            launched: 4,
            failed_launches: 1,
            terminated: 1,
            last_error: last_error.map(str::to_string),
        }
    }

    #[test]
    fn the_table_has_a_row_per_pool_and_long_errors_in_full_below_it() {
        assert!(pools(&[]).starts_with("no pools configured"));
        let long = format!("InsufficientInstanceCapacity: {}", "x".repeat(80));
        let text = pools(&[pool("gpu", Some(&long)), pool("cpu\x1b[2J", Some("quota"))]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(lines[1].starts_with("gpu  "), "{text}");
        assert!(
            lines[1].contains(" 1/8 ") && lines[1].ends_with('…'),
            "{text}"
        );
        assert!(
            lines[2].starts_with("cpu\\x1b[2J") && lines[2].ends_with("quota"),
            "{text}"
        );
        assert_eq!(lines[3], format!("gpu: {long}"));
    }

    #[test]
    fn the_status_says_each_pools_figures_on_a_line() {
        let text = pool_lines(
            &[pool("gpu", None), pool("cpu", Some("no\ncapacity"))],
            "\n  ",
        );
        assert_eq!(
            text,
            "gpu (ec2, 1-8): 3 desired, 1 booting, 0 idle, 2 busy; 4 launched, 1 failed, 1 terminated\n  \
             cpu (ec2, 1-8): 3 desired, 1 booting, 0 idle, 2 busy; 4 launched, 1 failed, 1 terminated; last error: no\\ncapacity"
        );
    }
}
