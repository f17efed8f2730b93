//! A Rust caller can ask for another response format for one call: a scoped override (async or sync) or an
//! option on polls. Invalid names get an error that lists the valid ones.

use std::sync::LazyLock;
use std::time::Duration;

use refcache::{AsyncResponseFormat, RefCache, RefCacheError, cached};

static CACHE: LazyLock<RefCache> = LazyLock::new(RefCache::new);

#[cached(async_timeout = 0.1, cache = CACHE, response_format = "minimal")]
async fn slow(n: u32) -> u32 {
    tokio::time::sleep(Duration::from_secs(10)).await;
    n
}

#[cached(async_timeout = 0.1, cache = CACHE, response_format = "minimal")]
fn slow_sync(n: u32) -> u32 {
    std::thread::sleep(Duration::from_millis(500));
    n
}

#[tokio::test(start_paused = true)]
async fn the_attribute_sets_the_default_and_a_scope_overrides_it() {
    let minimal = slow(1).await.unwrap();
    assert_eq!(minimal.format(), Some(AsyncResponseFormat::Minimal));
    assert!(minimal.to_json().get("message").is_none());

    let full = AsyncResponseFormat::Full.scope(slow(2)).await.unwrap();
    assert_eq!(full.format(), Some(AsyncResponseFormat::Full));
    assert!(full.to_json().get("expected_schema").is_some());

    // The override ends with its scope.
    assert_eq!(
        slow(3).await.unwrap().format(),
        Some(AsyncResponseFormat::Minimal)
    );
}

#[test]
fn a_sync_scope_overrides_sync_calls_on_this_thread() {
    let standard = AsyncResponseFormat::Standard
        .sync_scope(|| slow_sync(1))
        .unwrap();
    assert_eq!(standard.format(), Some(AsyncResponseFormat::Standard));
    assert_eq!(
        slow_sync(2).unwrap().format(),
        Some(AsyncResponseFormat::Minimal)
    );
}

#[test]
fn format_names_parse_and_bad_ones_list_the_valid_ones() {
    for (text, format) in [
        ("minimal", AsyncResponseFormat::Minimal),
        ("standard", AsyncResponseFormat::Standard),
        ("full", AsyncResponseFormat::Full),
    ] {
        assert_eq!(text.parse::<AsyncResponseFormat>().unwrap(), format);
        assert_eq!(format.to_string(), text);
    }
    let err = "bogus".parse::<AsyncResponseFormat>().unwrap_err();
    assert!(matches!(err, RefCacheError::InvalidFormat { .. }));
    assert_eq!(
        err.to_string(),
        "invalid response format `bogus`: expected one of `minimal`, `standard`, `full`"
    );
}
