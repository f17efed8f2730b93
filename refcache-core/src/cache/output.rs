//! Reading a task's output: [`RefCache::read_output`] (one chunk from an offset) and [`RefCache::follow_output`]
//! (every chunk as it arrives, until the task ends). Access is checked on the record first, as on every path:
//! output needs `READ`, since it may hold what the value holds.

use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;

use crate::cache::RefCache;
use crate::model::access::Permissions;
use crate::model::actor::Actor;
use crate::model::error::RefCacheError;
use crate::model::output::{DEFAULT_OUTPUT_READ, OutputChunk};
use crate::model::ref_id::RefId;

/// The largest `max_bytes` one read may ask for: 1 MiB.
pub const MAX_OUTPUT_READ: usize = 1 << 20;

/// A backend that cannot follow output is polled, from this interval up to [`POLL_MAX`].
const POLL_MIN: Duration = Duration::from_millis(50);
const POLL_MAX: Duration = Duration::from_secs(1);

impl RefCache {
    /// The task's output from byte `offset`, at most `max_bytes` (default 64 KiB, at most 1 MiB): see
    /// [`OutputChunk`]. Needs `READ`; an unknown or invisible id answers [`RefCacheError::NotFound`].
    ///
    /// Read on with `next_offset` until `done`. When the log's cap dropped bytes from `offset` on, the chunk starts
    /// at the oldest byte still held and `dropped` says how many were lost.
    pub async fn read_output(
        &self,
        ref_id: &str,
        offset: u64,
        max_bytes: Option<usize>,
    ) -> Result<OutputChunk, RefCacheError> {
        let max = output_max(max_bytes)?;
        let ref_id = self.own_ref(ref_id)?;
        self.output_access(&ref_id).await?;
        self.read_checked(&ref_id, offset, max).await
    }

    /// Follows the task's output from byte `offset`: a stream of chunks as the task writes them, ending after the
    /// chunk that is `done` (or with an error, such as [`RefCacheError::NotFound`] once the record is gone).
    /// Needs `READ`, checked once, here.
    ///
    /// The stream waits on the backend's change events, with no polling loop (a backend that cannot follow
    /// output is polled, from 50 ms up to 1 s). Dropping it changes nothing for the task.
    pub async fn follow_output(
        &self,
        ref_id: &str,
        offset: u64,
    ) -> Result<BoxStream<'static, Result<OutputChunk, RefCacheError>>, RefCacheError> {
        let ref_id = self.own_ref(ref_id)?;
        self.output_access(&ref_id).await?;
        // Subscribed before the first read, so that nothing written in between is missed.
        let wake = self.inner.backend.follow_output(&ref_id).await?;
        let state = Follow {
            cache: self.clone(),
            ref_id,
            offset,
            wake,
            poll: POLL_MIN,
            ended: false,
        };
        Ok(futures::stream::unfold(state, Follow::step).boxed())
    }

    /// The record is visible to the actor in effect, and it may read it.
    pub(crate) async fn output_access(&self, ref_id: &RefId) -> Result<(), RefCacheError> {
        self.permitted(ref_id, &Actor::current(), "read output", Permissions::READ)
            .await
            .map(drop)
    }

    /// A read whose access was checked.
    pub(crate) async fn read_checked(
        &self,
        ref_id: &RefId,
        offset: u64,
        max: usize,
    ) -> Result<OutputChunk, RefCacheError> {
        self.inner
            .backend
            .read_output(ref_id, offset, max)
            .await?
            .ok_or(RefCacheError::NotFound)
    }
}

/// Checks a caller's `max_bytes`.
pub(crate) fn output_max(max_bytes: Option<usize>) -> Result<usize, RefCacheError> {
    match max_bytes {
        None => Ok(DEFAULT_OUTPUT_READ),
        Some(n) if (1..=MAX_OUTPUT_READ).contains(&n) => Ok(n),
        Some(n) => Err(RefCacheError::InvalidOption {
            option: "output_max_bytes",
            value: n.to_string(),
            expected: "a whole number of bytes from 1 to 1048576",
        }),
    }
}

struct Follow {
    cache: RefCache,
    ref_id: RefId,
    offset: u64,
    wake: Option<BoxStream<'static, ()>>,
    poll: Duration,
    ended: bool,
}

impl Follow {
    async fn step(mut self) -> Option<(Result<OutputChunk, RefCacheError>, Self)> {
        if self.ended {
            return None;
        }
        loop {
            let chunk = self
                .cache
                .read_checked(&self.ref_id, self.offset, DEFAULT_OUTPUT_READ)
                .await;
            match chunk {
                Err(e) => {
                    self.ended = true;
                    return Some((Err(e), self));
                }
                Ok(chunk) if !chunk.text.is_empty() || chunk.dropped > 0 || chunk.done => {
                    self.offset = chunk.next_offset;
                    self.ended = chunk.done;
                    self.poll = POLL_MIN;
                    return Some((Ok(chunk), self));
                }
                Ok(_) => {}
            }
            match &mut self.wake {
                Some(wake) => {
                    if wake.next().await.is_none() {
                        self.wake = None;
                    }
                }
                None => {
                    tokio::time::sleep(self.poll).await;
                    self.poll = (self.poll * 2).min(POLL_MAX);
                }
            }
        }
    }
}
