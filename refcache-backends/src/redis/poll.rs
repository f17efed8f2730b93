//! The poll path: a task's record and value (its value through the near cache), waiting for a task, and
//! following one.

use std::sync::Arc;

use redis::AsyncCommands;
use refcache_core::{BackendError, RefId, StoredValue, TaskInfo, TaskSnapshot, TaskStatus};
use tokio::sync::watch;

use super::hub::Signal;
use super::state::{Inner, RedisTaskBackend};

impl Inner {
    /// The task's record, from Redis. (Every script writes the `status` field and the record's status together,
    /// so the record's status is the one to compare against.)
    pub(super) async fn read(&self, ref_id: &RefId) -> Result<Option<TaskInfo>, BackendError> {
        let mut conn = self.conn();
        let info: Option<String> = conn
            .hget(self.keys.task(ref_id), "info")
            .await
            .map_err(|e| self.unavailable(&e))?;
        info.map(|info| serde_json::from_str(&info).map_err(|e| self.corrupt("task record", e)))
            .transpose()
    }

    /// The task's record with its queue position, without its value; `None` when unknown (or complete with its
    /// value gone: one lifetime).
    pub(super) async fn record(&self, ref_id: &RefId) -> Result<Option<TaskInfo>, BackendError> {
        let mut conn = self.conn();
        let found: Option<(String, Option<usize>)> = self
            .scripts
            .record
            .arg(self.keys.prefix())
            .arg(ref_id.as_str())
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.unavailable(&e))?;
        let Some((info, rank)) = found else {
            return Ok(None);
        };
        let mut info: TaskInfo =
            serde_json::from_str(&info).map_err(|e| self.corrupt("task record", e))?;
        info.queue_position = rank.map(|r| r + 1);
        Ok(Some(info))
    }

    pub(super) async fn get(&self, ref_id: &RefId) -> Result<Option<TaskSnapshot>, BackendError> {
        let mut conn = self.conn();
        let found: Option<(String, Option<String>, Option<usize>)> = self
            .scripts
            .get
            .arg(self.keys.prefix())
            .arg(ref_id.as_str())
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.unavailable(&e))?;
        let Some((info, value, rank)) = found else {
            return Ok(None);
        };
        let mut info: TaskInfo =
            serde_json::from_str(&info).map_err(|e| self.corrupt("task record", e))?;
        info.queue_position = rank.map(|r| r + 1);
        let value = match value {
            Some(v) => Some(self.stored(&v).await?),
            None => None,
        };
        Ok(Some(TaskSnapshot::new(info, value)))
    }

    /// A value read from Redis, through the near cache.
    pub(super) async fn stored(&self, json: &str) -> Result<Arc<StoredValue>, BackendError> {
        // A finished value never changes: when the near cache has this ref's, only the two names are read from
        // the text (the whole value, its policy and times cost a poll about 23k instructions to parse, #17 §3).
        if let Some((ref_id, key)) = value_names(json)
            && let Some(near) = self.near.get(&key).await
            && near.ref_id.as_str() == ref_id
        {
            return Ok(near);
        }
        let value: StoredValue =
            serde_json::from_str(json).map_err(|e| self.corrupt("value", e))?;
        let value = Arc::new(value);
        if value.is_live() && self.near.fits(&value) {
            self.near.insert(value.clone()).await;
        }
        Ok(value)
    }
}

