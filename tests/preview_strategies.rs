//! The three preview strategies at their edges, through the public `Previewer::preview` (and a call or two, to show
//! the same holds end to end):
//! - `sample`: evenly spaced items, always the first and the last, the most that fit; a string cut at a character
//!   (never inside one) with `...`; a single item too large is itself sampled; numbers, booleans and null shown
//!   whole;
//! - `truncate`: a prefix of the JSON text plus `...`, the longest that fits;
//! - `paginate`: pages from 1, the last one partial, one out of range empty with the true totals, each page trimmed
//!   to `max_size`;
//! - empty arrays, objects and strings, nested values, unicode and emoji; and token budgets (cl100k_base and
//!   o200k_base) respected like character budgets.

use std::sync::LazyLock;

use refcache::{Preview, PreviewStrategy, Previewer, RefCache, SizeMeasure, TokenEncoding, cached};
use serde_json::{Map, Value, json};

const CHARS: SizeMeasure = SizeMeasure::Characters;
const CL100K: SizeMeasure = SizeMeasure::Tokens(TokenEncoding::Cl100kBase);
const O200K: SizeMeasure = SizeMeasure::Tokens(TokenEncoding::O200kBase);

const ALL: [PreviewStrategy; 3] = [
    PreviewStrategy::Sample,
    PreviewStrategy::Paginate,
    PreviewStrategy::Truncate,
];

fn chars(max_size: usize) -> Previewer {
    Previewer::new(CHARS, max_size)
}

fn ints(range: std::ops::Range<usize>) -> Value {
    Value::Array(range.map(|i| json!(i)).collect())
}

/// `Previewer::preview`, checked for what holds of every preview: sizes in the previewer's measure, the strategy
/// named, and the item count of the whole value.
fn preview(
    p: &Previewer,
    value: &Value,
    strategy: PreviewStrategy,
    page: Option<usize>,
) -> Preview {
    let out = p.preview(value, strategy, page);
    assert_eq!(out.strategy, strategy);
    assert_eq!(
        out.original_size,
        p.measure.of(value),
        "{strategy:?}: original_size"
    );
    assert_eq!(
        out.preview_size,
        p.measure.of(&out.value),
        "{strategy:?}: preview_size is the shown value's size"
    );
    let items = match value {
        Value::Array(a) => Some(a.len()),
        Value::Object(o) => Some(o.len()),
        _ => None,
    };
    assert_eq!(out.total_items, items, "{strategy:?}: total_items");
    if strategy == PreviewStrategy::Paginate {
        assert!(out.page.is_some() && out.total_pages.is_some(), "{out:?}");
    } else {
        assert_eq!((out.page, out.total_pages), (None, None), "{out:?}");
    }
    out
}

/// The evenly spaced `k` of `0..n`, first and last included (`k >= 2`).
fn spread(n: usize, k: usize) -> Vec<usize> {
    (0..k).map(|i| i * (n - 1) / (k - 1)).collect()
}

/// The text a truncate preview shows, without its `...`.
fn truncated(preview: &Preview) -> &str {
    let text = preview.value.as_str().expect("truncate answers a string");
    text.strip_suffix("...")
        .unwrap_or_else(|| panic!("a cut text ends with `...`: {text}"))
}

#[test]
fn empty_values_are_shown_as_they_are() {
    let p = chars(10);
    for empty in [json!([]), json!({}), json!("")] {
        let sampled = preview(&p, &empty, PreviewStrategy::Sample, None);
        assert_eq!(sampled.value, empty, "sample of {empty}");

        let paged = preview(&p, &empty, PreviewStrategy::Paginate, None);
        assert_eq!(paged.value, empty, "page 1 of {empty}");
        assert_eq!(paged.page, Some(1));

        let cut = preview(&p, &empty, PreviewStrategy::Truncate, None);
        assert_eq!(cut.value, empty, "nothing to cut in {empty}");
    }
}

#[test]
fn an_empty_collection_has_one_empty_page() {
    // Page 1 of an empty array is answered (empty), so it is in range: one page, not zero ("page 1 of 0").
    let p = chars(10).page_size(5);
    for empty in [json!([]), json!({})] {
        let paged = preview(&p, &empty, PreviewStrategy::Paginate, Some(1));
        assert_eq!(paged.value, empty);
        assert_eq!(
            (paged.page, paged.total_pages, paged.total_items),
            (Some(1), Some(1), Some(0)),
            "page 1 of {empty} is its one (empty) page: {paged:?}"
        );
    }
}

