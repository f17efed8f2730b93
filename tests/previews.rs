//! Previews: a `#[cached]` call whose value is larger than `max_size` answers a preview instead of the value, in
//! mcp-refcache's exact wire shape, with a message that names the reference and tells the agent how to page through
//! it (`page=1`) or fetch it whole (`full=true`). A small value answers the complete shape. The preview is the same
//! on a cache hit and on a later `get_cached_result`; it never exceeds `max_size`, also when the value is large
//! only through one deeply nested string. The attribute `preview = "paginate" | "truncate"` changes the strategy.
//! And the default cache measures in tokens, with `max_size` 1000: a value of more than 1000 characters but fewer
//! than 1000 tokens is answered whole, a far larger one with a preview of at most 1000 tokens.

use std::collections::BTreeSet;
use std::sync::LazyLock;

use refcache::{
    CachedResponse, PreviewStrategy, Previewer, RefCache, SizeMeasure, TaskStatus, TokenEncoding,
    cached,
};
use serde_json::{Value, json};

#[path = "support/runs.rs"]
mod support;
use support::{bump, runs};

/// Characters, so that sizes are exact: at most 100 characters whole, pages of 10 items.
static CACHE: LazyLock<RefCache> = LazyLock::new(|| {
    RefCache::builder()
        .previewer(Previewer::new(SizeMeasure::Characters, 100).page_size(10))
        .build()
        .expect("a valid cache")
});

/// The defaults: tokens (cl100k_base), `max_size` 1000.
static DEFAULT: LazyLock<RefCache> = LazyLock::new(RefCache::new);

const CHARS: SizeMeasure = SizeMeasure::Characters;
const CL100K: SizeMeasure = SizeMeasure::Tokens(TokenEncoding::Cl100kBase);

/// The numbers `0..n`; counts its executions under `label`.
#[cached(cache = CACHE)]
async fn numbers(label: String, n: u32) -> Vec<u32> {
    bump(&label);
    (0..n).collect()
}

/// Returns `value` as it is.
#[cached(cache = CACHE)]
async fn echo(label: String, value: Value) -> Value {
    let _ = label;
    value
}

/// The numbers `0..n`, previewed one page at a time.
#[cached(cache = CACHE, preview = "paginate")]
async fn paged_numbers(label: String, n: u32) -> Vec<u32> {
    let _ = label;
    (0..n).collect()
}

/// The numbers `0..n`, previewed as cut JSON text.
#[cached(cache = CACHE, preview = "truncate")]
async fn truncated_numbers(label: String, n: u32) -> Vec<u32> {
    let _ = label;
    (0..n).collect()
}

/// Returns `value` as it is, in the default (token-measured) cache.
#[cached(cache = DEFAULT)]
async fn echo_default(label: String, value: Value) -> Value {
    let _ = label;
    value
}

fn keys(value: &Value) -> BTreeSet<&str> {
    value
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect()
}

