//! A task whose tokio runtime shuts down before it finishes is marked failed, never left `processing` forever.

use std::sync::LazyLock;
use std::time::Duration;

use refcache::{RefCache, TaskStatus, cached};

static CACHE: LazyLock<RefCache> = LazyLock::new(RefCache::new);

#[cached(async_timeout = 0.05, cache = CACHE)]
async fn long(n: u32) -> u32 {
    tokio::time::sleep(Duration::from_secs(3600)).await;
    n
}

#[test]
fn a_task_orphaned_by_its_runtime_fails_clearly() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let response = rt.block_on(long(1)).unwrap();
    assert_eq!(response.status(), TaskStatus::Processing);
    drop(rt);

    let other = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let polled = other
        .block_on(CACHE.get_cached_result(response.ref_id().as_str()))
        .unwrap();
    assert_eq!(polled.status(), TaskStatus::Failed);
    assert_eq!(
        polled.error().unwrap().code.as_deref(),
        Some("RUNTIME_SHUTDOWN")
    );
    // The key is free again: a new call runs afresh.
    let again = other.block_on(long(1)).unwrap();
    assert_ne!(again.ref_id(), response.ref_id());
}
