//! Finished task records: [`History`], a map for lookups and an expiry order for the TTL and the cap, holding one
//! [`Finished`] record per task (with what `retry_task` needs to run it again, a [`Rerun`]).

use std::collections::BTreeMap;
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
    order: BTreeMap<(tokio::time::Instant, u64), (RefId, CacheKey)>,
    next_seq: u64,
    ttl: Duration,
    cap: usize,
    /// The bound on the records' summed weight.
    max_bytes: u64,
    /// The records' summed weight now.
    bytes: u64,
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
            order: BTreeMap::new(),
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
                self.order.len() >= self.cap || self.bytes.saturating_add(weight) > self.max_bytes;
            let Some(entry) = self.order.first_entry() else {
                break;
            };
            if entry.key().0 > now && !full {
                break;
            }
            let (_, (old, old_key)) = entry.remove_entry();
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
        self.order
            .insert((expires_at, seq), (info.ref_id.clone(), key));
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
            self.order.remove(&(previous.expires_at, previous.seq));
        }
        dropped
    }

    /// Removes the record of `ref_id` (its value is the caller's to drop).
    pub(super) fn remove(&mut self, ref_id: &RefId) -> Option<Arc<Finished>> {
        let record = self.map.remove(ref_id)?;
        self.bytes = self.bytes.saturating_sub(record.weight);
        self.order.remove(&(record.expires_at, record.seq));
        Some(record)
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
