//! Running tasks in this process: the tasks it holds (submitted here in `local` mode, claimed from the table in
//! `workers` mode), the shared [`Scheduler`] that starts them (slots, priority, `max_concurrent`), and the
//! [`TaskHooks`] that write each change through to Postgres.
//!
//! A task's life here: `hold` → scheduler → `drive`: `start` (pending → processing, counted as a delivery, only if
//! this process still owns the row) → [`run_task`] (retries, timeout, cancel grace, all shared with the in-process
//! backend) → one terminal transition (the value inserted in the same transaction) → release the slot.

use std::future::Future;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures::future::BoxFuture;
use refcache_core::{
    AskError, Ending, InputRequest, LocalJob, OutputLog, OutputStream, RefId, RetryInfo, RunLimits,
    StoredValue, TaskError, TaskHooks, TaskInfo, TaskProgress, TaskSpec, TaskStatus, Timestamp,
    job_for, run_task,
};
use serde_json::Value;
use tokio::runtime::Handle;
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::held::{Held, RunState};
use super::hub::Follower;
use super::inner::{Inner, lock};
use super::input::Answer;
use super::transition::Transition;

struct Start {
    ref_id: RefId,
    spec: Arc<TaskSpec>,
    job: Option<LocalJob>,
    info: Option<TaskInfo>,
    cancel: CancellationToken,
    /// Its row was inserted started ([`Inner::hold_started`]): `info` is its record, and no start is written.
    started: bool,
    /// A hint about it came before it was held: its row is read before it runs.
    verify: bool,
}

impl Inner {
    /// Takes a task to run here; it starts when the scheduler lets it.
    pub(crate) fn hold(
        self: &Arc<Self>,
        spec: Arc<TaskSpec>,
        job: Option<LocalJob>,
        info: Option<TaskInfo>,
    ) {
        self.hold_then(spec, job, info, true);
    }

    /// Takes a task to run here, starting queued tasks only if `admit` (else at the next [`Inner::admit_now`]).
    pub(crate) fn hold_then(
        self: &Arc<Self>,
        spec: Arc<TaskSpec>,
        job: Option<LocalJob>,
        info: Option<TaskInfo>,
        admit_now: bool,
    ) {
        let started = {
            let mut st = lock(&self.run);
            let ref_id = spec.ref_id.clone();
            if st.held.contains_key(&ref_id) {
                return;
            }
            st.sched.enqueue(
                ref_id.clone(),
                spec.task_name.clone(),
                spec.options.priority,
                spec.options.max_concurrent,
            );
            st.held.insert(
                ref_id,
                Held {
                    spec,
                    job,
                    info,
                    cancel: CancellationToken::new(),
                    running: false,
                },
            );
            if admit_now {
                admit(&mut st)
            } else {
                Vec::new()
            }
        };
        self.spawn_all(started);
    }

    /// Takes a task to run here at once whose row was inserted started (`processing`, its first delivery
    /// counted) with `info` as its record, on the run slot [`Inner::reserve_slot`] gave it: no start statement.
    /// Answers `false` (the slot given back) if this process holds the task already.
    pub(crate) fn hold_started(
        self: &Arc<Self>,
        spec: Arc<TaskSpec>,
        job: Option<LocalJob>,
        info: TaskInfo,
        slot: Reserved,
        changed: impl FnOnce() -> bool,
    ) -> bool {
        let start = {
            let mut st = lock(&self.run);
            let ref_id = spec.ref_id.clone();
            if st.held.contains_key(&ref_id) {
                return false;
            }
            let cancel = CancellationToken::new();
            st.held.insert(
                ref_id.clone(),
                Held {
                    spec: spec.clone(),
                    job: job.clone(),
                    info: None,
                    cancel: cancel.clone(),
                    running: true,
                },
            );
            // Under the run lock, after the task is in `held`: a hint whose poke came before this is seen here
            // (the row is read before the job runs); one after it finds the task held (`on_hint` reads the row).
            let verify = changed();
            Start {
                ref_id,
                spec,
                job,
                info: Some(info),
                cancel,
                started: true,
                verify,
            }
        };
        // The slot is the held task's now: its release gives it back.
        slot.keep();
        self.spawn_all(vec![start]);
        true
    }

