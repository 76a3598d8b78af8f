//! Where outputs go: under a directory of their ledger's own, `<to>ledger-<id>/<job id>/`, so two
//! ledgers (whose job ids both start at 1) writing to one prefix never overwrite each other's
//! outputs or manifests; and `drover local` says where its ledger is.

mod common;

use common::*;
use std::path::Path;
use std::process::{Command, Output};

fn manifest(path: &Path) -> serde_json::Value {
    let bytes = std::fs::read(path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    serde_json::from_slice(&bytes).unwrap()
}

/// The entries of a directory, sorted.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The ledger id `drover local` said it keeps its ledger under.
fn said_ledger(output: &Output) -> String {
    let said = stderr_of(output);
    let line = said
        .lines()
        .find(|line| line.starts_with("drover local: ledger "))
        .unwrap_or_else(|| panic!("no word of the ledger: {said}"));
    line["drover local: ledger ".len()..][..16].to_string()
}

#[test]
fn two_runs_of_the_checksums_example_to_one_prefix_keep_both_results() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("texts");
    let results = dir.path().join("checksums");
    std::fs::create_dir_all(&input).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/checksums.sh");
    let mut runs = Vec::new();
    for text in ["first version\n", "second version\n"] {
        std::fs::write(input.join("a.txt"), text).unwrap();
        let output = Command::new("sh")
            .arg(&script)
            .arg(format!("file://{}/", input.display()))
            .arg(format!("file://{}/", results.display()))
            .env("DROVER", CLI)
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", stderr_of(&output));
        let said = stderr_of(&output);
        assert!(said.contains("(temporary, removed at the end"), "{said}");
        runs.push((said_ledger(&output), text));
    }
    assert_ne!(runs[0].0, runs[1].0, "each ledger has an id of its own");

    // Both runs' job 1, each under its ledger's directory, each manifest naming its own sums.
    let expected: Vec<String> = runs.iter().map(|(id, _)| format!("ledger-{id}")).collect();
    let mut expected_sorted = expected.clone();
    expected_sorted.sort();
    assert_eq!(entries(&results), expected_sorted);
    for ((id, text), ledger_dir) in runs.iter().zip(&expected) {
        let job_dir = results.join(ledger_dir).join("1");
        let manifest = manifest(&job_dir.join("_manifest.json"));
        assert_eq!(manifest["ledger"], id.as_str());
        let url = manifest["objects"][0]["url"].as_str().unwrap();
        let path = url.strip_prefix("file://").unwrap();
        assert!(
            path.starts_with(&format!("{}/attempt-", job_dir.display())),
            "{url}"
        );
        let sum = std::fs::read_to_string(path).unwrap();
        let hash = sha256_hex(text.as_bytes());
        assert_eq!(sum, format!("{hash}  ./a.txt\n"));
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    let output = Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(bytes)?;
            child.wait_with_output()
        })
        .unwrap();
    String::from_utf8(output.stdout).unwrap()[..64].to_string()
}

#[test]
fn drover_local_says_where_its_ledger_is_and_ledgers_never_share_a_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results");
    let local = |data_dir: &Path, word: &str| {
        let file = dir.path().join(format!("{word}.jsonl"));
        std::fs::write(
            &file,
            format!(
                r#"{{"cmd": ["sh", "-c", "mkdir -p out && echo {word} > out/word.txt"], "outputs": {{"from": "out", "to": "file://{}/"}}}}"#,
                results.display()
            ) + "\n",
        )
        .unwrap();
        let output = Command::new(CLI)
            .args(["local", "--workers", "1", "--json", "--data-dir"])
            .arg(data_dir)
            .arg(&file)
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", stderr_of(&output));
        let summary: serde_json::Value = serde_json::from_str(&stdout_of(&output)).unwrap();
        let said = stderr_of(&output);
        let id = summary["ledger"]["id"].as_str().unwrap().to_string();
        assert_eq!(said_ledger(&output), id);
        assert!(
            said.contains(&format!("in {}", data_dir.display())) && !said.contains("temporary"),
            "{said}"
        );
        assert_eq!(summary["ledger"]["data_dir"], path_str(data_dir));
        assert_eq!(summary["ledger"]["kept"], true);
        (id, summary)
    };
    let (one, first) = local(&dir.path().join("one"), "apple");
    let (two, second) = local(&dir.path().join("two"), "pear");
    assert_ne!(one, two);
    assert_eq!(first["jobs"][0]["id"], 1);
    assert_eq!(second["jobs"][0]["id"], 1);
    // The first ledger again: its id, and its job ids going on.
    let (again, third) = local(&dir.path().join("one"), "plum");
    assert_eq!(again, one);
    assert_eq!(third["jobs"][0]["id"], 2);

    for (id, job, word) in [(&one, 1, "apple"), (&two, 1, "pear"), (&one, 2, "plum")] {
        let job_dir = results.join(format!("ledger-{id}")).join(job.to_string());
        let manifest = manifest(&job_dir.join("_manifest.json"));
        let url = manifest["objects"][0]["url"].as_str().unwrap();
        assert!(
            url.starts_with(&format!("file://{}/attempt-", job_dir.display())),
            "{url}"
        );
        let path = url.strip_prefix("file://").unwrap();
        assert_eq!(std::fs::read_to_string(path).unwrap(), format!("{word}\n"));
        // Only the recorded attempt's directory beside the manifest.
        assert_eq!(entries(&job_dir).len(), 2, "{:?}", entries(&job_dir));
    }
    assert_eq!(entries(&results), {
        let mut both = vec![format!("ledger-{one}"), format!("ledger-{two}")];
        both.sort();
        both
    });
}
