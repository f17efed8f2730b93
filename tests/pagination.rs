//! Paging through a cached value with `get_cached_result_with`: `page` and `page_size` (1-indexed; the page size
//! defaults to the cache's, 20 unless configured), either one alone, the true totals on every page, a partial last
//! page, an out-of-range page that is empty but still tells the totals, page numbers too large to multiply without
//! overflow, and every page trimmed to `max_size`. `full(true)` answers the whole value whatever its size. Options
//! that cannot be honoured (page 0, page_size 0, max_size 0, full with a page) are `InvalidOption` errors that say
//! what to pass instead. An object pages by its entries; a value that is not a collection is its own single page.

use std::sync::LazyLock;

use refcache::{
    CachedResponse, GetOptions, Previewer, RefCache, RefCacheError, SizeMeasure, cached,
};
use serde_json::{Map, Value, json};

/// Characters, `max_size` 200, the default page size (20).
static CACHE: LazyLock<RefCache> = LazyLock::new(|| {
    RefCache::builder()
        .previewer(Previewer::new(SizeMeasure::Characters, 200))
        .build()
        .expect("a valid cache")
});

/// The same, with pages of 7.
static SEVENS: LazyLock<RefCache> = LazyLock::new(|| {
    RefCache::builder()
        .previewer(Previewer::new(SizeMeasure::Characters, 200).page_size(7))
        .build()
        .expect("a valid cache")
});

#[cached(cache = CACHE)]
async fn numbers(label: String, n: u32) -> Vec<u32> {
    let _ = label;
    (0..n).collect()
}

#[cached(cache = SEVENS)]
async fn sevens_numbers(label: String, n: u32) -> Vec<u32> {
    let _ = label;
    (0..n).collect()
}

#[cached(cache = CACHE)]
async fn echo(label: String, value: Value) -> Value {
    let _ = label;
    value
}

fn ints(range: std::ops::Range<u32>) -> Value {
    Value::Array(range.map(|i| json!(i)).collect())
}

/// The ref id of `numbers(label, n)`.
async fn numbers_ref(label: &str, n: u32) -> String {
    numbers(label.into(), n).await.unwrap().ref_id().to_string()
}

async fn get(ref_id: &str, options: GetOptions) -> CachedResponse {
    CACHE
        .get_cached_result_with(ref_id, &options)
        .await
        .unwrap_or_else(|e| panic!("{options:?}: {e}"))
}

/// The page's wire JSON, checked to be a paginate answer with `page`, `total_pages` and `total_items` as given,
/// within `max_size`.
fn check_page(
    response: &CachedResponse,
    page: usize,
    total_pages: usize,
    total_items: Value,
    max_size: usize,
) -> Value {
    let json = response.to_json();
    let preview = response
        .preview_of()
        .unwrap_or_else(|| panic!("a page, not {json}"));
    assert_eq!(json["preview_strategy"], json!("paginate"), "{json}");
    assert_eq!(json["is_complete"], json!(false));
    assert_eq!(json["page"], json!(page), "{json}");
    assert_eq!(json["total_pages"], json!(total_pages), "{json}");
    assert_eq!(json["total_items"], total_items, "{json}");
    assert_eq!(json["preview"], preview.value);
    assert!(
        preview.preview_size <= max_size,
        "page {page} is within max_size {max_size}: {json}"
    );
    assert_eq!(
        preview.preview_size,
        SizeMeasure::Characters.of(&preview.value)
    );
    assert!(
        json["message"]
            .as_str()
            .unwrap()
            .contains(response.ref_id().as_str()),
        "{json}"
    );
    json
}

#[tokio::test]
async fn page_and_page_size() {
    let ref_id = numbers_ref("page-and-size", 95).await;
    let response = get(&ref_id, GetOptions::default().page(2).page_size(10)).await;
    let json = check_page(&response, 2, 10, json!(95), 200);
    assert_eq!(json["preview"], ints(10..20), "items 11 to 20");
    let message = response.message();
    assert!(
        message.contains("page=3") && message.contains("page_size=10"),
        "the message names the next page: {message}"
    );
    assert!(message.contains("full=true"), "{message}");
}

#[tokio::test]
async fn page_alone_uses_the_caches_page_size() {
    let ref_id = numbers_ref("page-alone", 95).await;
    assert_eq!(CACHE.previewer().page_size, 20, "the default page size");
    let json = check_page(
        &get(&ref_id, GetOptions::default().page(3)).await,
        3,
        5,
        json!(95),
        200,
    );
    assert_eq!(json["preview"], ints(40..60));

    // A configured page size is the default instead.
    let sevens = sevens_numbers("page-alone".into(), 95).await.unwrap();
    let response = SEVENS
        .get_cached_result_with(sevens.ref_id().as_str(), &GetOptions::default().page(2))
        .await
        .unwrap();
    let json = check_page(&response, 2, 14, json!(95), 200);
    assert_eq!(json["preview"], ints(7..14));
}

