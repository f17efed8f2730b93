//! A miss submits the work and waits at most `async_timeout`. Late work answers a processing reference whose ref id
//! is where the value lands. The timeout never restarts or duplicates the work.

use std::sync::LazyLock;
use std::time::Duration;

use refcache::{MemoryBackendConfig, MemoryTaskBackend, RefCache, TaskStatus, cached};
use tokio::time::Instant;

static CACHE: LazyLock<RefCache> = LazyLock::new(RefCache::new);
#[path = "support/runs.rs"]
mod support;
use support::{bump, runs};

#[deny(clippy::all, unused_braces)]
#[cached(async_timeout = 1.0, cache = CACHE)]
async fn slow(n: u64, seconds: u64) -> Result<u64, String> {
    bump(n);
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    Ok(n * 2)
}

#[tokio::test(start_paused = true)]
async fn late_work_answers_a_processing_reference_at_the_timeout() {
    let start = Instant::now();
    let response = slow(1, 3).await.unwrap();
    assert_eq!(
        start.elapsed(),
        Duration::from_secs(1),
        "the caller waits exactly async_timeout"
    );
    assert_eq!(
        response.status(),
        TaskStatus::Processing,
        "processing once started, deterministically"
    );
    assert!(!response.is_complete());
    let json = response.to_json();
    assert_eq!(json["is_async"], true);
    assert_eq!(json["is_complete"], false);

    // The reference is live at once, and it is where the value lands.
    let ref_id = response.ref_id().to_string();
    let polled = CACHE.get_cached_result(&ref_id).await.unwrap();
    assert_eq!(polled.status(), TaskStatus::Processing);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let done = CACHE.get_cached_result(&ref_id).await.unwrap();
    assert_eq!(done.value_as::<u64>().unwrap(), Some(2));
    assert_eq!(done.ref_id().as_str(), ref_id);
}

#[tokio::test(start_paused = true)]
async fn a_timed_out_call_runs_its_work_exactly_once() {
    let response = slow(2, 5).await.unwrap();
    assert_eq!(response.status(), TaskStatus::Processing);
    // Long after the work is done: still one execution, and the next call is a hit under the same ref id.
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(runs(2), 1);
    let again = slow(2, 5).await.unwrap();
    assert_eq!(again.value_as::<u64>().unwrap(), Some(4));
    assert_eq!(again.ref_id(), response.ref_id());
    assert_eq!(runs(2), 1, "the hit ran nothing");
}

#[tokio::test(start_paused = true)]
async fn work_done_in_time_answers_the_value_at_once() {
    let start = Instant::now();
    let response = slow(3, 0).await.unwrap();
    assert!(start.elapsed() < Duration::from_secs(1));
    assert!(response.is_complete());
    assert_eq!(response.value_as::<u64>().unwrap(), Some(6));
}

static ONE_WORKER: LazyLock<RefCache> = LazyLock::new(|| {
    let mut config = MemoryBackendConfig::default();
    config.max_workers = 1;
    RefCache::builder()
        .backend(std::sync::Arc::new(MemoryTaskBackend::new(config)))
        .unwrap()
});

#[cached(async_timeout = 1.0, cache = ONE_WORKER)]
async fn occupy(id: u32, seconds: u64) -> u32 {
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    id
}

#[tokio::test(start_paused = true)]
async fn pending_only_when_queued_behind_the_worker_limit() {
    let first = occupy(1, 10).await.unwrap();
    assert_eq!(first.status(), TaskStatus::Processing);
    let second = occupy(2, 1).await.unwrap();
    assert_eq!(
        second.status(),
        TaskStatus::Pending,
        "queued behind max_workers = 1"
    );
    let json = second.to_json();
    assert_eq!(json["message"], "Task is queued and will start shortly");
    assert_eq!(json["started_at"], serde_json::Value::Null);
    tokio::time::sleep(Duration::from_secs(12)).await;
    let done = ONE_WORKER
        .get_cached_result(second.ref_id().as_str())
        .await
        .unwrap();
    assert_eq!(done.value_as::<u32>().unwrap(), Some(2));
}

/// Hands the blocking function below its release, one call at a time.
static RELEASE: LazyLock<std::sync::Mutex<Option<std::sync::mpsc::Receiver<()>>>> =
    LazyLock::new(Default::default);

/// Blocks its thread (no `.await` at all) until the test releases it: CPU-bound work written without a yield.
#[cached(async_timeout = 0.1, cache = CACHE)]
async fn blocks_its_thread(n: u64) -> u64 {
    let release = RELEASE
        .lock()
        .unwrap()
        .take()
        .expect("one release per call");
    release.recv().expect("released");
    n
}

/// The timeout holds even for work that never yields: the work runs on a runtime thread of its own, so the caller
/// answers with a reference at `async_timeout` while the work still holds its thread. (A first poll of the work in
/// the caller's task would make the caller wait for the whole of it.) The test releases the work only once it has
/// the reference, so a caller that waited for the work would never answer: the watchdog fails the test instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_that_never_yields_still_answers_a_reference_at_the_timeout() {
    let (release, wait) = std::sync::mpsc::channel();
    *RELEASE.lock().unwrap() = Some(wait);
    let call = tokio::spawn(blocks_its_thread(7));
    let response = tokio::time::timeout(Duration::from_secs(60), call)
        .await
        .inspect_err(|_| {
            // Unblock the work so that the runtime can shut down, then fail.
            let _ = release.send(());
        })
        .expect("the caller answers at async_timeout, not when the work ends")
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), TaskStatus::Processing);
    release.send(()).unwrap();
    let ref_id = response.ref_id().to_string();
    let start = std::time::Instant::now();
    loop {
        let polled = CACHE.get_cached_result(&ref_id).await.unwrap();
        if polled.is_complete() {
            assert_eq!(polled.value_as::<u64>().unwrap(), Some(7));
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "done within 30 s of its release"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
