//! Executing one task: the wrapper that turns whatever the function does (value, error, panic) into an outcome,
//! with retries, backoff, the execution timeout and cancellation. The job type and the handle a task receives are
//! in `context.rs`.
//!
//! Every execution goes through [`run`]: a timed call, an untimed call, and (with a remote backend) a worker running
//! a task it pulled off a queue. Only how long the caller waits differs.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use std::time::Duration;

use crate::contract::context::{LocalJob, TaskContext, TaskHooks};
use crate::contract::metrics::{self, Event, GaugeGuard};
use crate::contract::spec::TaskSpec;
use crate::model::actor::Actor;
use crate::model::json_text::JsonText;
use crate::model::task::{RetryInfo, TaskError, Timestamp};

/// Limits on one execution.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct RunLimits {
    /// The hard limit on the whole execution, retries included.
    pub execution_timeout: Option<Duration>,
    /// How long a cancelled or timed-out task may run on before it is dropped (aborted).
    pub cancel_grace: Duration,
}

impl RunLimits {
    /// When the execution timeout passes, for an execution that starts now (`None`: it has none).
    pub(crate) fn deadline_from_now(&self) -> Option<tokio::time::Instant> {
        self.execution_timeout
            .map(|timeout| tokio::time::Instant::now() + timeout)
    }

    /// Limits of `execution_timeout` and `cancel_grace`.
    pub fn new(execution_timeout: Option<Duration>, cancel_grace: Duration) -> Self {
        Self {
            execution_timeout,
            cancel_grace,
        }
    }
}

/// How an execution ended.
#[derive(Debug)]
#[non_exhaustive]
pub enum Ending {
    /// The function returned (after any retries): its last result.
    Finished(Result<JsonText, TaskError>),
    /// The task was cancelled; it was stopped (or given up on after the grace period).
    Cancelled,
    /// The execution timeout passed; the task was failed through [`TaskHooks::timed_out`] and stopped.
    TimedOut,
}

/// The error of a task that exceeded its execution timeout.
pub fn timeout_error(timeout: Duration, partial_result: Option<Value>) -> TaskError {
    let seconds = timeout.as_secs_f64();
    TaskError::new(format!("Operation exceeded timeout of {seconds} seconds"))
        .with_code("TIMEOUT")
        .with_details(
            serde_json::json!({"timeout_seconds": seconds, "partial_result": partial_result}),
        )
        .with_remediation("Try breaking the operation into smaller chunks or increase timeout")
        .permanent()
}

/// The job that runs `spec`: the caller's own closure when it is in this process, else the function registered
/// under the task's name. A name that nothing in this binary registers is a permanent failure with the fix in its
/// text, never a hang.
pub fn job_for(spec: &TaskSpec, job: Option<&LocalJob>) -> Result<LocalJob, TaskError> {
    if let Some(job) = job {
        return Ok(job.clone());
    }
    match crate::contract::registry::find(&spec.task_name) {
        Some(task) => Ok(task.job()),
        None => Err(TaskError::new(format!(
            "unknown task `{}`: no #[cached] function with this name is linked into this process; link the crate \
             that defines it into every process that runs tasks (workers included)",
            spec.task_name
        ))
        .with_code("UNKNOWN_TASK")
        .permanent()),
    }
}

/// Runs a task to its end: attempts with retries and backoff, under the execution timeout, stopping on
/// cancellation. Every backend runs its tasks through this one function.
///
/// Cancellation and timeout are cooperative first: the token fires, and the task has `cancel_grace` to stop on its
/// own before its future is dropped. A blocking (sync) task cannot be dropped mid-run: its thread runs to the end,
/// and only its result is discarded.
pub async fn run_task(
    job: &LocalJob,
    spec: &TaskSpec,
    hooks: Arc<dyn TaskHooks>,
    cancel: CancellationToken,
    limits: RunLimits,
) -> Ending {
    let measured = Measured::begin(spec, hooks.backend_name());
    let deadline = limits.deadline_from_now();
    let ending = run_to_end(job, spec, hooks, &cancel, limits, deadline, None).await;
    measured.end(&ending, cancel.is_cancelled());
    ending
}