    /// A run slot for a task of `name` at once, counted as running, when the scheduler would start it first anyway
    /// (a slot free, nothing queued, no `max_concurrent`: [`Scheduler::start_now`]); `None` otherwise, and the
    /// task is held the usual way. Given back when dropped unless [`Reserved::keep`] was called.
    ///
    /// [`Scheduler::start_now`]: refcache_core::Scheduler::start_now
    pub(crate) fn reserve_slot(
        self: &Arc<Self>,
        name: &Arc<str>,
        max_concurrent: Option<u32>,
    ) -> Option<Reserved> {
        lock(&self.run)
            .sched
            .start_now(name, max_concurrent)
            .then(|| Reserved {
                inner: self.clone(),
                name: Some(name.clone()),
            })
    }

    /// Starts what the free slots allow.
    pub(crate) fn admit_now(self: &Arc<Self>) {
        let started = admit(&mut lock(&self.run));
        self.spawn_all(started);
    }

    fn spawn_all(self: &Arc<Self>, started: Vec<Start>) {
        for start in started {
            let span = tracing::debug_span!("refcache.task", task = %start.spec.task_name, ref_id = %start.ref_id);
            tokio::spawn(drive(self.clone(), start).instrument(span));
        }
    }

    /// The task is done here: its slot is free, and the next queued task may start. A worker first claims what
    /// waits in the table (its claiming loop then starts the next task), so that a task of higher priority queued
    /// meanwhile starts before the lower ones it already holds.
    fn release(self: &Arc<Self>, ref_id: &RefId) {
        let claims_first = self.consumes && !self.consuming.is_cancelled();
        let started = {
            let mut st = lock(&self.run);
            if let Some(held) = st.held.remove(ref_id) {
                if held.running {
                    st.sched.finished(&held.spec.task_name);
                } else {
                    st.sched.remove(ref_id);
                }
            }
            if claims_first {
                Vec::new()
            } else {
                admit(&mut st)
            }
        };
        self.spawn_all(started);
        self.released.notify_waiters();
        self.work.notify_one();
    }

    /// A slot reserved but never used (the submission joined another, hit, or failed): it is free again, and the
    /// next queued task may start, as after a release.
    fn give_back(self: &Arc<Self>, name: &str) {
        let claims_first = self.consumes && !self.consuming.is_cancelled();
        let started = {
            let mut st = lock(&self.run);
            st.sched.finished(name);
            if claims_first {
                Vec::new()
            } else {
                admit(&mut st)
            }
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            self.spawn_all(started);
        }
        self.work.notify_one();
    }

    /// Whether this process holds `ref_id`.
    pub(crate) fn holds(&self, ref_id: &RefId) -> bool {
        lock(&self.run).held.contains_key(ref_id)
    }

    /// The task was cancelled, deleted or finished elsewhere (its row says so): a queued one leaves the queue, a
    /// running one has its token fired.
    pub(crate) fn stop_held(self: &Arc<Self>, ref_id: &RefId) {
        {
            let st = lock(&self.run);
            match st.held.get(ref_id) {
                Some(held) if held.running => {
                    held.cancel.cancel();
                    return;
                }
                Some(_) => {}
                None => return,
            }
        }
        self.release(ref_id);
    }

    /// After a reconnect: notifications may have been missed, so every held task's row is read again.
    pub(crate) fn resync_held(self: &Arc<Self>) {
        let refs = self.held_refs();
        if refs.is_empty() {
            return;
        }
        let inner = self.clone();
        tokio::spawn(async move {
            let Ok(live) = inner.live_statuses(&refs).await else {
                return;
            };
            for ref_id in refs {
                if !live.contains(&ref_id) {
                    inner.stop_held(&ref_id);
                }
            }
        });
    }

    pub(crate) fn held_refs(&self) -> Vec<RefId> {
        lock(&self.run).held.keys().cloned().collect()
    }

