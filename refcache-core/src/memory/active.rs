//! A task in flight: [`Active`], its phases (pending, running, completing, done: changed only by compare-and-set),
//! and its [`TaskHooks`] implementation, through which `run_task` updates its record.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use futures::future::BoxFuture;
use serde_json::Value;
use tokio::runtime::Handle;
use tokio::sync::{oneshot, watch};
use tokio::task::AbortHandle;
use tokio_util::sync::CancellationToken;

use crate::contract::backend::RespondOutcome;
use crate::contract::context::{AskError, LocalJob, TaskHooks};
use crate::contract::output::OutputLog;
use crate::contract::spec::TaskSpec;
use crate::contract::store::StoredValue;
use crate::model::input::InputRequest;
use crate::model::output::OutputStream;
use crate::model::record::TaskInfo;
use crate::model::task::{RetryInfo, TaskError, TaskProgress, TaskStatus, Timestamp};

/// What an active task tells the backend that owns it. The backend's `Inner` (`driver.rs`) implements it; the trait
/// lives here so that this file needs nothing above it. An [`Active`] holds its owner weakly: the backend owns its
/// tasks.
pub(super) trait TaskOwner: Send + Sync {
    /// A retry of one of its tasks was scheduled: count it.
    fn count_retry(&self);
    /// One of its tasks passed its execution timeout: count it, and drop it from the key-to-ref index.
    fn count_timeout(&self, active: &Active);
}

pub(super) const PENDING: u8 = 0;
pub(super) const RUNNING: u8 = 1;
pub(super) const COMPLETING: u8 = 2;
pub(super) const DONE: u8 = 3;

pub(super) struct Active {
    /// Boxed: inline, it made an `Active` too big for the allocator's fast path (its thread cache holds chunks of up
    /// to 1 KiB), and every task makes one.
    pub(super) spec: Box<TaskSpec>,
    pub(super) job: Option<LocalJob>,
    pub(super) handle: Handle,
    /// Its record. Followers subscribe to it ([`Record::subscribe`]); a task nobody follows never makes a `watch`.
    pub(super) info: Record,
    /// Its cancellation token, made on first need ([`cancel_token`](Self::cancel_token)): by a cancel, a driver
    /// (which waits for one), or an attempt that waits for one. A task that finishes in its first poll in the
    /// caller never makes one.
    pub(super) cancel: OnceLock<CancellationToken>,
    /// PENDING → RUNNING → COMPLETING → DONE, or straight to DONE on cancel/failure. Changed only by CAS, so the
    /// first terminal decision wins.
    pub(super) phase: AtomicU8,
    pub(super) holds_slot: AtomicBool,
    pub(super) partial: Mutex<Option<Value>>,
    pub(super) abort: Mutex<Option<AbortHandle>>,
    /// Drop the record instead of keeping it when the task retires (its session ended).
    pub(super) forget: AtomicBool,
    /// The backend, for counters and the index (weak: the backend owns its tasks).
    pub(super) backend: std::sync::Weak<dyn TaskOwner>,
    /// The value, once stored: a waiter holding this task reads it here instead of looking it up.
    pub(super) value: OnceLock<Arc<StoredValue>>,
    /// The output log, made at the first write (or the first follower): a task that writes nothing has none.
    pub(super) output: OnceLock<Arc<OutputLog>>,
    /// The question the task waits on: its key and where its answer goes.
    pub(super) question: Mutex<Option<(String, oneshot::Sender<Value>)>>,
    /// The first waiter's way to learn that the task ended, lighter than the record's `watch`.
    pub(super) ended: Ended,
}

/// How the first waiter of a task learns that it ended: a flag and one waker, set by [`Active::wake`]. Every other
/// waiter (a second caller joining the same execution, a poll that waits) follows the record's `watch`, whose
/// sender then wakes them too. The slot spares the first waiter (most often the only one: the caller that started
/// the task) tokio's `watch` machinery: a subscription, a registration in one of its eight `Notify` lists, and the
/// wake-up that locks all eight.
#[derive(Default)]
pub(super) struct Ended {
    /// Set by [`Active::wake`]: the task's status is terminal, and a finished task is retired.
    set: AtomicBool,
    /// Whether a waiter took the slot (it is taken once; it is not handed back).
    taken: AtomicBool,
    waker: futures::task::AtomicWaker,
}

impl Ended {
    /// Takes the slot: `true` for the first caller only.
    pub(super) fn take(&self) -> bool {
        !self.taken.swap(true, Ordering::AcqRel)
    }

