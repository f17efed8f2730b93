//! The backend's shared state ([`Inner`]: the store, the lock-guarded [`State`], the counters) and the life of a
//! task in it: admitted into a slot, spawned, driven through the shared `run_task`, completed (value stored before
//! `complete` is published), and retired into the history.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use crate::model::json_text::JsonText;
use tokio::sync::Notify;
use tracing::Instrument;

use super::active::{Active, COMPLETING, DONE, PENDING, RUNNING, TaskOwner, lock};
use super::config::MemoryBackendConfig;
use super::history::{DroppedValue, History, Rerun, record_weight, unindex};
use crate::contract::context::{LocalJob, TaskHooks};
use crate::contract::execute::{self, Ending, FirstAttempt, Measured, RunLimits};
use crate::contract::scheduler::Scheduler;
use crate::contract::spec::TaskSpec;
use crate::contract::store::{StoredValue, ValueStore};
use crate::model::key::{CacheKey, KeyMap};
use crate::model::ref_id::RefId;
use crate::model::task::{TaskError, TaskStatus, Timestamp};

pub(super) struct Inner {
    pub(super) config: MemoryBackendConfig,
    pub(super) store: ValueStore,
    pub(super) state: Mutex<State>,
    pub(super) idle: Notify,
    pub(super) counters: Counters,
    /// Whether a caller's new task may run its first poll in the caller ([`Inner::start`]): `None`, whenever no
    /// scope is in effect in the caller; `Some`, always or never (tests that compare the two paths).
    pub(super) first_poll_inline: Option<bool>,
}

impl State {
    /// Queues a pending task in the scheduler.
    pub(super) fn enqueue(&mut self, active: &Active) {
        let spec = &active.spec;
        self.sched.enqueue(
            spec.ref_id.clone(),
            spec.task_name.clone(),
            spec.options.priority,
            spec.options.max_concurrent,
        );
    }
}

pub(super) struct State {
    pub(super) accepting: bool,
    /// Finished task records.
    pub(super) history: History,
    /// The key-to-ref index: key → its latest execution, while that is running, or complete and recorded. A call
    /// for a key whose execution runs joins it (single-flight); one whose execution just completed finds its value.
    pub(super) index: KeyMap<CacheKey, RefId>,
    /// Tasks not yet retired: pending, running, or cancelled and winding down.
    pub(super) active: KeyMap<RefId, Arc<Active>>,
    /// Which pending task starts next, and the slots.
    pub(super) sched: Scheduler,
}

#[derive(Default)]
pub(super) struct Counters {
    pub(super) executions: AtomicU64,
    pub(super) coalesced: AtomicU64,
    pub(super) cancellations: AtomicU64,
    pub(super) retries: AtomicU64,
    pub(super) timeouts: AtomicU64,
}

impl Inner {
    /// Under the state lock: moves queued tasks into free slots and marks them processing. The caller spawns the
    /// returned tasks after releasing the lock (a spawn on a dead runtime drops the future at once, and its guard,
    /// made with the future in [`drive`], takes the lock).
    ///
    /// Tasks start in queue order (priority, then FIFO), except that a task whose name is at its
    /// `max_concurrent` waits, and the tasks behind it may pass it.
    pub(super) fn admit(&self, st: &mut State) -> Vec<Arc<Active>> {
        let mut started = Vec::new();
        while let Some((ref_id, name)) = st.sched.start_next() {
            let active = st.active.get(&ref_id).cloned();
            let Some(active) = active.filter(|a| a.cas(PENDING, RUNNING)) else {
                st.sched.finished(&name);
                continue;
            };
            Self::mark_started(&active);
            started.push(active);
        }
        started
    }

    /// Under the state lock, for a task the scheduler has just counted as running and moved from pending to
    /// running: it holds its slot, and its record says `processing`.
    pub(super) fn mark_started(active: &Active) {
        active.holds_slot.store(true, Ordering::Release);
        // Waiters wait for a terminal status; this change is read by polls, without waking anyone.
        active.info.send_if_modified(|info| {
            info.status = TaskStatus::Processing;
            info.started_at.get_or_insert_with(Timestamp::now);
            info.queue_position = None;
            false
        });
    }

