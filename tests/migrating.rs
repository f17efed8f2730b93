//! What a user migrating from mcp-refcache reaches for (#21 §5): `put` without a function, builders for the memory
//! backend's settings, Python-style ids, the `#[refcache::cached]` path form, and a test's way past the two clocks.

use std::sync::LazyLock;
use std::time::Duration;

use refcache::{
    CachedResponse, ConfigError, MemoryBackendConfig, PUT_TASK_NAME, RefCache, RefCacheError,
    TaskFilter, TaskStatus,
};
use serde_json::{Value, json};

static CACHE: LazyLock<RefCache> = LazyLock::new(RefCache::new);

/// The path form, for a crate that also uses the `cached` crate's `#[cached]`.
#[refcache::cached(cache = CACHE)]
async fn total(numbers: Value) -> u64 {
    numbers
        .as_array()
        .map_or(0, |items| items.iter().filter_map(Value::as_u64).sum())
}

/// Takes a string and answers it as it came.
#[refcache::cached(cache = CACHE)]
async fn echo(text: String) -> String {
    text
}

#[tokio::test]
async fn put_answers_a_reference_that_polls_and_resolves_as_an_argument() {
    let stored = CACHE.put(&json!([1, 2, 3, 4])).await.unwrap();
    assert!(matches!(stored, CachedResponse::Complete(_)), "{stored:?}");
    let ref_id = stored.ref_id().to_string();
    assert!(ref_id.starts_with("refcache:"), "{ref_id}");

    let polled = CACHE.get_cached_result(&ref_id).await.unwrap();
    assert_eq!(
        polled.value_as::<Vec<u64>>().unwrap(),
        Some(vec![1, 2, 3, 4])
    );

    // Handed to a function in place of the value: resolved before it runs.
    let sum = total(json!(ref_id)).await.unwrap();
    assert_eq!(sum.value_as::<u64>().unwrap(), Some(10));

    // An equal value is the same reference; another value is another.
    let again = CACHE.put(&json!([1, 2, 3, 4])).await.unwrap();
    assert_eq!(again.ref_id(), stored.ref_id());
    let other = CACHE.put(&json!([5])).await.unwrap();
    assert_ne!(other.ref_id(), stored.ref_id());

    let tasks = CACHE
        .list_tasks(TaskFilter::all().limit(100))
        .await
        .unwrap();
    assert!(
        tasks
            .tasks
            .iter()
            .any(|t| t.ref_id.as_str() == ref_id && &*t.task_name == PUT_TASK_NAME),
        "{tasks:?}"
    );
}

#[tokio::test]
async fn put_with_ttl_keeps_the_value_for_that_ttl_and_refuses_zero() {
    let cache = RefCache::new();
    let stored = cache
        .put_with_ttl(&"for a minute", Duration::from_secs(60))
        .await
        .unwrap();
    let info = cache
        .reference_info(stored.ref_id().as_str())
        .await
        .unwrap();
    assert_eq!(info.ttl_seconds, Some(60.0));

    let plain = cache.put(&"for the default").await.unwrap();
    let info = cache.reference_info(plain.ref_id().as_str()).await.unwrap();
    assert_eq!(info.ttl_seconds, Some(3600.0), "the cache's default_ttl");

    let err = cache.put_with_ttl(&1, Duration::ZERO).await.unwrap_err();
    assert!(
        matches!(err, RefCacheError::InvalidOption { option: "ttl", .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn put_refuses_a_value_over_the_argument_limit_naming_it() {
    let cache = RefCache::builder().max_argument_bytes(64).build().unwrap();
    let err = cache.put(&"x".repeat(1000)).await.unwrap_err();
    assert!(
        matches!(err, RefCacheError::ArgumentsTooLarge { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn memory_settings_have_builders_and_a_zero_worker_count_is_a_config_error() {
    let config = MemoryBackendConfig::default()
        .max_workers(2)
        .max_queued(5)
        .task_ttl(Duration::from_secs(60))
        .cancel_grace(Duration::from_millis(100));
    assert_eq!(
        (config.max_workers, config.max_queued, config.task_ttl),
        (2, 5, Duration::from_secs(60))
    );
    let cache = RefCache::builder().name("migrated").memory(config).unwrap();
    let stored = cache.put(&1).await.unwrap();
    assert!(stored.ref_id().as_str().starts_with("migrated:"));

    let err = RefCache::builder()
        .memory(MemoryBackendConfig::default().max_workers(0))
        .unwrap_err();
    assert!(
        matches!(&err, ConfigError::InvalidValue { key, .. } if key == "max_workers"),
        "{err:?}"
    );
}

/// mcp-refcache's ids (`<cache name>:<16 hex digits>`) are not refcache's (`<cache name>:<32 hex digits>`).
/// Decided: polled, such an id is `MalformedRefId`, whose message shows the expected form; as an argument it is
/// data, passed to the function as the string it is, since it could never name a value of this cache.
#[tokio::test]
async fn a_python_style_id_is_malformed_as_a_poll_and_plain_data_as_an_argument() {
    let python_id = "secure:abcd1234abcd1234";
    let err = CACHE.get_cached_result(python_id).await.unwrap_err();
    assert!(
        matches!(err, RefCacheError::MalformedRefId { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("refcache:"), "{err}");

    let echoed = echo(python_id.to_owned()).await.unwrap();
    assert_eq!(
        echoed.value_as::<String>().unwrap().as_deref(),
        Some(python_id)
    );
    // Even with this cache's name, 16 digits is not a ref id: data too.
    let short = "refcache:abcd1234abcd1234";
    let echoed = echo(short.to_owned()).await.unwrap();
    assert_eq!(echoed.value_as::<String>().unwrap().as_deref(), Some(short));
}

/// Value TTLs run on the wall clock (moka), task records on tokio's: a paused clock cannot expire a value. A test
/// that needs a finished value gone says so with `cleanup(Duration::ZERO)`, which drops every finished record and
/// its value now, whatever either clock says.
#[tokio::test(start_paused = true)]
async fn cleanup_zero_drops_finished_values_under_a_paused_clock() {
    let cache = RefCache::new();
    let stored = cache.put(&"short-lived").await.unwrap();
    let ref_id = stored.ref_id().to_string();
    assert_eq!(
        cache.get_cached_result(&ref_id).await.unwrap().status(),
        TaskStatus::Complete
    );
    let dropped = cache.cleanup(Duration::ZERO).await.unwrap();
    assert_eq!(dropped, 1);
    let err = cache.get_cached_result(&ref_id).await.unwrap_err();
    assert!(matches!(err, RefCacheError::NotFound), "{err:?}");
}
