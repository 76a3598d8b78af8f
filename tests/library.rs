//! The Rust library: a coordinator and workers in one process with handlers of one's own.

use drover::client::Client;
use drover::coordinator::CoordinatorConfig;
use drover::job::{JobSpec, JobState};
use drover::local::{LocalCluster, LocalConfig};
use drover::worker::Handlers;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_handlers_run_and_a_panicking_one_fails_its_job_instead_of_hanging() {
    let dir = tempfile::tempdir().unwrap();
    let mut handlers = Handlers::stock();
    handlers.register("shout", |_context, payload| async move {
        Ok(String::from_utf8_lossy(&payload)
            .to_uppercase()
            .into_bytes())
    });
    handlers.register("boom", |_context, _payload| async move {
        if true {
            panic!("handler bug");
        }
        Ok(Vec::new())
    });
    let mut config = CoordinatorConfig::new(dir.path().join("data"));
    config.retry_backoff = Duration::from_millis(10);
    let cluster = LocalCluster::start(LocalConfig {
        coordinator: config,
        workers: 2,
        slots: 2,
        scratch_dir: dir.path().join("scratch"),
        handlers,
    })
    .unwrap();
    let mut client = Client::connect(&cluster.address, None).await.unwrap();
    let mut boom = JobSpec::call("boom", Vec::new());
    boom.max_attempts = 2;
    let submitted = client
        .submit(
            "mine",
            vec![JobSpec::call("shout", b"hello".to_vec()), boom],
        )
        .await
        .unwrap();
    let info = loop {
        let info = client
            .wait_batch(submitted.batch, Duration::from_secs(30))
            .await
            .unwrap();
        if info.done {
            break info;
        }
    };
    assert_eq!((info.succeeded, info.failed), (1, 1));
    let shout = client.job(submitted.first_job).await.unwrap();
    assert_eq!(shout.output_tail.as_deref(), Some("HELLO"));
    let boom = client.job(submitted.first_job + 1).await.unwrap();
    assert_eq!(boom.state, JobState::Failed);
    assert_eq!(boom.history.len(), 2);
    assert!(
        boom.history[0]
            .error
            .as_deref()
            .unwrap()
            .contains("handler panicked"),
        "{boom:?}"
    );
    // The workers are still there and free.
    let workers = client.workers().await.unwrap();
    assert_eq!(workers.len(), 2);
    assert!(workers.iter().all(|worker| worker.running == 0));
    cluster.stop().await;
}
