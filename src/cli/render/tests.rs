//! Tests of the views as people read them.

use super::*;

#[test]
fn tables_align_columns() {
    let text = table(&["A", "LONGER"], &[vec!["wide cell".into(), "x".into()]]);
    assert_eq!(text, "A          LONGER\nwide cell  x");
}

#[test]
fn etas_say_done_a_duration_or_unknown() {
    let mut batch: BatchInfo = serde_json::from_value(serde_json::json!({
        "id": 1, "name": "b", "total": 4, "pending": 2, "running": 1, "succeeded": 1,
        "failed": 0, "cancelled": 0, "done": false, "submitted_at_ms": 0,
        "started_at_ms": null, "finished_at_ms": null, "jobs_per_s": 0.0, "eta_s": null
    }))
    .unwrap();
    assert_eq!(eta(&batch), "-");
    assert_eq!(percent(&batch), 25.0);
    batch.eta_s = Some(245);
    assert_eq!(eta(&batch), "4m05s");
    batch.done = true;
    assert_eq!(eta(&batch), "done");
}

#[test]
fn bars_fill_in_proportion() {
    assert_eq!(bar(0, 10, 10), "[..........]");
    assert_eq!(bar(5, 10, 10), "[#####.....]");
    assert_eq!(bar(12, 10, 4), "[####]");
    assert_eq!(bar(0, 0, 4), "[####]");
}

#[test]
fn rates_read_with_a_few_digits_in_a_fitting_unit() {
    assert_eq!(rate(0.0), "-");
    assert_eq!(rate(f64::NAN), "-");
    assert_eq!(rate(1530.4), "1530/s");
    assert_eq!(rate(12.54), "12.5/s");
    assert_eq!(rate(0.9954), "59.7/min");
    assert_eq!(rate(0.5), "30.0/min");
    assert_eq!(rate(0.01), "36.0/h");
}

#[test]
fn a_failed_jobs_last_attempt_is_not_among_the_earlier_ones() {
    let attempt = |number: u32, outcome: &str| AttemptRecord {
        attempt: number,
        worker: "w1".into(),
        outcome: outcome.into(),
        started_at_ms: 0,
        finished_at_ms: 5,
        exit_code: Some(1),
        error: Some(format!("exit {number}")),
    };
    let mut job: JobInfo = serde_json::from_value(serde_json::json!({
        "id": 7, "batch": 1, "name": null, "state": "failed", "attempts": 4,
        "lost_attempts": 0, "worker": "w1", "exit_code": 1, "duration_ms": 5,
        "queued_at_ms": 0, "started_at_ms": 0, "finished_at_ms": 5, "output_tail": null,
        "error": "failed", "duplicates": 0, "outputs": [], "history": []
    }))
    .unwrap();
    job.history = vec![
        attempt(1, "failed"),
        attempt(2, "lost"),
        attempt(3, "failed"),
        attempt(4, "failed"),
    ];
    let shown = super::job(&job);
    assert!(
        shown.contains("attempts   4 (3 failed, 1 lost with their worker)"),
        "{shown}"
    );
    let (earlier, last) = shown.split_once("last attempt:").unwrap();
    assert!(
        earlier.contains("#3 on w1") && !earlier.contains("#4"),
        "{shown}"
    );
    assert!(
        last.contains("#4 on w1") && last.contains("(exit 4)"),
        "{shown}"
    );

    // A job that succeeded after a failure: that failure was earlier, and nothing is last.
    job.state = JobState::Succeeded;
    job.history.truncate(1);
    let shown = super::job(&job);
    assert!(
        shown.contains("attempts   4 (1 failed, 1 succeeded)"),
        "{shown}"
    );
    assert!(shown.contains("earlier attempts:\n    #1 on w1"), "{shown}");
    assert!(!shown.contains("last attempt"), "{shown}");
}

#[test]
fn durations_read_naturally() {
    assert_eq!(duration_ms(350), "350ms");
    assert_eq!(duration_ms(1_250), "1.2s");
    assert_eq!(duration_ms(245_000), "4m05s");
    assert_eq!(duration_ms(7_380_000), "2h03m");
}
