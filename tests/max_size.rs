//! Which `max_size` wins: the call's (`CallOptions::max_size`, in an async `scope` or a `sync_scope`), else the
//! function's attribute `max_size = N`, else the cache's default. The one chosen decides both whether a value is
//! answered whole and how large its preview may be: mcp-refcache applied a tool's own `max_size` only to the
//! whole-or-preview decision and then built the preview to the cache's default, so a tool asking for 100 could get
//! a preview of 500. Here the preview never exceeds the winner. `get_cached_result_with(GetOptions::max_size)` wins
//! over the attribute the same way, and a larger per-call or per-poll `max_size` answers the whole value.

use std::sync::LazyLock;

use refcache::{CachedResponse, CallOptions, GetOptions, Previewer, RefCache, SizeMeasure, cached};
use serde_json::{Value, json};

#[path = "support/runs.rs"]
mod support;
use support::{bump, runs};

/// The cache's default: 500 characters.
const DEFAULT_MAX: usize = 500;
/// The attribute's: 100 characters.
const ATTRIBUTE_MAX: usize = 100;

static CACHE: LazyLock<RefCache> = LazyLock::new(|| {
    RefCache::builder()
        .previewer(Previewer::new(SizeMeasure::Characters, DEFAULT_MAX))
        .build()
        .expect("a valid cache")
});

/// Its own cache, so the sync test shares nothing with the async ones.
static SYNC_CACHE: LazyLock<RefCache> = LazyLock::new(|| {
    RefCache::builder()
        .previewer(Previewer::new(SizeMeasure::Characters, DEFAULT_MAX))
        .build()
        .expect("a valid cache")
});

/// The numbers `0..n`, with the function's own `max_size`; counts executions under `label`.
#[cached(cache = CACHE, max_size = 100)]
async fn small_tool(label: String, n: u32) -> Vec<u32> {
    bump(&label);
    (0..n).collect()
}

/// The numbers `0..n`, with the cache's default `max_size`.
#[cached(cache = CACHE)]
async fn plain_tool(label: String, n: u32) -> Vec<u32> {
    let _ = label;
    (0..n).collect()
}

/// The numbers `0..n`, allowed more than the cache's default.
#[cached(cache = CACHE, max_size = 2000)]
async fn roomy_tool(label: String, n: u32) -> Vec<u32> {
    let _ = label;
    (0..n).collect()
}

/// The numbers `0..n`, sync, with the function's own `max_size`.
#[cached(cache = SYNC_CACHE, max_size = 100)]
fn sync_small_tool(label: String, n: u32) -> Vec<u32> {
    bump(&label);
    (0..n).collect()
}

fn size(value: &Value) -> usize {
    SizeMeasure::Characters.of(value)
}

fn ints(n: u32) -> Value {
    Value::Array((0..n).map(|i| json!(i)).collect())
}

/// The preview's size, checked to be within `max` and to be what the wire says.
fn preview_size(response: &CachedResponse, max: usize) -> usize {
    let preview = response
        .preview_of()
        .unwrap_or_else(|| panic!("a preview, not {}", response.to_json()));
    let json = response.to_json();
    assert_eq!(json["preview_size"], json!(preview.preview_size));
    assert_eq!(json["preview_size"], json!(size(&preview.value)));
    assert!(
        preview.preview_size <= max,
        "the preview is within max_size {max}: {} ({})",
        preview.preview_size,
        json
    );
    preview.preview_size
}

#[tokio::test]
async fn the_attribute_beats_the_cache_default() {
    // 0..60 is more than 100 characters but less than 500.
    let whole = ints(60);
    assert!(size(&whole) > ATTRIBUTE_MAX && size(&whole) < DEFAULT_MAX);

    let plain = plain_tool("between".into(), 60).await.unwrap();
    assert_eq!(
        plain.value().map(refcache::JsonText::to_value).as_ref(),
        Some(&whole),
        "within the cache's 500: whole"
    );

    let small = small_tool("between".into(), 60).await.unwrap();
    preview_size(&small, ATTRIBUTE_MAX);
    assert!(
        small.message().contains("max_size 100"),
        "the message names the max_size that applied: {}",
        small.message()
    );
}