#[test]
fn one_item_that_fits_is_shown_whole() {
    let p = chars(10);
    for one in [json!([1]), json!({"a": 1}), json!(["abc"])] {
        assert_eq!(preview(&p, &one, PreviewStrategy::Sample, None).value, one);
        let paged = preview(&p, &one, PreviewStrategy::Paginate, None);
        assert_eq!(paged.value, one);
        assert_eq!((paged.page, paged.total_pages), (Some(1), Some(1)));
    }
}

#[test]
fn one_item_too_large_is_itself_sampled() {
    let long = "a very long string indeed, far too long";
    let p = chars(20);

    // `["` + 13 characters + `..."]` is exactly 20.
    let array = preview(&p, &json!([long]), PreviewStrategy::Sample, None);
    assert_eq!(array.value, json!([format!("{}...", &long[..13])]));
    assert_eq!(array.preview_size, 20, "the most that fits");

    // `{"key":"` + 7 characters + `..."}` is exactly 20.
    let object = preview(&p, &json!({"key": long}), PreviewStrategy::Sample, None);
    assert_eq!(object.value, json!({"key": format!("{}...", &long[..7])}));
    assert_eq!(object.preview_size, 20, "the most that fits");

    // A page of one item is trimmed the same way.
    let paged = preview(&p, &json!([long]), PreviewStrategy::Paginate, Some(1));
    assert_eq!(paged.value, array.value);

    // Several items, none of which fits alone: the first one, sampled.
    let many = json!([long, "second", "third"]);
    let first = preview(
        &p,
        &json!([long, long, long]),
        PreviewStrategy::Sample,
        None,
    );
    assert_eq!(first.value, array.value, "only the first item, cut");
    let mixed = preview(&p, &many, PreviewStrategy::Sample, None);
    assert!(mixed.preview_size <= 20, "{mixed:?}");
}

#[test]
fn a_single_entry_whose_key_needs_escaping_stays_within_budget() {
    // The key's JSON text is longer than its characters: `"line\n1"` (9) for 6 characters, `"say \"hi\""` (12)
    // for 8. The sampled value must leave room for the key as it is written.
    let long = "x".repeat(100);
    for key in ["line\n1", "say \"hi\"", "back\\slash", "tab\there"] {
        let value = json!({ key: long });
        for max in [20, 30, 50] {
            let out = preview(&chars(max), &value, PreviewStrategy::Sample, None);
            assert!(
                out.preview_size <= max,
                "key {key:?}, max_size {max}: preview {} of size {}",
                out.value,
                out.preview_size
            );
            // The budget is spent, unless not even `"..."` fits beside the key: then the value is `""`.
            assert!(
                out.preview_size >= max - 1 || out.value == json!({ key: "" }),
                "key {key:?}, max_size {max}: the budget is spent: {}",
                out.value
            );
        }
    }
}

#[test]
fn strings_are_cut_at_characters_never_inside_one() {
    let p = chars(10);
    // 2 quotes, 5 characters and `...`: exactly 10.
    let accents = preview(&p, &json!("é".repeat(15)), PreviewStrategy::Sample, None);
    assert_eq!(accents.value, json!("ééééé..."));
    let emoji = preview(&p, &json!("😀".repeat(20)), PreviewStrategy::Sample, None);
    assert_eq!(
        emoji.value,
        json!("😀😀😀😀😀..."),
        "an emoji is one character"
    );
    let cjk = preview(
        &p,
        &json!("日本語のテキストです"),
        PreviewStrategy::Sample,
        None,
    );
    assert_eq!(cjk.value, json!("日本語のテ..."));

    // Under a token measure, where one character is several tokens, the cut still falls between characters.
    let mixed = format!(
        "{}{}{}",
        "héllo wörld ",
        "😀🎉🚀".repeat(30),
        "日本語".repeat(20)
    );
    for measure in [CL100K, O200K] {
        let p = Previewer::new(measure, 15);
        let out = preview(&p, &json!(mixed), PreviewStrategy::Sample, None);
        let text = out.value.as_str().expect("a string");
        let kept = text.strip_suffix("...").expect("cut with `...`");
        assert!(
            mixed.starts_with(kept),
            "{measure:?}: a character prefix: {text}"
        );
        assert!(out.preview_size <= 15, "{measure:?}: {}", out.preview_size);
        assert!(kept.chars().count() >= 3, "{measure:?}: {text}");
    }

    // Truncate cuts the JSON text the same way.
    let value = json!({"greeting": "こんにちは世界😀🎉", "n": 1});
    let text = serde_json::to_string(&value).unwrap();
    for max in [8, 12, 17, 21] {
        let out = preview(&chars(max), &value, PreviewStrategy::Truncate, None);
        let kept = truncated(&out);
        assert!(text.starts_with(kept), "max_size {max}: {kept}");
        assert!(
            out.preview_size <= max,
            "max_size {max}: {}",
            out.preview_size
        );
    }
}

