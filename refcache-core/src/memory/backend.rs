//! [`MemoryTaskBackend`], the in-process default, and its [`TaskBackend`] implementation: submit (single-flight
//! through the key-to-ref index), get, wait, watch, cancel, retry, delete, end a session, list, clean up, stats and
//! shutdown.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use tokio::runtime::Handle;
use tokio::sync::{Notify, watch};

use super::active::{Active, DONE, PENDING, RUNNING, lock};
use super::config::MemoryBackendConfig;
use super::driver::{Counters, Inner, State};
use super::history::{History, Rerun, unindex};
use crate::contract::backend::{
    BackendStats, CancelOutcome, RespondOutcome, RetryOutcome, Submission, Submitted, TaskBackend,
    TaskSnapshot,
};
use crate::contract::list::{TaskFilter, TaskPage};
use crate::contract::scheduler::Scheduler;
use crate::contract::store::{StoredValue, ValueStore};
use crate::model::error::BackendError;
use crate::model::key::{CacheKey, KeyMap};
use crate::model::output::OutputChunk;
use crate::model::record::TaskInfo;
use crate::model::ref_id::RefId;
use crate::model::task::TaskStatus;

/// The in-process task backend: tokio tasks, bounded by `max_workers`, state in memory.
///
/// Tasks are spawned on the tokio runtime that submits them. A task whose runtime shuts down before it finishes is
/// marked `failed` rather than left `processing` forever.
#[derive(Clone)]
pub struct MemoryTaskBackend {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for MemoryTaskBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryTaskBackend")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl Default for MemoryTaskBackend {
    fn default() -> Self {
        Self::new(MemoryBackendConfig::default())
    }
}

impl MemoryTaskBackend {
    /// A backend with these settings.
    ///
    /// # Panics
    /// If `max_workers` is zero; `RefCacheConfig` validates this with a clear error before it gets here.
    pub fn new(config: MemoryBackendConfig) -> Self {
        assert!(
            config.max_workers > 0,
            "MemoryBackendConfig::max_workers must be at least 1"
        );
        let history = History::new(
            config.task_ttl,
            usize::try_from(config.max_task_records).unwrap_or(usize::MAX),
            config.max_record_bytes,
        );
        let state = State {
            accepting: true,
            history,
            index: KeyMap::default(),
            active: KeyMap::default(),
            sched: Scheduler::new(config.max_workers),
        };
        let inner = Inner {
            store: ValueStore::new(config.max_capacity_bytes),
            state: Mutex::new(state),
            idle: Notify::new(),
            counters: Counters::default(),
            first_poll_inline: None,
            config,
        };
        Self {
            inner: Arc::new(inner),
        }
    }

    /// A backend whose callers' new tasks always (`true`) or never (`false`) run their first poll in the caller,
    /// whatever scopes are in effect: for tests that pin that both paths answer the same.
    #[cfg(test)]
    pub(crate) fn with_first_poll_inline(config: MemoryBackendConfig, inline: bool) -> Self {
        let mut backend = Self::new(config);
        Arc::get_mut(&mut backend.inner)
            .expect("a new backend is not shared")
            .first_poll_inline = Some(inline);
        backend
    }

    /// The settings.
    pub fn config(&self) -> &MemoryBackendConfig {
        &self.inner.config
    }

    /// The value store (for inspection and tests).
    pub fn store(&self) -> &ValueStore {
        &self.inner.store
    }
}

/// The answer of [`MemoryTaskBackend::lookup`], ready at once: no value beyond the near cache.
struct NothingBeyond;

impl Future for NothingBeyond {
    type Output = Result<Option<Arc<StoredValue>>, BackendError>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::task::Poll::Ready(Ok(None))
    }
}

impl TaskBackend for MemoryTaskBackend {
    fn name(&self) -> &str {
        "memory"
    }

    fn near_cache(&self) -> Option<&ValueStore> {
        Some(&self.inner.store)
    }

