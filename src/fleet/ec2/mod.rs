//! The `ec2` provider: each machine is an EC2 instance, through aws-sdk-ec2 on the same stack
//! as the workers' S3 client (the standard credential chain, the rustls HTTP client,
//! `AWS_ENDPOINT_URL` or `AWS_ENDPOINT_URL_EC2` for EC2-compatible endpoints).
//!
//! Every instance is tagged `drover:cluster` (the ledger's id), `drover:pool` and `Name`
//! (`drover-<pool>`) when it is launched, its volumes too. Listing finds the live instances with
//! both tags; terminating checks both tags first and refuses any instance without them, so the
//! coordinator never stops a machine it did not launch.

mod errors;
pub mod user_data;

use super::config::{Ec2Config, Market, PoolConfig, TokenSource};
use super::provider::{LaunchRequest, Machine, Provider, ProviderError, ProviderFuture};
use crate::ha::LeaseClock;
use crate::net::auth::Secret;
use aws_sdk_ec2::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_ec2::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_ec2::error::BoxError;
use aws_sdk_ec2::operation::run_instances::builders::RunInstancesFluentBuilder;
use aws_sdk_ec2::types::{
    Filter, HttpTokensState, IamInstanceProfileSpecification, Instance,
    InstanceInterruptionBehavior, InstanceMarketOptionsRequest, InstanceMetadataOptionsRequest,
    InstanceStateName, InstanceType, LaunchTemplateSpecification, MarketType, ResourceType,
    SpotInstanceType, SpotMarketOptions, Tag, TagSpecification,
};
use base64::Engine;
use std::sync::{Arc, Mutex};
use tokio::sync::OnceCell;

/// The tag naming the cluster (the ledger's id) an instance works for.
pub const CLUSTER_TAG: &str = "drover:cluster";
/// The tag naming its pool.
pub const POOL_TAG: &str = "drover:pool";
/// Instance ids per DescribeInstances or TerminateInstances request.
const IDS_PER_REQUEST: usize = 100;
/// The longest one call to EC2 may take, its retries included.
const CALL_DEADLINE: std::time::Duration = std::time::Duration::from_secs(120);

/// Starts and stops one pool's EC2 instances.
pub struct Ec2Provider {
    inner: Arc<Inner>,
}

struct Inner {
    pool: String,
    config: Ec2Config,
    /// The worker token, kept only when it goes in user data (`worker_token_in_user_data`).
    token_for_user_data: Option<Secret>,
    /// The AWS configuration given by a library user, else read the standard way.
    sdk_config: Option<aws_config::SdkConfig>,
    /// Made on first use: reading the AWS configuration is async.
    client: OnceCell<Client>,
    /// The cluster this provider works for, learnt from the first launch or list (the Fleet
    /// lists before anything else): terminate checks instances against it.
    cluster: Mutex<Option<String>>,
    /// The lease of the coordinator whose Fleet this provider serves: no request goes to EC2
    /// while it does not hold ([`LeaseFence`]).
    fence: Option<LeaseClock>,
}

/// A client, and where its requests go in words (for messages).
struct Client {
    ec2: aws_sdk_ec2::Client,
    reach: String,
}

impl Ec2Provider {
    /// The provider of `pool`'s instances; `worker_secret` is written into user data only when
    /// the pool says so (and then a warning is logged).
    pub fn new(pool: &PoolConfig, config: &Ec2Config, worker_secret: Option<&Secret>) -> Self {
        Self::build(pool, config, worker_secret, None)
    }

    /// The same, on a ready AWS configuration (credentials, endpoint, HTTP client) rather than
    /// the standard one (environment, profile, instance role); the pool's region and a deadline
    /// per call still apply.
    pub fn with_sdk_config(
        pool: &PoolConfig,
        config: &Ec2Config,
        worker_secret: Option<&Secret>,
        sdk_config: aws_config::SdkConfig,
    ) -> Self {
        Self::build(pool, config, worker_secret, Some(sdk_config))
    }

