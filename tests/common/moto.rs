//! moto's server standing in for EC2 (`pip install 'moto[server]'`, which scripts/test.sh
//! does), started on a free loopback port and killed when dropped. Its instances run nothing:
//! a test starts the workers that stand in for theirs.

use super::{free_port, wait_for};
use aws_sdk_ec2::config::{Credentials, Region};
use aws_sdk_ec2::types::{
    Filter, Instance, InstanceStateName, ResourceType, Tag, TagSpecification,
};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The region every test uses.
pub const REGION: &str = "us-east-1";
/// An AMI id; moto launches any.
pub const IMAGE: &str = "ami-12c6146b";

/// A moto server, killed when dropped.
pub struct Moto {
    pub endpoint: String,
    child: Child,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Moto {
    pub async fn start() -> Moto {
        let port = free_port();
        let child = Command::new("python3")
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 starts");
        let mut moto = Moto {
            endpoint: format!("http://127.0.0.1:{port}"),
            child,
        };
        wait_for(Duration::from_secs(30), "moto to listen", || {
            if let Ok(Some(status)) = moto.child.try_wait() {
                panic!(
                    "moto's server exited ({status}): install it with `python3 -m pip install \
                     'moto[server]'` (scripts/test.sh does)"
                );
            }
            async move {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .ok()
            }
        })
        .await;
        moto
    }

    /// What a process needs in its environment to take this server for EC2.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", self.endpoint.as_str()),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_REGION", REGION),
            // No instance metadata to ask for credentials or a region on this machine.
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect()
    }

    /// The AWS configuration of a client of this server, on drover's HTTP client stack.
    pub fn sdk_config(&self) -> aws_config::SdkConfig {
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .http_client(http)
            .credentials_provider(
                aws_credential_types::provider::SharedCredentialsProvider::new(Credentials::new(
                    "testing", "testing", None, None, "test",
                )),
            )
            .region(Region::new(REGION))
            .endpoint_url(&self.endpoint)
            .build()
    }

    /// The test's own EC2 client.
    pub fn client(&self) -> aws_sdk_ec2::Client {
        aws_sdk_ec2::Client::new(&self.sdk_config())
    }

    /// Launches one instance directly, with these tags (none: untagged).
    pub async fn run_instance(&self, tags: &[(&str, &str)]) -> String {
        let mut run = self
            .client()
            .run_instances()
            .image_id(IMAGE)
            .instance_type("t3.micro".into())
            .min_count(1)
            .max_count(1);
        if !tags.is_empty() {
            run = run.tag_specifications(
                TagSpecification::builder()
                    .resource_type(ResourceType::Instance)
                    .set_tags(Some(
                        tags.iter()
                            .map(|(key, value)| Tag::builder().key(*key).value(*value).build())
                            .collect(),
                    ))
                    .build(),
            );
        }
        let launched = run.send().await.expect("moto runs an instance");
        launched.instances()[0]
            .instance_id()
            .expect("an instance id")
            .to_string()
    }

    /// Every instance moto knows (terminated ones too) with this tag.
    pub async fn instances_tagged(&self, key: &str, value: &str) -> Vec<Instance> {
        let filter = Filter::builder()
            .name(format!("tag:{key}"))
            .values(value)
            .build();
        self.describe(vec![filter]).await
    }

    /// This instance, as moto describes it.
    pub async fn instance(&self, id: &str) -> Instance {
        let filter = Filter::builder().name("instance-id").values(id).build();
        self.describe(vec![filter])
            .await
            .pop()
            .unwrap_or_else(|| panic!("moto knows no instance {id}"))
    }

    async fn describe(&self, filters: Vec<Filter>) -> Vec<Instance> {
        let described = self
            .client()
            .describe_instances()
            .set_filters(Some(filters))
            .send()
            .await
            .expect("moto describes instances");
        described
            .reservations()
            .iter()
            .flat_map(|reservation| reservation.instances().iter().cloned())
            .collect()
    }
}

/// An instance's state.
pub fn state(instance: &Instance) -> InstanceStateName {
    instance
        .state()
        .and_then(|state| state.name())
        .cloned()
        .expect("an instance state")
}

/// Whether an instance is alive (pending or running), as the provider counts it.
pub fn alive(instance: &Instance) -> bool {
    matches!(
        state(instance),
        InstanceStateName::Pending | InstanceStateName::Running
    )
}
