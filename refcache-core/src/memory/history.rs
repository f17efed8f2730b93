//! Finished task records: [`History`], a map for lookups and an expiry order for the TTL and the cap, holding one
//! [`Finished`] record per task (with what `retry_task` needs to run it again, a [`Rerun`]).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use crate::contract::context::LocalJob;
use crate::contract::output::OutputLog;
use crate::contract::spec::TaskSpec;
use crate::contract::store::StoredValue;
use crate::model::key::{CacheKey, KeyMap};
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
    /// What it weighs against `max_record_bytes` ([`record_weight`]).
    pub(super) weight: u64,
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

/// Finished task records: a map for lookups and an expiry order for the TTL and the cap.
///
/// A record expires `task_ttl` after its task finished, or for a complete task at the later of that and its
/// value's TTL (one lifetime: a value is never outlived by the record it is reached through, nor the other way
/// round). The order is by expiry, so the TTL drops records from its front; the cap on records and the bound on
/// their bytes drop the record that would expire first (of records with the same TTL, such as failed ones, the
/// oldest).
pub(super) struct History {
    pub(super) map: KeyMap<RefId, Arc<Finished>>,
    order: Order,
    next_seq: u64,
    ttl: Duration,
    cap: usize,
    /// The bound on the records' summed weight.
    max_bytes: u64,
    /// The records' summed weight now.
    bytes: u64,
}

/// The records' expiry order: by expiry, then by when they were recorded (`seq`).
///
/// While every record expires no earlier than the one recorded before it (one TTL for all, the usual case: `now`
/// only grows), that order is the order of recording, and a FIFO holds it: a push at the back and a pop at the
/// front, where a `BTreeMap` walked and rebalanced its nodes and shifted their entries on every retire. A record
/// removed out of turn (deleted, re-recorded by a retry, its session ended) leaves its entry behind, stale: it is
/// skipped when it reaches the front (its ref id maps to no record of its `seq`), and the FIFO is compacted when the
/// stale entries outnumber the live ones. The first record that would expire before the one recorded before it (a
/// value's TTL longer than another's) turns the order into the `BTreeMap` for good.
enum Order {
    Fifo(VecDeque<Entry>),
    Sorted(BTreeMap<(tokio::time::Instant, u64), (RefId, CacheKey)>),
}

/// A FIFO entry of [`Order`].
struct Entry {
    expires_at: tokio::time::Instant,
    seq: u64,
    ref_id: RefId,
    key: CacheKey,
}

impl Order {
    /// The entry that expires first, live or stale: its expiry, `seq`, ref id and key.
    fn first(&self) -> Option<(tokio::time::Instant, u64, &RefId, &CacheKey)> {
        match self {
            Self::Fifo(fifo) => fifo
                .front()
                .map(|e| (e.expires_at, e.seq, &e.ref_id, &e.key)),
            Self::Sorted(sorted) => sorted
                .first_key_value()
                .map(|(&(at, seq), (ref_id, key))| (at, seq, ref_id, key)),
        }
    }

    fn pop_first(&mut self) {
        match self {
            Self::Fifo(fifo) => {
                fifo.pop_front();
            }
            Self::Sorted(sorted) => {
                sorted.pop_first();
            }
        }
    }

    /// Adds a record's entry; `live` tells the live records from stale entries, should the order have to turn
    /// into the sorted one.
    fn push(&mut self, entry: Entry, live: impl Fn(&RefId, u64) -> bool) {
        match self {
            Self::Fifo(fifo) => {
                if fifo
                    .back()
                    .is_none_or(|last| last.expires_at <= entry.expires_at)
                {
                    fifo.push_back(entry);
                    return;
                }
                let sorted = fifo
                    .drain(..)
                    .filter(|e| live(&e.ref_id, e.seq))
                    .map(|e| ((e.expires_at, e.seq), (e.ref_id, e.key)))
                    .collect();
                *self = Self::Sorted(sorted);
                self.push(entry, live);
            }
            Self::Sorted(sorted) => {
                sorted.insert((entry.expires_at, entry.seq), (entry.ref_id, entry.key));
            }
        }
    }

