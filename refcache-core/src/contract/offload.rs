//! Heavy JSON work off the runtime threads (#15 §3): serializing, measuring, previewing or parsing a big value is
//! CPU work, and done on a runtime thread it stalls every other request that thread serves (with 4 big calls in
//! flight, a 1.5 ms call took up to 18.4 s).
//!
//! Past [`OFFLOAD_BYTES`] of JSON, such a step runs through [`off_runtime`]: on a multi-threaded tokio runtime,
//! `block_in_place` hands this worker's other tasks to another thread for the step's duration, so they keep being
//! served; elsewhere (a blocking thread, no runtime) the step just runs. A current-thread runtime cannot hand its
//! tasks anywhere: there the step runs inline, as before.

use std::cell::Cell;

use serde::ser::{self, Serialize, Serializer};
use tokio::runtime::{Handle, RuntimeFlavor};

use crate::model::json_text::JsonText;

/// Values whose JSON text is longer than this (64 KiB) are serialized, measured, previewed and parsed off the
/// runtime threads. Below it the step takes well under a millisecond, less than moving it would cost.
pub(crate) const OFFLOAD_BYTES: usize = 64 * 1024;

/// Runs `step` where it stalls no other request: see the module's text.
pub(crate) fn off_runtime<R>(step: impl FnOnce() -> R) -> R {
    let multi_thread =
        Handle::try_current().is_ok_and(|h| h.runtime_flavor() == RuntimeFlavor::MultiThread);
    if multi_thread {
        tokio::task::block_in_place(step)
    } else {
        step()
    }
}

/// `value`'s compact JSON text, serialized once; a value longer than [`OFFLOAD_BYTES`] off the runtime, where it
/// is dropped too (freeing a big tree is work as well).
///
/// One pass for a small value: it is serialized in place through [`Budgeted`], which counts what the text will
/// take as it goes and stops the serialization once that passes [`OFFLOAD_BYTES`]; only a value estimated that big
/// is then serialized again, whole, in [`off_runtime`]. (An earlier version counted every value in a first pass over a
/// counting writer, then serialized it: two passes for every value.)
pub(crate) fn serialize<T: Serialize>(value: T) -> Result<JsonText, serde_json::Error> {
    let budget = Budget::new(OFFLOAD_BYTES);
    let items = Cell::new(Count::Unknown);
    let in_place = JsonText::of(&Budgeted {
        value: &value,
        budget: &budget,
        top: Some(&items),
    });
    // A `Serialize` impl that swallows an element's error and goes on would leave the text in place cut short (or
    // `[..,]`, not JSON at all): once the budget ran out, that text is never used, whatever the result says.
    if budget.exceeded() {
        return off_runtime(move || {
            let text = JsonText::of(&value);
            drop(value);
            text
        });
    }
    // The top-level items, counted as the text was written: no second pass over it (`StoredValue::new` reads them).
    in_place.map(|text| match items.get() {
        Count::Unknown => text,
        Count::Scalar => text.with_items(None),
        Count::Items(n) => text.with_items(Some(n)),
    })
}

/// The number of items of an array or object `text` holds, counted off the runtime when it is big.
pub(crate) fn total_items(text: &JsonText) -> Option<usize> {
    if let Some(items) = text.counted_items() {
        return items;
    }
    if text.len() > OFFLOAD_BYTES {
        off_runtime(|| text.total_items())
    } else {
        text.total_items()
    }
}

/// Parses `text` into a tree, off the runtime when it is big.
pub(crate) fn to_value(text: &JsonText) -> serde_json::Value {
    if text.len() > OFFLOAD_BYTES {
        off_runtime(|| text.to_value())
    } else {
        text.to_value()
    }
}

/// What a serialization in place may still write: an estimate of the text's length, counted as the value is
/// serialized ([`Budgeted`]); once spent, the serialization fails and [`exceeded`](Self::exceeded) says why.
struct Budget {
    left: Cell<usize>,
    exceeded: Cell<bool>,
}

impl Budget {
    fn new(bytes: usize) -> Self {
        Self {
            left: Cell::new(bytes),
            exceeded: Cell::new(false),
        }
    }

