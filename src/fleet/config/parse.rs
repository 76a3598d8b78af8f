//! The `[[pool]]` tables read from TOML and checked, each mistake named with its pool and field
//! (`pool "gpu": max (1) is below min (2)`), so a wrong pool stops the coordinator before it
//! listens rather than failing later in a cloud API.

use super::{Ec2Config, Market, PoolConfig, ProcessConfig, ProviderConfig, TokenSource};
use std::collections::HashSet;
use std::time::Duration;

/// The default of `idle_timeout` and `boot_timeout`.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// The default of `max_launches_per_minute`.
const DEFAULT_LAUNCHES_PER_MINUTE: u32 = 10;
/// The longest pool name: it goes into worker names, tags and environment variables.
const MAX_POOL_NAME: usize = 64;
/// The longest label, and the most labels, as a registration allows them.
const MAX_LABEL: usize = 256;
const MAX_LABELS: usize = 64;
/// What a user-data template must start.
const WORKER_COMMAND: &str = "drover-worker";

/// Reads the `[[pool]]` tables of a `drover.toml`, checking each: a wrong pool stops the
/// coordinator with the pool and field named (`pool "gpu": max (1) is below min (2)`). Other
/// sections are left to [`crate::config`].
pub fn parse_pools(text: &str) -> Result<Vec<PoolConfig>, String> {
    let table: toml::Table = text
        .parse()
        .map_err(|error: toml::de::Error| error.message().trim().to_string())?;
    let tables = match table.get("pool") {
        None => return Ok(Vec::new()),
        Some(toml::Value::Array(tables)) => tables,
        Some(toml::Value::Table(_)) => {
            return Err("pools are [[pool]] tables (one per pool), not a [pool] table".into())
        }
        Some(_) => return Err("pool must be [[pool]] tables".into()),
    };
    let mut names = HashSet::new();
    let mut pools = Vec::with_capacity(tables.len());
    for (index, value) in tables.iter().enumerate() {
        let toml::Value::Table(table) = value else {
            return Err(format!("pool #{}: must be a [[pool]] table", index + 1));
        };
        let pool = parse_pool(table, index)?;
        if !names.insert(pool.name.clone()) {
            return Err(format!(
                "pool {:?} is defined twice: give each pool a name of its own",
                pool.name
            ));
        }
        pools.push(pool);
    }
    Ok(pools)
}

fn parse_pool(table: &toml::Table, index: usize) -> Result<PoolConfig, String> {
    // The name first, so every other mistake can name its pool.
    let name = match table.get("name") {
        Some(toml::Value::String(name)) => name.clone(),
        Some(other) => {
            return Err(format!(
                "pool #{}: name must be a string, not {other}",
                index + 1
            ))
        }
        None => return Err(format!("pool #{}: name is required", index + 1)),
    };
    let fail = |message: String| format!("pool {name:?}: {message}");
    check_name(&name).map_err(fail)?;
    let mut fields = Fields::new(table, "");
    fields.used.push("name");
    let provider = fields
        .string("provider")
        .map_err(fail)?
        .ok_or_else(|| fail("provider is required (\"process\" or \"ec2\")".into()))?;
    let min = fields.count("min").map_err(fail)?.unwrap_or(0);
    let max = fields
        .count("max")
        .map_err(fail)?
        .ok_or_else(|| fail("max is required (the most workers the pool has at once)".into()))?;
    let slots = fields.count("slots").map_err(fail)?.unwrap_or(1);
    let labels = fields.strings("labels").map_err(fail)?.unwrap_or_default();
    let idle_timeout = fields.duration("idle_timeout").map_err(fail)?;
    let boot_timeout = fields.duration("boot_timeout").map_err(fail)?;
    let max_launches_per_minute = fields
        .count("max_launches_per_minute")
        .map_err(fail)?
        .unwrap_or(DEFAULT_LAUNCHES_PER_MINUTE);
    let process = fields.table("process").map_err(fail)?;
    let ec2 = fields.table("ec2").map_err(fail)?;
    fields.finish().map_err(fail)?;

    if max == 0 {
        return Err(fail("max must be at least 1".into()));
    }
    if max < min {
        return Err(fail(format!("max ({max}) is below min ({min})")));
    }
    if slots == 0 {
        return Err(fail("slots must be at least 1".into()));
    }
    if max_launches_per_minute == 0 {
        return Err(fail(
            "max_launches_per_minute must be at least 1 (it caps launches, whatever the demand)"
                .into(),
        ));
    }
    check_labels(&labels).map_err(fail)?;
    let provider = match provider.as_str() {
        "process" => {
            if ec2.is_some() {
                return Err(fail(
                    "has [pool.ec2] but its provider is \"process\"".into(),
                ));
            }
            let section = process.ok_or_else(|| {
                fail("[pool.process] command is required for a process pool".into())
            })?;
            ProviderConfig::Process(parse_process(section).map_err(fail)?)
        }
        "ec2" => {
            if process.is_some() {
                return Err(fail(
                    "has [pool.process] but its provider is \"ec2\"".into(),
                ));
            }
            let section =
                ec2.ok_or_else(|| fail("[pool.ec2] is required for an ec2 pool".into()))?;
            ProviderConfig::Ec2(Box::new(parse_ec2(section).map_err(fail)?))
        }
        other => {
            return Err(fail(format!(
                "unknown provider {other:?}: expected \"process\" or \"ec2\""
            )))
        }
    };
    Ok(PoolConfig {
        name,
        min,
        max,
        slots,
        labels,
        idle_timeout: idle_timeout.unwrap_or(DEFAULT_TIMEOUT),
        boot_timeout: boot_timeout.unwrap_or(DEFAULT_TIMEOUT),
        max_launches_per_minute,
        provider,
    })
}

