//! Running tasks in this process: the tasks it holds (submitted here in `local` mode, taken off the stream in
//! `workers` mode), the shared [`Scheduler`] that starts them (slots, priority, `max_concurrent`), and the
//! [`TaskHooks`] that write each change through the scripts.
//!
//! A task's life here: `hold` → scheduler → `drive`: `claim` (pending → processing, this process its owner) →
//! [`run_task`] (retries, timeout, cancel grace, all shared with the in-process backend) → one terminal
//! `transition` (the value in the same step) → ack the stream entry → release the slot.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use redis::AsyncCommands;
use refcache_core::{
    AskError, BackendError, Ending, InputRequest, LocalJob, RefId, RetryInfo, RunLimits,
    StoredValue, TaskError, TaskHooks, TaskInfo, TaskProgress, TaskSnapshot, TaskSpec, TaskStatus,
    Timestamp, job_for, run_task,
};
use serde_json::Value;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::held::{Held, RunState};
use super::state::{Inner, lock};

struct Start {
    ref_id: RefId,
    spec: Arc<TaskSpec>,
    job: Option<LocalJob>,
    msg: Option<String>,
    redelivered: bool,
    cancel: CancellationToken,
    record: Option<TaskInfo>,
    /// Claimed by its submission (`record` is the `processing` record the submit script wrote): no claim.
    claimed: bool,
    /// Claimed by its submission, and an event said it ended or was deleted before it was held here: its record
    /// is read first, and it runs only if still live.
    recheck: bool,
}

impl Inner {
    /// Takes a task to run here; it starts when the scheduler lets it. `false`: a stream entry (`msg`) that came
    /// in after the shutdown began, not taken (the caller hands it back: the shutdown has already handed back
    /// what it held, under the same lock).
    #[must_use]
    pub(crate) fn hold(
        self: &Arc<Self>,
        spec: Arc<TaskSpec>,
        job: Option<LocalJob>,
        msg: Option<String>,
        redelivered: bool,
        record: Option<TaskInfo>,
    ) -> bool {
        self.hold_as(spec, job, msg, redelivered, record, false)
    }

    /// [`hold`](Self::hold) a task that the `take` script claimed for this worker in the same step as it read
    /// its stream entry `msg`: `record` is the `processing` record the script wrote, and it runs without a claim.
    #[must_use]
    pub(crate) fn hold_claimed(
        self: &Arc<Self>,
        spec: Arc<TaskSpec>,
        msg: String,
        record: TaskInfo,
    ) -> bool {
        self.hold_as(spec, None, Some(msg), false, Some(record), true)
    }