    /// Resolves once [`Active::wake`] has run (at once, if it has).
    pub(super) fn wait(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            if self.set.load(Ordering::Acquire) {
                return std::task::Poll::Ready(());
            }
            self.waker.register(cx.waker());
            // Set between the check and the registration: the wake may have found no waker.
            if self.set.load(Ordering::Acquire) {
                std::task::Poll::Ready(())
            } else {
                std::task::Poll::Pending
            }
        })
    }

    fn set(&self) {
        self.set.store(true, Ordering::Release);
        self.waker.wake();
    }
}

/// A running task's record, and the `watch` its followers subscribe to, made only when the first one does.
///
/// Most tasks (a miss whose caller waits through the [`Ended`] slot) are never followed, and tokio's `watch` costs an
/// allocation with eight `Notify` lists to make, and a lock of each of them to drop. Until a follower comes, the
/// record is a plain value under a mutex. From the first [`subscribe`](Self::subscribe) on, every change is also
/// copied into the `watch`, under the same mutex, so that the copy never falls behind the record or reorders two
/// changes: a subscriber starts at the record as it is, and sees every change after that.
pub(super) struct Record {
    info: Mutex<TaskInfo>,
    watch: OnceLock<watch::Sender<TaskInfo>>,
}

impl Record {
    fn new(info: TaskInfo) -> Self {
        Self {
            info: Mutex::new(info),
            watch: OnceLock::new(),
        }
    }

