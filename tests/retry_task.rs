//! `retry_task(ref_id)` re-runs a failed task under the same ref id, and refuses clearly otherwise.

use std::sync::LazyLock;
use std::time::Duration;

use refcache::{RefCache, RefCacheError, TaskStatus, cached};

#[path = "support/runs.rs"]
mod support;
use support::{bump, runs};

static CACHE: LazyLock<RefCache> = LazyLock::new(RefCache::new);

/// Fails its first attempt for `key`, succeeds afterwards.
fn fails_once(key: &str) -> Result<usize, String> {
    bump(key);
    if runs(key) == 1 {
        Err("first attempt breaks".into())
    } else {
        Ok(runs(key))
    }
}

#[cached(cache = CACHE)]
async fn fragile(key: String) -> Result<usize, String> {
    fails_once(&key)
}

#[tokio::test(start_paused = true)]
async fn a_failed_task_runs_again_under_the_same_ref_id() {
    let failed = fragile("k".into()).await.unwrap();
    assert_eq!(failed.status(), TaskStatus::Failed);
    let ref_id = failed.ref_id().to_string();
    let restarted = CACHE.retry_task(&ref_id).await.unwrap();
    assert_eq!(restarted.as_str(), ref_id);
    tokio::time::sleep(Duration::from_millis(10)).await;
    let done = CACHE.get_cached_result(&ref_id).await.unwrap();
    assert_eq!(done.value_as::<usize>().unwrap(), Some(2));
    let info = CACHE.task_info(&ref_id).await.unwrap();
    assert_eq!(info.retry_count, 1);
    assert_eq!(info.retry_history.len(), 1);
    assert_eq!(info.retry_history[0].error, "first attempt breaks");
    // And the value answers the key now.
    assert_eq!(fragile("k".into()).await.unwrap().ref_id().as_str(), ref_id);
}

#[tokio::test(start_paused = true)]
async fn only_failed_tasks_can_be_retried() {
    let ok = fragile("never-fails".into());
    bump("never-fails"); // make the first attempt succeed
    let ok = ok.await.unwrap();
    assert!(ok.is_complete());
    let err = CACHE.retry_task(ok.ref_id().as_str()).await.unwrap_err();
    assert!(
        matches!(
            err,
            RefCacheError::NotRetryable {
                status: TaskStatus::Complete,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("only a failed task can be retried"),
        "{err}"
    );

    let err = CACHE
        .retry_task("refcache:0123456789abcdef0123456789abcdef")
        .await
        .unwrap_err();
    assert!(matches!(err, RefCacheError::NotFound));
    let err = CACHE.retry_task("garbage").await.unwrap_err();
    assert!(matches!(err, RefCacheError::MalformedRefId { .. }));
}

/// Fails its first attempt for `key` at once; later attempts take a minute.
#[cached(cache = CACHE, async_timeout = 0.1)]
async fn fragile_then_slow(key: String) -> Result<usize, String> {
    bump(&key);
    if runs(&key) == 1 {
        return Err("first attempt breaks".into());
    }
    tokio::time::sleep(Duration::from_secs(60)).await;
    Ok(runs(&key))
}

#[tokio::test(start_paused = true)]
async fn a_retry_while_the_same_call_runs_again_points_to_that_run() {
    let failed = fragile_then_slow("busy".into()).await.unwrap();
    assert_eq!(failed.status(), TaskStatus::Failed);
    // Calling again starts a new execution of the same call, still running.
    let running = fragile_then_slow("busy".into()).await.unwrap();
    assert_eq!(running.status(), TaskStatus::Processing);
    // Retrying the old failure would run the call twice at once: refused, pointing to the running one.
    let err = CACHE
        .retry_task(failed.ref_id().as_str())
        .await
        .unwrap_err();
    match &err {
        RefCacheError::AlreadyRunning { ref_id } => {
            assert_eq!(ref_id.as_str(), running.ref_id().as_str())
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("poll that reference"), "{err}");
}

static SMALL_HISTORY: LazyLock<RefCache> = LazyLock::new(|| {
    let mut config = refcache::MemoryBackendConfig::default();
    config.max_task_records = 3;
    RefCache::builder()
        .backend(std::sync::Arc::new(refcache::MemoryTaskBackend::new(
            config,
        )))
        .unwrap()
});

#[cached(cache = SMALL_HISTORY)]
async fn fragile_small(key: String) -> Result<usize, String> {
    fails_once(&key)
}

#[tokio::test(start_paused = true)]
async fn a_retried_record_survives_the_eviction_of_its_stale_history_entry() {
    let failed = fragile_small("retried".into()).await.unwrap();
    let ref_id = failed.ref_id().to_string();
    SMALL_HISTORY.retry_task(&ref_id).await.unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(
        SMALL_HISTORY
            .get_cached_result(&ref_id)
            .await
            .unwrap()
            .is_complete()
    );
    // Two more records: the history (cap 3) evicts its oldest entry, the one made for the failed run. The
    // record made when the retry completed must stay.
    fragile_small("b".into()).await.unwrap();
    fragile_small("c".into()).await.unwrap();
    let polled = SMALL_HISTORY.get_cached_result(&ref_id).await;
    assert!(polled.as_ref().is_ok_and(|r| r.is_complete()), "{polled:?}");
}
