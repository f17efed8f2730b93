//! A finished value as its compact JSON text: what the store holds, weighs and hands out.
//!
//! A value is serialized **once**, where its task returns. From then on it is this text: the byte bound weighs its
//! length (which is what memory holds, unlike a `serde_json::Value`, which takes about 20 times as much), a hit
//! answered as wire JSON splices it in as it is, and a remote backend stores it unchanged. A tree
//! ([`to_value`](JsonText::to_value)) or a typed value ([`value_as`](JsonText::value_as)) is built only when asked.

use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use serde_json::value::RawValue;

/// A JSON value held as its compact text.
///
/// Build one from any `Serialize` value with [`JsonText::of`], from a [`Value`] with `From`, or from text with
/// [`JsonText::from_string`] (validated). It serializes as the JSON it holds (not as a string), and compares by
/// text; it also compares equal to a [`Value`] with the same content.
///
/// ```
/// use refcache_core::JsonText;
/// use serde_json::json;
///
/// let text = JsonText::from(json!({"a": [1, 2, 3]}));
/// assert_eq!(text.as_str(), r#"{"a":[1,2,3]}"#);
/// assert_eq!(text.len(), 13);
/// assert_eq!(text.to_value(), json!({"a": [1, 2, 3]}));
/// ```
#[derive(Clone)]
pub struct JsonText {
    raw: Box<RawValue>,
    /// The top-level items, when the serialization that made the text counted them ([`UNCOUNTED`] otherwise,
    /// [`SCALAR`] for a value that is no array or object): [`total_items`](JsonText::total_items) then answers
    /// without a scan of the text.
    items: u64,
}

/// [`JsonText::items`]: not counted when the text was made.
const UNCOUNTED: u64 = u64::MAX;
/// [`JsonText::items`]: counted, and the value is no array or object.
const SCALAR: u64 = u64::MAX - 1;

impl JsonText {
    /// The compact JSON text of `value`.
    ///
    /// Fails when `value` cannot be JSON: a map with keys that are not strings, or a `Serialize` impl that fails.
    pub fn of<T: Serialize + ?Sized>(value: &T) -> Result<Self, serde_json::Error> {
        serde_json::value::to_raw_value(value).map(Self::uncounted)
    }

    fn uncounted(raw: Box<RawValue>) -> Self {
        Self {
            raw,
            items: UNCOUNTED,
        }
    }

    /// The same text, with its top-level items as the serialization that made it counted them (`None`: no array
    /// or object). The caller answers for the count: `total_items` hands it out instead of scanning the text.
    pub(crate) fn with_items(mut self, items: Option<usize>) -> Self {
        self.items = items.map_or(SCALAR, |n| (n as u64).min(SCALAR - 1));
        self
    }

    /// The count [`with_items`](Self::with_items) gave, if any (`Some(None)`: no array or object).
    pub(crate) fn counted_items(&self) -> Option<Option<usize>> {
        match self.items {
            UNCOUNTED => None,
            SCALAR => Some(None),
            // Counted by this process's serializer from a `usize`: the cast only narrows what `with_items` widened.
            n => Some(Some(n as usize)),
        }
    }

    /// `text`, checked to be one JSON value. Kept as it is (whitespace too): its length is what it weighs.
    pub fn from_string(text: String) -> Result<Self, serde_json::Error> {
        RawValue::from_string(text).map(Self::uncounted)
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        self.raw.get()
    }

    /// The text's length in bytes: what it weighs in the store.
    pub fn len(&self) -> usize {
        self.raw.get().len()
    }

    /// Whether the text is empty (never: the shortest JSON value is one byte).
    pub fn is_empty(&self) -> bool {
        self.raw.get().is_empty()
    }

    /// The text, owned.
    pub fn into_string(self) -> String {
        self.raw.to_string()
    }

    /// The value as a tree, parsed from the text (a new tree each call; the store never keeps one).
    pub fn to_value(&self) -> Value {
        serde_json::from_str(self.as_str()).expect("a JsonText holds valid JSON")
    }

