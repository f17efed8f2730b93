//! Cache keys: blake3 over the task name, the namespace and the canonical JSON of the arguments.

use std::fmt;
use std::io::Write;

use serde::Serialize;

use crate::error::RefCacheError;

/// The identity of one call: the same task, namespace and arguments give the same key.
///
/// It is the 256-bit blake3 hash of the task name, the namespace and the RFC 8785 canonical JSON of the arguments
/// (an object of parameter name to value, keys sorted at every depth). A cryptographic hash keeps a client from
/// crafting arguments whose key collides with another caller's.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheKey([u8; 32]);

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
    pub fn from_json(task: &str, namespace: &str, args: &serde_json::Value) -> Result<Self, RefCacheError> {
        let mut hasher = start(task, namespace);
        serde_jcs::to_writer(&mut hasher, args).map_err(|e| RefCacheError::Argument {
            task: task.to_owned(),
            name: "<arguments>".to_owned(),
            message: e.to_string(),
        })?;
        Ok(Self(*hasher.finalize().as_bytes()))
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

fn start(task: &str, namespace: &str) -> blake3::Hasher {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"refcache-key-v1\0");
    for part in [task, namespace] {
        hasher.update(&(part.len() as u64).to_le_bytes());
        hasher.update(part.as_bytes());
    }
    hasher
}

/// Builds a [`CacheKey`] argument by argument, streaming canonical JSON straight into the hasher: no allocation for
/// scalar arguments.
///
/// Arguments must be added in sorted name order (the `#[cached]` macro sorts them); the result is then byte for
/// byte the canonical JSON object `{"a":..,"b":..}` that [`CacheKey::from_json`] hashes.
pub struct KeyBuilder<'a> {
    task: &'a str,
    hasher: blake3::Hasher,
    first: bool,
}

impl<'a> KeyBuilder<'a> {
    /// Starts a key for `task` in `namespace`.
    pub fn new(task: &'a str, namespace: &str) -> Self {
        let mut hasher = start(task, namespace);
        hasher.update(b"{");
        Self { task, hasher, first: true }
    }

    /// Adds one argument.
    pub fn arg<T: Serialize + ?Sized>(&mut self, name: &str, value: &T) -> Result<(), RefCacheError> {
        if !self.first {
            self.hasher.update(b",");
        }
        self.first = false;
        let error = |e: &dyn fmt::Display| RefCacheError::Argument {
            task: self.task.to_owned(),
            name: name.to_owned(),
            message: e.to_string(),
        };
        serde_jcs::to_writer(&mut self.hasher, name).map_err(|e| error(&e))?;
        self.hasher.write_all(b":").map_err(|e| error(&e))?;
        serde_jcs::to_writer(&mut self.hasher, value).map_err(|e| error(&e))
    }

    /// The finished key.
    pub fn finish(mut self) -> CacheKey {
        self.hasher.update(b"}");
        CacheKey(*self.hasher.finalize().as_bytes())
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
