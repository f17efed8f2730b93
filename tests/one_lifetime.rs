//! A reference handed out must resolve: a finished task's record and its value have one lifetime.
//!
//! A call answers from the value store by key; a poll and a reference input find the ref id in the task records.
//! Whatever drops a record (`cleanup`, the `max_task_records` cap, `task_ttl`) drops its value in the same step,
//! and a complete record stays as long as its value: so the ref id every call answers with polls with
//! `get_cached_result` and resolves as an argument of another call. (The same rule on Redis and Postgres is in the
//! conformance suite, `refcache-core/src/conformance/lifetime.rs`.)

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use refcache::{MemoryBackendConfig, MemoryTaskBackend, RefCache, cached};
use serde_json::{Value, json};

fn cache(name: &str, tune: impl FnOnce(&mut MemoryBackendConfig)) -> RefCache {
    let mut config = MemoryBackendConfig::default();
    tune(&mut config);
    RefCache::builder()
        .name(name)
        .backend(Arc::new(MemoryTaskBackend::new(config)))
        .unwrap()
}

static CLEANED: LazyLock<RefCache> = LazyLock::new(|| cache("cleaned", |_| {}));
static CAPPED: LazyLock<RefCache> = LazyLock::new(|| cache("capped", |c| c.max_task_records = 3));
static SHORT_RECORDS: LazyLock<RefCache> =
    LazyLock::new(|| cache("short-records", |c| c.task_ttl = Duration::from_millis(200)));

#[cached(cache = CLEANED)]
async fn cleaned(n: u32) -> Vec<u32> {
    vec![n; 3]
}

#[cached(cache = CLEANED)]
async fn cleaned_len(items: Value) -> usize {
    items.as_array().map_or(0, Vec::len)
}

#[cached(cache = CAPPED)]
async fn capped(n: u32) -> Vec<u32> {
    vec![n; 3]
}

#[cached(cache = CAPPED)]
async fn capped_len(items: Value) -> usize {
    items.as_array().map_or(0, Vec::len)
}

#[cached(cache = SHORT_RECORDS, ttl = 600)]
async fn long_lived(n: u32) -> Vec<u32> {
    vec![n; 3]
}

#[cached(cache = SHORT_RECORDS)]
async fn long_lived_len(items: Value) -> usize {
    items.as_array().map_or(0, Vec::len)
}

/// The id `cache` answered with polls, complete, with the value.
async fn assert_polls(cache: &RefCache, ref_id: &str, value: &Value, when: &str) {
    let polled = cache
        .get_cached_result(ref_id)
        .await
        .unwrap_or_else(|e| panic!("{when}: {ref_id} does not poll: {e}"));
    assert!(polled.is_complete(), "{when}");
    assert_eq!(
        polled.value().map(refcache::JsonText::to_value).as_ref(),
        Some(value),
        "{when}"
    );
}

#[tokio::test]
async fn after_cleanup_the_next_call_answers_with_an_id_that_resolves() {
    let first = cleaned(1).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(CLEANED.cleanup(Duration::from_millis(10)).await.unwrap() >= 1);
    assert!(
        CLEANED
            .get_cached_result(first.ref_id().as_ref())
            .await
            .is_err(),
        "cleanup dropped the record"
    );
    let again = cleaned(1).await.unwrap();
    assert_ne!(
        again.ref_id(),
        first.ref_id(),
        "the dropped value was not handed out again"
    );
    let id = again.ref_id().to_string();
    assert_polls(&CLEANED, &id, &json!([1, 1, 1]), "after cleanup").await;
    let used = cleaned_len(json!(id)).await.unwrap();
    assert_eq!(
        used.value().map(refcache::JsonText::to_value).as_ref(),
        Some(&json!(3)),
        "the id resolves as an argument"
    );
}

#[tokio::test]
async fn after_the_record_cap_evicts_every_id_a_call_answers_with_resolves() {
    // Far more calls than records: the cap evicts records all the time, and their values with them.
    for round in 0..3 {
        for n in 0..10 {
            let response = capped(n).await.unwrap();
            let id = response.ref_id().to_string();
            let when = format!("round {round}, call {n}");
            assert_polls(&CAPPED, &id, &json!([n, n, n]), &when).await;
        }
    }
    // An early call again: its record was evicted long ago, so its id must not come back.
    let response = capped(0).await.unwrap();
    let id = response.ref_id().to_string();
    assert_polls(&CAPPED, &id, &json!([0, 0, 0]), "an evicted call again").await;
    let used = capped_len(json!(id)).await.unwrap();
    assert_eq!(
        used.value().map(refcache::JsonText::to_value).as_ref(),
        Some(&json!(3)),
        "the id resolves as an argument"
    );
}

#[tokio::test]
async fn past_task_ttl_a_live_value_keeps_its_record() {
    let first = long_lived(7).await.unwrap();
    // Well past task_ttl (200 ms); the value's TTL is 600 s, so a slow machine cannot make this flaky.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let again = long_lived(7).await.unwrap();
    assert_eq!(again.ref_id(), first.ref_id(), "a hit");
    let id = again.ref_id().to_string();
    assert_polls(&SHORT_RECORDS, &id, &json!([7, 7, 7]), "past task_ttl").await;
    let used = long_lived_len(json!(id)).await.unwrap();
    assert_eq!(
        used.value().map(refcache::JsonText::to_value).as_ref(),
        Some(&json!(3)),
        "the id resolves as an argument"
    );
}