    /// The value deserialized into `T`.
    pub fn value_as<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(self.as_str())
    }

    /// The number of items, when the value is an array or an object: as the serialization that made the text
    /// counted them, else counted on the text (building nothing).
    pub fn total_items(&self) -> Option<usize> {
        match self.counted_items() {
            Some(items) => items,
            None => top_level_items(self.as_str()),
        }
    }

    /// The raw value, for serde code that splices it.
    pub fn as_raw(&self) -> &RawValue {
        &self.raw
    }
}

/// Items of the array or object `text` holds (`None` for a scalar). `text` is valid JSON: one pass over its bytes,
/// counting the commas at depth one outside strings. A string is skipped by an inner loop that looks only for its
/// closing quote and for escapes (most of a value's bytes are in strings), instead of carrying string and escape
/// flags through the outer match byte by byte.
fn top_level_items(text: &str) -> Option<usize> {
    let bytes = text.trim_start().as_bytes();
    let (&open, rest) = bytes.split_first()?;
    if open != b'[' && open != b'{' {
        return None;
    }
    let mut depth = 1usize;
    let mut commas = 0usize;
    let mut any = false;
    let mut i = 0;
    while let Some(&b) = rest.get(i) {
        i += 1;
        match b {
            b'"' => {
                any |= depth == 1;
                while let Some(&c) = rest.get(i) {
                    i += 1;
                    if c == b'"' {
                        break;
                    }
                    if c == b'\\' {
                        i += 1;
                    }
                }
            }
            b'[' | b'{' => {
                any |= depth == 1;
                depth += 1;
            }
            b']' | b'}' => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            b',' => commas += usize::from(depth == 1),
            b' ' | b'\n' | b'\t' | b'\r' | b':' => {}
            _ => any |= depth == 1,
        }
    }
    Some(if any { commas + 1 } else { 0 })
}

impl Default for JsonText {
    /// `null`.
    fn default() -> Self {
        Self::uncounted(Box::<RawValue>::default())
    }
}

impl From<Value> for JsonText {
    fn from(value: Value) -> Self {
        Self::from(&value)
    }
}

impl From<&Value> for JsonText {
    fn from(value: &Value) -> Self {
        Self::of(value).expect("a Value always serializes")
    }
}

impl From<JsonText> for Value {
    fn from(text: JsonText) -> Self {
        text.to_value()
    }
}

impl fmt::Debug for JsonText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A big value in a debug print or an assertion message would flood it: a prefix and the length.
        write!(
            f,
            "JsonText({})",
            crate::model::excerpt::excerpt(self.as_str(), 200)
        )
    }
}

impl fmt::Display for JsonText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq for JsonText {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for JsonText {}

impl PartialEq<Value> for JsonText {
    /// Equal content: the text parsed, compared as a tree (key order does not matter).
    fn eq(&self, other: &Value) -> bool {
        self.to_value() == *other
    }
}

impl PartialEq<JsonText> for Value {
    fn eq(&self, other: &JsonText) -> bool {
        other == self
    }
}

impl Serialize for JsonText {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.raw.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for JsonText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Box::<RawValue>::deserialize(deserializer).map(Self::uncounted)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn counts_top_level_items_on_the_text() {
        for (value, items) in [
            (json!([]), Some(0)),
            (json!({}), Some(0)),
            (json!([1]), Some(1)),
            (
                json!([1, [2, 3], {"a": [4, 5]}, "x,y]", "\"q\",\\"]),
                Some(5),
            ),
            (
                json!({"a": 1, "b,": {"c": 2, "d": 3}, "e": [6, 7]}),
                Some(3),
            ),
            (json!([[]]), Some(1)),
            (json!([""]), Some(1)),
            (json!("a,b"), None),
            (json!(7), None),
            (json!(null), None),
        ] {
            assert_eq!(JsonText::from(&value).total_items(), items, "{value}");
        }
        let spaced = JsonText::from_string(" [ 1 , 2 ,\n 3 ] ".to_owned()).unwrap();
        assert_eq!(spaced.total_items(), Some(3));
        let empty = JsonText::from_string("[ ]".to_owned()).unwrap();
        assert_eq!(empty.total_items(), Some(0));
    }

