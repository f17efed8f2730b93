//! Cache keys: blake3 over the task name, the namespace and the canonical JSON of the arguments.

use std::fmt;
use std::io::Write;

use serde::Serialize;

use crate::error::RefCacheError;

/// The identity of one call: the same task, namespace and arguments give the same key.
///
/// It is the 256-bit keyed blake3 hash of the RFC 8785 canonical JSON of the arguments (an object of parameter name
/// to value, keys sorted at every depth), under a key derived from the task name and the namespace
/// ([`KeyPrefix`]). A cryptographic hash keeps a client from crafting arguments whose key collides with another
/// caller's.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct CacheKey([u8; 32]);

impl std::hash::Hash for CacheKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // The bytes are already a uniform cryptographic hash: eight of them spread a table as well as all 32, for a
        // quarter of the hashing. Equality still compares all 32.
        let mut head = [0u8; 8];
        head.copy_from_slice(&self.0[..8]);
        state.write_u64(u64::from_le_bytes(head));
    }
}

impl CacheKey {
    /// The raw hash bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// A key from raw bytes (as stored by a remote backend).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The key of a call whose arguments are already a JSON object.
    pub fn from_json(
        task: &str,
        namespace: &str,
        args: &serde_json::Value,
    ) -> Result<Self, RefCacheError> {
        Self::from_json_with_prefix(task, KeyPrefix::new(task, namespace), args)
    }

    /// The key of a call of `task` whose arguments are already a JSON object, under a derived prefix.
    pub fn from_json_with_prefix(
        task: &str,
        prefix: KeyPrefix,
        args: &serde_json::Value,
    ) -> Result<Self, RefCacheError> {
        let canonical = serde_jcs::to_vec(args).map_err(|e| RefCacheError::Argument {
            task: task.to_owned(),
            name: "<arguments>".to_owned(),
            message: e.to_string(),
        })?;
        Ok(Self(*blake3::keyed_hash(&prefix.0, &canonical).as_bytes()))
    }

    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        blake3::Hash::from_bytes(self.0).to_hex().to_string()
    }
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CacheKey({})", self.to_hex())
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl serde::Serialize for CacheKey {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for CacheKey {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        blake3::Hash::from_hex(text.as_bytes())
            .map(|h| Self(*h.as_bytes()))
            .map_err(|e| serde::de::Error::custom(format!("invalid cache key: {e}")))
    }
}

/// The blake3 key of one task in one namespace, derived once from their names (length-prefixed, so that no two
/// pairs collide). Every argument hash of that task is keyed with it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct KeyPrefix([u8; 32]);

impl fmt::Debug for KeyPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyPrefix(..)")
    }
}

impl KeyPrefix {
    /// The prefix of `task` in `namespace`.
    pub fn new(task: &str, namespace: &str) -> Self {
        Self::derive("refcache 2026-11 cache key v1", &[task, namespace])
    }

    /// The prefix of `task` in `namespace` within a session: calls in different sessions never share a key.
    pub fn with_session(task: &str, namespace: &str, session: &str) -> Self {
        Self::derive(
            "refcache 2026-11 session cache key v1",
            &[task, namespace, session],
        )
    }

    /// The same prefix, set apart by the references a call resolved without being allowed to read them (unchanged
    /// when there are none). Keying such a call by its values alone would let the caller confirm a guess of a
    /// private value: the same call with the guessed literal would hit.
    pub fn with_private_inputs(self, refs: &[String]) -> Self {
        if refs.is_empty() {
            return self;
        }
        let mut hasher = blake3::Hasher::new_derive_key("refcache 2026-11 private inputs v1");
        hasher.update(&self.0);
        for r in refs {
            hasher.update(&(r.len() as u64).to_le_bytes());
            hasher.update(r.as_bytes());
        }
        Self(*hasher.finalize().as_bytes())
    }

    fn derive(context: &str, parts: &[&str]) -> Self {
        let mut hasher = blake3::Hasher::new_derive_key(context);
        for part in parts {
            hasher.update(&(part.len() as u64).to_le_bytes());
            hasher.update(part.as_bytes());
        }
        Self(*hasher.finalize().as_bytes())
    }
}