fn parse_process(table: &toml::Table) -> Result<ProcessConfig, String> {
    let mut fields = Fields::new(table, "[pool.process] ");
    let command = fields.strings("command")?;
    fields.finish()?;
    match command {
        Some(command) if command.first().is_some_and(|program| !program.is_empty()) => {
            Ok(ProcessConfig { command })
        }
        Some(_) => Err(
            "[pool.process] command is empty: give the worker's command line, \
                        program first (such as [\"drover-worker\"])"
                .into(),
        ),
        None => Err("[pool.process] command is required (the worker's command line)".into()),
    }
}

fn parse_ec2(table: &toml::Table) -> Result<Ec2Config, String> {
    let mut fields = Fields::new(table, "[pool.ec2] ");
    let region = fields.string("region")?;
    let launch_template = fields.string("launch_template")?;
    let image_id = fields.string("image_id")?;
    let instance_type = fields.string("instance_type")?;
    let subnet_id = fields.string("subnet_id")?;
    let security_group_ids = fields.strings("security_group_ids")?.unwrap_or_default();
    let instance_profile = fields.string("instance_profile")?;
    let market = fields.string("market")?;
    let user_data = fields.string("user_data")?;
    let parameter = fields.string("worker_token_parameter")?;
    let file = fields.string("worker_token_file")?;
    let in_user_data = fields.flag("worker_token_in_user_data")?.unwrap_or(false);
    fields.finish()?;

    let region = region
        .filter(|region| !region.trim().is_empty())
        .ok_or("[pool.ec2] region is required (such as \"us-east-1\")")?;
    if launch_template.is_none() && (image_id.is_none() || instance_type.is_none()) {
        let missing = match (&image_id, &instance_type) {
            (Some(_), None) => "image_id is given without instance_type",
            (None, Some(_)) => "instance_type is given without image_id",
            _ => "no image",
        };
        return Err(format!(
            "[pool.ec2] {missing}: give launch_template, or image_id with instance_type"
        ));
    }
    let market = match market.as_deref() {
        None | Some("on-demand") => Market::OnDemand,
        Some("spot") => Market::Spot,
        Some(other) => {
            return Err(format!(
                "[pool.ec2] market {other:?} is not one: expected \"spot\" or \"on-demand\""
            ))
        }
    };
    if let Some(template) = &user_data {
        if !template.contains(WORKER_COMMAND) {
            return Err(format!(
                "[pool.ec2] user_data does not start {WORKER_COMMAND}: the template must run \
                 the worker (leave user_data out for the built-in one)"
            ));
        }
    }
    let mut sources = Vec::new();
    if let Some(parameter) = parameter {
        sources.push((
            "worker_token_parameter",
            TokenSource::SsmParameter(parameter),
        ));
    }
    if let Some(file) = file {
        sources.push(("worker_token_file", TokenSource::File(file)));
    }
    if in_user_data {
        sources.push(("worker_token_in_user_data", TokenSource::InUserData));
    }
    let token = match sources.len() {
        0 => {
            return Err(
                "[pool.ec2] has no worker token source: give worker_token_parameter \
                        (an SSM parameter the instance profile may read), worker_token_file (a \
                        file on the instance), or worker_token_in_user_data = true (readable by \
                        anyone who may describe the instance)"
                    .into(),
            )
        }
        1 => sources.remove(0).1,
        _ => {
            let named: Vec<&str> = sources.iter().map(|(key, _)| *key).collect();
            return Err(format!(
                "[pool.ec2] gives {} worker token sources: give one",
                named.join(" and ")
            ));
        }
    };
    Ok(Ec2Config {
        region,
        launch_template,
        image_id,
        instance_type,
        subnet_id,
        security_group_ids,
        instance_profile,
        market,
        user_data,
        token,
    })
}

