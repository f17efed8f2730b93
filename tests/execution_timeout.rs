//! `execution_timeout` is a hard limit on the whole execution (retries included), different from
//! `async_timeout`: past it the task fails with code `TIMEOUT`, its message, details (with the partial result) and
//! remediation, and the work is stopped as a cancel stops it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use refcache::{
    AsyncResponseFormat, MemoryBackendConfig, MemoryTaskBackend, RefCache, TaskContext, TaskStatus,
    cached,
};
use serde_json::json;
use tokio::time::Instant;

#[path = "support/runs.rs"]
mod support;
use support::{bump, runs};

static CACHE: LazyLock<RefCache> = LazyLock::new(RefCache::new);

/// Counts in steps of one second, setting its progress as the partial result.
#[cached(cache = CACHE, execution_timeout = 2.5)]
async fn count(label: String, ctx: TaskContext) -> Result<u32, refcache::Cancelled> {
    for i in 1..=100 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        ctx.set_partial_result(json!({"counted": i}));
        ctx.progress(f64::from(i), Some(100.0), format!("counted {i}"))?;
    }
    bump(&label);
    Ok(100)
}

#[tokio::test(start_paused = true)]
async fn exceeding_it_fails_the_task_with_the_timeout_error() {
    let start = Instant::now();
    let response = AsyncResponseFormat::Full
        .scope(count("timeout".into()))
        .await
        .unwrap();
    assert_eq!(
        start.elapsed(),
        Duration::from_millis(2500),
        "failed at the limit, not at the end of the work"
    );
    assert_eq!(response.status(), TaskStatus::Failed);
    let json = response.to_json();
    assert_eq!(json["error"], "Operation exceeded timeout of 2.5 seconds");
    assert_eq!(json["error_code"], "TIMEOUT");
    assert_eq!(
        json["error_details"],
        json!({"timeout_seconds": 2.5, "partial_result": {"counted": 2}})
    );
    assert_eq!(
        json["remediation"],
        "Try breaking the operation into smaller chunks or increase timeout"
    );

    // The same three fields are in the task record.
    let info = CACHE.task_info(response.ref_id().as_str()).await.unwrap();
    let error = info.error.unwrap();
    assert_eq!(error.code.as_deref(), Some("TIMEOUT"));
    assert_eq!(
        error.details.unwrap()["partial_result"],
        json!({"counted": 2})
    );
    assert!(error.remediation.is_some());

    // The work was stopped: it never reached its end.
    tokio::time::sleep(Duration::from_secs(200)).await;
    assert_eq!(runs("timeout"), 0);
    assert!(CACHE.stats().await.unwrap().timeouts >= 1);
}

static STOPPED: AtomicBool = AtomicBool::new(false);

struct SetOnDrop;
impl Drop for SetOnDrop {
    fn drop(&mut self) {
        STOPPED.store(true, Ordering::SeqCst);
    }
}

/// Ignores cancellation entirely.
#[cached(cache = CACHE, execution_timeout = 1.0)]
async fn stubborn(n: u32) -> u32 {
    let _guard = SetOnDrop;
    tokio::time::sleep(Duration::from_secs(3600)).await;
    n
}

#[tokio::test(start_paused = true)]
async fn a_task_that_ignores_the_token_is_dropped_after_the_grace_period() {
    let response = stubborn(1).await.unwrap();
    assert_eq!(response.error().unwrap().code.as_deref(), Some("TIMEOUT"));
    assert!(
        !STOPPED.load(Ordering::SeqCst),
        "still within the grace period"
    );
    tokio::time::sleep(Duration::from_secs(6)).await; // the default grace is 5 s
    assert!(
        STOPPED.load(Ordering::SeqCst),
        "aborted after the grace period"
    );
}

#[cached(cache = CACHE, execution_timeout = 3.0, max_retries = 10, retry_backoff = 1.0)]
async fn retries_forever(key: String) -> Result<u32, String> {
    bump(&key);
    Err("nope".into())
}

#[tokio::test(start_paused = true)]
async fn the_limit_covers_retries() {
    let start = Instant::now();
    let response = retries_forever("retrying".into()).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(3));
    assert_eq!(response.error().unwrap().code.as_deref(), Some("TIMEOUT"));
    assert!(runs("retrying") < 11, "stopped before all retries ran");
}

static WITH_DEFAULT: LazyLock<RefCache> = LazyLock::new(|| {
    let mut config = MemoryBackendConfig::default();
    config.default_execution_timeout = Some(Duration::from_secs(4));
    RefCache::builder()
        .backend(Arc::new(MemoryTaskBackend::new(config)))
        .unwrap()
});

#[cached(cache = WITH_DEFAULT)]
async fn unlimited(n: u64) -> u64 {
    tokio::time::sleep(Duration::from_secs(n)).await;
    n
}

#[tokio::test(start_paused = true)]
async fn the_backend_sets_a_default_for_tasks_that_set_none() {
    assert!(unlimited(1).await.unwrap().is_complete());
    let response = unlimited(60).await.unwrap();
    assert_eq!(
        response.error().unwrap().message,
        "Operation exceeded timeout of 4 seconds"
    );
}

#[test]
fn the_config_sets_the_default_too() {
    let config =
        refcache::RefCacheConfig::load_from_vars([("REFCACHE_DEFAULT_EXECUTION_TIMEOUT", "30")])
            .unwrap();
    assert_eq!(
        config.memory_backend().default_execution_timeout,
        Some(Duration::from_secs(30))
    );
    let err =
        refcache::RefCacheConfig::load_from_vars([("REFCACHE_DEFAULT_EXECUTION_TIMEOUT", "-1")])
            .unwrap_err();
    assert!(
        err.to_string().contains("default_execution_timeout"),
        "{err}"
    );
}