#[test]
fn numbers_booleans_and_null_are_shown_whole() {
    let p = chars(3);
    for scalar in [
        json!(1234567890123_i64),
        json!(-3.25),
        json!(true),
        json!(false),
        json!(null),
    ] {
        let sampled = preview(&p, &scalar, PreviewStrategy::Sample, None);
        assert_eq!(sampled.value, scalar, "sample never cuts {scalar}");
        let paged = preview(&p, &scalar, PreviewStrategy::Paginate, None);
        assert_eq!(paged.value, scalar, "paginate never cuts {scalar}");
        assert_eq!((paged.page, paged.total_pages), (Some(1), Some(1)));
    }
    // Inside an array sample they stay whole too: items are shown or left out, never cut.
    let value = json!([123456789, true, null, 987654321, false, 42]);
    let out = preview(&chars(25), &value, PreviewStrategy::Sample, None);
    for item in out.value.as_array().unwrap() {
        assert!(
            value.as_array().unwrap().contains(item),
            "{item} is an item of the value"
        );
    }
}

#[test]
fn truncate_never_cuts_a_value_that_fits() {
    // Through the cache a value that fits is answered whole; a previewer asked directly should not lose any of it.
    let p = chars(10);
    for fits in [json!(123456), json!([1, 2, 3]), json!("abcdef")] {
        assert!(CHARS.of(&fits) <= 10);
        let out = preview(&p, &fits, PreviewStrategy::Truncate, None);
        assert_eq!(out.value, fits, "{fits} fits in 10 characters: shown whole");
    }
}

#[test]
fn nested_values_are_sampled_by_their_top_level_items() {
    let value = Value::Object(
        ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot"]
            .iter()
            .enumerate()
            .map(|(i, k)| (k.to_string(), json!([i, i * 10, i * 100])))
            .collect::<Map<_, _>>(),
    );
    let out = preview(&chars(50), &value, PreviewStrategy::Sample, None);
    let shown = out.value.as_object().expect("an object");
    assert_eq!(shown.keys().next().map(String::as_str), Some("alpha"));
    assert_eq!(
        shown.keys().next_back().map(String::as_str),
        Some("foxtrot")
    );
    for (key, item) in shown {
        assert_eq!(item, &value[key], "entries are kept whole: {key}");
    }
    assert!(out.preview_size <= 50);

    // Arrays of objects: the same.
    let rows = Value::Array(
        (0..40)
            .map(|i| json!({"id": i, "tags": ["a", "b"]}))
            .collect(),
    );
    let out = preview(&chars(120), &rows, PreviewStrategy::Sample, None);
    let shown = out.value.as_array().unwrap();
    assert_eq!(shown.first(), Some(&rows[0]));
    assert_eq!(shown.last(), Some(&rows[39]));
    assert!(out.preview_size <= 120);
}