/// A pool's name goes into worker names, machine tags and environment variables: plain
/// characters only.
fn check_name(name: &str) -> Result<(), String> {
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if name.is_empty() || name.len() > MAX_POOL_NAME || !name.chars().all(plain) {
        return Err(format!(
            "name must have 1 to {MAX_POOL_NAME} letters, digits, '-', '_' or '.'"
        ));
    }
    Ok(())
}

/// Labels as a registration takes them, and without commas (workers are given them as one
/// comma-separated variable).
fn check_labels(labels: &[String]) -> Result<(), String> {
    if labels.len() > MAX_LABELS {
        return Err(format!("labels: at most {MAX_LABELS}"));
    }
    for label in labels {
        if label.is_empty() || label.len() > MAX_LABEL || label.contains(',') {
            return Err(format!(
                "label {label:?} must have 1 to {MAX_LABEL} bytes and no comma"
            ));
        }
    }
    Ok(())
}

/// The keys of one table, read by kind; those never read are unknown.
struct Fields<'a> {
    table: &'a toml::Table,
    /// How the table's keys are named in messages (`""`, `"[pool.ec2] "`).
    section: &'static str,
    used: Vec<&'static str>,
}

impl<'a> Fields<'a> {
    fn new(table: &'a toml::Table, section: &'static str) -> Self {
        Fields {
            table,
            section,
            used: Vec::new(),
        }
    }

    fn get(&mut self, key: &'static str) -> Option<&'a toml::Value> {
        self.used.push(key);
        self.table.get(key)
    }

    fn wrong(&self, key: &str, expected: &str, value: &toml::Value) -> String {
        format!(
            "{}{key} must be {expected}, not {}",
            self.section,
            short(value)
        )
    }

    fn string(&mut self, key: &'static str) -> Result<Option<String>, String> {
        match self.get(key) {
            None => Ok(None),
            Some(toml::Value::String(text)) => Ok(Some(text.clone())),
            Some(other) => Err(self.wrong(key, "a string", other)),
        }
    }

    fn count(&mut self, key: &'static str) -> Result<Option<u32>, String> {
        match self.get(key) {
            None => Ok(None),
            Some(toml::Value::Integer(number)) => u32::try_from(*number).map(Some).map_err(|_| {
                format!(
                    "{}{key} must be a whole number from 0 to {}, not {number}",
                    self.section,
                    u32::MAX
                )
            }),
            Some(other) => Err(self.wrong(key, "a whole number", other)),
        }
    }

    fn flag(&mut self, key: &'static str) -> Result<Option<bool>, String> {
        match self.get(key) {
            None => Ok(None),
            Some(toml::Value::Boolean(flag)) => Ok(Some(*flag)),
            Some(other) => Err(self.wrong(key, "true or false", other)),
        }
    }

    fn strings(&mut self, key: &'static str) -> Result<Option<Vec<String>>, String> {
        let expected = "an array of strings";
        match self.get(key) {
            None => Ok(None),
            Some(toml::Value::Array(items)) => items
                .iter()
                .map(|item| match item {
                    toml::Value::String(text) => Ok(text.clone()),
                    other => Err(self.wrong(key, expected, other)),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(other) => Err(self.wrong(key, expected, other)),
        }
    }

    fn duration(&mut self, key: &'static str) -> Result<Option<Duration>, String> {
        let Some(text) = self.string(key)? else {
            return Ok(None);
        };
        let duration = humantime::parse_duration(&text).map_err(|error| {
            format!(
                "{}{key} {text:?} is not a duration such as \"90s\" or \"5m\": {error}",
                self.section
            )
        })?;
        if duration.is_zero() {
            return Err(format!("{}{key} must be more than 0", self.section));
        }
        Ok(Some(duration))
    }

    fn table(&mut self, key: &'static str) -> Result<Option<&'a toml::Table>, String> {
        match self.get(key) {
            None => Ok(None),
            Some(toml::Value::Table(table)) => Ok(Some(table)),
            Some(other) => Err(self.wrong(key, &format!("a [pool.{key}] table"), other)),
        }
    }

    /// Refuses a key no one read, suggesting the known one it is closest to.
    fn finish(self) -> Result<(), String> {
        let Some(unknown) = self
            .table
            .keys()
            .find(|key| !self.used.contains(&key.as_str()))
        else {
            return Ok(());
        };
        let closest = self
            .used
            .iter()
            .map(|known| (strsim::damerau_levenshtein(unknown, known), *known))
            .min()
            .filter(|(distance, _)| *distance <= 3);
        let hint = closest
            .map(|(_, known)| format!(" (did you mean {known:?}?)"))
            .unwrap_or_default();
        Err(format!("{}unknown key {unknown:?}{hint}", self.section))
    }
}

/// A value as a message shows it: short, whatever it holds.
fn short(value: &toml::Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 40 {
        format!("{}…", text.chars().take(40).collect::<String>())
    } else {
        text
    }
}
