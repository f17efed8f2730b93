//! What a running task holds: its body's type ([`LocalJob`]), the handle it receives ([`TaskContext`]), and the
//! hooks through which a backend's record follows it ([`TaskHooks`]). Below `execute.rs` and `registry.rs`, which
//! both use these types.

use std::fmt;
use std::sync::Arc;

use futures::future::BoxFuture;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::model::actor::Actor;
use crate::model::json_text::JsonText;
use crate::model::output::OutputStream;
use crate::model::ref_id::RefId;
use crate::model::task::{RetryInfo, TaskError, TaskProgress};

/// A task's body: arguments as JSON in, the value's compact JSON text out (serialized once, where the task
/// returns; `JsonText::from(json!(..))` makes one in a hand-written job).
///
/// The `#[cached]` macro builds one per function from the same code it registers for remote workers, so local and
/// remote execution share one path. It is `Fn`, not `FnOnce`, so that a retry can run it again.
pub type LocalJob = Arc<
    dyn Fn(Value, TaskContext) -> BoxFuture<'static, Result<JsonText, TaskError>> + Send + Sync,
>;

/// How a running task's record changes. Implemented by each backend's task record; [`run_task`](crate::run_task) calls it.
pub trait TaskHooks: Send + Sync {
    /// Records a progress report; it is visible to the next poll.
    fn report_progress(&self, progress: TaskProgress);
    /// Records the partial result a timed-out task is failed with.
    fn set_partial_result(&self, value: Value);
    /// The partial result last set.
    fn partial_result(&self) -> Option<Value>;
    /// An attempt failed: add it to the retry history.
    fn attempt_failed(&self, failure: RetryInfo);
    /// A retry waits: the status stays `processing`, with `note` as its message.
    fn retry_scheduled(&self, note: String);
    /// The retry starts: count it and clear the note.
    fn retry_started(&self);
    /// The execution timeout passed: fail the task with `error` now, unless it is already terminal.
    fn timed_out(&self, error: TaskError);
    /// Appends `text` to the task's output log (bounded by the spec's `output_limit`); its last line becomes the
    /// status message. Called from any thread, a blocking one too: it must not block on I/O. A backend that keeps
    /// no output must say so where output is read, not drop it here silently.
    fn write_output(&self, stream: &OutputStream, text: &str);
    /// The backend's name, for the `backend` label of metrics (`memory`, `redis`, `postgres`).
    fn backend_name(&self) -> &'static str {
        "other"
    }
}

/// The handle a running task receives: progress, partial results and cancellation.
///
/// Declare a parameter of this type in a `#[cached]` function to receive it. It is not part of the cache key.
///
/// ```
/// # use refcache_core::TaskContext;
/// async fn count(ctx: &TaskContext, to: u32) -> Result<u32, refcache_core::Cancelled> {
///     for i in 1..=to {
///         ctx.progress(i as f64, Some(to as f64), format!("counted {i} of {to}"))?;
///     }
///     Ok(to)
/// }
/// ```
#[derive(Clone)]
pub struct TaskContext {
    inner: Arc<ContextInner>,
}

struct ContextInner {
    ref_id: Option<RefId>,
    hooks: Option<Arc<dyn TaskHooks>>,
    cancel: CancellationToken,
    actor: Option<Actor>,
}

impl fmt::Debug for TaskContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskContext")
            .field("ref_id", &self.inner.ref_id)
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}

/// Returned by [`TaskContext::progress`] once the task has been cancelled, so a loop can stop with `?`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("task was cancelled")]
#[non_exhaustive]
pub struct Cancelled;

/// So that a function returning `Result<_, TaskError>` can stop with `ctx.progress(..)?` too. (The task is already
/// cancelled: this error is never what a poller sees.)
impl From<Cancelled> for TaskError {
    fn from(cancelled: Cancelled) -> Self {
        TaskError::new(cancelled.to_string()).permanent()
    }
}

