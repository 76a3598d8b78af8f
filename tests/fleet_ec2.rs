//! The `ec2` provider against moto's EC2 server (started by each test on loopback), and the
//! worker's spot interruption watch against a stand-in for the instance metadata.

#![cfg(feature = "ec2")]

mod common;

use common::ha::Coordinators;
use common::imds::Imds;
use common::lost_answers::LostAnswers;
use common::moto::{alive, Moto, IMAGE};
use common::postgres::PgServer;
use common::{wait_for, wait_running, Cluster};
use drover::fleet::ec2::{Ec2Provider, CLUSTER_TAG, POOL_TAG};
use drover::fleet::{
    Ec2Config, LaunchRequest, Market, PoolConfig, Provider, ProviderConfig, TokenSource,
};
use drover::ha::LeaseClock;
use drover::job::{JobSpec, JobState};
use drover::net::protocol::{ClientRequest, ClientResponse};
use drover::status::PoolInfo;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

fn ec2_pool(name: &str, market: Market, subnet: Option<&str>) -> (PoolConfig, Ec2Config) {
    let ec2 = Ec2Config {
        region: common::moto::REGION.into(),
        launch_template: None,
        image_id: Some(IMAGE.into()),
        instance_type: Some("t3.micro".into()),
        subnet_id: subnet.map(str::to_string),
        security_group_ids: Vec::new(),
        instance_profile: None,
        market,
        user_data: None,
        token: TokenSource::SsmParameter("/drover/worker-token".into()),
    };
    let pool = PoolConfig {
        name: name.into(),
        min: 0,
        max: 4,
        slots: 2,
        labels: vec!["gpu".into()],
        idle_timeout: Duration::from_secs(60),
        boot_timeout: Duration::from_secs(300),
        max_launches_per_minute: 10,
        provider: ProviderConfig::Ec2(Box::new(ec2.clone())),
    };
    (pool, ec2)
}

fn request(pool: &PoolConfig, cluster: &str, count: u32) -> LaunchRequest {
    LaunchRequest {
        pool: Arc::new(pool.clone()),
        count,
        cluster: cluster.into(),
        coordinator: "10.0.0.5:7700".into(),
    }
}

fn tag<'a>(instance: &'a aws_sdk_ec2::types::Instance, key: &str) -> Option<&'a str> {
    instance
        .tags()
        .iter()
        .find(|tag| tag.key() == Some(key))
        .and_then(|tag| tag.value())
}

