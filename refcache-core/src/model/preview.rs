//! Size measurement and previews: how a large value is shown without flooding an agent's context.
//!
//! A value larger than `max_size` (per call, else the function's `max_size`, else the cache's) is answered with a
//! preview instead of the value; `get_cached_result` pages through it or fetches it whole. See `docs/refcache.md`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// How a value's size is counted.
///
/// The default is `Tokens` in `cl100k_base` when the `tokens` feature is on (it is one of the
/// `refcache` crate's default features), and [`Characters`](Self::Characters) when it is off. Without the feature
/// the `Tokens` variant does not exist, so code that names it does not compile, and `size_measure = "tokens"` in the
/// settings is [`ConfigError::TokensNotCompiled`](crate::ConfigError::TokensNotCompiled).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum SizeMeasure {
    /// Characters of the compact JSON text.
    Characters,
    /// Tokens of the compact JSON text, by a tiktoken encoding (its vocabulary ships inside the crate). Only with
    /// the `tokens` feature.
    #[cfg(feature = "tokens")]
    Tokens(TokenEncoding),
}

/// Tokens in `cl100k_base`: the `tokens` feature is on.
#[cfg(feature = "tokens")]
impl Default for SizeMeasure {
    fn default() -> Self {
        Self::Tokens(TokenEncoding::default())
    }
}

/// Characters: the `tokens` feature is off, so there is no token counter.
#[cfg(not(feature = "tokens"))]
impl Default for SizeMeasure {
    fn default() -> Self {
        Self::Characters
    }
}

/// A tiktoken encoding. Used only with the `tokens` feature; the setting `token_encoding` is accepted without it,
/// and unused, as it is when `size_measure` is `characters`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TokenEncoding {
    /// `cl100k_base` (GPT-4, GPT-3.5).
    #[default]
    Cl100kBase,
    /// `o200k_base` (GPT-4o and later).
    O200kBase,
}

impl SizeMeasure {
    /// The unit's name: `characters` or `tokens`.
    pub fn unit(self) -> &'static str {
        match self {
            Self::Characters => "characters",
            #[cfg(feature = "tokens")]
            Self::Tokens(_) => "tokens",
        }
    }

    /// The size of `value`.
    pub fn of(self, value: &Value) -> usize {
        self.of_text(&serde_json::to_string(value).expect("a Value always serializes"))
    }

    /// The size of a JSON text.
    pub fn of_text(self, text: &str) -> usize {
        match self {
            Self::Characters => text.chars().count(),
            #[cfg(feature = "tokens")]
            Self::Tokens(TokenEncoding::Cl100kBase) => tiktoken_rs::cl100k_base_singleton()
                .encode_ordinary(text)
                .len(),
            #[cfg(feature = "tokens")]
            Self::Tokens(TokenEncoding::O200kBase) => tiktoken_rs::o200k_base_singleton()
                .encode_ordinary(text)
                .len(),
        }
    }
}

impl PreviewStrategy {
    /// The wire name: `sample`, `paginate` or `truncate`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sample => "sample",
            Self::Paginate => "paginate",
            Self::Truncate => "truncate",
        }
    }
}

impl std::str::FromStr for PreviewStrategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "sample" => Ok(Self::Sample),
            "paginate" => Ok(Self::Paginate),
            "truncate" => Ok(Self::Truncate),
            other => Err(format!(
                "invalid preview strategy `{}`: expected one of `sample`, `paginate`, `truncate`",
                other.chars().take(100).collect::<String>()
            )),
        }
    }
}

/// How a value too large for `max_size` is previewed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum PreviewStrategy {
    /// Evenly spaced items of arrays and objects (always the first and the last); strings cut with `...`.
    #[default]
    Sample,
    /// One page of items (1-indexed), trimmed to fit.
    Paginate,
    /// The JSON text cut with `...`.
    Truncate,
}

/// How a page fits `max_size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum PageFit {
    /// Shown whole.
    Whole,
    /// Some items left out (evenly spaced ones kept), each shown item whole.
    Sampled,
    /// Items (or the page's only value) cut to fit.
    Cut,
}