    fn lookup<'a>(
        &'a self,
        _key: &'a CacheKey,
    ) -> BoxFuture<'a, Result<Option<Arc<StoredValue>>, BackendError>> {
        // The store is the near cache: nothing lies beyond it. A future of no size: its box allocates nothing
        // (an `async` block is a byte, and every miss boxed it).
        Box::pin(NothingBeyond)
    }

    fn submit(&self, submission: Submission) -> BoxFuture<'_, Result<Submitted, BackendError>> {
        Box::pin(async move {
            let inner = &self.inner;
            let handle = Handle::try_current().map_err(|_| {
                BackendError::Runtime(
                    "MemoryTaskBackend::submit must be called inside a tokio runtime".to_owned(),
                )
            })?;
            let Submission { spec, job, .. } = submission;
            let key = spec.key;
            let ref_id = spec.ref_id.clone();
            let mut store_checked = false;
            loop {
                // One lock decides: join, start, or (rarely) recheck the store first. No await under it.
                {
                    let mut st = lock(&inner.state);
                    if !st.accepting {
                        return Err(BackendError::ShuttingDown);
                    }
                    let recheck = match st.index.get(&key) {
                        Some(existing) if st.active.get(existing).is_some_and(|a| a.joinable()) => {
                            inner.counters.coalesced.fetch_add(1, Ordering::Relaxed);
                            return Ok(Submitted::Joined(existing.clone()));
                        }
                        Some(existing) => {
                            !store_checked
                                && st
                                    .history
                                    .get(existing)
                                    .is_some_and(|f| f.info.status == TaskStatus::Complete)
                        }
                        None => false,
                    };
                    if !recheck {
                        if st.sched.is_full() && st.sched.queued() >= inner.config.max_queued {
                            return Err(BackendError::QueueFull {
                                max_queued: inner.config.max_queued,
                            });
                        }
                        let mut info = TaskInfo::new(
                            ref_id.clone(),
                            spec.task_name.clone(),
                            spec.namespace.clone(),
                        );
                        info.session_id = spec.options.session_id.clone();
                        info.policy = spec.policy.clone();
                        info.max_retries = spec.options.max_retries;
                        let active = Active::new(spec, job, handle, info, &self.inner);
                        st.index.insert(key, ref_id.clone());
                        st.active.insert(ref_id.clone(), active.clone());
                        // A slot free and nothing queued: it starts now, as the queue would start it.
                        if st
                            .sched
                            .start_now(&active.spec.task_name, active.spec.options.max_concurrent)
                        {
                            // Only just made, under the lock: nothing can have cancelled it, so this succeeds.
                            active.cas(PENDING, RUNNING);
                            Inner::mark_started(&active);
                            drop(st);
                            let inline = inner.may_poll_inline(&active.handle);
                            inner.start(active, inline);
                            return Ok(Submitted::Started(ref_id));
                        }
                        st.enqueue(&active);
                        let started = inner.admit(&mut st);
                        if started.is_empty() {
                            tracing::debug!(%ref_id, task = %active.spec.task_name, "task queued");
                        }
                        drop(st);
                        // The caller's own task may run its first poll here (`Inner::start`); any other task
                        // this admitted (queued before it) is spawned.
                        let inline = inner.may_poll_inline(&active.handle);
                        for task in started {
                            let own = inline && Arc::ptr_eq(&task, &active);
                            inner.start(task, own);
                        }
                        return Ok(Submitted::Started(ref_id));
                    }
                }
                // The key's execution completed between the caller's lookup and now. Its value was stored before it
                // completed: answer with it rather than run the work twice.
                if let Some(value) = inner.store.get(&key).await {
                    return Ok(Submitted::Hit(value));
                }
                store_checked = true;
            }
        })
    }

    fn get<'a>(
        &'a self,
        ref_id: &'a RefId,
    ) -> BoxFuture<'a, Result<Option<TaskSnapshot>, BackendError>> {
        Box::pin(async move { Ok(self.inner.snapshot(ref_id)) })
    }

    fn wait<'a>(
        &'a self,
        ref_id: &'a RefId,
        deadline: Option<tokio::time::Instant>,
    ) -> BoxFuture<'a, Result<Option<TaskSnapshot>, BackendError>> {
        Box::pin(async move {
            let active = {
                let st = lock(&self.inner.state);
                match st.active.get(ref_id) {
                    Some(active) => active.clone(),
                    // Retired before the wait (every task that finished in its first poll in the caller): the
                    // answer is read under the same lock.
                    None => return Ok(self.inner.snapshot_in(st, ref_id)),
                }
            };
            {
                // The first waiter takes the task's own slot; any other follows the record's `watch`. Either way
                // it is done once the status is terminal (`Active::wake` runs on every way there).
                let done = async {
                    if active.ended.take() {
                        if !active.info.borrow().status.is_terminal() {
                            active.ended.wait().await;
                        }
                    } else {
                        let mut rx = active.info.subscribe();
                        let _ = rx.wait_for(|info| info.status.is_terminal()).await;
                    }
                };
                match deadline {
                    Some(deadline) => {
                        let _ = tokio::time::timeout_at(deadline, done).await;
                    }
                    None => {
                        let _ = done.await;
                    }
                }
                // Still holding the task: answer from it, without a lookup.
                let info = active.info.borrow().clone();
                if info.status != TaskStatus::Complete {
                    if info.status.is_terminal() {
                        return Ok(Some(TaskSnapshot::new(info, None)));
                    }
                } else if let Some(value) = active.value.get() {
                    return Ok(Some(TaskSnapshot::new(info, Some(value.clone()))));
                }
            }
            Ok(self.inner.snapshot(ref_id))
        })
    }

    fn watch<'a>(
        &'a self,
        ref_id: &'a RefId,
    ) -> BoxFuture<'a, Result<Option<watch::Receiver<TaskInfo>>, BackendError>> {
        let active = lock(&self.inner.state).active.get(ref_id).cloned();
        Box::pin(async move { Ok(active.map(|a| a.info.subscribe())) })
    }

    fn read_output<'a>(
        &'a self,
        ref_id: &'a RefId,
        offset: u64,
        max_bytes: usize,
    ) -> BoxFuture<'a, Result<Option<OutputChunk>, BackendError>> {
        let found = {
            let st = lock(&self.inner.state);
            match st.active.get(ref_id) {
                Some(active) if active.forget.load(Ordering::Acquire) => None,
                Some(active) => Some((
                    active.output.get().cloned(),
                    active.info.borrow().status.is_terminal(),
                )),
                None => st.history.get(ref_id).map(|f| (f.output.clone(), true)),
            }
        };
        Box::pin(async move {
            Ok(found.map(|(log, terminal)| match log {
                Some(log) => log.read(offset, max_bytes, terminal),
                None => OutputChunk::empty(0, terminal),
            }))
        })
    }

    fn follow_output<'a>(
        &'a self,
        ref_id: &'a RefId,
    ) -> BoxFuture<'a, Result<Option<BoxStream<'static, ()>>, BackendError>> {
        let active = lock(&self.inner.state).active.get(ref_id).cloned();
        Box::pin(async move {
            let Some(active) = active else {
                return Ok(None);
            };
            let output = changes(active.output_log().subscribe());
            let status = changes(active.info.subscribe());
            drop(active);
            Ok(Some(futures::stream::select(output, status).boxed()))
        })
    }

    fn cancel<'a>(
        &'a self,
        ref_id: &'a RefId,
    ) -> BoxFuture<'a, Result<CancelOutcome, BackendError>> {
        Box::pin(async move { Ok(self.inner.cancel(ref_id, None)) })
    }

    fn retry<'a>(&'a self, ref_id: &'a RefId) -> BoxFuture<'a, Result<RetryOutcome, BackendError>> {
        Box::pin(async move {
            let handle = Handle::try_current().map_err(|_| {
                BackendError::Runtime(
                    "MemoryTaskBackend::retry must be called inside a tokio runtime".to_owned(),
                )
            })?;
            let inner = &self.inner;
            let started = {
                let mut st = lock(&inner.state);
                if !st.accepting {
                    return Err(BackendError::ShuttingDown);
                }
                if let Some(active) = st.active.get(ref_id) {
                    return Ok(RetryOutcome::NotFailed(active.info.borrow().status));
                }
                let Some(record) = st.history.get(ref_id).cloned() else {
                    return Ok(RetryOutcome::NotFound);
                };
                let Some(Rerun { spec, job }) = record
                    .rerun
                    .clone()
                    .filter(|_| record.info.status == TaskStatus::Failed)
                else {
                    return Ok(RetryOutcome::NotFailed(record.info.status));
                };
                if let Some(other) = st
                    .index
                    .get(&spec.key)
                    .filter(|r| st.active.contains_key(*r))
                {
                    return Ok(RetryOutcome::AlreadyRunning(other.clone()));
                }
                let mut info = record.info.clone();
                info.status = TaskStatus::Pending;
                info.error = None;
                info.finished_at = None;
                info.status_message = None;
                info.progress = None;
                info.retry_count += 1;
                let active = Active::new(spec, job, handle, info, &self.inner);
                // The re-run writes on after what the failed run wrote: offsets never move backwards.
                if let Some(log) = &record.output {
                    let _ = active.output.set(log.clone());
                }
                st.history.remove(ref_id);
                st.index.insert(active.spec.key, ref_id.clone());
                st.active.insert(ref_id.clone(), active.clone());
                st.enqueue(&active);
                inner.counters.retries.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%ref_id, task = %active.spec.task_name, "failed task retried");
                inner.admit(&mut st)
            };
            inner.spawn_all(started);
            Ok(RetryOutcome::Restarted)
        })
    }

    fn respond<'a>(
        &'a self,
        ref_id: &'a RefId,
        key: &'a str,
        answer: serde_json::Value,
    ) -> BoxFuture<'a, Result<RespondOutcome, BackendError>> {
        Box::pin(async move {
            let active = {
                let st = lock(&self.inner.state);
                match st.active.get(ref_id) {
                    Some(active) => active.clone(),
                    None => {
                        return Ok(match st.history.get(ref_id) {
                            Some(f) => RespondOutcome::NotWaiting(f.info.status),
                            None => RespondOutcome::NotFound,
                        });
                    }
                }
            };
            Ok(active.respond(key, answer))
        })
    }

    fn delete<'a>(&'a self, ref_id: &'a RefId) -> BoxFuture<'a, Result<bool, BackendError>> {
        Box::pin(async move {
            let inner = &self.inner;
            let active = lock(&inner.state).active.get(ref_id).cloned();
            if let Some(active) = active {
                if active.forget.swap(true, Ordering::SeqCst) {
                    return Ok(false);
                }
                inner.cancel(ref_id, Some("deleted"));
                {
                    // No call joins it from now on; and should it have retired between the lookup above and
                    // `forget`, its fresh record goes too.
                    let mut guard = lock(&inner.state);
                    let st = &mut *guard;
                    unindex(&mut st.index, &active.spec.key, ref_id);
                    st.history.remove(ref_id);
                }
                // A value stored by a completion that raced with this delete is dropped here; one stored after
                // it sees `forget` and drops itself (see `complete`).
                inner.invalidate_own(&active.spec.key, ref_id).await;
                return Ok(true);
            }
            let key = {
                let mut guard = lock(&inner.state);
                let st = &mut *guard;
                let Some(record) = st.history.get(ref_id).cloned() else {
                    return Ok(false);
                };
                st.history.remove(ref_id);
                unindex(&mut st.index, &record.key, ref_id);
                record.key
            };
            inner.invalidate_own(&key, ref_id).await;
            Ok(true)
        })
    }

    fn end_session<'a>(
        &'a self,
        session_id: &'a str,
    ) -> BoxFuture<'a, Result<usize, BackendError>> {
        Box::pin(async move {
            let inner = &self.inner;
            let in_session = |info: &TaskInfo| info.session_id.as_deref() == Some(session_id);
            let running: Vec<Arc<Active>> = lock(&inner.state)
                .active
                .values()
                .filter(|a| a.spec.options.session_id.as_deref() == Some(session_id))
                .cloned()
                .collect();
            for active in &running {
                active.forget.store(true, Ordering::SeqCst);
                inner.cancel(&active.spec.ref_id, Some("session ended"));
            }
            let (records, dropped) = {
                let mut guard = lock(&inner.state);
                let st = &mut *guard;
                st.history
                    .remove_where(|f| in_session(&f.info), &mut st.index)
            };
            inner.drop_values(dropped).await;
            tracing::debug!(
                session = session_id,
                tasks = running.len(),
                records,
                "session ended"
            );
            Ok(running.len() + records)
        })
    }

    fn list(&self, filter: TaskFilter) -> BoxFuture<'_, Result<TaskPage, BackendError>> {
        Box::pin(async move {
            TaskPage::paginate(self.inner.infos_where(|i| filter.matches(i)), &filter)
        })
    }

    fn cleanup(&self, max_age: Duration) -> BoxFuture<'_, Result<usize, BackendError>> {
        Box::pin(async move {
            // A complete record goes with its value (one lifetime): no later hit hands out its ref id.
            let (n, dropped) = {
                let mut guard = lock(&self.inner.state);
                let st = &mut *guard;
                st.history.remove_where(
                    |record| {
                        record
                            .info
                            .finished_at
                            .is_some_and(|t| t.elapsed() > max_age)
                    },
                    &mut st.index,
                )
            };
            self.inner.drop_values(dropped).await;
            Ok(n)
        })
    }

    fn stats(&self) -> BoxFuture<'_, Result<BackendStats, BackendError>> {
        Box::pin(async move {
            let mut stats = self.inner.stats();
            stats.value_bytes = self.inner.store.usage().await.1;
            Ok(stats)
        })
    }

    fn shutdown(&self, deadline: Duration) -> BoxFuture<'_, Result<(), BackendError>> {
        Box::pin(async move {
            self.inner.shutdown(deadline).await;
            Ok(())
        })
    }
}

