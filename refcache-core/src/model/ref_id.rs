//! Reference ids: `<cache-name>:<32 lowercase hex>`, from 128 random bits.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::model::error::RefCacheError;

/// A reference to a task and the value it produces.
///
/// The form is `<cache-name>:<32 lowercase hex digits>`. The hex part is 128 random bits (a v4 UUID's bytes); it is
/// never derived from the arguments, so holding a ref id is a capability, not something guessable.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RefId(Arc<str>);

impl std::hash::Hash for RefId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // The last 16 hex digits are 64 random bits of our own drawing: enough to spread a table, for a fraction of
        // the hashing. Equality still compares the whole id.
        let tail = &self.0.as_bytes()[self.0.len().saturating_sub(16)..];
        state.write(tail);
    }
}

impl RefId {
    /// A fresh random id under `cache_name`.
    pub fn generate(cache_name: &str) -> Self {
        let id = uuid::Uuid::new_v4();
        let mut buf = uuid::Uuid::encode_buffer();
        let hex = id.simple().encode_lower(&mut buf);
        // Put together on the stack when it fits, so that the id takes one allocation (the `Arc`'s), not two.
        let mut text = [0u8; 128];
        let len = cache_name.len() + 1 + hex.len();
        if let Some(text) = text.get_mut(..len) {
            let (name, rest) = text.split_at_mut(cache_name.len());
            name.copy_from_slice(cache_name.as_bytes());
            rest[0] = b':';
            rest[1..].copy_from_slice(hex.as_bytes());
            // A `str` and ASCII put together: always UTF-8.
            if let Ok(text) = std::str::from_utf8(text) {
                return Self(Arc::from(text));
            }
        }
        Self(format!("{cache_name}:{hex}").into())
    }

    /// Parses and validates a ref id.
    pub fn parse(text: &str) -> Result<Self, RefCacheError> {
        if is_ref_id(text) {
            Ok(Self(text.into()))
        } else {
            Err(RefCacheError::MalformedRefId {
                ref_id: truncate_for_error(text),
            })
        }
    }

    /// The cache-name part.
    pub fn cache_name(&self) -> &str {
        let (name, _) = self.0.rsplit_once(':').expect("validated on construction");
        name
    }

    /// The whole id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Whether `text` has the ref id form: a valid cache name, `:`, 32 lowercase hex digits.
pub(crate) fn is_ref_id(text: &str) -> bool {
    let Some((name, hex)) = text.rsplit_once(':') else {
        return false;
    };
    hex.len() == 32
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        && is_cache_name(name)
}

/// Whether `name` is a valid cache name: 1 to 64 of `A-Z a-z 0-9 _ - .`.
pub(crate) fn is_cache_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

fn truncate_for_error(text: &str) -> String {
    const MAX: usize = 100;
    if text.len() <= MAX {
        return text.to_owned();
    }
    let mut end = MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

impl fmt::Display for RefId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RefId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RefId({})", self.0)
    }
}

impl FromStr for RefId {
    type Err = RefCacheError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl AsRef<str> for RefId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Serialize for RefId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for RefId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_have_the_documented_form() {
        let id = RefId::generate("refcache");
        let (name, hex) = id.as_str().split_once(':').unwrap();
        assert_eq!(name, "refcache");
        assert_eq!(hex.len(), 32);
        assert!(
            hex.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_eq!(RefId::parse(id.as_str()).unwrap(), id);
        assert_ne!(RefId::generate("refcache"), id, "two ids must differ");
        // A cache name too long for the stack buffer takes the other way to the same form.
        for name in ["n".repeat(64), "n".repeat(200)] {
            let id = RefId::generate(&name);
            assert_eq!(id.cache_name(), name);
            assert_eq!(id.as_str().len(), name.len() + 33);
        }
        let longest = RefId::generate(&"n".repeat(64));
        assert_eq!(RefId::parse(longest.as_str()).unwrap(), longest);
    }

    #[test]
    fn malformed_ids_are_rejected_with_their_own_error() {
        for bad in [
            "",
            "refcache",
            "refcache:",
            "refcache:XYZ",
            ":0123456789abcdef0123456789abcdef",
            "refcache:0123456789ABCDEF0123456789ABCDEF",
            "refcache:0123456789abcdef0123456789abcde",
            "ref cache:0123456789abcdef0123456789abcdef",
        ] {
            let err = RefId::parse(bad).unwrap_err();
            assert!(
                matches!(err, RefCacheError::MalformedRefId { .. }),
                "{bad}: {err}"
            );
            assert!(
                err.to_string()
                    .contains("<cache-name>:<32 lowercase hex digits>"),
                "{err}"
            );
        }
    }

    #[test]
    fn huge_malformed_ids_are_truncated_in_the_error() {
        let huge = "é".repeat(10_000);
        let err = RefId::parse(&huge).unwrap_err().to_string();
        assert!(err.len() < 400, "{}", err.len());
    }
}