/// One page, as [`Previewer::paginate`] makes it.
struct Page {
    /// What is shown of the page.
    shown: Value,
    /// The page number.
    page: usize,
    /// How many pages there are.
    pages: usize,
    /// Items on the page before fitting (for a collection).
    items: Option<usize>,
    /// How `shown` relates to the page.
    fit: PageFit,
}

/// How `shown` (a sample of `page`) fits: whole, a subsequence of whole items, or with items cut.
fn page_fit(page: &Value, shown: &Value) -> PageFit {
    if shown == page {
        return PageFit::Whole;
    }
    let whole_items = match (page, shown) {
        (Value::Array(all), Value::Array(kept)) => {
            let mut all = all.iter();
            kept.iter()
                .all(|item| all.any(|candidate| candidate == item))
        }
        (Value::Object(all), Value::Object(kept)) => {
            kept.iter().all(|(key, item)| all.get(key) == Some(item))
        }
        _ => false,
    };
    if whole_items {
        PageFit::Sampled
    } else {
        PageFit::Cut
    }
}

/// A preview of a value, and what it leaves out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Preview {
    /// What is shown.
    pub value: Value,
    /// How it was made.
    pub strategy: PreviewStrategy,
    /// Items of the whole value, for an array or object.
    pub total_items: Option<usize>,
    /// The whole value's size.
    pub original_size: usize,
    /// The preview's size.
    pub preview_size: usize,
    /// The page shown (paginate).
    pub page: Option<usize>,
    /// How many pages there are (paginate).
    pub total_pages: Option<usize>,
    /// Items on the page shown, before it was fitted to `max_size` (paginate, a collection).
    #[serde(default)]
    pub page_items: Option<usize>,
    /// How the page shown fits `max_size` (paginate).
    #[serde(default)]
    pub page_fit: Option<PageFit>,
}

impl Preview {
    /// Items shown, for an array or object.
    pub(crate) fn shown_items(&self) -> Option<usize> {
        items(&self.value)
    }
}

/// Makes previews.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Previewer {
    /// How sizes are counted.
    pub measure: SizeMeasure,
    /// The largest preview, in the measure's units.
    pub max_size: usize,
    /// Items per page (paginate).
    pub page_size: usize,
    /// The strategy used when none is asked for.
    pub strategy: PreviewStrategy,
}

impl Default for Previewer {
    fn default() -> Self {
        Self {
            measure: SizeMeasure::default(),
            max_size: 1000,
            page_size: 20,
            strategy: PreviewStrategy::Sample,
        }
    }
}

const ELLIPSIS: &str = "...";

/// How deep sampling follows a first item that is itself too large.
const MAX_SAMPLE_DEPTH: usize = 64;

fn items(value: &Value) -> Option<usize> {
    match value {
        Value::Array(a) => Some(a.len()),
        Value::Object(o) => Some(o.len()),
        _ => None,
    }
}

/// The `k` indices of `0..n` spread evenly, always including the first and the last when `k >= 2`.
fn spread(n: usize, k: usize) -> Vec<usize> {
    match k {
        0 => Vec::new(),
        1 => vec![0],
        _ if k >= n => (0..n).collect(),
        _ => (0..k).map(|i| i * (n - 1) / (k - 1)).collect(),
    }
}

/// The items of an array or object at `indices` (an object keeps its entries' order).
fn pick(value: &Value, indices: &[usize]) -> Value {
    match value {
        Value::Array(a) => Value::Array(indices.iter().map(|&i| a[i].clone()).collect()),
        Value::Object(o) => {
            let entries: Vec<(&String, &Value)> = o.iter().collect();
            Value::Object(
                indices
                    .iter()
                    .map(|&i| (entries[i].0.clone(), entries[i].1.clone()))
                    .collect::<Map<_, _>>(),
            )
        }
        other => other.clone(),
    }
}

/// The largest `k` in `0..=hi` for which `fits(k)` holds, assuming it holds for all smaller `k` (binary search).
fn largest(hi: usize, fits: impl Fn(usize) -> bool) -> usize {
    let (mut lo, mut hi) = (0, hi);
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if fits(mid) { lo = mid } else { hi = mid - 1 }
    }
    lo
}

