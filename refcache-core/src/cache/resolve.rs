//! Reference inputs: a `#[cached]` function's arguments may hold ref ids, at any depth; each is replaced by the
//! value it refers to before the call, and the cache key is computed from the resolved arguments.
//!
//! A reference whose value holds references is followed in turn; a cycle is an error naming the chain. Resolving
//! needs `READ` or `EXECUTE` on each reference (execute-only references pass values to tools without showing them
//! to the caller). An unknown and an inaccessible reference fail with the same text.

use std::collections::HashMap;
use std::fmt::Write as _;

use futures::future::BoxFuture;
use serde_json::Value;

use crate::cache::RefCache;
use crate::model::actor::Actor;
use crate::model::error::{INACCESSIBLE_REFERENCE, RefCacheError};
use crate::model::ref_id::{RefId, is_ref_id};
use crate::model::task::TaskStatus;

/// The most references one call may resolve, nested ones included.
pub const MAX_RESOLVED_REFERENCES: usize = 1000;

/// The deepest chain of references to references.
pub const MAX_REFERENCE_DEPTH: usize = 32;

/// The most bytes (of the referenced values' JSON) one call's arguments may grow by through resolution: a small
/// argument repeating one reference must not become a thousand copies of a large value.
pub const MAX_RESOLVED_BYTES: usize = 64 * 1024 * 1024;

impl RefCache {
    /// Replaces every string in `value` (at any depth) that is a ref id by the value it refers to, as the actor in
    /// effect ([`Actor::current`]). This is what `#[cached]` does to a function's arguments.
    ///
    /// `EXECUTE` is enough to resolve, so the values are for the tool, not for the actor: a server that resolves an
    /// execute-only reference must not echo the value back to the agent that passed it.
    pub async fn resolve_refs(&self, value: Value) -> Result<Value, RefCacheError> {
        self.resolve_refs_as(value, &Actor::current()).await
    }

    /// [`resolve_refs`](Self::resolve_refs) as `actor`.
    pub async fn resolve_refs_as(
        &self,
        value: Value,
        actor: &Actor,
    ) -> Result<Value, RefCacheError> {
        self.resolve_inputs(value, actor)
            .await
            .map(|(value, _)| value)
    }

    /// Resolves `value` as `actor`, and also answers the references it could use but not read (sorted, deduplicated).
    pub(crate) async fn resolve_inputs(
        &self,
        value: Value,
        actor: &Actor,
    ) -> Result<(Value, Vec<String>), RefCacheError> {
        let mut resolver = Resolver {
            cache: self,
            actor,
            resolved: 0,
            bytes: 0,
            chain: Vec::new(),
            unreadable: Vec::new(),
            done: HashMap::new(),
        };
        let mut value = value;
        resolver.walk(&mut value, &mut String::new()).await?;
        let mut unreadable = resolver.unreadable;
        unreadable.sort();
        unreadable.dedup();
        Ok((value, unreadable))
    }
}

/// A reference resolved earlier in the call: its fully resolved value, and what resolving it cost.
struct Resolved {
    value: Value,
    /// Bytes of referenced values it substituted, its own and nested ones.
    bytes: usize,
    /// References it resolved, itself and nested ones.
    references: usize,
}

struct Resolver<'a> {
    cache: &'a RefCache,
    actor: &'a Actor,
    resolved: usize,
    /// Bytes of referenced values substituted so far.
    bytes: usize,
    chain: Vec<String>,
    /// References resolved with `EXECUTE` but without `READ`.
    unreadable: Vec<String>,
    /// References already resolved in this call: each is fetched once. A repeat costs what the first resolution
    /// did, nested references included, so that chains of references to repeated references cannot grow the
    /// arguments past the bounds.
    done: HashMap<String, Resolved>,
}