    /// Whether a caller's new task, to run on `handle`, may run its first poll in the caller now (see
    /// [`start`](Self::start)): on a current-thread runtime, while no scope is in effect in the caller.
    ///
    /// Only on a current-thread runtime, where it changes nothing a caller can time: there a spawned driver runs
    /// on the caller's one thread as soon as the caller waits, so a body that computes before its first `.await`
    /// holds the caller up either way. On a multi-threaded runtime it would not: the caller answers with a
    /// reference at `async_timeout` from another worker while the work holds its own (the suite's
    /// `async_timeout::work_that_never_yields_still_answers_a_reference_at_the_timeout` pins this), and a first
    /// poll in the caller's task would make the caller wait for the whole of such work.
    pub(super) fn may_poll_inline(&self, handle: &tokio::runtime::Handle) -> bool {
        self.first_poll_inline.unwrap_or_else(|| {
            handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread
                && !crate::model::scope::scope_here()
        })
    }

    pub(super) fn spawn_all(self: &Arc<Self>, started: Vec<Arc<Active>>) {
        for active in started {
            self.start(active, false);
        }
    }

    /// Starts one admitted task: its driver spawned on the task's runtime, or, with `inline`, its first attempt
    /// started and polled once here, in the caller ([`first_poll`](Self::first_poll)), and a driver made and
    /// spawned only if that attempt is still pending (or failed, for the retries to take it on).
    ///
    /// A function that returns at once then finishes inside that poll, by a short road: its value is stored,
    /// `complete` published and the task retired before the caller goes on, with no driver future, no spawn, no
    /// wake-up, no timer and no `async_timeout` wait. The steps of the road are the driver's own, in its order
    /// (the single-flight claim made by `submit` before the body runs, the metrics, the store before `complete`,
    /// [`complete`](Self::complete) and the retire, the evicted values dropped), so the bounds, TTLs, counters,
    /// hooks and the span do not depend on the road; `cache::call::tests::a_first_poll_in_the_caller_answers_as_a_spawned_driver`
    /// pins that both answer the same. A first attempt still pending after its poll is handed to a spawned driver
    /// as it is: tokio polls a spawned task at once, with its own waker, so nothing the first poll waited on is
    /// missed (a future must heed the latest poll's waker only).
    ///
    /// Only for the caller's own new task, on a current-thread runtime ([`may_poll_inline`](Self::may_poll_inline)
    /// says why), and only while no scope is in effect in the caller (`scope_here`: an async scope of the caller's
    /// task, or a sync scope of this thread; a scope of another request elsewhere in the process does not count):
    /// the first poll runs in the caller's task, so a task-local of the caller (actor, session, call options, an
    /// observer of submissions) would otherwise be seen by the function body and by the calls it makes, where a
    /// spawned driver sees none.
    pub(super) fn start(self: &Arc<Self>, active: Arc<Active>, inline: bool) {
        self.counters.executions.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(ref_id = %active.spec.ref_id, task = %active.spec.task_name, "task started");
        let span = tracing::debug_span!("refcache.task", task = %active.spec.task_name, ref_id = %active.spec.ref_id);
        if !inline {
            let join = active
                .handle
                .spawn(drive(self.clone(), active.clone()).instrument(span));
            *lock(&active.abort) = Some(join.abort_handle());
            return;
        }
        let join = match span.in_scope(|| self.first_poll(&active)) {
            Polled::Done => return,
            // Still running: its own task from now on.
            Polled::Running(first) => active
                .handle
                .spawn(drive_from(self.clone(), active.clone(), first).instrument(span)),
            // It failed (or no job was found): the driver decides here, in the caller, as it would have in the
            // first poll (a permanent failure ends the task now; a retry waits, spawned).
            polled => {
                let mut driver: std::pin::Pin<Box<dyn Future<Output = ()> + Send>> = match polled {
                    Polled::Failed(first) => {
                        Box::pin(drive_from(self.clone(), active.clone(), first).instrument(span))
                    }
                    _ => Box::pin(drive(self.clone(), active.clone()).instrument(span)),
                };
                if driver
                    .as_mut()
                    .poll(&mut Context::from_waker(Waker::noop()))
                    .is_ready()
                {
                    return;
                }
                active.handle.spawn(driver)
            }
        };
        *lock(&active.abort) = Some(join.abort_handle());
    }

