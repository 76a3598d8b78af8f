//! Real S3-compatible servers for the tests, started as processes on a free loopback port:
//! s3s-fs (Rust, the reference server the S3 tests use) and s3rver (Node.js, a second
//! implementation that, like many, takes no aws-chunked bodies). `scripts/test.sh` installs both.

use super::{free_port, wait_for, Cluster};
use aws_sdk_s3::config::{Credentials, Region};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A real S3-compatible server on loopback, killed when dropped.
pub struct S3Server {
    pub endpoint: String,
    pub child: Child,
    /// Where it keeps what it stores (s3s-fs: a multipart upload's parts are files in its root).
    pub data: tempfile::TempDir,
    pub access_key: &'static str,
    pub secret_key: &'static str,
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A program on PATH, or in one of `also`.
fn program(name: &str, also: &[PathBuf], install: &str) -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join(name));
    on_path
        .chain(also.iter().map(|dir| dir.join(name)))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!("{name} not found: install it with `{install}` (scripts/test.sh does)")
        })
}

fn cargo_bin() -> Vec<PathBuf> {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cargo")))
        .map(|home| home.join("bin"))
        .into_iter()
        .collect()
}

impl S3Server {
    /// s3s-fs, storing under a temporary directory.
    pub async fn s3s_fs() -> S3Server {
        let (access_key, secret_key) = ("drover-test-access", "drover-test-secret-key");
        let data = tempfile::tempdir().unwrap();
        let port = free_port();
        let child = Command::new(program(
            "s3s-fs",
            &cargo_bin(),
            "cargo install --locked s3s-fs --version 0.14.1 --features binary",
        ))
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--access-key", access_key, "--secret-key", secret_key])
        .arg(data.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("s3s-fs starts");
        S3Server::listening(port, child, data, access_key, secret_key, "s3s-fs").await
    }

    /// s3rver, storing under a temporary directory; its one account is S3RVER/S3RVER.
    pub async fn s3rver() -> S3Server {
        let data = tempfile::tempdir().unwrap();
        let port = free_port();
        let child = Command::new(program("s3rver", &[], "npm install -g s3rver@3.7.1"))
            .args([
                "--address",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--silent",
            ])
            .arg("--directory")
            .arg(data.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("s3rver starts");
        S3Server::listening(port, child, data, "S3RVER", "S3RVER", "s3rver").await
    }

    async fn listening(
        port: u16,
        child: Child,
        data: tempfile::TempDir,
        access_key: &'static str,
        secret_key: &'static str,
        name: &str,
    ) -> S3Server {
        wait_for(
            Duration::from_secs(30),
            &format!("{name} to listen"),
            || async {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .ok()
            },
        )
        .await;
        S3Server {
            endpoint: format!("http://127.0.0.1:{port}"),
            child,
            data,
            access_key,
            secret_key,
        }
    }

    /// The test's own client. It sends plain bodies, which every store takes as they are.
    pub fn client(&self) -> aws_sdk_s3::Client {
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let config = aws_sdk_s3::config::Builder::new()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .http_client(http)
            .credentials_provider(Credentials::new(
                self.access_key,
                self.secret_key,
                None,
                None,
                "test",
            ))
            .region(Region::new("us-east-1"))
            .endpoint_url(&self.endpoint)
            .force_path_style(true)
            .request_checksum_calculation(
                aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired,
            )
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }

    /// What a worker needs in its environment to reach this server.
    pub fn worker_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", self.access_key.to_string()),
            ("AWS_SECRET_ACCESS_KEY", self.secret_key.to_string()),
            ("AWS_REGION", "us-east-1".to_string()),
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("DROVER_S3_PATH_STYLE", "1".to_string()),
        ]
    }

    /// Starts a worker that reaches this server, with `extra` flags and more environment.
    pub fn start_worker(
        &self,
        cluster: &mut Cluster,
        name: &str,
        slots: u32,
        extra: &[&str],
        more_env: &[(&'static str, String)],
    ) {
        let mut env = self.worker_env();
        for (key, value) in more_env {
            env.retain(|(existing, _)| existing != key);
            env.push((key, value.clone()));
        }
        let env: Vec<(&str, &str)> = env
            .iter()
            .map(|(key, value)| (*key, value.as_str()))
            .collect();
        cluster.start_worker_with_env(name, slots, extra, &env);
    }
}

/// An object's bytes.
pub async fn get(client: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Vec<u8> {
    let object = client
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap();
    object.body.collect().await.unwrap().into_bytes().to_vec()
}

/// Puts bytes under a key.
pub async fn put(client: &aws_sdk_s3::Client, bucket: &str, key: &str, bytes: Vec<u8>) {
    client
        .put_object()
        .bucket(bucket)
        .key(key)
        .body(aws_sdk_s3::primitives::ByteStream::from(bytes))
        .send()
        .await
        .unwrap();
}

/// Deterministic bytes that do not compress to nothing.
pub fn pattern(size: usize) -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    (0..size)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}
