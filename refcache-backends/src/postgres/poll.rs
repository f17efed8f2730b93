//! The read path: a task's status, its record, its value (the near cache first), and the bodies of `wait` and `watch`.

use std::collections::HashSet;
use std::sync::Arc;

use refcache_core::{
    BackendError, CacheKey, RefId, StoredValue, TaskInfo, TaskSnapshot, TaskStatus,
};
use tokio::sync::watch;

use super::batch::ReadRow;
use super::codec::{decode_value, parse_status, with_question};
use super::inner::Inner;

/// How long an end settled here answers a `wait` without a read of the row (see [`Inner::wait`]).
pub(super) const SETTLED_FRESH: std::time::Duration = std::time::Duration::from_secs(1);

impl Inner {
    /// The task's status and record (however old), without its value.
    pub(super) async fn read(
        &self,
        ref_id: &RefId,
    ) -> Result<Option<(TaskStatus, TaskInfo)>, BackendError> {
        let rows = self.query(&self.sql.info_only, &[&ref_id.as_str()]).await?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        self.decode_record(row.get(0), row.get(1), row.get(4))
            .map(Some)
    }

    /// A record from its columns: its status (authoritative), its JSON, and its question (shown only while the
    /// task waits on it).
    fn decode_record(
        &self,
        status: &str,
        info: &str,
        question: Option<&str>,
    ) -> Result<(TaskStatus, TaskInfo), BackendError> {
        let status = parse_status(status).ok_or_else(|| self.corrupt("task status", status))?;
        let mut info: TaskInfo =
            serde_json::from_str(info).map_err(|e| self.corrupt("task record", e))?;
        info.status = status;
        with_question(&mut info, question);
        Ok((status, info))
    }

    /// The task's status alone (`None`: unknown or expired).
    pub(super) async fn status(&self, ref_id: &RefId) -> Result<Option<TaskStatus>, BackendError> {
        let rows = self.query(&self.sql.status, &[&ref_id.as_str()]).await?;
        Ok(rows.first().and_then(|r| parse_status(r.get(0))))
    }

    /// Which of `refs` are still in flight.
    pub(super) async fn live_statuses(
        &self,
        refs: &[RefId],
    ) -> Result<HashSet<RefId>, BackendError> {
        let ids: Vec<&str> = refs.iter().map(RefId::as_str).collect();
        let rows = self.query(&self.sql.statuses, &[&ids]).await?;
        Ok(rows
            .iter()
            .filter(|r| parse_status(r.get(1)).is_some_and(|s| !s.is_terminal()))
            .filter_map(|r| RefId::parse(r.get::<_, &str>(0)).ok())
            .collect())
    }

    pub(super) async fn get(&self, ref_id: &RefId) -> Result<Option<TaskSnapshot>, BackendError> {
        self.get_with(ref_id, true).await
    }

    /// The record, and with `value` the value of a complete task; without it, a complete record is checked for a
    /// live value (one lifetime) without reading the value.
    pub(super) async fn get_with(
        &self,
        ref_id: &RefId,
        value: bool,
    ) -> Result<Option<TaskSnapshot>, BackendError> {
        let rows = self.query(&self.sql.record, &[&ref_id.as_str()]).await?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let (status, mut info) = self.decode_record(row.get(0), row.get(1), row.get(4))?;
        let position: Option<i64> = row.get(3);
        info.queue_position = position.and_then(|p| usize::try_from(p).ok());
        if status != TaskStatus::Complete {
            return Ok(Some(TaskSnapshot::new(info, None)));
        }
        if !value {
            let live = self
                .query(&self.sql.value_exists, &[&ref_id.as_str()])
                .await?;
            return Ok((!live.is_empty()).then(|| TaskSnapshot::new(info, None)));
        }
        let key = CacheKey::from_hex(row.get(2));
        // The value by a query of its own, after the record: a complete record whose value has gone is gone.
        match self.value_of(ref_id, key.as_ref()).await? {
            Some(value) => Ok(Some(TaskSnapshot::new(info, Some(value)))),
            None => Ok(None),
        }
    }

    /// A complete task's value: the near cache's copy, or a read of its row.
    pub(super) async fn value_of(
        &self,
        ref_id: &RefId,
        key: Option<&CacheKey>,
    ) -> Result<Option<Arc<StoredValue>>, BackendError> {
        if let Some(key) = key
            && let Some(near) = self.near.get(key).await
            && near.ref_id == *ref_id
            && near.is_live()
        {
            return Ok(Some(near));
        }
        let rows = self
            .query(&self.sql.value_by_ref, &[&ref_id.as_str()])
            .await?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let stored = decode_value(row.get(0), row.get(1)).map_err(|e| self.corrupt("value", e))?;
        Ok(self.keep_near(stored).await)
    }

    /// A value read from its row, kept in the near cache; `None` when it is no longer live by this process's
    /// clock ([`StoredValue::is_live`], its `created_at` and TTL), as `lookup` judges it. The row's `expires_at`
    /// is the server's `now()` at the end statement, a few milliseconds later than the `created_at` taken here
    /// before it: without this, a `get` in those milliseconds answered a complete record whose value a `lookup`
    /// had just called gone (one lifetime broken; `a_record_and_its_value_have_one_lifetime` failed 1 run in 3).
    pub(super) async fn keep_near(&self, stored: StoredValue) -> Option<Arc<StoredValue>> {
        if !stored.is_live() {
            return None;
        }
        let stored = Arc::new(stored);
        if self.near.fits(&stored) {
            self.near.insert(stored.clone()).await;
        }
        Some(stored)
    }

