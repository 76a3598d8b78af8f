//! S3-compatible stores other than AWS: a worker given a custom endpoint sends plain bodies with
//! a Content-MD5, not the SDK's aws-chunked bodies with checksum trailers. Shown on s3rver, a
//! second S3 implementation that keeps an aws-chunked body as it came (chunk framing and all),
//! and on s3s-fs behind a link that damages a body on the way, which the store must refuse.

mod common;

use common::s3::{get, pattern, put, S3Server};
use common::*;
use drover::job::JobState;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jobs_data_goes_through_s3rver_byte_for_byte_a_48_mib_multipart_upload_included() {
    let server = S3Server::s3rver().await;
    let s3 = server.client();
    let bucket = "drover-compat";
    s3.create_bucket().bucket(bucket).send().await.unwrap();
    // 65 bytes, as the sum.txt that Garage refused.
    let sum = b"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n".to_vec();
    let big = pattern(48 * 1024 * 1024);
    put(&s3, bucket, "in/sum.txt", sum.clone()).await;
    put(&s3, bucket, "in/big.bin", big.clone()).await;

    let mut cluster = Cluster::start(&[]).await;
    // Nothing but the endpoint: what a user gives.
    server.start_worker(&mut cluster, "compat", 1, &[], &[]);
    cluster.wait_for_workers(1).await;
    let line = format!(
        r#"{{"cmd": ["sh", "-c", "cp in/sum.txt in/big.bin out/"], "max_attempts": 1, "inputs": [{{"from": "s3://{bucket}/in/", "to": "in/"}}], "outputs": {{"from": "out", "to": "s3://{bucket}/results/"}}}}"#
    );
    let file = cluster.job_file("compat.jsonl", &[line]);
    let output = cluster.cli(&["submit", path_str(&file), "--wait", "--json"]);
    let summary: serde_json::Value = serde_json::from_str(&stdout_of(&output)).unwrap();
    let mut client = cluster.client().await;
    let jobs = client.jobs(summary["id"].as_u64(), None).await.unwrap();
    let job = &jobs[0];
    assert_eq!(
        job.state,
        JobState::Succeeded,
        "{job:#?}\n{}",
        cluster.worker_log("compat")
    );
    let mut urls: Vec<&str> = job.outputs.iter().map(|o| o.url.as_str()).collect();
    urls.sort();
    assert_eq!(urls.len(), 2, "{urls:?}");
    for (url, expected) in urls.iter().zip([&big, &sum]) {
        let key = url.strip_prefix(&format!("s3://{bucket}/")).unwrap();
        let stored = get(&s3, bucket, key).await;
        assert!(
            stored.len() == expected.len() && &stored == expected,
            "{url}: {} bytes stored, {} sent, or other bytes",
            stored.len(),
            expected.len()
        );
    }
    let ledger = client.status().await.unwrap().stats.ledger;
    let manifest_key = format!("results/ledger-{ledger}/{}/_manifest.json", job.id);
    let manifest = wait_for(
        std::time::Duration::from_secs(30),
        "the manifest",
        || async {
            s3.get_object()
                .bucket(bucket)
                .key(&manifest_key)
                .send()
                .await
                .ok()
        },
    )
    .await;
    let manifest: serde_json::Value =
        serde_json::from_slice(&manifest.body.collect().await.unwrap().into_bytes()).unwrap();
    assert_eq!(manifest["objects"].as_array().map(Vec::len), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_damaged_on_the_way_to_a_custom_endpoint_is_refused_by_the_store() {
    let server = S3Server::s3s_fs().await;
    let s3 = server.client();
    let bucket = "drover-damaged";
    s3.create_bucket().bucket(bucket).send().await.unwrap();
    let (proxy, damaged) = damaging_proxy(&server.endpoint, "precious").await;

    let mut cluster = Cluster::start(&[]).await;
    server.start_worker(
        &mut cluster,
        "behind-a-bad-link",
        1,
        &[],
        &[("AWS_ENDPOINT_URL", proxy)],
    );
    cluster.wait_for_workers(1).await;
    let job = |name: &str| {
        format!(
            r#"{{"cmd": ["sh", "-c", "echo the result > out/{name}.txt"], "max_attempts": 1, "outputs": {{"from": "out", "to": "s3://{bucket}/results/"}}}}"#
        )
    };
    let file = cluster.job_file("damaged.jsonl", &[job("precious"), job("plain")]);
    let output = cluster.cli(&["submit", path_str(&file), "--wait", "--json"]);
    let summary: serde_json::Value = serde_json::from_str(&stdout_of(&output)).unwrap();
    let mut client = cluster.client().await;
    let jobs = client.jobs(summary["id"].as_u64(), None).await.unwrap();
    assert!(
        damaged.load(Ordering::SeqCst) > 0,
        "the link damaged nothing"
    );

    // The store checked the Content-MD5 and refused the body; the attempt says why, and
    // records no output. (s3s-fs checks after writing and leaves the refused body in place;
    // AWS and the stores built to last keep nothing.)
    let precious = &jobs[0];
    assert_eq!(precious.state, JobState::Failed, "{precious:#?}");
    assert!(precious.outputs.is_empty(), "{precious:#?}");
    let error = precious.error.as_deref().unwrap_or_default();
    assert!(
        error.contains(&format!("s3://{bucket}/results/"))
            && error.contains(
                "precious.txt: the store received other bytes than were sent (BadDigest)"
            ),
        "{error}"
    );
    // What passed the link whole was kept whole.
    let plain = &jobs[1];
    assert_eq!(plain.state, JobState::Succeeded, "{plain:#?}");
    let key = plain.outputs[0]
        .url
        .strip_prefix(&format!("s3://{bucket}/"))
        .unwrap();
    assert_eq!(get(&s3, bucket, key).await, b"the result\n");
}

/// A TCP proxy on loopback in front of `upstream` that flips a bit in the first byte of the body
/// of every PUT whose request line holds `marker`, as a faulty link or middlebox might; returns
/// its endpoint and how many bodies it damaged.
async fn damaging_proxy(upstream: &str, marker: &'static str) -> (String, Arc<AtomicUsize>) {
    let upstream = upstream.strip_prefix("http://").unwrap().to_string();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let damaged = Arc::new(AtomicUsize::new(0));
    let counter = damaged.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                continue;
            };
            let counter = counter.clone();
            tokio::spawn(async move {
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                let answers = async {
                    let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
                    let _ = client_write.shutdown().await;
                };
                let requests = async {
                    let _ = forward_requests(&mut client_read, &mut server_write, marker, &counter)
                        .await;
                    let _ = server_write.shutdown().await;
                };
                tokio::join!(answers, requests);
            });
        }
    });
    (endpoint, damaged)
}