/// The `ref_id` and `key` of a stored value's JSON text, read off its start, where serde writes them
/// (`{"ref_id":"…","key":"…",`): a serde parse of just these two still scans the whole text, about half the cost
/// of parsing it all. `None` for any other shape (then the caller parses the whole text, as before).
fn value_names(json: &str) -> Option<(&str, refcache_core::CacheKey)> {
    let rest = json.strip_prefix(r#"{"ref_id":""#)?;
    let (ref_id, rest) = rest.split_once('"')?;
    let rest = rest.strip_prefix(r#","key":""#)?;
    let (key, _) = rest.split_once('"')?;
    // An escape would make the text differ from the id it stands for (a ref id has none).
    if ref_id.contains('\\') {
        return None;
    }
    Some((ref_id, refcache_core::CacheKey::from_hex(key)?))
}

impl RedisTaskBackend {
    /// The body of `TaskBackend::wait`.
    pub(super) async fn wait_for(
        &self,
        ref_id: &RefId,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<Option<TaskSnapshot>, BackendError> {
        let inner = &self.inner;
        inner.ensure_started();
        // Follow first, then read: a change in between arrives as an event. A task submitted here onto the stream
        // has been followed since before it existed (`Hub::keep`): unless an event since calls for a read, it is
        // not finished, and the first read is skipped.
        let (mut follower, quiet) = match inner.hub.take_kept(ref_id) {
            Some(mut kept) => {
                let quiet = kept.quiet();
                (kept, quiet)
            }
            None => (inner.hub.follow(ref_id), false),
        };
        // A task held here (`local` mode) ends here: its terminal script's answer settles the channel, and its
        // release wakes it in any case, so there is nothing to read until then. Only a `complete` event is
        // this process's own to write; any other wakes the waiter to read, as for a task held elsewhere.
        let mut here = inner.holds(ref_id);
        let mut skip = here || quiet;
        loop {
            if !skip {
                let snapshot = inner.get(ref_id).await?;
                match &snapshot {
                    Some(s) if !s.info.status.is_terminal() => {}
                    _ => return Ok(snapshot),
                }
            }
            loop {
                let changed = follower.rx().changed();
                let woke = match deadline {
                    Some(deadline) => tokio::time::timeout_at(deadline, changed).await,
                    None => Ok(changed.await),
                };
                match woke {
                    Ok(Ok(())) => {
                        let latest = follower.rx().borrow_and_update().clone();
                        match latest {
                            Some(Signal::Settled(snapshot)) => return Ok(Some(*snapshot)),
                            Some(Signal::Event(status)) if !status.is_terminal() => {}
                            Some(Signal::Event(TaskStatus::Complete))
                                if here && inner.holds(ref_id) => {}
                            // Terminal, deleted, released, or a resync: read the record.
                            _ => {
                                here = false;
                                skip = false;
                                break;
                            }
                        }
                    }
                    // The deadline passed (or the hub went away): answer with what is there now.
                    _ => return inner.get(ref_id).await,
                }
            }
        }
    }

    /// The body of `TaskBackend::watch`.
    pub(super) async fn follow(
        &self,
        ref_id: &RefId,
    ) -> Result<Option<watch::Receiver<TaskInfo>>, BackendError> {
        let inner = self.inner.clone();
        inner.ensure_started();
        let mut follower = inner.hub.follow(ref_id);
        let Some(snapshot) = inner.get(ref_id).await? else {
            return Ok(None);
        };
        if snapshot.info.status.is_terminal() {
            return Ok(None);
        }
        let (tx, rx) = watch::channel(snapshot.info);
        let ref_id = ref_id.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = tx.closed() => return,
                    changed = follower.rx().changed() => {
                        if changed.is_err() {
                            return;
                        }
                    }
                }
                // An event is a hint (anyone can publish one): what a watcher sees comes from the record.
                let info = match inner.record(&ref_id).await {
                    Ok(Some(info)) => info,
                    Ok(None) => return,
                    Err(_) => continue,
                };
                let done = info.status.is_terminal();
                tx.send_replace(info);
                if done {
                    return;
                }
            }
        });
        Ok(Some(rx))
    }
}

#[cfg(test)]
mod names_tests {
    use std::time::Duration;

    use refcache_core::{CacheKey, JsonText, RefId, StoredValue};

    use super::value_names;

    #[test]
    fn a_stored_values_names_are_read_off_its_text_or_not_at_all() {
        let key = CacheKey::from_json("t", "ns", &serde_json::json!({"a": 1})).unwrap();
        let ref_id = RefId::generate("ns");
        let value = StoredValue::new(
            ref_id.clone(),
            key,
            "t",
            "ns",
            JsonText::from(&serde_json::json!({"ref_id": "x", "v": [1]})),
            Duration::from_secs(60),
        );
        let json = serde_json::to_string(&value).unwrap();
        assert_eq!(value_names(&json), Some((ref_id.as_str(), key)));
        // Any other shape: none (the whole text is parsed then).
        let reordered = json.replacen(r#"{"ref_id""#, r#"{ "ref_id""#, 1);
        assert_eq!(value_names(&reordered), None);
        assert_eq!(value_names(r#"{"ref_id":"a\"b","key":"00"}"#), None);
        assert_eq!(value_names(r#"{"ref_id":"ns:1","key":"not hex"}"#), None);
        assert_eq!(value_names(""), None);
    }
}
