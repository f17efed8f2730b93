//! `list`: the newest records first, from a cursor, filtered.

use std::collections::HashSet;

use refcache_core::{BackendError, TaskFilter, TaskInfo, TaskPage};

use super::codec::{parse_status, with_question};
use super::inner::{Inner, random_byte};

/// At most this many records are read for a list (newest first, from the cursor on).
pub(super) const LIST_SCAN: i64 = 10_000;

impl Inner {
    pub(super) async fn list(&self, filter: TaskFilter) -> Result<TaskPage, BackendError> {
        // Records created after the cursor cannot be on the page: the scan starts at the cursor.
        let before_ms: Option<i64> = match filter.cursor.as_deref() {
            Some(cursor) => {
                refcache_core::ListCursor::parse(cursor)?;
                cursor
                    .split_once('-')
                    .and_then(|(nanos, _)| nanos.parse::<u64>().ok())
                    .map(|nanos| i64::try_from(nanos.div_ceil(1_000_000)).unwrap_or(i64::MAX))
            }
            None => None,
        };
        let status = filter.status.map(|s| s.as_str());
        let rows = self
            .query(
                &self.sql.list,
                &[
                    &status,
                    &filter.session_id,
                    &filter.sessionless,
                    &filter.task_name,
                    &filter.namespace,
                    &before_ms,
                    &LIST_SCAN,
                ],
            )
            .await?;
        let mut infos = Vec::with_capacity(rows.len());
        for row in &rows {
            // Bad data costs only itself: an unreadable record is left out of the list.
            let Ok(mut info) = serde_json::from_str::<TaskInfo>(row.get(1)) else {
                tracing::warn!(
                    ref_id = row.get::<_, &str>(0),
                    "refcache: an unreadable task record was left out of a list"
                );
                continue;
            };
            if let Some(status) = parse_status(row.get(4)) {
                info.status = status;
            }
            with_question(&mut info, row.get(3));
            let position: Option<i64> = row.get(2);
            info.queue_position = position.and_then(|p| usize::try_from(p).ok());
            infos.push(info);
        }
        let mut infos: Vec<TaskInfo> = infos.into_iter().filter(|i| filter.matches(i)).collect();
        // A task in flight may have a submission not yet durable (its insert commits asynchronously): its ref goes
        // to the caller only once a durable commit has seen its row (`Sql::confirm`); a row lost meanwhile (the
        // server restarted) is left out. A finished one's end was a durable commit, which covers its submission.
        let in_flight: Vec<&str> = infos
            .iter()
            .filter(|i| !i.status.is_terminal())
            .map(|i| i.ref_id.as_str())
            .collect();
        if !in_flight.is_empty() {
            let shard = i32::from(random_byte() % 16);
            let present: HashSet<String> = self
                .try_query_on(&self.pool, &self.sql.confirm, &[&in_flight, &shard])
                .await
                .map_err(|f| self.failed(f))?
                .iter()
                .map(|r| r.get(0))
                .collect();
            infos.retain(|i| i.status.is_terminal() || present.contains(i.ref_id.as_str()));
        }
        TaskPage::paginate(infos, &filter)
    }
}