impl TaskContext {
    /// A context wired to a backend's record.
    pub fn new(ref_id: RefId, hooks: Arc<dyn TaskHooks>, cancel: CancellationToken) -> Self {
        Self {
            inner: Arc::new(ContextInner {
                ref_id: Some(ref_id),
                hooks: Some(hooks),
                cancel,
                actor: None,
            }),
        }
    }

    /// A context attached to nothing: reports go nowhere and it is never cancelled. For calling a function's body
    /// directly, such as in a unit test.
    pub fn detached() -> Self {
        Self {
            inner: Arc::new(ContextInner {
                ref_id: None,
                hooks: None,
                cancel: CancellationToken::new(),
                actor: None,
            }),
        }
    }

    /// The same context, for a task run as `actor`.
    pub fn with_actor(self, actor: Option<Actor>) -> Self {
        let inner = Arc::try_unwrap(self.inner).unwrap_or_else(|shared| ContextInner {
            ref_id: shared.ref_id.clone(),
            hooks: shared.hooks.clone(),
            cancel: shared.cancel.clone(),
            actor: shared.actor.clone(),
        });
        Self {
            inner: Arc::new(ContextInner { actor, ..inner }),
        }
    }

    /// The actor the task runs as: the one whose call started it (`None`: an anonymous user).
    pub fn actor(&self) -> Option<&Actor> {
        self.inner.actor.as_ref()
    }

    /// The task's ref id (`None` when detached).
    pub fn ref_id(&self) -> Option<&RefId> {
        self.inner.ref_id.as_ref()
    }

    /// Reports progress. It is visible to the next poll of `get_cached_result`.
    ///
    /// Returns `Err(Cancelled)` once the task has been cancelled, so that a loop can stop early with `?`.
    pub fn progress(
        &self,
        current: f64,
        total: Option<f64>,
        message: impl Into<String>,
    ) -> Result<(), Cancelled> {
        let message = message.into();
        if let Some(hooks) = &self.inner.hooks {
            let message = if message.is_empty() {
                None
            } else {
                Some(message)
            };
            hooks.report_progress(TaskProgress::new(current, total, message));
        }
        if self.is_cancelled() {
            Err(Cancelled)
        } else {
            Ok(())
        }
    }

    /// Appends `text` to the task's output log, on `stream`. Sync and cheap (a copy under a short lock), so a
    /// blocking body may call it as it goes. Every stream goes into one log, in the order written; the log keeps
    /// the newest `output_limit` bytes (default 1 MiB), and its latest line is the task's status message. Empty
    /// text writes nothing; a detached context writes nowhere.
    ///
    /// ```
    /// # use refcache_core::{TaskContext, OutputStream};
    /// fn build(ctx: &TaskContext) {
    ///     ctx.stdout("compiling 1 of 2\n");
    ///     ctx.output(OutputStream::from("linker"), "ld: done\n");
    /// }
    /// # build(&TaskContext::detached());
    /// ```
    pub fn output(&self, stream: impl Into<OutputStream>, text: &str) {
        if text.is_empty() {
            return;
        }
        if let Some(hooks) = &self.inner.hooks {
            hooks.write_output(&stream.into(), text);
        }
    }

    /// [`output`](Self::output) on stdout.
    pub fn stdout(&self, text: &str) {
        self.output(OutputStream::Stdout, text);
    }

    /// [`output`](Self::output) on stderr.
    pub fn stderr(&self, text: &str) {
        self.output(OutputStream::Stderr, text);
    }

    /// Sets the partial result: what the task is failed with if it exceeds its execution timeout.
    pub fn set_partial_result(&self, value: Value) {
        if let Some(hooks) = &self.inner.hooks {
            hooks.set_partial_result(value);
        }
    }

    /// Whether the task has been cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.inner.cancel.is_cancelled()
    }

    /// Resolves when the task is cancelled.
    pub async fn cancelled(&self) {
        self.inner.cancel.cancelled().await;
    }
}