fn ids(machines: &[drover::fleet::Machine]) -> BTreeSet<String> {
    machines.iter().map(|machine| machine.id.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_are_launched_tagged_with_the_pools_user_data() {
    let moto = Moto::start().await;
    let (pool, ec2) = ec2_pool("gpu", Market::Spot, None);
    let provider = Ec2Provider::with_sdk_config(&pool, &ec2, None, moto.sdk_config());
    let launched = provider
        .launch(request(&pool, "ledger-a", 2))
        .await
        .unwrap();
    // moto starts MinCount (1) of them; EC2 as many as it can up to MaxCount.
    assert!((1..=2).contains(&launched.len()), "{launched:?}");
    for machine in &launched {
        let instance = moto.instance(&machine.id).await;
        assert!(alive(&instance));
        assert_eq!(tag(&instance, CLUSTER_TAG), Some("ledger-a"));
        assert_eq!(tag(&instance, POOL_TAG), Some("gpu"));
        assert_eq!(tag(&instance, "Name"), Some("drover-gpu"));
        assert!(machine.launched_at_ms > 0);
        let attribute = moto
            .client()
            .describe_instance_attribute()
            .instance_id(&machine.id)
            .attribute(aws_sdk_ec2::types::InstanceAttributeName::UserData)
            .send()
            .await
            .unwrap();
        let encoded = attribute.user_data().and_then(|data| data.value()).unwrap();
        use base64::Engine;
        let script = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap();
        let script = String::from_utf8(script).unwrap();
        assert!(
            script.contains("drover-worker --coordinator 10.0.0.5:7700 --pool gpu --slots 2"),
            "{script}"
        );
        assert!(script.contains("labels=gpu\n"), "{script}");
        assert!(script.contains("--setenv=DROVER_SPOT_INTERRUPTIONS=true"));
        assert!(script.contains(
            "aws ssm get-parameter --region us-east-1 --name /drover/worker-token \
             --with-decryption"
        ));
        assert!(script.contains("--worker-token-file \"$DROVER_WORKER_TOKEN_FILE\""));
    }
    // The volumes carry the tags too (moto gives each instance one).
    let volumes = moto
        .client()
        .describe_volumes()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name(format!("tag:{CLUSTER_TAG}"))
                .values("ledger-a")
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(volumes.volumes().len(), launched.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_provider_lists_and_terminates_only_its_own_clusters_and_pools_instances() {
    let moto = Moto::start().await;
    let (pool, ec2) = ec2_pool("gpu", Market::OnDemand, None);
    let provider = Ec2Provider::with_sdk_config(&pool, &ec2, None, moto.sdk_config());
    assert!(provider.list("ledger-a", "gpu").await.unwrap().is_empty());
    let mut ours = provider
        .launch(request(&pool, "ledger-a", 1))
        .await
        .unwrap();
    ours.extend(
        provider
            .launch(request(&pool, "ledger-a", 1))
            .await
            .unwrap(),
    );
    assert_eq!(ours.len(), 2);
    let untagged = moto.run_instance(&[]).await;
    let other_cluster = moto
        .run_instance(&[(CLUSTER_TAG, "ledger-b"), (POOL_TAG, "gpu")])
        .await;
    let other_pool = moto
        .run_instance(&[(CLUSTER_TAG, "ledger-a"), (POOL_TAG, "cpu")])
        .await;
    let listed = provider.list("ledger-a", "gpu").await.unwrap();
    assert_eq!(ids(&listed), ids(&ours), "only this cluster's and pool's");

    let refused = provider
        .terminate(
            "gpu",
            vec![
                untagged.clone(),
                other_cluster.clone(),
                other_pool.clone(),
                ours[0].id.clone(),
            ],
        )
        .await
        .unwrap_err();
    for id in [&untagged, &other_cluster, &other_pool] {
        assert!(refused.message.contains(id.as_str()), "{refused}");
        assert!(alive(&moto.instance(id).await), "{id} was not ours to stop");
    }
    assert!(refused.message.contains("not tagged"), "{refused}");
    assert!(
        !alive(&moto.instance(&ours[0].id).await),
        "ours was stopped"
    );

    // Instances already gone (or never known) are no error.
    provider
        .terminate(
            "gpu",
            vec![ours[0].id.clone(), "i-0123456789abcdef0".to_string()],
        )
        .await
        .unwrap();
    let listed = provider.list("ledger-a", "gpu").await.unwrap();
    assert_eq!(ids(&listed), ids(&ours[1..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_fenced_by_a_lease_that_lapsed_sends_ec2_nothing() {
    let moto = Moto::start().await;
    let (pool, ec2) = ec2_pool("gpu", Market::OnDemand, None);
    let lease = LeaseClock::until(std::time::Instant::now() + Duration::from_secs(60));
    let provider =
        Ec2Provider::with_sdk_config(&pool, &ec2, None, moto.sdk_config()).fenced_by(lease.clone());
    // Under the lease, as any provider.
    let launched = provider
        .launch(request(&pool, "ledger-a", 1))
        .await
        .unwrap();
    assert_eq!(
        ids(&provider.list("ledger-a", "gpu").await.unwrap()),
        ids(&launched)
    );

    // The lease lapses (a standby took it, say): neither a launch nor a termination is sent.
    lease.end();
    let refused = provider
        .launch(request(&pool, "ledger-a", 1))
        .await
        .unwrap_err();
    assert!(
        refused.message.contains("does not hold the ledger's lease"),
        "{refused}"
    );
    let refused = provider
        .terminate("gpu", vec![launched[0].id.clone()])
        .await
        .unwrap_err();
    assert!(
        refused.message.contains("does not hold the ledger's lease"),
        "{refused}"
    );
    let tagged = moto.instances_tagged(CLUSTER_TAG, "ledger-a").await;
    assert_eq!(tagged.len(), 1, "no second RunInstances");
    assert!(alive(&tagged[0]), "no TerminateInstances");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ec2s_refusals_and_an_unreachable_endpoint_read_as_one_line() {
    let moto = Moto::start().await;
    let (pool, ec2) = ec2_pool("gpu", Market::OnDemand, Some("subnet-0000dead"));
    let provider = Ec2Provider::with_sdk_config(&pool, &ec2, None, moto.sdk_config());
    let refused = provider
        .launch(request(&pool, "ledger-a", 1))
        .await
        .unwrap_err();
    assert!(
        refused.message.starts_with("InvalidSubnetID.NotFound: "),
        "{refused}"
    );
    assert!(!refused.message.contains('\n'));
    // Before anything was listed or launched, the provider cannot tell its instances.
    let fresh = Ec2Provider::with_sdk_config(&pool, &ec2, None, moto.sdk_config());
    let unsure = fresh
        .terminate("gpu", vec!["i-0123456789abcdef0".into()])
        .await
        .unwrap_err();
    assert!(unsure.message.contains("refused to terminate"), "{unsure}");

    let endpoint = moto.endpoint.clone();
    let config = moto.sdk_config();
    drop(moto);
    let gone = Ec2Provider::with_sdk_config(&pool, &ec2, None, config);
    let unreachable = gone.list("ledger-a", "gpu").await.unwrap_err();
    assert!(
        unreachable
            .message
            .starts_with(&format!("cannot reach EC2 at {endpoint}: ")),
        "{unreachable}"
    );
}

/// A job that runs until the test writes `$OUT/go`.
fn held_job() -> JobSpec {
    JobSpec::exec([
        "sh",
        "-c",
        "while [ ! -e \"$OUT/go\" ]; do sleep 0.05; done",
    ])
}

/// A worker watching `imds` for spot interruption notices, once it has asked at least once.
async fn spot_worker(cluster: &mut Cluster, imds: &Imds, name: &str) {
    cluster.start_worker_with_env(
        name,
        1,
        &["--spot-interruptions"],
        &[("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.endpoint.as_str())],
    );
    cluster.wait_for_workers(1).await;
    wait_for(
        Duration::from_secs(10),
        "the first look for a notice",
        || async { (imds.polls() > 0).then_some(()) },
    )
    .await;
}

async fn wait_draining(cluster: &Cluster, name: &str) {
    wait_for(Duration::from_secs(20), "the worker to drain", || async {
        let workers = cluster.try_client().await?.workers().await.ok()?;
        workers
            .iter()
            .any(|worker| worker.name == name && worker.state == "draining")
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spot_interruption_notice_drains_the_worker_as_sigterm_does() {
    let imds = Imds::start().await;
    let mut cluster = Cluster::start(&[]).await;
    spot_worker(&mut cluster, &imds, "spot").await;
    let mut client = cluster.client().await;
    let submitted = client
        .submit("spot", vec![held_job(), JobSpec::exec(["true"])])
        .await
        .unwrap();
    wait_running(&mut client, submitted.first_job, Duration::from_secs(30)).await;
    imds.give_notice();
    wait_draining(&cluster, "spot").await;
    std::fs::write(cluster.out_dir().join("go"), "").unwrap();
    let status = cluster
        .wait_worker_exit("spot", Duration::from_secs(30))
        .await;
    assert!(status.success(), "drained and gone: {status:?}");
    let first = client.job(submitted.first_job).await.unwrap();
    assert_eq!(first.state, JobState::Succeeded, "the running job finished");
    let second = client.job(submitted.first_job + 1).await.unwrap();
    assert_eq!(second.state, JobState::Pending, "nothing new was taken");
    assert!(cluster
        .worker_log("spot")
        .contains("spot interruption notice: draining"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jobs_of_a_spot_worker_that_goes_while_draining_are_requeued_at_once() {
    let imds = Imds::start().await;
    // Silence alone would take a minute to count: only the closed connection can be quick.
    let mut cluster = Cluster::start(&["--heartbeat-timeout", "60s"]).await;
    spot_worker(&mut cluster, &imds, "spot").await;
    let mut client = cluster.client().await;
    let submitted = client.submit("spot", vec![held_job()]).await.unwrap();
    wait_running(&mut client, submitted.first_job, Duration::from_secs(30)).await;
    imds.give_notice();
    wait_draining(&cluster, "spot").await;
    // The instance is taken back with the job still running.
    cluster.signal_worker("spot", libc::SIGKILL);
    cluster.start_worker("steady", 1, &[]);
    let requeued = cluster
        .wait_for_job(submitted.first_job, "the job on another worker", |job| {
            job.state == JobState::Running && job.worker.as_deref() == Some("steady")
        })
        .await;
    assert_eq!(requeued.attempts, 2);
    std::fs::write(cluster.out_dir().join("go"), "").unwrap();
    let done = cluster
        .wait_for_job(submitted.first_job, "the job to finish", |job| {
            job.state.is_terminal()
        })
        .await;
    assert_eq!(done.state, JobState::Succeeded);
}

/// A coordinator whose `drover.toml` has one ec2 pool named `gpu` (with these lines) on moto.
async fn ec2_fleet(moto: &Moto, pool_lines: &str) -> Cluster {
    ec2_fleet_through(moto, &moto.endpoint, pool_lines).await
}

/// The same, with EC2's requests sent to `endpoint`, which relays them to moto.
async fn ec2_fleet_through(moto: &Moto, endpoint: &str, pool_lines: &str) -> Cluster {
    let mut cluster = Cluster::new(&[]);
    let env = gpu_pool_env(moto, endpoint, cluster.dir.path(), pool_lines);
    cluster.coordinator_env.extend(env);
    cluster.start_coordinator().await;
    cluster
}

/// `count` coordinators of one PostgreSQL ledger (`database`'s `drover`), their logs in `dir`,
/// each with the same pool `gpu` (with these lines) on moto; none started.
fn ec2_coordinators(
    moto: &Moto,
    database: &PgServer,
    dir: &std::path::Path,
    count: usize,
    pool_lines: &str,
) -> Coordinators {
    let mut coordinators = Coordinators::on_loopback(dir, &database.url("drover"), count);
    let env = gpu_pool_env(moto, &moto.endpoint, dir, pool_lines);
    coordinators.env.extend(env);
    coordinators
}

/// The environment of a coordinator whose `drover.toml` (written in `dir`) has one ec2 pool
/// named `gpu` (with these lines), its EC2 requests sent to `endpoint`.
fn gpu_pool_env(
    moto: &Moto,
    endpoint: &str,
    dir: &std::path::Path,
    pool_lines: &str,
) -> Vec<(String, String)> {
    let config = format!(
        "[[pool]]\nname = \"gpu\"\nprovider = \"ec2\"\n{pool_lines}\n[pool.ec2]\n\
         region = \"{}\"\nimage_id = \"{IMAGE}\"\ninstance_type = \"t3.micro\"\n\
         worker_token_parameter = \"/drover/worker-token\"\n",
        common::moto::REGION
    );
    let path = dir.join("drover.toml");
    std::fs::write(&path, config).unwrap();
    let mut env = vec![("DROVER_CONFIG".to_string(), path.display().to_string())];
    env.extend(moto.env());
    env.push(("AWS_ENDPOINT_URL".into(), endpoint.into()));
    env
}

/// The cluster's id, which its machines are tagged with.
async fn ledger_of(cluster: &Cluster) -> String {
    cluster.client().await.status().await.unwrap().stats.ledger
}

/// The pool as the coordinator's Fleet counts it (`drover pools`).
async fn pool_info(cluster: &Cluster) -> Option<PoolInfo> {
    let mut client = cluster.try_client().await?;
    match client.request(ClientRequest::Pools).await.ok()? {
        ClientResponse::Pools(pools) => pools.into_iter().find(|pool| pool.name == "gpu"),
        other => panic!("not an answer about pools: {other:?}"),
    }
}

async fn wait_pool(cluster: &Cluster, what: &str, done: impl Fn(&PoolInfo) -> bool) -> PoolInfo {
    let done = &done;
    wait_for(Duration::from_secs(30), what, || async move {
        pool_info(cluster).await.filter(|pool| done(pool))
    })
    .await
}

/// The ids of the cluster's instances in moto, and of those alive (pending or running).
async fn instances(moto: &Moto, ledger: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let tagged = moto.instances_tagged(CLUSTER_TAG, ledger).await;
    let id = |instance: &aws_sdk_ec2::types::Instance| instance.instance_id().unwrap().to_string();
    (
        tagged.iter().map(id).collect(),
        tagged
            .iter()
            .filter(|instance| alive(instance))
            .map(id)
            .collect(),
    )
}

async fn wait_alive(moto: &Moto, ledger: &str, count: usize) -> BTreeSet<String> {
    wait_for(Duration::from_secs(30), "the fleet's instances", || async {
        let (_, alive) = instances(moto, ledger).await;
        (alive.len() == count).then_some(alive)
    })
    .await
}

/// A worker standing in for an instance's: named after it, with the instance id as its
/// machine id, as the built-in user data starts it.
fn instance_worker(cluster: &mut Cluster, instance: &str) {
    cluster.start_worker(instance, 1, &["--pool", "gpu", "--machine-id", instance]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_that_never_register_are_terminated_at_the_boot_timeout_and_counted_failed() {
    let moto = Moto::start().await;
    let cluster = ec2_fleet(
        &moto,
        "max = 1\nboot_timeout = \"1s\"\nmax_launches_per_minute = 2",
    )
    .await;
    let ledger = ledger_of(&cluster).await;
    let mut client = cluster.client().await;
    client
        .submit("waits", vec![JobSpec::exec(["true"])])
        .await
        .unwrap();
    // moto's instances run no worker: each launch fails at the boot timeout, and the cap of
    // two a minute stops the launches.
    let failed = wait_pool(&cluster, "two failed launches", |pool| {
        pool.failed_launches == 2 && pool.terminated == 2 && pool.booting == 0
    })
    .await;
    assert_eq!(failed.launched, 2, "{failed:?}");
    let error = failed.last_error.unwrap_or_default();
    assert!(
        error.contains("did not register within the boot timeout (1s); terminated"),
        "{error}"
    );
    let (all, alive) = instances(&moto, &ledger).await;
    assert_eq!(all.len(), 2, "two RunInstances, no more");
    assert!(alive.is_empty(), "both terminated in EC2: {alive:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_coordinator_adopts_its_instances_and_launches_none() {
    let moto = Moto::start().await;
    let mut cluster = ec2_fleet(&moto, "min = 2\nmax = 2\nboot_timeout = \"60s\"").await;
    let ledger = ledger_of(&cluster).await;
    let launched = wait_alive(&moto, &ledger, 2).await;
    cluster.restart_coordinator(Duration::ZERO).await;
    wait_for(Duration::from_secs(30), "the adoption", || async {
        cluster
            .coordinator_log()
            .contains("adopted the pool's machines left running")
            .then_some(())
    })
    .await;
    // The adopted instances' workers register (late, as after a restart) and are counted.
    for instance in &launched {
        instance_worker(&mut cluster, instance);
    }
    let adopted = wait_pool(&cluster, "both workers counted", |pool| pool.idle == 2).await;
    assert_eq!((adopted.launched, adopted.booting), (0, 0), "{adopted:?}");
    let (all, alive) = instances(&moto, &ledger).await;
    assert_eq!(all, launched, "no RunInstances after the restart");
    assert_eq!(alive, launched);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_idle_instance_is_terminated_never_the_one_running_a_job() {
    let moto = Moto::start().await;
    let mut cluster = ec2_fleet(
        &moto,
        "max = 2\nidle_timeout = \"1s\"\nboot_timeout = \"60s\"",
    )
    .await;
    let ledger = ledger_of(&cluster).await;
    let mut client = cluster.client().await;
    let submitted = client
        .submit("two", vec![held_job(), JobSpec::exec(["true"])])
        .await
        .unwrap();
    let launched = wait_alive(&moto, &ledger, 2).await;
    for instance in &launched {
        instance_worker(&mut cluster, instance);
    }
    let held = wait_running(&mut client, submitted.first_job, Duration::from_secs(30)).await;
    let busy = held.worker.clone().unwrap();
    let idle = launched.iter().find(|id| **id != busy).unwrap().clone();
    // The idle one drains and its instance goes; the busy one's stays while its job runs.
    wait_for(
        Duration::from_secs(30),
        "the idle instance terminated",
        || async {
            let job = cluster
                .try_client()
                .await?
                .job(submitted.first_job)
                .await
                .ok()?;
            assert_eq!(job.state, JobState::Running);
            assert!(alive(&moto.instance(&busy).await), "terminated under a job");
            (!alive(&moto.instance(&idle).await)).then_some(())
        },
    )
    .await;
    let status = cluster
        .wait_worker_exit(&idle, Duration::from_secs(10))
        .await;
    assert!(status.success(), "the idle worker drained: {status:?}");
    let job = client.job(submitted.first_job).await.unwrap();
    assert_eq!(job.state, JobState::Running);
    assert!(alive(&moto.instance(&busy).await));

    // Its job done, the busy one is idle in turn, and goes.
    std::fs::write(cluster.out_dir().join("go"), "").unwrap();
    wait_for(
        Duration::from_secs(30),
        "the other instance terminated",
        || async { (!alive(&moto.instance(&busy).await)).then_some(()) },
    )
    .await;
    let job = client.job(submitted.first_job).await.unwrap();
    assert_eq!((job.state, job.attempts), (JobState::Succeeded, 1));
    let pool = wait_pool(&cluster, "the pool empty", |pool| {
        pool.idle + pool.busy == 0
    })
    .await;
    assert_eq!(pool.terminated, 2, "{pool:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_of_a_launch_whose_answer_was_lost_are_found_and_terminated_not_leaked() {
    let moto = Moto::start().await;
    // EC2 starts the instances, but the answers to the first three RunInstances (the SDK's
    // retries of one call) never reach the coordinator.
    let relay = LostAnswers::start(
        &moto.endpoint,
        "Action=RunInstances",
        "</RunInstancesResponse>",
        3,
    )
    .await;
    let cluster = ec2_fleet_through(
        &moto,
        &relay.endpoint,
        "max = 1\nboot_timeout = \"2s\"\nmax_launches_per_minute = 10",
    )
    .await;
    let ledger = ledger_of(&cluster).await;
    let mut client = cluster.client().await;
    client
        .submit("waits", vec![JobSpec::exec(["true"])])
        .await
        .unwrap();
    let failed = wait_pool(&cluster, "a launch whose answer was lost", |pool| {
        pool.failed_launches > 0
    })
    .await;
    let error = failed.last_error.unwrap_or_default();
    assert!(error.starts_with("launch failed: "), "{error}");
    // The instances EC2 started for the lost answers: each is found and, as no worker of it
    // registers, terminated at the boot timeout.
    let lost: BTreeSet<String> =
        wait_for(Duration::from_secs(60), "three lost answers", || async {
            let answers = relay.lost();
            (answers.len() == 3).then_some(answers)
        })
        .await
        .iter()
        .flat_map(|answer| answer.split("<instanceId>").skip(1))
        .filter_map(|rest| rest.split('<').next())
        .map(str::to_string)
        .collect();
    assert!(!lost.is_empty(), "moto answered with instances");
    let (all, _) = instances(&moto, &ledger).await;
    assert!(lost.is_subset(&all), "{lost:?} tagged: {all:?}");
    wait_for(
        Duration::from_secs(60),
        "the lost launches' instances terminated",
        || async {
            let (_, alive) = instances(&moto, &ledger).await;
            alive.is_disjoint(&lost).then_some(())
        },
    )
    .await;
    assert!(
        cluster.coordinator_log().contains("had no record of"),
        "the adoption is logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_frozen_past_its_lease_terminates_nothing_of_its_successors_when_thawed() {
    let moto = Moto::start().await;
    let database = PgServer::start();
    database.create_database("drover");
    let dir = tempfile::tempdir().unwrap();
    // One machine, and a boot timeout that passes while the leader is frozen, not before the
    // successor has adopted the machine and seen its worker.
    let pool = "min = 1\nmax = 1\nboot_timeout = \"6s\"";
    let mut coordinators = ec2_coordinators(&moto, &database, dir.path(), 2, pool);
    coordinators.start(0).await;
    let leader = coordinators.wait_leader(&[], Duration::from_secs(30)).await;
    coordinators.start(1).await;
    let successor = 1 - leader;
    let mut workers = coordinators.cluster();
    let ledger = ledger_of(&workers).await;
    let launched = wait_alive(&moto, &ledger, 1).await;
    let instance = launched.first().unwrap().clone();
    // The leader has the launch's answer (the machine's boot timeout counts from it).
    wait_for(Duration::from_secs(30), "the launch's answer", || async {
        coordinators
            .log(leader)
            .contains("fleet::pool: launched")
            .then_some(())
    })
    .await;

    // Frozen with the machine booting; the standby takes the lease and adopts the machine,
    // whose worker registers there.
    coordinators.signal(leader, libc::SIGSTOP);
    let frozen = std::time::Instant::now();
    wait_for(
        Duration::from_secs(30),
        "the successor's adoption",
        || async {
            coordinators
                .log(successor)
                .contains("adopted the pool's machines left running")
                .then_some(())
        },
    )
    .await;
    let successor_address = coordinators.members[successor].address.clone();
    workers.start_worker_at(
        &successor_address,
        &instance,
        1,
        &["--pool", "gpu", "--machine-id", &instance],
    );
    let mut at_successor = coordinators.cluster();
    at_successor.address = successor_address;
    wait_pool(&at_successor, "the adopted machine's worker", |pool| {
        pool.idle == 1
    })
    .await;

    // Thawed past its boot timeout: to the old leader, the machine never registered. It must
    // learn that it no longer leads before it acts on that.
    let past_boot = Duration::from_secs(7).saturating_sub(frozen.elapsed());
    tokio::time::sleep(past_boot).await;
    coordinators.signal(leader, libc::SIGCONT);
    let exited = coordinators
        .wait_exit(leader, Duration::from_secs(30))
        .await
        .unwrap_or_else(|| {
            panic!(
                "the old leader did not step down:\n{}",
                coordinators.log_tails(30)
            )
        });
    assert_eq!(exited.code(), Some(3), "{}", coordinators.log(leader));
    let (all, alive) = instances(&moto, &ledger).await;
    assert_eq!(all, launched, "no launch after the first");
    assert_eq!(
        alive,
        launched,
        "the adopted machine lives:\n{}",
        coordinators.log(leader)
    );
    let pool = wait_pool(&at_successor, "the pool at the successor", |_| true).await;
    assert_eq!((pool.idle, pool.terminated), (1, 0), "{pool:?}");
    // Not by luck (the word of its deposition racing its termination): thawed without its
    // lease, it decided nothing about the machine at all.
    let old_leader = coordinators.log(leader);
    assert!(
        !old_leader.contains("did not register within the boot timeout"),
        "the old leader judged the machine without its lease:\n{old_leader}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_longer_than_a_boot_timeout_stops_that_timeout_with_it() {
    let moto = Moto::start().await;
    let mut database = PgServer::start();
    database.create_database("drover");
    let dir = tempfile::tempdir().unwrap();
    let pool = "min = 1\nmax = 1\nboot_timeout = \"8s\"";
    let mut coordinators = ec2_coordinators(&moto, &database, dir.path(), 1, pool);
    coordinators.start(0).await;
    coordinators.wait_leader(&[], Duration::from_secs(30)).await;
    let mut workers = coordinators.cluster();
    let ledger = ledger_of(&workers).await;
    let launched = wait_alive(&moto, &ledger, 1).await;
    let instance = launched.first().unwrap().clone();
    let log_says = |what: &'static str| {
        let coordinators = &coordinators;
        wait_for(Duration::from_secs(30), what, move || async move {
            coordinators.log(0).contains(what).then_some(())
        })
    };
    log_says("fleet::pool: launched").await;
    let booting_since = std::time::Instant::now();

    // The database goes away for longer than the machine's boot timeout: the lease is not
    // renewed, and the fleet waits, watching nothing.
    database.stop();
    log_says("the fleet launches and terminates nothing until it is").await;
    tokio::time::sleep(Duration::from_secs(10).saturating_sub(booting_since.elapsed())).await;
    database.restart();
    log_says("the fleet acts again").await;

    // The machine's worker registers only now, within the boot time the machine had left.
    workers.start_worker(&instance, 1, &["--pool", "gpu", "--machine-id", &instance]);
    let pool = wait_pool(&workers, "the machine's worker", |pool| pool.idle == 1).await;
    assert_eq!(
        (pool.terminated, pool.failed_launches),
        (0, 0),
        "{pool:?}\n{}",
        coordinators.log(0)
    );
    let (all, alive) = instances(&moto, &ledger).await;
    assert_eq!(all, launched, "no launch after the first");
    assert_eq!(alive, launched, "the machine lives");
}