    /// Drops the entry of a record removed out of turn: at once from the sorted order; the FIFO leaves it stale,
    /// and is compacted once the stale entries outnumber the `live` records.
    fn remove(&mut self, expires_at: tokio::time::Instant, seq: u64, live: usize) -> bool {
        match self {
            Self::Fifo(fifo) => fifo.len() > 2 * live + 64,
            Self::Sorted(sorted) => {
                sorted.remove(&(expires_at, seq));
                false
            }
        }
    }

    /// Keeps only the FIFO entries of live records.
    fn compact(&mut self, live: impl Fn(&RefId, u64) -> bool) {
        if let Self::Fifo(fifo) = self {
            fifo.retain(|e| live(&e.ref_id, e.seq));
        }
    }

    #[cfg(test)]
    fn is_fifo(&self) -> bool {
        matches!(self, Self::Fifo(_))
    }
}

/// Whether `map` holds the record `seq` of `ref_id` (not a later one of the same ref id, nor none).
fn live_in(map: &KeyMap<RefId, Arc<Finished>>, ref_id: &RefId, seq: u64) -> bool {
    map.get(ref_id).is_some_and(|f| f.seq == seq)
}

/// Fixed cost charged per record on top of what it holds that grows with the caller's input.
pub(super) const RECORD_OVERHEAD: u64 = 512;

/// What a finished record weighs against `max_record_bytes`: a fixed overhead, plus the JSON length of what grows
/// with input: the arguments kept to re-run a failed task, the error (message and details) and the retry history.
/// Measured by the caller before it takes the state lock (a 1 MiB argument takes a while to count).
pub(super) fn record_weight(info: &TaskInfo, args: Option<&serde_json::Value>) -> u64 {
    let mut weight = RECORD_OVERHEAD as usize;
    if let Some(args) = args {
        weight += json_len(args);
    }
    if let Some(error) = &info.error {
        weight += error.message.len();
        weight += error.details.as_ref().map_or(0, json_len);
        weight += error.remediation.as_ref().map_or(0, String::len);
    }
    weight += info
        .retry_history
        .iter()
        .map(|r| r.error.len() + 64)
        .sum::<usize>();
    weight += info.status_message.as_ref().map_or(0, String::len);
    weight += info.output_line.as_ref().map_or(0, String::len);
    weight as u64
}

/// The length of `value`'s compact JSON text, counted without building the text.
fn json_len(value: &serde_json::Value) -> usize {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    serde_json::to_writer(&mut counter, value).expect("a Value always serializes");
    counter.0
}

/// The value of a dropped record, revoked: the store entry to remove, if it is still this ref's.
pub(super) type DroppedValue = (CacheKey, RefId);

impl History {
    pub(super) fn new(ttl: Duration, cap: usize, max_bytes: u64) -> Self {
        Self {
            map: KeyMap::default(),
            order: Order::Fifo(VecDeque::new()),
            next_seq: 0,
            ttl,
            cap: cap.max(1),
            max_bytes,
            bytes: 0,
        }
    }