/// Forwards HTTP/1.1 requests one by one (head, then a body of its Content-Length).
async fn forward_requests(
    from: &mut (impl tokio::io::AsyncRead + Unpin),
    to: &mut (impl tokio::io::AsyncWrite + Unpin),
    marker: &str,
    damaged: &AtomicUsize,
) -> std::io::Result<()> {
    let mut buffer = Vec::new();
    loop {
        let head_end = loop {
            if let Some(at) = buffer.windows(4).position(|window| window == b"\r\n\r\n") {
                break at + 4;
            }
            if read_more(from, &mut buffer).await? == 0 {
                return Ok(());
            }
        };
        let head = String::from_utf8_lossy(&buffer[..head_end]).to_string();
        let length: usize = head
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().ok())?
            })
            .unwrap_or(0);
        let request_line = head.lines().next().unwrap_or_default();
        let mut damage = request_line.starts_with("PUT ") && request_line.contains(marker);
        to.write_all(&buffer[..head_end]).await?;
        buffer.drain(..head_end);
        let mut left = length;
        while left > 0 {
            if buffer.is_empty() && read_more(from, &mut buffer).await? == 0 {
                return Ok(());
            }
            let take = left.min(buffer.len());
            let mut body: Vec<u8> = buffer.drain(..take).collect();
            if damage {
                body[0] ^= 0x01;
                damaged.fetch_add(1, Ordering::SeqCst);
                damage = false;
            }
            to.write_all(&body).await?;
            left -= take;
        }
    }
}

/// Reads what has arrived onto the end of `buffer`; returns how much (0 at the end).
async fn read_more(
    from: &mut (impl tokio::io::AsyncRead + Unpin),
    buffer: &mut Vec<u8>,
) -> std::io::Result<usize> {
    let mut chunk = vec![0u8; 64 * 1024];
    let read = from.read(&mut chunk).await?;
    buffer.extend_from_slice(&chunk[..read]);
    Ok(read)
}