impl Previewer {
    /// A previewer counting in `measure`, up to `max_size`.
    pub fn new(measure: SizeMeasure, max_size: usize) -> Self {
        Self {
            measure,
            max_size,
            ..Self::default()
        }
    }

    /// The same, with `page_size` items per page.
    pub fn page_size(mut self, page_size: usize) -> Self {
        self.page_size = page_size.max(1);
        self
    }

    /// The same, previewing by `strategy` when none is asked for.
    pub fn strategy(mut self, strategy: PreviewStrategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// The same, with another `max_size`.
    pub fn max_size(mut self, max_size: usize) -> Self {
        self.max_size = max_size;
        self
    }

    fn size(&self, value: &Value) -> usize {
        self.measure.of(value)
    }

    /// Whether `value` fits whole.
    pub fn fits(&self, value: &Value) -> bool {
        self.size(value) <= self.max_size
    }

    /// The preview of `value` by `strategy` (`page` for paginate, 1-indexed; default 1).
    pub fn preview(
        &self,
        value: &Value,
        strategy: PreviewStrategy,
        page: Option<usize>,
    ) -> Preview {
        self.preview_sized(value, self.size(value), strategy, page)
    }

    /// [`preview`](Self::preview) of a value whose size is already known (measuring a large value is slow).
    pub fn preview_sized(
        &self,
        value: &Value,
        original_size: usize,
        strategy: PreviewStrategy,
        page: Option<usize>,
    ) -> Preview {
        let total_items = items(value);
        let (shown, page, total_pages, page_items, page_fit) = match strategy {
            PreviewStrategy::Sample => (self.sample(value, self.max_size), None, None, None, None),
            PreviewStrategy::Truncate => (self.truncate(value), None, None, None, None),
            PreviewStrategy::Paginate => {
                let page = self.paginate(value, page.unwrap_or(1).max(1));
                (
                    page.shown,
                    Some(page.page),
                    Some(page.pages),
                    page.items,
                    Some(page.fit),
                )
            }
        };
        let preview_size = self.size(&shown);
        Preview {
            value: shown,
            strategy,
            total_items,
            original_size,
            preview_size,
            page,
            total_pages,
            page_items,
            page_fit,
        }
    }

    /// Evenly spaced items (first and last kept), the most that fit; a string cut with `...`; a single item that
    /// is itself too large is sampled in turn.
    fn sample(&self, value: &Value, budget: usize) -> Value {
        self.sample_at(value, budget, 0)
    }

    /// [`sample`](Self::sample) at nesting `depth`: past [`MAX_SAMPLE_DEPTH`] a value that does not fit is `null`.
    fn sample_at(&self, value: &Value, budget: usize, depth: usize) -> Value {
        let measure = self.measure;
        if measure.of(value) <= budget {
            return value.clone();
        }
        if depth >= MAX_SAMPLE_DEPTH || items(value) == Some(0) {
            // Too deep to keep sampling, or an empty collection larger than the budget: nothing smaller to show.
            return if depth >= MAX_SAMPLE_DEPTH {
                Value::Null
            } else {
                value.clone()
            };
        }
        match value {
            Value::String(s) => {
                let chars: Vec<char> = s.chars().collect();
                let cut =
                    |k: usize| Value::String(chars[..k].iter().collect::<String>() + ELLIPSIS);
                if measure.of(&cut(0)) > budget {
                    // Not even the ellipsis fits: the emptiest string there is.
                    return Value::String(String::new());
                }
                let k = largest(chars.len(), |k| measure.of(&cut(k)) <= budget);
                cut(k)
            }
            Value::Array(_) | Value::Object(_) => {
                let n = items(value).unwrap_or(0);
                // Every item costs at least one unit (a character, or a token), so at most `budget` fit.
                let k = largest(n.min(budget), |k| {
                    measure.of(&pick(value, &spread(n, k))) <= budget
                });
                if k > 0 {
                    return pick(value, &spread(n, k));
                }
                // Not even one whole item fits: show the first one, itself sampled into what is left. The room is
                // what its wrapping (`[..]`, or `{"key":..}` with the key escaped) leaves; should the wrapped
                // result still overshoot (tokens can merge across the seam), shrink the room by the excess.
                let wrap = |inner: Value| match value {
                    Value::Array(_) => Value::Array(vec![inner]),
                    Value::Object(o) => {
                        let key = o.keys().next().cloned().unwrap_or_default();
                        Value::Object(Map::from_iter([(key, inner)]))
                    }
                    _ => inner,
                };
                let first = match value {
                    Value::Array(a) => a.first(),
                    Value::Object(o) => o.values().next(),
                    _ => None,
                };
                let Some(first) = first else {
                    return value.clone();
                };
                let seam = measure
                    .of(&wrap(Value::Null))
                    .saturating_sub(measure.of(&Value::Null));
                let mut room = budget.saturating_sub(seam);
                loop {
                    let candidate = wrap(self.sample_at(first, room, depth + 1));
                    let size = measure.of(&candidate);
                    if size <= budget || room == 0 {
                        return candidate;
                    }
                    room = room.saturating_sub((size - budget).max(1));
                }
            }
            // Numbers, booleans and null are small; shown whole.
            other => other.clone(),
        }
    }

    /// The JSON text cut with `...`, as a string; a value that fits, whole (there is nothing to cut).
    fn truncate(&self, value: &Value) -> Value {
        if self.fits(value) {
            return value.clone();
        }
        let text = serde_json::to_string(value).expect("a Value always serializes");
        let chars: Vec<char> = text.chars().collect();
        let cut = |k: usize| Value::String(chars[..k].iter().collect::<String>() + ELLIPSIS);
        let k = largest(chars.len(), |k| self.size(&cut(k)) <= self.max_size);
        cut(k)
    }

    /// Page `page` (1-indexed) of an array's or object's items, trimmed to fit. An empty collection has one, empty
    /// page. A page out of range is empty (`[]`, `{}`, or `null` for a value that is not a collection); a value that
    /// is not a collection is its only page, sampled.
    fn paginate(&self, value: &Value, page: usize) -> Page {
        let Some(n) = items(value) else {
            if page > 1 {
                return Page {
                    shown: Value::Null,
                    page,
                    pages: 1,
                    items: None,
                    fit: PageFit::Whole,
                };
            }
            let shown = self.sample(value, self.max_size);
            let fit = page_fit(value, &shown);
            return Page {
                shown,
                page,
                pages: 1,
                items: None,
                fit,
            };
        };
        let page_size = self.page_size.max(1);
        let pages = n.div_ceil(page_size).max(1);
        let start = (page - 1).saturating_mul(page_size);
        let indices: Vec<usize> = (start.min(n)..start.saturating_add(page_size).min(n)).collect();
        let picked = pick(value, &indices);
        let shown = self.sample(&picked, self.max_size);
        let fit = page_fit(&picked, &shown);
        Page {
            shown,
            page,
            pages,
            items: Some(indices.len()),
            fit,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn chars(max: usize) -> Previewer {
        Previewer::new(SizeMeasure::Characters, max)
    }

    #[test]
    fn measures_count_characters() {
        let v = json!("héllo wörld");
        assert_eq!(
            SizeMeasure::Characters.of(&v),
            13,
            "11 characters and 2 quotes, not bytes"
        );
        assert_eq!(SizeMeasure::Characters.unit(), "characters");
    }

    #[cfg(feature = "tokens")]
    #[test]
    fn measures_count_tokens_and_tokens_are_the_default() {
        let tokens = SizeMeasure::Tokens(TokenEncoding::Cl100kBase).of(&json!("hello world"));
        assert!((3..=5).contains(&tokens), "quotes plus two words: {tokens}");
        let o200k = SizeMeasure::Tokens(TokenEncoding::O200kBase).of(&json!("hello world"));
        assert!((3..=5).contains(&o200k), "{o200k}");
        assert_eq!(
            SizeMeasure::default(),
            SizeMeasure::Tokens(TokenEncoding::Cl100kBase)
        );
        assert_eq!(SizeMeasure::default().unit(), "tokens");
    }

    #[cfg(not(feature = "tokens"))]
    #[test]
    fn without_the_tokens_feature_characters_are_the_default() {
        assert_eq!(SizeMeasure::default(), SizeMeasure::Characters);
        assert_eq!(Previewer::default().measure, SizeMeasure::Characters);
        // The wire name still parses to nothing else: a stored `"tokens"` measure is refused, not read as characters.
        assert!(serde_json::from_value::<SizeMeasure>(json!({"tokens": "cl100k_base"})).is_err());
    }

    #[test]
    fn paginate_says_how_a_page_fits() {
        let numbers = Value::Array((0..95).map(|i| json!(i)).collect());
        let mut fits = chars(200);
        fits.page_size = 10;
        let p = fits.preview(&numbers, PreviewStrategy::Paginate, Some(2));
        assert_eq!((p.page_items, p.page_fit), (Some(10), Some(PageFit::Whole)));
        assert_eq!(p.shown_items(), Some(10));

        let mut sampled = chars(100);
        sampled.page_size = 90;
        let p = sampled.preview(&numbers, PreviewStrategy::Paginate, Some(1));
        assert_eq!(
            (p.page_items, p.page_fit),
            (Some(90), Some(PageFit::Sampled))
        );
        assert!(p.shown_items().unwrap() < 90, "{p:?}");

        // One long string per page: all of the page's items are shown, each cut.
        let long = json!(["x".repeat(300), "y".repeat(300)]);
        let mut cut = chars(50);
        cut.page_size = 1;
        let p = cut.preview(&long, PreviewStrategy::Paginate, Some(2));
        assert_eq!((p.page_items, p.page_fit), (Some(1), Some(PageFit::Cut)));
        assert_eq!(p.shown_items(), Some(1));

        // A value that is not a collection is its only page, cut when too large.
        let p = cut.preview(&json!("z".repeat(300)), PreviewStrategy::Paginate, Some(1));
        assert_eq!((p.page_items, p.page_fit), (None, Some(PageFit::Cut)));

        // Other strategies have no pages.
        let p = fits.preview(&numbers, PreviewStrategy::Sample, None);
        assert_eq!((p.page_items, p.page_fit), (None, None));
    }

    #[test]
    fn sample_keeps_first_and_last_and_fits() {
        let value = Value::Array((0..1000).map(|i| json!(i)).collect());
        let p = chars(100).preview(&value, PreviewStrategy::Sample, None);
        let shown = p.value.as_array().unwrap();
        assert_eq!(shown.first(), Some(&json!(0)));
        assert_eq!(shown.last(), Some(&json!(999)));
        assert!(
            p.preview_size <= 100 && p.preview_size > 60,
            "the most that fits: {}",
            p.preview_size
        );
        assert_eq!(
            (p.total_items, p.original_size),
            (Some(1000), SizeMeasure::Characters.of(&value))
        );
        let k = shown.len();
        let one_more = pick(&value, &spread(1000, k + 1));
        assert!(
            SizeMeasure::Characters.of(&one_more) > 100,
            "k + 1 items would not fit"
        );
    }

    #[test]
    fn sample_edge_cases() {
        let p = chars(10);
        assert_eq!(
            p.preview(&json!([]), PreviewStrategy::Sample, None).value,
            json!([])
        );
        assert_eq!(
            p.preview(&json!({}), PreviewStrategy::Sample, None).value,
            json!({})
        );
        assert_eq!(
            p.preview(&json!(""), PreviewStrategy::Sample, None).value,
            json!("")
        );
        assert_eq!(
            p.preview(&json!([1]), PreviewStrategy::Sample, None).value,
            json!([1])
        );
        // One item too large: shown, itself sampled.
        let one = p.preview(
            &json!(["a very long string indeed"]),
            PreviewStrategy::Sample,
            None,
        );
        assert_eq!(
            one.value,
            json!(["a v..."]),
            "`[\"a v...\"]` is exactly 10 characters"
        );
        assert!(one.preview_size <= 10);
        // Unicode: cut at characters, never inside one.
        let s = p.preview(&json!("ééééééééééééééé"), PreviewStrategy::Sample, None);
        assert_eq!(
            s.value,
            json!("ééééé..."),
            "2 quotes, 5 characters and the ellipsis: 10"
        );
        assert!(s.preview_size <= 10);
        // Nested objects: evenly spaced entries.
        let nested = json!({"a": {"x": 1}, "b": {"y": 2}, "c": {"z": 3}, "d": {"w": 4}});
        let n = chars(25).preview(&nested, PreviewStrategy::Sample, None);
        let keys: Vec<&String> = n.value.as_object().unwrap().keys().collect();
        assert_eq!(keys, vec!["a", "d"], "first and last entries");
    }

    #[test]
    fn tiny_budgets_and_deep_values_never_panic() {
        for value in [
            json!({"items": [], "n": 1}),
            json!([[], 1]),
            json!([{}]),
            json!({"": {}}),
        ] {
            for max in 0..4 {
                let _ = chars(max).preview(&value, PreviewStrategy::Sample, None);
                let _ = chars(max).preview(&value, PreviewStrategy::Paginate, Some(1));
                let _ = chars(max).preview(&value, PreviewStrategy::Truncate, None);
            }
        }
        let mut deep = json!("x".repeat(100));
        for _ in 0..500 {
            deep = json!([deep]);
        }
        let p = chars(50).preview(&deep, PreviewStrategy::Sample, None);
        assert!(p.preview_size <= 1000, "bounded: {}", p.preview_size);
    }

    #[test]
    fn paginate_pages_from_one_with_true_totals() {
        let value = Value::Array((0..45).map(|i| json!(i)).collect());
        let p = chars(1000).page_size(20);
        let first = p.preview(&value, PreviewStrategy::Paginate, None);
        assert_eq!(
            first.value,
            Value::Array((0..20).map(|i| json!(i)).collect())
        );
        assert_eq!(
            (first.page, first.total_pages, first.total_items),
            (Some(1), Some(3), Some(45))
        );
        let last = p.preview(&value, PreviewStrategy::Paginate, Some(3));
        assert_eq!(
            last.value,
            Value::Array((40..45).map(|i| json!(i)).collect())
        );
        let beyond = p.preview(&value, PreviewStrategy::Paginate, Some(1_000_000));
        assert_eq!(beyond.value, json!([]), "out of range: an empty page");
        assert_eq!(
            (beyond.total_pages, beyond.total_items),
            (Some(3), Some(45)),
            "with the true totals"
        );
        let huge = p.preview(&value, PreviewStrategy::Paginate, Some(usize::MAX));
        assert_eq!(huge.value, json!([]), "no overflow");
        // Each page trimmed to fit.
        let tight = chars(20)
            .page_size(20)
            .preview(&value, PreviewStrategy::Paginate, Some(2));
        assert!(tight.preview_size <= 20);
        assert_eq!(tight.value.as_array().unwrap().first(), Some(&json!(20)));
        assert_eq!(tight.value.as_array().unwrap().last(), Some(&json!(39)));
    }

    #[test]
    fn truncate_cuts_the_json_text() {
        let value = json!({"name": "refcache", "list": [1, 2, 3]});
        let p = chars(20).preview(&value, PreviewStrategy::Truncate, None);
        let text = p.value.as_str().unwrap();
        assert!(text.ends_with("..."), "{text}");
        assert!(
            serde_json::to_string(&value)
                .unwrap()
                .starts_with(text.trim_end_matches("..."))
        );
        assert!(p.preview_size <= 20, "{}", p.preview_size);
        let unicode = chars(10).preview(
            &json!("日本語のテキストです"),
            PreviewStrategy::Truncate,
            None,
        );
        assert!(unicode.preview_size <= 10);
    }

    #[cfg(feature = "tokens")]
    #[test]
    fn token_budgets_are_respected() {
        let value = Value::Array(
            (0..500)
                .map(|i| json!({"id": i, "name": format!("item-{i}")}))
                .collect(),
        );
        let p = Previewer::new(SizeMeasure::Tokens(TokenEncoding::Cl100kBase), 200);
        for strategy in [
            PreviewStrategy::Sample,
            PreviewStrategy::Paginate,
            PreviewStrategy::Truncate,
        ] {
            let preview = p.preview(&value, strategy, None);
            assert!(
                preview.preview_size <= 200,
                "{strategy:?}: {}",
                preview.preview_size
            );
            assert!(preview.original_size > 200);
        }
    }
}
