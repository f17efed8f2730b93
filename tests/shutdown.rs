//! `shutdown(deadline)` stops taking work, lets running tasks finish until the deadline, then cancels the rest
//! (message `shutdown`), and leaves no tokio task or thread of refcache's running.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use refcache::{
    BackendError, MemoryBackendConfig, MemoryTaskBackend, RefCache, RefCacheError, TaskContext,
    TaskStatus, cached,
};

static CACHE: LazyLock<RefCache> = LazyLock::new(|| {
    let mut config = MemoryBackendConfig::default();
    config.max_workers = 3;
    RefCache::builder()
        .backend(Arc::new(MemoryTaskBackend::new(config)))
        .unwrap()
});

/// Cooperative: checks for cancellation every 50 ms, forever.
#[cached(cache = CACHE, async_timeout = 0.05)]
async fn cooperative(id: u32, ctx: TaskContext) -> Result<u32, refcache::Cancelled> {
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        ctx.progress(0.0, None, "")?;
        let _ = id;
    }
}

/// Ignores cancellation.
#[cached(cache = CACHE, async_timeout = 0.05)]
async fn stubborn(id: u32) -> u32 {
    tokio::time::sleep(Duration::from_secs(3600)).await;
    id
}

/// Finishes well within the deadline.
#[cached(cache = CACHE, async_timeout = 0.05)]
fn quick_sync(millis: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(millis));
    millis
}

/// Threads of this process named `refcache-rt` (the cache's own runtime).
fn refcache_threads() -> usize {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.trim().starts_with("refcache-rt"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_cancels_the_rest_and_leaves_nothing_running() {
    let cooperative = cooperative(1).await.unwrap();
    let stubborn = stubborn(2).await.unwrap();
    let sync = tokio::task::spawn_blocking(|| quick_sync(200))
        .await
        .unwrap()
        .unwrap();
    let queued = self::stubborn(3).await.unwrap();
    assert_eq!(queued.status(), TaskStatus::Pending, "3 workers are busy");
    if cfg!(target_os = "linux") {
        assert!(
            refcache_threads() > 0,
            "the sync call started the cache's own runtime"
        );
    }

    CACHE.shutdown(Duration::from_secs(2)).await.unwrap();

    // The sync task finished within the deadline; the rest were cancelled with the message `shutdown`.
    let info = |r: &refcache::CachedResponse| {
        let id = r.ref_id().to_string();
        async move { CACHE.task_info(&id).await.unwrap() }
    };
    assert_eq!(info(&sync).await.status, TaskStatus::Complete);
    for response in [&cooperative, &stubborn, &queued] {
        let info = info(response).await;
        assert_eq!(info.status, TaskStatus::Cancelled, "{info:?}");
        assert_eq!(info.status_message.as_deref(), Some("shutdown"));
    }

    // New work is refused, clearly, by async and sync callers alike.
    let err = self::stubborn(4).await.unwrap_err();
    assert!(
        matches!(err, RefCacheError::Backend(BackendError::ShuttingDown)),
        "{err:?}"
    );
    let err = tokio::task::spawn_blocking(|| quick_sync(1))
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(err, RefCacheError::Backend(BackendError::ShuttingDown)),
        "{err:?}"
    );

    // No task of ours is left on this runtime, and no thread of the cache's own runtime.
    let metrics = tokio::runtime::Handle::current().metrics();
    let give_up = std::time::Instant::now() + Duration::from_secs(10);
    while metrics.num_alive_tasks() > 0 {
        assert!(
            std::time::Instant::now() < give_up,
            "{} tasks still alive",
            metrics.num_alive_tasks()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if cfg!(target_os = "linux") {
        assert_eq!(
            refcache_threads(),
            0,
            "the cache's own runtime threads were joined"
        );
    }
}
