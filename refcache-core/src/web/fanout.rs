//! One read of a task's output per chunk, shared by every event stream that follows the task ([`Fanout`]).
//!
//! The first stream that follows a task starts a feed: one follower of the task's output log that encodes each
//! chunk once and broadcasts it. Every stream of that task takes the chunks that continue exactly where it is, and
//! reads the log itself only to catch up: when it opens (from its own offset), after it fell behind the broadcast,
//! and when the feed ends before the output does. A feed ends with the task's output, when nobody listens any
//! more, or at shutdown.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::cache::RefCache;
use crate::model::actor::Actor;
use crate::model::error::RefCacheError;
use crate::model::output::OutputChunk;
use crate::model::ref_id::RefId;

/// How many chunks a feed keeps for streams that are behind: a stream further behind reads the log itself. It
/// bounds what a feed holds to this many chunks (each at most one read of the log).
const FEED_CHUNKS: usize = 64;

/// A chunk as every stream sends it: read and encoded once.
#[derive(Debug)]
pub(super) struct SharedChunk {
    pub(super) chunk: OutputChunk,
    /// `chunk` as JSON text: the event's data.
    pub(super) json: String,
}

type Feed = broadcast::Sender<Arc<SharedChunk>>;

/// The feeds of the tasks being followed, by ref id.
#[derive(Debug, Default)]
pub(crate) struct Fanout {
    feeds: Mutex<HashMap<RefId, Feed>>,
}

impl Fanout {
    /// Listens to `ref_id`'s feed, started (following the log from `from`, as `actor`) if there is none. `None`
    /// when the log cannot be followed: the caller reads it itself.
    pub(super) async fn listen(
        self: &Arc<Self>,
        cache: &RefCache,
        actor: &Actor,
        ref_id: &RefId,
        from: u64,
        stop: &CancellationToken,
    ) -> Option<broadcast::Receiver<Arc<SharedChunk>>> {
        if let Some(feed) = self.lock().get(ref_id) {
            return Some(feed.subscribe());
        }
        let output = actor
            .clone()
            .scope(cache.follow_output(ref_id.as_str(), from))
            .await
            .ok()?;
        let mut feeds = self.lock();
        if let Some(feed) = feeds.get(ref_id) {
            // Another stream started it meanwhile.
            return Some(feed.subscribe());
        }
        let (feed, receiver) = broadcast::channel(FEED_CHUNKS);
        feeds.insert(ref_id.clone(), feed.clone());
        tokio::spawn(
            self.clone()
                .feed(ref_id.clone(), output, feed, stop.clone()),
        );
        Some(receiver)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<RefId, Feed>> {
        self.feeds.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Broadcasts the log's chunks until the output is done, nobody listens, or the page stops.
    async fn feed(
        self: Arc<Self>,
        ref_id: RefId,
        mut output: BoxStream<'static, Result<OutputChunk, RefCacheError>>,
        feed: Feed,
        stop: CancellationToken,
    ) {
        loop {
            let next = tokio::select! {
                next = output.next() => next,
                () = stop.cancelled() => None,
            };
            let Some(Ok(chunk)) = next else { break };
            let Ok(json) = serde_json::to_string(&chunk) else {
                break;
            };
            let done = chunk.done;
            if feed.send(Arc::new(SharedChunk { chunk, json })).is_err() || done {
                break;
            }
        }
        let mut feeds = self.lock();
        if feeds.get(&ref_id).is_some_and(|f| f.same_channel(&feed)) {
            feeds.remove(&ref_id);
        }
    }
}
