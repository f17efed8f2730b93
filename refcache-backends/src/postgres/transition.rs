//! A task's status changes, each one compare-and-set statement ([`Transition`]): progress, an end with its value, a
//! claim of a held task, a dead letter; the counters; and the hint sent after a commit.

use std::sync::Arc;
use std::time::Duration;

use refcache_core::{BackendError, CacheKey, RefId, TaskError, TaskInfo, TaskStatus, Timestamp};
use tokio_postgres::types::ToSql;

use super::codec::{info_text, parse_status};
use super::inner::{Inner, ms_i64};

/// What [`Inner::transition`] changes and when.
pub(crate) struct Transition<'a> {
    /// Applies only from one of these statuses.
    pub(crate) from: &'a [TaskStatus],
    /// Applies only while this process owns the task.
    pub(crate) owner: bool,
    /// A counter to add one to, or `""`.
    pub(crate) counter: &'static str,
    /// Files the task in the dead-letter view.
    pub(crate) dead: bool,
    /// The value (JSON text, the rest, TTL), inserted in the same transaction.
    pub(crate) value: Option<&'a (String, String, Duration)>,
}

impl Inner {
    /// A change of a task's status and record, compared and set in one statement: it applies only while the status
    /// is one of `from` (and, with `owner`, while this process owns the task). A value is inserted by the same
    /// statement. Answers whether it applied.
    pub(super) async fn transition(
        &self,
        ref_id: &RefId,
        info: &TaskInfo,
        change: Transition<'_>,
    ) -> Result<bool, BackendError> {
        let terminal = info.status.is_terminal();
        let record_ttl = match change.value {
            // One lifetime: a complete record stays at least as long as its value.
            Some((_, _, value_ttl)) => self.config.task_ttl.max(*value_ttl),
            None => self.config.task_ttl,
        };
        let record_ttl = ms_i64(record_ttl);
        let info_json = info_text(info);
        let from: Vec<&str> = change.from.iter().map(|s| s.as_str()).collect();
        let owner: Option<&str> = change.owner.then_some(self.consumer.as_str());
        let kind = if terminal { "end" } else { "change" };
        let status = info.status.as_str();
        let (value, meta, value_ttl) = match change.value {
            Some((value, meta, ttl)) => (Some(value.as_str()), Some(meta.as_str()), ms_i64(*ttl)),
            None => (None, None, 0),
        };
        let params: [&(dyn ToSql + Sync); 16] = [
            &ref_id.as_str(),
            &status,
            &info_json,
            &terminal,
            &record_ttl,
            &from,
            &owner,
            &change.dead,
            &change.counter,
            &self.shard,
            &self.sql.channel,
            &kind,
            &value,
            &meta,
            &value_ttl,
            &!terminal,
        ];
        // A progress note is recovered by the lease after a server crash; an end (and its value) must be durable.
        let pool = if terminal { &self.pool } else { &self.fast };
        let applied = !self
            .try_query_on(pool, &self.sql.transition, &params)
            .await
            .map_err(|f| self.failed(f))?
            .is_empty();
        if applied {
            // The notification reaches this process too; waking local followers now saves its round trip.
            self.hub.poke(ref_id);
            if terminal {
                self.notify_after(ref_id, "end");
            }
        }
        Ok(applied)
    }

    /// pending → processing for a held task, counting a delivery. Answers the deliveries so far, or `None` when
    /// the row refuses (not this process's any more, finished, gone, or out of deliveries).
    pub(super) async fn claim(
        &self,
        ref_id: &RefId,
        info: &TaskInfo,
    ) -> Result<Option<i32>, BackendError> {
        let info_json = serde_json::to_string(info).expect("a TaskInfo serializes");
        let Some(deliveries) = self.start_row(ref_id, info_json).await? else {
            return Ok(None);
        };
        self.start_hub.poke(ref_id);
        self.notify_after(ref_id, "start");
        Ok(Some(deliveries))
    }

    /// When a held task could not start because it was delivered `max_deliveries` times already: how many.
    pub(super) async fn dead_on_arrival(
        &self,
        ref_id: &RefId,
    ) -> Result<Option<i32>, BackendError> {
        let rows = self
            .query(&self.sql.start_refused, &[&ref_id.as_str()])
            .await?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let status = parse_status(row.get(0));
        let owner: Option<&str> = row.get(1);
        let deliveries: i32 = row.get(2);
        let max = i64::from(self.config.max_deliveries);
        Ok((status.is_some_and(|s| !s.is_terminal())
            && owner == Some(self.consumer.as_str())
            && i64::from(deliveries) >= max)
            .then_some(deliveries))
    }

    /// Takes one from a cluster-wide counter (a count made ahead of what then did not happen).
    pub(super) async fn uncount(&self, counter: &str) -> Result<(), BackendError> {
        self.execute(&self.sql.uncount, &[&counter, &self.shard])
            .await
            .map(drop)
    }

    /// Adds one to a cluster-wide counter.
    pub(super) async fn count(&self, counter: &str) -> Result<(), BackendError> {
        self.execute(&self.sql.count, &[&counter, &self.shard])
            .await
            .map(drop)
    }

    /// After an `end` or `drop` hint: reads the row, and stops the task held here (and drops its near-cache
    /// value) only if the row says it is finished or gone.
    pub(crate) async fn check_row(self: &Arc<Self>, ref_id: &RefId, key: Option<&CacheKey>) {
        let ids = vec![ref_id.as_str()];
        let Ok(rows) = self.query(&self.sql.statuses, &[&ids]).await else {
            return;
        };
        match rows.first().and_then(|r| parse_status(r.get(1))) {
            None => {
                if let Some(key) = key {
                    self.near.invalidate_if_ref(key, ref_id).await;
                }
                self.stop_held(ref_id);
            }
            Some(status) if status.is_terminal() => self.stop_held(ref_id),
            Some(_) => {}
        }
    }

    /// Fails a task whose spec cannot be read, so that it costs only itself.
    pub(super) async fn fail_unreadable(&self, ref_id: &RefId) {
        let (status, mut info) = match self.read(ref_id).await {
            Ok(Some(found)) => found,
            Ok(None) => return,
            Err(_) => (
                TaskStatus::Pending,
                TaskInfo::new(ref_id.clone(), "unknown", "unknown"),
            ),
        };
        info.status = TaskStatus::Failed;
        info.finished_at = Some(Timestamp::now());
        info.error = Some(
            TaskError::new("the task's spec in Postgres is unreadable (written by something other than refcache?)")
                .with_code("CORRUPT_TASK")
                .permanent(),
        );
        let change = Transition {
            from: &[status, TaskStatus::Pending, TaskStatus::Processing],
            owner: false,
            counter: "",
            dead: false,
            value: None,
        };
        let _ = self.transition(ref_id, &info, change).await;
    }
}
