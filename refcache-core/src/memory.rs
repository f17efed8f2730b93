//! `MemoryTaskBackend`: the in-process default. Tasks run on tokio in this process; state and values live in
//! memory (values in a byte-bounded moka cache, task records in a TTL-bounded moka cache).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::Value;
use tokio::runtime::Handle;
use tokio::sync::{Notify, watch};
use tokio::task::AbortHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::contract::backend::{
    BackendStats, CancelOutcome, RetryOutcome, Submission, Submitted, TaskBackend, TaskSnapshot,
};
use crate::contract::context::{LocalJob, TaskHooks};
use crate::contract::execute::{self, Ending, RunLimits};
use crate::contract::list::{TaskFilter, TaskPage};
use crate::contract::scheduler::Scheduler;
use crate::contract::spec::TaskSpec;
use crate::contract::store::{StoredValue, ValueStore};
use crate::model::error::BackendError;
use crate::model::key::CacheKey;
use crate::model::record::TaskInfo;
use crate::model::ref_id::RefId;
use crate::model::task::{RetryInfo, TaskError, TaskProgress, TaskStatus, Timestamp};

/// Settings of a [`MemoryTaskBackend`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct MemoryBackendConfig {
    /// Tasks that may run at once; more wait as `pending`.
    pub max_workers: usize,
    /// Tasks that may wait; a submission beyond this is refused with `QueueFull`.
    pub max_queued: usize,
    /// How long a finished value stays when the task sets no TTL.
    pub default_ttl: Duration,
    /// How long a finished task record stays.
    pub task_ttl: Duration,
    /// At most this many finished task records are kept (oldest evicted first).
    pub max_task_records: u64,
    /// Capacity of the value store in bytes.
    pub max_capacity_bytes: u64,
    /// How long a cancelled async task may run on before it is aborted.
    pub cancel_grace: Duration,
    /// The execution timeout of tasks that set none (`None`: no limit).
    pub default_execution_timeout: Option<Duration>,
}

impl Default for MemoryBackendConfig {
    fn default() -> Self {
        Self {
            max_workers: 32,
            max_queued: 10_000,
            default_ttl: Duration::from_secs(3600),
            task_ttl: Duration::from_secs(24 * 3600),
            max_task_records: 100_000,
            max_capacity_bytes: 256 * 1024 * 1024,
            cancel_grace: Duration::from_secs(5),
            default_execution_timeout: None,
        }
    }
}

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

struct Inner {
    config: MemoryBackendConfig,
    store: ValueStore,
    state: Mutex<State>,
    idle: Notify,
    counters: Counters,
}

struct Finished {
    info: TaskInfo,
    key: CacheKey,
    expires_at: tokio::time::Instant,
    /// Which history entry made this record (a ref id retried with `retry_task` is recorded twice).
    seq: u64,
    /// What `retry_task` needs to run a failed task again.
    rerun: Option<Rerun>,
    /// The value of a complete task, weakly: polls read it without touching moka while the store holds it (a
    /// `Weak` does not keep it alive, so the store's byte bound still decides).
    value: Option<std::sync::Weak<StoredValue>>,
}

impl Finished {
    /// Its value, without a moka read, while the store still holds it and it is unexpired.
    fn live_value(&self) -> Option<Arc<StoredValue>> {
        self.value
            .as_ref()
            .and_then(std::sync::Weak::upgrade)
            .filter(|v| v.is_live())
    }
}

/// The spec and job of a failed task, kept with its record so that it can be re-run under the same ref id.
#[derive(Clone)]
struct Rerun {
    spec: TaskSpec,
    job: Option<LocalJob>,
}

/// Finished task records: a map for lookups and a FIFO for expiry and the cap. Every record gets the same TTL and
/// is inserted when its task finishes, so insertion order is expiry order and eviction is O(1) per record.
struct History {
    map: HashMap<RefId, Arc<Finished>>,
    order: VecDeque<(tokio::time::Instant, u64, RefId, CacheKey)>,
    next_seq: u64,
    ttl: Duration,
    cap: usize,
}

impl History {
    fn new(ttl: Duration, cap: usize) -> Self {
        Self {
            map: HashMap::new(),
            order: VecDeque::new(),
            next_seq: 0,
            ttl,
            cap: cap.max(1),
        }
    }

