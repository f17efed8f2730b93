//! Cache keys: blake3 over the task name, the namespace and the canonical JSON of the arguments.

use std::fmt;
use std::io::Write;

use serde::Serialize;

use crate::model::error::RefCacheError;

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

/// Builds the hasher of the maps keyed by [`CacheKey`] or [`RefId`](crate::model::ref_id::RefId): the value store,
/// the key-to-ref index, the active tasks, the task records and the scheduler's queue.
///
/// Both keys are already uniformly random (a cryptographic hash of the arguments; 128 bits of our own drawing), and
/// hash only eight bytes of themselves (`CacheKey`) or sixteen (`RefId`), so std's SipHash is wasted work on them:
/// several calls of it per miss. A pure pass-through would let a client that grinds arguments through blake3 aim
/// many keys at one bucket (the bucket is the hash's low bits); so each word is mixed with a seed drawn once per
/// process (from std's own random keys) by one folded 128-bit multiply, which spreads every input bit over the low
/// bits and which the client cannot aim at without the seed.
#[derive(Clone, Copy, Debug)]
pub(crate) struct KeyHasher {
    seed: u64,
}

/// A `HashMap` keyed by [`CacheKey`] or [`RefId`](crate::model::ref_id::RefId), hashed by [`KeyHasher`].
pub(crate) type KeyMap<K, V> = std::collections::HashMap<K, V, KeyHasher>;

/// The process's seed of [`KeyHasher`], odd so that the first multiply cannot cancel.
static KEY_HASH_SEED: std::sync::LazyLock<u64> = std::sync::LazyLock::new(|| {
    use std::hash::BuildHasher as _;
    std::hash::RandomState::new().hash_one(0x5eed_u64) | 1
});

impl Default for KeyHasher {
    fn default() -> Self {
        Self {
            seed: *KEY_HASH_SEED,
        }
    }
}

impl std::hash::BuildHasher for KeyHasher {
    type Hasher = KeyHash;

    fn build_hasher(&self) -> KeyHash {
        KeyHash { state: self.seed }
    }
}

/// The hasher [`KeyHasher`] builds: eight bytes at a time, each word folded into the seeded state.
#[derive(Debug)]
pub(crate) struct KeyHash {
    state: u64,
}

/// An odd constant with its bits spread (the golden ratio's), the second factor of every fold.
const KEY_HASH_MULTIPLIER: u64 = 0x9e37_79b9_7f4a_7c15;