    /// The records' summed weight ([`record_weight`]), in bytes.
    pub(super) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Records a finished task; evicts expired and over-cap records, and their index entries. Answers the values
    /// of the records it dropped (already revoked, so no hit hands them out), for the caller to remove from the
    /// store.
    #[allow(clippy::too_many_arguments)] // One finished record's parts, as the retiring driver holds them.
    pub(super) fn insert(
        &mut self,
        info: TaskInfo,
        key: CacheKey,
        rerun: Option<Rerun>,
        value: Option<std::sync::Weak<StoredValue>>,
        output: Option<Arc<OutputLog>>,
        weight: u64,
        index: &mut KeyMap<CacheKey, RefId>,
    ) -> Vec<DroppedValue> {
        let now = tokio::time::Instant::now();
        let mut dropped = Vec::new();
        loop {
            let full =
                self.map.len() >= self.cap || self.bytes.saturating_add(weight) > self.max_bytes;
            let Some((at, seq, old, old_key)) = self.order.first() else {
                break;
            };
            if !live_in(&self.map, old, seq) {
                // Removed out of turn: a stale entry of the FIFO.
                self.order.pop_first();
                continue;
            }
            if at > now && !full {
                break;
            }
            let (old, old_key) = (old.clone(), *old_key);
            self.order.pop_first();
            if let Some(record) = self.map.remove(&old) {
                self.bytes = self.bytes.saturating_sub(record.weight);
                unindex(index, &old_key, &old);
                dropped.extend(record.revoke_value());
            }
        }
        // A record heavier than the whole bound alone is still kept (its ref id must poll): the bound then holds
        // again as soon as the next record comes.
        self.bytes = self.bytes.saturating_add(weight);
        let ttl = match value.as_ref().and_then(std::sync::Weak::upgrade) {
            Some(v) => self.ttl.max(v.ttl),
            None => self.ttl,
        };
        let expires_at = now + ttl;
        self.next_seq += 1;
        let seq = self.next_seq;
        let ref_id_of_new = info.ref_id.clone();
        let previous = self.map.insert(
            info.ref_id.clone(),
            Arc::new(Finished {
                info,
                key,
                expires_at,
                seq,
                rerun,
                value,
                output,
                weight,
            }),
        );
        // A ref id recorded again (a retried task that ended): its earlier entry goes, its value is the same ref's.
        if let Some(previous) = previous {
            self.bytes = self.bytes.saturating_sub(previous.weight);
            self.forget_entry(previous.expires_at, previous.seq);
        }
        let map = &self.map;
        self.order.push(
            Entry {
                expires_at,
                seq,
                ref_id: ref_id_of_new,
                key,
            },
            |r, s| live_in(map, r, s),
        );
        dropped
    }

    /// Removes the record of `ref_id` (its value is the caller's to drop).
    pub(super) fn remove(&mut self, ref_id: &RefId) -> Option<Arc<Finished>> {
        let record = self.map.remove(ref_id)?;
        self.bytes = self.bytes.saturating_sub(record.weight);
        self.forget_entry(record.expires_at, record.seq);
        Some(record)
    }

    /// The order's entry of a record just taken out of the map goes (or is left stale, see [`Order`]).
    fn forget_entry(&mut self, expires_at: tokio::time::Instant, seq: u64) {
        if self.order.remove(expires_at, seq, self.map.len()) {
            let map = &self.map;
            self.order.compact(|r, s| live_in(map, r, s));
        }
    }

