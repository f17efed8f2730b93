//! Finished values: a moka cache weighed in bytes, with a TTL per entry.

use std::sync::{Arc, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::model::access::AccessPolicy;
use crate::model::json_text::JsonText;
use crate::model::key::{CacheKey, KeyHasher};
#[cfg(feature = "tokens")]
use crate::model::preview::TokenEncoding;
use crate::model::preview::{Preview, PreviewStrategy, Previewer, SizeMeasure};
use crate::model::ref_id::RefId;
use crate::model::task::Timestamp;

/// A finished value and what is known about it.
///
/// Stored once and shared as `Arc<StoredValue>`: a hit clones the `Arc`. The value is its compact JSON text
/// ([`JsonText`]), so its `size` is what memory holds; wire JSON splices the text in as it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct StoredValue {
    /// The reference it was stored under.
    pub ref_id: RefId,
    /// The key of the call that produced it.
    pub key: CacheKey,
    /// The task that produced it.
    pub task_name: Arc<str>,
    /// Its namespace.
    pub namespace: Arc<str>,
    /// The value, as its compact JSON text.
    pub value: JsonText,
    /// Length of the value's JSON text, in bytes (what it weighs in the store).
    pub size: usize,
    /// Number of items when the value is an array or object.
    pub total_items: Option<usize>,
    /// When it was stored.
    pub created_at: Timestamp,
    /// How long it stays.
    #[serde(with = "secs")]
    pub ttl: Duration,
    /// Who may do what with it.
    #[serde(default = "AccessPolicy::shared_default")]
    pub policy: Arc<AccessPolicy>,
    /// The session of the task that made it, which it is bound to.
    #[serde(default)]
    pub session_id: Option<String>,
    /// The largest size answered whole, as its function set it (`None`: the cache's default).
    #[serde(default)]
    pub max_size: Option<usize>,
    /// How it is previewed when larger, as its function set it (`None`: the cache's default).
    #[serde(default)]
    pub preview_strategy: Option<PreviewStrategy>,
    /// Its size in each measure, computed on first need.
    #[serde(skip)]
    measured: Measured,
    /// The last preview made of it, for the next hit that asks for the same one.
    #[serde(skip)]
    preview: PreviewMemo,
    /// Set when its task's record is dropped: from then on no read hands it out (see [`StoredValue::revoke`]).
    #[serde(skip)]
    revoked: Revoked,
}

/// Whether a value's record has been dropped. Its own copy: a clone starts unrevoked.
#[derive(Debug, Default)]
struct Revoked(std::sync::atomic::AtomicBool);

impl Clone for Revoked {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl PartialEq for Revoked {
    fn eq(&self, _: &Self) -> bool {
        // Bookkeeping of the store, not part of the value.
        true
    }
}

/// Which preview: measure, `max_size`, strategy, page size and page.
type PreviewKey = (SizeMeasure, usize, PreviewStrategy, usize, Option<usize>);

/// The last preview made of a value. Repeated hits of a large value ask for the same preview; making it means
/// measuring candidate previews (tokenizing them), so it is made once.
#[derive(Default)]
struct PreviewMemo(std::sync::Mutex<Option<(PreviewKey, Preview)>>);

impl Clone for PreviewMemo {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl std::fmt::Debug for PreviewMemo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PreviewMemo")
    }
}

impl PartialEq for PreviewMemo {
    fn eq(&self, _: &Self) -> bool {
        // A cache of what the value already determines.
        true
    }
}

/// A value's size in each [`SizeMeasure`], each computed at most once (counting tokens of a large value is slow).
#[derive(Debug, Clone, Default)]
struct Measured([OnceLock<usize>; 3]);

impl PartialEq for Measured {
    fn eq(&self, _: &Self) -> bool {
        // A cache of what the value already determines.
        true
    }
}