/// [`run_task`], for an execution whose first attempt was already started (and polled once) by the caller, with
/// what [`Measured::begin`] counted then and the execution timeout's `deadline` taken then (from
/// [`RunLimits::deadline_from_now`]): the in-process backend's first poll in the caller (`memory/driver.rs`). The rest (retries, the timeout, cancellation, the counts at the end) is `run_task`'s.
#[allow(clippy::too_many_arguments)] // `run_task`'s, and what the caller's first poll began.
pub(crate) async fn run_task_from(
    job: &LocalJob,
    spec: &TaskSpec,
    hooks: Arc<dyn TaskHooks>,
    cancel: CancellationToken,
    limits: RunLimits,
    measured: Measured,
    first: FirstAttempt,
    deadline: Option<tokio::time::Instant>,
) -> Ending {
    let ending = run_to_end(job, spec, hooks, &cancel, limits, deadline, Some(first)).await;
    measured.end(&ending, cancel.is_cancelled());
    ending
}

/// What the metrics count of one execution, from its start ([`begin`](Self::begin)) to its end
/// ([`end`](Self::end)): the start, the wait in the queue, the running gauge, the run time and how it ended.
/// Without the `metrics` feature it holds nothing.
pub(crate) struct Measured {
    #[cfg(feature = "metrics")]
    task: Arc<str>,
    #[cfg(feature = "metrics")]
    backend: &'static str,
    _running: GaugeGuard,
    #[cfg(feature = "metrics")]
    started: std::time::Instant,
}

impl Measured {
    /// The execution of `spec` starts now.
    pub(crate) fn begin(spec: &TaskSpec, backend: &'static str) -> Self {
        let task = &spec.task_name;
        metrics::count(Event::Started, task, backend);
        // The clock is read only for the metrics: without the feature, `seconds` records nothing, but its argument
        // would still read the clock (three reads per task, as in `RefCache::call`).
        #[cfg(feature = "metrics")]
        if let Some(submitted) = spec.submitted_at {
            metrics::seconds(
                metrics::TASK_QUEUE_WAIT_SECONDS,
                task,
                backend,
                submitted.elapsed(),
            );
        }
        Self {
            _running: GaugeGuard::hold(metrics::TASKS_RUNNING, task, backend),
            #[cfg(feature = "metrics")]
            task: task.clone(),
            #[cfg(feature = "metrics")]
            backend,
            #[cfg(feature = "metrics")]
            started: std::time::Instant::now(),
        }
    }

    /// The execution returned a value in its first attempt, as [`end`](Self::end) of `Ending::Finished(Ok(..))`
    /// counts it, without the value in hand.
    pub(crate) fn end_completed(self) {
        #[cfg(feature = "metrics")]
        self.finish(Event::Completed);
    }

    #[cfg(feature = "metrics")]
    fn finish(self, event: Event) {
        metrics::seconds(
            metrics::TASK_RUN_SECONDS,
            &self.task,
            self.backend,
            self.started.elapsed(),
        );
        metrics::count(event, &self.task, self.backend);
    }

    /// The execution ended as `ending` (`cancelled`: its token had fired by then).
    #[cfg_attr(not(feature = "metrics"), allow(clippy::unused_self))]
    pub(crate) fn end(self, ending: &Ending, cancelled: bool) {
        #[cfg(feature = "metrics")]
        {
            let event = match ending {
                Ending::Finished(Ok(_)) => Event::Completed,
                // A task that stops on its token with an error was cancelled, not failed (the record says
                // `cancelled`).
                Ending::Finished(Err(_)) if cancelled => Event::Cancelled,
                Ending::Finished(Err(_)) => Event::Failed,
                Ending::Cancelled => Event::Cancelled,
                Ending::TimedOut => Event::TimedOut,
            };
            self.finish(event);
        }
        #[cfg(not(feature = "metrics"))]
        let _ = (ending, cancelled);
    }
}