impl std::hash::Hasher for KeyHash {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, word: u64) {
        let product = u128::from(self.state ^ word) * u128::from(KEY_HASH_MULTIPLIER);
        // Truncations on purpose: the fold of a 128-bit product's halves.
        self.state = (product as u64) ^ ((product >> 64) as u64);
    }

    fn finish(&self) -> u64 {
        self.state
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
        let mut canonical = Vec::new();
        write_canonical(&mut canonical, args).map_err(|e| RefCacheError::Argument {
            task: task.to_owned(),
            name: "<arguments>".to_owned(),
            message: crate::model::excerpt::excerpt(&e.to_string(), 300).into_owned(),
        })?;
        Ok(Self(*blake3::keyed_hash(&prefix.0, &canonical).as_bytes()))
    }

    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        blake3::Hash::from_bytes(self.0).to_hex().to_string()
    }

    /// Reads [`to_hex`](Self::to_hex)'s form back (`None` if it is not 64 hex digits).
    pub fn from_hex(text: &str) -> Option<Self> {
        blake3::Hash::from_hex(text.as_bytes())
            .ok()
            .map(|h| Self(*h.as_bytes()))
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

/// The blake3 derive-key contexts of the prefixes, each hashed once per process: `Hasher::new_derive_key` hashes
/// its context string on every call (a compression of its own, half of a prefix's cost), and a prefix is derived
/// for every [`CacheKey::from_json`], every call in a session and every call of a namespace template. The keys
/// are the same bytes `new_derive_key` gives (`the_context_keys_derive_what_new_derive_key_derives` pins it):
/// they are stored by remote backends, and must not move.
mod context {
    use std::sync::LazyLock;

    use blake3::hazmat::{ContextKey, hash_derive_key_context};

    pub(super) const CALL: &str = "refcache 2026-11 cache key v1";
    pub(super) const SESSION: &str = "refcache 2026-11 session cache key v1";
    pub(super) const PRIVATE_INPUTS: &str = "refcache 2026-11 private inputs v1";

    pub(super) static CALL_KEY: LazyLock<ContextKey> =
        LazyLock::new(|| hash_derive_key_context(CALL));
    pub(super) static SESSION_KEY: LazyLock<ContextKey> =
        LazyLock::new(|| hash_derive_key_context(SESSION));
    pub(super) static PRIVATE_INPUTS_KEY: LazyLock<ContextKey> =
        LazyLock::new(|| hash_derive_key_context(PRIVATE_INPUTS));
}

/// A blake3 hasher in derive-key mode for a context whose key is already hashed ([`context`]).
fn derive_key_hasher(context_key: &blake3::hazmat::ContextKey) -> blake3::Hasher {
    use blake3::hazmat::HasherExt as _;
    blake3::Hasher::new_from_context_key(context_key)
}

impl KeyPrefix {
    /// The prefix of `task` in `namespace`.
    pub fn new(task: &str, namespace: &str) -> Self {
        Self::derive(&context::CALL_KEY, &[task, namespace])
    }

    /// The prefix of `task` in `namespace` within a session: calls in different sessions never share a key.
    pub fn with_session(task: &str, namespace: &str, session: &str) -> Self {
        Self::derive(&context::SESSION_KEY, &[task, namespace, session])
    }

    /// The same prefix, set apart by the references a call resolved without being allowed to read them (unchanged
    /// when there are none). Keying such a call by its values alone would let the caller confirm a guess of a
    /// private value: the same call with the guessed literal would hit.
    pub fn with_private_inputs(self, refs: &[String]) -> Self {
        if refs.is_empty() {
            return self;
        }
        let mut hasher = derive_key_hasher(&context::PRIVATE_INPUTS_KEY);
        hasher.update(&self.0);
        for r in refs {
            hasher.update(&(r.len() as u64).to_le_bytes());
            hasher.update(r.as_bytes());
        }
        Self(*hasher.finalize().as_bytes())
    }

    fn derive(context_key: &blake3::hazmat::ContextKey, parts: &[&str]) -> Self {
        let mut hasher = derive_key_hasher(context_key);
        for part in parts {
            hasher.update(&(part.len() as u64).to_le_bytes());
            hasher.update(part.as_bytes());
        }
        Self(*hasher.finalize().as_bytes())
    }
}

/// Writes the canonical JSON of `value`: RFC 8785 (keys sorted by UTF-16 code units, JCS string escaping and
/// number formatting), except that every integer is written as its exact decimal digits.
///
/// RFC 8785 writes numbers as IEEE doubles, so two integers beyond 2^53 that round to the same double would
/// share a key, and one caller would get another's value. Exact digits keep keys injective; for integers up to
/// 2^53 (and every float) the bytes are RFC 8785's.
fn write_canonical(out: &mut Vec<u8>, value: &serde_json::Value) -> Result<(), serde_json::Error> {
    use serde_json::Value;
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                out.extend_from_slice(itoa::Buffer::new().format(u).as_bytes());
            } else if let Some(i) = n.as_i64() {
                out.extend_from_slice(itoa::Buffer::new().format(i).as_bytes());
            } else {
                serde_jcs::to_writer(&mut *out, &n.as_f64().unwrap_or_default())?;
            }
        }
        Value::String(text) => serde_jcs::to_writer(&mut *out, text)?,
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(out, item)?;
            }
            out.push(b']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()));
            out.push(b'{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                serde_jcs::to_writer(&mut *out, key)?;
                out.push(b':');
                write_canonical(out, item)?;
            }
            out.push(b'}');
        }
    }
    Ok(())
}

