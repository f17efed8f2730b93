//! Events: how a change made by any process reaches the processes that care, so that waiting is event-driven.
//!
//! Every state-changing script publishes an [`Event`] on `P:events`. Each backend keeps one subscriber connection
//! (its own reconnect loop) and fans the events out in-process:
//! - to the [`Hub`](super::hub::Hub)'s per-ref channels, which `wait` and `watch` follow (and a second hub's for output, which
//!   `follow_output` follows beside the first);
//! - to the runner, which stops a task it holds when its record in Redis says another process cancelled or
//!   deleted it;
//! - to the near cache, which drops a value Redis says was deleted.
//!
//! An event is a hint, never a fact: anyone who can write to the Redis can publish one, so each is verified on the
//! record it names before anything here acts on it.
//!
//! A message published while the subscriber was disconnected is lost, so after every (re)subscribe the hub tells
//! each follower to read its record again (`None` on its channel) and the runner re-checks the tasks it holds.

use std::sync::{Arc, Weak};
use std::time::Duration;

use futures::StreamExt;
use redis::AsyncCommands;
use refcache_core::{CacheKey, RefId, StoredValue, TaskInfo, TaskStatus};

use super::state::Inner;

/// What a script announces, as the text `<ref> <status>`, `<ref> output -` or `<ref> drop <key>`. No record rides
/// in it: an event is a hint (what a follower shows or returns comes from the record), so its status is all a
/// process needs to decide whether to read, and every process receives every event without decoding anything.
pub(crate) struct Event;

impl Event {
    /// The task's record changed (status or progress). (`transition` and `claim` make theirs in the script.)
    pub(crate) fn info(info: &TaskInfo) -> String {
        format!("{} {}", info.ref_id, info.status.as_str())
    }

    /// The task wrote output. Followers of its output read the log.
    pub(crate) fn output(ref_id: &RefId) -> String {
        format!("{ref_id} output -")
    }

    /// The reference was deleted (its value too, if it was this ref's).
    pub(crate) fn drop(ref_id: &RefId, key: &CacheKey) -> String {
        format!("{ref_id} drop {}", key.to_hex())
    }
}

/// An event, split but not yet decoded.
struct Raw<'a> {
    ref_id: RefId,
    kind: &'a str,
    rest: &'a str,
}

impl<'a> Raw<'a> {
    fn parse(payload: &'a str) -> Option<Self> {
        let (ref_id, rest) = payload.split_once(' ')?;
        let (kind, rest) = rest.split_once(' ').unwrap_or((rest, ""));
        Some(Self {
            ref_id: RefId::parse(ref_id).ok()?,
            kind,
            rest,
        })
    }
}

/// The subscriber: connects, subscribes, fans events out; on any loss, reconnects with backoff and resyncs.
/// Ends when the backend is dropped.
pub(crate) async fn listen(
    inner: Weak<Inner>,
    client: redis::Client,
    channel: String,
    stop: tokio_util::sync::CancellationToken,
) {
    tokio::select! {
        () = listen_until_dropped(inner, client, channel) => {}
        () = stop.cancelled() => {}
    }
}

