//! TLS on both ports, with certificates made for the test by rcgen: workers, the CLI and the
//! client library connect and run jobs over it; a plain peer, a peer trusting another CA and a
//! coordinator without certificates under `--require-tls` are refused with clear words.

mod common;

use common::*;
use drover::client::Client;
use drover::net::tls::ClientTls;
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// A CA, and a certificate it signed for 127.0.0.1 and localhost; PEM files in `dir`.
struct Pki {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn make_ca(dir: &Path, name: &str) -> (rcgen::Certificate, KeyPair, PathBuf) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("drover test CA {name}"));
    let cert = params.self_signed(&key).unwrap();
    let path = dir.join(format!("{name}-ca.pem"));
    std::fs::write(&path, cert.pem()).unwrap();
    (cert, key, path)
}

fn make_pki(dir: &Path) -> Pki {
    let (ca_cert, ca_key, ca) = make_ca(dir, "main");
    let key = KeyPair::generate().unwrap();
    let params =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    let cert = params.signed_by(&key, &ca_cert, &ca_key).unwrap();
    let cert_path = dir.join("coordinator.pem");
    let key_path = dir.join("coordinator-key.pem");
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    Pki {
        ca,
        cert: cert_path,
        key: key_path,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_run_over_tls_and_peers_without_the_right_trust_are_refused() {
    let certs = tempfile::tempdir().unwrap();
    let pki = make_pki(certs.path());
    let http_address = format!("127.0.0.1:{}", free_port());
    let mut cluster = Cluster::start(&[
        "--tls-cert",
        path_str(&pki.cert),
        "--tls-key",
        path_str(&pki.key),
        "--http",
        &http_address,
    ])
    .await;
    let ca = path_str(&pki.ca).to_string();
    cluster.start_worker("secure", 2, &["--tls-ca", &ca]);

    // The CLI, over TLS, submits and waits; the worker ran it over TLS.
    let file = cluster.job_file(
        "hello.jsonl",
        &[r#"{"cmd": ["echo", "sealed"]}"#.to_string()],
    );
    let output = cluster.cli(&[
        "--tls-ca",
        &ca,
        "submit",
        path_str(&file),
        "--wait",
        "--json",
    ]);
    assert!(output.status.success(), "{}", stderr_of(&output));
    let summary: serde_json::Value = serde_json::from_str(&stdout_of(&output)).unwrap();
    assert_eq!(summary["succeeded"], 1);

    // The client library too.
    let tls = ClientTls::new(Some(&pki.ca)).unwrap();
    let mut client = Client::connect_with(&cluster.address, None, Some(&tls))
        .await
        .unwrap();
    let job = client.job(1).await.unwrap();
    assert_eq!(job.output_tail.as_deref(), Some("sealed\n"));
    assert_eq!(job.worker.as_deref(), Some("secure"));

    // A plain peer gets no session, and is told what may be wrong.
    let failed_before = cluster
        .coordinator_log()
        .matches("TLS handshake failed")
        .count();
    let error = Client::connect(&cluster.address, None)
        .await
        .err()
        .expect("a plain client is refused")
        .to_string();
    assert!(error.contains("--tls-ca"), "{error}");
    wait_for(
        Duration::from_secs(10),
        "the refusal in the log",
        || async {
            let failed = cluster
                .coordinator_log()
                .matches("TLS handshake failed")
                .count();
            (failed > failed_before).then_some(())
        },
    )
    .await;

    // A peer that trusts another CA refuses the coordinator's certificate.
    let (_, _, other_ca) = make_ca(certs.path(), "other");
    let distrustful = ClientTls::new(Some(&other_ca)).unwrap();
    let error = Client::connect_with(&cluster.address, None, Some(&distrustful))
        .await
        .err()
        .expect("an untrusted certificate is refused")
        .to_string();
    assert!(
        error.contains("TLS") && error.contains("certificate"),
        "{error}"
    );
    let output = cluster.cli(&["--tls-ca", path_str(&other_ca), "batches"]);
    assert!(!output.status.success());
    assert!(
        stderr_of(&output).contains("certificate"),
        "{}",
        stderr_of(&output)
    );

    // The HTTP port speaks TLS with the same certificate.
    let status = https_get(&http_address, "/api/status", &pki.ca).await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert!(status.contains("\"succeeded\":1"), "{status}");
    let address = http_address.clone();
    let plain = tokio::time::timeout(Duration::from_secs(5), async move {
        http(&address, "GET", "/api/status", &[], b"").await
    });
    let plain_ok = matches!(
        tokio::spawn(plain).await,
        Ok(Ok(response)) if response.status == 200
    );
    assert!(!plain_ok, "plain HTTP got an answer from the TLS port");
}

/// One GET over TLS, trusting `ca`; the raw answer.
async fn https_get(address: &str, path: &str, ca: &Path) -> String {
    use rustls::pki_types::pem::PemObject;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut roots = rustls::RootCertStore::empty();
    for certificate in rustls::pki_types::CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(certificate.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, stream)
        .await
        .unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tls.read_to_end(&mut answer).await;
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_tls_without_certificates_refuses_to_start_and_plaintext_beyond_loopback_warns() {
    let data = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(COORDINATOR)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--http",
            "off",
            "--require-tls",
            "--data-dir",
        ])
        .arg(data.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = stderr_of(&output);
    assert!(stderr.contains("--require-tls"), "{stderr}");

    // Beyond loopback in the clear: it starts, and says loudly that nothing is encrypted.
    let log = data.path().join("coordinator.log");
    let mut child = std::process::Command::new(COORDINATOR)
        .args(["--listen", "0.0.0.0:0", "--http", "off", "--data-dir"])
        .arg(data.path().join("open"))
        .env("NO_COLOR", "1")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let warned = wait_for(Duration::from_secs(20), "the warning", || async {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.contains("NOT ENCRYPTED").then_some(text)
    })
    .await;
    let _ = child.kill();
    let _ = child.wait();
    assert!(warned.contains("WARN"), "{warned}");
}
