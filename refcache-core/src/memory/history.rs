//! Finished task records: [`History`], a map for lookups and a FIFO for expiry and the cap, holding one
//! [`Finished`] record per task (with what `retry_task` needs to run it again, a [`Rerun`]).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use crate::contract::context::LocalJob;
use crate::contract::output::OutputLog;
use crate::contract::spec::TaskSpec;
use crate::contract::store::StoredValue;
use crate::model::key::CacheKey;
use crate::model::record::TaskInfo;
use crate::model::ref_id::RefId;

pub(super) struct Finished {
    pub(super) info: TaskInfo,
    pub(super) key: CacheKey,
    pub(super) expires_at: tokio::time::Instant,
    /// Which history entry made this record (a ref id retried with `retry_task` is recorded twice).
    pub(super) seq: u64,
    /// What `retry_task` needs to run a failed task again.
    pub(super) rerun: Option<Rerun>,
    /// The value of a complete task, weakly: polls read it without touching moka while the store holds it (a
    /// `Weak` does not keep it alive, so the store's byte bound still decides).
    pub(super) value: Option<std::sync::Weak<StoredValue>>,
    /// The task's output log, if it wrote any: it lives and dies with this record.
    pub(super) output: Option<Arc<OutputLog>>,
}

impl Finished {
    /// Its value, without a moka read, while the store still holds it and it is unexpired.
    pub(super) fn live_value(&self) -> Option<Arc<StoredValue>> {
        self.value
            .as_ref()
            .and_then(std::sync::Weak::upgrade)
            .filter(|v| v.is_live())
    }
}

/// The spec and job of a failed task, kept with its record so that it can be re-run under the same ref id.
#[derive(Clone)]
pub(super) struct Rerun {
    pub(super) spec: TaskSpec,
    pub(super) job: Option<LocalJob>,
}

/// Finished task records: a map for lookups and a FIFO for expiry and the cap. Every record gets the same TTL and
/// is inserted when its task finishes, so insertion order is expiry order and eviction is O(1) per record.
pub(super) struct History {
    pub(super) map: HashMap<RefId, Arc<Finished>>,
    pub(super) order: VecDeque<(tokio::time::Instant, u64, RefId, CacheKey)>,
    pub(super) next_seq: u64,
    pub(super) ttl: Duration,
    pub(super) cap: usize,
}

impl History {
    pub(super) fn new(ttl: Duration, cap: usize) -> Self {
        Self {
            map: HashMap::new(),
            order: VecDeque::new(),
            next_seq: 0,
            ttl,
            cap: cap.max(1),
        }
    }

    /// Records a finished task; evicts expired and over-cap records, and their index entries.
    pub(super) fn insert(
        &mut self,
        info: TaskInfo,
        key: CacheKey,
        rerun: Option<Rerun>,
        value: Option<std::sync::Weak<StoredValue>>,
        output: Option<Arc<OutputLog>>,
        index: &mut HashMap<CacheKey, RefId>,
    ) {
        let now = tokio::time::Instant::now();
        while let Some((at, _, _, _)) = self.order.front() {
            if *at > now && self.order.len() < self.cap {
                break;
            }
            let (_, seq, old, old_key) = self.order.pop_front().expect("front exists");
            // Only the record this entry was made for: a ref id retried with `retry_task` was recorded again, under
            // a later entry, and its fresh record must stay.
            if self.map.get(&old).is_some_and(|f| f.seq == seq) {
                self.map.remove(&old);
                unindex(index, &old_key, &old);
            }
        }
        let expires_at = now + self.ttl;
        self.next_seq += 1;
        let seq = self.next_seq;
        self.order
            .push_back((expires_at, seq, info.ref_id.clone(), key));
        self.map.insert(
            info.ref_id.clone(),
            Arc::new(Finished {
                info,
                key,
                expires_at,
                seq,
                rerun,
                value,
                output,
            }),
        );
    }

    pub(super) fn get(&self, ref_id: &RefId) -> Option<&Arc<Finished>> {
        self.map
            .get(ref_id)
            .filter(|f| f.expires_at > tokio::time::Instant::now())
    }

    pub(super) fn records(&self) -> impl Iterator<Item = &Arc<Finished>> {
        let now = tokio::time::Instant::now();
        self.map.values().filter(move |f| f.expires_at > now)
    }
}

/// Drops `key` from the key-to-ref index if it still points to `ref_id` (a newer execution may own it by now).
pub(super) fn unindex(index: &mut HashMap<CacheKey, RefId>, key: &CacheKey, ref_id: &RefId) {
    if index.get(key) == Some(ref_id) {
        index.remove(key);
    }
}
