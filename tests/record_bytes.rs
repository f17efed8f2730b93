//! Finished task records are bounded in bytes, not only in count (#15 §2): a failed task keeps its arguments (to
//! re-run it with `retry_task`), and 300 failed calls with 1 MiB arguments kept 305 MiB before. Now
//! `max_record_bytes` (64 MiB by default) evicts the oldest records first, and stats report `record_bytes` and
//! `value_bytes`.

use std::sync::{Arc, LazyLock};

use refcache::{
    DEFAULT_MAX_RECORD_BYTES, MemoryBackendConfig, MemoryTaskBackend, RefCache, RefCacheError,
    TaskStatus, cached,
};

/// The default record bound; arguments up to 2 MiB (the default limit is 1 MiB, and the test's are just over it
/// as canonical JSON).
static CACHE: LazyLock<RefCache> = LazyLock::new(|| {
    RefCache::builder()
        .max_argument_bytes(2 << 20)
        .backend(Arc::new(MemoryTaskBackend::new(
            MemoryBackendConfig::default(),
        )))
        .expect("a valid cache")
});

const MIB: usize = 1 << 20;

#[cached(cache = CACHE)]
async fn rejects(blob: String) -> Result<u32, String> {
    Err(format!("refused {} bytes", blob.len()))
}

#[cached(cache = CACHE)]
async fn small(n: u32) -> u32 {
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_failed_calls_of_1_mib_stay_within_the_record_bound() {
    let mut refs = Vec::new();
    for i in 0..300 {
        let blob = format!("{i:04}{}", "a".repeat(MIB - 4));
        let response = rejects(blob).await.unwrap();
        assert_eq!(response.status(), TaskStatus::Failed, "call {i}");
        refs.push(response.ref_id().clone());
    }
    small(7).await.unwrap();
    let stats = CACHE.backend().stats().await.unwrap();
    let failed = stats
        .by_status
        .get(&TaskStatus::Failed)
        .copied()
        .unwrap_or(0);
    eprintln!(
        "record_bytes: {failed} failed records kept, {} MiB of records, {} bytes of values",
        stats.record_bytes >> 20,
        stats.value_bytes
    );
    assert!(
        stats.record_bytes <= DEFAULT_MAX_RECORD_BYTES,
        "records weigh {} bytes, more than the bound {DEFAULT_MAX_RECORD_BYTES}",
        stats.record_bytes
    );
    assert!(
        stats.record_bytes >= DEFAULT_MAX_RECORD_BYTES / 2,
        "the bound is used, not emptied: {} bytes",
        stats.record_bytes
    );
    assert!(
        (40..=64).contains(&failed),
        "about 63 records of 1 MiB fit in 64 MiB: {failed} kept"
    );
    assert!(stats.value_bytes > 0, "the small value is weighed");
    // The newest records stay and poll; the oldest went first.
    for newest in &refs[300 - failed as usize..] {
        let polled = CACHE.get_cached_result(newest.as_ref()).await.unwrap();
        assert_eq!(polled.status(), TaskStatus::Failed, "{newest} is kept");
    }
    for oldest in &refs[..300 - failed as usize] {
        assert!(
            matches!(
                CACHE.get_cached_result(oldest.as_ref()).await,
                Err(RefCacheError::NotFound)
            ),
            "{oldest} was evicted"
        );
    }
}
