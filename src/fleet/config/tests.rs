use super::*;

const PROCESS: &str = r#"
[[pool]]
name = "cpu"
provider = "process"
max = 4
[pool.process]
command = ["drover-worker"]
"#;

const EC2: &str = r#"
[[pool]]
name = "gpu"
provider = "ec2"
min = 1
max = 8
slots = 4
labels = ["gpu", "ssd"]
idle_timeout = "90s"
boot_timeout = "10m"
max_launches_per_minute = 20
[pool.ec2]
region = "us-east-1"
image_id = "ami-0123"
instance_type = "g5.xlarge"
subnet_id = "subnet-0123"
security_group_ids = ["sg-1", "sg-2"]
instance_profile = "drover-worker"
market = "spot"
worker_token_parameter = "/drover/worker-token"
"#;

fn error(text: &str) -> String {
    parse_pools(text).expect_err("refused")
}

/// The ec2 pool with one line replaced (or removed, with an empty `with`).
fn ec2_with(line: &str, with: &str) -> String {
    assert!(EC2.contains(line), "{line}");
    EC2.replace(line, with)
}

#[test]
fn pools_are_read_with_their_defaults() {
    let pools = parse_pools(&format!("[coordinator]\ndata_dir = \"d\"\n{PROCESS}{EC2}")).unwrap();
    assert_eq!(pools.len(), 2);
    let cpu = &pools[0];
    assert_eq!(
        (cpu.name.as_str(), cpu.min, cpu.max, cpu.slots),
        ("cpu", 0, 4, 1)
    );
    assert!(cpu.labels.is_empty());
    assert_eq!(cpu.idle_timeout, Duration::from_secs(300));
    assert_eq!(cpu.boot_timeout, Duration::from_secs(300));
    assert_eq!(cpu.max_launches_per_minute, 10);
    assert_eq!(
        cpu.provider,
        ProviderConfig::Process(ProcessConfig {
            command: vec!["drover-worker".into()]
        })
    );
    let gpu = &pools[1];
    assert_eq!((gpu.min, gpu.max, gpu.slots), (1, 8, 4));
    assert_eq!(gpu.labels, ["gpu", "ssd"]);
    assert_eq!(gpu.idle_timeout, Duration::from_secs(90));
    assert_eq!(gpu.boot_timeout, Duration::from_secs(600));
    assert_eq!(gpu.max_launches_per_minute, 20);
    let ProviderConfig::Ec2(ec2) = &gpu.provider else {
        panic!("an ec2 pool: {:?}", gpu.provider);
    };
    assert_eq!(ec2.region, "us-east-1");
    assert_eq!(ec2.image_id.as_deref(), Some("ami-0123"));
    assert_eq!(ec2.security_group_ids, ["sg-1", "sg-2"]);
    assert_eq!(ec2.market, Market::Spot);
    assert_eq!(
        ec2.token,
        TokenSource::SsmParameter("/drover/worker-token".into())
    );
    assert!(parse_pools("[coordinator]\n").unwrap().is_empty());
}

#[test]
fn a_launch_template_stands_for_an_image_and_each_token_source_is_taken() {
    let template = ec2_with(
        "image_id = \"ami-0123\"\ninstance_type = \"g5.xlarge\"",
        "launch_template = \"lt-0123\"",
    );
    let pools = parse_pools(&template).unwrap();
    let ProviderConfig::Ec2(ec2) = &pools[0].provider else {
        panic!()
    };
    assert_eq!(ec2.launch_template.as_deref(), Some("lt-0123"));
    for (line, source) in [
        (
            "worker_token_file = \"/etc/drover/token\"",
            TokenSource::File("/etc/drover/token".into()),
        ),
        ("worker_token_in_user_data = true", TokenSource::InUserData),
    ] {
        let text = ec2_with("worker_token_parameter = \"/drover/worker-token\"", line);
        let ProviderConfig::Ec2(ec2) = &parse_pools(&text).unwrap()[0].provider else {
            panic!()
        };
        assert_eq!(ec2.token, source);
    }
}

#[test]
fn max_below_min_max_zero_and_slots_zero_are_refused() {
    assert_eq!(
        error(&EC2.replace("min = 1\nmax = 8", "min = 3\nmax = 2")),
        "pool \"gpu\": max (2) is below min (3)"
    );
    assert_eq!(
        error(&PROCESS.replace("max = 4", "max = 0")),
        "pool \"cpu\": max must be at least 1"
    );
    assert_eq!(
        error(&PROCESS.replace("max = 4", "")),
        "pool \"cpu\": max is required (the most workers the pool has at once)"
    );
    assert_eq!(
        error(&PROCESS.replace("max = 4", "max = 4\nslots = 0")),
        "pool \"cpu\": slots must be at least 1"
    );
    assert_eq!(
        error(&PROCESS.replace("max = 4", "max = -1")),
        "pool \"cpu\": max must be a whole number from 0 to 4294967295, not -1"
    );
    assert_eq!(
        error(&PROCESS.replace("max = 4", "max = \"4\"")),
        "pool \"cpu\": max must be a whole number, not \"4\""
    );
    assert_eq!(
        error(&PROCESS.replace("max = 4", "max = 4\nmax_launches_per_minute = 0")),
        "pool \"cpu\": max_launches_per_minute must be at least 1 (it caps launches, whatever \
         the demand)"
    );
}