    /// Records a finished task; evicts expired and over-cap records, and their index entries.
    fn insert(
        &mut self,
        info: TaskInfo,
        key: CacheKey,
        rerun: Option<Rerun>,
        value: Option<std::sync::Weak<StoredValue>>,
        index: &mut HashMap<CacheKey, RefId>,
    ) {
        let now = tokio::time::Instant::now();
        while let Some((at, _, _, _)) = self.order.front() {
            if *at > now && self.order.len() < self.cap {
                break;
            }
            let (_, seq, old, old_key) = self.order.pop_front().expect("front exists");
            // Only the record this entry was made for: a ref id retried with `retry_task` was recorded again, under
            // a later entry, and its fresh record must stay.
            if self.map.get(&old).is_some_and(|f| f.seq == seq) {
                self.map.remove(&old);
                unindex(index, &old_key, &old);
            }
        }
        let expires_at = now + self.ttl;
        self.next_seq += 1;
        let seq = self.next_seq;
        self.order
            .push_back((expires_at, seq, info.ref_id.clone(), key));
        self.map.insert(
            info.ref_id.clone(),
            Arc::new(Finished {
                info,
                key,
                expires_at,
                seq,
                rerun,
                value,
            }),
        );
    }

    fn get(&self, ref_id: &RefId) -> Option<&Arc<Finished>> {
        self.map
            .get(ref_id)
            .filter(|f| f.expires_at > tokio::time::Instant::now())
    }

    fn records(&self) -> impl Iterator<Item = &Arc<Finished>> {
        let now = tokio::time::Instant::now();
        self.map.values().filter(move |f| f.expires_at > now)
    }
}

/// Drops `key` from the key-to-ref index if it still points to `ref_id` (a newer execution may own it by now).
fn unindex(index: &mut HashMap<CacheKey, RefId>, key: &CacheKey, ref_id: &RefId) {
    if index.get(key) == Some(ref_id) {
        index.remove(key);
    }
}

impl State {
    /// Queues a pending task in the scheduler.
    fn enqueue(&mut self, active: &Active) {
        let spec = &active.spec;
        self.sched.enqueue(
            spec.ref_id.clone(),
            spec.task_name.clone(),
            spec.options.priority,
            spec.options.max_concurrent,
        );
    }
}

struct State {
    accepting: bool,
    /// Finished task records.
    history: History,
    /// The key-to-ref index: key → its latest execution, while that is running, or complete and recorded. A call
    /// for a key whose execution runs joins it (single-flight); one whose execution just completed finds its value.
    index: HashMap<CacheKey, RefId>,
    /// Tasks not yet retired: pending, running, or cancelled and winding down.
    active: HashMap<RefId, Arc<Active>>,
    /// Which pending task starts next, and the slots.
    sched: Scheduler,
}

#[derive(Default)]
struct Counters {
    executions: AtomicU64,
    coalesced: AtomicU64,
    cancellations: AtomicU64,
    retries: AtomicU64,
    timeouts: AtomicU64,
}

const PENDING: u8 = 0;
const RUNNING: u8 = 1;
const COMPLETING: u8 = 2;
const DONE: u8 = 3;

