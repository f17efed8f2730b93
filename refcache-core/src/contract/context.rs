//! What a running task holds: its body's type ([`LocalJob`]), the handle it receives ([`TaskContext`]), and the
//! hooks through which a backend's record follows it ([`TaskHooks`]). Below `execute.rs` and `registry.rs`, which
//! both use these types.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::model::actor::Actor;
use crate::model::input::{InputRequest, InputSchema, InputSchemaError};
use crate::model::json_text::JsonText;
use crate::model::output::OutputStream;
use crate::model::ref_id::RefId;
use crate::model::task::{RetryInfo, TaskError, TaskProgress, Timestamp};

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
    /// The task asks `request`: its record moves to `input_required` with the question, and the future resolves
    /// with the answer (already checked against the schema by whoever took it). The record moves back to
    /// `processing` when the answer is taken. Cancel and the time limit are [`TaskContext::ask`]'s business: it drops
    /// the future and calls [`input_closed`](Self::input_closed). The default answers that this backend cannot ask.
    fn ask_input(&self, request: InputRequest) -> BoxFuture<'static, Result<Value, AskError>> {
        let _ = request;
        let backend = self.backend_name();
        Box::pin(async move { Err(AskError::Unsupported { backend }) })
    }
    /// The wait for question `key` ended without an answer (cancel, time limit): the record leaves
    /// `input_required` if it is still there and the question is dropped.
    fn input_closed(&self, key: &str) {
        let _ = key;
    }
    /// The backend's name, for the `backend` label of metrics (`memory`, `redis`, `postgres`).
    fn backend_name(&self) -> &'static str {
        "other"
    }
    /// The task's cancellation token, made on first need (by a cancel, or by whoever waits for one), for a backend
    /// that makes it lazily: most tasks are never cancelled, and a token is an allocation, with a lock of its tree
    /// node for every clone and drop. `None` (the default): the backend hands each context its token.
    fn cancellation(&self) -> Option<&OnceLock<CancellationToken>> {
        None
    }
}

/// Where a context's cancellation comes from.
#[derive(Clone)]
enum Cancel {
    /// A token it was given.
    Token(CancellationToken),
    /// The task's own, made on first need by its hooks ([`TaskHooks::cancellation`]).
    Lazy,
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
    cancel: Cancel,
    actor: Option<Actor>,
    /// Questions asked so far by this context, for keys unique over the task's life. Made at the first question
    /// (or when [`TaskContext::with_actor`] shares it): most tasks ask none, and every attempt makes a context.
    asked: OnceLock<Arc<AtomicU64>>,
}

/// Why [`TaskContext::ask`] gave no answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum AskError {
    /// The schema does not compile; nothing was asked.
    #[error("the question's schema is refused: {0}")]
    Schema(#[from] InputSchemaError),
    /// The time limit passed with no answer: the task is failed with this error.
    #[error("no input came within {seconds} s for the question `{message}`")]
    NoInput {
        /// The time limit, in seconds.
        seconds: f64,
        /// The question.
        message: String,
    },
    /// The task was cancelled while it waited.
    #[error("task was cancelled while it waited for input")]
    Cancelled,
    /// The context is detached (no task, so nobody to ask).
    #[error("a detached context cannot ask for input: run the function as a task")]
    Detached,
    /// The backend cannot carry questions.
    #[error(
        "the `{backend}` backend cannot ask for input: use the memory, Redis or Postgres backend"
    )]
    Unsupported {
        /// The backend's name.
        backend: &'static str,
    },
    /// The backend failed while it waited.
    #[error("the wait for input failed: {0}")]
    Backend(String),
}

