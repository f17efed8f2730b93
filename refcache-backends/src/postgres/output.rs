//! A task's output log (`task_output`): a window read from an offset, a batch appended by a running task, and the
//! body of `follow_output`.

use futures::StreamExt;
use futures::stream::BoxStream;
use refcache_core::{BackendError, OutputChunk, RefId};

use super::codec::parse_status;
use super::hub;
use super::inner::Inner;

impl Inner {
    /// A window of the task's output log from `offset` (see [`OutputChunk`]); `None`: no such record.
    pub(super) async fn read_output(
        &self,
        ref_id: &RefId,
        offset: u64,
        max_bytes: usize,
    ) -> Result<Option<OutputChunk>, BackendError> {
        let from = i64::try_from(offset).unwrap_or(i64::MAX);
        // At least one character, as the in-process log answers.
        let max = max_bytes.max(4);
        let want = i64::try_from(max).unwrap_or(i64::MAX);
        let rows = self
            .query(&self.sql.output_read, &[&ref_id.as_str(), &from, &want])
            .await?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let status = parse_status(row.get(0))
            .ok_or_else(|| self.corrupt("task status", row.get::<_, &str>(0)))?;
        let (end, at): (i64, i64) = (row.get(2), row.get(3));
        let (end, at) = (
            u64::try_from(end).unwrap_or(0),
            u64::try_from(at).unwrap_or(0),
        );
        let bytes: Option<&[u8]> = row.get(4);
        let bytes = bytes.unwrap_or_default();
        let bytes = &bytes[..bytes.len().min(max)];
        Ok(Some(OutputChunk::from_bytes(
            at,
            at.saturating_sub(offset),
            bytes,
            end,
            status.is_terminal(),
        )))
    }

    /// Ships a batch of a running task's output (see `output_append`). Answers whether it landed.
    pub(crate) async fn append_output(
        &self,
        ref_id: &RefId,
        skipped: u64,
        bytes: &[u8],
        cap: usize,
    ) -> Result<bool, BackendError> {
        let skipped = i64::try_from(skipped).unwrap_or(i64::MAX);
        let cap = i64::try_from(cap).unwrap_or(i64::MAX);
        let rows = self
            .query(
                &self.sql.output_append,
                &[&ref_id.as_str(), &skipped, &bytes, &cap, &self.sql.channel],
            )
            .await?;
        if rows.is_empty() {
            return Ok(false);
        }
        self.output_hub.poke(ref_id);
        Ok(true)
    }

    /// The body of `TaskBackend::follow_output`.
    pub(super) async fn follow_output(
        &self,
        ref_id: &RefId,
    ) -> Result<Option<BoxStream<'static, ()>>, BackendError> {
        let inner = self;
        // Follow first, then check: a write in between wakes the follower.
        let output = inner.output_hub.follow(ref_id);
        let status = inner.hub.follow(ref_id);
        if inner.status(ref_id).await?.is_none() {
            return Ok(None);
        }
        Ok(Some(
            futures::stream::select(
                hub::changes(output, inner.config.lease),
                hub::changes(status, inner.config.lease),
            )
            .boxed(),
        ))
    }
}
