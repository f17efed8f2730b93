//! With no `async_timeout` the caller waits until the work ends, through the same backend path as a timed call:
//! the task is pollable, cancellable and listed while the caller waits.

use std::sync::LazyLock;
use std::time::Duration;

use refcache::{CancelOutcome, RefCache, TaskContext, TaskFilter, TaskStatus, cached};
use tokio::time::Instant;

// One cache per test, so that each test finds its own running task by listing.
static CACHE: LazyLock<RefCache> = LazyLock::new(RefCache::new);
static CANCEL_CACHE: LazyLock<RefCache> = LazyLock::new(RefCache::new);

async fn crawl_pages(
    site: String,
    seconds: u64,
    ctx: TaskContext,
) -> Result<String, refcache::Cancelled> {
    for i in 0..seconds {
        ctx.progress(i as f64, Some(seconds as f64), format!("page {i}"))?;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Ok(format!("crawled {site}"))
}

#[cached(cache = CACHE)]
async fn crawl(
    site: String,
    seconds: u64,
    ctx: TaskContext,
) -> Result<String, refcache::Cancelled> {
    crawl_pages(site, seconds, ctx).await
}

#[cached(cache = CANCEL_CACHE)]
async fn crawl_forever(site: String, ctx: TaskContext) -> Result<String, refcache::Cancelled> {
    crawl_pages(site, u64::MAX, ctx).await
}

/// The ref id of the one running task of `cache`, found by listing (the caller has not returned yet).
async fn running_ref(cache: &RefCache) -> String {
    loop {
        let page = cache
            .list_tasks(TaskFilter::all().status(TaskStatus::Processing))
            .await
            .unwrap();
        if let Some(task) = page.tasks.first() {
            return task.ref_id.to_string();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn the_caller_waits_for_the_value_while_the_task_is_pollable() {
    let start = Instant::now();
    let (response, polled) = tokio::join!(crawl("example".into(), 30), async {
        let ref_id = running_ref(&CACHE).await;
        CACHE.get_cached_result(&ref_id).await.unwrap()
    });
    let response = response.unwrap();
    assert_eq!(
        start.elapsed(),
        Duration::from_secs(30),
        "waited for the whole run"
    );
    assert_eq!(
        response.value_as::<String>().unwrap().as_deref(),
        Some("crawled example")
    );
    assert_eq!(polled.status(), TaskStatus::Processing);
    assert_eq!(
        polled.ref_id(),
        response.ref_id(),
        "the waiting call's task is the polled one"
    );
}

#[tokio::test(start_paused = true)]
async fn cancelling_wakes_the_waiting_caller_with_the_cancellation() {
    let (response, outcome) = tokio::join!(crawl_forever("cancel-me".into()), async {
        let ref_id = running_ref(&CANCEL_CACHE).await;
        CANCEL_CACHE.cancel_task(&ref_id).await.unwrap()
    });
    assert_eq!(outcome, CancelOutcome::Cancelled);
    let response = response.unwrap();
    assert_eq!(response.status(), TaskStatus::Cancelled);
    assert_eq!(response.to_json()["message"], "Task was cancelled");
}