    /// Waits until nothing is held, or `until`; answers whether nothing is.
    pub(crate) async fn wait_idle(&self, until: tokio::time::Instant) -> bool {
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if lock(&self.run).len() == 0 {
                return true;
            }
            if tokio::time::timeout_at(until, released).await.is_err() {
                return lock(&self.run).len() == 0;
            }
        }
    }

    /// A terminal write that must land: retried through an outage, with backoff, until Postgres answers (or the
    /// task record's TTL has passed, when nobody can read it anyway).
    async fn write_terminal(
        &self,
        ref_id: &RefId,
        info: &TaskInfo,
        counter: &'static str,
        value: Option<&(String, String, Duration)>,
        near: Option<Arc<StoredValue>>,
    ) -> Option<bool> {
        let give_up = tokio::time::Instant::now() + self.config.task_ttl;
        let mut backoff = Duration::from_millis(50);
        loop {
            let written = if counter.is_empty() {
                // The common end: shares its statement and commit with the other ends written meanwhile.
                self.end(ref_id, info, value, near.clone()).await
            } else {
                let change = Transition {
                    // A task that ends while it waits for an answer (its time limit) ends from there.
                    from: &[TaskStatus::Processing, TaskStatus::InputRequired],
                    owner: true,
                    counter,
                    dead: false,
                    value,
                };
                self.transition(ref_id, info, change).await
            };
            match written {
                Ok(done) => return Some(done),
                Err(err) if tokio::time::Instant::now() < give_up => {
                    tracing::warn!(%ref_id, %err, "cannot record a task's end yet; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
                Err(err) => {
                    tracing::error!(%ref_id, %err, "gave up recording a task's end");
                    return None;
                }
            }
        }
    }

    /// Fails a task whose workers keep getting lost (or, in `local` mode, whose process is gone), and files it in
    /// the dead-letter view.
    pub(crate) async fn fail_lost(&self, ref_id: &RefId, message: String) {
        let Ok(Some((status, mut info))) = self.read(ref_id).await else {
            return;
        };
        if status.is_terminal() {
            return;
        }
        info.status = TaskStatus::Failed;
        info.finished_at = Some(Timestamp::now());
        info.queue_position = None;
        info.error = Some(
            TaskError::new(message)
                .with_code("WORKER_LOST")
                .with_remediation("call it again; if it keeps happening, look for what kills the process running it")
                .permanent(),
        );
        let change = Transition {
            from: &[status],
            owner: false,
            counter: "",
            dead: true,
            value: None,
        };
        if matches!(self.transition(ref_id, &info, change).await, Ok(true)) {
            tracing::warn!(%ref_id, task = %info.task_name, "task failed: worker lost");
        }
    }
}

/// Under the run lock: hands free slots to queued tasks.
fn admit(st: &mut RunState) -> Vec<Start> {
    let mut started = Vec::new();
    while let Some((ref_id, name)) = st.sched.start_next() {
        let Some(held) = st.held.get_mut(&ref_id) else {
            st.sched.finished(&name);
            continue;
        };
        held.running = true;
        started.push(Start {
            ref_id,
            spec: held.spec.clone(),
            job: held.job.clone(),
            info: held.info.take(),
            cancel: held.cancel.clone(),
            started: false,
            verify: false,
        });
    }
    started
}

/// A run slot reserved for a task about to be held here ([`Inner::reserve_slot`]), given back when dropped unless
/// kept (the held task has it then).
pub(crate) struct Reserved {
    inner: Arc<Inner>,
    name: Option<Arc<str>>,
}

impl Reserved {
    fn keep(mut self) {
        self.name = None;
    }
}

impl Drop for Reserved {
    fn drop(&mut self) {
        if let Some(name) = self.name.take() {
            self.inner.give_back(&name);
        }
    }
}

/// Releases the slot however `drive` ends (a runtime shutting down drops it mid-way).
struct Release {
    inner: Arc<Inner>,
    ref_id: RefId,
}

impl Drop for Release {
    fn drop(&mut self) {
        self.inner.release(&self.ref_id);
    }
}

async fn drive(inner: Arc<Inner>, start: Start) {
    let _release = Release {
        inner: inner.clone(),
        ref_id: start.ref_id.clone(),
    };
    run_one(&inner, &start).await;
}

async fn run_one(inner: &Arc<Inner>, start: &Start) {
    let Start {
        ref_id, spec, job, ..
    } = start;
    let info = match (&start.info, start.started) {
        // Inserted started: its row is `processing` with this record, owned here, one delivery counted; read
        // first if a hint about it came before it was held (another replica cancelled or deleted it).
        (Some(info), true) => {
            if start.verify
                && !matches!(inner.status(ref_id).await, Ok(Some(s)) if !s.is_terminal())
            {
                tracing::debug!(%ref_id, "a task inserted started was changed before it ran: not run");
                let _ = inner.uncount("executions").await;
                return;
            }
            info.clone()
        }
        _ => match inner.start(ref_id, start.info.clone()).await {
            Some(info) => info,
            None => return,
        },
    };
    tracing::debug!(%ref_id, task = %spec.task_name, "task started");
    let hooks = Hooks::start(
        inner.clone(),
        ref_id.clone(),
        info,
        spec.options.output_cap(),
    );
    let ending = match job_for(spec, job.as_ref()) {
        Ok(job) => {
            let timeout = spec
                .options
                .execution_timeout
                .or(inner.config.default_execution_timeout);
            let limits = RunLimits::new(timeout, inner.config.cancel_grace);
            let dyn_hooks: Arc<dyn TaskHooks> = hooks.clone();
            let ending = run_task(&job, spec, dyn_hooks, start.cancel.clone(), limits).await;
            if let Ending::Finished(Err(_)) = &ending {
                inner.reruns.insert(ref_id.clone(), job);
            }
            ending
        }
        Err(error) => Ending::Finished(Err(error)),
    };
    hooks.flush().await;
    let mut info = hooks.info();
    match ending {
        Ending::Finished(Ok(value)) => {
            let ttl = spec.options.ttl.unwrap_or(inner.config.default_ttl);
            let mut stored = StoredValue::of_task(spec, value, ttl);
            info.status = TaskStatus::Complete;
            info.finished_at = Some(Timestamp::now());
            info.error = None;
            let encoded = super::codec::encode_value(&mut stored);
            // The copy for the near cache, put there by the end once it applied (and this process's followers
            // settled with it).
            let near = inner.near.fits(&stored).then(|| Arc::new(stored));
            let answer = inner
                .write_terminal(ref_id, &info, "", Some(&encoded), near)
                .await;
            if answer == Some(true) {
                tracing::debug!(%ref_id, "task complete");
            } else {
                tracing::debug!(%ref_id, ?answer, "a late result was dropped");
            }
        }
        Ending::Finished(Err(error)) => {
            info.status = TaskStatus::Failed;
            info.finished_at = Some(Timestamp::now());
            info.error = Some(error);
            inner.write_terminal(ref_id, &info, "", None, None).await;
        }
        // The timeout's failure was written by the hook when it fired; wait for it to land.
        Ending::TimedOut => hooks.timed_out_written().await,
        _ => {}
    }
}

impl Inner {
    /// Claims a held task for running: pending → processing, one more delivery, only while this process owns it.
    /// Answers its record, or `None` when it must not run (cancelled, deleted, finished, taken over, or dead).
    async fn start(self: &Arc<Self>, ref_id: &RefId, known: Option<TaskInfo>) -> Option<TaskInfo> {
        // The record the row held when this process took the task is still the row's while it is pending here (a
        // change of it changes its status, and the start then refuses); else it is read now.
        let mut info = match known {
            Some(info) => info,
            None => self.read(ref_id).await.ok()??.1,
        };
        info.status = TaskStatus::Processing;
        info.started_at.get_or_insert_with(Timestamp::now);
        info.queue_position = None;
        match self.claim(ref_id, &info).await {
            Ok(Some(_deliveries)) => Some(info),
            Ok(None) => {
                if let Ok(Some(n)) = self.dead_on_arrival(ref_id).await {
                    self.fail_lost(
                        ref_id,
                        format!(
                            "worker lost: the task was delivered {n} times and every worker running it stopped \
                             before it finished (max_deliveries = {})",
                            self.config.max_deliveries
                        ),
                    )
                    .await;
                }
                None
            }
            // Postgres is down: the lease runs out, and the task comes back (workers) or fails `worker lost`.
            Err(err) => {
                tracing::debug!(%ref_id, %err, "cannot start a task");
                None
            }
        }
    }
}

/// A running task's record, mirrored here and written through to Postgres: progress, retry notes, the status line
/// and output by a writer task that sends only the latest state and what was written since its last round trip (a
/// task reporting progress or printing in a tight loop costs one write per round trip, not one per report).
///
/// Output is queued in an [`OutputLog`] of the task's cap (so a blocking thread's write is a copy under a lock,
/// never I/O, and a writer faster than the database loses its oldest bytes here, counted as dropped), and shipped
/// batch by batch, each appended to the task's log in one statement.
///
/// Questions (`ask_input`, `input_closed`) are written in the order asked, by one chain of tasks: a close never
/// overtakes the ask it closes.
struct Hooks {
    inner: Arc<Inner>,
    ref_id: RefId,
    me: Weak<Hooks>,
    /// The runtime the task runs on: a sync body's blocking thread asks and closes through it.
    runtime: Handle,
    cap: usize,
    state: Mutex<HookState>,
    wake: Notify,
    writer: Mutex<Option<JoinHandle<()>>>,
    timeout_write: Mutex<Option<JoinHandle<()>>>,
    /// The last write of a question (an ask or a close): the next one waits for it.
    input_write: Mutex<Option<JoinHandle<()>>>,
}

struct HookState {
    info: TaskInfo,
    partial: Option<Value>,
    dirty: bool,
    counters: Vec<&'static str>,
    /// Output written since the last batch was taken.
    output: Option<OutputLog>,
    /// Bytes written that never reached the table (a flush that failed), counted before the next batch.
    output_lost: u64,
    stop: bool,
}

impl Hooks {
    fn start(inner: Arc<Inner>, ref_id: RefId, info: TaskInfo, cap: usize) -> Arc<Self> {
        let hooks = Arc::new_cyclic(|me| Self {
            inner,
            ref_id,
            me: me.clone(),
            runtime: Handle::current(),
            cap: cap.max(1),
            state: Mutex::new(HookState {
                info,
                partial: None,
                dirty: false,
                counters: Vec::new(),
                output: None,
                output_lost: 0,
                stop: false,
            }),
            wake: Notify::new(),
            writer: Mutex::new(None),
            timeout_write: Mutex::new(None),
            input_write: Mutex::new(None),
        });
        let writer = tokio::spawn(write_changes(hooks.clone()));
        *lock(&hooks.writer) = Some(writer);
        hooks
    }

    fn info(&self) -> TaskInfo {
        lock(&self.state).info.clone()
    }

    fn change(&self, f: impl FnOnce(&mut HookState)) {
        f(&mut lock(&self.state));
        self.wake.notify_one();
    }

    /// Writes what is left and stops the writer.
    async fn flush(&self) {
        self.change(|s| s.stop = true);
        let writer = lock(&self.writer).take();
        if let Some(writer) = writer {
            let _ = writer.await;
        }
    }

    async fn timed_out_written(&self) {
        let write = lock(&self.timeout_write).take();
        if let Some(write) = write {
            let _ = write.await;
        }
    }

    /// Runs `write` after the question writes before it.
    fn chain_input_write(&self, write: impl Future<Output = ()> + Send + 'static) {
        let mut last = lock(&self.input_write);
        let before = last.take();
        *last = Some(self.runtime.spawn(async move {
            if let Some(before) = before {
                let _ = before.await;
            }
            write.await;
        }));
    }
}

/// Ships a batch of output: the bytes the batch's log holds, after those it dropped (and those lost before).
async fn ship_output(h: &Hooks, log: OutputLog, lost: u64) {
    let chunk = log.read(0, log.cap(), false);
    let skipped = lost + chunk.offset;
    let bytes = chunk.text.into_bytes();
    if bytes.is_empty() {
        lock(&h.state).output_lost += skipped;
        return;
    }
    match h
        .inner
        .append_output(&h.ref_id, skipped, &bytes, h.cap)
        .await
    {
        Ok(_) => {}
        Err(err) => {
            // Offsets still count these bytes: a reader is told they were dropped.
            tracing::debug!(ref_id = %h.ref_id, %err, "refcache: task output could not be written; dropped");
            lock(&h.state).output_lost += skipped + bytes.len() as u64;
        }
    }
}

async fn write_changes(h: Arc<Hooks>) {
    loop {
        let (info, counters, output, stop) = {
            let mut s = lock(&h.state);
            let info = std::mem::take(&mut s.dirty).then(|| s.info.clone());
            let output = s
                .output
                .take()
                .map(|log| (log, std::mem::take(&mut s.output_lost)));
            (info, std::mem::take(&mut s.counters), output, s.stop)
        };
        if info.is_none() && counters.is_empty() && output.is_none() && !stop {
            // `notify_one` keeps a permit: a change made since the state was taken wakes this at once.
            h.wake.notified().await;
            continue;
        }
        let inner = &h.inner;
        // The output before the record: a status line is never ahead of the log it comes from.
        if let Some((log, lost)) = output {
            ship_output(&h, log, lost).await;
        }
        if let Some(info) = info
            && info.status == TaskStatus::Processing
        {
            let change = Transition {
                from: &[TaskStatus::Processing],
                owner: true,
                counter: "",
                dead: false,
                value: None,
            };
            let _ = inner.transition(&h.ref_id, &info, change).await;
        }
        for counter in counters {
            let _ = inner.count(counter).await;
        }
        if stop {
            return;
        }
    }
}

/// Waits for the answer to question `key`, woken by the task's notifications (and once per lease without one).
async fn wait_answer(
    inner: Arc<Inner>,
    ref_id: RefId,
    key: String,
    mut follower: Follower,
) -> Result<Value, AskError> {
    loop {
        match inner.input_answer(&ref_id, &key).await {
            Ok(Answer::Given(value)) => return Ok(value),
            Ok(Answer::Waiting) => {}
            Ok(Answer::Gone(status)) => {
                return Err(AskError::Backend(match status {
                    Some(status) => {
                        format!("the task is {status}: it no longer waits on question `{key}`")
                    }
                    None => "the task's record is gone".to_owned(),
                }));
            }
            // Postgres is down: the answer waits in the table; the listener's reconnect wakes this.
            Err(err) => tracing::debug!(%ref_id, %err, "refcache: cannot read the answer yet"),
        }
        if let Err(tokio::time::error::Elapsed { .. }) =
            tokio::time::timeout(inner.config.lease, follower.rx().changed()).await
        {
            continue;
        }
        follower.rx().borrow_and_update();
    }
}

impl TaskHooks for Hooks {
    fn report_progress(&self, progress: TaskProgress) {
        self.change(|s| {
            if s.info.status == TaskStatus::Processing {
                s.info.progress = Some(progress);
                s.info.updated_at = Timestamp::now();
                s.dirty = true;
            }
        });
    }

    fn set_partial_result(&self, value: Value) {
        lock(&self.state).partial = Some(value);
    }

    fn partial_result(&self) -> Option<Value> {
        lock(&self.state).partial.clone()
    }

    fn attempt_failed(&self, mut failure: RetryInfo) {
        self.change(|s| {
            failure.attempt = u32::try_from(s.info.retry_history.len() + 1).unwrap_or(u32::MAX);
            s.info.retry_history.push(failure);
            s.dirty = true;
        });
    }

    fn retry_scheduled(&self, note: String) {
        self.change(|s| {
            s.counters.push("retries");
            if s.info.status == TaskStatus::Processing {
                s.info.status_message = Some(note);
                s.dirty = true;
            }
        });
    }

    fn retry_started(&self) {
        self.change(|s| {
            s.info.retry_count += 1;
            s.info.status_message = None;
            s.dirty = true;
        });
    }

    fn write_output(&self, stream: &OutputStream, text: &str) {
        self.change(|s| {
            let appended = s
                .output
                .get_or_insert_with(|| OutputLog::new(self.cap))
                .append(stream, text);
            if let Some(line) = appended.line
                && s.info.status == TaskStatus::Processing
            {
                s.info.output_line = Some(line);
                s.info.updated_at = Timestamp::now();
                s.dirty = true;
            }
        });
    }

    fn backend_name(&self) -> &'static str {
        "postgres"
    }

    fn ask_input(&self, request: InputRequest) -> BoxFuture<'static, Result<Value, AskError>> {
        let asked = {
            let mut s = lock(&self.state);
            if s.info.status == TaskStatus::Processing {
                s.info.status = TaskStatus::InputRequired;
                s.info.input_request = Some(request.clone());
                s.info.updated_at = Timestamp::now();
                Ok(s.info.clone())
            } else {
                Err(s.info.status)
            }
        };
        let info = match asked {
            Ok(info) => info,
            Err(status) => {
                return Box::pin(async move {
                    Err(AskError::Backend(format!(
                        "the task is {status}, not processing: only a running task can ask"
                    )))
                });
            }
        };
        let inner = self.inner.clone();
        let ref_id = self.ref_id.clone();
        let key = request.key.clone();
        // Follow first, then ask: an answer in between wakes the wait.
        let follower = inner.hub.follow(&ref_id);
        let (written, asked) = oneshot::channel();
        {
            let (inner, ref_id) = (inner.clone(), ref_id.clone());
            self.chain_input_write(async move {
                let _ = written.send(inner.ask(&ref_id, &request, &info).await);
            });
        }
        let me = self.me.clone();
        Box::pin(async move {
            match asked.await {
                Ok(Ok(true)) => {}
                Ok(Ok(false)) => {
                    return Err(AskError::Backend(
                        "the task no longer runs here (cancelled, finished or taken over): nothing was asked"
                            .to_owned(),
                    ));
                }
                Ok(Err(err)) => return Err(AskError::Backend(err.to_string())),
                Err(_) => return Err(AskError::Backend("the question was dropped".to_owned())),
            }
            let answer = wait_answer(inner, ref_id, key.clone(), follower).await?;
            // The answer took the record back to `processing`; the mirror follows.
            if let Some(me) = me.upgrade() {
                me.change(|s| {
                    let waiting = s.info.status == TaskStatus::InputRequired
                        && s.info.input_request.as_ref().is_some_and(|r| r.key == key);
                    if waiting {
                        s.info.status = TaskStatus::Processing;
                        s.info.input_request = None;
                        s.info.updated_at = Timestamp::now();
                        s.dirty = true;
                    }
                });
            }
            Ok(answer)
        })
    }

    fn input_closed(&self, key: &str) {
        {
            let mut s = lock(&self.state);
            let waiting = s.info.status == TaskStatus::InputRequired
                && s.info.input_request.as_ref().is_some_and(|r| r.key == key);
            if waiting {
                s.info.status = TaskStatus::Processing;
                s.info.input_request = None;
                s.info.updated_at = Timestamp::now();
            }
        }
        let inner = self.inner.clone();
        let ref_id = self.ref_id.clone();
        let key = key.to_owned();
        self.chain_input_write(async move {
            if let Err(err) = inner.input_close(&ref_id, &key).await {
                tracing::debug!(%ref_id, %err, "refcache: a closed question could not be recorded");
            }
        });
    }

    fn timed_out(&self, error: TaskError) {
        let info = {
            let mut s = lock(&self.state);
            s.info.status = TaskStatus::Failed;
            s.info.error = Some(error);
            s.info.finished_at = Some(Timestamp::now());
            s.info.clone()
        };
        // Failed now, not after the grace period the task gets to stop in.
        let inner = self.inner.clone();
        let ref_id = self.ref_id.clone();
        let write = tokio::spawn(async move {
            inner
                .write_terminal(&ref_id, &info, "timeouts", None, None)
                .await;
        });
        *lock(&self.timeout_write) = Some(write);
    }
}