#[tokio::test]
async fn an_attribute_larger_than_the_default_wins_too() {
    // 0..300 is about 1100 characters: over the cache's 500, within the attribute's 2000.
    let whole = ints(300);
    assert!(size(&whole) > DEFAULT_MAX && size(&whole) < 2000);
    let roomy = roomy_tool("roomy".into(), 300).await.unwrap();
    assert_eq!(
        roomy.value().map(refcache::JsonText::to_value).as_ref(),
        Some(&whole),
        "within the attribute's 2000: whole"
    );
    let polled = CACHE
        .get_cached_result(roomy.ref_id().as_str())
        .await
        .unwrap();
    assert_eq!(
        polled.value().map(refcache::JsonText::to_value).as_ref(),
        Some(&whole),
        "a poll keeps the attribute"
    );
    let plain = plain_tool("roomy".into(), 300).await.unwrap();
    preview_size(&plain, DEFAULT_MAX);

    // Far over the attribute: a preview of up to 2000, larger than the default allows.
    let huge = roomy_tool("roomy".into(), 3000).await.unwrap();
    let shown = preview_size(&huge, 2000);
    assert!(
        shown > DEFAULT_MAX,
        "the attribute's budget, not the default's: {shown}"
    );
}

#[tokio::test]
async fn the_attribute_bounds_the_preview_size_too() {
    // Far larger than both: the preview is built to the attribute's 100, not the cache's 500.
    let whole = ints(2000);
    assert!(size(&whole) > 10 * DEFAULT_MAX);
    let response = small_tool("huge".into(), 2000).await.unwrap();
    let shown = preview_size(&response, ATTRIBUTE_MAX);
    const { assert!(ATTRIBUTE_MAX < DEFAULT_MAX) };
    assert!(
        shown > ATTRIBUTE_MAX / 2,
        "the preview spends the attribute's budget: {shown}"
    );
    let json = response.to_json();
    assert_eq!(json["original_size"], json!(size(&whole)));

    // The same on a hit, and on a poll (the function's max_size is kept with its value).
    let hit = small_tool("huge".into(), 2000).await.unwrap();
    assert_eq!(runs("huge"), 1, "a hit");
    assert_eq!(hit.to_json(), json);
    let polled = CACHE
        .get_cached_result(response.ref_id().as_str())
        .await
        .unwrap();
    preview_size(&polled, ATTRIBUTE_MAX);
    assert_eq!(polled.to_json(), json);

    // With the cache's default, the same value's preview is larger than the attribute allows.
    let plain = plain_tool("huge".into(), 2000).await.unwrap();
    let default_shown = preview_size(&plain, DEFAULT_MAX);
    assert!(
        default_shown > ATTRIBUTE_MAX,
        "the default's preview uses its larger budget: {default_shown}"
    );
}

#[tokio::test]
async fn the_call_beats_the_attribute_and_the_default() {
    // Smaller than the attribute: a smaller preview.
    let response = CallOptions::new()
        .max_size(30)
        .scope(small_tool("per-call".into(), 60))
        .await
        .unwrap();
    preview_size(&response, 30);
    assert!(
        response.message().contains("max_size 30"),
        "{}",
        response.message()
    );

    // Larger than the attribute: the same value (a hit) answered whole.
    let whole = CallOptions::new()
        .max_size(1000)
        .scope(small_tool("per-call".into(), 60))
        .await
        .unwrap();
    assert_eq!(runs("per-call"), 1, "the second call is a hit");
    assert_eq!(whole.ref_id(), response.ref_id());
    assert_eq!(
        whole.value().map(refcache::JsonText::to_value).as_ref(),
        Some(&ints(60)),
        "a larger per-call max_size answers the whole value"
    );

    // Outside the scope the attribute applies again.
    let again = small_tool("per-call".into(), 60).await.unwrap();
    preview_size(&again, ATTRIBUTE_MAX);

    // Over the cache's default, on a function without the attribute.
    let plain = CallOptions::new()
        .max_size(50)
        .scope(plain_tool("per-call".into(), 60))
        .await
        .unwrap();
    preview_size(&plain, 50);
    let plain_whole = CallOptions::new()
        .max_size(5000)
        .scope(plain_tool("per-call-big".into(), 1000))
        .await
        .unwrap();
    assert_eq!(
        plain_whole
            .value()
            .map(refcache::JsonText::to_value)
            .as_ref(),
        Some(&ints(1000)),
        "over the cache's default too"
    );
}