    fn build(
        pool: &PoolConfig,
        config: &Ec2Config,
        worker_secret: Option<&Secret>,
        sdk_config: Option<aws_config::SdkConfig>,
    ) -> Self {
        let token_for_user_data = match config.token {
            TokenSource::InUserData => {
                tracing::warn!(
                    pool = %pool.name,
                    "the worker token is written into the instances' user data \
                     (worker_token_in_user_data = true): anyone allowed to describe them can \
                     read it; an SSM parameter keeps it secret"
                );
                worker_secret.cloned()
            }
            TokenSource::SsmParameter(_) | TokenSource::File(_) => None,
        };
        Ec2Provider {
            inner: Arc::new(Inner {
                pool: pool.name.clone(),
                config: config.clone(),
                token_for_user_data,
                sdk_config,
                client: OnceCell::new(),
                cluster: Mutex::new(None),
                fence: None,
            }),
        }
    }

    /// The same, sending nothing to EC2 unless `lease` holds at the moment each request (and
    /// each retry of it) goes out: a coordinator frozen in the middle of a launch or a
    /// termination, and thawed after another took its lease, does not finish it. Called on a
    /// provider just made, before its first request (whose future would share it).
    pub fn fenced_by(mut self, lease: LeaseClock) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.fence = Some(lease);
        }
        self
    }
}

/// Refuses each request to EC2, just before it is sent, unless the lease holds.
#[derive(Debug)]
struct LeaseFence(LeaseClock);

impl Intercept for LeaseFence {
    fn name(&self) -> &'static str {
        "LeaseFence"
    }

    fn read_before_transmit(
        &self,
        _: &BeforeTransmitInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if self.0.is_valid() {
            Ok(())
        } else {
            Err(NOT_LEADING.into())
        }
    }
}

/// What a request refused by the [`LeaseFence`] fails with.
const NOT_LEADING: &str =
    "not sent: this coordinator does not hold the ledger's lease (another may lead)";

impl Provider for Ec2Provider {
    fn launch(&self, request: LaunchRequest) -> ProviderFuture<Vec<Machine>> {
        let inner = self.inner.clone();
        Box::pin(async move { inner.launch(request).await })
    }

    fn terminate(&self, pool: &str, machines: Vec<String>) -> ProviderFuture<()> {
        let inner = self.inner.clone();
        let pool = pool.to_string();
        Box::pin(async move { inner.terminate(&pool, machines).await })
    }

    fn list(&self, cluster: &str, pool: &str) -> ProviderFuture<Vec<Machine>> {
        let inner = self.inner.clone();
        let (cluster, pool) = (cluster.to_string(), pool.to_string());
        Box::pin(async move {
            inner.remember(&cluster);
            let client = inner.client().await;
            let filters = vec![
                tag_filter(CLUSTER_TAG, &cluster),
                tag_filter(POOL_TAG, &pool),
                Filter::builder()
                    .name("instance-state-name")
                    .values("pending")
                    .values("running")
                    .build(),
            ];
            let instances = client.describe(filters).await?;
            Ok(instances.iter().filter_map(machine).collect())
        })
    }
}

impl Inner {
    async fn client(&self) -> &Client {
        self.client
            .get_or_init(|| async {
                let region = aws_config::Region::new(self.config.region.clone());
                let shared = match &self.sdk_config {
                    Some(given) => given.clone(),
                    None => {
                        aws_config::defaults(aws_config::BehaviorVersion::latest())
                            .http_client(crate::aws::http_client())
                            .region(region.clone())
                            .retry_config(
                                aws_config::retry::RetryConfig::standard().with_max_attempts(3),
                            )
                            .load()
                            .await
                    }
                };
                let endpoint = std::env::var("AWS_ENDPOINT_URL_EC2")
                    .ok()
                    .or_else(|| shared.endpoint_url().map(str::to_string))
                    .filter(|endpoint| !endpoint.is_empty());
                let reach = match endpoint {
                    Some(endpoint) => format!("EC2 at {endpoint}"),
                    None => format!("EC2 in {}", self.config.region),
                };
                // A call that never ends would hold its launch (or termination) for ever.
                let timeouts = shared
                    .timeout_config()
                    .map(|given| given.to_builder())
                    .unwrap_or_default()
                    .operation_timeout(CALL_DEADLINE)
                    .build();
                let mut builder = aws_sdk_ec2::config::Builder::from(&shared)
                    .region(region)
                    .timeout_config(timeouts);
                if let Some(lease) = &self.fence {
                    builder = builder.interceptor(LeaseFence(lease.clone()));
                }
                let ec2 = aws_sdk_ec2::Client::from_conf(builder.build());
                tracing::info!(pool = %self.pool, endpoint = %reach, "ec2 client ready");
                Client { ec2, reach }
            })
            .await
    }