/// A serializer for the common scalar arguments (integers, strings, booleans, unit and `None`), writing their
/// canonical JSON straight into the key buffer, byte for byte what [`write_canonical`] writes for them, without
/// building a `serde_json::Value`. It refuses everything else (before writing anything), and the caller falls back
/// to `write_canonical`. A differential test pins the equality.
struct Scalar<'a>(&'a mut Vec<u8>, usize);

/// "Not a scalar: build the value and use `write_canonical`" (or, for a string, "over the byte limit").
#[derive(Debug)]
enum Fallback {
    NotScalar,
    TooLarge,
}

impl fmt::Display for Fallback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NotScalar => "not a scalar",
            Self::TooLarge => "over the byte limit",
        })
    }
}

impl std::error::Error for Fallback {}

impl serde::ser::Error for Fallback {
    fn custom<T: fmt::Display>(_: T) -> Self {
        Fallback::NotScalar
    }
}

macro_rules! refuse {
    ($($method:ident($($arg:ty),*) -> $ret:ty;)*) => {
        $(fn $method(self, $(_: $arg),*) -> Result<$ret, Fallback> { Err(Fallback::NotScalar) })*
    };
}

impl Scalar<'_> {
    fn digits(self, v: impl itoa::Integer) -> Result<(), Fallback> {
        self.0
            .extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
        Ok(())
    }
}