    /// Takes `bytes` from what is left; an error for the serializer once nothing is.
    fn spend<E: ser::Error>(&self, bytes: usize) -> Result<(), E> {
        match self.left.get().checked_sub(bytes) {
            Some(left) => {
                self.left.set(left);
                Ok(())
            }
            None => {
                // Spent for good: a smaller piece after this one must not fit.
                self.left.set(0);
                self.exceeded.set(true);
                Err(E::custom("past the offload threshold"))
            }
        }
    }

    fn exceeded(&self) -> bool {
        self.exceeded.get()
    }
}

/// `value`, serialized through a serializer that spends `budget` on each piece of text it writes (see [`Counting`]).
struct Budgeted<'a, T: ?Sized> {
    value: &'a T,
    budget: &'a Budget,
    /// Set for the top-level value only: where its items are counted (see [`Counting::top`]).
    top: Option<&'a Cell<Count>>,
}

impl<T: Serialize + ?Sized> Serialize for Budgeted<'_, T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.value.serialize(Counting {
            inner: serializer,
            budget: self.budget,
            top: self.top,
        })
    }
}

/// What the top-level value of a serialization is, as far as [`Counting`] followed it: what
/// [`JsonText::total_items`] answers, counted as the text is written instead of by a scan of the text afterwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Count {
    /// Not known: nothing told yet, or a serializer call whose text this does not follow (serde_json's raw value
    /// and arbitrary-precision number tokens): the text is scanned when the count is asked for.
    Unknown,
    /// No array or object.
    Scalar,
    /// An array or object of this many items so far.
    Items(usize),
}

/// A serializer that forwards everything to `inner` and spends on its budget, for each piece, at least the bytes
/// compact JSON writes for it (a number's longest text, a string's length and quotes; escapes aside). Only an
/// estimate: it decides where a value is serialized, never what it becomes.
struct Counting<'a, S> {
    inner: S,
    budget: &'a Budget,
    /// Only for the top-level value (and the array, object or struct it opens): as a serializer, it tells here
    /// what the value is ([`Count`]); as that value's compound, it counts each element, entry or field written.
    /// Nested values get `None`.
    top: Option<&'a Cell<Count>>,
}

impl<'a, S> Counting<'a, S> {
    /// A nested value (an element, a key, an entry's value): counted against the budget, not as an item.
    fn value<'v, T: ?Sized>(&self, value: &'v T) -> Budgeted<'v, T>
    where
        'a: 'v,
    {
        Budgeted {
            value,
            budget: self.budget,
            top: None,
        }
    }

    /// The same value through a transparent wrapper (`Some`, a newtype struct): still the top level, if it was.
    fn same_value<'v, T: ?Sized>(&self, value: &'v T) -> Budgeted<'v, T>
    where
        'a: 'v,
    {
        Budgeted {
            value,
            budget: self.budget,
            top: self.top,
        }
    }

    /// As the top-level serializer: the value is `count`.
    fn is(&self, count: Count) {
        if let Some(top) = self.top {
            top.set(count);
        }
    }

    /// As the top-level value's compound: one more item written.
    fn one_more(&self) {
        if let Some(top) = self.top
            && let Count::Items(n) = top.get()
        {
            top.set(Count::Items(n + 1));
        }
    }

    /// Opens the compound `open` makes of `inner`, counting its items when this is the top level.
    fn compound<C, E>(self, open: impl FnOnce(S) -> Result<C, E>) -> Result<Counting<'a, C>, E> {
        self.is(Count::Items(0));
        Ok(Counting {
            inner: open(self.inner)?,
            budget: self.budget,
            top: self.top,
        })
    }

    /// Opens the compound `open` makes of `inner`, whose items are nested values (a variant's fields).
    fn nested<C, E>(self, open: impl FnOnce(S) -> Result<C, E>) -> Result<Counting<'a, C>, E> {
        Ok(Counting {
            inner: open(self.inner)?,
            budget: self.budget,
            top: None,
        })
    }
}

