//! The submit path: a submission (single-flight on the in-flight index, the queue bound) and the lookup of a
//! finished value beyond the near cache.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, UNIX_EPOCH};

use refcache_core::{
    BackendError, CacheKey, RefId, StoredValue, Submission, Submitted, TaskInfo, TaskSnapshot,
    TaskStatus, Timestamp,
};

use super::batch::PendingInsert;
use super::codec::{decode_value, parse_status};
use super::config::Mode;
use super::hub::Follower;
use super::inner::{Inner, now_ms};

impl Inner {
    pub(super) async fn submit(
        self: &Arc<Self>,
        submission: Submission,
    ) -> Result<Submitted, BackendError> {
        let Submission { spec, job, .. } = submission;
        let created = now_ms();
        let mut info = TaskInfo::new(
            spec.ref_id.clone(),
            spec.task_name.clone(),
            spec.namespace.clone(),
        );
        // Whole milliseconds, as the record stores them: lists order by this.
        info.created_at = Timestamp(UNIX_EPOCH + Duration::from_millis(created));
        info.session_id = spec.options.session_id.clone();
        info.policy = spec.policy.clone();
        info.max_retries = spec.options.max_retries;
        // In `workers` mode a task goes to the workers, unless no worker could run it: a method or a function with
        // skipped parameters is not registered by name, so it runs here, as in `local` mode.
        let workers = self.config.mode == Mode::Workers
            && (job.is_none() || refcache_core::registry::find(&spec.task_name).is_some());
        let owner: Option<&str> = (!workers).then_some(self.consumer.as_str());
        // Held here with a run slot free and nothing queued before it (and no `max_concurrent`: that scheduler's
        // path keeps its own start): the slot is reserved now and the row inserted started, so that the task needs
        // no start statement. The record is the one its start would have written.
        let slot = if workers {
            None
        } else {
            self.reserve_slot(&spec.task_name, spec.options.max_concurrent)
        };
        if slot.is_some() {
            info.status = TaskStatus::Processing;
            info.started_at = Some(Timestamp::now());
            info.queue_position = None;
        }
        let info_json = serde_json::to_string(&info).expect("a TaskInfo serializes");
        let spec_json = serde_json::to_string(&spec).expect("a TaskSpec serializes");
        let key = spec.key.to_hex();
        let created = i64::try_from(created).unwrap_or(i64::MAX);
        let max_queued = i64::try_from(self.config.max_queued).unwrap_or(i64::MAX);
        let ref_id = spec.ref_id.clone();
        // Followed before the row exists: a task started at its insert can end (or be cancelled or deleted by
        // another replica) at once, and its end is what makes a fast task's submission durable.
        let mut follower = self.hub.follow(&ref_id);
        for _ in 0..8 {
            // Single-flight: the in-flight index admits one row per key; a refused insert joins the row there.
            let inserted = self
                .insert(PendingInsert {
                    ref_id: spec.ref_id.as_str().to_owned(),
                    key: key.clone(),
                    info: info_json.clone(),
                    spec: spec_json.clone(),
                    task_name: spec.task_name.to_string(),
                    namespace: spec.namespace.to_string(),
                    session_id: spec.options.session_id.clone(),
                    priority: spec.options.priority,
                    created_ms: created,
                    queued: workers,
                    owner: owner.map(str::to_owned),
                    started: slot.is_some(),
                })
                .await?;
            let Some((seq, landed)) = inserted else {
                let current = self.query(&self.sql.join, &[&key, &self.shard]).await?;
                match current.first() {
                    Some(row) => {
                        return RefId::parse(row.get::<_, &str>(0))
                            .map(Submitted::Joined)
                            .map_err(|e| self.corrupt("in-flight task", e));
                    }
                    // It ended between the insert and this read: start over.
                    None => continue,
                }
            };
            // The queue's length is bounded above by the sequence numbers (from this process's lower bound of the
            // oldest waiting one, read again only when that bound is over the limit), and counted exactly only
            // when the fresh bound is over it too.
            let full = seq - self.oldest_pending.load(Ordering::Relaxed) + 1 > max_queued && {
                let oldest: Option<i64> = self
                    .query(&self.sql.oldest_pending, &[])
                    .await?
                    .first()
                    .and_then(|r| r.get(0));
                let oldest = oldest.unwrap_or(seq);
                self.oldest_pending.fetch_max(oldest, Ordering::Relaxed);
                seq - oldest + 1 > max_queued && {
                    let waiting: i64 = self
                        .query(&self.sql.count_pending, &[&max_queued])
                        .await?
                        .first()
                        .map_or(0, |r| r.get(0));
                    waiting > max_queued
                }
            };
            // A row inserted started that `withdraw` could not take back is finished or gone (another replica
            // cancelled or deleted it): it does not run, as its start statement would have refused it.
            let mut refused = false;
            if landed.is_some() || full {
                // Also a row inserted started here (not yet held: nothing runs it), its execution uncounted.
                let withdrawn = !self
                    .query(
                        &self.sql.withdraw,
                        &[
                            &spec.ref_id.as_str(),
                            &self.sql.channel,
                            &self.consumer,
                            &self.shard,
                        ],
                    )
                    .await?
                    .is_empty();
                if withdrawn && full {
                    return Err(BackendError::QueueFull {
                        max_queued: self.config.max_queued,
                    });
                }
                if withdrawn {
                    if let Some(value) = self.lookup(&spec.key).await? {
                        return Ok(Submitted::Hit(value));
                    }
                    continue;
                }
                // A worker started it already: it runs, once, as a fresh execution of the call.
                refused = slot.is_some();
            }
            if workers {
                self.notify_after(&ref_id, "queued");
            } else if let Some(slot) = slot {
                // A hint about the row since its insert (another replica cancelled or deleted it; nothing else
                // changes a row owned here) that came before the task is held here would not stop it: the row
                // decides then, as the start statement would.
                let changed = follower.rx().has_changed().unwrap_or(true);
                let runs = !refused
                    && (!changed
                        || matches!(self.status(&ref_id).await, Ok(Some(s)) if !s.is_terminal()));
                // A hint that comes after the check above and before the task is in `held` finds it not held
                // (`on_hint` reads the row only for a task held here): its poke is seen under the run lock once
                // the task is held, and the row is read before the job runs.
                let rx = follower.rx();
                let held = runs
                    && self.hold_started(Arc::new(spec), job, info, slot, || {
                        rx.has_changed().unwrap_or(true)
                    });
                if !held {
                    tracing::debug!(%ref_id, "a task inserted started was changed before it was held: not run");
                    // Its insert counted an execution that never happens.
                    if let Err(err) = self.uncount("executions").await {
                        tracing::debug!(%ref_id, %err, "refcache: an execution could not be uncounted");
                    }
                }
            } else {
                self.hold(Arc::new(spec), job, Some(info));
            }
            if let Some((settled, forgets)) = self.made_durable(&ref_id, &mut follower).await?
                && settled.value.as_ref().is_none_or(|v| {
                    i64::try_from(v.size).is_ok_and(|n| n <= super::batch::READ_VALUE_BYTES)
                })
            {
                // The end, as this process wrote it (or read it), for the `wait` that usually follows (see
                // `Inner::wait`), unless its kept end was forgotten since it was taken (a deletion, a retry).
                let rx = follower.rx();
                self.hub
                    .keep_settled(ref_id.clone(), settled, super::poll::SETTLED_FRESH, || {
                        rx.borrow().forgets == forgets
                    });
            }
            return Ok(Submitted::Started(ref_id));
        }
        Err(BackendError::Other(format!(
            "could not submit {}: the call's state kept changing",
            spec.ref_id
        )))
    }