#[tokio::test]
async fn page_size_alone_answers_page_one() {
    let ref_id = numbers_ref("size-alone", 95).await;
    let json = check_page(
        &get(&ref_id, GetOptions::default().page_size(15)).await,
        1,
        7,
        json!(95),
        200,
    );
    assert_eq!(json["preview"], ints(0..15));
}

#[tokio::test]
async fn every_page_tells_the_true_totals_and_the_last_is_partial() {
    let ref_id = numbers_ref("walk", 95).await;
    let mut seen = Vec::new();
    for page in 1..=5 {
        let response = get(&ref_id, GetOptions::default().page(page)).await;
        let json = check_page(&response, page, 5, json!(95), 200);
        let items = json["preview"].as_array().unwrap();
        assert_eq!(
            items.len(),
            if page < 5 { 20 } else { 15 },
            "page {page}: 20 a page, 15 on the last"
        );
        seen.extend(items.iter().cloned());
        if page == 5 {
            assert!(
                response.message().contains("the last"),
                "{}",
                response.message()
            );
        }
    }
    assert_eq!(Value::Array(seen), ints(0..95), "the pages are the value");
}

#[tokio::test]
async fn an_out_of_range_page_is_empty_with_the_true_totals() {
    let ref_id = numbers_ref("beyond", 95).await;
    for page in [6, 100, usize::MAX / 20 + 1, usize::MAX] {
        let response = get(&ref_id, GetOptions::default().page(page)).await;
        let json = check_page(&response, page, 5, json!(95), 200);
        assert_eq!(json["preview"], json!([]), "page {page} is empty");
        let message = response.message();
        assert!(
            message.contains("beyond") && message.contains("from 1 to 5"),
            "the message says which pages exist: {message}"
        );
    }
    // The largest page size too: one page, and page 2 of it empty.
    let response = get(&ref_id, GetOptions::default().page(2).page_size(usize::MAX)).await;
    let json = check_page(&response, 2, 1, json!(95), 200);
    assert_eq!(json["preview"], json!([]));
    let response = get(
        &ref_id,
        GetOptions::default().page(usize::MAX).page_size(usize::MAX),
    )
    .await;
    check_page(&response, usize::MAX, 1, json!(95), 200);
}

#[tokio::test]
async fn each_page_is_trimmed_to_max_size() {
    let ref_id = numbers_ref("trim", 95).await;
    // All 95 items on one page are more than 200 characters: the page is sampled, first and last kept.
    assert!(SizeMeasure::Characters.of(&ints(0..95)) > 200);
    let response = get(&ref_id, GetOptions::default().page_size(100)).await;
    let json = check_page(&response, 1, 1, json!(95), 200);
    let items = json["preview"].as_array().unwrap();
    assert_eq!(items.first(), Some(&json!(0)));
    assert_eq!(items.last(), Some(&json!(94)));
    assert!(items.len() < 95 && items.len() > 40, "{json}");
    // The message says how much of the page is shown, and how to see every item.
    let message = response.message();
    assert!(
        message.contains(&format!(
            "{} of its 95 items fit max_size 200 characters, sampled evenly",
            items.len()
        )),
        "{message}"
    );
    assert!(
        message.contains(&format!("try page_size={}", items.len())),
        "{message}"
    );
    // Following the advice shows every item of each page, for items of one size.
    let advised = GetOptions::default().page_size(items.len());
    let pages = 95usize.div_ceil(items.len());
    let mut seen = Vec::new();
    for page in 1..=pages {
        let response = get(&ref_id, advised.clone().page(page)).await;
        let json = check_page(&response, page, pages, json!(95), 200);
        assert!(
            !response.message().contains("fit max_size"),
            "page {page} is whole: {}",
            response.message()
        );
        seen.extend(json["preview"].as_array().unwrap().iter().cloned());
    }
    assert_eq!(seen, (0..95).map(|i| json!(i)).collect::<Vec<_>>());
    // A page that fits is said to be whole: nothing about sampling.
    let response = get(&ref_id, GetOptions::default().page_size(10)).await;
    check_page(&response, 1, 10, json!(95), 200);
    assert!(
        !response.message().contains("fit max_size"),
        "{}",
        response.message()
    );

    // A smaller max_size trims harder.
    let response = get(
        &ref_id,
        GetOptions::default().page(2).page_size(20).max_size(30),
    )
    .await;
    let json = check_page(&response, 2, 5, json!(95), 30);
    let items = json["preview"].as_array().unwrap();
    assert_eq!(items.first(), Some(&json!(20)));
    assert_eq!(items.last(), Some(&json!(39)));
    assert!(items.len() < 20, "{json}");
}