impl Inner {
    /// What [`get`](TaskBackend::get) answers, read now: the store is the near cache, a read that never waits, so
    /// this needs no future (and `wait`, which ends in the same read, boxes none).
    pub(super) fn snapshot(&self, ref_id: &RefId) -> Option<TaskSnapshot> {
        self.snapshot_in(lock(&self.state), ref_id)
    }

    /// [`snapshot`](Self::snapshot), under the state lock `st` (released before the store is read).
    fn snapshot_in(&self, st: MutexGuard<'_, State>, ref_id: &RefId) -> Option<TaskSnapshot> {
        let (info, key) = {
            let st = st;
            match st.active.get(ref_id) {
                // Its session ended: the record is gone, though the task may still be winding down.
                Some(active) if active.forget.load(Ordering::Acquire) => return None,
                Some(active) => {
                    let mut info = active.info.borrow().clone();
                    if let Some(position) = st.sched.position(ref_id) {
                        info.queue_position = Some(position);
                    }
                    // Complete but not yet retired: the value is on the task.
                    if info.status == TaskStatus::Complete
                        && let Some(value) = active.value.get()
                    {
                        return Some(TaskSnapshot::new(info, Some(value.clone())));
                    }
                    (info, active.spec.key)
                }
                None => match st.history.get(ref_id) {
                    Some(f) => {
                        if let Some(value) = f.live_value() {
                            return Some(TaskSnapshot::new(f.info.clone(), Some(value)));
                        }
                        (f.info.clone(), f.key)
                    }
                    None => return None,
                },
            }
        };
        if info.status != TaskStatus::Complete {
            return Some(TaskSnapshot::new(info, None));
        }
        // A complete task whose value has expired or been evicted is gone. The key's value now may be a later
        // execution's: it is not this reference's.
        self.store
            .get_now(&key)
            .filter(|value| value.ref_id == *ref_id)
            .map(|value| TaskSnapshot::new(info, Some(value)))
    }
}