    fn hold_as(
        self: &Arc<Self>,
        spec: Arc<TaskSpec>,
        job: Option<LocalJob>,
        msg: Option<String>,
        redelivered: bool,
        record: Option<TaskInfo>,
        claimed: bool,
    ) -> bool {
        let started = {
            let mut st = lock(&self.run);
            let ref_id = spec.ref_id.clone();
            if st.held.contains_key(&ref_id) {
                // Delivered twice (a lease renewal raced a takeover): it is already here.
                return true;
            }
            if st.draining && msg.is_some() {
                return false;
            }
            // One lock with `verify_held`: an event while the take was on its way is in `taking`, one after
            // finds the task held.
            let recheck = claimed && st.taking.as_ref().is_some_and(|t| t.contains(&ref_id));
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
                    msg,
                    redelivered,
                    cancel: CancellationToken::new(),
                    running: false,
                    record,
                    claimed,
                    recheck,
                    ending: false,
                },
            );
            admit(&mut st)
        };
        self.spawn_all(started);
        true
    }

    /// A slot for a task submitted here, taken before its submission so that the submit script can claim it in
    /// the same step (`local` mode, [`Scheduler::start_now`](refcache_core::Scheduler::start_now): a slot free,
    /// nothing queued, no `max_concurrent`). `false`: none, submit it as pending. A slot taken is given back by
    /// [`run_claimed`](Self::run_claimed) or [`unreserve`](Self::unreserve).
    pub(crate) fn reserve(&self, spec: &TaskSpec) -> bool {
        let mut st = lock(&self.run);
        let reserved = !st.draining
            && st
                .sched
                .start_now(&spec.task_name, spec.options.max_concurrent);
        if reserved {
            st.arriving.insert(spec.ref_id.clone(), false);
        }
        reserved
    }

    /// The submission that a slot was [`reserve`](Self::reserve)d for did not start a task (a hit, a join, a full
    /// queue, an error): the slot is free again, and a task queued meanwhile may take it.
    pub(crate) fn unreserve(self: &Arc<Self>, ref_id: &RefId, task_name: &str) {
        let started = {
            let mut st = lock(&self.run);
            st.arriving.remove(ref_id);
            st.sched.finished(task_name);
            admit(&mut st)
        };
        self.spawn_all(started);
    }

    /// Runs a task that its submission claimed in the slot [`reserve`](Self::reserve)d for it: `record` is the
    /// `processing` record the submit script wrote.
    pub(crate) fn run_claimed(
        self: &Arc<Self>,
        spec: Arc<TaskSpec>,
        job: Option<LocalJob>,
        record: TaskInfo,
    ) {
        let ref_id = spec.ref_id.clone();
        let cancel = CancellationToken::new();
        let recheck = {
            // One lock with `verify_held`: an event before this is flagged in `arriving`, one after finds it held.
            let mut st = lock(&self.run);
            st.held.insert(
                ref_id.clone(),
                Held {
                    spec: spec.clone(),
                    job: job.clone(),
                    msg: None,
                    redelivered: false,
                    cancel: cancel.clone(),
                    running: true,
                    record: None,
                    claimed: true,
                    recheck: false,
                    ending: false,
                },
            );
            st.arriving.remove(&ref_id).unwrap_or(false)
        };
        self.spawn_all(vec![Start {
            ref_id,
            spec,
            job,
            msg: None,
            redelivered: false,
            cancel,
            record: Some(record),
            claimed: true,
            recheck,
        }]);
    }

    fn spawn_all(self: &Arc<Self>, started: Vec<Start>) {
        for start in started {
            let span = tracing::debug_span!("refcache.task", task = %start.spec.task_name, ref_id = %start.ref_id);
            tokio::spawn(drive(self.clone(), start).instrument(span));
        }
    }

    /// The task is done here: its slot is free, and the next queued task may start.
    fn release(self: &Arc<Self>, ref_id: &RefId) {
        let started = {
            let mut st = lock(&self.run);
            if let Some(held) = st.held.remove(ref_id) {
                if held.running {
                    st.sched.finished(&held.spec.task_name);
                } else {
                    st.sched.remove(ref_id);
                }
            }
            admit(&mut st)
        };
        self.spawn_all(started);
        self.released.notify_waiters();
        // A waiter that skipped its reads while the task was held here reads the record now (unless the end
        // was settled: then it has it).
        self.hub.deliver(ref_id, None);
    }

    /// Whether this process holds `ref_id` (queued or running here).
    pub(crate) fn holds(&self, ref_id: &RefId) -> bool {
        lock(&self.run).held.contains_key(ref_id)
    }

    /// The terminal script of `ref_id` is on its way from here.
    fn mark_ending(&self, ref_id: &RefId) {
        if let Some(held) = lock(&self.run).held.get_mut(ref_id) {
            held.ending = true;
        }
    }

    /// The task's record says it was cancelled or deleted (or it ended while its event was in flight): a queued
    /// one leaves the queue, a running one has its token fired. Call it only on what the record says
    /// ([`verify_held`](Self::verify_held)), never on an event's word.
    pub(crate) fn stop_held(self: &Arc<Self>, ref_id: &RefId) {
        let msg = {
            let st = lock(&self.run);
            match st.held.get(ref_id) {
                Some(held) if held.running => {
                    held.cancel.cancel();
                    return;
                }
                Some(held) => held.msg.clone(),
                None => return,
            }
        };
        self.release(ref_id);
        if let Some(msg) = msg {
            let inner = self.clone();
            tokio::spawn(async move { inner.ack(&msg).await });
        }
    }

    /// After a reconnect: events may have been missed, so every held task's status is read again.
    pub(crate) fn resync_held(self: &Arc<Self>) {
        for ref_id in self.held_refs() {
            self.verify_held(&ref_id);
        }
    }

    /// An event said a task held here ended or was deleted: reads its record, and stops it only if the record
    /// says so (gone, or terminal). A forged event (anyone with access to the Redis can publish) changes nothing.
    pub(crate) fn verify_held(self: &Arc<Self>, ref_id: &RefId) {
        {
            let mut st = lock(&self.run);
            match st.held.get(ref_id) {
                Some(held) if !held.ending => {}
                // Its end is being written from here: the task stops anyway, and the script's answer says how.
                Some(_) => return,
                None => {
                    // Claimed by a submission from here that is not held yet: it reads its record first.
                    if let Some(flag) = st.arriving.get_mut(ref_id) {
                        *flag = true;
                    } else if let Some(taking) = st.taking.as_mut() {
                        // Perhaps claimed by the take on its way: if so, it reads its record first.
                        taking.insert(ref_id.clone());
                    }
                    return;
                }
            }
        }
        let inner = self.clone();
        let ref_id = ref_id.clone();
        tokio::spawn(async move {
            let mut conn = inner.conn();
            let status: Result<Option<String>, _> =
                conn.hget(inner.keys.task(&ref_id), "status").await;
            let live = match &status {
                Ok(Some(s)) => s == "pending" || s == "processing" || s == "input_required",
                Ok(None) => false,
                // Unreadable now: keep running; a reconnect re-checks, and the lease covers a lost process.
                Err(_) => true,
            };
            if live {
                tracing::debug!(%ref_id, "refcache: an event that its record does not bear out was ignored");
            } else {
                inner.stop_held(&ref_id);
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

    /// Acknowledges and deletes a stream entry, retrying through a short outage (an entry left unacknowledged is
    /// taken over after the lease and dropped then, since its task is finished).
    pub(crate) async fn ack(&self, msg: &str) {
        for attempt in 0..5u32 {
            let mut conn = self.conn();
            let done: Result<i64, _> = self
                .scripts
                .ack
                .arg(self.keys.prefix())
                .arg(msg)
                .invoke_async(&mut conn)
                .await;
            if done.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
        }
    }

    /// A terminal write that must land: retried through an outage, with backoff, until Redis answers (or the task
    /// record's TTL has passed, when nobody can read it anyway).
    async fn write_terminal(
        &self,
        ref_id: &RefId,
        info: &TaskInfo,
        counter: &str,
        value: Option<&StoredValue>,
        ack: Option<&str>,
    ) -> Option<String> {
        let give_up = tokio::time::Instant::now() + self.config.task_ttl;
        let mut backoff = Duration::from_millis(50);
        loop {
            match self
                .transition_acking(
                    ref_id,
                    // A task that timed out or ended while a question's close was still on its way.
                    &[TaskStatus::Processing, TaskStatus::InputRequired],
                    info,
                    counter,
                    true,
                    value,
                    ack,
                )
                .await
            {
                Ok(answer) => return Some(answer),
                // Data that is not refcache's does not pass by itself: the script wrote nothing, and the lease
                // (or a cleanup of the prefix) decides what becomes of the task.
                Err(err @ BackendError::ForeignData(_)) => {
                    tracing::error!(%ref_id, %err, "cannot record a task's end");
                    return None;
                }
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

    /// Fails a task whose workers keep getting lost, and files it in the dead-letter list. Answers whether the task
    /// is done with: its end written here, or it had ended or gone already; `false` when Redis did not answer (the
    /// read or the script) or the record changed meanwhile to a live status (then its stream entry is kept).
    pub(crate) async fn fail_lost(&self, ref_id: &RefId, message: String) -> bool {
        let mut info = match self.read(ref_id).await {
            Ok(Some(info)) => info,
            Ok(None) => return true,
            Err(_) => return false,
        };
        let from = info.status;
        if from.is_terminal() {
            return true;
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
        // The dead letter in the same step: whoever sees the task failed finds it on the list.
        match self
            .run_transition(ref_id, &[from], &info, "", false, None, None, true)
            .await
            .as_deref()
        {
            Ok("ok") => {
                tracing::warn!(%ref_id, task = %info.task_name, "task failed: worker lost");
                true
            }
            Ok(answer) => {
                answer == "missing"
                    || TaskStatus::from_name(answer).is_some_and(|s| s.is_terminal())
            }
            Err(_) => false,
        }
    }
}

/// Under the run lock: hands free slots to queued tasks.
fn admit(st: &mut RunState) -> Vec<Start> {
    let mut started = Vec::new();
    if st.draining {
        return started;
    }
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
            msg: held.msg.clone(),
            redelivered: held.redelivered,
            cancel: held.cancel.clone(),
            record: held.record.take(),
            claimed: held.claimed,
            recheck: held.recheck,
        });
    }
    started
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
    match run_one(&inner, &start).await {
        Some(false) => {
            if let Some(msg) = &start.msg {
                inner.ack(msg).await;
            }
        }
        Some(true) => {}
        // Its claim is in doubt: the entry is left, unrenewed from now on, and the lease brings it back (an ack
        // would lose a task whose claim never ran: pending, its key joined by every later call, and no entry).
        None => {}
    }
}

/// Whether the task's record is still pending or running (unreadable: yes, as `verify_held` takes it).
async fn still_live(inner: &Inner, ref_id: &RefId) -> bool {
    let mut conn = inner.conn();
    let status: Result<Option<String>, _> = conn.hget(inner.keys.task(ref_id), "status").await;
    match status {
        Ok(Some(s)) => matches!(s.as_str(), "pending" | "processing" | "input_required"),
        Ok(None) => false,
        Err(_) => true,
    }
}

/// Runs the task; answers whether its stream entry was acknowledged with its end (`false`: ack it), or `None`
/// when its claim is in doubt (Redis did not answer it as a claim): then its entry is left for the lease.
async fn run_one(inner: &Arc<Inner>, start: &Start) -> Option<bool> {
    let Start {
        ref_id, spec, job, ..
    } = start;
    let info = match (&start.record, start.claimed) {
        (Some(_), true) if start.recheck && !still_live(inner, ref_id).await => {
            tracing::debug!(%ref_id, "a task cancelled or deleted before it started here does not run");
            return Some(false);
        }
        (Some(info), true) => info.clone(),
        _ => match claim(inner, start).await {
            Claim::Run(info) => *info,
            Claim::NotHere => return Some(false),
            Claim::InDoubt => return None,
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
    info.input_request = None;
    inner.mark_ending(ref_id);
    let ack = start.msg.as_deref();
    Some(match ending {
        Ending::Finished(Ok(value)) => {
            let ttl = spec.options.ttl.unwrap_or(inner.config.default_ttl);
            let stored = StoredValue::of_task(spec, value, ttl);
            info.status = TaskStatus::Complete;
            info.finished_at = Some(Timestamp::now());
            info.error = None;
            let answer = inner
                .write_terminal(ref_id, &info, "", Some(&stored), ack)
                .await;
            if answer.as_deref() == Some("ok") {
                tracing::debug!(%ref_id, "task complete");
                let stored = Arc::new(stored);
                if inner.near.fits(&stored) {
                    inner.near.insert(stored.clone()).await;
                }
                // A waiter here takes the end from what was written, not from a read.
                inner
                    .hub
                    .settle(ref_id, TaskSnapshot::new(info, Some(stored)));
                true
            } else {
                tracing::debug!(%ref_id, ?answer, "a late result was dropped");
                false
            }
        }
        Ending::Finished(Err(error)) => {
            info.status = TaskStatus::Failed;
            info.finished_at = Some(Timestamp::now());
            info.error = Some(error);
            let answer = inner.write_terminal(ref_id, &info, "", None, ack).await;
            let ok = answer.as_deref() == Some("ok");
            if ok {
                inner.hub.settle(ref_id, TaskSnapshot::new(info, None));
            }
            ok
        }
        // The timeout's failure was written by the hook when it fired; wait for it to land.
        Ending::TimedOut => {
            hooks.timed_out_written().await;
            false
        }
        _ => false,
    })
}

/// What a claim answered.
enum Claim {
    /// This process's now, `processing`, with this record.
    Run(Box<TaskInfo>),
    /// It does not run here: cancelled, deleted, finished, another's, or failed `worker lost` here (its entry is
    /// done with).
    NotHere,
    /// Redis did not answer it as a claim (down, a timeout, a key that is not refcache's): whether the claim ran is
    /// not known, so its entry is kept for the lease.
    InDoubt,
}

/// Claims a task held here (`pending` → `processing`, this process its owner) from the record it was held with,
/// or from a read of it (see [`Claim`]).
async fn claim(inner: &Arc<Inner>, start: &Start) -> Claim {
    let ref_id = &start.ref_id;
    let mut info = match &start.record {
        Some(info) if !start.redelivered => info.clone(),
        _ => match inner.read(ref_id).await {
            Ok(Some(info)) => info,
            Ok(None) => return Claim::NotHere,
            Err(err) => {
                tracing::warn!(%ref_id, %err, "cannot read a task to claim it; its lease brings it back");
                return Claim::InDoubt;
            }
        },
    };
    info.status = TaskStatus::Processing;
    info.started_at.get_or_insert_with(Timestamp::now);
    info.queue_position = None;
    let info_json = serde_json::to_string(&info).expect("a TaskInfo serializes");
    let mut conn = inner.conn();
    let claim: Result<Vec<String>, _> = inner
        .scripts
        .claim
        .arg(inner.keys.prefix())
        .arg(ref_id.as_str())
        .arg(&inner.consumer)
        .arg(&info_json)
        .arg(if start.redelivered { "1" } else { "0" })
        .arg(inner.config.max_deliveries)
        .invoke_async(&mut conn)
        .await;
    match claim.as_deref().map(|c| c.first().map(String::as_str)) {
        Ok(Some("ok")) => Claim::Run(Box::new(info)),
        Err(err) => {
            tracing::warn!(%ref_id, %err, "a task's claim failed; its lease brings it back");
            Claim::InDoubt
        }
        Ok(Some("dead")) => {
            let n = claim
                .as_ref()
                .ok()
                .and_then(|c| c.get(1).cloned())
                .unwrap_or_default();
            let done = inner
                .fail_lost(
                    ref_id,
                    format!(
                        "worker lost: the task was delivered {n} times and every worker running it stopped \
                         before it finished (max_deliveries = {})",
                        inner.config.max_deliveries
                    ),
                )
                .await;
            // Failed here (or it had ended): its entry is done with. Not written (Redis did not answer): kept.
            if done { Claim::NotHere } else { Claim::InDoubt }
        }
        // Cancelled, deleted or finished meanwhile, or another's.
        Ok(_) => Claim::NotHere,
    }
}

/// A running task's record, mirrored here and written through to Redis: progress and retry notes by a writer
/// task that sends only the latest state (a task reporting progress in a tight loop costs Redis one write per
/// round trip, not one per report), and output by the same writer, each batch of what was queued since the last
/// one in one append to the task's log (`output.rs`).
struct Hooks {
    inner: Arc<Inner>,
    ref_id: RefId,
    /// This, for the futures that outlive a call (an ask's wait).
    me: std::sync::Weak<Hooks>,
    /// The output log's byte cap (the spec's `output_cap()`).
    output_cap: usize,
    state: Mutex<HookState>,
    wake: Notify,
    writer: Mutex<Writer>,
    /// Where the writer runs (a hook may be called from a thread outside the runtime).
    runtime: tokio::runtime::Handle,
    timeout_write: Mutex<Option<JoinHandle<()>>>,
}

/// The task that writes a running task's changes: started by the first change, so that a task that reports
/// nothing while it runs (most) costs no writer.
enum Writer {
    Idle,
    Running(JoinHandle<()>),
    /// Flushed: later changes are not written.
    Done,
}

struct HookState {
    info: TaskInfo,
    partial: Option<Value>,
    dirty: bool,
    counters: Vec<&'static str>,
    /// Output written and not yet shipped: at most twice the cap (then cut back to the cap's newest bytes).
    output: Vec<u8>,
    /// Bytes dropped from `output` since the last batch shipped (the queue outgrew the cap, or a batch was lost
    /// to an outage): readers are told of them as `dropped`.
    output_skipped: u64,
    /// A question was closed unanswered (cancel, time limit): the next write of the record may take it from
    /// `input_required` back to `processing`. Every other write goes from `processing` only, so that one taken
    /// before an ask never undoes the ask.
    reopen: bool,
    stop: bool,
}

impl Hooks {
    fn start(inner: Arc<Inner>, ref_id: RefId, info: TaskInfo, output_cap: usize) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            inner,
            ref_id,
            me: me.clone(),
            output_cap: output_cap.max(1),
            state: Mutex::new(HookState {
                info,
                partial: None,
                dirty: false,
                counters: Vec::new(),
                output: Vec::new(),
                output_skipped: 0,
                reopen: false,
                stop: false,
            }),
            wake: Notify::new(),
            writer: Mutex::new(Writer::Idle),
            runtime: tokio::runtime::Handle::current(),
            timeout_write: Mutex::new(None),
        })
    }

    fn info(&self) -> TaskInfo {
        lock(&self.state).info.clone()
    }

    fn change(&self, f: impl FnOnce(&mut HookState)) {
        f(&mut lock(&self.state));
        self.wake.notify_one();
        let mut writer = lock(&self.writer);
        if matches!(*writer, Writer::Idle)
            && let Some(me) = self.me.upgrade()
        {
            *writer = Writer::Running(self.runtime.spawn(write_changes(me)));
        }
    }

    /// Writes what is left and stops the writer.
    async fn flush(&self) {
        lock(&self.state).stop = true;
        self.wake.notify_one();
        let writer = std::mem::replace(&mut *lock(&self.writer), Writer::Done);
        match writer {
            Writer::Running(writer) => {
                let _ = writer.await;
            }
            // Nothing changed while it ran, unless a change came just now: one pass here writes it.
            Writer::Idle => {
                if let Some(me) = self.me.upgrade() {
                    write_changes(me).await;
                }
            }
            Writer::Done => {}
        }
    }

    async fn timed_out_written(&self) {
        let write = lock(&self.timeout_write).take();
        if let Some(write) = write {
            let _ = write.await;
        }
    }
}

async fn write_changes(h: Arc<Hooks>) {
    loop {
        let (info, reopen, counters, output, skipped, stop) = {
            let mut s = lock(&h.state);
            let info = std::mem::take(&mut s.dirty).then(|| s.info.clone());
            (
                info,
                std::mem::take(&mut s.reopen),
                std::mem::take(&mut s.counters),
                std::mem::take(&mut s.output),
                std::mem::take(&mut s.output_skipped),
                s.stop,
            )
        };
        if info.is_none() && counters.is_empty() && output.is_empty() && skipped == 0 && !stop {
            // `notify_one` keeps a permit: a change made since the state was taken wakes this at once.
            h.wake.notified().await;
            continue;
        }
        let inner = &h.inner;
        // The output first, so that the status line it brings is readable in the log once the record shows it.
        if !output.is_empty() || skipped > 0 {
            let shipped = inner
                .append_output(&h.ref_id, &output, skipped, h.output_cap)
                .await;
            if let Err(err) = shipped {
                // Lost to an outage: counted, so that readers are told the bytes were dropped.
                tracing::warn!(ref_id = %h.ref_id, %err, bytes = output.len(), "task output could not be stored");
                lock(&h.state).output_skipped += skipped + output.len() as u64;
            }
        }
        if let Some(info) = info
            && info.status == TaskStatus::Processing
        {
            let from: &[TaskStatus] = if reopen {
                &[TaskStatus::Processing, TaskStatus::InputRequired]
            } else {
                &[TaskStatus::Processing]
            };
            let _ = inner
                .transition(&h.ref_id, from, &info, "", true, None)
                .await;
        }
        if !counters.is_empty() {
            let mut conn = inner.conn();
            for counter in counters {
                let _: Result<i64, _> = conn.hincr(inner.keys.stats(), counter, 1).await;
            }
        }
        if stop {
            return;
        }
    }
}

impl TaskHooks for Hooks {
    fn report_progress(&self, progress: TaskProgress) {
        self.change(|s| {
            if s.info.status == TaskStatus::Processing {
                s.info.progress = Some(progress);
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

    fn write_output(&self, stream: &refcache_core::OutputStream, text: &str) {
        // One log for every stream, in the order written (as on the memory backend). A copy under a std mutex and
        // a wake-up: no I/O here, so a blocking thread may write.
        let _ = stream;
        let line = refcache_core::status_line(text).map(str::to_owned);
        let cap = self.output_cap;
        self.change(|s| {
            s.output.extend_from_slice(text.as_bytes());
            if s.output.len() > 2 * cap {
                let over = s.output.len() - cap;
                s.output.drain(..over);
                s.output_skipped += over as u64;
            }
            if let Some(line) = line
                && s.info.status == TaskStatus::Processing
            {
                s.info.output_line = Some(line);
                s.dirty = true;
            }
        });
    }
    fn backend_name(&self) -> &'static str {
        "redis"
    }

    fn ask_input(&self, request: InputRequest) -> BoxFuture<'static, Result<Value, AskError>> {
        let key = request.key.clone();
        // The mirror first, so that no later progress or output write takes the record back to `processing`.
        let asked = {
            let mut s = lock(&self.state);
            if s.info.status == TaskStatus::Processing {
                s.info.status = TaskStatus::InputRequired;
                s.info.input_request = Some(request);
                s.info.updated_at = Timestamp::now();
                Ok(s.info.clone())
            } else {
                Err(s.info.status)
            }
        };
        let me = self.me.upgrade();
        Box::pin(async move {
            let info = asked.map_err(|status| {
                AskError::Backend(format!(
                    "the task is {status}, not processing: only a running task can ask"
                ))
            })?;
            let hooks = me.ok_or_else(|| AskError::Backend("the task has ended".to_owned()))?;
            let inner = &hooks.inner;
            match inner.ask(&hooks.ref_id, &key, &info).await {
                Ok(answer) if answer == "ok" => {}
                Ok(status) => {
                    return Err(AskError::Backend(format!(
                        "the task's record is {status} in Redis, not processing: only a running task can ask"
                    )));
                }
                Err(err) => return Err(AskError::Backend(err.to_string())),
            }
            let answer = inner.wait_answer(&hooks.ref_id, &key).await;
            // The replica that took the answer put the record back to `processing`; the mirror follows.
            hooks.change(|s| {
                if s.info.status == TaskStatus::InputRequired
                    && s.info.input_request.as_ref().is_some_and(|r| r.key == key)
                {
                    s.info.status = TaskStatus::Processing;
                    s.info.input_request = None;
                    s.info.updated_at = Timestamp::now();
                    s.dirty = true;
                }
            });
            Ok(answer)
        })
    }

    fn input_closed(&self, key: &str) {
        self.change(|s| {
            if s.info.status == TaskStatus::InputRequired
                && s.info.input_request.as_ref().is_some_and(|r| r.key == key)
            {
                s.info.status = TaskStatus::Processing;
                s.info.input_request = None;
                s.info.updated_at = Timestamp::now();
                s.dirty = true;
                s.reopen = true;
            }
        });
    }

    fn timed_out(&self, error: TaskError) {
        let info = {
            let mut s = lock(&self.state);
            s.info.status = TaskStatus::Failed;
            s.info.input_request = None;
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