struct Active {
    spec: TaskSpec,
    job: Option<LocalJob>,
    handle: Handle,
    info: watch::Sender<TaskInfo>,
    cancel: CancellationToken,
    /// PENDING → RUNNING → COMPLETING → DONE, or straight to DONE on cancel/failure. Changed only by CAS, so the
    /// first terminal decision wins.
    phase: AtomicU8,
    holds_slot: AtomicBool,
    partial: Mutex<Option<Value>>,
    abort: Mutex<Option<AbortHandle>>,
    /// Drop the record instead of keeping it when the task retires (its session ended).
    forget: AtomicBool,
    /// The backend, for counters and the index (weak: the backend owns its tasks).
    backend: std::sync::Weak<Inner>,
    /// The value, once stored: a waiter holding this task reads it here instead of looking it up.
    value: OnceLock<Arc<StoredValue>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Active {
    /// A new pending task.
    fn new(
        spec: TaskSpec,
        job: Option<LocalJob>,
        handle: Handle,
        info: TaskInfo,
        backend: &Arc<Inner>,
    ) -> Arc<Self> {
        Arc::new(Self {
            info: watch::channel(info).0,
            spec,
            job,
            handle,
            cancel: CancellationToken::new(),
            phase: AtomicU8::new(PENDING),
            holds_slot: AtomicBool::new(false),
            partial: Mutex::new(None),
            abort: Mutex::new(None),
            forget: AtomicBool::new(false),
            backend: Arc::downgrade(backend),
            value: OnceLock::new(),
        })
    }

    /// Whether a new call for the same key may join this execution: not once it has failed or been cancelled (it
    /// may linger a moment before it retires), since calling again after a failure must run the work again.
    fn joinable(&self) -> bool {
        !matches!(
            self.info.borrow().status,
            TaskStatus::Failed | TaskStatus::Cancelled
        )
    }

    fn cas(&self, from: u8, to: u8) -> bool {
        self.phase
            .compare_exchange(from, to, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Sets a terminal status and wakes the waiters.
    fn set_terminal(&self, status: TaskStatus, error: Option<TaskError>, note: Option<&str>) {
        self.record_terminal(status, error, note);
        self.wake();
    }

    /// Sets a terminal status without waking anyone yet: a finishing task retires first, so that a woken waiter
    /// that acts at once (calls again, retries) finds it in the history, not still active.
    fn record_terminal(&self, status: TaskStatus, error: Option<TaskError>, note: Option<&str>) {
        self.info.send_if_modified(|info| {
            info.status = status;
            info.error = error;
            info.finished_at = Some(Timestamp::now());
            info.queue_position = None;
            if let Some(note) = note {
                info.status_message = Some(note.to_owned());
            }
            false
        });
        tracing::debug!(ref_id = %self.spec.ref_id, task = %self.spec.task_name, %status, "task finished");
    }

    /// Wakes the waiters.
    fn wake(&self) {
        self.info.send_if_modified(|_| true);
    }
}

impl TaskHooks for Active {
    fn report_progress(&self, progress: TaskProgress) {
        // Wakes watchers (MCP progress forwarding); a waiter for the end wakes, sees no terminal status and sleeps
        // on.
        self.info.send_if_modified(|info| {
            let running = info.status == TaskStatus::Processing;
            if running {
                info.progress = Some(progress);
            }
            running
        });
    }

    fn set_partial_result(&self, value: Value) {
        *lock(&self.partial) = Some(value);
    }

    fn partial_result(&self) -> Option<Value> {
        lock(&self.partial).clone()
    }

    fn attempt_failed(&self, mut failure: RetryInfo) {
        self.info.send_if_modified(|info| {
            // Numbered across `retry_task` re-runs too, so that the history reads in order.
            failure.attempt = u32::try_from(info.retry_history.len() + 1).unwrap_or(u32::MAX);
            info.retry_history.push(failure);
            false
        });
    }

    fn retry_scheduled(&self, note: String) {
        if let Some(inner) = self.backend.upgrade() {
            inner.counters.retries.fetch_add(1, Ordering::Relaxed);
        }
        self.info.send_if_modified(|info| {
            if info.status == TaskStatus::Processing {
                info.status_message = Some(note);
            }
            false
        });
    }

    fn retry_started(&self) {
        self.info.send_if_modified(|info| {
            info.retry_count += 1;
            info.status_message = None;
            false
        });
    }

    fn timed_out(&self, error: TaskError) {
        if self.cas(RUNNING, DONE) {
            if let Some(inner) = self.backend.upgrade() {
                inner.counters.timeouts.fetch_add(1, Ordering::Relaxed);
                inner.unindex(self);
            }
            self.set_terminal(TaskStatus::Failed, Some(error), None);
        }
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
        );
        let state = State {
            accepting: true,
            history,
            index: HashMap::new(),
            active: HashMap::new(),
            sched: Scheduler::new(config.max_workers),
        };
        let inner = Inner {
            store: ValueStore::new(config.max_capacity_bytes),
            state: Mutex::new(state),
            idle: Notify::new(),
            counters: Counters::default(),
            config,
        };
        Self {
            inner: Arc::new(inner),
        }
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

impl Inner {
    /// Under the state lock: moves queued tasks into free slots and marks them processing. The caller spawns the
    /// returned tasks after releasing the lock (a spawn on a dead runtime drops the future at once, and its guard
    /// takes the lock).
    ///
    /// Tasks start in queue order (priority, then FIFO), except that a task whose name is at its
    /// `max_concurrent` waits, and the tasks behind it may pass it.
    fn admit(&self, st: &mut State) -> Vec<Arc<Active>> {
        let mut started = Vec::new();
        while let Some((ref_id, name)) = st.sched.start_next() {
            let active = st.active.get(&ref_id).cloned();
            let Some(active) = active.filter(|a| a.cas(PENDING, RUNNING)) else {
                st.sched.finished(&name);
                continue;
            };
            active.holds_slot.store(true, Ordering::Release);
            // Waiters wait for a terminal status; this change is read by polls, without waking anyone.
            active.info.send_if_modified(|info| {
                info.status = TaskStatus::Processing;
                info.started_at.get_or_insert_with(Timestamp::now);
                info.queue_position = None;
                false
            });
            started.push(active);
        }
        started
    }

    fn spawn_all(self: &Arc<Self>, started: Vec<Arc<Active>>) {
        for active in started {
            self.counters.executions.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(ref_id = %active.spec.ref_id, task = %active.spec.task_name, "task started");
            let span = tracing::debug_span!("refcache.task", task = %active.spec.task_name, ref_id = %active.spec.ref_id);
            let handle = active.handle.clone();
            let join = handle.spawn(drive(self.clone(), active.clone()).instrument(span));
            *lock(&active.abort) = Some(join.abort_handle());
        }
    }

    /// Moves a task out of the active set, in one step: its record into the history, its slot back to the pool.
    fn retire(self: &Arc<Self>, active: &Arc<Active>) {
        let info = active.info.borrow().clone();
        let (started, shutting_down) = {
            let mut guard = lock(&self.state);
            let st = &mut *guard;
            let ref_id = &active.spec.ref_id;
            let key = active.spec.key;
            // A complete execution stays indexed (its value answers the key); a failed, cancelled or forgotten one
            // does not.
            if info.status != TaskStatus::Complete || active.forget.load(Ordering::Acquire) {
                unindex(&mut st.index, &key, ref_id);
            }
            if !active.forget.load(Ordering::Acquire) {
                let rerun = (info.status == TaskStatus::Failed).then(|| Rerun {
                    spec: active.spec.clone(),
                    job: active.job.clone(),
                });
                let value = active.value.get().map(Arc::downgrade);
                st.history.insert(info, key, rerun, value, &mut st.index);
            }
            st.sched.remove(ref_id);
            st.active.remove(ref_id);
            if active.holds_slot.swap(false, Ordering::AcqRel) {
                st.sched.finished(&active.spec.task_name);
            }
            (self.admit(st), !st.accepting)
        };
        self.spawn_all(started);
        if shutting_down {
            self.idle.notify_waiters();
        }
    }

    /// Drops the value stored under `key` if it is `ref_id`'s: a later execution of the same call has its own.
    async fn invalidate_own(&self, key: &CacheKey, ref_id: &RefId) {
        self.store.invalidate_if_ref(key, ref_id).await;
    }

    fn unindex(&self, active: &Active) {
        let mut st = lock(&self.state);
        unindex(&mut st.index, &active.spec.key, &active.spec.ref_id);
    }

    async fn complete(
        self: &Arc<Self>,
        active: &Arc<Active>,
        result: Option<Result<Value, TaskError>>,
    ) {
        match result {
            Some(Ok(value)) if active.cas(RUNNING, COMPLETING) => {
                let spec = &active.spec;
                let ttl = spec.options.ttl.unwrap_or(self.config.default_ttl);
                let stored = StoredValue::of_task(spec, value, ttl);
                if self.store.fits(&stored) {
                    // The value is in the store before `complete` is published: whoever sees `complete` (a waiter,
                    // a poll, a lookup of the key) finds the value.
                    let stored = Arc::new(stored);
                    let _ = active.value.set(stored.clone());
                    self.store.insert(stored).await;
                    // Deleted (or its session ended) meanwhile: the value must not outlive its reference. Checked
                    // after the insert, so that either this check or the delete's own invalidation removes it.
                    if active.forget.load(Ordering::SeqCst) {
                        self.invalidate_own(&spec.key, &spec.ref_id).await;
                    }
                    active.record_terminal(TaskStatus::Complete, None, None);
                    active.phase.store(DONE, Ordering::Release);
                } else {
                    let error = TaskError::new(format!(
                        "the value is {} bytes of JSON, more than the cache capacity of {} bytes; raise \
                         `max_capacity_bytes` or return a smaller value",
                        stored.size,
                        self.store.max_bytes()
                    ))
                                        .with_code("TOO_LARGE");
                    active.record_terminal(TaskStatus::Failed, Some(error), None);
                    active.phase.store(DONE, Ordering::Release);
                }
            }
            Some(Err(error)) if active.cas(RUNNING, DONE) => {
                active.record_terminal(TaskStatus::Failed, Some(error), None);
            }
            // Cancelled (the cancel already set the sticky status): the late result, if any, is dropped.
            _ => {}
        }
        self.retire(active);
        active.wake();
    }
}

/// Marks the task failed if its driver is dropped before finishing: the runtime it ran on shut down.
struct DriverGuard {
    inner: Arc<Inner>,
    active: Arc<Active>,
    armed: bool,
}

impl Drop for DriverGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if self.active.cas(RUNNING, DONE) || self.active.cas(COMPLETING, DONE) {
            let error =
                TaskError::new("the tokio runtime running this task shut down before it finished")
                    .with_code("RUNTIME_SHUTDOWN");
            self.active
                .record_terminal(TaskStatus::Failed, Some(error), None);
        }
        self.inner.retire(&self.active);
        self.active.wake();
    }
}

async fn drive(inner: Arc<Inner>, active: Arc<Active>) {
    let mut guard = DriverGuard {
        inner: inner.clone(),
        active: active.clone(),
        armed: true,
    };
    let result = execute(&inner, &active).await;
    inner.complete(&active, result).await;
    guard.armed = false;
}

/// Runs the task through the shared [`execute::run_task`]. `None`: it was cancelled or timed out, and its status
/// is already terminal.
async fn execute(inner: &Inner, active: &Arc<Active>) -> Option<Result<Value, TaskError>> {
    let spec = &active.spec;
    let job = match execute::job_for(spec, active.job.as_ref()) {
        Ok(job) => job,
        Err(error) => return Some(Err(error)),
    };
    let hooks: Arc<dyn TaskHooks> = active.clone();
    let timeout = spec
        .options
        .execution_timeout
        .or(inner.config.default_execution_timeout);
    let limits = RunLimits::new(timeout, inner.config.cancel_grace);
    match execute::run_task(&job, spec, hooks, active.cancel.clone(), limits).await {
        Ending::Finished(result) => Some(result),
        _ => None,
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
        // The store is the near cache: nothing lies beyond it.
        Box::pin(async { Ok(None) })
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
                        st.enqueue(&active);
                        let started = inner.admit(&mut st);
                        if started.is_empty() {
                            tracing::debug!(%ref_id, task = %active.spec.task_name, "task queued");
                        }
                        drop(st);
                        inner.spawn_all(started);
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
        Box::pin(async move {
            let inner = &self.inner;
            let (info, key) = {
                let st = lock(&inner.state);
                match st.active.get(ref_id) {
                    // Its session ended: the record is gone, though the task may still be winding down.
                    Some(active) if active.forget.load(Ordering::Acquire) => return Ok(None),
                    Some(active) => {
                        let mut info = active.info.borrow().clone();
                        if let Some(position) = st.sched.position(ref_id) {
                            info.queue_position = Some(position);
                        }
                        // Complete but not yet retired: the value is on the task.
                        if info.status == TaskStatus::Complete
                            && let Some(value) = active.value.get()
                        {
                            return Ok(Some(TaskSnapshot::new(info, Some(value.clone()))));
                        }
                        (info, active.spec.key)
                    }
                    None => match st.history.get(ref_id) {
                        Some(f) => {
                            if let Some(value) = f.live_value() {
                                return Ok(Some(TaskSnapshot::new(f.info.clone(), Some(value))));
                            }
                            (f.info.clone(), f.key)
                        }
                        None => return Ok(None),
                    },
                }
            };
            if info.status != TaskStatus::Complete {
                return Ok(Some(TaskSnapshot::new(info, None)));
            }
            // A complete task whose value has expired or been evicted is gone. The key's value now may be a later
            // execution's: it is not this reference's.
            Ok(inner
                .store
                .get(&key)
                .await
                .filter(|value| value.ref_id == *ref_id)
                .map(|value| TaskSnapshot::new(info, Some(value))))
        })
    }

    fn wait<'a>(
        &'a self,
        ref_id: &'a RefId,
        deadline: Option<tokio::time::Instant>,
    ) -> BoxFuture<'a, Result<Option<TaskSnapshot>, BackendError>> {
        Box::pin(async move {
            let active = lock(&self.inner.state).active.get(ref_id).cloned();
            if let Some(active) = active {
                let mut rx = active.info.subscribe();
                let done = rx.wait_for(|info| info.status.is_terminal());
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
            self.get(ref_id).await
        })
    }

    fn watch<'a>(
        &'a self,
        ref_id: &'a RefId,
    ) -> BoxFuture<'a, Result<Option<watch::Receiver<TaskInfo>>, BackendError>> {
        let active = lock(&self.inner.state).active.get(ref_id).cloned();
        Box::pin(async move { Ok(active.map(|a| a.info.subscribe())) })
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
                st.history.map.remove(ref_id);
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
                    st.history.map.remove(ref_id);
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
                st.history.map.remove(ref_id);
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
            let mut guard = lock(&inner.state);
            let st = &mut *guard;
            let records: Vec<(RefId, CacheKey)> = st
                .history
                .map
                .values()
                .filter(|f| in_session(&f.info))
                .map(|f| (f.info.ref_id.clone(), f.key))
                .collect();
            for (ref_id, key) in &records {
                st.history.map.remove(ref_id);
                unindex(&mut st.index, key, ref_id);
            }
            tracing::debug!(
                session = session_id,
                tasks = running.len(),
                records = records.len(),
                "session ended"
            );
            Ok(running.len() + records.len())
        })
    }

    fn list(&self, filter: TaskFilter) -> BoxFuture<'_, Result<TaskPage, BackendError>> {
        Box::pin(async move {
            TaskPage::paginate(self.inner.infos_where(|i| filter.matches(i)), &filter)
        })
    }

    fn cleanup(&self, max_age: Duration) -> BoxFuture<'_, Result<usize, BackendError>> {
        Box::pin(async move {
            let mut st = lock(&self.inner.state);
            let before = st.history.map.len();
            st.history.map.retain(|_, record| {
                record
                    .info
                    .finished_at
                    .is_none_or(|t| t.elapsed() <= max_age)
            });
            Ok(before - st.history.map.len())
        })
    }

    fn stats(&self) -> BoxFuture<'_, Result<BackendStats, BackendError>> {
        Box::pin(async move { Ok(self.inner.stats()) })
    }

    fn shutdown(&self, deadline: Duration) -> BoxFuture<'_, Result<(), BackendError>> {
        Box::pin(async move {
            self.inner.shutdown(deadline).await;
            Ok(())
        })
    }
}

impl Inner {
    fn cancel(self: &Arc<Self>, ref_id: &RefId, note: Option<&str>) -> CancelOutcome {
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
            active.cancel.cancel();
            self.retire(&active);
            return CancelOutcome::Cancelled;
        }
        if active.cas(RUNNING, DONE) {
            self.counters.cancellations.fetch_add(1, Ordering::Relaxed);
            active.set_terminal(TaskStatus::Cancelled, None, note);
            // A new call for the same key starts afresh instead of joining a cancelled execution.
            self.unindex(&active);
            active.cancel.cancel();
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
    fn infos_where(&self, keep: impl Fn(&TaskInfo) -> bool) -> Vec<TaskInfo> {
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

    fn stats(&self) -> BackendStats {
        let mut stats = BackendStats::default();
        for info in self.infos_where(|_| true) {
            *stats.by_status.entry(info.status).or_default() += 1;
        }
        {
            let st = lock(&self.state);
            stats.running = st.sched.running() as u64;
            stats.queued = st.sched.queued() as u64;
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

    async fn wait_until_idle(&self, until: tokio::time::Instant) -> bool {
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

    async fn shutdown(self: &Arc<Self>, deadline: Duration) {
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