/// So that a body returning `Result<_, TaskError>` can ask with `?`. A schema error or a detached context is
/// permanent (a retry asks the same); the rest may be retried.
impl From<AskError> for TaskError {
    fn from(error: AskError) -> Self {
        let code = match &error {
            AskError::NoInput { .. } => "NO_INPUT",
            AskError::Schema(_) => "INPUT_SCHEMA",
            _ => "INPUT",
        };
        let permanent = matches!(
            error,
            AskError::Schema(_)
                | AskError::Detached
                | AskError::Unsupported { .. }
                | AskError::Cancelled
        );
        let e = TaskError::new(error.to_string()).with_code(code);
        if permanent { e.permanent() } else { e }
    }
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
                cancel: Cancel::Token(cancel),
                actor: None,
                asked: OnceLock::new(),
            }),
        }
    }

    /// A context wired to a backend's record, for a task run as `actor`: [`new`](Self::new) then
    /// [`with_actor`](Self::with_actor), built once instead of twice (every attempt of every task makes one).
    pub(crate) fn for_task(
        ref_id: RefId,
        hooks: Arc<dyn TaskHooks>,
        cancel: CancellationToken,
        actor: Option<Actor>,
    ) -> Self {
        Self {
            inner: Arc::new(ContextInner {
                ref_id: Some(ref_id),
                hooks: Some(hooks),
                cancel: Cancel::Token(cancel),
                actor,
                asked: OnceLock::new(),
            }),
        }
    }

    /// [`for_task`](Self::for_task), cancelled through the task's own token, which `hooks` makes on first need
    /// ([`TaskHooks::cancellation`]; hooks that keep none would never cancel it, so only for hooks that do).
    pub(crate) fn for_task_lazily(
        ref_id: RefId,
        hooks: Arc<dyn TaskHooks>,
        actor: Option<Actor>,
    ) -> Self {
        debug_assert!(hooks.cancellation().is_some(), "hooks without a token");
        Self {
            inner: Arc::new(ContextInner {
                ref_id: Some(ref_id),
                hooks: Some(hooks),
                cancel: Cancel::Lazy,
                actor,
                asked: OnceLock::new(),
            }),
        }
    }

    /// The cancellation token, made now if it is the task's and nobody made it yet.
    fn token(&self) -> Option<&CancellationToken> {
        match &self.inner.cancel {
            Cancel::Token(token) => Some(token),
            Cancel::Lazy => self
                .inner
                .hooks
                .as_ref()
                .and_then(|hooks| hooks.cancellation())
                .map(|lazy| lazy.get_or_init(CancellationToken::new)),
        }
    }

    /// A context attached to nothing: reports go nowhere and it is never cancelled. For calling a function's body
    /// directly, such as in a unit test.
    pub fn detached() -> Self {
        Self {
            inner: Arc::new(ContextInner {
                ref_id: None,
                hooks: None,
                cancel: Cancel::Token(CancellationToken::new()),
                actor: None,
                asked: OnceLock::new(),
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
            asked: OnceLock::from(shared.asked.get_or_init(Arc::default).clone()),
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
        match &self.inner.cancel {
            Cancel::Token(token) => token.is_cancelled(),
            // Not made yet: nobody has cancelled it.
            Cancel::Lazy => self
                .inner
                .hooks
                .as_ref()
                .and_then(|hooks| hooks.cancellation())
                .and_then(OnceLock::get)
                .is_some_and(CancellationToken::is_cancelled),
        }
    }

    /// Resolves when the task is cancelled.
    pub async fn cancelled(&self) {
        match self.token() {
            Some(token) => token.cancelled().await,
            None => std::future::pending().await,
        }
    }

    /// Asks the caller for input and waits for the answer, a cancel, or `timeout` (`None`: no limit).
    ///
    /// The task's status becomes `input_required`, with `message` and `schema` on its record, so that every poll
    /// shows the question; whoever may answer ([`RefCache::respond`](crate::RefCache::respond), MCP `tasks/update`,
    /// the `respond_task` tool) sends an answer, which is checked against `schema` before it reaches the task. The
    /// schema is compiled here: one that does not compile fails the ask at once ([`AskError::Schema`]), with nothing
    /// asked. See [`InputSchema`] for what a schema may hold.
    ///
    /// When `timeout` passes, the task is failed with [`AskError::NoInput`]'s text ("no input came ...") and the
    /// ask returns that error. A cancel while waiting returns [`AskError::Cancelled`].
    ///
    /// ```
    /// # use refcache_core::{TaskContext, TaskError};
    /// # use std::time::Duration;
    /// async fn purge(ctx: &TaskContext, n: u32) -> Result<u32, TaskError> {
    ///     let schema = serde_json::json!({
    ///         "type": "object",
    ///         "properties": {"confirm": {"type": "boolean"}},
    ///         "required": ["confirm"],
    ///     });
    ///     let answer = ctx
    ///         .ask(format!("Delete {n} records?"), schema, Some(Duration::from_secs(300)))
    ///         .await?;
    ///     Ok(if answer["confirm"] == true { n } else { 0 })
    /// }
    /// ```
    pub async fn ask(
        &self,
        message: impl Into<String>,
        schema: Value,
        timeout: Option<Duration>,
    ) -> Result<Value, AskError> {
        let message = message.into();
        InputSchema::compile(&schema)?;
        if let Some(t) = timeout
            && (t.is_zero() || Timestamp::now().0.checked_add(t).is_none())
        {
            return Err(AskError::Schema(InputSchemaError {
                at: String::new(),
                reason: format!(
                    "the time limit must be more than zero and representable, got {t:?}"
                ),
            }));
        }
        let Some(hooks) = &self.inner.hooks else {
            return Err(AskError::Detached);
        };
        if self.is_cancelled() {
            return Err(AskError::Cancelled);
        }
        let n = self
            .inner
            .asked
            .get_or_init(Arc::default)
            .fetch_add(1, Ordering::Relaxed)
            + 1;
        let key = format!("input-{n}");
        let deadline = timeout.map(|t| Timestamp(Timestamp::now().0 + t));
        let owner = self.actor().map(Actor::pattern_name);
        let request =
            InputRequest::new(key.clone(), message.clone(), schema, deadline).with_owner(owner);
        let answer = hooks.ask_input(request);
        let limit = async {
            match timeout {
                Some(t) => tokio::time::sleep(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            () = self.cancelled() => {
                hooks.input_closed(&key);
                Err(AskError::Cancelled)
            }
            answer = answer => {
                if answer.is_err() {
                    hooks.input_closed(&key);
                }
                answer
            }
            () = limit => {
                let error = AskError::NoInput {
                    seconds: timeout.unwrap_or_default().as_secs_f64(),
                    message,
                };
                hooks.input_closed(&key);
                hooks.timed_out(TaskError::from(error.clone()).permanent());
                Err(error)
            }
        }
    }

    /// [`ask`](Self::ask) for a sync body (one that runs on a blocking thread): it blocks this thread until the
    /// answer, a cancel or the time limit. Call it only from a sync `#[cached]` function's body, never from async
    /// code (it would block a runtime worker).
    pub fn ask_blocking(
        &self,
        message: impl Into<String>,
        schema: Value,
        timeout: Option<Duration>,
    ) -> Result<Value, AskError> {
        let ask = self.ask(message, schema, timeout);
        match tokio::runtime::Handle::try_current() {
            // A sync body runs on a blocking thread of the runtime: no async context there, so `block_on` may wait.
            Ok(handle) => handle.block_on(ask),
            Err(_) => tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .map_err(|e| AskError::Backend(format!("cannot start a runtime to wait: {e}")))?
                .block_on(ask),
        }
    }
}