    /// A finished task's snapshot from a waiter's read, as [`Inner::get`] answers it: the record, and a complete
    /// one with its live value (the one read along, else the near cache's copy or a read of its own), or `None`
    /// when that value has gone. `None` too for a task still in flight.
    pub(super) async fn finished_snapshot(
        &self,
        ref_id: &RefId,
        row: &ReadRow,
    ) -> Result<Option<TaskSnapshot>, BackendError> {
        let (status, mut info) =
            self.decode_record(&row.status, &row.info, row.question.as_deref())?;
        if !status.is_terminal() {
            return Ok(None);
        }
        info.queue_position = None;
        if status != TaskStatus::Complete {
            return Ok(Some(TaskSnapshot::new(info, None)));
        }
        if !row.has_value {
            return Ok(None);
        }
        let value = match &row.value {
            Some((value, meta)) => {
                let stored = decode_value(value, meta).map_err(|e| self.corrupt("value", e))?;
                self.keep_near(stored).await
            }
            None => {
                self.value_of(ref_id, CacheKey::from_hex(&row.key).as_ref())
                    .await?
            }
        };
        Ok(value.map(|value| TaskSnapshot::new(info, Some(value))))
    }

    /// The body of `TaskBackend::wait`.
    pub(super) async fn wait(
        &self,
        ref_id: &RefId,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<Option<TaskSnapshot>, BackendError> {
        let inner = self;
        // A task this process submitted that ended within its submission (`Inner::made_durable`): its end, as the
        // end statement wrote it here (or as the submission read it, ended by a worker), answers the first `wait`
        // for it without a read, while it is fresh (a second) and its value live. That is what a read would
        // answer, unless another replica changed the row since: a finished row changes only by `retry` (a failed
        // task runs again), `delete`, `end_session`, `cleanup` or expiry. Such a `wait` answers the end as it was,
        // as a `wait` that began before that change would have; a deletion or retry made here or heard of here
        // (its `drop`, `change` or `queued` hint) forgets the kept end, so only a `wait` within the hint's delay
        // after it answers the end. `get` (a poll) always reads the row.
        if let Some(settled) = inner
            .hub
            .take_settled(ref_id, SETTLED_FRESH.min(inner.config.task_ttl))
            && settled
                .value
                .as_ref()
                .is_none_or(|v| v.is_live() && !v.is_revoked())
        {
            return Ok(Some((*settled).clone()));
        }
        // Follow first, then read: a change in between wakes the follower. Each wake reads the record (without
        // its queue position, which costs a count of the tasks ahead) with the reads of the other waiters of this
        // process, in one statement, and a finished task's small value with it: a waiter's end costs no read of
        // its own. A waiter that gives up (its deadline) reads the whole snapshot.
        let mut follower = inner.hub.follow(ref_id);
        loop {
            let Some(row) = inner.read_row(ref_id).await? else {
                // Unknown, or expired.
                return Ok(None);
            };
            if parse_status(&row.status).is_none_or(|s| s.is_terminal()) {
                return inner.finished_snapshot(ref_id, &row).await;
            }
            // A hint can be lost (a process killed between its commit and its hint): the record is read again
            // once per lease even without one.
            let recheck = tokio::time::Instant::now() + inner.config.lease;
            let until = deadline.map_or(recheck, |d| d.min(recheck));
            match tokio::time::timeout_at(until, follower.rx().changed()).await {
                Ok(Ok(())) => {
                    follower.rx().borrow_and_update();
                }
                Err(_) if deadline.is_none_or(|d| tokio::time::Instant::now() < d) => {}
                // The deadline passed (or the hub went away): answer with what is there now.
                _ => return inner.get(ref_id).await,
            }
        }
    }

    /// The body of `TaskBackend::watch`.
    pub(super) async fn watch(
        self: &Arc<Self>,
        ref_id: &RefId,
    ) -> Result<Option<watch::Receiver<TaskInfo>>, BackendError> {
        let inner = self.clone();
        let mut follower = inner.hub.follow(ref_id);
        // Starts too (a waiter for the end does not follow them).
        let mut starts = inner.start_hub.follow(ref_id);
        let Some(snapshot) = inner.get(ref_id).await? else {
            return Ok(None);
        };
        if snapshot.info.status.is_terminal() {
            return Ok(None);
        }
        let (tx, rx) = watch::channel(snapshot.info);
        let ref_id = ref_id.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = tx.closed() => return,
                    changed = follower.rx().changed() => {
                        if changed.is_err() {
                            return;
                        }
                    }
                    changed = starts.rx().changed() => {
                        if changed.is_err() {
                            return;
                        }
                    }
                    // A hint can be lost: read again once per lease even without one.
                    () = tokio::time::sleep(inner.config.lease) => {}
                }
                follower.rx().borrow_and_update();
                starts.rx().borrow_and_update();
                let info = match inner.get(&ref_id).await {
                    Ok(Some(s)) => s.info,
                    Ok(None) => return,
                    Err(_) => continue,
                };
                let done = info.status.is_terminal();
                tx.send_replace(info);
                if done {
                    return;
                }
            }
        });
        Ok(Some(rx))
    }
}
