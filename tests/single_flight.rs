//! Concurrent identical calls share one execution; each waits under its own `async_timeout`.

use std::sync::LazyLock;
use std::time::Duration;

use refcache::{RefCache, TaskStatus, cached};
use tokio::time::Instant;

static CACHE: LazyLock<RefCache> = LazyLock::new(RefCache::new);
#[path = "support/runs.rs"]
mod support;
use support::{bump, runs};

#[cached(async_timeout = 1.0, cache = CACHE, name = "single_flight::work")]
async fn work(job: String) -> String {
    bump(&job);
    tokio::time::sleep(Duration::from_secs(3)).await;
    format!("done {job}")
}

/// The same task (same name and namespace), without a timeout: its callers wait for the value.
#[cached(cache = CACHE, name = "single_flight::work")]
async fn work_patiently(job: String) -> String {
    bump(&job);
    tokio::time::sleep(Duration::from_secs(3)).await;
    format!("done {job}")
}

#[tokio::test(start_paused = true)]
async fn twenty_concurrent_identical_calls_run_once() {
    let calls = (0..20).map(|_| work("index".to_owned()));
    let responses = futures::future::join_all(calls).await;
    let first = responses[0].as_ref().unwrap().ref_id().clone();
    for response in &responses {
        let response = response.as_ref().unwrap();
        assert_eq!(response.status(), TaskStatus::Processing);
        assert_eq!(
            response.ref_id(),
            &first,
            "every caller gets the same reference"
        );
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(runs("index"), 1, "20 identical calls, 1 execution");
    let stats = CACHE.stats().await.unwrap();
    assert!(stats.coalesced >= 19, "{stats:?}");
}

#[tokio::test(start_paused = true)]
async fn joiners_wait_under_their_own_timeouts() {
    let start = Instant::now();
    let (timed, patient) = tokio::join!(work("join".to_owned()), async {
        // Join a moment later, so the first call surely started the execution.
        tokio::time::sleep(Duration::from_millis(10)).await;
        let r = work_patiently("join".to_owned()).await;
        (r, start.elapsed())
    });
    let timed = timed.unwrap();
    let (patient, patient_elapsed) = (patient.0.unwrap(), patient.1);
    assert_eq!(
        timed.status(),
        TaskStatus::Processing,
        "returned at its 1 s timeout"
    );
    assert!(patient.is_complete(), "waited for the value");
    assert_eq!(
        patient.value_as::<String>().unwrap().as_deref(),
        Some("done join")
    );
    assert_eq!(
        patient_elapsed,
        Duration::from_secs(3),
        "joined the running execution, did not start another"
    );
    assert_eq!(patient.ref_id(), timed.ref_id());
    assert_eq!(runs("join"), 1);
}