/// The longest text of a number (`-9223372036854775808`, or a float such as `-1.7976931348623157e308`).
const NUMBER: usize = 24;

/// Serializer methods for numbers of at most 64 bits: [`NUMBER`] bytes each, then forwarded as they are.
macro_rules! number {
    ($($method:ident: $ty:ty),*) => {
        $(
            fn $method(self, v: $ty) -> Result<S::Ok, S::Error> {
                self.budget.spend(NUMBER)?;
                self.is(Count::Scalar);
                self.inner.$method(v)
            }
        )*
    };
}

impl<'a, S: Serializer> Serializer for Counting<'a, S> {
    type Ok = S::Ok;
    type Error = S::Error;
    type SerializeSeq = Counting<'a, S::SerializeSeq>;
    type SerializeTuple = Counting<'a, S::SerializeTuple>;
    type SerializeTupleStruct = Counting<'a, S::SerializeTupleStruct>;
    type SerializeTupleVariant = Counting<'a, S::SerializeTupleVariant>;
    type SerializeMap = Counting<'a, S::SerializeMap>;
    type SerializeStruct = Counting<'a, S::SerializeStruct>;
    type SerializeStructVariant = Counting<'a, S::SerializeStructVariant>;

    fn serialize_bool(self, v: bool) -> Result<S::Ok, S::Error> {
        self.budget.spend(5)?;
        self.is(Count::Scalar);
        self.inner.serialize_bool(v)
    }

    number!(serialize_i8: i8, serialize_i16: i16, serialize_i32: i32, serialize_i64: i64);
    number!(serialize_u8: u8, serialize_u16: u16, serialize_u32: u32, serialize_u64: u64);
    number!(serialize_f32: f32, serialize_f64: f64);

    fn serialize_i128(self, v: i128) -> Result<S::Ok, S::Error> {
        self.budget.spend(2 * NUMBER)?;
        self.is(Count::Scalar);
        self.inner.serialize_i128(v)
    }

    fn serialize_u128(self, v: u128) -> Result<S::Ok, S::Error> {
        self.budget.spend(2 * NUMBER)?;
        self.is(Count::Scalar);
        self.inner.serialize_u128(v)
    }

    fn serialize_char(self, v: char) -> Result<S::Ok, S::Error> {
        self.budget.spend(8)?;
        self.is(Count::Scalar);
        self.inner.serialize_char(v)
    }

    fn serialize_str(self, v: &str) -> Result<S::Ok, S::Error> {
        self.budget.spend(v.len() + 2)?;
        self.is(Count::Scalar);
        self.inner.serialize_str(v)
    }

    fn serialize_bytes(self, v: &[u8]) -> Result<S::Ok, S::Error> {
        // An array of numbers: up to "255," each.
        self.budget.spend(4 * v.len() + 2)?;
        self.is(Count::Items(v.len()));
        self.inner.serialize_bytes(v)
    }

