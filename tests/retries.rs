//! Retries are opt-in (`max_retries`), back off exponentially with jitter under a cap, keep a history of every
//! failed attempt, stay `processing` while they wait, and never retry an error marked non-retryable.

use std::sync::LazyLock;
use std::time::Duration;

use refcache::{AsyncResponseFormat, RefCache, Retryable, TaskError, TaskStatus, cached};
use tokio::time::Instant;

#[path = "support/runs.rs"]
mod support;
use support::{bump, runs};

static CACHE: LazyLock<RefCache> = LazyLock::new(RefCache::new);

/// Fails its first `fail_times` attempts for `key`.
#[cached(cache = CACHE, max_retries = 3, retry_backoff = 1.0)]
async fn flaky(key: String, fail_times: usize) -> Result<usize, String> {
    bump(&key);
    let attempt = runs(&key);
    if attempt <= fail_times {
        Err(format!("transient failure {attempt}"))
    } else {
        Ok(attempt)
    }
}

#[tokio::test(start_paused = true)]
async fn a_flaky_task_succeeds_after_retries_with_exponential_backoff() {
    let start = Instant::now();
    let response = flaky("twice".into(), 2).await.unwrap();
    assert_eq!(
        response.value_as::<usize>().unwrap(),
        Some(3),
        "attempt 3 succeeded"
    );
    // Delays: attempt 1 waits in [0.5, 1] s, attempt 2 in [1, 2] s (base 1 s, doubling, equal jitter).
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(1500) && waited <= Duration::from_secs(3),
        "{waited:?}"
    );
    let info = CACHE.task_info(response.ref_id().as_str()).await.unwrap();
    assert_eq!(info.retry_count, 2);
    assert_eq!(info.max_retries, 3);
    let history: Vec<(u32, &str)> = info
        .retry_history
        .iter()
        .map(|r| (r.attempt, r.error.as_str()))
        .collect();
    assert_eq!(
        history,
        vec![(1, "transient failure 1"), (2, "transient failure 2")]
    );
}

#[tokio::test(start_paused = true)]
async fn exhausted_retries_fail_with_the_last_error_and_the_whole_history() {
    let response = flaky("always".into(), 99).await.unwrap();
    assert_eq!(response.status(), TaskStatus::Failed);
    assert_eq!(response.error().unwrap().message, "transient failure 4");
    assert_eq!(runs("always"), 4, "1 attempt + 3 retries");
    let info = response.info().unwrap();
    assert_eq!(info.retry_count, 3);
    assert_eq!(info.retry_history.len(), 4, "one entry per failed attempt");
    let stats = CACHE.stats().await.unwrap();
    assert!(stats.retries >= 3, "{stats:?}");
}

#[cached(cache = CACHE, async_timeout = 0.5, max_retries = 2, retry_backoff = 10.0)]
async fn slow_retry(key: String) -> Result<u32, String> {
    bump(&key);
    if runs(&key) == 1 {
        Err("first try fails".into())
    } else {
        Ok(7)
    }
}

#[tokio::test(start_paused = true)]
async fn while_a_retry_waits_the_task_is_processing_with_a_message() {
    let response = slow_retry("waiting".into()).await.unwrap();
    assert_eq!(response.status(), TaskStatus::Processing);
    let message = response.to_json()["message"].as_str().unwrap().to_owned();
    assert!(
        message.starts_with("Attempt 1 failed: first try fails. Retrying as attempt 2 of 3 at "),
        "{message}"
    );
    let full = AsyncResponseFormat::Full
        .scope(slow_retry("waiting".into()))
        .await
        .unwrap()
        .to_json();
    assert_eq!(full["retry_history"][0]["attempt"], 1);
    assert_eq!(full["retry_count"], 0, "no retry has run yet");
    tokio::time::sleep(Duration::from_secs(20)).await;
    let done = CACHE
        .get_cached_result(response.ref_id().as_str())
        .await
        .unwrap();
    assert_eq!(done.value_as::<u32>().unwrap(), Some(7));
}

#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error("busy")]
    Busy,
    #[error("no such document")]
    NotFound,
}

impl Retryable for FetchError {
    fn is_retryable(&self) -> bool {
        matches!(self, FetchError::Busy)
    }
}

#[cached(cache = CACHE, max_retries = 5, retry_backoff = 0.1)]
async fn fetch(key: String, found: bool) -> Result<u32, FetchError> {
    bump(&key);
    if found {
        Err(FetchError::Busy)
    } else {
        Err(FetchError::NotFound)
    }
}

#[cached(cache = CACHE, max_retries = 5, retry_backoff = 0.1)]
async fn validate(key: String) -> Result<u32, TaskError> {
    bump(&key);
    Err(TaskError::new("bad input").with_code("INVALID").permanent())
}

#[cached(cache = CACHE, max_retries = 5, retry_backoff = 0.1)]
async fn explode(key: String) -> u32 {
    bump(&key);
    panic!("boom")
}

#[tokio::test(start_paused = true)]
async fn errors_marked_non_retryable_fail_at_once() {
    let response = fetch("missing".into(), false).await.unwrap();
    assert_eq!(response.error().unwrap().message, "no such document");
    assert_eq!(
        runs("missing"),
        1,
        "a Retryable error that says no is not retried"
    );
    let response = fetch("busy".into(), true).await.unwrap();
    assert_eq!(response.status(), TaskStatus::Failed);
    assert_eq!(runs("busy"), 6, "one that says yes is");

    let response = validate("invalid".into()).await.unwrap();
    assert_eq!(runs("invalid"), 1, "a permanent TaskError is not retried");
    assert_eq!(
        response.error().unwrap().code.as_deref(),
        Some("INVALID"),
        "and keeps its code"
    );

    explode("panics".into()).await.unwrap();
    assert_eq!(runs("panics"), 1, "a panic is not retried");
}

#[cached(cache = CACHE, max_retries = 6, retry_backoff = 1.0, retry_backoff_max = 2.0)]
async fn capped(key: String) -> Result<u32, String> {
    bump(&key);
    Err("again".into())
}

#[tokio::test(start_paused = true)]
async fn the_backoff_is_capped() {
    let start = Instant::now();
    capped("capped".into()).await.unwrap();
    // Uncapped, six retries would wait 1+2+4+8+16+32 s (halved at least by jitter: >= 31.5 s). Capped at 2 s:
    // at most 1 + 2 * 5 = 11 s.
    assert!(
        start.elapsed() <= Duration::from_secs(11),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(runs("capped"), 7);
}

#[test]
fn backoff_doubles_with_jitter_under_the_cap() {
    let options = refcache::TaskOptions::default()
        .retry_backoff(Some(Duration::from_secs(2)), Some(Duration::from_secs(10)));
    for _ in 0..100 {
        let d1 = options.backoff(1);
        let d2 = options.backoff(2);
        let d4 = options.backoff(4);
        assert!(
            d1 >= Duration::from_secs(1) && d1 <= Duration::from_secs(2),
            "{d1:?}"
        );
        assert!(
            d2 >= Duration::from_secs(2) && d2 <= Duration::from_secs(4),
            "{d2:?}"
        );
        assert!(
            d4 >= Duration::from_secs(5) && d4 <= Duration::from_secs(10),
            "capped: {d4:?}"
        );
    }
}
