//! Executing one task: the job type, the handle a task receives, and the wrapper that turns whatever the function
//! does (value, error, panic) into an outcome.
//!
//! Every execution goes through [`run`]: a timed call, an untimed call, and (with a remote backend) a worker running
//! a task it pulled off a queue. Only how long the caller waits differs.

use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::ref_id::RefId;
use crate::task::{TaskError, TaskProgress};

/// A task's body: arguments as JSON in, value as JSON out.
///
/// The `#[cached]` macro builds one per function from the same code it registers for remote workers, so local and
/// remote execution share one path. It is `Fn`, not `FnOnce`, so that a retry can run it again.
pub type LocalJob =
    Arc<dyn Fn(Value, TaskContext) -> BoxFuture<'static, Result<Value, TaskError>> + Send + Sync>;

/// What a backend does with the reports a running task makes. Implemented by each backend's task record.
pub trait TaskHooks: Send + Sync {
    /// Records a progress report; it is visible to the next poll.
    fn report_progress(&self, progress: TaskProgress);
    /// Records the partial result a timed-out task is failed with.
    fn set_partial_result(&self, value: Value);
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

impl TaskContext {
    /// A context wired to a backend's record.
    pub fn new(ref_id: RefId, hooks: Arc<dyn TaskHooks>, cancel: CancellationToken) -> Self {
        Self {
            inner: Arc::new(ContextInner {
                ref_id: Some(ref_id),
                hooks: Some(hooks),
                cancel,
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
            }),
        }
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

/// Runs one attempt of `job`, turning a panic into a failure (`panicked: <message>`).
pub async fn run(job: &LocalJob, args: Value, ctx: TaskContext) -> Result<Value, TaskError> {
    match AssertUnwindSafe(job(args, ctx)).catch_unwind().await {
        Ok(result) => result,
        Err(payload) => Err(TaskError::panicked(payload.as_ref())),
    }
}

/// Runs a synchronous body on tokio's blocking pool, turning a panic into a failure.
///
/// A blocking body cannot be aborted: cancelling it only marks the task, and the thread runs to the end.
pub async fn run_blocking<F>(body: F) -> Result<Value, TaskError>
where
    F: FnOnce() -> Result<Value, TaskError> + Send + 'static,
{
    match tokio::task::spawn_blocking(body).await {
        Ok(result) => result,
        Err(err) if err.is_panic() => Err(TaskError::panicked(err.into_panic().as_ref())),
        Err(err) => Err(TaskError::new(format!(
            "blocking task did not finish: {err}"
        ))),
    }
}