    #[test]
    fn the_string_skipping_scan_counts_as_the_byte_by_byte_one() {
        let mut texts: Vec<String> = vec![
            r#"["a\\",1]"#.to_owned(),
            r#"{"k\"":[1,2],"x":"\\\""}"#.to_owned(),
            r#"[ "", "\u0041,", [ ] , { } ]"#.to_owned(),
            "[[[[1,2],3],4],5]".to_owned(),
            r#"{"a":{"b":{"c":"]},"}}}"#.to_owned(),
        ];
        for n in 0..40u32 {
            let items: Vec<Value> = (0..n % 7)
                .map(|i| match (n + i) % 5 {
                    0 => json!(format!("s{i},\"]{{\\")),
                    1 => json!([i, {"k": [i, "x,y"]}]),
                    2 => json!({"a\"": i, "b": [null, true]}),
                    3 => json!(f64::from(i) / 3.0),
                    _ => json!(null),
                })
                .collect();
            texts.push(Value::Array(items.clone()).to_string());
            let object: serde_json::Map<String, Value> = items
                .into_iter()
                .enumerate()
                .map(|(i, v)| (format!("k{i}\\"), v))
                .collect();
            texts.push(Value::Object(object).to_string());
        }
        for text in &texts {
            assert_eq!(
                top_level_items(text),
                top_level_items_reference(text),
                "{text}"
            );
        }
    }

    #[test]
    fn serializes_as_the_json_it_holds() {
        let text = JsonText::from(json!({"b": 1, "a": [true, null]}));
        let wrapped = serde_json::to_string(&json!({"v": 0})).unwrap();
        assert_eq!(wrapped, r#"{"v":0}"#);
        #[derive(Serialize, Deserialize)]
        struct Holder {
            v: JsonText,
        }
        let out = serde_json::to_string(&Holder { v: text.clone() }).unwrap();
        assert_eq!(out, r#"{"v":{"a":[true,null],"b":1}}"#);
        let back: Holder = serde_json::from_str(&out).unwrap();
        assert_eq!(back.v, text);
        assert_eq!(
            serde_json::to_value(&Holder { v: text.clone() }).unwrap(),
            json!({"v": {"a": [true, null], "b": 1}})
        );
    }

    #[test]
    fn keeps_a_struct_s_own_field_order_and_types() {
        #[derive(Serialize, Deserialize, Debug, PartialEq)]
        struct Point {
            y: i32,
            x: i32,
        }
        let text = JsonText::of(&Point { y: 2, x: 1 }).unwrap();
        assert_eq!(text.as_str(), r#"{"y":2,"x":1}"#);
        assert_eq!(text.value_as::<Point>().unwrap(), Point { y: 2, x: 1 });
        assert_eq!(text, json!({"x": 1, "y": 2}));
        assert!(text.value_as::<Vec<i32>>().is_err());
    }

    #[test]
    fn refuses_text_that_is_not_json() {
        assert!(JsonText::from_string("{".to_owned()).is_err());
        assert!(JsonText::from_string("1 2".to_owned()).is_err());
        assert_eq!(JsonText::default().as_str(), "null");
    }

    /// The scan [`top_level_items`] replaced (string and escape flags carried byte by byte): the reference it must agree
    /// with.
    fn top_level_items_reference(text: &str) -> Option<usize> {
        let bytes = text.trim_start().as_bytes();
        if !matches!(bytes.first()?, b'[' | b'{') {
            return None;
        }
        let mut depth = 0usize;
        let mut in_string = false;
        let mut escaped = false;
        let mut commas = 0usize;
        let mut any = false;
        for &b in bytes {
            if in_string {
                if escaped {
                    escaped = false;
                } else if b == b'\\' {
                    escaped = true;
                } else if b == b'"' {
                    in_string = false;
                }
                continue;
            }
            match b {
                b'"' => {
                    in_string = true;
                    if depth == 1 {
                        any = true;
                    }
                }
                b'[' | b'{' => {
                    if depth == 1 {
                        any = true;
                    }
                    depth += 1;
                }
                b']' | b'}' => {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                }
                b',' if depth == 1 => commas += 1,
                b' ' | b'\n' | b'\t' | b'\r' | b':' | b',' => {}
                _ => {
                    if depth == 1 {
                        any = true;
                    }
                }
            }
        }
        Some(if any { commas + 1 } else { 0 })
    }
}