impl StoredValue {
    /// A value produced by the task `spec_*`, measured now.
    pub fn new(
        ref_id: RefId,
        key: CacheKey,
        task_name: impl Into<Arc<str>>,
        namespace: impl Into<Arc<str>>,
        value: JsonText,
        ttl: Duration,
    ) -> Self {
        let size = value.len();
        let total_items = crate::contract::offload::total_items(&value);
        Self {
            ref_id,
            key,
            task_name: task_name.into(),
            namespace: namespace.into(),
            value,
            size,
            total_items,
            created_at: Timestamp::now(),
            ttl,
            policy: AccessPolicy::shared_default(),
            session_id: None,
            max_size: None,
            preview_strategy: None,
            measured: Measured::default(),
            preview: PreviewMemo::default(),
            revoked: Revoked::default(),
        }
    }

    /// The value produced by the task `spec`: its reference, key, name and namespace, its access policy and
    /// session, and its preview settings.
    pub fn of_task(spec: &crate::contract::spec::TaskSpec, value: JsonText, ttl: Duration) -> Self {
        let mut stored = Self::new(
            spec.ref_id.clone(),
            spec.key,
            spec.task_name.clone(),
            spec.namespace.clone(),
            value,
            ttl,
        )
        .with_access(spec.policy.clone(), spec.options.session_id.clone());
        stored.max_size = spec.options.max_size;
        stored.preview_strategy = spec.options.preview_strategy;
        stored
    }

    /// The same value under `policy`, bound to `session_id` (the session of the task that made it).
    pub fn with_access(mut self, policy: Arc<AccessPolicy>, session_id: Option<String>) -> Self {
        self.policy = policy;
        self.session_id = session_id;
        self
    }

    /// Its size in `measure`, computed once per measure. A value whose JSON is at most `limit` bytes is within
    /// `limit` in every measure (a character or a token is at least one byte), so `fits` answers without counting.
    pub fn fits(&self, measure: SizeMeasure, limit: usize) -> bool {
        self.size <= limit || self.measure(measure) <= limit
    }

    /// Its size in `measure`, computed once per measure.
    pub fn measure(&self, measure: SizeMeasure) -> usize {
        let slot = match measure {
            SizeMeasure::Characters => 0,
            #[cfg(feature = "tokens")]
            SizeMeasure::Tokens(TokenEncoding::Cl100kBase) => 1,
            #[cfg(feature = "tokens")]
            SizeMeasure::Tokens(TokenEncoding::O200kBase) => 2,
        };
        *self.measured.0[slot].get_or_init(|| measure.of_text(self.value.as_str()))
    }

    /// The preview of it by `previewer` and `strategy` (page `page`), made once and remembered until another one
    /// is asked for.
    pub fn preview(
        &self,
        previewer: &Previewer,
        strategy: PreviewStrategy,
        page: Option<usize>,
    ) -> Preview {
        let key = (
            previewer.measure,
            previewer.max_size,
            strategy,
            previewer.page_size,
            page,
        );
        let memo = |slot: &mut Option<(PreviewKey, Preview)>| {
            slot.as_ref()
                .filter(|(k, _)| *k == key)
                .map(|(_, p)| p.clone())
        };
        if let Some(hit) = memo(
            &mut self
                .preview
                .0
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        ) {
            return hit;
        }
        // Made outside the lock: it may take milliseconds, and concurrent hits may make it twice, harmlessly. The
        // tree is parsed for this preview alone and dropped with it: the store holds only the text.
        let made = previewer.preview_sized(
            &self.value.to_value(),
            self.measure(previewer.measure),
            strategy,
            page,
        );
        *self
            .preview
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some((key, made.clone()));
        made
    }

    /// What `actor` may do with it.
    pub fn permissions_for(
        &self,
        actor: &crate::model::actor::Actor,
    ) -> crate::model::access::Permissions {
        self.policy
            .permissions_for(actor, &self.namespace, self.session_id.as_deref())
    }

    /// Whether anyone may read it, whoever they are: its policy lets every user and agent read, it is bound to no
    /// session, and its namespace has no rule. The hit path then skips finding the actor.
    pub fn readable_by_all(&self) -> bool {
        self.session_id.is_none()
            && self.policy.reads_for_everyone()
            && (&*self.namespace == "public"
                || matches!(
                    crate::model::namespace::Namespace::parse(&self.namespace),
                    Ok(crate::model::namespace::Namespace::Public
                        | crate::model::namespace::Namespace::Shared(_)
                        | crate::model::namespace::Namespace::Custom(_))
                ))
    }
}