#[tokio::test]
async fn full_returns_the_whole_value_whatever_its_size() {
    let whole = ints(0..3000);
    assert!(SizeMeasure::Characters.of(&whole) > 50 * 200);
    let response = numbers("full".into(), 3000).await.unwrap();
    assert!(
        response.preview_of().is_some(),
        "the call answers a preview"
    );
    let ref_id = response.ref_id().to_string();
    let full = get(&ref_id, GetOptions::default().full(true)).await;
    assert!(full.is_complete());
    assert_eq!(
        full.value().map(refcache::JsonText::to_value).as_ref(),
        Some(&whole)
    );
    let json = full.to_json();
    assert_eq!(json["value"], whole);
    assert_eq!(json["is_complete"], json!(true));
    assert_eq!(json["total_items"], json!(3000));
    // Even with a small max_size: full wins.
    let full = get(&ref_id, GetOptions::default().full(true).max_size(10)).await;
    assert_eq!(
        full.value().map(refcache::JsonText::to_value).as_ref(),
        Some(&whole)
    );
    // full(false) is no option at all.
    let auto = get(&ref_id, GetOptions::default().full(false)).await;
    assert_eq!(auto.to_json(), response.to_json());
}

#[tokio::test]
async fn invalid_options_are_refused_with_the_fix() {
    let ref_id = numbers_ref("invalid", 95).await;
    let cases = [
        (GetOptions::default().page(0), "page", "from 1"),
        (GetOptions::default().page_size(0), "page_size", "from 1"),
        (GetOptions::default().max_size(0), "max_size", "from 1"),
        (GetOptions::default().page(0).page_size(5), "page", "from 1"),
        (GetOptions::default().full(true).page(2), "full", "alone"),
        (
            GetOptions::default().full(true).page_size(5),
            "full",
            "alone",
        ),
        (
            GetOptions::default().full(true).page(1).page_size(5),
            "full",
            "alone",
        ),
    ];
    for (options, name, fix) in cases {
        let err = CACHE
            .get_cached_result_with(&ref_id, &options)
            .await
            .expect_err(&format!("{options:?} is refused"));
        match &err {
            RefCacheError::InvalidOption { option, .. } => {
                assert_eq!(*option, name, "{options:?}: {err}");
            }
            other => panic!("{options:?}: InvalidOption, not {other:?}"),
        }
        let text = err.to_string();
        assert!(
            text.contains(&format!("`{name}`")) && text.contains(fix),
            "{options:?}: the message names the option and the fix: {text}"
        );
    }
    // The full-with-page message says what to do instead.
    let err = CACHE
        .get_cached_result_with(&ref_id, &GetOptions::default().full(true).page(1))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("page") && err.to_string().contains("cannot go with"),
        "{err}"
    );
}

#[tokio::test]
async fn an_object_pages_by_its_entries() {
    // Keys in sorted order, so the object's order is the same whether or not serde_json preserves insertion order.
    let object = Value::Object(
        (10..35)
            .map(|i| (format!("key{i}"), json!(i)))
            .collect::<Map<_, _>>(),
    );
    let response = echo("object".into(), object.clone()).await.unwrap();
    let ref_id = response.ref_id().to_string();
    let json = check_page(
        &get(&ref_id, GetOptions::default().page(2).page_size(10)).await,
        2,
        3,
        json!(25),
        200,
    );
    let expected: Map<String, Value> = (20..30).map(|i| (format!("key{i}"), json!(i))).collect();
    assert_eq!(json["preview"], Value::Object(expected));
    let last = check_page(
        &get(&ref_id, GetOptions::default().page(3).page_size(10)).await,
        3,
        3,
        json!(25),
        200,
    );
    assert_eq!(last["preview"].as_object().unwrap().len(), 5);
}

#[tokio::test]
async fn a_value_that_is_not_a_collection_is_its_single_page() {
    let text = "a long string, ".repeat(30);
    let response = echo("string".into(), json!(text)).await.unwrap();
    let ref_id = response.ref_id().to_string();
    for options in [
        GetOptions::default().page(1),
        GetOptions::default().page_size(5),
        GetOptions::default().page(1).page_size(5),
    ] {
        let json = check_page(&get(&ref_id, options.clone()).await, 1, 1, Value::Null, 200);
        let shown = json["preview"].as_str().expect("the string, cut");
        assert!(
            text.starts_with(shown.trim_end_matches("...")),
            "{options:?}: {shown}"
        );
        assert!(
            shown.len() > 100,
            "{options:?}: the budget is spent: {shown}"
        );
    }
    // Its page 2 is beyond its one page: empty, like any out-of-range page, not the string again.
    let response = get(&ref_id, GetOptions::default().page(2)).await;
    let json = check_page(&response, 2, 1, Value::Null, 200);
    assert!(
        matches!(&json["preview"], Value::Null)
            || json["preview"] == json!("")
            || json["preview"] == json!([]),
        "page 2 of a one-page value shows nothing: {json}"
    );
}

#[tokio::test]
async fn an_empty_collection_has_one_empty_page() {
    let response = echo("empty".into(), json!([])).await.unwrap();
    assert_eq!(
        response.value().map(refcache::JsonText::to_value).as_ref(),
        Some(&json!([]))
    );
    let page = get(response.ref_id().as_str(), GetOptions::default().page(1)).await;
    let json = check_page(&page, 1, 1, json!(0), 200);
    assert_eq!(json["preview"], json!([]));
    assert!(
        !page.message().contains("beyond"),
        "page 1 of an empty value is not beyond the last page: {}",
        page.message()
    );
}