    fn serialize_none(self) -> Result<S::Ok, S::Error> {
        self.budget.spend(4)?;
        self.is(Count::Scalar);
        self.inner.serialize_none()
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<S::Ok, S::Error> {
        // `Some(x)` is written as `x`.
        let value = self.same_value(value);
        self.inner.serialize_some(&value)
    }

    fn serialize_unit(self) -> Result<S::Ok, S::Error> {
        self.budget.spend(4)?;
        self.is(Count::Scalar);
        self.inner.serialize_unit()
    }

    fn serialize_unit_struct(self, name: &'static str) -> Result<S::Ok, S::Error> {
        self.budget.spend(4)?;
        self.is(Count::Scalar);
        self.inner.serialize_unit_struct(name)
    }

    fn serialize_unit_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
    ) -> Result<S::Ok, S::Error> {
        self.budget.spend(variant.len() + 2)?;
        self.is(Count::Scalar);
        self.inner.serialize_unit_variant(name, index, variant)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        value: &T,
    ) -> Result<S::Ok, S::Error> {
        // Written as the value it wraps.
        let value = self.same_value(value);
        self.inner.serialize_newtype_struct(name, &value)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<S::Ok, S::Error> {
        self.budget.spend(variant.len() + 5)?;
        // `{"variant": value}`: one item.
        self.is(Count::Items(1));
        let value = self.value(value);
        self.inner
            .serialize_newtype_variant(name, index, variant, &value)
    }

    fn serialize_seq(self, len: Option<usize>) -> Result<Self::SerializeSeq, S::Error> {
        self.budget.spend(2)?;
        self.compound(|inner| inner.serialize_seq(len))
    }

    fn serialize_tuple(self, len: usize) -> Result<Self::SerializeTuple, S::Error> {
        self.budget.spend(2)?;
        self.compound(|inner| inner.serialize_tuple(len))
    }

    fn serialize_tuple_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleStruct, S::Error> {
        self.budget.spend(2)?;
        self.compound(|inner| inner.serialize_tuple_struct(name, len))
    }

    fn serialize_tuple_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleVariant, S::Error> {
        self.budget.spend(variant.len() + 7)?;
        // `{"variant": [..]}`: one item, whatever the array holds.
        self.is(Count::Items(1));
        self.nested(|inner| inner.serialize_tuple_variant(name, index, variant, len))
    }

    fn serialize_map(self, len: Option<usize>) -> Result<Self::SerializeMap, S::Error> {
        self.budget.spend(2)?;
        self.compound(|inner| inner.serialize_map(len))
    }

    fn serialize_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStruct, S::Error> {
        self.budget.spend(2)?;
        if name.starts_with("$serde_json::") {
            // serde_json's tokens (a raw value, an arbitrary-precision number): the text is not an object of
            // these fields. Left to the scan.
            self.is(Count::Unknown);
            return self.nested(|inner| inner.serialize_struct(name, len));
        }
        self.compound(|inner| inner.serialize_struct(name, len))
    }

    fn serialize_struct_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStructVariant, S::Error> {
        self.budget.spend(variant.len() + 7)?;
        // `{"variant": {..}}`: one item.
        self.is(Count::Items(1));
        self.nested(|inner| inner.serialize_struct_variant(name, index, variant, len))
    }

    fn collect_str<T: std::fmt::Display + ?Sized>(self, value: &T) -> Result<S::Ok, S::Error> {
        // Counted without building the text; `inner` then writes it as it does.
        let mut counter = DisplayLen(0);
        let _ = std::fmt::Write::write_fmt(&mut counter, format_args!("{value}"));
        self.budget.spend(counter.0 + 2)?;
        self.is(Count::Scalar);
        self.inner.collect_str(value)
    }

    fn is_human_readable(&self) -> bool {
        self.inner.is_human_readable()
    }
}

/// Counts the bytes of a `Display` text.
struct DisplayLen(usize);

impl std::fmt::Write for DisplayLen {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0 += s.len();
        Ok(())
    }
}

impl<S: ser::SerializeSeq> ser::SerializeSeq for Counting<'_, S> {
    type Ok = S::Ok;
    type Error = S::Error;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), S::Error> {
        self.budget.spend(1)?;
        self.one_more();
        let value = self.value(value);
        self.inner.serialize_element(&value)
    }

    fn end(self) -> Result<S::Ok, S::Error> {
        self.inner.end()
    }
}

impl<S: ser::SerializeTuple> ser::SerializeTuple for Counting<'_, S> {
    type Ok = S::Ok;
    type Error = S::Error;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), S::Error> {
        self.budget.spend(1)?;
        self.one_more();
        let value = self.value(value);
        self.inner.serialize_element(&value)
    }

    fn end(self) -> Result<S::Ok, S::Error> {
        self.inner.end()
    }
}

impl<S: ser::SerializeTupleStruct> ser::SerializeTupleStruct for Counting<'_, S> {
    type Ok = S::Ok;
    type Error = S::Error;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), S::Error> {
        self.budget.spend(1)?;
        self.one_more();
        let value = self.value(value);
        self.inner.serialize_field(&value)
    }

    fn end(self) -> Result<S::Ok, S::Error> {
        self.inner.end()
    }
}