/// The largest integer an IEEE double holds exactly. RFC 8785 writes numbers as ECMAScript does, and for integers up
/// to this magnitude that is their plain decimal digits.
const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// A serializer that writes only safe integers, as their decimal digits (byte for byte what `serde_jcs` writes for
/// them, without its float formatting and per-number allocation), and refuses everything else so that the caller
/// falls back to `serde_jcs`. A differential test pins the equality.
struct SafeInteger<'a>(&'a mut Vec<u8>);

/// "Not a safe integer: use `serde_jcs`."
#[derive(Debug)]
struct Fallback;

impl fmt::Display for Fallback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not a safe integer")
    }
}

impl std::error::Error for Fallback {}

impl serde::ser::Error for Fallback {
    fn custom<T: fmt::Display>(_: T) -> Self {
        Fallback
    }
}

macro_rules! refuse {
    ($($method:ident($($arg:ty),*) -> $ret:ty;)*) => {
        $(fn $method(self, $(_: $arg),*) -> Result<$ret, Fallback> { Err(Fallback) })*
    };
}

impl SafeInteger<'_> {
    fn unsigned(self, v: u64) -> Result<(), Fallback> {
        if v > MAX_SAFE_INTEGER {
            return Err(Fallback);
        }
        self.0
            .extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
        Ok(())
    }

    fn signed(self, v: i64) -> Result<(), Fallback> {
        if v.unsigned_abs() > MAX_SAFE_INTEGER {
            return Err(Fallback);
        }
        self.0
            .extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
        Ok(())
    }
}