#[test]
fn sample_keeps_the_first_and_last_and_the_most_evenly_spaced_items_that_fit() {
    let n = 1000;
    let value = ints(0..n);
    for max in [20, 57, 100, 333] {
        let out = preview(&chars(max), &value, PreviewStrategy::Sample, None);
        let shown: Vec<usize> = out
            .value
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        let k = shown.len();
        assert!(k >= 2, "max_size {max}: {shown:?}");
        assert_eq!(shown[0], 0, "the first item");
        assert_eq!(shown[k - 1], n - 1, "the last item");
        assert_eq!(shown, spread(n, k), "evenly spaced");
        let gaps: Vec<usize> = shown.windows(2).map(|w| w[1] - w[0]).collect();
        let (lo, hi) = (gaps.iter().min().unwrap(), gaps.iter().max().unwrap());
        assert!(hi - lo <= 1, "gaps differ by at most one: {gaps:?}");
        assert!(out.preview_size <= max);
        let one_more = Value::Array(spread(n, k + 1).into_iter().map(|i| json!(i)).collect());
        assert!(
            CHARS.of(&one_more) > max,
            "max_size {max}: {} items would not fit, so {k} is the most",
            k + 1
        );
    }

    // An object: first and last entries.
    let object = Value::Object(
        (100..200)
            .map(|i| (format!("k{i}"), json!(i)))
            .collect::<Map<_, _>>(),
    );
    let out = preview(&chars(60), &object, PreviewStrategy::Sample, None);
    let keys: Vec<&String> = out.value.as_object().unwrap().keys().collect();
    assert_eq!(keys.first().map(|k| k.as_str()), Some("k100"));
    assert_eq!(keys.last().map(|k| k.as_str()), Some("k199"));
    assert!(keys.len() >= 3, "{keys:?}");
}

#[test]
fn truncate_is_the_longest_prefix_of_the_json_text_that_fits() {
    let value = json!({"name": "refcache", "list": [1, 2, 3], "quote": "say \"hi\"", "more": "x".repeat(50)});
    let text = serde_json::to_string(&value).unwrap();
    for max in [10, 20, 33, 50] {
        let out = preview(&chars(max), &value, PreviewStrategy::Truncate, None);
        let kept = truncated(&out);
        assert!(text.starts_with(kept), "max_size {max}: a prefix: {kept}");
        assert!(
            out.preview_size <= max,
            "max_size {max}: {}",
            out.preview_size
        );
        // One more character of the text would not fit (escaping counts: a quote in the text is 2 characters).
        let longer: String = text.chars().take(kept.chars().count() + 1).collect();
        assert!(
            CHARS.of(&json!(format!("{longer}..."))) > max,
            "max_size {max}: {kept} is the longest prefix"
        );
    }
    // A number, under truncate, is shown as cut text too (the value is a string).
    let long_array = ints(0..100);
    let out = preview(&chars(30), &long_array, PreviewStrategy::Truncate, None);
    assert!(truncated(&out).starts_with("[0,1,2,3,"), "{out:?}");
}

#[test]
fn paginate_pages_from_one_with_a_partial_last_page() {
    let value = ints(0..45);
    let p = chars(1000).page_size(20);
    let pages: Vec<Preview> = (1..=3)
        .map(|page| preview(&p, &value, PreviewStrategy::Paginate, Some(page)))
        .collect();
    assert_eq!(pages[0].value, ints(0..20));
    assert_eq!(pages[1].value, ints(20..40));
    assert_eq!(pages[2].value, ints(40..45), "the last page is partial");
    for (i, page) in pages.iter().enumerate() {
        assert_eq!(page.page, Some(i + 1));
        assert_eq!(page.total_pages, Some(3), "true totals on every page");
        assert_eq!(page.total_items, Some(45));
    }
    assert_eq!(
        preview(&p, &value, PreviewStrategy::Paginate, None).value,
        pages[0].value,
        "no page: page 1"
    );
    // Exactly divisible: no empty trailing page.
    let forty = ints(0..40);
    let last = preview(&p, &forty, PreviewStrategy::Paginate, Some(2));
    assert_eq!((last.value, last.total_pages), (ints(20..40), Some(2)));

    // Out of range: empty, with the true totals; the largest page number does not overflow.
    for page in [4, 1000, usize::MAX / 20, usize::MAX] {
        let out = preview(&p, &value, PreviewStrategy::Paginate, Some(page));
        assert_eq!(out.value, json!([]), "page {page} is empty");
        assert_eq!(out.page, Some(page));
        assert_eq!((out.total_pages, out.total_items), (Some(3), Some(45)));
    }
    let huge_pages = chars(1000).page_size(usize::MAX);
    let all = preview(
        &huge_pages,
        &value,
        PreviewStrategy::Paginate,
        Some(usize::MAX),
    );
    assert_eq!((all.value, all.total_pages), (json!([]), Some(1)));

    // An object pages by entries.
    let object = Value::Object(
        (10..35)
            .map(|i| (format!("k{i}"), json!(i)))
            .collect::<Map<_, _>>(),
    );
    let second = preview(
        &chars(1000).page_size(10),
        &object,
        PreviewStrategy::Paginate,
        Some(2),
    );
    let keys: Vec<&String> = second.value.as_object().unwrap().keys().collect();
    let expected: Vec<String> = (20..30).map(|i| format!("k{i}")).collect();
    assert_eq!(keys, expected.iter().collect::<Vec<_>>());
    assert_eq!(
        (second.total_pages, second.total_items),
        (Some(3), Some(25))
    );
}