impl<S: ser::SerializeTupleVariant> ser::SerializeTupleVariant for Counting<'_, S> {
    type Ok = S::Ok;
    type Error = S::Error;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), S::Error> {
        self.budget.spend(1)?;
        self.one_more();
        let value = self.value(value);
        self.inner.serialize_field(&value)
    }

    fn end(self) -> Result<S::Ok, S::Error> {
        self.inner.end()
    }
}

impl<S: ser::SerializeMap> ser::SerializeMap for Counting<'_, S> {
    type Ok = S::Ok;
    type Error = S::Error;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), S::Error> {
        // The comma and the colon; a key that is not a string (a number) gets its quotes here too.
        self.budget.spend(4)?;
        self.one_more();
        let key = self.value(key);
        self.inner.serialize_key(&key)
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), S::Error> {
        let value = self.value(value);
        self.inner.serialize_value(&value)
    }

    fn serialize_entry<K: Serialize + ?Sized, V: Serialize + ?Sized>(
        &mut self,
        key: &K,
        value: &V,
    ) -> Result<(), S::Error> {
        self.budget.spend(4)?;
        self.one_more();
        let (key, value) = (self.value(key), self.value(value));
        self.inner.serialize_entry(&key, &value)
    }

    fn end(self) -> Result<S::Ok, S::Error> {
        self.inner.end()
    }
}

impl<S: ser::SerializeStruct> ser::SerializeStruct for Counting<'_, S> {
    type Ok = S::Ok;
    type Error = S::Error;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), S::Error> {
        self.budget.spend(key.len() + 4)?;
        self.one_more();
        let value = self.value(value);
        self.inner.serialize_field(key, &value)
    }

    fn skip_field(&mut self, key: &'static str) -> Result<(), S::Error> {
        self.inner.skip_field(key)
    }

    fn end(self) -> Result<S::Ok, S::Error> {
        self.inner.end()
    }
}

impl<S: ser::SerializeStructVariant> ser::SerializeStructVariant for Counting<'_, S> {
    type Ok = S::Ok;
    type Error = S::Error;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), S::Error> {
        self.budget.spend(key.len() + 4)?;
        self.one_more();
        let value = self.value(value);
        self.inner.serialize_field(key, &value)
    }

    fn skip_field(&mut self, key: &'static str) -> Result<(), S::Error> {
        self.inner.skip_field(key)
    }

    fn end(self) -> Result<S::Ok, S::Error> {
        self.inner.end()
    }
}

#[cfg(test)]
mod tests {
    use serde::Serialize;

    use super::*;

    #[test]
    fn small_and_big_values_serialize_to_the_same_text_as_in_place() {
        let small = vec![1u32, 2, 3];
        assert_eq!(serialize(&small).unwrap().as_str(), "[1,2,3]");
        let big: Vec<String> = (0..20_000).map(|i| format!("item-{i}")).collect();
        let text = serialize(&big).unwrap();
        assert!(text.len() > OFFLOAD_BYTES);
        assert_eq!(text, JsonText::of(&big).unwrap());
        assert_eq!(to_value(&text), serde_json::to_value(&big).unwrap());
        assert_eq!(total_items(&text), Some(20_000));
    }

    #[test]
    fn a_value_that_swallows_the_budget_error_is_still_serialized_whole() {
        /// A list that ignores its elements' errors and goes on, as a "best effort" impl might: the text in place
        /// stops at the budget while the serialization itself succeeds.
        struct Forgiving(Vec<String>);
        impl Serialize for Forgiving {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                use serde::ser::SerializeSeq;
                let mut seq = s.serialize_seq(Some(self.0.len()))?;
                for item in &self.0 {
                    let _ = seq.serialize_element(item);
                }
                seq.end()
            }
        }
        let items: Vec<String> = (0..20_000).map(|i| format!("item-{i}")).collect();
        let text = serialize(Forgiving(items.clone())).unwrap();
        assert_eq!(text, JsonText::of(&items).unwrap());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_big_value_is_serialized_on_a_multi_threaded_runtime_too() {
        let big: Vec<u64> = (0..50_000).collect();
        let text = serialize(&big).unwrap();
        assert_eq!(text.total_items(), Some(50_000));
    }