    /// Returns once the submission of `ref_id` (its insert committed asynchronously, without waiting for a WAL
    /// flush) survives a server crash, so that a reference handed to a caller never dangles:
    ///
    /// - when its task has ended within the grace ([`durable_grace`](super::config::PostgresConfig::durable_grace),
    ///   20 ms by default: a fast task): every terminal status is written by a durable commit, which PostgreSQL
    ///   makes visible only once its WAL is flushed, and the submission's commit is older; the task's row read as
    ///   finished proves both. One flush for the whole task, its end's.
    /// - else by a confirmation of its own (`Sql::confirm`, shared with the others due meanwhile): a durable
    ///   commit that sees the row. No row: the submission was lost (the server crashed or restarted before any
    ///   flush covered it), or the task was deleted meanwhile; the caller is told so, and never gets the ref.
    ///
    /// Meanwhile the task runs (it is queued or held already), so a crash in this window can lose a submission
    /// whose task had started: the caller got an error, and the task's end, refused by the missing row, is lost.
    ///
    /// A task that ended in this process settles its follower with the end it wrote ([`Hub::settle`]): its end
    /// statement applied and committed durably (the durable pool answers only after the flush), which proves the
    /// same as the row read finished, without reading it. That end (or the finished row read here, with its value)
    /// is answered, for the caller's `wait`; `None` when the row was confirmed (not finished yet) or the read did
    /// not bring everything a `wait` answers.
    ///
    /// [`Hub::settle`]: super::hub::Hub::settle
    async fn made_durable(
        &self,
        ref_id: &RefId,
        follower: &mut Follower,
    ) -> Result<Option<(Arc<TaskSnapshot>, u64)>, BackendError> {
        let grace = tokio::time::sleep(self.config.durable_grace);
        tokio::pin!(grace);
        loop {
            tokio::select! {
                biased;
                () = &mut grace => break,
                changed = follower.rx().changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let (settled, forgets) = {
                        let signal = follower.rx().borrow_and_update();
                        (signal.settled.clone(), signal.forgets)
                    };
                    if let Some(settled) = settled {
                        return Ok(Some((settled, forgets)));
                    }
                    // A hint is only a hint: the row decides. A read that fails leaves it to the confirmation.
                    match self.read_row(ref_id).await {
                        Ok(Some(row)) if parse_status(&row.status).is_some_and(TaskStatus::is_terminal) => {
                            // Ended elsewhere (a worker): what was just read answers the caller's `wait` too,
                            // when it needs no read of its own (a value too large to come along is left to it).
                            let whole = row.value.is_some() || row.status != "complete";
                            return Ok(if whole {
                                self.finished_snapshot(ref_id, &row)
                                    .await
                                    .ok()
                                    .flatten()
                                    .map(|s| (Arc::new(s), forgets))
                            } else {
                                None
                            });
                        }
                        Ok(_) => {}
                        Err(_) => break,
                    }
                }
            }
        }
        if self.confirm_row(ref_id).await? {
            return Ok(None);
        }
        Err(BackendError::Unavailable(format!(
            "the submission of {ref_id} is gone before it was confirmed durable: Postgres at {} restarted before \
             any flush covered it (call again), or the task was deleted meanwhile (by `delete`, `end_session` or \
             `cleanup`; then nothing is to be run again)",
            self.url()
        )))
    }

    pub(super) async fn lookup(
        &self,
        key: &CacheKey,
    ) -> Result<Option<Arc<StoredValue>>, BackendError> {
        let rows = self.query(&self.sql.value_by_key, &[&key.to_hex()]).await?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let stored = decode_value(row.get(1), row.get(2)).map_err(|e| self.corrupt("value", e))?;
        Ok(self.keep_near(stored).await)
    }
}
