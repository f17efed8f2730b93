//! A call's arguments have a byte limit (1 MiB of canonical JSON by default; per cache with
//! `RefCacheBuilder::max_argument_bytes`, per function with `#[cached(max_argument_bytes = N)]`). A call over it
//! is refused while its key is built, before anything runs or is stored, with `RefCacheError::ArgumentsTooLarge`,
//! which names the limit; its cost is bounded by the limit, not by the argument. Error messages quote at most a
//! short prefix of what the caller sent.

use std::sync::LazyLock;
use std::time::Instant;

use refcache::{DEFAULT_MAX_ARGUMENT_BYTES, RefCache, RefCacheError, cached};
use serde_json::{Value, json};

#[path = "support/runs.rs"]
mod support;
use support::{bump, runs};

static CACHE: LazyLock<RefCache> = LazyLock::new(RefCache::new);
static SMALL: LazyLock<RefCache> = LazyLock::new(|| {
    RefCache::builder()
        .name("small-args")
        .max_argument_bytes(64)
        .build()
        .unwrap()
});

#[cached(cache = CACHE)]
async fn echo_len(label: String, text: String) -> usize {
    bump(&label);
    text.len()
}

#[cached(cache = CACHE)]
async fn count_items(label: String, items: Value) -> usize {
    bump(&label);
    items.as_array().map_or(0, Vec::len)
}

#[cached(cache = CACHE, max_argument_bytes = 100)]
async fn tiny_input(label: String, text: String) -> usize {
    bump(&label);
    text.len()
}

#[cached(cache = SMALL)]
async fn on_small_cache(label: String, text: String) -> usize {
    bump(&label);
    text.len()
}

fn assert_too_large(result: Result<refcache::CachedResponse, RefCacheError>, limit: usize) {
    match result {
        Err(error @ RefCacheError::ArgumentsTooLarge { limit: l, .. }) => {
            assert_eq!(l, limit);
            let text = error.to_string();
            assert!(text.contains(&limit.to_string()), "names the limit: {text}");
            assert!(
                text.contains("max_argument_bytes"),
                "names the setting: {text}"
            );
            assert!(
                text.len() < 400,
                "quotes none of the input: {} bytes",
                text.len()
            );
        }
        other => panic!("expected ArgumentsTooLarge, got {other:?}"),
    }
}

#[tokio::test]
async fn a_ten_megabyte_string_argument_is_refused_at_once_naming_the_limit() {
    let big = "x".repeat(10 * 1024 * 1024);
    let started = Instant::now();
    let result = echo_len("ten-mb".into(), big).await;
    let took = started.elapsed();
    assert_too_large(result, DEFAULT_MAX_ARGUMENT_BYTES);
    assert_eq!(runs("ten-mb"), 0, "nothing ran");
    // Not an assertion on time (the machine may be loaded): printed for docs/reliability.md.
    println!("10 MB string refused in {took:?}");
    // Within the limit, the same function runs.
    let ok = echo_len("ten-mb".into(), "x".repeat(1000)).await.unwrap();
    assert_eq!(
        ok.value().map(refcache::JsonText::to_value).as_ref(),
        Some(&json!(1000))
    );
}

#[tokio::test]
async fn a_ten_megabyte_structured_argument_is_refused_too() {
    let items: Vec<Value> = (0..1_000_000)
        .map(|i| json!({"i": i, "pad": "yyyy"}))
        .collect();
    let started = Instant::now();
    let result = count_items("structured".into(), Value::Array(items)).await;
    let took = started.elapsed();
    assert_too_large(result, DEFAULT_MAX_ARGUMENT_BYTES);
    assert_eq!(runs("structured"), 0, "nothing ran");
    // Most of that time is freeing the caller's own million-item value (dropped inside the call): measured apart.
    let items: Vec<Value> = (0..1_000_000)
        .map(|i| json!({"i": i, "pad": "yyyy"}))
        .collect();
    let dropping = Instant::now();
    drop(items);
    let drop_took = dropping.elapsed();
    println!(
        "a million-item argument refused in {took:?} (freeing such a value alone: {drop_took:?})"
    );
}

#[tokio::test]
async fn a_function_and_a_cache_may_set_their_own_limit() {
    assert_too_large(tiny_input("fn-limit".into(), "z".repeat(200)).await, 100);
    assert_eq!(
        tiny_input("fn-limit".into(), "z".repeat(20))
            .await
            .unwrap()
            .value()
            .map(refcache::JsonText::to_value)
            .as_ref(),
        Some(&json!(20))
    );
    assert_too_large(
        on_small_cache("cache-limit".into(), "z".repeat(100)).await,
        64,
    );
    assert_eq!(
        on_small_cache("cache-limit".into(), "z".repeat(5))
            .await
            .unwrap()
            .value()
            .map(refcache::JsonText::to_value)
            .as_ref(),
        Some(&json!(5))
    );
    assert_eq!(runs("fn-limit"), 1);
    assert_eq!(runs("cache-limit"), 1);
}

#[test]
fn a_zero_limit_is_a_config_error() {
    let error = RefCache::builder()
        .max_argument_bytes(0)
        .build()
        .unwrap_err();
    assert!(error.to_string().contains("max_argument_bytes"), "{error}");
}
