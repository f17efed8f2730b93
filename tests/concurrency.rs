//! Concurrency and queueing: backend-wide `max_workers`, per-task `max_concurrent`, `priority` (higher first, FIFO
//! within one), queue positions in the standard format, and a bounded queue that refuses with `QueueFull`.

use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use refcache::{
    BackendError, MemoryBackendConfig, MemoryTaskBackend, RefCache, RefCacheError, TaskStatus,
    cached,
};

fn cache(max_workers: usize, max_queued: usize) -> RefCache {
    let mut config = MemoryBackendConfig::default();
    config.max_workers = max_workers;
    config.max_queued = max_queued;
    RefCache::builder()
        .backend(Arc::new(MemoryTaskBackend::new(config)))
        .unwrap()
}

static WIDE: LazyLock<RefCache> = LazyLock::new(|| cache(8, 100));

#[cached(cache = WIDE, async_timeout = 0.1, max_concurrent = 1)]
async fn one_at_a_time(id: u32) -> u32 {
    tokio::time::sleep(Duration::from_secs(10)).await;
    id
}

#[cached(cache = WIDE, async_timeout = 0.1)]
async fn unlimited(id: u32) -> u32 {
    tokio::time::sleep(Duration::from_secs(1)).await;
    id
}

#[tokio::test(start_paused = true)]
async fn max_concurrent_limits_one_task_without_blocking_others() {
    let first = one_at_a_time(1).await.unwrap();
    let second = one_at_a_time(2).await.unwrap();
    let third = one_at_a_time(3).await.unwrap();
    assert_eq!(first.status(), TaskStatus::Processing);
    assert_eq!(
        second.status(),
        TaskStatus::Pending,
        "max_concurrent = 1, though 8 workers are free"
    );
    assert_eq!(
        second.to_json()["queue_position"],
        1,
        "the standard format shows the queue position"
    );
    assert_eq!(third.to_json()["queue_position"], 2);
    // Another task is not held up behind them.
    let other = unlimited(1).await.unwrap();
    assert_eq!(other.status(), TaskStatus::Processing);
    tokio::time::sleep(Duration::from_secs(11)).await;
    let second = WIDE
        .get_cached_result(second.ref_id().as_str())
        .await
        .unwrap();
    assert_eq!(
        second.status(),
        TaskStatus::Processing,
        "it starts when the first ends"
    );
    tokio::time::sleep(Duration::from_secs(25)).await;
    assert!(
        WIDE.get_cached_result(third.ref_id().as_str())
            .await
            .unwrap()
            .is_complete()
    );
}

static ONE_WORKER: LazyLock<RefCache> = LazyLock::new(|| cache(1, 100));
static STARTS: LazyLock<Mutex<Vec<String>>> = LazyLock::new(Default::default);

#[cached(cache = ONE_WORKER, async_timeout = 0.1)]
async fn low(label: String) -> String {
    STARTS.lock().unwrap().push(label.clone());
    tokio::time::sleep(Duration::from_secs(1)).await;
    label
}

#[cached(cache = ONE_WORKER, async_timeout = 0.1, priority = 10)]
async fn high(label: String) -> String {
    STARTS.lock().unwrap().push(label.clone());
    tokio::time::sleep(Duration::from_secs(1)).await;
    label
}

#[tokio::test(start_paused = true)]
async fn higher_priority_starts_first_and_fifo_within_a_priority() {
    low("occupier".into()).await.unwrap();
    low("low-1".into()).await.unwrap();
    low("low-2".into()).await.unwrap();
    high("high-1".into()).await.unwrap();
    high("high-2".into()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let starts = STARTS.lock().unwrap().clone();
    assert_eq!(
        starts,
        vec!["occupier", "high-1", "high-2", "low-1", "low-2"]
    );
}

static TINY_QUEUE: LazyLock<RefCache> = LazyLock::new(|| cache(1, 1));

#[cached(cache = TINY_QUEUE, async_timeout = 0.1)]
async fn queued(id: u32) -> u32 {
    tokio::time::sleep(Duration::from_secs(10)).await;
    id
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_refuses_with_a_clear_error() {
    assert_eq!(queued(1).await.unwrap().status(), TaskStatus::Processing);
    assert_eq!(queued(2).await.unwrap().status(), TaskStatus::Pending);
    let err = queued(3).await.unwrap_err();
    assert!(
        matches!(
            err,
            RefCacheError::Backend(BackendError::QueueFull { max_queued: 1 })
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("raise `max_queued`"), "{err}");
    let stats = TINY_QUEUE.stats().await.unwrap();
    assert_eq!((stats.running, stats.queued, stats.capacity), (1, 1, 1));
}
