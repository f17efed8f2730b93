//! `get_cached_result(ref_id)`, as a free function on the process-wide cache and as a `RefCache` method: the async
//! response while pending or processing, failed with the error, cancelled, the value once complete; an opaque
//! error for unknown or expired ids, and its own error for malformed ones.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use refcache::{
    CancelOutcome, INACCESSIBLE_REFERENCE, MemoryBackendConfig, MemoryTaskBackend, RefCache,
    RefCacheError, TaskStatus, cached,
};

#[cached(async_timeout = 1.0)]
async fn on_default_cache(seconds: u64) -> u64 {
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    seconds
}

#[tokio::test(start_paused = true)]
async fn the_free_function_polls_the_process_wide_cache() {
    let response = on_default_cache(3).await.unwrap();
    let ref_id = response.ref_id().to_string();
    assert!(ref_id.starts_with("refcache:"), "{ref_id}");
    let processing = refcache::get_cached_result(&ref_id).await.unwrap();
    assert_eq!(processing.status(), TaskStatus::Processing);
    assert_eq!(
        processing.to_json()["message"],
        format!("Task is processing (ref_id={ref_id})")
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let complete = refcache::get_cached_result(&ref_id).await.unwrap();
    assert_eq!(complete.value_as::<u64>().unwrap(), Some(3));
    let via_method = refcache::default_cache()
        .unwrap()
        .get_cached_result(&ref_id)
        .await
        .unwrap();
    assert_eq!(via_method.to_json(), complete.to_json());
}

static ONE_WORKER: LazyLock<RefCache> = LazyLock::new(|| {
    let mut config = MemoryBackendConfig::default();
    config.max_workers = 1;
    RefCache::builder()
        .name("polls")
        .backend(Arc::new(MemoryTaskBackend::new(config)))
        .unwrap()
});

#[cached(async_timeout = 0.5, cache = ONE_WORKER)]
async fn step(id: u32, seconds: u64, fail: bool) -> Result<u32, String> {
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    if fail {
        Err(format!("step {id} broke"))
    } else {
        Ok(id)
    }
}

#[tokio::test(start_paused = true)]
async fn every_status_answers_its_own_response() {
    let running = step(1, 10, false).await.unwrap();
    let queued = step(2, 1, true).await.unwrap();
    let doomed = step(3, 1, false).await.unwrap();
    let poll = |r: &refcache::CachedResponse| {
        let ref_id = r.ref_id().to_string();
        async move { ONE_WORKER.get_cached_result(&ref_id).await.unwrap() }
    };
    assert_eq!(poll(&running).await.status(), TaskStatus::Processing);
    assert_eq!(poll(&queued).await.status(), TaskStatus::Pending);
    assert_eq!(
        ONE_WORKER
            .cancel_task(doomed.ref_id().as_str())
            .await
            .unwrap(),
        CancelOutcome::Cancelled
    );
    let cancelled = poll(&doomed).await;
    assert_eq!(cancelled.status(), TaskStatus::Cancelled);
    assert_eq!(cancelled.to_json()["message"], "Task was cancelled");

    tokio::time::sleep(Duration::from_secs(20)).await;
    assert_eq!(poll(&running).await.value_as::<u32>().unwrap(), Some(1));
    let failed = poll(&queued).await;
    assert_eq!(failed.status(), TaskStatus::Failed);
    assert_eq!(failed.to_json()["message"], "Task failed: step 2 broke");
    assert_eq!(
        poll(&doomed).await.status(),
        TaskStatus::Cancelled,
        "cancelled is sticky"
    );
}

#[tokio::test]
async fn unknown_and_foreign_ids_get_the_opaque_error() {
    let cache = RefCache::new();
    for id in [
        "refcache:0123456789abcdef0123456789abcdef",
        "othercache:0123456789abcdef0123456789abcdef",
    ] {
        let err = cache.get_cached_result(id).await.unwrap_err();
        assert!(matches!(err, RefCacheError::NotFound), "{err:?}");
        assert_eq!(err.to_string(), INACCESSIBLE_REFERENCE);
        assert_eq!(err.to_string(), "Invalid or inaccessible reference");
    }
    let err = refcache::get_cached_result("refcache:0123456789abcdef0123456789abcdef")
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "Invalid or inaccessible reference");
}

#[tokio::test]
async fn malformed_ids_get_their_own_clear_error() {
    let cache = RefCache::new();
    for id in [
        "",
        "not-a-ref",
        "refcache:XYZ",
        "refcache:0123456789ABCDEF0123456789ABCDEF",
    ] {
        let err = cache.get_cached_result(id).await.unwrap_err();
        assert!(
            matches!(err, RefCacheError::MalformedRefId { .. }),
            "{id}: {err:?}"
        );
        assert!(
            err.to_string()
                .contains("expected `<cache-name>:<32 lowercase hex digits>`"),
            "{err}"
        );
    }
}

static SHORT_LIVED: LazyLock<RefCache> = LazyLock::new(RefCache::new);

#[cached(cache = SHORT_LIVED, ttl = 0.3)]
async fn ephemeral(n: u32) -> u32 {
    n
}

/// moka expires entries by the wall clock, so this test waits for real, with a wide margin (5×).
#[tokio::test]
async fn an_expired_value_is_gone_with_the_opaque_error() {
    let response = ephemeral(1).await.unwrap();
    let ref_id = response.ref_id().to_string();
    assert!(
        SHORT_LIVED
            .get_cached_result(&ref_id)
            .await
            .unwrap()
            .is_complete()
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let err = SHORT_LIVED.get_cached_result(&ref_id).await.unwrap_err();
    assert_eq!(err.to_string(), "Invalid or inaccessible reference");
    // And the next call runs again, under a new reference.
    let again = ephemeral(1).await.unwrap();
    assert_ne!(again.ref_id().as_str(), ref_id);
}