fn set(items: &[&'static str]) -> BTreeSet<&'static str> {
    items.iter().copied().collect()
}

const PREVIEW_KEYS: &[&str] = &[
    "ref_id",
    "preview",
    "is_complete",
    "is_async",
    "preview_strategy",
    "total_items",
    "original_size",
    "preview_size",
    "message",
];

const PAGED_PREVIEW_KEYS: &[&str] = &[
    "ref_id",
    "preview",
    "is_complete",
    "is_async",
    "preview_strategy",
    "total_items",
    "original_size",
    "preview_size",
    "page",
    "total_pages",
    "message",
];

fn ints(range: std::ops::Range<u32>) -> Value {
    Value::Array(range.map(|i| json!(i)).collect())
}

/// Checks the invariants every preview answer holds, whatever its strategy: it is a preview, the whole value is not
/// in it, sizes are measured in `measure` and the preview is within `max_size`. Returns the wire JSON.
fn check_preview(
    response: &CachedResponse,
    whole: &Value,
    measure: SizeMeasure,
    max_size: usize,
) -> Value {
    assert_eq!(
        response.status(),
        TaskStatus::Complete,
        "a preview is of a complete task"
    );
    assert!(!response.is_complete(), "the whole value is not here");
    assert!(response.value().is_none(), "no value on a preview");
    let preview = response.preview_of().expect("a preview response");
    let json = response.to_json();
    assert_eq!(json["ref_id"], json!(response.ref_id().as_str()));
    assert_eq!(json["is_complete"], json!(false));
    assert_eq!(json["is_async"], json!(false));
    assert_eq!(json["preview"], preview.value, "the wire shows the preview");
    assert_eq!(
        json["original_size"],
        json!(measure.of(whole)),
        "original_size is the whole value's size in the cache's measure"
    );
    assert_eq!(
        json["preview_size"],
        json!(measure.of(&preview.value)),
        "preview_size is the shown value's size in the cache's measure"
    );
    assert!(
        preview.preview_size <= max_size,
        "the preview is within max_size {max_size}: {}",
        preview.preview_size
    );
    assert!(
        preview.original_size > max_size,
        "only a value over max_size is previewed"
    );
    let message = response.message();
    assert_eq!(json["message"], json!(message));
    assert!(
        message.contains(response.ref_id().as_str()),
        "the message names the ref id: {message}"
    );
    assert!(
        message.contains("full=true"),
        "the message tells how to fetch the whole value: {message}"
    );
    json
}

#[tokio::test]
async fn a_large_result_answers_the_preview_shape() {
    let response = numbers("wire-shape".into(), 200).await.unwrap();
    let whole = ints(0..200);
    let json = check_preview(&response, &whole, CHARS, 100);
    assert_eq!(
        keys(&json),
        set(PREVIEW_KEYS),
        "exactly mcp-refcache's preview keys (no page keys for sample): {json}"
    );
    assert_eq!(
        json["preview_strategy"],
        json!("sample"),
        "the default strategy"
    );
    assert_eq!(json["total_items"], json!(200));
    let shown = json["preview"].as_array().expect("an array sample");
    assert_eq!(
        shown.first(),
        Some(&json!(0)),
        "sample keeps the first item"
    );
    assert_eq!(shown.last(), Some(&json!(199)), "and the last");
    assert!(shown.len() < 200 && shown.len() > 2, "{json}");
    let message = response.message();
    assert!(
        message.contains("page=1"),
        "the message tells how to page through: {message}"
    );
    assert!(
        message.contains(&format!(
            "get_cached_result(ref_id=\"{}\", full=true)",
            response.ref_id()
        )),
        "the whole value is one call away: {message}"
    );
}

#[tokio::test]
async fn a_small_result_answers_the_complete_shape() {
    let response = numbers("small".into(), 3).await.unwrap();
    assert!(response.is_complete());
    assert!(response.preview_of().is_none());
    let json = response.to_json();
    assert_eq!(
        keys(&json),
        set(&[
            "ref_id",
            "value",
            "is_complete",
            "is_async",
            "size",
            "total_items"
        ]),
        "exactly the complete keys: {json}"
    );
    assert_eq!(json["ref_id"], json!(response.ref_id().as_str()));
    assert_eq!(json["value"], json!([0, 1, 2]));
    assert_eq!(json["is_complete"], json!(true));
    assert_eq!(json["is_async"], json!(false));
    assert_eq!(json["size"], json!("[0,1,2]".len()), "{json}");
    assert_eq!(json["total_items"], json!(3));

    // Exactly at max_size is still whole: 100 characters.
    let hundred = json!("x".repeat(98));
    assert_eq!(CHARS.of(&hundred), 100);
    let at_limit = echo("at-limit".into(), hundred.clone()).await.unwrap();
    assert_eq!(
        at_limit.value().map(refcache::JsonText::to_value).as_ref(),
        Some(&hundred),
        "a value of exactly max_size is answered whole"
    );
    let over = echo("over-limit".into(), json!("x".repeat(99)))
        .await
        .unwrap();
    assert!(
        over.preview_of().is_some(),
        "one character more is a preview"
    );
}

#[tokio::test]
async fn a_cache_hit_of_a_large_value_answers_the_preview_too() {
    let first = numbers("hit".into(), 300).await.unwrap();
    let second = numbers("hit".into(), 300).await.unwrap();
    assert_eq!(runs("hit"), 1, "the second call is a hit");
    assert_eq!(second.ref_id(), first.ref_id());
    check_preview(&second, &ints(0..300), CHARS, 100);
    assert_eq!(
        second.to_json(),
        first.to_json(),
        "a hit answers the same preview as the call that computed it"
    );
}

#[tokio::test]
async fn the_preview_respects_max_size_whatever_the_shape() {
    let shapes = [
        (
            "strings",
            Value::Array(
                (0..50)
                    .map(|i| json!(format!("a fairly long item number {i}")))
                    .collect(),
            ),
        ),
        (
            "object",
            Value::Object(
                (10..60)
                    .map(|i| (format!("key{i}"), json!({"n": i, "tag": "value"})))
                    .collect(),
            ),
        ),
        ("string", json!("lorem ipsum dolor sit amet ".repeat(40))),
        (
            "matrix",
            Value::Array((0..30).map(|i| json!([i, i + 1, i + 2, i + 3])).collect()),
        ),
    ];
    for (label, value) in shapes {
        let response = echo(format!("shape-{label}"), value.clone()).await.unwrap();
        let json = check_preview(&response, &value, CHARS, 100);
        assert_eq!(keys(&json), set(PREVIEW_KEYS), "{label}");
        // Spend the budget: not a token gesture.
        assert!(
            json["preview_size"].as_u64().unwrap() > 50,
            "{label}: the preview uses most of the budget: {json}"
        );
        let total = match &value {
            Value::Array(a) => json!(a.len()),
            Value::Object(o) => json!(o.len()),
            _ => Value::Null,
        };
        assert_eq!(json["total_items"], total, "{label}");
    }
}

#[tokio::test]
async fn get_cached_result_of_a_large_value_answers_the_same_preview() {
    let response = numbers("poll".into(), 250).await.unwrap();
    let polled = CACHE
        .get_cached_result(response.ref_id().as_str())
        .await
        .unwrap();
    check_preview(&polled, &ints(0..250), CHARS, 100);
    assert_eq!(
        polled.to_json(),
        response.to_json(),
        "the poll answers what the call answered"
    );
}

#[tokio::test]
async fn a_value_large_only_through_a_deep_nested_string_is_previewed() {
    let body = "deep ".repeat(400);
    let value = json!({"report": {"sections": [{"body": body}]}});
    let response = echo("deep".into(), value.clone()).await.unwrap();
    let json = check_preview(&response, &value, CHARS, 100);
    assert_eq!(json["total_items"], json!(1), "one top-level entry");
    // The shape survives: the one long string is cut, the structure around it kept.
    let shown = &json["preview"]["report"]["sections"][0]["body"];
    let text = shown
        .as_str()
        .unwrap_or_else(|| panic!("the nested string is kept, cut: {json}"));
    assert!(text.ends_with("..."), "{text}");
    assert!(
        body.starts_with(text.trim_end_matches("...")),
        "a prefix of the string: {text}"
    );
    assert!(text.len() > 20, "the budget is spent on the string: {json}");
}

#[tokio::test]
async fn preview_paginate_answers_page_one() {
    let response = paged_numbers("paginate".into(), 200).await.unwrap();
    let json = check_preview(&response, &ints(0..200), CHARS, 100);
    assert_eq!(keys(&json), set(PAGED_PREVIEW_KEYS), "{json}");
    assert_eq!(json["preview_strategy"], json!("paginate"));
    assert_eq!(json["page"], json!(1));
    assert_eq!(json["total_pages"], json!(20), "200 items, 10 a page");
    assert_eq!(json["total_items"], json!(200));
    assert_eq!(
        json["preview"],
        ints(0..10),
        "page 1 is the first 10 items, which fit"
    );
    let message = response.message();
    assert!(
        message.contains("page=2"),
        "the message tells the next page: {message}"
    );
    let polled = CACHE
        .get_cached_result(response.ref_id().as_str())
        .await
        .unwrap();
    assert_eq!(
        polled.to_json(),
        json,
        "a poll keeps the function's strategy"
    );
}

#[tokio::test]
async fn preview_truncate_answers_cut_json_text() {
    let whole = ints(0..200);
    let response = truncated_numbers("truncate".into(), 200).await.unwrap();
    let json = check_preview(&response, &whole, CHARS, 100);
    assert_eq!(keys(&json), set(PREVIEW_KEYS), "no page keys: {json}");
    assert_eq!(json["preview_strategy"], json!("truncate"));
    assert_eq!(json["total_items"], json!(200));
    let text = json["preview"].as_str().expect("truncate answers a string");
    assert!(text.ends_with("..."), "{text}");
    let prefix = text.strip_suffix("...").unwrap();
    assert!(
        serde_json::to_string(&whole).unwrap().starts_with(prefix),
        "a prefix of the JSON text: {text}"
    );
    assert!(prefix.starts_with("[0,1,2,"), "{text}");
    assert!(
        response.message().contains("truncate"),
        "{}",
        response.message()
    );
}

#[tokio::test]
async fn the_default_cache_measures_tokens_with_max_size_1000() {
    assert_eq!(DEFAULT.previewer().measure, CL100K);
    assert_eq!(DEFAULT.previewer().max_size, 1000);
    assert_eq!(DEFAULT.previewer().strategy, PreviewStrategy::Sample);

    // Over 1000 characters, well under 1000 tokens: whole.
    let prose = json!("the quick brown fox jumps over the lazy dog ".repeat(40));
    assert!(CHARS.of(&prose) > 1000, "{}", CHARS.of(&prose));
    assert!(CL100K.of(&prose) < 1000, "{}", CL100K.of(&prose));
    let response = echo_default("prose".into(), prose.clone()).await.unwrap();
    assert_eq!(
        response.value().map(refcache::JsonText::to_value).as_ref(),
        Some(&prose),
        "measured in tokens, the value fits"
    );

    // Well over 1000 tokens: a preview of at most 1000 tokens.
    let big = Value::Array(
        (0..3000)
            .map(|i| json!(format!("entry-{i}-{}", i * 7919 % 10007)))
            .collect(),
    );
    assert!(CL100K.of(&big) > 3000, "{}", CL100K.of(&big));
    let response = echo_default("big".into(), big.clone()).await.unwrap();
    let json = check_preview(&response, &big, CL100K, 1000);
    assert!(
        json["preview_size"].as_u64().unwrap() > 500,
        "the budget is used: {json}"
    );
    assert!(
        CHARS.of(&json["preview"]) > 1000,
        "1000 tokens, not 1000 characters: {json}"
    );
    assert!(
        response.message().contains("tokens"),
        "the message names the unit: {}",
        response.message()
    );
}
