//! Metrics through the [`metrics`](https://docs.rs/metrics) facade (feature `metrics`): what the front door and the
//! execution wrapper emit, by task name and backend. The names are listed in `docs/operations.md`.
//!
//! Without the feature every function here is empty and inlined away. With it, each event is one `metrics` macro
//! call: a thread-local check and an atomic load when no recorder is installed, and no allocation (the task name is
//! the spec's `Arc<str>`, the backend name is `'static`). Nothing is cached between events, so a recorder installed
//! after the cache was built still sees everything.

use std::sync::Arc;
use std::time::Duration;

/// `refcache_calls_hit_total`: a call answered from a finished value.
pub const CALLS_HIT: &str = "refcache_calls_hit_total";
/// `refcache_calls_submitted_total`: a call that submitted new work (started or queued it).
pub const CALLS_SUBMITTED: &str = "refcache_calls_submitted_total";
/// `refcache_calls_joined_total`: a call that joined an execution in flight (single-flight).
pub const CALLS_JOINED: &str = "refcache_calls_joined_total";
/// `refcache_call_response_seconds`: how long a call that was not a near-cache hit took to answer (the value,
/// or the processing reference at `async_timeout`).
pub const CALL_RESPONSE_SECONDS: &str = "refcache_call_response_seconds";
/// `refcache_tasks_started_total`: executions started (each counts once, whatever its retries).
pub const TASKS_STARTED: &str = "refcache_tasks_started_total";
/// `refcache_tasks_completed_total`: executions that returned a value.
pub const TASKS_COMPLETED: &str = "refcache_tasks_completed_total";
/// `refcache_tasks_failed_total`: executions that failed for good (after their retries), timeouts not included.
pub const TASKS_FAILED: &str = "refcache_tasks_failed_total";
/// `refcache_tasks_cancelled_total`: executions stopped by a cancel.
pub const TASKS_CANCELLED: &str = "refcache_tasks_cancelled_total";
/// `refcache_tasks_retried_total`: retry attempts started.
pub const TASKS_RETRIED: &str = "refcache_tasks_retried_total";
/// `refcache_tasks_timed_out_total`: executions failed by their `execution_timeout`.
pub const TASKS_TIMED_OUT: &str = "refcache_tasks_timed_out_total";
/// `refcache_tasks_running`: executions running in this process.
pub const TASKS_RUNNING: &str = "refcache_tasks_running";
/// `refcache_tasks_queued`: tasks waiting for a slot in this process's queue.
pub const TASKS_QUEUED: &str = "refcache_tasks_queued";
/// `refcache_task_queue_wait_seconds`: from submission to the start of the execution.
pub const TASK_QUEUE_WAIT_SECONDS: &str = "refcache_task_queue_wait_seconds";
/// `refcache_task_run_seconds`: from the start of the execution to its end, retries included.
pub const TASK_RUN_SECONDS: &str = "refcache_task_run_seconds";

/// Which counter an event bumps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(dead_code)]
pub(crate) enum Event {
    Hit,
    Submitted,
    Joined,
    Started,
    Completed,
    Failed,
    Cancelled,
    Retried,
    TimedOut,
}

impl Event {
    #[cfg(feature = "metrics")]
    fn name(self) -> &'static str {
        match self {
            Self::Hit => CALLS_HIT,
            Self::Submitted => CALLS_SUBMITTED,
            Self::Joined => CALLS_JOINED,
            Self::Started => TASKS_STARTED,
            Self::Completed => TASKS_COMPLETED,
            Self::Failed => TASKS_FAILED,
            Self::Cancelled => TASKS_CANCELLED,
            Self::Retried => TASKS_RETRIED,
            Self::TimedOut => TASKS_TIMED_OUT,
        }
    }
}

/// Counts `event` for `task` on `backend`.
#[inline(always)]
pub(crate) fn count(event: Event, task: &Arc<str>, backend: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!(event.name(), "task" => task.clone(), "backend" => backend).increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = (event, task, backend);
}

/// Records a duration into the histogram `name`. (Its callers read the clock only with the feature on, so
/// without it nothing calls this.)
#[inline(always)]
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
pub(crate) fn seconds(name: &'static str, task: &Arc<str>, backend: &'static str, took: Duration) {
    #[cfg(feature = "metrics")]
    metrics::histogram!(name, "task" => task.clone(), "backend" => backend)
        .record(took.as_secs_f64());
    #[cfg(not(feature = "metrics"))]
    let _ = (name, task, backend, took);
}

/// Moves the gauge `name` by `delta`.
#[inline(always)]
pub(crate) fn gauge(name: &'static str, task: &Arc<str>, backend: &'static str, delta: f64) {
    #[cfg(feature = "metrics")]
    metrics::gauge!(name, "task" => task.clone(), "backend" => backend).increment(delta);
    #[cfg(not(feature = "metrics"))]
    let _ = (name, task, backend, delta);
}

/// Holds one unit of a gauge (a running execution, a queued task) and gives it back when dropped, so an execution
/// dropped mid-run (aborted after its grace period) still leaves the gauge right.
pub(crate) struct GaugeGuard {
    #[cfg(feature = "metrics")]
    held: Option<(&'static str, Arc<str>, &'static str)>,
}

impl GaugeGuard {
    /// Adds one to `name` until the guard is dropped.
    #[inline(always)]
    pub(crate) fn hold(name: &'static str, task: &Arc<str>, backend: &'static str) -> Self {
        gauge(name, task, backend, 1.0);
        Self {
            #[cfg(feature = "metrics")]
            held: Some((name, task.clone(), backend)),
        }
    }
}

impl Drop for GaugeGuard {
    #[inline(always)]
    fn drop(&mut self) {
        #[cfg(feature = "metrics")]
        if let Some((name, task, backend)) = self.held.take() {
            gauge(name, &task, backend, -1.0);
        }
    }
}

/// A backend's name as a `'static` label, so that a label never allocates: the built-in names as they are, any
/// other kept once for the life of the process (a process has a handful of backends).
pub(crate) fn backend_label(name: &str) -> &'static str {
    match name {
        "memory" => "memory",
        "redis" => "redis",
        "postgres" => "postgres",
        other => {
            static NAMES: std::sync::Mutex<Vec<&'static str>> = std::sync::Mutex::new(Vec::new());
            let mut names = NAMES
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match names.iter().find(|n| **n == other) {
                Some(name) => name,
                None => {
                    let name: &'static str = Box::leak(other.to_owned().into_boxed_str());
                    names.push(name);
                    name
                }
            }
        }
    }
}
