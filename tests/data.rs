//! Job data on `file://`: inputs fetched into the scratch directory, outputs published per
//! attempt, and the recorded attempt's manifest at `<to>/<job id>/_manifest.json`.

mod common;

use common::*;
use drover::job::JobState;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inputs_arrive_and_the_recorded_attempts_outputs_are_listed_in_a_manifest() {
    let mut cluster = Cluster::start(&[]).await;
    cluster.start_worker("w1", 2, &[]);
    cluster.start_worker("w2", 2, &[]);
    cluster.wait_for_workers(2).await;
    let inputs = cluster.dir.path().join("inputs");
    let results = cluster.dir.path().join("results");
    std::fs::create_dir_all(&inputs).unwrap();
    let texts = ["one", "two words", "and now three"];
    let mut lines = Vec::new();
    for (index, text) in texts.iter().enumerate() {
        let file = inputs.join(format!("text-{index}.txt"));
        std::fs::write(&file, text).unwrap();
        lines.push(format!(
            r#"{{"cmd": ["sh", "-c", "mkdir -p out && wc -w < in/text.txt | tr -d ' ' > out/count.txt"], "inputs": [{{"from": "file://{}", "to": "in/text.txt"}}], "outputs": {{"from": "out", "to": "file://{}/"}}}}"#,
            file.display(),
            results.display()
        ));
    }
    // A missing input fails its job with the URL and the reason, and harms nothing else.
    lines.push(format!(
        r#"{{"cmd": ["true"], "max_attempts": 1, "inputs": [{{"from": "file://{}/missing.txt", "to": "x"}}]}}"#,
        inputs.display()
    ));
    let file = cluster.job_file("count.jsonl", &lines);
    let output = cluster.cli(&["submit", path_str(&file), "--wait", "--json"]);
    let summary: serde_json::Value = serde_json::from_str(&stdout_of(&output)).unwrap();
    assert_eq!(summary["succeeded"], 3, "{}", stderr_of(&output));
    assert_eq!(summary["failed"], 1);

    let mut client = cluster.client().await;
    let jobs = client
        .jobs(Some(summary["id"].as_u64().unwrap()), None)
        .await
        .unwrap();
    for (job, text) in jobs.iter().zip(texts) {
        assert_eq!(job.state, JobState::Succeeded);
        assert_eq!(job.outputs.len(), 1, "{job:?}");
        let object = &job.outputs[0];
        let path = object.url.strip_prefix("file://").unwrap();
        let expected = format!("{}\n", text.split_whitespace().count());
        assert_eq!(std::fs::read_to_string(path).unwrap(), expected);
        assert_eq!(object.size, expected.len() as u64);
        assert!(path.contains(&format!("/{}/attempt-", job.id)), "{path}");
        // The manifest is written once the result is recorded.
        let manifest_path = results.join(job.id.to_string()).join("_manifest.json");
        let manifest = wait_for(Duration::from_secs(10), "the manifest", || async {
            std::fs::read(&manifest_path).ok()
        })
        .await;
        let manifest: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
        assert_eq!(manifest["job"], job.id);
        assert_eq!(manifest["objects"][0]["url"], object.url);
        assert_eq!(manifest["objects"][0]["etag"], object.etag);
    }
    let missing = &jobs[3];
    assert_eq!(missing.state, JobState::Failed);
    let error = missing.error.as_deref().unwrap();
    assert!(
        error.contains("cannot fetch input file://") && error.contains("missing.txt"),
        "{error}"
    );
    assert!(error.contains("No such file or directory"), "{error}");
    // Nothing is left in the workers' scratch directories.
    for worker in ["w1", "w2"] {
        let scratch = cluster.dir.path().join("scratch").join(worker);
        let left = std::fs::read_dir(&scratch)
            .map(|entries| entries.count())
            .unwrap_or(0);
        assert_eq!(left, 0, "scratch of {worker} not cleaned");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_data_urls_are_refused_at_submit_time_with_line_and_field() {
    let cluster = Cluster::start(&[]).await;
    let file = cluster.job_file(
        "bad.jsonl",
        &[
            r#"{"cmd": ["true"]}"#.to_string(),
            r#"{"cmd": ["true"], "outputs": {"from": "out", "to": "http://example/x/"}}"#
                .to_string(),
        ],
    );
    let output = cluster.cli(&["submit", path_str(&file)]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr_of(&output).contains(
            "line 2, field \"outputs.to\": \"http://example/x/\": unknown scheme \"http\""
        ),
        "{}",
        stderr_of(&output)
    );
    assert!(cluster.client().await.batches().await.unwrap().is_empty());
}