    #[tokio::test]
    async fn a_current_thread_runtime_runs_the_step_inline() {
        let big: Vec<u64> = (0..50_000).collect();
        assert_eq!(serialize(&big).unwrap().total_items(), Some(50_000));
    }

    /// What the scan of the text counts (a text made without a count).
    fn top_level_items_scanned(text: &JsonText) -> Option<usize> {
        let uncounted = JsonText::from_string(text.as_str().to_owned()).unwrap();
        assert_eq!(uncounted.counted_items(), None);
        uncounted.total_items()
    }

    /// Serializes `value` in one pass with an unbounded budget: the text must be a plain serialization's, and the
    /// bytes counted at least its length.
    fn check<T: Serialize + ?Sized>(value: &T) {
        let budget = Budget::new(usize::MAX);
        let text = JsonText::of(&Budgeted {
            value,
            budget: &budget,
            top: None,
        })
        .unwrap();
        assert_eq!(text, JsonText::of(value).unwrap());
        let counted_text = serialize(value).unwrap();
        assert_eq!(counted_text, text);
        // The items counted as the text was written are the items a scan of the text counts.
        assert_eq!(
            counted_text.total_items(),
            top_level_items_scanned(&text),
            "{text}"
        );
        let counted = usize::MAX - budget.left.get();
        assert!(
            counted >= text.len(),
            "counted {counted} bytes of {}: {text}",
            text.len()
        );
        assert!(!budget.exceeded());
    }

    #[test]
    fn one_pass_writes_the_text_a_plain_serialization_writes_and_counts_at_least_its_length() {
        use std::collections::{BTreeMap, HashMap};

        #[derive(Serialize)]
        struct Unit;
        #[derive(Serialize)]
        struct Newtype(u8);
        #[derive(Serialize)]
        struct Pair(i32, &'static str);
        #[derive(Serialize)]
        enum Kind {
            Plain,
            Wrapped(f64),
            Tuple(u8, char),
            Fields { a: bool, b: Option<u8> },
        }
        #[derive(Serialize)]
        struct Inner {
            z: u128,
            y: i128,
        }
        #[derive(Serialize)]
        struct Shaped {
            #[serde(skip_serializing_if = "Option::is_none")]
            skipped: Option<u8>,
            kept: Option<u8>,
            unit: Unit,
            unit_value: (),
            newtype: Newtype,
            pair: Pair,
            kinds: Vec<Kind>,
            #[serde(flatten)]
            inner: Inner,
            #[serde(with = "serde_bytes_like")]
            bytes: Vec<u8>,
            raw: JsonText,
            displayed: Displayed,
            by_number: BTreeMap<u32, &'static str>,
            by_name: HashMap<String, Vec<f32>>,
            escaped: &'static str,
        }
        /// Serialized through `collect_str`.
        struct Displayed;
        impl Serialize for Displayed {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(&format_args!("{}-{}", "shown", 42))
            }
        }
        mod serde_bytes_like {
            pub(super) fn serialize<S: serde::Serializer>(
                v: &[u8],
                s: S,
            ) -> Result<S::Ok, S::Error> {
                s.serialize_bytes(v)
            }
        }
        let shaped = Shaped {
            skipped: None,
            kept: None,
            unit: Unit,
            unit_value: (),
            newtype: Newtype(7),
            pair: Pair(-3, "two"),
            kinds: vec![
                Kind::Plain,
                Kind::Wrapped(-1.5e300),
                Kind::Tuple(255, '\u{1F600}'),
                Kind::Fields {
                    a: true,
                    b: Some(1),
                },
            ],
            inner: Inner {
                z: u128::MAX,
                y: i128::MIN,
            },
            bytes: vec![0, 1, 255],
            raw: JsonText::from(serde_json::json!({"already": ["text", 1]})),
            displayed: Displayed,
            by_number: BTreeMap::from([(1, "one"), (20, "twenty")]),
            by_name: HashMap::from([("a".to_owned(), vec![0.5, -2.0])]),
            escaped: "quote \" and tab \t",
        };
        check(&shaped);
        // Each piece as the top-level value too: its items are counted as it is written.
        check(&shaped.skipped);
        check(&shaped.kept);
        check(&shaped.unit);
        check(&shaped.newtype);
        check(&shaped.pair);
        check(&shaped.kinds);
        for kind in &shaped.kinds {
            check(kind);
        }
        check(&shaped.inner);
        check(&shaped.raw);
        check(&shaped.displayed);
        check(&shaped.by_number);
        check(&shaped.by_name);
        check(&Some(vec![1, 2]));
        check(&Some(Some(Newtype(1))));
        check(&Vec::<u8>::new());
        check(&BTreeMap::<String, u8>::new());
        check(&('a', 1u8, "three"));
        struct Bytes(&'static [u8]);
        impl Serialize for Bytes {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_bytes(self.0)
            }
        }
        check(&Bytes(&[1, 2, 3, 4]));
        check(&Bytes(&[]));
        /// Only a flattened map: serde writes it through `serialize_map` and an entry per key.
        #[derive(Serialize)]
        struct Flat {
            #[serde(flatten)]
            rest: BTreeMap<String, u8>,
            #[serde(flatten)]
            inner: Inner,
        }
        check(&Flat {
            rest: BTreeMap::from([("p".to_owned(), 1), ("q".to_owned(), 2)]),
            inner: Inner { z: 1, y: 2 },
        });
        // The same as a tree (a `Value`, what most cached functions return).
        check(&JsonText::of(&shaped).unwrap().to_value());
        check(&(vec![Some(1u64), None], "x", -0.0f64));
        check("just a string");
        check(&u64::MAX);
        check(&());
        check(&JsonText::default());
        check(&serde_json::json!({"id": 1, "name": "Ada", "roles": ["admin", "dev"]}));
        check(&serde_json::json!([[], {}, "a,b", [1, [2]]]));
    }