impl StoredValue {
    /// Whether its TTL has not run out (by the wall clock).
    pub fn is_live(&self) -> bool {
        self.created_at.elapsed() < self.ttl
    }

    /// Marks it as gone with its task's record: a record and its value have one lifetime, so a value whose record
    /// was dropped (by `cleanup`, the record cap, the record TTL, a session's end) must not be handed out by a hit
    /// under a ref id that then polls as unknown. [`ValueStore::get`] skips a revoked value at once; its memory goes
    /// when the store drops the entry ([`ValueStore::invalidate_if_ref`], or a newer value for the key).
    pub fn revoke(&self) {
        self.revoked
            .0
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// Whether [`revoke`](Self::revoke) was called.
    pub fn is_revoked(&self) -> bool {
        self.revoked.0.load(std::sync::atomic::Ordering::Acquire)
    }
}

mod secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(value.as_secs_f64())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Duration::try_from_secs_f64(f64::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// Fixed cost charged per entry on top of the value's JSON length.
const ENTRY_OVERHEAD: u64 = 256;

struct PerEntryTtl;

/// What is left of a value's TTL, counted from when it was made: a near cache that copies a value from a remote
/// store later must not keep it past the remote's own expiry (and so past its record's).
fn remaining(value: &StoredValue) -> Duration {
    value.ttl.saturating_sub(value.created_at.elapsed())
}

impl moka::Expiry<CacheKey, Arc<StoredValue>> for PerEntryTtl {
    fn expire_after_create(
        &self,
        _: &CacheKey,
        value: &Arc<StoredValue>,
        _: Instant,
    ) -> Option<Duration> {
        Some(remaining(value))
    }

    fn expire_after_update(
        &self,
        _: &CacheKey,
        value: &Arc<StoredValue>,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(remaining(value))
    }
}

/// The value tier: finished values by key, bounded in bytes, each with its own TTL.
///
/// The in-process backend keeps its values here; a remote backend uses it as a near-cache of finished values (they
/// never change, so the copy cannot go stale).
#[derive(Clone)]
pub struct ValueStore {
    /// moka's blocking-free `sync` cache, not its `future` one: no call here waits on anything (there is no
    /// eviction listener), and a `sync` read takes no future state machine nor shared housekeeping future, which
    /// were a third of the hit's cost beyond a raw moka get (issue 17).
    cache: moka::sync::Cache<CacheKey, Arc<StoredValue>, KeyHasher>,
    max_bytes: u64,
}

impl std::fmt::Debug for ValueStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ValueStore")
            .field("max_bytes", &self.max_bytes)
            .finish_non_exhaustive()
    }
}

impl ValueStore {
    /// A store holding at most `max_bytes` of values (JSON length plus a fixed per-entry overhead).
    ///
    /// Evicted least recently used first. moka's default (TinyLFU) admits a new entry into a full cache only when
    /// its key is read more often than the entries it would push out, so in a full store a value just computed
    /// (its key never read yet) was dropped at moka's next maintenance, often within the task's own completion:
    /// the caller that had waited for it, or the first poll of its reference, then found it gone. With LRU the
    /// newest value is the last to go.
    pub fn new(max_bytes: u64) -> Self {
        let cache = moka::sync::Cache::builder()
            .eviction_policy(moka::policy::EvictionPolicy::lru())
            .max_capacity(max_bytes)
            .weigher(|_: &CacheKey, v: &Arc<StoredValue>| {
                Self::weight(v).try_into().unwrap_or(u32::MAX)
            })
            .expire_after(PerEntryTtl)
            .build_with_hasher(KeyHasher::default());
        Self { cache, max_bytes }
    }

    /// What an entry costs against the capacity.
    pub fn weight(value: &StoredValue) -> u64 {
        value.size as u64 + ENTRY_OVERHEAD
    }

