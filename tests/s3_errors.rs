//! What a user reads when S3 fails: one line with the object's URL and a reason to act on, no
//! SDK debug dump. Real failures from a real S3 server (s3s-fs) and a real closed port, read
//! through `drover job ID --json`.

mod common;

use common::s3::{put, S3Server};
use common::*;

/// A job routed by label to the worker set up for one failure, what its error must say, and
/// the URL it must name.
struct Case {
    worker: &'static str,
    data: String,
    url: String,
    reason: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_s3_failure_reads_as_one_line_with_the_url_and_what_to_do() {
    let server = S3Server::s3s_fs().await;
    let s3 = server.client();
    let bucket = "drover-errors";
    s3.create_bucket().bucket(bucket).send().await.unwrap();
    put(&s3, bucket, "in/a.txt", b"a".to_vec()).await;
    let closed = format!("http://127.0.0.1:{}", free_port());
    let nowhere = "/nonexistent/drover-test-aws-config".to_string();

    let mut cluster = Cluster::start(&[]).await;
    let workers: [(&str, Vec<(&'static str, String)>); 5] = [
        ("right", vec![]),
        (
            "wrong-secret",
            vec![("AWS_SECRET_ACCESS_KEY", "not-the-secret".into())],
        ),
        ("unknown-key", vec![("AWS_ACCESS_KEY_ID", "nobody".into())]),
        (
            "no-credentials",
            vec![
                ("AWS_ACCESS_KEY_ID", String::new()),
                ("AWS_SECRET_ACCESS_KEY", String::new()),
                ("AWS_CONFIG_FILE", nowhere.clone()),
                ("AWS_SHARED_CREDENTIALS_FILE", nowhere),
                // No instance metadata service here: the chain ends at once, and sends
                // nothing to a link-local address.
                ("AWS_EC2_METADATA_DISABLED", "true".into()),
            ],
        ),
        ("unreachable", vec![("AWS_ENDPOINT_URL", closed.clone())]),
    ];
    for (name, env) in &workers {
        server.start_worker(&mut cluster, name, 2, &["--label", name], env);
    }
    cluster.wait_for_workers(workers.len()).await;

    let input = |from: &str| format!(r#""inputs": [{{"from": "{from}", "to": "in/"}}]"#);
    let cases = vec![
        Case {
            worker: "right",
            data: input(&format!("s3://{bucket}/no/such/key")),
            url: format!("s3://{bucket}/no/such/key"),
            reason: "no such key".into(),
        },
        Case {
            worker: "right",
            data: input("s3://drover-no-such-bucket/a.txt"),
            url: "s3://drover-no-such-bucket/a.txt".into(),
            reason: "no such bucket: check its name and the endpoint, or create it".into(),
        },
        Case {
            worker: "right",
            data: input("s3://drover-no-such-bucket/in/"),
            url: "s3://drover-no-such-bucket/in/".into(),
            reason: "no such bucket: check its name and the endpoint, or create it".into(),
        },
        Case {
            worker: "wrong-secret",
            data: format!(r#""outputs": {{"from": "out", "to": "s3://{bucket}/results/"}}"#),
            url: format!("cannot publish output s3://{bucket}/results/"),
            reason: "out.txt: the request's signature does not match (SignatureDoesNotMatch)"
                .into(),
        },
        // A HEAD's refusal has no body: its status says it.
        Case {
            worker: "wrong-secret",
            data: input(&format!("s3://{bucket}/in/a.txt")),
            url: format!("s3://{bucket}/in/a.txt"),
            reason: "access denied (HTTP 403): check the worker's credentials (AWS_ACCESS_KEY_ID, \
                     AWS_SECRET_ACCESS_KEY) and the bucket's policy"
                .into(),
        },
        Case {
            worker: "wrong-secret",
            data: input(&format!("s3://{bucket}/in/")),
            url: format!("s3://{bucket}/in/"),
            reason: "the request's signature does not match (SignatureDoesNotMatch): check \
                     AWS_SECRET_ACCESS_KEY"
                .into(),
        },
        Case {
            worker: "unknown-key",
            data: input(&format!("s3://{bucket}/in/")),
            url: format!("s3://{bucket}/in/"),
            reason: "the store does not know this access key (NotSignedUp): check \
                     AWS_ACCESS_KEY_ID"
                .into(),
        },
        Case {
            worker: "no-credentials",
            data: input(&format!("s3://{bucket}/in/a.txt")),
            url: format!("s3://{bucket}/in/a.txt"),
            reason: "no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY \
                     (or AWS_PROFILE) in the worker's environment, or give its machine an \
                     instance profile"
                .into(),
        },
        Case {
            worker: "unreachable",
            data: input(&format!("s3://{bucket}/in/a.txt")),
            url: format!("s3://{bucket}/in/a.txt"),
            reason: format!(
                "cannot reach {closed}: connection refused; check the address and that the store \
                 is up"
            ),
        },
    ];
    let lines: Vec<String> = cases
        .iter()
        .map(|case| {
            format!(
                r#"{{"cmd": ["sh", "-c", "echo x > out/out.txt"], "max_attempts": 1, "requires": ["{}"], {}}}"#,
                case.worker, case.data
            )
        })
        .collect();
    let file = cluster.job_file("failing.jsonl", &lines);
    let output = cluster.cli(&["submit", path_str(&file), "--wait", "--json"]);
    let summary: serde_json::Value = serde_json::from_str(&stdout_of(&output)).unwrap();
    let batch = summary["id"].as_u64().unwrap().to_string();
    let listed = cluster.cli(&["jobs", "--batch", &batch, "--json"]);
    let jobs: Vec<serde_json::Value> = serde_json::from_str(&stdout_of(&listed)).unwrap();
    assert_eq!(jobs.len(), cases.len());

    let mut wrong = Vec::new();
    for (job, case) in jobs.iter().zip(&cases) {
        let id = job["id"].to_string();
        let shown = cluster.cli(&["job", &id, "--json"]);
        let shown: serde_json::Value = serde_json::from_str(&stdout_of(&shown)).unwrap();
        let error = shown["error"].as_str().unwrap_or_default().to_string();
        let whole = format!("{}: {}", case.url, case.reason);
        let said = shown["state"] == "failed"
            && (error.contains(&whole)
                || (error.contains(&case.url) && error.contains(&case.reason)));
        // One line, no SDK debug dump.
        let plain = !error.contains('\n')
            && error.len() < 500
            && [
                "ServiceError",
                "DispatchFailure",
                "Response {",
                "raw:",
                "Some(",
            ]
            .iter()
            .all(|dump| !error.contains(dump));
        if !said || !plain {
            wrong.push(format!(
                "worker {}: expected \"{whole}\"\n    got {error:?} ({})",
                case.worker, shown["state"]
            ));
        }
    }
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
}