impl Resolver<'_> {
    fn walk<'b>(
        &'b mut self,
        value: &'b mut Value,
        path: &'b mut String,
    ) -> BoxFuture<'b, Result<(), RefCacheError>> {
        Box::pin(async move {
            match value {
                // Only this cache's ids: `md5:<32 hex>` or another cache's id can never resolve here, and is data.
                Value::String(text)
                    if is_ref_id(text)
                        && text
                            .rsplit_once(':')
                            .is_some_and(|(name, _)| name == self.cache.name()) =>
                {
                    let id = std::mem::take(text);
                    *value = self.resolve(id, path).await?;
                }
                Value::Array(items) => {
                    for (i, item) in items.iter_mut().enumerate() {
                        let len = path.len();
                        let _ = write!(path, "[{i}]");
                        self.walk(item, path).await?;
                        path.truncate(len);
                    }
                }
                Value::Object(map) => {
                    for (key, item) in map.iter_mut() {
                        let len = path.len();
                        if !path.is_empty() {
                            path.push('.');
                        }
                        path.push_str(key);
                        self.walk(item, path).await?;
                        path.truncate(len);
                    }
                }
                _ => {}
            }
            Ok(())
        })
    }

    async fn resolve(&mut self, id: String, path: &mut String) -> Result<Value, RefCacheError> {
        if self.chain.contains(&id) {
            let mut chain = std::mem::take(&mut self.chain);
            chain.push(id);
            return Err(RefCacheError::ReferenceCycle { chain });
        }
        if let Some((bytes, references)) = self.done.get(&id).map(|r| (r.bytes, r.references)) {
            // Charged in full, and before it is copied: the bound is on memory, not on the error.
            self.count(references)?;
            self.grow(bytes)?;
            return Ok(self.done[&id].value.clone());
        }
        self.count(1)?;
        let (bytes_before, references_before) = (self.bytes, self.resolved - 1);
        let argument = if path.is_empty() {
            "<arguments>".to_owned()
        } else {
            path.clone()
        };
        let unresolved = |reason: String| RefCacheError::UnresolvedReference {
            argument: argument.clone(),
            ref_id: id.clone(),
            reason,
        };
        if self.chain.len() >= MAX_REFERENCE_DEPTH {
            return Err(unresolved(format!(
                "references nest deeper than {MAX_REFERENCE_DEPTH}"
            )));
        }
        let inaccessible = || unresolved(INACCESSIBLE_REFERENCE.to_owned());
        let ref_id = RefId::parse(&id).map_err(|_| inaccessible())?;
        let (snapshot, permissions) = match self.cache.visible(&ref_id, self.actor).await {
            Ok(visible) => visible,
            Err(RefCacheError::NotFound) => return Err(inaccessible()),
            Err(error) => return Err(error),
        };
        let readable = permissions.contains(crate::model::access::Permissions::READ);
        let (mut value, size) = match (snapshot.info.status, snapshot.value) {
            (TaskStatus::Complete, Some(stored)) => (stored.value.to_value(), stored.size),
            // Complete, but the value has expired or been evicted since.
            (TaskStatus::Complete, None) => return Err(inaccessible()),
            (TaskStatus::Failed, _) => {
                let error = snapshot.info.error.map(|e| e.message).unwrap_or_default();
                return Err(unresolved(format!("its task failed: {error}")));
            }
            (TaskStatus::Cancelled, _) => {
                return Err(unresolved("its task was cancelled".to_owned()));
            }
            (status, _) => {
                return Err(unresolved(format!(
                    "its task is still {status}; poll it with get_cached_result and pass it again once complete"
                )));
            }
        };
        self.grow(size)?;
        if !readable {
            self.unreadable.push(id.clone());
        }
        // Inside the referenced value, paths read `items[2]<refcache:…>.source`: the argument, then the reference.
        let len = path.len();
        path.push('<');
        path.push_str(&id);
        path.push('>');
        self.chain.push(id.clone());
        let walked = self.walk(&mut value, path).await;
        self.chain.pop();
        path.truncate(len);
        if let Err(error) = walked {
            if readable {
                return Err(error);
            }
            // What went wrong inside a value the caller may not read would tell it what is in there (keys, the
            // ids it holds, the shape of a cycle): name only the reference it passed.
            return Err(unresolved(
                "it holds references that cannot be resolved".to_owned(),
            ));
        }
        self.done.insert(
            id,
            Resolved {
                value: value.clone(),
                bytes: self.bytes - bytes_before,
                references: self.resolved - references_before,
            },
        );
        Ok(value)
    }

    /// Counts `n` more resolved references, within [`MAX_RESOLVED_REFERENCES`].
    fn count(&mut self, n: usize) -> Result<(), RefCacheError> {
        self.resolved = self.resolved.saturating_add(n);
        if self.resolved > MAX_RESOLVED_REFERENCES {
            return Err(RefCacheError::TooManyReferences {
                limit: MAX_RESOLVED_REFERENCES,
            });
        }
        Ok(())
    }

    /// Counts `size` more bytes of substituted values, within [`MAX_RESOLVED_BYTES`].
    fn grow(&mut self, size: usize) -> Result<(), RefCacheError> {
        self.bytes = self.bytes.saturating_add(size);
        if self.bytes > MAX_RESOLVED_BYTES {
            return Err(RefCacheError::ResolvedTooLarge {
                limit: MAX_RESOLVED_BYTES,
            });
        }
        Ok(())
    }
}
