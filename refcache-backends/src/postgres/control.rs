//! Changing a task from outside: cancel, delete (one or many: a session's end, a cleanup), retry, and shutdown.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use refcache_core::{
    BackendError, CacheKey, CancelOutcome, RefId, RetryOutcome, TaskInfo, TaskSpec, TaskStatus,
    Timestamp,
};
use tokio_postgres::Row;
use tokio_postgres::error::SqlState;

use super::codec::parse_status;
use super::config::Mode;
use super::inner::{Inner, ms_i64};
use super::transition::Transition;

impl Inner {
    /// Cancels a pending or processing task (compare-and-set against concurrent changes).
    pub(super) async fn cancel_with(
        self: &Arc<Self>,
        ref_id: &RefId,
        note: Option<&str>,
    ) -> Result<CancelOutcome, BackendError> {
        for _ in 0..16 {
            let Some((status, mut info)) = self.read(ref_id).await? else {
                return Ok(CancelOutcome::NotFound);
            };
            match status {
                TaskStatus::Cancelled => return Ok(CancelOutcome::Cancelled),
                TaskStatus::Complete | TaskStatus::Failed => {
                    return Ok(CancelOutcome::AlreadyFinished(status));
                }
                _ => {}
            }
            info.status = TaskStatus::Cancelled;
            info.finished_at = Some(Timestamp::now());
            info.queue_position = None;
            if let Some(note) = note {
                info.status_message = Some(note.to_owned());
            }
            let change = Transition {
                from: &[status],
                owner: false,
                counter: "cancellations",
                dead: false,
                value: None,
            };
            if self.transition(ref_id, &info, change).await? {
                tracing::debug!(%ref_id, "task cancelled");
                self.stop_held(ref_id);
                return Ok(CancelOutcome::Cancelled);
            }
        }
        Err(BackendError::Other(format!(
            "could not cancel {ref_id}: its record kept changing"
        )))
    }

    pub(super) async fn delete(self: &Arc<Self>, ref_id: &RefId) -> Result<bool, BackendError> {
        let rows = self
            .query(&self.sql.delete, &[&ref_id.as_str(), &self.sql.channel])
            .await?;
        let Some(row) = rows.first() else {
            return Ok(false);
        };
        if let Some(key) = CacheKey::from_hex(row.get(0)) {
            self.near.invalidate_if_ref(&key, ref_id).await;
        }
        self.stop_held(ref_id);
        self.hub.forget_settled(ref_id);
        self.hub.poke(ref_id);
        Ok(true)
    }

    /// Rows of deleted records (`ref_id`, `cache_key`): their near-cache values go, their tasks held here stop.
    pub(super) async fn dropped(self: &Arc<Self>, rows: &[Row]) {
        for row in rows {
            let Ok(ref_id) = RefId::parse(row.get::<_, &str>(0)) else {
                continue;
            };
            if let Some(key) = CacheKey::from_hex(row.get(1)) {
                self.near.invalidate_if_ref(&key, &ref_id).await;
            }
            self.stop_held(&ref_id);
            self.hub.forget_settled(&ref_id);
            self.hub.poke(&ref_id);
        }
    }

    pub(super) async fn retry(
        self: &Arc<Self>,
        ref_id: &RefId,
    ) -> Result<RetryOutcome, BackendError> {
        let rows = self.query(&self.sql.spec_info, &[&ref_id.as_str()]).await?;
        let Some(row) = rows.first() else {
            return Ok(RetryOutcome::NotFound);
        };
        let status = parse_status(row.get(0))
            .ok_or_else(|| self.corrupt("task status", row.get::<_, &str>(0)))?;
        if status != TaskStatus::Failed {
            return Ok(RetryOutcome::NotFailed(status));
        }
        let spec: TaskSpec =
            serde_json::from_str(row.get(1)).map_err(|e| self.corrupt("task spec", e))?;
        let mut info: TaskInfo =
            serde_json::from_str(row.get(2)).map_err(|e| self.corrupt("task record", e))?;
        let registered = refcache_core::registry::find(&spec.task_name).is_some();
        // To the workers when one can run it by name; else here, as it ran the first time.
        let workers = self.config.mode == Mode::Workers && registered;
        let job = self.reruns.get(ref_id);
        if !workers && job.is_none() && !registered {
            return Err(BackendError::Other(format!(
                "cannot retry {ref_id} in this process: task `{}` did not fail here and is not registered by name \
                 (a method, or a function with skipped parameters); retry it on the replica that ran it, or call it \
                 again",
                spec.task_name
            )));
        }
        info.status = TaskStatus::Pending;
        info.error = None;
        info.finished_at = None;
        info.status_message = None;
        info.progress = None;
        info.retry_count += 1;
        let info_json = serde_json::to_string(&info).expect("a TaskInfo serializes");
        let owner: Option<&str> = (!workers).then_some(self.consumer.as_str());
        let answer = self
            .try_query(
                &self.sql.retry,
                &[
                    &ref_id.as_str(),
                    &info_json,
                    &workers,
                    &owner,
                    &ms_i64(self.config.lease),
                    &self.shard,
                    &self.sql.channel,
                ],
            )
            .await;
        match answer {
            Ok(rows) if !rows.is_empty() => {
                tracing::debug!(%ref_id, task = %spec.task_name, "failed task retried");
                self.hub.forget_settled(ref_id);
                self.hub.poke(ref_id);
                if !workers {
                    self.hold(Arc::new(spec), job, Some(info));
                }
                Ok(RetryOutcome::Restarted)
            }
            // Changed meanwhile: say what it is now.
            Ok(_) => Ok(match self.read(ref_id).await? {
                Some((status, _)) => RetryOutcome::NotFailed(status),
                None => RetryOutcome::NotFound,
            }),
            // The same call is in flight under another ref id (the in-flight index refused a second one).
            Err(fail) if fail.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                let rows = self
                    .query(&self.sql.in_flight, &[&spec.key.to_hex()])
                    .await?;
                let running = match rows.first() {
                    Some(row) => RefId::parse(row.get::<_, &str>(0))
                        .map_err(|e| self.corrupt("in-flight task", e))?,
                    None => {
                        return Err(BackendError::Other(format!(
                            "could not retry {ref_id}: the same call was in flight and has just ended; retry again"
                        )));
                    }
                };
                // Its submission may not be durable yet (an insert commits asynchronously until its `submit`
                // answers): the ref goes to the caller only once a durable commit has seen its row.
                if self.confirm_row(&running).await? {
                    Ok(RetryOutcome::AlreadyRunning(running))
                } else {
                    Err(BackendError::Other(format!(
                        "could not retry {ref_id}: the same call was in flight and is gone now; retry again"
                    )))
                }
            }
            Err(fail) => Err(self.failed(fail)),
        }
    }

    pub(super) async fn shutdown(self: &Arc<Self>, deadline: Duration) {
        self.accepting.store(false, Ordering::Release);
        self.consuming.cancel();
        self.admit_now();
        tracing::debug!(consumer = %self.consumer, "postgres backend shutting down");
        let until = tokio::time::Instant::now() + deadline;
        if self.wait_idle(until).await {
            return;
        }
        for ref_id in self.held_refs() {
            if let Err(err) = self.cancel_with(&ref_id, Some("shutdown")).await {
                tracing::warn!(%ref_id, %err, "could not record the cancel of a task at shutdown");
            }
            self.stop_held(&ref_id);
        }
        self.wait_idle(
            tokio::time::Instant::now() + self.config.cancel_grace + Duration::from_secs(1),
        )
        .await;
    }
}
