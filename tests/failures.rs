//! `Err` is never cached: the task fails with the error's `Display` text. A panic fails the task with
//! `panicked: <message>` and harms nothing else. Calling again after a failure runs the work again.

use std::sync::LazyLock;

use refcache::{AsyncResponseFormat, RefCache, TaskStatus, cached};

static CACHE: LazyLock<RefCache> = LazyLock::new(RefCache::new);
#[path = "support/runs.rs"]
mod support;
use support::{bump, runs};

#[derive(Debug, thiserror::Error)]
#[error("upstream said no ({0})")]
struct Upstream(u16);

#[cached(async_timeout = 5.0, cache = CACHE)]
async fn fetch(code: u16) -> Result<String, Upstream> {
    bump(code);
    if code >= 400 {
        Err(Upstream(code))
    } else {
        Ok("ok".into())
    }
}

#[tokio::test]
async fn an_error_fails_the_task_with_its_display_text_and_is_not_cached() {
    let response = fetch(503).await.unwrap();
    assert_eq!(response.status(), TaskStatus::Failed);
    assert_eq!(response.error().unwrap().message, "upstream said no (503)");
    assert_eq!(
        response.to_json()["message"],
        "Task failed: upstream said no (503)"
    );

    let polled = CACHE
        .get_cached_result(response.ref_id().as_str())
        .await
        .unwrap();
    assert_eq!(
        polled.status(),
        TaskStatus::Failed,
        "the failure is pollable"
    );

    let again = fetch(503).await.unwrap();
    assert_eq!(again.status(), TaskStatus::Failed);
    assert_ne!(
        again.ref_id(),
        response.ref_id(),
        "a new execution, under a new reference"
    );
    assert_eq!(runs(503), 2, "calling again after a failure runs again");
}

#[cached(async_timeout = 5.0, cache = CACHE)]
async fn explode(message: String) -> u32 {
    if !message.is_empty() {
        panic!("{message}");
    }
    1
}

#[cached(async_timeout = 5.0, cache = CACHE)]
fn explode_sync(message: String) -> u32 {
    panic!("{message}");
}

#[tokio::test]
async fn a_panic_fails_the_task_and_harms_nothing_else() {
    let response = explode("boom".into()).await.unwrap();
    assert_eq!(response.status(), TaskStatus::Failed);
    assert_eq!(response.error().unwrap().message, "panicked: boom");
    let full = AsyncResponseFormat::Full
        .scope(explode("bang".into()))
        .await
        .unwrap()
        .to_json();
    assert_eq!(full["error"], "panicked: bang");
    assert_eq!(full["can_retry"], true);

    // The process and later calls are unaffected.
    let fine = explode(String::new()).await.unwrap();
    assert_eq!(fine.value_as::<u32>().unwrap(), Some(1));
    let sync = tokio::task::spawn_blocking(|| explode_sync("sync boom".into()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(sync.error().unwrap().message, "panicked: sync boom");
}

#[cached(async_timeout = 5.0, cache = CACHE)]
async fn unserializable(n: u32) -> std::collections::HashMap<Vec<u32>, u32> {
    std::collections::HashMap::from([(vec![n], n)])
}

#[tokio::test]
async fn a_value_that_is_not_json_fails_clearly() {
    let response = unserializable(1).await.unwrap();
    assert_eq!(response.status(), TaskStatus::Failed);
    let message = &response.error().unwrap().message;
    assert!(
        message.starts_with("the return value cannot be serialized to JSON"),
        "{message}"
    );
}