#[test]
fn an_unknown_provider_and_unknown_keys_are_refused() {
    assert_eq!(
        error(&PROCESS.replace("\"process\"", "\"gce\"")),
        "pool \"cpu\": unknown provider \"gce\": expected \"process\" or \"ec2\""
    );
    assert_eq!(
        error(&PROCESS.replace("max = 4", "max = 4\nmaxx = 5")),
        "pool \"cpu\": unknown key \"maxx\" (did you mean \"max\"?)"
    );
    assert_eq!(
        error(&ec2_with("region", "regoin")),
        "pool \"gpu\": [pool.ec2] unknown key \"regoin\" (did you mean \"region\"?)"
    );
    assert_eq!(
        error(&PROCESS.replace("command", "cmd")),
        "pool \"cpu\": [pool.process] unknown key \"cmd\""
    );
    assert_eq!(
        error(&PROCESS.replace("provider = \"process\"", "")),
        "pool \"cpu\": provider is required (\"process\" or \"ec2\")"
    );
    assert_eq!(
        error(&PROCESS.replace("max = 4", "max = 4\nidle_timeout = \"soon\"")),
        "pool \"cpu\": idle_timeout \"soon\" is not a duration such as \"90s\" or \"5m\": \
         expected number at 0"
    );
    assert_eq!(
        error(&PROCESS.replace("max = 4", "max = 4\nboot_timeout = \"0s\"")),
        "pool \"cpu\": boot_timeout must be more than 0"
    );
}

#[test]
fn duplicate_names_and_bad_names_are_refused() {
    assert_eq!(
        error(&format!("{PROCESS}{PROCESS}")),
        "pool \"cpu\" is defined twice: give each pool a name of its own"
    );
    assert_eq!(
        error(&PROCESS.replace("name = \"cpu\"", "")),
        "pool #1: name is required"
    );
    assert_eq!(
        error(&PROCESS.replace("\"cpu\"", "\"c p u\"")),
        "pool \"c p u\": name must have 1 to 64 letters, digits, '-', '_' or '.'"
    );
    assert_eq!(
        error(&PROCESS.replace("max = 4", "max = 4\nlabels = [\"a,b\"]")),
        "pool \"cpu\": label \"a,b\" must have 1 to 256 bytes and no comma"
    );
    assert_eq!(
        error("[pool]\nname = \"cpu\"\n"),
        "pools are [[pool]] tables (one per pool), not a [pool] table"
    );
}

#[test]
fn a_process_pool_needs_a_command() {
    assert_eq!(
        error(&PROCESS.replace("[\"drover-worker\"]", "[]")),
        "pool \"cpu\": [pool.process] command is empty: give the worker's command line, program \
         first (such as [\"drover-worker\"])"
    );
    assert_eq!(
        error(&PROCESS.replace("[pool.process]\ncommand = [\"drover-worker\"]", "")),
        "pool \"cpu\": [pool.process] command is required for a process pool"
    );
    assert_eq!(
        error(&format!("{PROCESS}[pool.ec2]\nregion = \"x\"\n")),
        "pool \"cpu\": has [pool.ec2] but its provider is \"process\""
    );
}

#[test]
fn an_ec2_pool_needs_a_region_an_image_a_worker_in_its_user_data_and_a_token_source() {
    assert_eq!(
        error(&ec2_with("region = \"us-east-1\"", "")),
        "pool \"gpu\": [pool.ec2] region is required (such as \"us-east-1\")"
    );
    assert_eq!(
        error(&ec2_with(
            "image_id = \"ami-0123\"\ninstance_type = \"g5.xlarge\"",
            ""
        )),
        "pool \"gpu\": [pool.ec2] no image: give launch_template, or image_id with instance_type"
    );
    assert_eq!(
        error(&ec2_with("instance_type = \"g5.xlarge\"", "")),
        "pool \"gpu\": [pool.ec2] image_id is given without instance_type: give \
         launch_template, or image_id with instance_type"
    );
    assert_eq!(
        error(&ec2_with(
            "market = \"spot\"",
            "market = \"spot\"\nuser_data = \"#!/bin/sh\\necho hello\""
        )),
        "pool \"gpu\": [pool.ec2] user_data does not start drover-worker: the template must run \
         the worker (leave user_data out for the built-in one)"
    );
    assert!(parse_pools(&ec2_with(
        "market = \"spot\"",
        "user_data = \"#!/bin/sh\\nexec drover-worker --pool {pool}\""
    ))
    .is_ok());
    assert_eq!(
        error(&ec2_with("market = \"spot\"", "market = \"cheap\"")),
        "pool \"gpu\": [pool.ec2] market \"cheap\" is not one: expected \"spot\" or \"on-demand\""
    );
    let no_token = ec2_with("worker_token_parameter = \"/drover/worker-token\"", "");
    assert!(error(&no_token).starts_with("pool \"gpu\": [pool.ec2] has no worker token source:"));
    assert_eq!(
        error(&ec2_with(
            "worker_token_parameter = \"/drover/worker-token\"",
            "worker_token_in_user_data = false"
        )),
        error(&no_token),
        "false is no source"
    );
    assert_eq!(
        error(&ec2_with(
            "worker_token_parameter = \"/drover/worker-token\"",
            "worker_token_parameter = \"/p\"\nworker_token_file = \"/f\""
        )),
        "pool \"gpu\": [pool.ec2] gives worker_token_parameter and worker_token_file worker \
         token sources: give one"
    );
    assert_eq!(
        error(&EC2.replace(
            "[pool.ec2]",
            "[pool.process]\ncommand = [\"w\"]\n[pool.ec2]"
        )),
        "pool \"gpu\": has [pool.process] but its provider is \"ec2\""
    );
}