    /// The record now. Hold it only briefly, and never while changing it: it is the record's lock.
    pub(super) fn borrow(&self) -> MutexGuard<'_, TaskInfo> {
        lock(&self.info)
    }

    /// Changes the record with `modify`; answers (and, for followers, notifies) whether it says it changed
    /// anything that should wake them, as `watch::Sender::send_if_modified` does.
    pub(super) fn send_if_modified(&self, modify: impl FnOnce(&mut TaskInfo) -> bool) -> bool {
        let mut info = lock(&self.info);
        let modified = modify(&mut info);
        if let Some(watch) = self.watch.get() {
            watch.send_if_modified(|copy| {
                copy.clone_from(&info);
                modified
            });
        }
        modified
    }

    /// A follower of the record: it starts at the record as it is now.
    pub(super) fn subscribe(&self) -> watch::Receiver<TaskInfo> {
        let info = lock(&self.info);
        self.watch
            .get_or_init(|| watch::channel(info.clone()).0)
            .subscribe()
    }

    /// How many followers there are now.
    pub(super) fn receiver_count(&self) -> usize {
        self.watch.get().map_or(0, watch::Sender::receiver_count)
    }
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Active {
    /// A new pending task.
    pub(super) fn new(
        spec: TaskSpec,
        job: Option<LocalJob>,
        handle: Handle,
        info: TaskInfo,
        backend: &Arc<impl TaskOwner + 'static>,
    ) -> Arc<Self> {
        let backend: std::sync::Weak<_> = Arc::downgrade(backend);
        Arc::new(Self {
            info: Record::new(info),
            spec: Box::new(spec),
            job,
            handle,
            cancel: OnceLock::new(),
            phase: AtomicU8::new(PENDING),
            holds_slot: AtomicBool::new(false),
            partial: Mutex::new(None),
            abort: Mutex::new(None),
            forget: AtomicBool::new(false),
            backend,
            value: OnceLock::new(),
            output: OnceLock::new(),
            question: Mutex::new(None),
            ended: Ended::default(),
        })
    }

    /// The cancellation token, made now if the task has none yet.
    pub(super) fn cancel_token(&self) -> &CancellationToken {
        self.cancel.get_or_init(CancellationToken::new)
    }

    /// The output log, made now if the task has none yet.
    pub(super) fn output_log(&self) -> &Arc<OutputLog> {
        self.output
            .get_or_init(|| Arc::new(OutputLog::new(self.spec.options.output_cap())))
    }

    /// Whether a new call for the same key may join this execution: not once it has failed or been cancelled (it
    /// may linger a moment before it retires), since calling again after a failure must run the work again.
    pub(super) fn joinable(&self) -> bool {
        !matches!(
            self.info.borrow().status,
            TaskStatus::Failed | TaskStatus::Cancelled
        )
    }

    pub(super) fn cas(&self, from: u8, to: u8) -> bool {
        self.phase
            .compare_exchange(from, to, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Sets a terminal status and wakes the waiters.
    pub(super) fn set_terminal(
        &self,
        status: TaskStatus,
        error: Option<TaskError>,
        note: Option<&str>,
    ) {
        self.record_terminal(status, error, note);
        self.wake();
    }

    /// Sets a terminal status without waking anyone yet: a finishing task retires first, so that a woken waiter
    /// that acts at once (calls again, retries) finds it in the history, not still active.
    pub(super) fn record_terminal(
        &self,
        status: TaskStatus,
        error: Option<TaskError>,
        note: Option<&str>,
    ) {
        let now = Timestamp::now();
        self.info.send_if_modified(|info| {
            info.status = status;
            info.error = error;
            info.finished_at = Some(now);
            info.updated_at = now;
            info.queue_position = None;
            info.input_request = None;
            if let Some(note) = note {
                info.status_message = Some(note.to_owned());
            }
            false
        });
        tracing::debug!(ref_id = %self.spec.ref_id, task = %self.spec.task_name, %status, "task finished");
    }

    /// Wakes the waiters: the first one through its slot ([`Ended`]), the others if any follow the record. With
    /// none (a caller whose task finished in its first poll, [`Inner::start`](super::driver::Inner::start)), there
    /// is nobody to wake: a receiver subscribed from now on starts at the current value, which the caller has
    /// already made terminal, so skipping the wake-up (eight locked `Notify` lists in tokio's `watch`) loses
    /// nothing. (A `subscribe` that races this check either counts before it, through the value's lock, or reads
    /// the value after it was made terminal.) Called on every way to a terminal status.
    pub(super) fn wake(&self) {
        self.ended.set();
        if self.info.receiver_count() > 0 {
            self.info.send_if_modified(|_| true);
        }
    }

    /// Hands `answer` to the task if it waits on question `key`; the record goes back to `processing`.
    pub(super) fn respond(&self, key: &str, answer: Value) -> RespondOutcome {
        let mut question = lock(&self.question);
        match question.take() {
            Some((asked, sender)) if asked == key => {
                self.info.send_if_modified(|info| {
                    if info.status == TaskStatus::InputRequired {
                        info.status = TaskStatus::Processing;
                        info.input_request = None;
                        info.updated_at = Timestamp::now();
                        true
                    } else {
                        false
                    }
                });
                match sender.send(answer) {
                    Ok(()) => RespondOutcome::Accepted,
                    Err(_) => RespondOutcome::NotWaiting(self.info.borrow().status),
                }
            }
            other => {
                *question = other;
                RespondOutcome::NotWaiting(self.info.borrow().status)
            }
        }
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
                info.updated_at = Timestamp::now();
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
        if let Some(owner) = self.backend.upgrade() {
            owner.count_retry();
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

    fn write_output(&self, stream: &OutputStream, text: &str) {
        let appended = self.output_log().append(stream, text);
        // The latest line is the status message; the change wakes watchers (MCP progress forwarding) as progress
        // does.
        if let Some(line) = appended.line {
            self.info.send_if_modified(|info| {
                let running = info.status == TaskStatus::Processing;
                if running {
                    info.output_line = Some(line);
                    info.updated_at = Timestamp::now();
                }
                running
            });
        }
    }
    fn backend_name(&self) -> &'static str {
        "memory"
    }

    fn cancellation(&self) -> Option<&OnceLock<CancellationToken>> {
        Some(&self.cancel)
    }

    fn ask_input(&self, request: InputRequest) -> BoxFuture<'static, Result<Value, AskError>> {
        let (sender, receiver) = oneshot::channel();
        let key = request.key.clone();
        let asked = self.info.send_if_modified(|info| {
            if info.status == TaskStatus::Processing {
                info.status = TaskStatus::InputRequired;
                info.input_request = Some(request);
                info.updated_at = Timestamp::now();
                true
            } else {
                false
            }
        });
        if asked {
            *lock(&self.question) = Some((key, sender));
        }
        let status = self.info.borrow().status;
        Box::pin(async move {
            if !asked {
                return Err(AskError::Backend(format!(
                    "the task is {status}, not processing: only a running task can ask"
                )));
            }
            receiver
                .await
                .map_err(|_| AskError::Backend("the question was dropped".to_owned()))
        })
    }

    fn input_closed(&self, key: &str) {
        let mut question = lock(&self.question);
        if question.as_ref().is_some_and(|(k, _)| k == key) {
            *question = None;
        }
        drop(question);
        self.info.send_if_modified(|info| {
            let waiting = info.status == TaskStatus::InputRequired
                && info.input_request.as_ref().is_some_and(|r| r.key == key);
            if waiting {
                info.status = TaskStatus::Processing;
                info.input_request = None;
                info.updated_at = Timestamp::now();
            }
            waiting
        });
    }

    fn timed_out(&self, error: TaskError) {
        if self.cas(RUNNING, DONE) {
            if let Some(owner) = self.backend.upgrade() {
                owner.count_timeout(self);
            }
            self.set_terminal(TaskStatus::Failed, Some(error), None);
        }
    }
}
