//! Listing: the records of a page (with queue positions), newest first.

use redis::AsyncCommands;
use refcache_core::{BackendError, TaskFilter, TaskInfo, TaskPage};

use super::state::{Inner, RedisTaskBackend};

/// At most this many records are read for a list or the per-status counts (newest first).
pub(super) const LIST_SCAN: isize = 10_000;

impl Inner {
    /// Records (with queue positions) of `refs`, skipping those that are gone (a complete one whose value is gone
    /// too). A key that is not refcache's, or a record that does not decode, costs itself alone: it is left out,
    /// with a warning that names it.
    pub(super) async fn infos(&self, refs: &[String]) -> Result<Vec<TaskInfo>, BackendError> {
        let mut infos = Vec::with_capacity(refs.len());
        let mut conn = self.conn();
        for chunk in refs.chunks(500) {
            let mut invocation = self.scripts.infos.prepare_invoke();
            invocation.arg(self.keys.prefix());
            for r in chunk {
                invocation.arg(r);
            }
            let rows: Vec<String> = invocation
                .invoke_async(&mut conn)
                .await
                .map_err(|e| self.unavailable(&e))?;
            for row in rows.chunks_exact(3) {
                let (ref_id, info, rank) = (&row[0], &row[1], &row[2]);
                if let Some(kind) = info.strip_prefix('!') {
                    tracing::warn!(
                        key = %format!("{}:task:{ref_id}", self.keys.prefix()),
                        kind = if kind.is_empty() { "hash without a record" } else { kind },
                        "refcache: data under the key prefix is not refcache's; left out of the list                          (give each app its own `key_prefix`)"
                    );
                    continue;
                }
                let Ok(mut info) = serde_json::from_str::<TaskInfo>(info) else {
                    tracing::warn!(
                        %ref_id,
                        "refcache: an unreadable task record was left out of a list"
                    );
                    continue;
                };
                info.queue_position = rank.parse::<usize>().ok().map(|r| r + 1);
                infos.push(info);
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