    fn remember(&self, cluster: &str) {
        *self
            .cluster
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(cluster.to_string());
    }

    fn cluster(&self) -> Option<String> {
        self.cluster
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    async fn launch(&self, request: LaunchRequest) -> Result<Vec<Machine>, ProviderError> {
        self.remember(&request.cluster);
        if request.count == 0 {
            return Ok(Vec::new());
        }
        let pool = &request.pool;
        let token = self
            .token_for_user_data
            .as_ref()
            .map(|secret| String::from_utf8_lossy(secret.as_bytes()).into_owned());
        let script = user_data::render(pool, &self.config, &request.coordinator, token.as_deref())
            .map_err(ProviderError::new)?;
        let client = self.client().await;
        let launched = self
            .run_instances(&client.ec2, &request, script)
            .send()
            .await
            .map_err(|error| errors::describe(&error, &client.reach))?;
        let machines: Vec<Machine> = launched.instances().iter().filter_map(machine).collect();
        tracing::debug!(
            pool = %pool.name,
            asked = request.count,
            launched = machines.len(),
            instances = %ids(&machines),
            "ec2 instances launched"
        );
        Ok(machines)
    }

    /// The RunInstances request for `request`, with this user data.
    fn run_instances(
        &self,
        ec2: &aws_sdk_ec2::Client,
        request: &LaunchRequest,
        script: String,
    ) -> RunInstancesFluentBuilder {
        let pool = &request.pool;
        let tags = [
            tag(CLUSTER_TAG, &request.cluster),
            tag(POOL_TAG, &pool.name),
            tag("Name", &format!("drover-{}", pool.name)),
        ];
        let tagged = |resource: ResourceType| {
            TagSpecification::builder()
                .resource_type(resource)
                .set_tags(Some(tags.to_vec()))
                .build()
        };
        let config = &self.config;
        let mut run = ec2
            .run_instances()
            .min_count(1)
            .max_count(i32::try_from(request.count).unwrap_or(i32::MAX))
            // The SDK retries what failed on the way: the same token makes a retry launch
            // nothing twice.
            .client_token(format!("drover-{:032x}", rand::random::<u128>()))
            .user_data(base64::engine::general_purpose::STANDARD.encode(script))
            .tag_specifications(tagged(ResourceType::Instance))
            .tag_specifications(tagged(ResourceType::Volume))
            .set_image_id(config.image_id.clone())
            .set_instance_type(config.instance_type.as_deref().map(InstanceType::from))
            .set_subnet_id(config.subnet_id.clone());
        if !config.security_group_ids.is_empty() {
            run = run.set_security_group_ids(Some(config.security_group_ids.clone()));
        }
        match &config.launch_template {
            Some(template) => {
                let template = if template.starts_with("lt-") {
                    LaunchTemplateSpecification::builder().launch_template_id(template)
                } else {
                    LaunchTemplateSpecification::builder().launch_template_name(template)
                };
                run = run.launch_template(template.build());
            }
            // The worker and its template read the metadata with IMDSv2; v1 is left off, as a
            // launch template would say for itself.
            None => {
                run = run.metadata_options(
                    InstanceMetadataOptionsRequest::builder()
                        .http_tokens(HttpTokensState::Required)
                        .build(),
                )
            }
        }
        if let Some(profile) = &config.instance_profile {
            let profile = if profile.starts_with("arn:") {
                IamInstanceProfileSpecification::builder().arn(profile)
            } else {
                IamInstanceProfileSpecification::builder().name(profile)
            };
            run = run.iam_instance_profile(profile.build());
        }
        if config.market == Market::Spot {
            run = run.instance_market_options(
                InstanceMarketOptionsRequest::builder()
                    .market_type(MarketType::Spot)
                    .spot_options(
                        SpotMarketOptions::builder()
                            .spot_instance_type(SpotInstanceType::OneTime)
                            .instance_interruption_behavior(InstanceInterruptionBehavior::Terminate)
                            .build(),
                    )
                    .build(),
            );
        }
        run
    }

    async fn terminate(&self, pool: &str, machines: Vec<String>) -> Result<(), ProviderError> {
        if machines.is_empty() {
            return Ok(());
        }
        let Some(cluster) = self.cluster() else {
            // Ids come from a launch or a list, which name the cluster: without one, nothing
            // here can be checked as ours.
            return Err(ProviderError::new(format!(
                "refused to terminate {}: this provider has not listed or launched anything \
                 yet, so it cannot tell its instances",
                machines.join(", ")
            )));
        };
        let client = self.client().await;
        let mut refused = Vec::new();
        for ids in machines.chunks(IDS_PER_REQUEST) {
            let filter = Filter::builder()
                .name("instance-id")
                .set_values(Some(ids.to_vec()))
                .build();
            let found = client.describe(vec![filter]).await?;
            let mut ours = Vec::new();
            for instance in &found {
                let Some(id) = instance.instance_id() else {
                    continue;
                };
                let state = instance.state().and_then(|state| state.name());
                if matches!(
                    state,
                    Some(InstanceStateName::ShuttingDown | InstanceStateName::Terminated)
                ) {
                    continue;
                }
                if has_tag(instance, CLUSTER_TAG, &cluster) && has_tag(instance, POOL_TAG, pool) {
                    ours.push(id.to_string());
                } else {
                    tracing::error!(
                        instance = id,
                        %cluster,
                        pool,
                        "refusing to terminate an instance not tagged as this cluster's and pool's"
                    );
                    refused.push(id.to_string());
                }
            }
            // Ids EC2 does not list are gone already.
            if ours.is_empty() {
                continue;
            }
            match client
                .ec2
                .terminate_instances()
                .set_instance_ids(Some(ours.clone()))
                .send()
                .await
            {
                Ok(_) => {
                    tracing::info!(pool, instances = %ours.join(","), "ec2 instances terminated")
                }
                // Gone between the look and the request: what was asked.
                Err(error)
                    if error.as_service_error().and_then(|e| e.meta().code())
                        == Some(errors::NOT_FOUND) => {}
                Err(error) => return Err(errors::describe(&error, &client.reach)),
            }
        }
        if refused.is_empty() {
            Ok(())
        } else {
            Err(ProviderError::new(format!(
                "refused to terminate {}: not tagged {CLUSTER_TAG}={cluster} and {POOL_TAG}={pool}",
                refused.join(", ")
            )))
        }
    }
}

impl Client {
    /// Every instance DescribeInstances finds with these filters, page after page.
    async fn describe(&self, filters: Vec<Filter>) -> Result<Vec<Instance>, ProviderError> {
        let mut pages = self
            .ec2
            .describe_instances()
            .set_filters(Some(filters))
            .into_paginator()
            .send();
        let mut instances = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|error| errors::describe(&error, &self.reach))?;
            for reservation in page.reservations() {
                instances.extend(reservation.instances().iter().cloned());
            }
        }
        Ok(instances)
    }
}

fn tag(key: &str, value: &str) -> Tag {
    Tag::builder().key(key).value(value).build()
}

fn tag_filter(key: &str, value: &str) -> Filter {
    Filter::builder()
        .name(format!("tag:{key}"))
        .values(value)
        .build()
}

fn has_tag(instance: &Instance, key: &str, value: &str) -> bool {
    instance
        .tags()
        .iter()
        .any(|tag| tag.key() == Some(key) && tag.value() == Some(value))
}

/// An instance as a machine: its id, and its launch time by EC2's clock (else now).
fn machine(instance: &Instance) -> Option<Machine> {
    let launched_at_ms = instance
        .launch_time()
        .and_then(|time| time.to_millis().ok())
        .and_then(|ms| u64::try_from(ms).ok())
        .unwrap_or_else(crate::job::now_ms);
    Some(Machine {
        id: instance.instance_id()?.to_string(),
        launched_at_ms,
    })
}

fn ids(machines: &[Machine]) -> String {
    machines
        .iter()
        .map(|machine| machine.id.as_str())
        .collect::<Vec<_>>()
        .join(",")
}