async fn listen_until_dropped(inner: Weak<Inner>, client: redis::Client, channel: String) {
    // A worker also hears of new stream entries (`P:queued`), which wake its `take`.
    let queued = {
        let Some(inner) = inner.upgrade() else { return };
        inner.consumes.then(|| inner.keys.queued())
    };
    let mut backoff = Duration::from_millis(50);
    loop {
        let connected = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            if let Some(queued) = &queued {
                pubsub.subscribe(queued).await?;
            }
            Ok::<_, redis::RedisError>(pubsub)
        };
        let connected = tokio::time::timeout(Duration::from_secs(5), connected).await;
        match connected {
            Ok(Ok(mut pubsub)) => {
                backoff = Duration::from_millis(50);
                {
                    let Some(inner) = inner.upgrade() else { return };
                    inner.hub.resync();
                    inner.resync_held();
                    // An entry added while the subscription was down woke nobody.
                    inner.queued.notify_one();
                }
                let mut messages = pubsub.on_message();
                while let Some(msg) = messages.next().await {
                    let Some(inner) = inner.upgrade() else { return };
                    if queued
                        .as_deref()
                        .is_some_and(|q| msg.get_channel_name() == q)
                    {
                        inner.queued.notify_one();
                        continue;
                    }
                    let Ok(payload) = msg.get_payload::<String>() else {
                        continue;
                    };
                    match Raw::parse(&payload) {
                        Some(event) => inner.on_event(event).await,
                        None => tracing::warn!("refcache: unreadable event on the Redis channel"),
                    }
                }
                tracing::warn!(
                    channel,
                    "refcache: Redis event subscription lost; reconnecting"
                );
            }
            Ok(Err(err)) => {
                tracing::debug!(%err, "refcache: cannot subscribe to Redis events yet");
            }
            Err(_) => tracing::debug!("refcache: subscribing to Redis events timed out"),
        }
        if inner.strong_count() == 0 {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

impl Inner {
    /// One event, taken as a hint (#15 §4: anyone who can write to the Redis can publish): followers are told to
    /// look, and the runner and the near cache act only on what the record (and the value's owner) in Redis say.
    /// A forged or malformed event costs a read and changes nothing.
    async fn on_event(self: &Arc<Self>, event: Raw<'_>) {
        let ref_id = &event.ref_id;
        if event.kind == "drop" {
            // Followers read the record themselves (`None`); a forged drop finds it still there.
            self.hub.deliver(ref_id, None);
            drop(self.hub.take_kept(ref_id));
            self.verify_held(ref_id);
            if let Some(key) = CacheKey::from_hex(event.rest)
                && self
                    .near
                    .get(&key)
                    .await
                    .is_some_and(|v| v.ref_id == *ref_id)
            {
                self.verify_near_drop(&key, ref_id).await;
            }
            return;
        }
        if event.kind == "output" {
            // Only followers of the output care; they read the log, never the event's number.
            self.output_hub.deliver(ref_id, None);
            return;
        }
        let status = TaskStatus::from_name(event.kind);
        if let Some(status) = status.filter(|s| s.is_terminal()) {
            // A `wait` that comes after this reads the record anyway; a follower kept for it would only cost.
            drop(self.hub.take_kept(ref_id));
            self.verify_held(ref_id);
            // The end as its script wrote it, for the waiter here that submitted the task (the token is its
            // proof): no read.
            if let Some(snapshot) = self.end_from_event(ref_id, status, event.rest) {
                self.hub.settle_once(ref_id, snapshot);
                return;
            }
        }
        // The status it claims is passed on as a hint: a waiter reads the record itself before it believes a
        // terminal status, and a watcher before it passes any on; a kind that is no status is "read again".
        self.hub.deliver(ref_id, status);
    }

    /// The snapshot a terminal event carries (`<token> <record length> <record><value>`, see the `transition`
    /// script), when somebody here follows the task and expects that token; `None` otherwise (a plain event, a
    /// forged one, or one that does not read as the end it names: then it is a hint, and the waiter reads).
    ///
    /// The token is used up by the first event that carries it, whatever follows: a replay of a genuine event
    /// (anyone who can publish on the channel can also read it) is a hint. The value must be the task's own (its
    /// ref id and cache key), and it is not put in the near cache (a poll puts what it reads from Redis there).
    fn end_from_event(
        &self,
        ref_id: &RefId,
        status: TaskStatus,
        rest: &str,
    ) -> Option<refcache_core::TaskSnapshot> {
        let (token, rest) = rest.split_once(' ')?;
        let key = self.hub.take_token(ref_id, token)?;
        let unreadable = |what: &str| {
            tracing::warn!(%ref_id, "refcache: a task's end event with its token has {what}; reading the record");
            None
        };
        let Some((len, rest)) = rest.split_once(' ') else {
            return unreadable("no record");
        };
        let Some((info, value)) = len
            .parse::<usize>()
            .ok()
            .and_then(|len| Some((rest.get(..len)?, rest.get(len..)?)))
        else {
            return unreadable("a record length that does not fit");
        };
        let Ok(info) = serde_json::from_str::<TaskInfo>(info) else {
            return unreadable("an unreadable record");
        };
        if info.ref_id != *ref_id || info.status != status {
            return unreadable("another task's record");
        }
        let value = match (status, value.is_empty()) {
            (TaskStatus::Complete, false) => match serde_json::from_str::<StoredValue>(value) {
                Ok(value) if value.ref_id == *ref_id && value.key == key => Some(Arc::new(value)),
                Ok(_) => return unreadable("another task's value"),
                Err(_) => return unreadable("an unreadable value"),
            },
            (TaskStatus::Complete, true) => return unreadable("no value"),
            (_, true) => None,
            (_, false) => return unreadable("a value for a task that did not complete"),
        };
        Some(refcache_core::TaskSnapshot::new(info, value))
    }

    /// Drops the near cache's copy of `key` only when Redis says the value is no longer `ref_id`'s.
    async fn verify_near_drop(&self, key: &CacheKey, ref_id: &RefId) {
        let mut conn = self.conn();
        let owner: Result<Option<String>, _> = conn.hget(self.keys.value(key), "ref").await;
        match owner {
            Ok(Some(owner)) if owner == ref_id.as_str() => {
                tracing::debug!(%ref_id, "refcache: a drop event for a value that is still there was ignored");
            }
            // Gone, or another ref's now; on an error, dropping a local copy loses nothing (it is read again).
            _ => self.near.invalidate_if_ref(key, ref_id).await,
        }
    }
}