/// One attempt, as [`attempt`] starts it: boxed, so that it can be polled where it starts and then handed on.
pub(crate) type Attempt = BoxFuture<'static, Result<JsonText, TaskError>>;

/// A first attempt the caller already started: still running (polled once, pending), or already over with an
/// error (for the retries to take over).
pub(crate) enum FirstAttempt {
    /// Polled once, pending.
    Running(Attempt),
    /// It failed in its first poll (boxed: a `TaskError` inline would grow every driver that holds one).
    Failed(Box<TaskError>),
}

/// The token is borrowed down here (cloned only into each attempt's context): a clone or a drop of a
/// `CancellationToken` locks its tree node.
///
/// The attempts are boxed, and so are the timers of the rare ways (the execution timeout, the grace after a cancel or
/// a timeout, a retry's backoff): inline, they made this future, which every task's driver holds, over 1 KiB, and
/// the in-process driver's box then took the allocator's slow path (its thread cache holds chunks of up to 1 KiB),
/// which cost more than the two small boxes do together.
async fn run_to_end(
    job: &LocalJob,
    spec: &TaskSpec,
    hooks: Arc<dyn TaskHooks>,
    cancel: &CancellationToken,
    limits: RunLimits,
    deadline: Option<tokio::time::Instant>,
    first: Option<FirstAttempt>,
) -> Ending {
    let mut attempts = Box::pin(attempts(job, spec, hooks.clone(), cancel, first));
    // The deadline was taken when the execution started (before its first poll), not when this is first polled.
    let deadline = async {
        match deadline {
            Some(at) => Box::pin(tokio::time::sleep_until(at)).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        biased;
        result = &mut attempts => Ending::Finished(result),
        () = cancel.cancelled() => {
            let _ = Box::pin(tokio::time::timeout(limits.cancel_grace, &mut attempts)).await;
            Ending::Cancelled
        }
        () = deadline => {
            let timeout = limits.execution_timeout.unwrap_or_default();
            hooks.timed_out(timeout_error(timeout, hooks.partial_result()));
            cancel.cancel();
            let _ = Box::pin(tokio::time::timeout(limits.cancel_grace, &mut attempts)).await;
            Ending::TimedOut
        }
    }
}

/// The context of attempt of `spec`, wired to `hooks` and `cancel`, run as the spec's actor.
pub(crate) fn context_for(
    spec: &TaskSpec,
    hooks: Arc<dyn TaskHooks>,
    cancel: &CancellationToken,
) -> TaskContext {
    TaskContext::for_task(
        spec.ref_id.clone(),
        hooks,
        cancel.clone(),
        spec.actor.clone(),
    )
}

/// [`context_for`], cancelled through the task's own token, made on first need by `hooks`
/// ([`TaskHooks::cancellation`]).
pub(crate) fn lazy_context_for(spec: &TaskSpec, hooks: Arc<dyn TaskHooks>) -> TaskContext {
    TaskContext::for_task_lazily(spec.ref_id.clone(), hooks, spec.actor.clone())
}

async fn attempts(
    job: &LocalJob,
    spec: &TaskSpec,
    hooks: Arc<dyn TaskHooks>,
    cancel: &CancellationToken,
    mut first: Option<FirstAttempt>,
) -> Result<JsonText, TaskError> {
    let max_retries = spec.options.max_retries;
    let mut attempt = 1u32;
    loop {
        let outcome = match first.take() {
            Some(FirstAttempt::Running(running)) => running.await,
            Some(FirstAttempt::Failed(error)) => Err(*error),
            None => {
                run(
                    job,
                    spec.args.clone(),
                    context_for(spec, hooks.clone(), cancel),
                )
                .await
            }
        };
        let error = match outcome {
            Ok(value) => return Ok(value),
            Err(error) => error,
        };
        hooks.attempt_failed(RetryInfo {
            attempt,
            error: error.message.clone(),
            timestamp: Timestamp::now(),
        });
        if !error.retryable || attempt > max_retries || cancel.is_cancelled() {
            return Err(error);
        }
        let delay = spec.options.backoff(attempt);
        let at = Timestamp(std::time::SystemTime::now() + delay);
        tracing::debug!(ref_id = %spec.ref_id, attempt, ?delay, error = %error, "attempt failed; retrying");
        hooks.retry_scheduled(format!(
            "Attempt {attempt} failed: {error}. Retrying as attempt {} of {} at {at}",
            attempt + 1,
            max_retries + 1
        ));
        Box::pin(tokio::time::sleep(delay)).await;
        hooks.retry_started();
        metrics::count(Event::Retried, &spec.task_name, hooks.backend_name());
        attempt += 1;
    }
}

/// Runs one attempt of `job`, turning a panic into a failure (`panicked: <message>`).
///
/// The attempt runs as the context's actor ([`TaskContext::actor`]): within it, [`Actor::current`] is the caller.
pub async fn run(job: &LocalJob, args: Value, ctx: TaskContext) -> Result<JsonText, TaskError> {
    started(job, args, ctx).await
}

/// [`run`], started now (the job called, its future not yet polled) and boxed: a future of its own, which the
/// caller may poll once in place and then hand on ([`FirstAttempt::Running`]).
pub(crate) fn attempt(job: &LocalJob, args: Value, ctx: TaskContext) -> Attempt {
    Box::pin(started(job, args, ctx))
}

/// One attempt of `job`, started now: the job is called here (outside the actor's scope, as it always was), its
/// future polled only when this one is.
fn started(
    job: &LocalJob,
    args: Value,
    ctx: TaskContext,
) -> impl Future<Output = Result<JsonText, TaskError>> + Send + 'static {
    let actor = ctx.actor().cloned();
    // The job's own call is caught too (a body that panics before it makes its future): a failure, not a panic
    // out of the caller's first poll or the driver.
    let attempt = std::panic::catch_unwind(AssertUnwindSafe(|| job(args, ctx)))
        .map(|attempt| AssertUnwindSafe(attempt).catch_unwind());
    async move {
        let attempt = match attempt {
            Ok(attempt) => attempt,
            Err(payload) => return Err(TaskError::panicked(payload.as_ref())),
        };
        let outcome = match actor {
            Some(actor) => actor.scope(attempt).await,
            None => attempt.await,
        };
        match outcome {
            Ok(result) => result,
            Err(payload) => Err(TaskError::panicked(payload.as_ref())),
        }
    }
}

/// [`run_blocking`] as `actor` (the actor of the task's context): the body's thread is scoped to it.
pub async fn run_blocking_as<F>(actor: Option<Actor>, body: F) -> Result<JsonText, TaskError>
where
    F: FnOnce() -> Result<JsonText, TaskError> + Send + 'static,
{
    match actor {
        Some(actor) => run_blocking(move || actor.sync_scope(body)).await,
        None => run_blocking(body).await,
    }
}

/// Runs a synchronous body on tokio's blocking pool, turning a panic into a failure.
///
/// A blocking body cannot be aborted: cancelling it only marks the task, and the thread runs to the end.
pub async fn run_blocking<F>(body: F) -> Result<JsonText, TaskError>
where
    F: FnOnce() -> Result<JsonText, TaskError> + Send + 'static,
{
    match tokio::task::spawn_blocking(body).await {
        Ok(result) => result,
        Err(err) if err.is_panic() => Err(TaskError::panicked(err.into_panic().as_ref())),
        Err(err) => Err(TaskError::new(format!(
            "blocking task did not finish: {err}"
        ))),
    }
}
