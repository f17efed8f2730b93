//! Changing tasks: the `transition` script that every state change goes through, cancel, delete, retry, ending a
//! session, cleanup, stats and shutdown.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use redis::AsyncCommands;
use refcache_core::{
    BackendError, BackendStats, CacheKey, CancelOutcome, RefId, RetryOutcome, StoredValue,
    TaskInfo, TaskSpec, TaskStatus, Timestamp,
};

use super::config::Mode;
use super::events::Event;
use super::list::LIST_SCAN;
use super::state::{Inner, RedisTaskBackend, lock, ms, now_ms, parse_status};
use super::submit::priority_hex;
use super::worker;

impl Inner {
    /// Runs the `transition` script. `owner`: only if the task is still this consumer's.
    pub(crate) async fn transition(
        &self,
        ref_id: &RefId,
        from: &[TaskStatus],
        info: &TaskInfo,
        counter: &str,
        owner: bool,
        value: Option<&StoredValue>,
    ) -> Result<String, BackendError> {
        self.transition_acking(ref_id, from, info, counter, owner, value, None)
            .await
    }

    /// [`transition`](Self::transition), and when it answers `ok`, the task's stream entry `ack` acknowledged and
    /// deleted in the same script (a worker's end: one round trip instead of two).
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn transition_acking(
        &self,
        ref_id: &RefId,
        from: &[TaskStatus],
        info: &TaskInfo,
        counter: &str,
        owner: bool,
        value: Option<&StoredValue>,
        ack: Option<&str>,
    ) -> Result<String, BackendError> {
        self.run_transition(ref_id, from, info, counter, owner, value, ack, false)
            .await
    }

    /// The `transition` script; `dead`: a terminal change also puts the task on the dead-letter list, in the same
    /// step.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn run_transition(
        &self,
        ref_id: &RefId,
        from: &[TaskStatus],
        info: &TaskInfo,
        counter: &str,
        owner: bool,
        value: Option<&StoredValue>,
        ack: Option<&str>,
        dead: bool,
    ) -> Result<String, BackendError> {
        let from = from.iter().fold(",".to_owned(), |mut s, st| {
            s.push_str(st.as_str());
            s.push(',');
            s
        });
        let info_json = serde_json::to_string(info).expect("a TaskInfo serializes");
        // One lifetime: a complete record stays at least as long as its value.
        let record_ttl = value.map_or(self.config.task_ttl, |v| self.config.task_ttl.max(v.ttl));
        let (value_json, value_ttl) = match value {
            Some(v) => (
                serde_json::to_string(v).expect("a StoredValue serializes"),
                ms(v.ttl),
            ),
            None => (String::new(), 0),
        };
        let mut conn = self.conn();
        self.scripts
            .transition
            .arg(self.keys.prefix())
            .arg(ref_id.as_str())
            .arg(from)
            .arg(info.status.as_str())
            .arg(&info_json)
            .arg(ms(record_ttl))
            .arg(now_ms())
            .arg(counter)
            .arg(if owner { self.consumer.as_str() } else { "" })
            .arg(value_json)
            .arg(value_ttl)
            .arg(ack.unwrap_or(""))
            .arg(if dead { "1" } else { "" })
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.unavailable(&e))
    }

    /// Cancels a pending or processing task (compare-and-set against concurrent changes).
    pub(super) async fn cancel_with(
        &self,
        ref_id: &RefId,
        note: Option<&str>,
    ) -> Result<CancelOutcome, BackendError> {
        for _ in 0..16 {
            let Some(mut info) = self.read(ref_id).await? else {
                return Ok(CancelOutcome::NotFound);
            };
            match info.status {
                TaskStatus::Cancelled => return Ok(CancelOutcome::Cancelled),
                TaskStatus::Complete | TaskStatus::Failed => {
                    return Ok(CancelOutcome::AlreadyFinished(info.status));
                }
                _ => {}
            }
            let from = info.status;
            info.status = TaskStatus::Cancelled;
            info.finished_at = Some(Timestamp::now());
            info.queue_position = None;
            info.input_request = None;
            if let Some(note) = note {
                info.status_message = Some(note.to_owned());
            }
            if self
                .transition(ref_id, &[from], &info, "cancellations", false, None)
                .await?
                == "ok"
            {
                tracing::debug!(%ref_id, "task cancelled");
                return Ok(CancelOutcome::Cancelled);
            }
        }
        Err(BackendError::Other(format!(
            "could not cancel {ref_id}: its record kept changing"
        )))
    }
}