    /// Removes every record that `drop` picks, with its index entry; answers how many, and their values (revoked).
    pub(super) fn remove_where(
        &mut self,
        drop: impl Fn(&Finished) -> bool,
        index: &mut KeyMap<CacheKey, RefId>,
    ) -> (usize, Vec<DroppedValue>) {
        let picked: Vec<RefId> = self
            .map
            .values()
            .filter(|f| drop(f))
            .map(|f| f.info.ref_id.clone())
            .collect();
        let mut values = Vec::new();
        for ref_id in &picked {
            if let Some(record) = self.remove(ref_id) {
                unindex(index, &record.key, ref_id);
                values.extend(record.revoke_value());
            }
        }
        (picked.len(), values)
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

impl Finished {
    /// Revokes its value, if the store still holds it: answers the store entry to remove.
    fn revoke_value(&self) -> Option<DroppedValue> {
        let value = self.value.as_ref()?.upgrade()?;
        value.revoke();
        Some((self.key, self.info.ref_id.clone()))
    }
}

/// Drops `key` from the key-to-ref index if it still points to `ref_id` (a newer execution may own it by now).
pub(super) fn unindex(index: &mut KeyMap<CacheKey, RefId>, key: &CacheKey, ref_id: &RefId) {
    if index.get(key) == Some(ref_id) {
        index.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u64) -> CacheKey {
        CacheKey::from_json("tests.history", "public", &serde_json::json!(i)).expect("a key")
    }

    /// A record of a finished task for key `i`, with a value of `ttl` (held by `values`, so the `Weak` lives).
    fn record(
        history: &mut History,
        index: &mut KeyMap<CacheKey, RefId>,
        values: &mut Vec<Arc<StoredValue>>,
        i: u64,
        ttl: Duration,
    ) -> RefId {
        let ref_id = RefId::generate("t");
        let info = TaskInfo::new(ref_id.clone(), "tests.history", "public");
        let value = Arc::new(StoredValue::new(
            ref_id.clone(),
            key(i),
            "tests.history",
            "public",
            crate::model::json_text::JsonText::from(serde_json::json!(i)),
            ttl,
        ));
        index.insert(key(i), ref_id.clone());
        history.insert(
            info,
            key(i),
            None,
            Some(Arc::downgrade(&value)),
            None,
            RECORD_OVERHEAD,
            index,
        );
        values.push(value);
        ref_id
    }

    /// Records `ref_id` again, as a retried task that ended is (its value kept by `values`).
    fn record_again(
        history: &mut History,
        index: &mut KeyMap<CacheKey, RefId>,
        values: &mut Vec<Arc<StoredValue>>,
        ref_id: &RefId,
        i: u64,
    ) {
        let info = TaskInfo::new(ref_id.clone(), "tests.history", "public");
        let value = Arc::new(StoredValue::new(
            ref_id.clone(),
            key(i),
            "tests.history",
            "public",
            crate::model::json_text::JsonText::from(serde_json::json!(i)),
            MINUTE,
        ));
        history.insert(
            info,
            key(i),
            None,
            Some(Arc::downgrade(&value)),
            None,
            RECORD_OVERHEAD,
            index,
        );
        values.push(value);
    }

    #[tokio::test(start_paused = true)]
    async fn a_ref_id_recorded_again_is_kept_past_the_stale_entry_of_its_first_record() {
        let mut history = History::new(MINUTE, 4, u64::MAX);
        let (mut index, mut values) = (KeyMap::default(), Vec::new());
        let ids: Vec<RefId> = (0..3)
            .map(|i| record(&mut history, &mut index, &mut values, i, MINUTE))
            .collect();
        // Not full: nothing goes, and the first record of ids[0], at the front of the FIFO, is stale now.
        record_again(&mut history, &mut index, &mut values, &ids[0], 0);
        assert_eq!(history.map.len(), 3);
        let d = record(&mut history, &mut index, &mut values, 3, MINUTE);
        let e = record(&mut history, &mut index, &mut values, 4, MINUTE);
        // Full at e: the oldest live record goes (ids[1]), not the new record of ids[0].
        assert_eq!(kept(&history, &ids), [true, false, true]);
        assert!(history.map.contains_key(&d) && history.map.contains_key(&e));
        assert!(history.order.is_fifo());
    }

    fn kept(history: &History, ids: &[RefId]) -> Vec<bool> {
        ids.iter().map(|r| history.map.contains_key(r)).collect()
    }

    const MINUTE: Duration = Duration::from_secs(60);

    #[tokio::test(start_paused = true)]
    async fn with_one_ttl_the_cap_drops_the_oldest_and_a_removed_record_leaves_no_place_taken() {
        let mut history = History::new(MINUTE, 3, u64::MAX);
        let (mut index, mut values) = (KeyMap::default(), Vec::new());
        let ids: Vec<RefId> = (0..3)
            .map(|i| record(&mut history, &mut index, &mut values, i, MINUTE))
            .collect();
        // Out of turn: its FIFO entry stays, stale, and must not count against the cap.
        assert!(history.remove(&ids[1]).is_some());
        let d = record(&mut history, &mut index, &mut values, 3, MINUTE);
        assert_eq!(kept(&history, &ids), [true, false, true]);
        assert_eq!(history.map.len(), 3);
        // Full now: the next record drops the oldest live one (the first), not the stale entry's.
        let e = record(&mut history, &mut index, &mut values, 4, MINUTE);
        assert_eq!(kept(&history, &ids), [false, false, true]);
        assert!(history.map.contains_key(&d) && history.map.contains_key(&e));
        assert!(
            !index.contains_key(&key(0)),
            "the dropped record's key is unindexed"
        );
        assert!(history.order.is_fifo());
        // The TTL drops them all, from the front.
        tokio::time::advance(MINUTE + Duration::from_secs(1)).await;
        let f = record(&mut history, &mut index, &mut values, 5, MINUTE);
        assert_eq!(history.map.len(), 1);
        assert!(history.map.contains_key(&f));
    }

    #[tokio::test(start_paused = true)]
    async fn a_record_that_expires_before_an_earlier_one_turns_the_order_sorted_and_the_cap_drops_it_first()
     {
        let mut history = History::new(MINUTE, 2, u64::MAX);
        let (mut index, mut values) = (KeyMap::default(), Vec::new());
        // A value of an hour keeps its record an hour; the next one expires in a minute, first.
        let long = record(&mut history, &mut index, &mut values, 0, 60 * MINUTE);
        let short = record(&mut history, &mut index, &mut values, 1, MINUTE);
        assert!(!history.order.is_fifo());
        let next = record(&mut history, &mut index, &mut values, 2, MINUTE);
        assert_eq!(kept(&history, &[long, short, next]), [true, false, true]);
    }

    /// The FIFO is the sorted order's fast path: the same records come and go, step by step, whatever the
    /// removals and TTLs.
    #[tokio::test(start_paused = true)]
    async fn the_fifo_and_the_sorted_order_keep_the_same_records() {
        for mixed_ttls in [false, true] {
            let mut fifo = History::new(MINUTE, 5, 4 * RECORD_OVERHEAD);
            let mut sorted = History::new(MINUTE, 5, 4 * RECORD_OVERHEAD);
            sorted.order = Order::Sorted(BTreeMap::new());
            let (mut fifo_index, mut sorted_index) = (KeyMap::default(), KeyMap::default());
            let mut values = Vec::new();
            let (mut fifo_ids, mut sorted_ids) = (Vec::new(), Vec::new());
            for i in 0..200u64 {
                let ttl = if mixed_ttls && i % 7 == 3 {
                    2 * MINUTE
                } else {
                    MINUTE
                };
                fifo_ids.push(record(&mut fifo, &mut fifo_index, &mut values, i, ttl));
                sorted_ids.push(record(&mut sorted, &mut sorted_index, &mut values, i, ttl));
                if i % 3 == 1 {
                    let at = (i as usize * 5) % fifo_ids.len();
                    assert_eq!(
                        fifo.remove(&fifo_ids[at]).is_some(),
                        sorted.remove(&sorted_ids[at]).is_some()
                    );
                }
                if i % 11 == 0 {
                    tokio::time::advance(Duration::from_secs(25)).await;
                }
                assert_eq!(
                    kept(&fifo, &fifo_ids),
                    kept(&sorted, &sorted_ids),
                    "step {i}"
                );
                assert_eq!(fifo.bytes(), sorted.bytes());
            }
            assert_eq!(fifo.order.is_fifo(), !mixed_ttls);
            if let Order::Fifo(entries) = &fifo.order {
                assert!(
                    entries.len() <= 2 * fifo.map.len() + 64,
                    "stale entries are compacted"
                );
            }
        }
    }
}