impl serde::Serializer for Scalar<'_> {
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
        self.digits(v)
    }
    fn serialize_u16(self, v: u16) -> Result<(), Fallback> {
        self.digits(v)
    }
    fn serialize_u32(self, v: u32) -> Result<(), Fallback> {
        self.digits(v)
    }
    fn serialize_u64(self, v: u64) -> Result<(), Fallback> {
        self.digits(v)
    }
    fn serialize_i8(self, v: i8) -> Result<(), Fallback> {
        self.digits(v)
    }
    fn serialize_i16(self, v: i16) -> Result<(), Fallback> {
        self.digits(v)
    }
    fn serialize_i32(self, v: i32) -> Result<(), Fallback> {
        self.digits(v)
    }
    fn serialize_i64(self, v: i64) -> Result<(), Fallback> {
        self.digits(v)
    }
    fn serialize_bool(self, v: bool) -> Result<(), Fallback> {
        self.0.extend_from_slice(if v { b"true" } else { b"false" });
        Ok(())
    }
    fn serialize_str(self, v: &str) -> Result<(), Fallback> {
        // Escaping only lengthens a string: one over the limit is refused before any of it is written.
        if self.0.len().saturating_add(v.len()) > self.1 {
            return Err(Fallback::TooLarge);
        }
        serde_jcs::to_writer(&mut *self.0, v).map_err(|_| Fallback::NotScalar)
    }
    fn serialize_none(self) -> Result<(), Fallback> {
        self.serialize_unit()
    }
    fn serialize_unit(self) -> Result<(), Fallback> {
        self.0.extend_from_slice(b"null");
        Ok(())
    }

    refuse! {
        serialize_f32(f32) -> ();
        serialize_f64(f64) -> ();
        serialize_char(char) -> ();
        serialize_bytes(&[u8]) -> ();
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

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Fallback> {
        value.serialize(self)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<(), Fallback> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<(), Fallback> {
        Err(Fallback::NotScalar)
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
    limit: usize,
}

/// The default limit on a call's arguments: 1 MiB of canonical JSON, well under what any store holds.
pub const DEFAULT_MAX_ARGUMENT_BYTES: usize = 1024 * 1024;

/// A writer that counts, and fails once the count passes its limit: measures a value's JSON length at a cost
/// bounded by the limit, whatever the value's size.
struct Bounded {
    left: usize,
}

impl std::io::Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self.left.checked_sub(buf.len()) {
            Some(left) => {
                self.left = left;
                Ok(buf.len())
            }
            None => Err(std::io::Error::other("over the byte limit")),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
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
        Self {
            task,
            prefix,
            buf,
            limit: DEFAULT_MAX_ARGUMENT_BYTES,
        }
    }

    /// The same builder with a limit on the arguments' canonical JSON, in bytes (default
    /// [`DEFAULT_MAX_ARGUMENT_BYTES`]). An argument that takes the key past it fails [`arg`](Self::arg) with
    /// [`RefCacheError::ArgumentsTooLarge`], at a cost bounded by the limit, not by the argument's size.
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }

    fn too_large(&self) -> RefCacheError {
        RefCacheError::ArgumentsTooLarge {
            task: self.task.to_owned(),
            limit: self.limit,
        }
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
            message: crate::model::excerpt::excerpt(&e.to_string(), 300).into_owned(),
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
        match value.serialize(Scalar(&mut self.buf, self.limit)) {
            Ok(()) if self.buf.len() <= self.limit => return Ok(()),
            Ok(()) | Err(Fallback::TooLarge) => return Err(self.too_large()),
            Err(Fallback::NotScalar) => {}
        }
        // Measured first, at a cost bounded by the limit: a huge argument is refused before it is copied into a
        // JSON tree. (Compact and canonical JSON differ only in key order and number forms; the check after writing
        // settles the rest.)
        let left = self.limit.saturating_sub(self.buf.len());
        if let Err(e) = serde_json::to_writer(Bounded { left }, value) {
            return Err(if e.is_io() {
                self.too_large()
            } else {
                error(&e)
            });
        }
        let json = serde_json::to_value(value).map_err(|e| error(&e))?;
        write_canonical(&mut self.buf, &json).map_err(|e| error(&e))?;
        if self.buf.len() > self.limit {
            return Err(self.too_large());
        }
        Ok(())
    }

    /// Whether an argument so far may hold a string in the ref id form (`"<cache-name>:<32 hex>"`). A cheap scan
    /// of the canonical text: it may say yes for a near miss, never no for a real one.
    pub fn mentions_ref_id(&self) -> bool {
        let buf = &self.buf;
        // The shortest mention, `"a:` + 32 hex digits + `"`, and the `{"x":` before any value: shorter keys hold none.
        if buf.len() < 40 {
            return false;
        }
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
    #[test]
    fn the_key_hasher_spreads_keys_that_differ_in_one_bit_over_the_low_bits() {
        use std::hash::BuildHasher as _;
        let hasher = super::KeyHasher::default();
        // Keys alike in every bit but one of the eight hashed bytes: a pass-through would put them all in the
        // buckets of one low byte; the seeded fold spreads them.
        let mut low_bytes = std::collections::HashSet::new();
        for bit in 0..64 {
            let mut bytes = [0u8; 32];
            bytes[..8].copy_from_slice(&(1u64 << bit).to_le_bytes());
            let hash = hasher.hash_one(super::CacheKey(bytes));
            assert_eq!(
                hash,
                hasher.hash_one(super::CacheKey(bytes)),
                "the same key hashes alike"
            );
            low_bytes.insert(hash & 0xff);
        }
        assert!(
            low_bytes.len() > 32,
            "64 keys fell into {} low bytes",
            low_bytes.len()
        );
    }

    use std::collections::HashMap;

    use super::*;
    use serde_json::json;

    #[test]
    fn the_context_keys_derive_what_new_derive_key_derives() {
        // The prefixes as they were derived before the contexts were hashed once (`new_derive_key` per call):
        // remote backends store keys made with them.
        let old = |context: &str, parts: &[&[u8]]| {
            let mut hasher = blake3::Hasher::new_derive_key(context);
            for part in parts {
                hasher.update(part);
            }
            *hasher.finalize().as_bytes()
        };
        let len = |s: &str| (s.len() as u64).to_le_bytes();
        for (task, namespace, session) in [
            ("t", "public", "s1"),
            ("", "", ""),
            ("tools::search", "user:ada", "x"),
        ] {
            assert_eq!(
                KeyPrefix::new(task, namespace).0,
                old(
                    context::CALL,
                    &[
                        &len(task),
                        task.as_bytes(),
                        &len(namespace),
                        namespace.as_bytes()
                    ]
                )
            );
            assert_eq!(
                KeyPrefix::with_session(task, namespace, session).0,
                old(
                    context::SESSION,
                    &[
                        &len(task),
                        task.as_bytes(),
                        &len(namespace),
                        namespace.as_bytes(),
                        &len(session),
                        session.as_bytes()
                    ]
                )
            );
            let prefix = KeyPrefix::new(task, namespace);
            let refs = vec!["refcache:ab".to_owned(), String::new()];
            let mut expected: Vec<&[u8]> = vec![&prefix.0];
            let lens: Vec<[u8; 8]> = refs.iter().map(|r| len(r)).collect();
            for (r, l) in refs.iter().zip(&lens) {
                expected.push(l);
                expected.push(r.as_bytes());
            }
            assert_eq!(
                prefix.with_private_inputs(&refs).0,
                old(context::PRIVATE_INPUTS, &expected)
            );
        }
        // And one key whole, as its hex: a change of any part of the derivation shows here.
        let key = CacheKey::from_json("t", "public", &json!({"n": 1})).unwrap();
        assert_eq!(key.to_hex().len(), 64);
        let again = CacheKey(
            *blake3::keyed_hash(
                &old(context::CALL, &[&len("t"), b"t", &len("public"), b"public"]),
                br#"{"n":1}"#,
            )
            .as_bytes(),
        );
        assert_eq!(key, again);
    }

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
    fn scalars_are_written_exactly_as_the_canonical_writer_writes_them() {
        let scalars = [
            json!(0),
            json!(-1),
            json!(12_345),
            json!(u64::MAX),
            json!(i64::MIN),
            json!((1u64 << 53) + 1),
            json!(true),
            json!(null),
            json!("plain"),
            json!("quote \" backslash \\ newline \n tab \t bell \u{7} é 日本 😀"),
        ];
        for value in scalars {
            let mut fast = Vec::new();
            value.serialize(Scalar(&mut fast, usize::MAX)).unwrap();
            let mut slow = Vec::new();
            write_canonical(&mut slow, &value).unwrap();
            assert_eq!(fast, slow, "{value}");
        }
        // Floats and composites fall back, having written nothing.
        for value in [json!(1.5), json!([1]), json!({"a": 1})] {
            let mut buf = Vec::new();
            assert!(value.serialize(Scalar(&mut buf, usize::MAX)).is_err());
            assert!(buf.is_empty());
        }
        // Up to 2^53 and for floats, the bytes are RFC 8785's.
        for value in [
            json!(9_007_199_254_740_991u64),
            json!(-3),
            json!(1.5),
            json!(1e21),
            json!("x\u{1f}y"),
        ] {
            let mut ours = Vec::new();
            write_canonical(&mut ours, &value).unwrap();
            assert_eq!(ours, serde_jcs::to_vec(&value).unwrap(), "{value}");
        }
    }

    #[test]
    fn integers_beyond_two_to_the_53_have_keys_of_their_own() {
        let key = |v: u64| {
            let mut b = KeyBuilder::new("t", "n");
            b.arg("v", &v).unwrap();
            b.finish()
        };
        let big = 1u64 << 53;
        assert_ne!(
            key(big),
            key(big + 1),
            "RFC 8785 alone would round both to 2^53"
        );
        assert_ne!(key(u64::MAX), key(u64::MAX - 1));
        // Inside structures too, and the streamed key is the JSON key.
        #[derive(serde::Serialize)]
        struct Ids {
            ids: Vec<u64>,
        }
        let mut b = KeyBuilder::new("t", "n");
        b.arg("v", &Ids { ids: vec![big + 1] }).unwrap();
        let streamed = b.finish();
        let mut c = KeyBuilder::new("t", "n");
        c.arg("v", &Ids { ids: vec![big] }).unwrap();
        assert_ne!(streamed, c.finish());
        assert_eq!(
            streamed,
            CacheKey::from_json("t", "n", &json!({"v": {"ids": [big + 1]}})).unwrap()
        );
        for value in [
            json!(u64::MAX),
            json!(-3),
            json!(1.5),
            json!({"b": [1, "x"], "a": null}),
        ] {
            let mut b = KeyBuilder::new("t", "n");
            b.arg("v", &value).unwrap();
            assert_eq!(
                b.finish(),
                CacheKey::from_json("t", "n", &json!({"v": value})).unwrap()
            );
        }
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