#[test]
fn each_page_is_trimmed_to_max_size() {
    let value = ints(0..100);
    let p = chars(30).page_size(20);
    for page in 1..=5 {
        let out = preview(&p, &value, PreviewStrategy::Paginate, Some(page));
        let shown = out.value.as_array().unwrap();
        let first = (page - 1) * 20;
        assert_eq!(shown.first(), Some(&json!(first)), "page {page}");
        assert_eq!(shown.last(), Some(&json!(first + 19)), "page {page}");
        assert!(shown.len() < 20, "page {page} was trimmed");
        assert!(out.preview_size <= 30, "page {page}: {}", out.preview_size);
        assert_eq!(out.total_pages, Some(5));
    }
}

#[test]
fn token_budgets_are_respected_by_every_strategy() {
    let shapes = [
        (
            "records",
            Value::Array(
                (0..400)
                    .map(|i| json!({"id": i, "name": format!("item-{i}"), "ok": i % 2 == 0}))
                    .collect(),
            ),
        ),
        (
            "prose",
            json!(
                "Tokens are not characters; a budget in tokens must hold all the same. ".repeat(60)
            ),
        ),
        (
            "unicode",
            json!("日本語のテキストと絵文字😀🎉、そして naïve café ".repeat(80)),
        ),
        (
            "one entry",
            json!({"a rather long key with spaces": "word ".repeat(500)}),
        ),
        (
            "deep",
            json!({"outer": {"inner": [{"text": "lorem ipsum ".repeat(300)}]}}),
        ),
    ];
    for measure in [CL100K, O200K] {
        for max in [30, 50, 200] {
            let p = Previewer::new(measure, max).page_size(50);
            for (label, value) in &shapes {
                assert!(measure.of(value) > max);
                for strategy in ALL {
                    let out = preview(&p, value, strategy, None);
                    assert!(
                        out.preview_size <= max,
                        "{measure:?} {label} {strategy:?} max_size {max}: {} ({})",
                        out.preview_size,
                        out.value
                    );
                }
            }
        }
    }
}

// End to end: the same strategies through a call, with the function's strategy.

static CACHE: LazyLock<RefCache> = LazyLock::new(|| {
    RefCache::builder()
        .previewer(Previewer::new(CHARS, 40).page_size(5))
        .build()
        .expect("a valid cache")
});

#[cached(cache = CACHE, preview = "truncate")]
async fn truncated_call(label: String, value: Value) -> Value {
    let _ = label;
    value
}

#[cached(cache = CACHE, preview = "paginate")]
async fn paged_call(label: String, value: Value) -> Value {
    let _ = label;
    value
}

#[tokio::test]
async fn strategies_through_a_call() {
    let emoji = json!("🎉".repeat(100));
    let response = truncated_call("emoji".into(), emoji.clone()).await.unwrap();
    let preview = response.preview_of().expect("a preview");
    assert_eq!(preview.strategy, PreviewStrategy::Truncate);
    let text = preview.value.as_str().unwrap();
    let kept = text.strip_suffix("...").unwrap();
    assert!(
        serde_json::to_string(&emoji).unwrap().starts_with(kept),
        "{text}"
    );
    assert!(preview.preview_size <= 40);

    let words = Value::Array((0..23).map(|i| json!(format!("word number {i}"))).collect());
    let response = paged_call("words".into(), words.clone()).await.unwrap();
    let preview = response.preview_of().expect("a preview");
    assert_eq!(
        (preview.page, preview.total_pages, preview.total_items),
        (Some(1), Some(5), Some(23))
    );
    assert!(preview.preview_size <= 40, "{preview:?}");
    let shown = preview.value.as_array().unwrap();
    assert_eq!(shown.first(), Some(&words[0]));
    assert_eq!(
        shown.last(),
        Some(&words[4]),
        "page 1 ends with item 5, trimmed"
    );
}
