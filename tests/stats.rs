//! `stats()` reports totals by status, running/queued/capacity, executions, hits, misses, coalesced calls,
//! retries, cancellations and timeouts.

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use refcache::{MemoryBackendConfig, MemoryTaskBackend, RefCache, TaskStatus, cached};

static CACHE: LazyLock<RefCache> = LazyLock::new(|| {
    let mut config = MemoryBackendConfig::default();
    config.max_workers = 1;
    RefCache::builder()
        .backend(Arc::new(MemoryTaskBackend::new(config)))
        .unwrap()
});

#[cached(cache = CACHE, async_timeout = 0.1, max_retries = 1, retry_backoff = 0.1)]
async fn job(id: u32, seconds: u64, fail: bool) -> Result<u32, String> {
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    if fail { Err("no".into()) } else { Ok(id) }
}

#[cached(cache = CACHE, async_timeout = 0.1, execution_timeout = 1.0)]
async fn too_slow(id: u32) -> u32 {
    tokio::time::sleep(Duration::from_secs(60)).await;
    id
}

#[tokio::test(start_paused = true)]
async fn stats_count_everything() {
    job(1, 0, false).await.unwrap(); // complete: 1 execution, 1 miss
    job(1, 0, false).await.unwrap(); // a hit
    job(2, 0, true).await.unwrap(); // failed after 1 retry
    too_slow(3).await.unwrap(); // times out at 1 s, and keeps its worker through the 5 s grace period
    tokio::time::sleep(Duration::from_secs(7)).await;
    let running = job(4, 100, false).await.unwrap(); // running
    let (queued, joined) = tokio::join!(job(5, 1, false), job(5, 1, false)); // queued, and a coalesced call
    assert_eq!(queued.unwrap().ref_id(), joined.unwrap().ref_id());
    let cancelled = job(6, 1, false).await.unwrap();
    CACHE
        .cancel_task(cancelled.ref_id().as_str())
        .await
        .unwrap();

    let stats = CACHE.stats().await.unwrap();
    let by_status: BTreeMap<TaskStatus, u64> = stats.by_status.clone();
    assert_eq!(by_status.get(&TaskStatus::Complete), Some(&1), "{stats:?}");
    assert_eq!(
        by_status.get(&TaskStatus::Failed),
        Some(&2),
        "the failure and the timeout: {stats:?}"
    );
    assert_eq!(
        by_status.get(&TaskStatus::Processing),
        Some(&1),
        "{stats:?}"
    );
    assert_eq!(by_status.get(&TaskStatus::Pending), Some(&1), "{stats:?}");
    assert_eq!(by_status.get(&TaskStatus::Cancelled), Some(&1), "{stats:?}");
    assert_eq!((stats.running, stats.queued, stats.capacity), (1, 1, 1));
    assert_eq!(
        stats.executions, 4,
        "jobs 1, 2, 3 and 4 started; 5 and 6 never did"
    );
    assert_eq!(stats.hits, 1);
    assert_eq!(stats.coalesced, 1);
    assert_eq!(stats.retries, 1);
    assert_eq!(stats.cancellations, 1);
    assert_eq!(stats.timeouts, 1);
    assert!(stats.misses >= 6, "{stats:?}");
    CACHE.cancel_task(running.ref_id().as_str()).await.unwrap();
}
