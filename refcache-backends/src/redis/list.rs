//! Listing: the records of a page (with queue positions), newest first.

use redis::AsyncCommands;
use refcache_core::{BackendError, TaskFilter, TaskInfo, TaskPage};

use super::backend::{Inner, RedisTaskBackend};

/// At most this many records are read for a list or the per-status counts (newest first).
pub(super) const LIST_SCAN: isize = 10_000;

impl Inner {
    /// Records (with queue positions) of `refs`, skipping those that are gone.
    pub(super) async fn infos(&self, refs: &[String]) -> Result<Vec<TaskInfo>, BackendError> {
        let mut infos = Vec::with_capacity(refs.len());
        for chunk in refs.chunks(500) {
            let mut pipe = redis::pipe();
            for r in chunk {
                pipe.hmget(
                    format!("{}:task:{r}", self.keys.prefix()),
                    &["status", "info", "qm"],
                );
            }
            let mut conn = self.conn();
            let rows: Vec<(Option<String>, Option<String>, Option<String>)> = pipe
                .query_async(&mut conn)
                .await
                .map_err(|e| self.unavailable(&e))?;
            let mut pending = redis::pipe();
            let mut pending_at = Vec::new();
            for (status, info, qm) in rows {
                let (Some(status), Some(info)) = (status, info) else {
                    continue;
                };
                let Ok(info) = serde_json::from_str::<TaskInfo>(&info) else {
                    continue;
                };
                if status == "pending"
                    && let Some(qm) = qm
                {
                    pending.zrank(self.keys.pending(), qm);
                    pending_at.push(infos.len());
                }
                infos.push(info);
            }
            if !pending_at.is_empty() {
                let ranks: Vec<Option<usize>> = pending
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| self.unavailable(&e))?;
                for (at, rank) in pending_at.into_iter().zip(ranks) {
                    infos[at].queue_position = rank.map(|r| r + 1);
                }
            }
        }
        Ok(infos)
    }
}

impl RedisTaskBackend {
    /// The body of `TaskBackend::list`.
    pub(super) async fn list_page(&self, filter: TaskFilter) -> Result<TaskPage, BackendError> {
        let inner = &self.inner;
        inner.ensure_started();
        if let Some(cursor) = filter.cursor.as_deref() {
            refcache_core::ListCursor::parse(cursor)?;
        }
        let mut conn = inner.conn();
        let refs: Vec<String> = match filter.session_id.as_deref() {
            Some(session) => conn.smembers(inner.keys.session(session)).await,
            None => conn.zrevrange(inner.keys.index(), 0, LIST_SCAN - 1).await,
        }
        .map_err(|e| inner.unavailable(&e))?;
        let infos = inner.infos(&refs).await?;
        TaskPage::paginate(
            infos.into_iter().filter(|i| filter.matches(i)).collect(),
            &filter,
        )
    }
}