    /// Whether a value fits at all. One that does not would be dropped on insert.
    pub fn fits(&self, value: &StoredValue) -> bool {
        Self::weight(value) <= self.max_bytes.min(u64::from(u32::MAX))
    }

    /// The capacity in bytes.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// The value for `key`, if present, unexpired and not [revoked](StoredValue::revoke).
    ///
    /// The read is made when this is called, not when the answer is awaited (it never waits): a ready future, so
    /// that the callers of every backend's near cache read it alike.
    pub fn get(&self, key: &CacheKey) -> std::future::Ready<Option<Arc<StoredValue>>> {
        std::future::ready(self.get_now(key))
    }

    /// [`get`](Self::get), without the future.
    pub fn get_now(&self, key: &CacheKey) -> Option<Arc<StoredValue>> {
        self.cache.get(key).filter(|v| !v.is_revoked())
    }

    /// Stores `value` under its key.
    pub async fn insert(&self, value: Arc<StoredValue>) {
        self.insert_now(value);
    }

    /// [`insert`](Self::insert), without the future (the store never waits): for a caller that cannot await.
    pub fn insert_now(&self, value: Arc<StoredValue>) {
        self.cache.insert(value.key, value);
    }

    /// Removes the value for `key` if it is the one stored under `ref_id`: a value a later execution of the same
    /// call stored before the check stays. A read, then a removal: an insert landing between the two would be
    /// removed too, as an eviction would remove it. (moka's `and_compute_with` gives no more than that, as it is
    /// not serialized with plain inserts either, and cost more: 10.9k instructions against 6.6k in the miss case,
    /// on every retire that evicts a record.)
    pub async fn invalidate_if_ref(&self, key: &CacheKey, ref_id: &RefId) {
        self.invalidate_if_ref_now(key, ref_id);
    }

    /// [`invalidate_if_ref`](Self::invalidate_if_ref), without the future (the store never waits).
    pub fn invalidate_if_ref_now(&self, key: &CacheKey, ref_id: &RefId) {
        let ours = self
            .cache
            .get(key)
            .is_some_and(|value| value.ref_id == *ref_id);
        if ours {
            self.cache.invalidate(key);
        }
    }

    /// Removes the value for `key`.
    pub async fn invalidate(&self, key: &CacheKey) {
        self.cache.invalidate(key);
    }

    /// Entries and weighted bytes, after pending maintenance.
    pub async fn usage(&self) -> (u64, u64) {
        self.cache.run_pending_tasks();
        (self.cache.entry_count(), self.cache.weighted_size())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(i: u64) -> Arc<StoredValue> {
        let value = JsonText::from(serde_json::json!({ "i": i }));
        let key =
            CacheKey::from_json("tests.store", "public", &serde_json::json!(i)).expect("a key");
        Arc::new(StoredValue::new(
            RefId::generate("t"),
            key,
            "tests.store",
            "public",
            value,
            Duration::from_secs(600),
        ))
    }

    #[tokio::test]
    async fn a_value_just_stored_in_a_full_store_stays_there_and_the_oldest_goes() {
        // Room for ten values (of the longest).
        let weight = ValueStore::weight(&stored(99));
        let store = ValueStore::new(10 * weight);
        let values: Vec<Arc<StoredValue>> = (0..100).map(stored).collect();
        for (i, value) in values.iter().enumerate() {
            store.insert(value.clone()).await;
            // moka's maintenance (admission and eviction) runs here at the latest.
            let (entries, bytes) = store.usage().await;
            assert!(bytes <= 10 * weight, "{bytes} bytes held");
            assert!(entries <= 10);
            let read = store.get_now(&value.key);
            assert!(
                read.is_some_and(|read| read.ref_id == value.ref_id),
                "value {i} was dropped as soon as it was stored"
            );
        }
        // The ten newest stay; every older one went.
        for (i, value) in values.iter().enumerate() {
            assert_eq!(store.get_now(&value.key).is_some(), i >= 90, "value {i}");
        }
    }
}