    #[test]
    fn the_items_are_counted_as_the_text_is_written() {
        // Counted: no scan of the text when the store asks.
        let text = serialize(serde_json::json!({"id": 1, "roles": ["a", "b"]})).unwrap();
        assert_eq!(text.counted_items(), Some(Some(2)));
        assert_eq!(
            serialize(vec![1, 2, 3]).unwrap().counted_items(),
            Some(Some(3))
        );
        assert_eq!(serialize("a,b").unwrap().counted_items(), Some(None));
        // serde_json's raw value token is not followed: the text is scanned instead.
        let raw = serialize(JsonText::from(serde_json::json!([1, 2]))).unwrap();
        assert_eq!(raw.counted_items(), None);
        assert_eq!(raw.total_items(), Some(2));
        assert_eq!(total_items(&raw), Some(2));
        // A value serialized again, whole, off the runtime (past the threshold): scanned.
        let big: Vec<u32> = (0..30_000).collect();
        let text = serialize(&big).unwrap();
        assert_eq!(text.counted_items(), None);
        assert_eq!(total_items(&text), Some(30_000));
    }

    #[test]
    fn a_spent_budget_stops_the_serialization_and_says_so() {
        let big: Vec<String> = (0..100).map(|i| format!("item-{i}")).collect();
        let budget = Budget::new(64);
        let error = JsonText::of(&Budgeted {
            value: &big,
            budget: &budget,
            top: None,
        })
        .unwrap_err();
        assert!(budget.exceeded(), "{error}");
        // A value past OFFLOAD_BYTES in one string: stopped in place, serialized whole off the runtime.
        let one_string = "x".repeat(OFFLOAD_BYTES + 1);
        let text = serialize(&one_string).unwrap();
        assert_eq!(text.len(), OFFLOAD_BYTES + 3);
        assert_eq!(text, JsonText::of(&one_string).unwrap());
    }

    #[test]
    fn an_error_that_is_not_the_cap_is_an_error() {
        let mut map = std::collections::HashMap::new();
        map.insert(vec![1u8], 1);
        assert!(serialize(&map).is_err(), "keys that are not strings");
    }
}
