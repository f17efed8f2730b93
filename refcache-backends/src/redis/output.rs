//! Task output on Redis: each task's log is a string `P:out:<ref>` that the writing process appends to in batches
//! (`output_append`), readable from an offset on any replica (`output_read`), and followed through `output`
//! events, which are hints: a follower always reads the log itself.
//!
//! The writer side lives with the running task's hooks (`runner.rs`): a write queues its bytes in the process
//! (a blocking thread may write) and the hooks' writer ships what is queued in one script call per round trip.

use futures::StreamExt;
use futures::stream::BoxStream;
use refcache_core::{BackendError, OutputChunk, RefId};

use super::events::Event;
use super::state::{Inner, RedisTaskBackend, parse_status};

impl Inner {
    /// Appends a batch of output to the task's log: `skipped` bytes before `text` were dropped in this process
    /// (more than the cap was queued). Answers the log's end offset, or `None` when the record is gone.
    pub(super) async fn append_output(
        &self,
        ref_id: &RefId,
        text: &[u8],
        skipped: u64,
        cap: usize,
    ) -> Result<Option<u64>, BackendError> {
        let mut conn = self.conn();
        let end: i64 = self
            .scripts
            .output_append
            .arg(self.keys.prefix())
            .arg(ref_id.as_str())
            .arg(text)
            .arg(skipped)
            .arg(cap.max(1))
            .arg(Event::output(ref_id))
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.unavailable(&e))?;
        Ok(u64::try_from(end).ok())
    }

    /// The body of `TaskBackend::read_output`.
    pub(super) async fn read_output(
        &self,
        ref_id: &RefId,
        offset: u64,
        max_bytes: usize,
    ) -> Result<Option<OutputChunk>, BackendError> {
        let mut conn = self.conn();
        let found: Option<(String, u64, u64, u64, Vec<u8>)> = self
            .scripts
            .output_read
            .arg(self.keys.prefix())
            .arg(ref_id.as_str())
            .arg(offset)
            .arg(max_bytes)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.unavailable(&e))?;
        Ok(found.map(|(status, begin, dropped, end, bytes)| {
            let terminal = parse_status(&status).is_terminal();
            OutputChunk::from_bytes(begin, dropped, &bytes, end, terminal)
        }))
    }
}

impl RedisTaskBackend {
    /// The body of `TaskBackend::follow_output`: wakes on the task's output events and on its status events (both
    /// hints), and after a reconnect; `None` when the task is unknown or has ended.
    pub(super) async fn follow_output_of(
        &self,
        ref_id: &RefId,
    ) -> Result<Option<BoxStream<'static, ()>>, BackendError> {
        let inner = &self.inner;
        inner.ensure_started();
        // Follow first, then read: a write in between arrives as an event.
        let output = inner.output_hub.follow(ref_id);
        let status = inner.hub.follow(ref_id);
        match inner.record(ref_id).await? {
            Some(info) if !info.status.is_terminal() => {}
            _ => return Ok(None),
        }
        let stream =
            futures::stream::unfold((output, status), |(mut output, mut status)| async move {
                let woke = tokio::select! {
                    changed = output.rx().changed() => changed.is_ok(),
                    changed = status.rx().changed() => changed.is_ok(),
                };
                woke.then_some(((), (output, status)))
            });
        Ok(Some(stream.boxed()))
    }
}