    /// The first poll in the caller ([`start`](Self::start)): the first attempt started and polled once. Done: it
    /// returned a value, and the task is complete and retired (the short road). Otherwise what a driver takes on:
    /// the attempt, pending or failed, with its job and the metrics begun; or nothing, when no job was found (the
    /// driver fails the task as it always does).
    fn first_poll(self: &Arc<Self>, active: &Arc<Active>) -> Polled {
        let spec = &active.spec;
        let Ok(job) = execute::job_for(spec, active.job.as_ref()) else {
            return Polled::NoJob;
        };
        let hooks: Arc<dyn TaskHooks> = active.clone();
        let measured = Measured::begin(spec, hooks.backend_name());
        // The execution timeout counts from here, as the driver's does from its start (read only when there is one).
        let deadline = limits(self, active).deadline_from_now();
        // A panic out of the retire (the job's own call and its polls are caught: a failure) must not leave the
        // task running: as the driver's own guard does when its future is dropped.
        let mut guard = FirstPollGuard {
            inner: self,
            active,
            armed: true,
        };
        let mut attempt = execute::attempt(
            &job,
            spec.args.clone(),
            execute::lazy_context_for(spec, hooks),
        );
        let polled = attempt
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()));
        let attempt = match polled {
            Poll::Ready(Ok(value)) => {
                drop(attempt);
                measured.end_completed();
                let dropped = self.complete(active, Some(Ok(value)));
                guard.armed = false;
                self.drop_values_now(dropped);
                return Polled::Done;
            }
            Poll::Ready(Err(error)) => FirstAttempt::Failed(Box::new(error)),
            Poll::Pending => FirstAttempt::Running(attempt),
        };
        guard.armed = false;
        let failed = matches!(attempt, FirstAttempt::Failed(_));
        let first = Box::new(First {
            job,
            measured,
            attempt,
            deadline,
        });
        if failed {
            Polled::Failed(first)
        } else {
            Polled::Running(first)
        }
    }

    /// Moves a task out of the active set, in one step: its record into the history, its slot back to the pool.
    /// For a caller that cannot await: the values of the records this evicts are removed from the store by a
    /// spawned task ([`drop_values_later`](Self::drop_values_later)).
    pub(super) fn retire(self: &Arc<Self>, active: &Arc<Active>) {
        let dropped = self.retire_keeping_values(active);
        self.drop_values_later(&active.handle, dropped);
    }

    /// [`retire`](Self::retire), but the values of the records it evicts (already revoked, so no read hands them
    /// out) are answered for the caller to remove with [`drop_values`](Self::drop_values). The driver does so
    /// inline: in the steady state every retire evicts a record, and a spawned task per retire was the largest
    /// single cost of a miss.
    pub(super) fn retire_keeping_values(
        self: &Arc<Self>,
        active: &Arc<Active>,
    ) -> Vec<DroppedValue> {
        let info = active.info.borrow().clone();
        // Weighed before the lock: a failed task keeps its arguments (to re-run it), and counting 1 MiB of them
        // must not hold up every other call.
        let weight = record_weight(
            &info,
            (info.status == TaskStatus::Failed).then_some(&active.spec.args),
        );
        let mut dropped = Vec::new();
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
                    spec: TaskSpec::clone(&active.spec),
                    job: active.job.clone(),
                });
                let value = active.value.get().map(Arc::downgrade);
                let output = active.output.get().cloned();
                dropped = st
                    .history
                    .insert(info, key, rerun, value, output, weight, &mut st.index);
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
        dropped
    }

    /// Removes the (already revoked) values of dropped records from the store, from a task of its own: the
    /// caller holds no runtime context it may await in. Should the runtime be gone, the revoked values are never
    /// handed out, and the store's TTL and byte bound drop them.
    pub(super) fn drop_values_later(
        &self,
        handle: &tokio::runtime::Handle,
        dropped: Vec<DroppedValue>,
    ) {
        if dropped.is_empty() {
            return;
        }
        let store = self.store.clone();
        handle.spawn(async move {
            for (key, ref_id) in dropped {
                store.invalidate_if_ref(&key, &ref_id).await;
            }
        });
    }

    /// Removes the (already revoked) values of dropped records from the store.
    pub(super) async fn drop_values(&self, dropped: Vec<DroppedValue>) {
        self.drop_values_now(dropped);
    }

    /// [`drop_values`](Self::drop_values), without the future (the store never waits).
    pub(super) fn drop_values_now(&self, dropped: Vec<DroppedValue>) {
        for (key, ref_id) in dropped {
            self.store.invalidate_if_ref_now(&key, &ref_id);
        }
    }

    /// Drops the value stored under `key` if it is `ref_id`'s: a later execution of the same call has its own.
    pub(super) async fn invalidate_own(&self, key: &CacheKey, ref_id: &RefId) {
        self.store.invalidate_if_ref(key, ref_id).await;
    }

    pub(super) fn unindex(&self, active: &Active) {
        let mut st = lock(&self.state);
        unindex(&mut st.index, &active.spec.key, &active.spec.ref_id);
    }

    /// Records the task's ending and retires it; answers the values of the records the retire evicted, for the
    /// driver to remove once it can no longer be retired twice (see [`drive`]).
    pub(super) fn complete(
        self: &Arc<Self>,
        active: &Arc<Active>,
        result: Option<Result<JsonText, TaskError>>,
    ) -> Vec<DroppedValue> {
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
                    self.store.insert_now(stored);
                    // Deleted (or its session ended) meanwhile: the value must not outlive its reference. Checked
                    // after the insert, so that either this check or the delete's own invalidation removes it.
                    if active.forget.load(Ordering::SeqCst) {
                        self.store.invalidate_if_ref_now(&spec.key, &spec.ref_id);
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
        let dropped = self.retire_keeping_values(active);
        active.wake();
        dropped
    }
}