impl Inner {
    pub(super) fn cancel(self: &Arc<Self>, ref_id: &RefId, note: Option<&str>) -> CancelOutcome {
        let active = {
            let st = lock(&self.state);
            match st.active.get(ref_id) {
                Some(active) => active.clone(),
                None => {
                    return match st.history.get(ref_id) {
                        Some(f) if f.info.status == TaskStatus::Cancelled => {
                            CancelOutcome::Cancelled
                        }
                        Some(f) => CancelOutcome::AlreadyFinished(f.info.status),
                        None => CancelOutcome::NotFound,
                    };
                }
            }
        };
        if active.cas(PENDING, DONE) {
            self.counters.cancellations.fetch_add(1, Ordering::Relaxed);
            active.set_terminal(TaskStatus::Cancelled, None, note);
            active.cancel_token().cancel();
            self.retire(&active);
            return CancelOutcome::Cancelled;
        }
        if active.cas(RUNNING, DONE) {
            self.counters.cancellations.fetch_add(1, Ordering::Relaxed);
            active.set_terminal(TaskStatus::Cancelled, None, note);
            // A new call for the same key starts afresh instead of joining a cancelled execution.
            self.unindex(&active);
            active.cancel_token().cancel();
            return CancelOutcome::Cancelled;
        }
        match active.info.borrow().status {
            TaskStatus::Cancelled => CancelOutcome::Cancelled,
            status if status.is_terminal() => CancelOutcome::AlreadyFinished(status),
            // COMPLETING: the value is being stored; the task has, in effect, finished.
            _ => CancelOutcome::AlreadyFinished(TaskStatus::Complete),
        }
    }

