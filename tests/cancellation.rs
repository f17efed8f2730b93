//! Cancellation through the attribute: cooperative (the tool sees it through its `TaskContext`), sticky (a late
//! result is discarded, not cached), idempotent, with distinct answers for unknown and finished tasks. A blocking
//! sync tool cannot be aborted: cancelling only marks it.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use refcache::{CancelOutcome, RefCache, TaskContext, TaskStatus, cached};

static CACHE: LazyLock<RefCache> = LazyLock::new(RefCache::new);
static SAW_CANCEL: AtomicBool = AtomicBool::new(false);

#[cached(cache = CACHE, async_timeout = 0.5)]
async fn count_to(to: u32, ctx: TaskContext) -> Result<u32, refcache::Cancelled> {
    for i in 1..=to {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if let Err(cancelled) = ctx.progress(
            f64::from(i),
            Some(f64::from(to)),
            format!("counted {i} of {to}"),
        ) {
            SAW_CANCEL.store(true, Ordering::SeqCst);
            return Err(cancelled);
        }
    }
    Ok(to)
}

#[tokio::test(start_paused = true)]
async fn a_cooperative_tool_stops_and_the_cancel_is_sticky() {
    let response = count_to(100).await.unwrap();
    let ref_id = response.ref_id().to_string();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        CACHE.cancel_task(&ref_id).await.unwrap(),
        CancelOutcome::Cancelled
    );
    assert_eq!(
        CACHE.cancel_task(&ref_id).await.unwrap(),
        CancelOutcome::Cancelled,
        "idempotent"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        SAW_CANCEL.load(Ordering::SeqCst),
        "progress() told the tool"
    );
    let polled = CACHE.get_cached_result(&ref_id).await.unwrap();
    assert_eq!(polled.status(), TaskStatus::Cancelled);
    assert_eq!(CACHE.stats().await.unwrap().cancellations, 1);
    // A new call runs afresh instead of joining the cancelled execution.
    let again = count_to(100).await.unwrap();
    assert_ne!(again.ref_id().as_str(), ref_id);
    CACHE.cancel_task(again.ref_id().as_str()).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn unknown_and_finished_tasks_get_distinct_answers() {
    assert_eq!(
        CACHE
            .cancel_task("refcache:0123456789abcdef0123456789abcdef")
            .await
            .unwrap(),
        CancelOutcome::NotFound
    );
    let done = count_to(0).await.unwrap();
    assert!(done.is_complete());
    assert_eq!(
        CACHE.cancel_task(done.ref_id().as_str()).await.unwrap(),
        CancelOutcome::AlreadyFinished(TaskStatus::Complete)
    );
}

static FINISHED: AtomicBool = AtomicBool::new(false);
/// The blocking tool's own cache: its cancel must not count in the other test's `stats().cancellations`, which runs
/// beside it (the two raced on one cache, and lost once the tests ran in another order, in the folded suite).
static BLOCKING_CACHE: LazyLock<RefCache> = LazyLock::new(RefCache::new);

/// A blocking tool that never looks at cancellation.
#[cached(cache = BLOCKING_CACHE, async_timeout = 0.1)]
fn blocking(millis: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(millis));
    FINISHED.store(true, Ordering::SeqCst);
    millis
}

#[test]
fn a_blocking_sync_tool_is_only_marked_and_its_late_result_is_discarded() {
    let response = blocking(400).unwrap();
    assert_eq!(response.status(), TaskStatus::Processing);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ref_id = response.ref_id().to_string();
    assert_eq!(
        rt.block_on(BLOCKING_CACHE.cancel_task(&ref_id)).unwrap(),
        CancelOutcome::Cancelled
    );
    // The thread runs to its end (it cannot be aborted)...
    let give_up = std::time::Instant::now() + Duration::from_secs(30);
    while !FINISHED.load(Ordering::SeqCst) {
        assert!(std::time::Instant::now() < give_up);
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(50));
    // ...but its result is discarded: the task stays cancelled and nothing is cached.
    assert_eq!(
        rt.block_on(BLOCKING_CACHE.get_cached_result(&ref_id))
            .unwrap()
            .status(),
        TaskStatus::Cancelled
    );
    let again = blocking(400).unwrap();
    assert_ne!(
        again.ref_id().as_str(),
        ref_id,
        "not a hit on the discarded result"
    );
}