impl TaskOwner for Inner {
    fn count_retry(&self) {
        self.counters.retries.fetch_add(1, Ordering::Relaxed);
    }

    fn count_timeout(&self, active: &Active) {
        self.counters.timeouts.fetch_add(1, Ordering::Relaxed);
        self.unindex(active);
    }
}

/// Marks the task failed if its driver is dropped before finishing: the runtime it ran on shut down.
pub(super) struct DriverGuard {
    pub(super) inner: Arc<Inner>,
    pub(super) active: Arc<Active>,
    pub(super) armed: bool,
}

impl Drop for DriverGuard {
    fn drop(&mut self) {
        if self.armed {
            abandon(&self.inner, &self.active);
        }
    }
}

/// [`DriverGuard`] for the first poll in the caller, which holds the task by reference.
struct FirstPollGuard<'a> {
    inner: &'a Arc<Inner>,
    active: &'a Arc<Active>,
    armed: bool,
}

impl Drop for FirstPollGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            abandon(self.inner, self.active);
        }
    }
}

/// A task whose driver went before it finished: failed, unless it is already terminal, and retired.
fn abandon(inner: &Arc<Inner>, active: &Arc<Active>) {
    if active.cas(RUNNING, DONE) || active.cas(COMPLETING, DONE) {
        let error =
            TaskError::new("the tokio runtime running this task shut down before it finished")
                .with_code("RUNTIME_SHUTDOWN");
        active.record_terminal(TaskStatus::Failed, Some(error), None);
    }
    inner.retire(active);
    active.wake();
}

