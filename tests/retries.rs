//! Which failures are tried again: a command that cannot start and an input that does not exist
//! fail their job at once, saying why; a failing exit, a timeout or a lost worker may pass next
//! time and are retried. And `drover run`'s flags, a one-off command tried once by default.

mod common;

use common::*;

/// `drover job ID --json`, read back.
fn job_json(cluster: &Cluster, id: u64) -> serde_json::Value {
    let output = cluster.cli(&["job", &id.to_string(), "--json"]);
    assert!(output.status.success(), "{}", stderr_of(&output));
    serde_json::from_str(&stdout_of(&output)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_that_would_repeat_fail_at_once_and_others_are_retried() {
    let mut cluster = Cluster::start(&["--retry-backoff", "50ms"]).await;
    for name in ["w1", "w2", "w3"] {
        cluster.start_worker(name, 1, &[]);
    }
    cluster.wait_for_workers(3).await;
    let inputs = cluster.dir.path().join("inputs");
    std::fs::create_dir_all(&inputs).unwrap();
    let lines = vec![
        r#"{"name": "no-command", "cmd": ["no-such-command-xyz", "arg"]}"#.to_string(),
        format!(
            r#"{{"name": "no-input", "cmd": ["true"], "inputs": [{{"from": "file://{}/missing.txt", "to": "in.txt"}}]}}"#,
            inputs.display()
        ),
        r#"{"name": "exits-3", "cmd": ["sh", "-c", "echo $DROVER_ATTEMPT >> \"$OUT/$DROVER_JOB_ID\"; exit 3"]}"#
            .to_string(),
    ];
    let file = cluster.job_file("doomed.jsonl", &lines);
    let output = cluster.cli(&["submit", path_str(&file), "--wait", "--json"]);
    assert!(!output.status.success());
    let summary: serde_json::Value = serde_json::from_str(&stdout_of(&output)).unwrap();
    assert_eq!(summary["failed"], 3, "{summary}");
    let batch = summary["id"].as_u64().unwrap();
    let jobs = cluster
        .client()
        .await
        .jobs(Some(batch), None)
        .await
        .unwrap();
    let first_job = jobs[0].id;

    // Tried once each, though three attempts were allowed, with the reason in the error.
    let no_command = job_json(&cluster, first_job);
    assert_eq!(no_command["attempts"], 1, "{no_command}");
    let error = no_command["error"].as_str().unwrap();
    assert!(
        error.starts_with("cannot start \"no-such-command-xyz\": No such file or directory"),
        "{error}"
    );
    assert!(
        error.ends_with("not retried: it would fail the same way on every attempt"),
        "{error}"
    );
    let no_input = job_json(&cluster, first_job + 1);
    assert_eq!(no_input["attempts"], 1, "{no_input}");
    let error = no_input["error"].as_str().unwrap();
    assert!(
        error.contains("cannot fetch input file://") && error.contains("missing.txt"),
        "{error}"
    );
    assert!(error.contains("not retried"), "{error}");
    // The text view says so too.
    let shown = stdout_of(&cluster.cli(&["job", &first_job.to_string()]));
    assert!(shown.contains("not retried"), "{shown}");

    // A failing exit code may pass next time: all three attempts ran.
    let exits = job_json(&cluster, first_job + 2);
    assert_eq!(exits["attempts"], 3, "{exits}");
    assert_eq!(cluster.runs_of(first_job + 2), 3);
    assert_eq!(
        exits["error"],
        "failed 3 of 3 attempts; last: exited with code 3"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drover_run_flags_take_effect_and_a_one_off_command_is_tried_once() {
    let mut cluster = Cluster::start(&["--retry-backoff", "50ms"]).await;
    cluster.start_worker("small-gpu", 1, &["--label", "gpu"]);
    cluster.start_worker("large", 4, &[]);
    cluster.wait_for_workers(2).await;
    let run = |args: &[&str]| {
        let mut all = vec!["run", "--json"];
        all.extend_from_slice(args);
        let output = cluster.cli(&all);
        let job: serde_json::Value = serde_json::from_str(&stdout_of(&output))
            .unwrap_or_else(|_| panic!("{:?}: {}", args, stderr_of(&output)));
        (output.status.code(), job)
    };

    let (code, job) = run(&[
        "--requires",
        "gpu",
        "--env",
        "GREETING=hello=world",
        "--env",
        "EMPTY=",
        "--",
        "sh",
        "-c",
        "echo \"$GREETING [$EMPTY]\"",
    ]);
    assert_eq!(code, Some(0), "{job}");
    assert_eq!(job["worker"], "small-gpu");
    assert_eq!(job["output_tail"], "hello=world []\n");

    let (_, job) = run(&["--slots", "3", "--", "true"]);
    assert_eq!(job["worker"], "large", "only it has 3 slots: {job}");

    // A one-off command is tried once...
    let (code, job) = run(&["--", "sh", "-c", "exit 5"]);
    assert_eq!(code, Some(5));
    assert_eq!(job["attempts"], 1, "{job}");
    // ...or as often as asked.
    let (code, job) = run(&["--max-attempts", "2", "--", "sh", "-c", "exit 5"]);
    assert_eq!(code, Some(5));
    assert_eq!(job["attempts"], 2, "{job}");

    let (code, job) = run(&["--timeout", "1s", "--", "sleep", "30"]);
    assert_ne!(code, Some(0));
    assert_eq!(job["state"], "failed");
    assert_eq!(job["attempts"], 1, "{job}");
    assert!(
        job["error"]
            .as_str()
            .unwrap()
            .contains("timed out after 1s"),
        "{job}"
    );

    // Bad flags are refused before anything is submitted.
    for (args, expected) in [
        (&["--env", "NOEQUALS", "--", "true"][..], "is not KEY=VALUE"),
        (&["--timeout", "0s", "--", "true"][..], "at least 1s"),
        (&["--slots", "0", "--", "true"][..], "--slots"),
        (
            &["--requires", "", "--", "true"][..],
            "labels must not be empty",
        ),
    ] {
        let mut all = vec!["run"];
        all.extend_from_slice(args);
        let output = cluster.cli(&all);
        assert!(!output.status.success(), "{args:?}");
        assert!(
            stderr_of(&output).contains(expected),
            "{args:?}: {}",
            stderr_of(&output)
        );
    }
    let mut client = cluster.client().await;
    assert_eq!(client.batches().await.unwrap().len(), 5);
}