    /// The records that pass `keep`, cloned under one lock (only those: filtering comes before copying).
    pub(super) fn infos_where(&self, keep: impl Fn(&TaskInfo) -> bool) -> Vec<TaskInfo> {
        let st = lock(&self.state);
        let mut infos = Vec::new();
        for (ref_id, active) in st
            .active
            .iter()
            .filter(|(_, a)| !a.forget.load(Ordering::Acquire))
        {
            let info = active.info.borrow();
            if !keep(&info) {
                continue;
            }
            let mut info = info.clone();
            if let Some(position) = st.sched.position(ref_id) {
                info.queue_position = Some(position);
            }
            infos.push(info);
        }
        // A complete task whose value has expired or been evicted is gone, here as for `get`.
        infos.extend(
            st.history
                .records()
                .filter(|record| {
                    record.info.status != TaskStatus::Complete || record.live_value().is_some()
                })
                .filter(|record| keep(&record.info))
                .map(|record| record.info.clone()),
        );
        infos
    }

    pub(super) fn stats(&self) -> BackendStats {
        let mut stats = BackendStats::default();
        for info in self.infos_where(|_| true) {
            *stats.by_status.entry(info.status).or_default() += 1;
        }
        {
            let st = lock(&self.state);
            stats.running = st.sched.running() as u64;
            stats.queued = st.sched.queued() as u64;
            stats.record_bytes = st.history.bytes();
        }
        let c = &self.counters;
        stats.capacity = self.config.max_workers as u64;
        stats.executions = c.executions.load(Ordering::Relaxed);
        stats.coalesced = c.coalesced.load(Ordering::Relaxed);
        stats.cancellations = c.cancellations.load(Ordering::Relaxed);
        stats.retries = c.retries.load(Ordering::Relaxed);
        stats.timeouts = c.timeouts.load(Ordering::Relaxed);
        stats
    }

    pub(super) async fn wait_until_idle(&self, until: tokio::time::Instant) -> bool {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if lock(&self.state).active.is_empty() {
                return true;
            }
            if tokio::time::timeout_at(until, notified).await.is_err() {
                return lock(&self.state).active.is_empty();
            }
        }
    }

    pub(super) async fn shutdown(self: &Arc<Self>, deadline: Duration) {
        lock(&self.state).accepting = false;
        tracing::debug!("memory backend shutting down");
        let until = tokio::time::Instant::now() + deadline;
        if self.wait_until_idle(until).await {
            return;
        }
        let rest: Vec<Arc<Active>> = lock(&self.state).active.values().cloned().collect();
        for active in &rest {
            self.cancel(&active.spec.ref_id, Some("shutdown"));
            if let Some(abort) = lock(&active.abort).take() {
                abort.abort();
            }
        }
        // Aborted drivers retire as they are dropped; give them a moment to be polled.
        self.wait_until_idle(tokio::time::Instant::now() + Duration::from_secs(1))
            .await;
    }
}