#[tokio::test]
async fn an_inner_scope_keeps_the_outer_max_size_unless_it_sets_its_own() {
    let outer = CallOptions::new().max_size(40);
    let (kept, replaced) = outer
        .scope(async {
            let kept = CallOptions::new()
                .format(refcache::AsyncResponseFormat::Full)
                .scope(small_tool("nested".into(), 60))
                .await
                .unwrap();
            let replaced = CallOptions::new()
                .max_size(1000)
                .scope(small_tool("nested".into(), 60))
                .await
                .unwrap();
            (kept, replaced)
        })
        .await;
    preview_size(&kept, 40);
    assert_eq!(
        replaced.value().map(refcache::JsonText::to_value).as_ref(),
        Some(&ints(60))
    );
}

#[test]
fn sync_scope_beats_the_attribute_of_a_sync_function() {
    // A plain test: no runtime; the sync function runs on the cache's own.
    let plain = sync_small_tool("sync".into(), 60).unwrap();
    preview_size(&plain, ATTRIBUTE_MAX);

    let smaller = CallOptions::new()
        .max_size(30)
        .sync_scope(|| sync_small_tool("sync".into(), 60))
        .unwrap();
    preview_size(&smaller, 30);

    let larger = CallOptions::new()
        .max_size(1000)
        .sync_scope(|| sync_small_tool("sync".into(), 60))
        .unwrap();
    assert_eq!(
        larger.value().map(refcache::JsonText::to_value).as_ref(),
        Some(&ints(60)),
        "answered whole"
    );
    assert_eq!(runs("sync"), 1, "one execution; the rest are hits");

    // The scope ends with its closure.
    let after = sync_small_tool("sync".into(), 60).unwrap();
    preview_size(&after, ATTRIBUTE_MAX);
}

#[tokio::test]
async fn get_options_max_size_beats_the_attribute() {
    let response = small_tool("poll".into(), 60).await.unwrap();
    let ref_id = response.ref_id().as_str();
    preview_size(&response, ATTRIBUTE_MAX);

    let smaller = CACHE
        .get_cached_result_with(ref_id, &GetOptions::default().max_size(25))
        .await
        .unwrap();
    preview_size(&smaller, 25);

    let larger = CACHE
        .get_cached_result_with(ref_id, &GetOptions::default().max_size(1000))
        .await
        .unwrap();
    assert_eq!(
        larger.value().map(refcache::JsonText::to_value).as_ref(),
        Some(&ints(60)),
        "a larger max_size answers the whole value"
    );

    // And it bounds a page too.
    let page = CACHE
        .get_cached_result_with(
            ref_id,
            &GetOptions::default().page(1).page_size(50).max_size(20),
        )
        .await
        .unwrap();
    preview_size(&page, 20);
    // Without it, a page is bounded by the attribute, not the default.
    let page = CACHE
        .get_cached_result_with(ref_id, &GetOptions::default().page(1).page_size(60))
        .await
        .unwrap();
    preview_size(&page, ATTRIBUTE_MAX);
}

#[tokio::test]
async fn a_zero_max_size_per_call_is_refused() {
    let call = CallOptions::new()
        .max_size(0)
        .scope(small_tool("zero".into(), 3))
        .await;
    assert!(
        matches!(
            call,
            Err(refcache::RefCacheError::InvalidOption {
                option: "max_size",
                ..
            })
        ),
        "{call:?}"
    );
}