impl serde::Serializer for SafeInteger<'_> {
    type Ok = ();
    type Error = Fallback;
    type SerializeSeq = serde::ser::Impossible<(), Fallback>;
    type SerializeTuple = serde::ser::Impossible<(), Fallback>;
    type SerializeTupleStruct = serde::ser::Impossible<(), Fallback>;
    type SerializeTupleVariant = serde::ser::Impossible<(), Fallback>;
    type SerializeMap = serde::ser::Impossible<(), Fallback>;
    type SerializeStruct = serde::ser::Impossible<(), Fallback>;
    type SerializeStructVariant = serde::ser::Impossible<(), Fallback>;

    fn serialize_u8(self, v: u8) -> Result<(), Fallback> {
        self.unsigned(v.into())
    }
    fn serialize_u16(self, v: u16) -> Result<(), Fallback> {
        self.unsigned(v.into())
    }
    fn serialize_u32(self, v: u32) -> Result<(), Fallback> {
        self.unsigned(v.into())
    }
    fn serialize_u64(self, v: u64) -> Result<(), Fallback> {
        self.unsigned(v)
    }
    fn serialize_i8(self, v: i8) -> Result<(), Fallback> {
        self.signed(v.into())
    }
    fn serialize_i16(self, v: i16) -> Result<(), Fallback> {
        self.signed(v.into())
    }
    fn serialize_i32(self, v: i32) -> Result<(), Fallback> {
        self.signed(v.into())
    }
    fn serialize_i64(self, v: i64) -> Result<(), Fallback> {
        self.signed(v)
    }

    refuse! {
        serialize_bool(bool) -> ();
        serialize_f32(f32) -> ();
        serialize_f64(f64) -> ();
        serialize_char(char) -> ();
        serialize_str(&str) -> ();
        serialize_bytes(&[u8]) -> ();
        serialize_none() -> ();
        serialize_unit() -> ();
        serialize_unit_struct(&'static str) -> ();
        serialize_unit_variant(&'static str, u32, &'static str) -> ();
        serialize_seq(Option<usize>) -> Self::SerializeSeq;
        serialize_tuple(usize) -> Self::SerializeTuple;
        serialize_tuple_struct(&'static str, usize) -> Self::SerializeTupleStruct;
        serialize_tuple_variant(&'static str, u32, &'static str, usize) -> Self::SerializeTupleVariant;
        serialize_map(Option<usize>) -> Self::SerializeMap;
        serialize_struct(&'static str, usize) -> Self::SerializeStruct;
        serialize_struct_variant(&'static str, u32, &'static str, usize) -> Self::SerializeStructVariant;
    }

    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<(), Fallback> {
        Err(Fallback)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: &T,
    ) -> Result<(), Fallback> {
        Err(Fallback)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<(), Fallback> {
        Err(Fallback)
    }
}

thread_local! {
    /// The canonical-JSON buffer of the key being built on this thread, reused so that keys cost no allocation.
    static BUFFER: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Builds a [`CacheKey`] argument by argument: canonical JSON into a reused buffer, then one keyed hash.
///
/// Arguments must be added in sorted name order (the `#[cached]` macro sorts them); the result is then byte for
/// byte the canonical JSON object `{"a":..,"b":..}` that [`CacheKey::from_json`] hashes.
pub struct KeyBuilder<'a> {
    task: &'a str,
    prefix: KeyPrefix,
    buf: Vec<u8>,
}

impl<'a> KeyBuilder<'a> {
    /// Starts a key for `task` in `namespace`.
    pub fn new(task: &'a str, namespace: &str) -> Self {
        Self::with_prefix(task, KeyPrefix::new(task, namespace))
    }

    /// Starts a key for `task` with its prefix already derived.
    pub fn with_prefix(task: &'a str, prefix: KeyPrefix) -> Self {
        let mut buf = BUFFER.with(std::cell::Cell::take);
        buf.clear();
        buf.push(b'{');
        Self { task, prefix, buf }
    }

    /// Adds one argument.
    pub fn arg<T: Serialize + ?Sized>(
        &mut self,
        name: &str,
        value: &T,
    ) -> Result<(), RefCacheError> {
        if self.buf.len() > 1 {
            self.buf.push(b',');
        }
        let error = |e: &dyn fmt::Display| RefCacheError::Argument {
            task: self.task.to_owned(),
            name: name.to_owned(),
            message: e.to_string(),
        };
        if name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            // An identifier needs no escaping: write it as the JSON string it is.
            self.buf.push(b'"');
            self.buf.extend_from_slice(name.as_bytes());
            self.buf.extend_from_slice(b"\":");
        } else {
            serde_jcs::to_writer(&mut self.buf, name).map_err(|e| error(&e))?;
            self.buf.write_all(b":").map_err(|e| error(&e))?;
        }
        if value.serialize(SafeInteger(&mut self.buf)).is_ok() {
            return Ok(());
        }
        serde_jcs::to_writer(&mut self.buf, value).map_err(|e| error(&e))
    }

    /// Whether an argument so far may hold a string in the ref id form (`"<cache-name>:<32 hex>"`). A cheap scan
    /// of the canonical text: it may say yes for a near miss, never no for a real one.
    pub fn mentions_ref_id(&self) -> bool {
        let buf = &self.buf;
        let is_hex = |b: &u8| b.is_ascii_digit() || (b'a'..=b'f').contains(b);
        let is_name = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.');
        buf.iter().enumerate().any(|(colon, &b)| {
            b == b':'
                && buf.get(colon + 33) == Some(&b'"')
                && buf[colon + 1..colon + 33].iter().all(is_hex)
                && {
                    let name = buf[..colon].iter().rev().take_while(|b| is_name(b)).count();
                    (1..=64).contains(&name) && colon > name && buf[colon - name - 1] == b'"'
                }
        })
    }

    /// The finished key.
    pub fn finish(mut self) -> CacheKey {
        self.buf.push(b'}');
        CacheKey(*blake3::keyed_hash(&self.prefix.0, &self.buf).as_bytes())
    }
}

impl Drop for KeyBuilder<'_> {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        // Keep small buffers for reuse; let a huge one go.
        if buf.capacity() <= 64 * 1024 {
            BUFFER.with(|cell| cell.set(buf));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use serde_json::json;

    #[test]
    fn streamed_key_equals_key_of_the_canonical_object() {
        let mut map = HashMap::new();
        for i in 0..50 {
            map.insert(format!("k{i}"), i);
        }
        let mut b = KeyBuilder::new("t", "public");
        b.arg("a", &map).unwrap();
        b.arg("b", "x").unwrap();
        let streamed = b.finish();
        let from_json = CacheKey::from_json("t", "public", &json!({"b": "x", "a": map})).unwrap();
        assert_eq!(streamed, from_json);
    }

    #[test]
    fn task_namespace_and_args_all_change_the_key() {
        let key = |t: &str, ns: &str, v: i32| {
            let mut b = KeyBuilder::new(t, ns);
            b.arg("n", &v).unwrap();
            b.finish()
        };
        let base = key("t", "public", 1);
        assert_eq!(base, key("t", "public", 1));
        assert_ne!(base, key("u", "public", 1));
        assert_ne!(base, key("t", "jobs", 1));
        assert_ne!(base, key("t", "public", 2));
        // Length prefixes: moving a byte between name and namespace changes the key.
        assert_ne!(key("ab", "c", 1), key("a", "bc", 1));
    }

    #[test]
    fn safe_integers_are_written_exactly_as_serde_jcs_writes_them() {
        let safe = MAX_SAFE_INTEGER;
        let unsigned = [
            0,
            1,
            7,
            9,
            10,
            99,
            100,
            12_345,
            u64::from(u32::MAX),
            safe - 1,
            safe,
        ];
        for v in unsigned {
            let mut fast = Vec::new();
            v.serialize(SafeInteger(&mut fast)).unwrap();
            assert_eq!(fast, serde_jcs::to_vec(&v).unwrap(), "{v}");
        }
        let signed = [
            0,
            -1,
            1,
            -7,
            i64::from(i32::MIN),
            -(safe as i64),
            safe as i64,
            -(safe as i64) + 1,
        ];
        for v in signed {
            let mut fast = Vec::new();
            v.serialize(SafeInteger(&mut fast)).unwrap();
            assert_eq!(fast, serde_jcs::to_vec(&v).unwrap(), "{v}");
        }
        // Beyond 2^53, and every non-integer, falls back to serde_jcs.
        for v in [safe + 1, u64::MAX] {
            assert!(v.serialize(SafeInteger(&mut Vec::new())).is_err());
        }
        assert!(i64::MIN.serialize(SafeInteger(&mut Vec::new())).is_err());
        assert!("7".serialize(SafeInteger(&mut Vec::new())).is_err());
        assert!(7.0f64.serialize(SafeInteger(&mut Vec::new())).is_err());
        // The builder's bytes are serde_jcs's for every kind of value.
        for value in [
            serde_json::json!(u64::MAX),
            serde_json::json!(-3),
            serde_json::json!(1.5),
        ] {
            let mut b = KeyBuilder::new("t", "n");
            b.arg("v", &value).unwrap();
            assert_eq!(
                b.finish(),
                CacheKey::from_json("t", "n", &serde_json::json!({"v": value})).unwrap()
            );
        }
        let mut b = KeyBuilder::new("t", "n");
        b.arg("v", &u64::MAX).unwrap();
        assert_eq!(
            b.finish(),
            CacheKey::from_json("t", "n", &serde_json::json!({"v": u64::MAX})).unwrap()
        );
    }

    #[test]
    fn ref_ids_in_arguments_are_noticed() {
        let id = "refcache:0123456789abcdef0123456789abcdef";
        let scan = |value: serde_json::Value| {
            let mut b = KeyBuilder::new("t", "n");
            b.arg("v", &value).unwrap();
            b.mentions_ref_id()
        };
        assert!(scan(json!(id)));
        assert!(scan(json!({"deep": [1, {"x": id}]})));
        assert!(!scan(json!("refcache:0123")));
        assert!(!scan(json!(format!("{id}0"))), "33 hex digits");
        assert!(!scan(json!(format!(":{}", &id[9..]))), "no cache name");
        assert!(!scan(json!({"a": 1, "b": "plain text: yes"})));
    }

    #[test]
    fn map_order_does_not_change_the_key() {
        let a: HashMap<&str, i32> = [("x", 1), ("y", 2), ("z", 3)].into();
        let mut b: HashMap<&str, i32> = HashMap::with_capacity(100);
        for (k, v) in [("z", 3), ("y", 2), ("x", 1)] {
            b.insert(k, v);
        }
        let key = |m: &HashMap<&str, i32>| {
            let mut kb = KeyBuilder::new("t", "public");
            kb.arg("m", m).unwrap();
            kb.finish()
        };
        assert_eq!(key(&a), key(&b));
    }
}