/// A stream that yields once per change of `rx` (changes in between coalesce), and ends with its sender.
fn changes<T: Send + Sync + 'static>(rx: watch::Receiver<T>) -> impl futures::Stream<Item = ()> {
    futures::stream::unfold(rx, |mut rx| async move {
        rx.changed().await.ok().map(|()| ((), rx))
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::{Value, json};

    use crate::contract::backend::{Submission, TaskBackend};
    use crate::contract::context::LocalJob;
    use crate::contract::spec::TaskSpec;
    use crate::memory::backend::MemoryTaskBackend;
    use crate::memory::config::MemoryBackendConfig;
    use crate::model::json_text::JsonText;
    use crate::model::key::CacheKey;
    use crate::model::ref_id::RefId;

    fn key_of(args: &Value) -> CacheKey {
        CacheKey::from_json("tests.wait", "public", args).expect("a key")
    }

    /// Submits a job that answers its arguments once `gate` opens: its reference.
    async fn gated(
        backend: &MemoryTaskBackend,
        args: Value,
        gate: tokio::sync::oneshot::Receiver<()>,
    ) -> RefId {
        let gate = Arc::new(std::sync::Mutex::new(Some(gate)));
        let spec = TaskSpec::new(
            RefId::generate("t"),
            key_of(&args),
            "tests.wait",
            "public",
            args,
        );
        let job: LocalJob = Arc::new(move |args: Value, _ctx| {
            let gate = gate.lock().unwrap().take();
            Box::pin(async move {
                if let Some(gate) = gate {
                    let _ = gate.await;
                }
                Ok(JsonText::from(args))
            })
        });
        let submitted = backend
            .submit(Submission::new(spec, Some(job)))
            .await
            .expect("submit");
        submitted.ref_id().clone()
    }

    /// What a waiter saw, comparable: the record as JSON and the value.
    fn seen(snapshot: Option<crate::contract::backend::TaskSnapshot>) -> (Value, Option<JsonText>) {
        let snapshot = snapshot.expect("a record");
        (
            serde_json::to_value(&snapshot.info).expect("JSON"),
            snapshot.value.map(|v| v.value.clone()),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn every_waiter_wakes_with_the_same_answer_whether_it_holds_the_slot_or_follows_the_record()
     {
        let backend = MemoryTaskBackend::new(MemoryBackendConfig::default());
        // The first waiter takes the slot, the second follows the `watch`: both wake when the task ends.
        let (open, gate) = tokio::sync::oneshot::channel();
        let ref_id = gated(&backend, json!("both"), gate).await;
        let (first, second, ()) = tokio::join!(
            backend.wait(&ref_id, None),
            backend.wait(&ref_id, None),
            async {
                tokio::task::yield_now().await;
                let _ = open.send(());
            }
        );
        let (first, second) = (seen(first.expect("wait")), seen(second.expect("wait")));
        assert_eq!(first, second);
        assert_eq!(first.0["status"], "complete");
        assert_eq!(first.1, Some(JsonText::from(json!("both"))));
        assert_eq!(first, seen(backend.get(&ref_id).await.expect("get")));
        // A waiter that gives up keeps the slot: the next one follows the `watch`, and still wakes.
        let (open, gate) = tokio::sync::oneshot::channel();
        let ref_id = gated(&backend, json!("later"), gate).await;
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        let gave_up = seen(backend.wait(&ref_id, Some(deadline)).await.expect("wait"));
        assert_eq!(gave_up.0["status"], "processing");
        let (later, ()) = tokio::join!(backend.wait(&ref_id, None), async {
            tokio::task::yield_now().await;
            let _ = open.send(());
        });
        let later = seen(later.expect("wait"));
        assert_eq!(later.0["status"], "complete");
        assert_eq!(later.1, Some(JsonText::from(json!("later"))));
    }

    /// A task's token is made on first need: a body that waits for a cancel in the attempt its caller started
    /// (the first poll in the caller, then handed to a spawned driver) is cancelled through the same token as the
    /// driver, and sees it.
    #[tokio::test(start_paused = true)]
    async fn a_first_attempt_started_in_the_caller_sees_a_later_cancel() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let backend = MemoryTaskBackend::new(MemoryBackendConfig::default());
        let (before, after) = (
            Arc::new(AtomicBool::new(true)),
            Arc::new(AtomicBool::new(false)),
        );
        let (seen_before, seen_after) = (before.clone(), after.clone());
        let job: LocalJob = Arc::new(move |_args: Value, ctx| {
            let (before, after) = (seen_before.clone(), seen_after.clone());
            Box::pin(async move {
                before.store(ctx.is_cancelled(), Ordering::SeqCst);
                ctx.cancelled().await;
                after.store(ctx.is_cancelled(), Ordering::SeqCst);
                Ok(JsonText::from(json!("stopped")))
            })
        });
        let args = json!("cancel me");
        let spec = TaskSpec::new(
            RefId::generate("t"),
            key_of(&args),
            "tests.wait",
            "public",
            args,
        );
        let submitted = backend
            .submit(Submission::new(spec, Some(job)))
            .await
            .expect("submit");
        let ref_id = submitted.ref_id().clone();
        assert!(!before.load(Ordering::SeqCst), "not cancelled yet");
        assert!(!after.load(Ordering::SeqCst));
        backend.cancel(&ref_id).await.expect("cancel");
        // Well within the grace after the cancel (the clock is paused): the body stops by itself.
        for _ in 0..100 {
            if after.load(Ordering::SeqCst) {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(after.load(Ordering::SeqCst), "the body saw the cancel");
        let ended = backend
            .wait(&ref_id, None)
            .await
            .expect("wait")
            .expect("a record");
        assert_eq!(ended.info.status, crate::model::task::TaskStatus::Cancelled);
    }

    /// A task whose driver was spawned but never polled (its runtime shut down first) is failed and retired by the
    /// driver's guard, made before the future: a later runtime sees it failed and the key free, not a task
    /// `processing` forever that a new call would join.
    #[test]
    fn a_driver_dropped_before_its_first_poll_fails_its_task_and_frees_the_key() {
        let backend = MemoryTaskBackend::default();
        let pending: LocalJob = Arc::new(|_args: Value, _ctx| Box::pin(std::future::pending()));
        let args = json!("dropped");
        let key = key_of(&args);
        let first = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a runtime");
        let spec = TaskSpec::new(
            RefId::generate("t"),
            key,
            "tests.wait",
            "public",
            args.clone(),
        );
        let ref_id = first
            .block_on(backend.submit(Submission::new(spec, Some(pending.clone()))))
            .expect("submit")
            .ref_id()
            .clone();
        drop(first);
        let second = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a runtime");
        second.block_on(async {
            let snapshot = backend.get(&ref_id).await.expect("get").expect("a record");
            assert_eq!(snapshot.info.status, crate::model::task::TaskStatus::Failed);
            assert_eq!(
                snapshot.info.error.and_then(|e| e.code).as_deref(),
                Some("RUNTIME_SHUTDOWN")
            );
            let spec = TaskSpec::new(RefId::generate("t"), key, "tests.wait", "public", args);
            let again = backend
                .submit(Submission::new(spec, Some(pending)))
                .await
                .expect("submit");
            assert!(
                matches!(again, crate::contract::backend::Submitted::Started(ref r) if *r != ref_id),
                "the key is free: {again:?}"
            );
        });
    }

    /// A job that panics before it makes its future fails its task as `panicked`, on the caller's first poll.
    #[tokio::test]
    async fn a_job_that_panics_in_its_call_fails_as_panicked() {
        let backend = MemoryTaskBackend::default();
        let job: LocalJob = Arc::new(|_args: Value, _ctx| panic!("before any future"));
        let args = json!("panics");
        let spec = TaskSpec::new(
            RefId::generate("t"),
            key_of(&args),
            "tests.wait",
            "public",
            args,
        );
        let ref_id = backend
            .submit(Submission::new(spec, Some(job)))
            .await
            .expect("submit")
            .ref_id()
            .clone();
        let ended = backend
            .wait(&ref_id, None)
            .await
            .expect("wait")
            .expect("a record");
        assert_eq!(ended.info.status, crate::model::task::TaskStatus::Failed);
        assert_eq!(
            ended.info.error.map(|e| e.message).as_deref(),
            Some("panicked: before any future")
        );
    }

    /// The execution timeout counts from the start of the execution, not from when a driver takes on a first
    /// attempt that the caller polled: a body whose first segment (run in the caller) takes 1 s and whose rest
    /// takes 1.5 s more is over a 2 s timeout. Counted from the driver's start (the bug `1d12d6a` fixed), its
    /// deadline came at 3 s and the task completed at 2.5 s.
    ///
    /// The real clock, as the first segment blocks its thread (a paused clock does not move while a task is
    /// polled). Margins of 0.5 s either way; a slow machine only makes the first segment and the sleep longer,
    /// which moves the body's end later, past the deadline that the assertion wants: it cannot fail spuriously.
    #[tokio::test]
    async fn the_execution_timeout_counts_from_the_callers_first_poll() {
        use crate::contract::spec::TaskOptions;
        use crate::model::task::TaskStatus;
        use std::time::Duration;
        let backend =
            MemoryTaskBackend::with_first_poll_inline(MemoryBackendConfig::default(), true);
        let job: LocalJob = Arc::new(|_args: Value, _ctx| {
            Box::pin(async move {
                // The first segment, in the caller's poll.
                std::thread::sleep(Duration::from_secs(1));
                tokio::task::yield_now().await;
                // The rest, in the driver.
                tokio::time::sleep(Duration::from_millis(1_500)).await;
                Ok(JsonText::from(json!("in time")))
            })
        });
        let args = json!("timed");
        let spec = TaskSpec::new(
            RefId::generate("t"),
            key_of(&args),
            "tests.wait",
            "public",
            args,
        )
        .with_options(TaskOptions::default().execution_timeout(Some(Duration::from_secs(2))));
        let ref_id = backend
            .submit(Submission::new(spec, Some(job)))
            .await
            .expect("submit")
            .ref_id()
            .clone();
        let ended = backend
            .wait(&ref_id, None)
            .await
            .expect("wait")
            .expect("a record");
        assert_eq!(
            ended.info.status,
            TaskStatus::Failed,
            "2.5 s of work under a 2 s timeout: {:?}",
            ended.info
        );
        let error = ended.info.error.expect("the timeout's error");
        assert!(
            error.message.contains("exceeded timeout of 2 seconds"),
            "{error:?}"
        );
    }

    /// The driver that takes on the caller's first attempt waits on the task's own token: a body that ignores a
    /// cancel is dropped once `cancel_grace` has passed after it.
    #[tokio::test(start_paused = true)]
    async fn a_first_attempt_that_ignores_a_cancel_is_dropped_after_the_grace() {
        struct Dropped(Arc<std::sync::atomic::AtomicBool>);
        impl Drop for Dropped {
            fn drop(&mut self) {
                self.0.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let backend = MemoryTaskBackend::new(MemoryBackendConfig::default());
        let dropped = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = dropped.clone();
        let job: LocalJob = Arc::new(move |_args: Value, _ctx| {
            let guard = Dropped(flag.clone());
            Box::pin(async move {
                let _guard = guard;
                std::future::pending::<()>().await;
                Ok(JsonText::from(json!("never")))
            })
        });
        let args = json!("ignores");
        let spec = TaskSpec::new(
            RefId::generate("t"),
            key_of(&args),
            "tests.wait",
            "public",
            args,
        );
        let ref_id = backend
            .submit(Submission::new(spec, Some(job)))
            .await
            .expect("submit")
            .ref_id()
            .clone();
        backend.cancel(&ref_id).await.expect("cancel");
        let grace = backend.config().cancel_grace;
        tokio::time::sleep(grace / 2).await;
        assert!(
            !dropped.load(std::sync::atomic::Ordering::SeqCst),
            "within the grace"
        );
        tokio::time::sleep(grace).await;
        assert!(
            dropped.load(std::sync::atomic::Ordering::SeqCst),
            "dropped after the grace"
        );
    }

    /// glibc's thread cache serves chunks of up to 1,032 bytes (1,024 usable, less `Arc`'s two counts); a bigger
    /// allocation takes `_int_malloc` and `_int_free`, several hundred instructions more each way. Every task makes
    /// an `Active` and (when spawned, or polled first in the caller) boxes its driver: both must stay under it.
    #[tokio::test]
    async fn a_task_and_its_driver_fit_the_allocators_fast_path() {
        const FAST: usize = 1_008;
        let backend = MemoryTaskBackend::default();
        let spec = TaskSpec::new(
            RefId::generate("t"),
            CacheKey::from_json("t", "public", &json!(1)).expect("a key"),
            "t",
            "public",
            json!({}),
        );
        let info = crate::model::record::TaskInfo::new(spec.ref_id.clone(), "t", "public");
        let active = super::super::active::Active::new(
            spec,
            None,
            tokio::runtime::Handle::current(),
            info,
            &backend.inner,
        );
        let driver = tracing::Instrument::instrument(
            super::super::driver::drive(backend.inner.clone(), active.clone()),
            tracing::debug_span!("refcache.task"),
        );
        let active_size = std::mem::size_of::<super::super::active::Active>();
        let driver_size = std::mem::size_of_val(&driver);
        assert!(active_size <= FAST, "Active is {active_size} bytes");
        assert!(driver_size <= FAST, "the driver is {driver_size} bytes");
        // Every miss asks for a value beyond the near cache: a future of no size, whose box allocates nothing.
        let key = CacheKey::from_json("t", "public", &json!(2)).expect("a key");
        let lookup = backend.lookup(&key);
        assert_eq!(std::mem::size_of_val(&*lookup), 0, "the lookup's future");
        assert!(lookup.await.expect("no error").is_none());
    }
}