/// How the first poll in the caller ([`Inner::first_poll`]) left a task.
enum Polled {
    /// Complete and retired.
    Done,
    /// Its first attempt is pending.
    Running(Box<First>),
    /// Its first attempt failed.
    Failed(Box<First>),
    /// No job runs it.
    NoJob,
}

/// What a driver takes on from the first poll in the caller ([`Inner::start`]): the first attempt, its job, and
/// the metrics begun for it.
pub(super) struct First {
    job: LocalJob,
    measured: Measured,
    attempt: FirstAttempt,
    /// When the execution timeout passes, counted from the first poll.
    deadline: Option<tokio::time::Instant>,
}

/// Drives a task to its end and retires it.
///
/// The guard is made here, before the future: a driver spawned and dropped before its first poll (its runtime
/// shut down first) still fails and retires its task, rather than leave it `processing` with its key claimed.
pub(super) fn drive(inner: Arc<Inner>, active: Arc<Active>) -> impl Future<Output = ()> + Send {
    let guard = DriverGuard {
        inner,
        active,
        armed: true,
    };
    async move {
        let result = execute(&guard.inner, &guard.active).await;
        finish(guard, result);
    }
}

/// [`drive`], from the first attempt the caller started ([`Inner::start`]). A future of its own (not `drive` with
/// an option), so that what it carries does not grow every other task's driver. Its guard too is made before the
/// future.
fn drive_from(
    inner: Arc<Inner>,
    active: Arc<Active>,
    first: Box<First>,
) -> impl Future<Output = ()> + Send {
    let guard = DriverGuard {
        inner,
        active,
        armed: true,
    };
    async move {
        let First {
            job,
            measured,
            attempt,
            deadline,
        } = *first;
        let (inner, active) = (&guard.inner, &guard.active);
        let limits = limits(inner, active);
        let hooks: Arc<dyn TaskHooks> = active.clone();
        let ending = execute::run_task_from(
            &job,
            &active.spec,
            hooks,
            active.cancel_token().clone(),
            limits,
            measured,
            attempt,
            deadline,
        )
        .await;
        finish(guard, finished(ending));
    }
}

/// A driver's last step: the task completed (or failed) with `result`, retired, and the values its retire
/// evicted removed.
fn finish(mut guard: DriverGuard, result: Option<Result<JsonText, TaskError>>) {
    let dropped = guard.inner.complete(&guard.active, result);
    // Retired: from here a drop of this future (its runtime shutting down) must not retire it again. The evicted
    // values are removed inline, not from a task of their own; should this future be dropped first, they stay
    // revoked (never handed out) until the store's TTL and byte bound drop them.
    guard.armed = false;
    guard.inner.drop_values_now(dropped);
}

/// The limits of one execution of `active`: its own execution timeout, else the backend's, and the grace after a
/// cancel.
fn limits(inner: &Inner, active: &Active) -> RunLimits {
    let timeout = active
        .spec
        .options
        .execution_timeout
        .or(inner.config.default_execution_timeout);
    RunLimits::new(timeout, inner.config.cancel_grace)
}

/// `None`: cancelled or timed out, its status already terminal.
fn finished(ending: Ending) -> Option<Result<JsonText, TaskError>> {
    match ending {
        Ending::Finished(result) => Some(result),
        _ => None,
    }
}

/// Runs the task through the shared [`execute::run_task`]. `None`: it was cancelled or timed out, and its status
/// is already terminal.
pub(super) async fn execute(
    inner: &Inner,
    active: &Arc<Active>,
) -> Option<Result<JsonText, TaskError>> {
    let spec = &active.spec;
    let job = match execute::job_for(spec, active.job.as_ref()) {
        Ok(job) => job,
        Err(error) => return Some(Err(error)),
    };
    let hooks: Arc<dyn TaskHooks> = active.clone();
    let limits = limits(inner, active);
    finished(execute::run_task(&job, spec, hooks, active.cancel_token().clone(), limits).await)
}