impl Inner {
    pub(super) async fn delete(self: &Arc<Self>, ref_id: &RefId) -> Result<bool, BackendError> {
        let mut conn = self.conn();
        let key: Option<String> = conn
            .hget(self.keys.task(ref_id), "key")
            .await
            .map_err(|e| self.unavailable(&e))?;
        let Some(key) = key.and_then(|k| CacheKey::from_hex(&k)) else {
            return Ok(false);
        };
        let deleted: i64 = self
            .scripts
            .delete
            .arg(self.keys.prefix())
            .arg(ref_id.as_str())
            .arg(Event::drop(ref_id, &key))
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.unavailable(&e))?;
        self.near.invalidate_if_ref(&key, ref_id).await;
        self.stop_held(ref_id);
        Ok(deleted == 1)
    }

    pub(super) async fn retry(
        self: &Arc<Self>,
        ref_id: &RefId,
    ) -> Result<RetryOutcome, BackendError> {
        let mut conn = self.conn();
        let (spec, info): (Option<String>, Option<String>) = conn
            .hmget(self.keys.task(ref_id), &["spec", "info"])
            .await
            .map_err(|e| self.unavailable(&e))?;
        let (Some(spec), Some(info)) = (spec, info) else {
            return Ok(RetryOutcome::NotFound);
        };
        let spec: TaskSpec =
            serde_json::from_str(&spec).map_err(|e| self.corrupt("task spec", e))?;
        let mut info: TaskInfo =
            serde_json::from_str(&info).map_err(|e| self.corrupt("task record", e))?;
        if info.status != TaskStatus::Failed {
            return Ok(RetryOutcome::NotFailed(info.status));
        }
        let registered = refcache_core::registry::find(&spec.task_name).is_some();
        // Onto the stream when a worker can run it by name; else here, as it ran the first time.
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
        let reply: Vec<String> = self
            .scripts
            .retry
            .arg(self.keys.prefix())
            .arg(ref_id.as_str())
            .arg(&info_json)
            .arg(Event::info(&info))
            .arg(if workers { "1" } else { "0" })
            .arg(priority_hex(spec.options.priority))
            .arg(serde_json::to_string(&spec).expect("a TaskSpec serializes"))
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.unavailable(&e))?;
        match reply.first().map(String::as_str) {
            Some("ok") => {
                tracing::debug!(%ref_id, task = %spec.task_name, "failed task retried");
                if !workers {
                    // Always taken: only a stream entry is refused at shutdown.
                    let _ = self.hold(Arc::new(spec), job, None, false, None);
                }
                Ok(RetryOutcome::Restarted)
            }
            Some("missing") => Ok(RetryOutcome::NotFound),
            Some("not") => Ok(RetryOutcome::NotFailed(parse_status(
                reply.get(1).map_or("", String::as_str),
            ))),
            Some("running") => RefId::parse(reply.get(1).map_or("", String::as_str))
                .map(RetryOutcome::AlreadyRunning)
                .map_err(|e| self.corrupt("in-flight entry", e)),
            other => Err(BackendError::Other(format!(
                "unexpected answer from the retry script: {other:?}"
            ))),
        }
    }

    pub(super) async fn stats(&self) -> Result<BackendStats, BackendError> {
        let mut conn = self.conn();
        let counters: HashMap<String, u64> = conn
            .hgetall(self.keys.stats())
            .await
            .map_err(|e| self.unavailable(&e))?;
        let gauges: HashMap<String, String> = conn
            .hgetall(self.keys.workers())
            .await
            .map_err(|e| self.unavailable(&e))?;
        let queued: u64 = conn
            .zcard(self.keys.pending())
            .await
            .map_err(|e| self.unavailable(&e))?;
        let refs: Vec<String> = conn
            .zrevrange(self.keys.index(), 0, LIST_SCAN - 1)
            .await
            .map_err(|e| self.unavailable(&e))?;
        let mut stats = BackendStats::default();
        for info in self.infos(&refs).await? {
            *stats.by_status.entry(info.status).or_default() += 1;
        }
        let (running, capacity) = {
            let st = lock(&self.run);
            (st.running() as u64, st.capacity() as u64)
        };
        stats.running = running;
        stats.capacity = capacity;
        let live_after = now_ms().saturating_sub(ms(self.config.lease));
        for (consumer, gauge) in gauges {
            if consumer == self.consumer {
                continue;
            }
            if let Ok(g) = serde_json::from_str::<worker::Gauge>(&gauge)
                && g.at >= live_after
            {
                stats.running += g.running;
                stats.capacity += g.capacity;
            }
        }
        stats.queued = queued;
        let c = |name: &str| counters.get(name).copied().unwrap_or(0);
        stats.executions = c("executions");
        stats.coalesced = c("coalesced");
        stats.retries = c("retries");
        stats.cancellations = c("cancellations");
        stats.timeouts = c("timeouts");
        let (records, values, scanned, finished): (u64, u64, u64, u64) = self
            .scripts
            .weigh
            .arg(self.keys.prefix())
            .arg(LIST_SCAN)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.unavailable(&e))?;
        // Exact up to LIST_SCAN finished records; past them, the older ones are taken to weigh what the newest do
        // on average (a bound on a read that holds up Redis).
        let scale = |bytes: u64| {
            if finished > scanned && scanned > 0 {
                u64::try_from(u128::from(bytes) * u128::from(finished) / u128::from(scanned))
                    .unwrap_or(u64::MAX)
            } else {
                bytes
            }
        };
        stats.record_bytes = scale(records);
        stats.value_bytes = scale(values);
        Ok(stats)
    }

    /// Stops taking work and lets running tasks finish until `deadline`. What is left then: a task that came off
    /// the stream (`workers` mode) is handed back to it for another worker, queued ones at once (issue 15); one
    /// that only this process can run (`local` mode, or a closure that is not registered by name) is cancelled
    /// with the message `shutdown`.
    pub(super) async fn shutdown(self: &Arc<Self>, deadline: Duration) {
        self.accepting.store(false, Ordering::Release);
        self.consuming.cancel();
        tracing::debug!(consumer = %self.consumer, "redis backend shutting down");
        let until = tokio::time::Instant::now() + deadline;
        let queued: Vec<_> = {
            let mut st = lock(&self.run);
            st.drain();
            st.entries()
        };
        for (ref_id, msg, running) in queued {
            if !running {
                self.hand_back(&ref_id, &msg).await;
            }
        }
        // The stream consumer finishes the take it has on its way (which may bring entries, or claim one: it
        // gives them back) before this returns: once shut down, this worker takes no more entries. The take ends
        // within its response timeout if Redis is unreachable.
        let consumer = {
            let mut loops = lock(&self.loops);
            if loops.len() > 2 { loops.pop() } else { None }
        };
        if let Some(consumer) = consumer {
            let bound = self.config.command_timeout + Duration::from_secs(3);
            if tokio::time::timeout(bound, consumer).await.is_err() {
                tracing::warn!(consumer = %self.consumer, "the stream consumer did not stop in time");
            }
        }
        if self.wait_idle(until).await {
            return;
        }
        let entries: HashMap<RefId, String> = lock(&self.run)
            .entries()
            .into_iter()
            .map(|(ref_id, msg, _)| (ref_id, msg))
            .collect();
        for ref_id in self.held_refs() {
            if let Some(msg) = entries.get(&ref_id) {
                self.hand_back(&ref_id, msg).await;
                continue;
            }
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

    /// Gives a task held here back to the stream (`hand_back`), then stops it here: its record no longer names
    /// this worker, so nothing it does from now on lands. If Redis cannot be told, the task is left as it is: its
    /// lease runs out when this process is gone, and another worker takes it over then.
    pub(super) async fn hand_back(self: &Arc<Self>, ref_id: &RefId, msg: &str) {
        let info = match self.read(ref_id).await {
            Ok(Some(mut info)) => {
                info.status = TaskStatus::Pending;
                info.started_at = None;
                info.progress = None;
                info.output_line = None;
                info.input_request = None;
                info.updated_at = Timestamp::now();
                info
            }
            Ok(None) => return self.stop_held(ref_id),
            Err(err) => {
                tracing::warn!(%ref_id, %err, "cannot hand a task back at shutdown; its lease will");
                return;
            }
        };
        let info_json = serde_json::to_string(&info).expect("a TaskInfo serializes");
        let mut conn = self.conn();
        let reply: Result<String, _> = self
            .scripts
            .hand_back
            .arg(self.keys.prefix())
            .arg(ref_id.as_str())
            .arg(&self.consumer)
            .arg(&info_json)
            .arg(Event::info(&info))
            .arg(msg)
            .invoke_async(&mut conn)
            .await;
        match reply {
            Ok(answer) if answer == "ok" => {
                tracing::info!(%ref_id, consumer = %self.consumer, "task handed back at shutdown");
                self.stop_held(ref_id);
            }
            // Finished, deleted, or another worker's meanwhile: nothing to hand back; its own end stops it here.
            Ok(answer) => tracing::debug!(%ref_id, answer, "nothing to hand back"),
            Err(err) => {
                tracing::warn!(%ref_id, %err, "cannot hand a task back at shutdown; its lease will");
            }
        }
    }
}

impl RedisTaskBackend {
    /// The body of `TaskBackend::end_session`.
    pub(super) async fn end_session_now(&self, session_id: &str) -> Result<usize, BackendError> {
        let inner = &self.inner;
        inner.ensure_started();
        let mut conn = inner.conn();
        let key = inner.keys.session(session_id);
        let refs: Vec<String> = conn
            .smembers(&key)
            .await
            .map_err(|e| inner.unavailable(&e))?;
        let mut n = 0;
        for r in refs.iter().filter_map(|r| RefId::parse(r).ok()) {
            if inner.delete(&r).await? {
                n += 1;
            }
        }
        let _: () = conn.del(&key).await.map_err(|e| inner.unavailable(&e))?;
        tracing::debug!(session = session_id, tasks = n, "session ended");
        Ok(n)
    }

    /// The body of `TaskBackend::cleanup`.
    pub(super) async fn cleanup_now(&self, max_age: Duration) -> Result<usize, BackendError> {
        self.inner.ensure_started();
        let inner = &self.inner;
        let cutoff = now_ms().saturating_sub(ms(max_age));
        let mut conn = inner.conn();
        let dropped: Vec<String> = inner
            .scripts
            .cleanup
            .arg(inner.keys.prefix())
            .arg(cutoff)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| inner.unavailable(&e))?;
        // Here at once (the script's events reach this process later): no hit here hands out a dropped id.
        for pair in dropped.chunks_exact(2) {
            if let (Ok(ref_id), Some(key)) = (RefId::parse(&pair[0]), CacheKey::from_hex(&pair[1]))
            {
                inner.near.invalidate_if_ref(&key, &ref_id).await;
            }
        }
        Ok(dropped.len() / 2)
    }
}
