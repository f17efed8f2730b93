//! The `TaskBackend` trait: where tasks run, where their state and values live.
//!
//! A backend owns the in-flight table (single-flight), the task records, and the finished values. The in-process
//! [`MemoryTaskBackend`](crate::MemoryTaskBackend) keeps them in memory; a remote backend (Redis) keeps them on its
//! server so that any replica can serve a poll. Backends are switched in config, so the trait is object-safe and used
//! as `Arc<dyn TaskBackend>`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};

use crate::contract::context::LocalJob;
use crate::contract::list::{TaskFilter, TaskPage};
use crate::contract::spec::TaskSpec;
use crate::contract::store::{StoredValue, ValueStore};
use crate::model::error::BackendError;
use crate::model::key::CacheKey;
use crate::model::output::OutputChunk;
use crate::model::record::TaskInfo;
use crate::model::ref_id::RefId;
use crate::model::task::TaskStatus;

/// A task to run: its spec, plus the local closure when the caller is in this process.
///
/// A remote backend sends only the spec; its workers find the function by name. The in-process backend runs the
/// closure, which is built from the same registered function, so both go through one execution path.
#[non_exhaustive]
pub struct Submission {
    /// The serializable description.
    pub spec: TaskSpec,
    /// The in-process closure, when there is one.
    pub job: Option<LocalJob>,
}

impl Submission {
    /// A submission of `spec`, run by `job` when the backend runs tasks in this process.
    pub fn new(spec: TaskSpec, job: Option<LocalJob>) -> Self {
        Self { spec, job }
    }
}

/// What a submission led to.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Submitted {
    /// A new execution started (or was queued) under the given ref id.
    Started(RefId),
    /// An execution for the same key was already in flight; the caller joins it.
    Joined(RefId),
    /// A finished value for the key appeared meanwhile; nothing was run.
    Hit(Arc<StoredValue>),
}

impl Submitted {
    /// The ref id the result lands under.
    pub fn ref_id(&self) -> &RefId {
        match self {
            Self::Started(r) | Self::Joined(r) => r,
            Self::Hit(v) => &v.ref_id,
        }
    }
}

/// A task record, plus its value when it is complete.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TaskSnapshot {
    /// The record.
    pub info: TaskInfo,
    /// The value, present when `info.status` is `complete`.
    pub value: Option<Arc<StoredValue>>,
}

impl TaskSnapshot {
    /// A snapshot of `info` with an optional value.
    pub fn new(info: TaskInfo, value: Option<Arc<StoredValue>>) -> Self {
        Self { info, value }
    }
}

/// The answer to a cancel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CancelOutcome {
    /// The task is cancelled (now, or already by an earlier cancel: cancel is idempotent).
    Cancelled,
    /// The task had already completed or failed; nothing changed.
    AlreadyFinished(TaskStatus),
    /// No such task.
    NotFound,
}

/// The answer to an answer ([`TaskBackend::respond`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RespondOutcome {
    /// The waiting task has the answer and runs on.
    Accepted,
    /// The task is not waiting on that question (it is in this status).
    NotWaiting(TaskStatus),
    /// No such task.
    NotFound,
}

/// The answer to a retry.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RetryOutcome {
    /// The failed task runs again under the same ref id.
    Restarted,
    /// The task is not failed (it is pending, processing, complete or cancelled).
    NotFailed(TaskStatus),
    /// The same call is already running again, under this ref id; poll that one.
    AlreadyRunning(RefId),
    /// No such task.
    NotFound,
}

/// Counters and gauges of a backend.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct BackendStats {
    /// Known task records by status.
    pub by_status: BTreeMap<TaskStatus, u64>,
    /// Tasks running now.
    pub running: u64,
    /// Tasks waiting in the queue.
    pub queued: u64,
    /// How many may run at once (`max_workers`).
    pub capacity: u64,
    /// Executions started.
    pub executions: u64,
    /// Calls answered from a finished value (counted by the `RefCache`: calls made in this process).
    pub hits: u64,
    /// Calls that found no finished value (counted by the `RefCache`: calls made in this process).
    pub misses: u64,
    /// Calls that joined an execution already in flight.
    pub coalesced: u64,
    /// Retries run.
    pub retries: u64,
    /// Tasks cancelled.
    pub cancellations: u64,
    /// Tasks that hit their execution timeout.
    pub timeouts: u64,
    /// Bytes the finished task records hold, as `max_record_bytes` weighs them (`0` from a backend that does not
    /// count them).
    #[serde(default)]
    pub record_bytes: u64,
    /// Bytes the value store holds, as `max_capacity_bytes` weighs them (JSON text plus a fixed cost per value;
    /// `0` from a backend that does not count them).
    #[serde(default)]
    pub value_bytes: u64,
}

/// Where tasks run and where their state and values live.
///
/// Every method returns a boxed future so that the trait is object-safe: a `RefCache` holds an
/// `Arc<dyn TaskBackend>` chosen by config. Every backend runs the shared conformance suite
/// (`refcache_core::conformance`, feature `test-utils`).
///
/// # Contract
/// - `submit` is single-flight: while a task for `spec.key` is in flight, every further submission of that key
///   answers [`Submitted::Joined`] with the first one's ref id. Exactly one execution runs.
/// - The ref id is known to `get` and `wait` as soon as `submit` returns.
/// - Terminal statuses are sticky; a result that arrives after a cancel is discarded.
/// - A finished value is stored before the status becomes `complete`: a waiter woken by `complete`, a poll, and a
///   lookup of the key all find it.
/// - `wait` is event-driven (no sleep loops) and returns at the deadline at the latest.
pub trait TaskBackend: Send + Sync + 'static {
    /// A short name for logs, such as `memory` or `redis`.
    fn name(&self) -> &str;

    /// The local tier of finished values, read first on every call: the whole store of the in-process backend, a
    /// near-cache of a remote one. Finished values never change, so a local copy cannot go stale.
    fn near_cache(&self) -> Option<&ValueStore> {
        None
    }

    /// The finished, unexpired value for `key` beyond the near cache (a remote store), if there is one. Called on a
    /// near-cache miss; the in-process backend has nothing beyond it.
    fn lookup<'a>(
        &'a self,
        key: &'a CacheKey,
    ) -> BoxFuture<'a, Result<Option<Arc<StoredValue>>, BackendError>>;

    /// Starts (or queues) the task, or joins the execution in flight for its key.
    fn submit(&self, submission: Submission) -> BoxFuture<'_, Result<Submitted, BackendError>>;

    /// The task's record (and value, when complete). `None` when unknown or expired.
    fn get<'a>(
        &'a self,
        ref_id: &'a RefId,
    ) -> BoxFuture<'a, Result<Option<TaskSnapshot>, BackendError>>;

    /// The task's record, with its value only when reading the value costs nothing extra; `None` as for
    /// [`get`](Self::get). The front door decides access on the record before any value is read (#15 §4: a poll
    /// of another owner's id costs what a poll of an unknown id costs), and fetches the value with `get` only when
    /// this answered a complete record without it. The default answers `get`, which is right for the in-process
    /// backend (its value is an `Arc` on the record, so one lookup serves both); a remote backend answers the
    /// record alone, without reading the value.
    fn get_record<'a>(
        &'a self,
        ref_id: &'a RefId,
    ) -> BoxFuture<'a, Result<Option<TaskSnapshot>, BackendError>> {
        self.get(ref_id)
    }

    /// Waits until the task is terminal or `deadline` passes (`None`: no deadline), then answers as `get`.
    fn wait<'a>(
        &'a self,
        ref_id: &'a RefId,
        deadline: Option<tokio::time::Instant>,
    ) -> BoxFuture<'a, Result<Option<TaskSnapshot>, BackendError>>;

    /// Follows a task in flight: a receiver that holds its latest record and wakes on every change (progress,
    /// status), or `None` when the task is not in flight here or this backend cannot follow it.
    ///
    /// Only live progress forwarding uses it (MCP progress notifications while a caller waits); polls, waits and
    /// `tasks/get` never depend on it. The default answers `None`.
    fn watch<'a>(
        &'a self,
        ref_id: &'a RefId,
    ) -> BoxFuture<'a, Result<Option<tokio::sync::watch::Receiver<TaskInfo>>, BackendError>> {
        let _ = ref_id;
        Box::pin(async { Ok(None) })
    }

    /// Reads the task's output log from byte `offset`, at most `max_bytes` (at least one character when there is
    /// one): see [`OutputChunk`]. `None` when the task is unknown. A task that wrote nothing answers an empty chunk
    /// (`done` once it is terminal). An offset past the end answers an empty chunk at the end.
    ///
    /// The caller (the front door) has checked access on the record already. A backend that keeps no output
    /// answers [`BackendError::Unsupported`].
    fn read_output<'a>(
        &'a self,
        ref_id: &'a RefId,
        offset: u64,
        max_bytes: usize,
    ) -> BoxFuture<'a, Result<Option<OutputChunk>, BackendError>>;

    /// Follows a task's output: a stream that yields each time the task writes output or changes status (several
    /// changes may come as one item), and ends when the backend can no longer tell. The follower reads with
    /// [`read_output`](Self::read_output) after each item, so an item is a hint, never data. `None`: this backend
    /// cannot follow the task (the front door then polls its record). The default answers `None`.
    fn follow_output<'a>(
        &'a self,
        ref_id: &'a RefId,
    ) -> BoxFuture<'a, Result<Option<BoxStream<'static, ()>>, BackendError>> {
        let _ = ref_id;
        Box::pin(async { Ok(None) })
    }

    /// Cancels the task: a pending task leaves the queue, a running one has its token fired.
    fn cancel<'a>(
        &'a self,
        ref_id: &'a RefId,
    ) -> BoxFuture<'a, Result<CancelOutcome, BackendError>>;

    /// Hands `answer` to the task waiting on question `key` (the front door has checked access, the status and the
    /// answer against the question's schema). The task's record leaves `input_required` when the answer is taken;
    /// a task no longer waiting on `key` answers [`RespondOutcome::NotWaiting`] and is left alone. Any replica may
    /// take the answer. The default answers [`BackendError::Unsupported`].
    fn respond<'a>(
        &'a self,
        ref_id: &'a RefId,
        key: &'a str,
        answer: serde_json::Value,
    ) -> BoxFuture<'a, Result<RespondOutcome, BackendError>> {
        let _ = (ref_id, key, answer);
        let backend: &'static str = match self.name() {
            "postgres" => "postgres",
            _ => "other",
        };
        Box::pin(async move {
            Err(BackendError::Unsupported {
                backend,
                capability: "input requests",
                hint: "use the memory or Redis backend, which take answers to questions a task asks",
            })
        })
    }

    /// Deletes a reference: cancels its task if it is in flight, and drops its record and its value. Answers
    /// whether there was anything to delete.
    fn delete<'a>(&'a self, ref_id: &'a RefId) -> BoxFuture<'a, Result<bool, BackendError>>;

    /// Lists task records, newest first. A cursor must not reveal a ref id (it may end a page the caller is then
    /// shown only part of).
    fn list(&self, filter: TaskFilter) -> BoxFuture<'_, Result<TaskPage, BackendError>>;

    /// Runs a failed task again under the same ref id.
    fn retry<'a>(&'a self, ref_id: &'a RefId) -> BoxFuture<'a, Result<RetryOutcome, BackendError>>;

    /// Ends a session: cancels its running and queued tasks and drops all its task records. Returns how many tasks
    /// it touched.
    fn end_session<'a>(&'a self, session_id: &'a str)
    -> BoxFuture<'a, Result<usize, BackendError>>;

    /// Removes finished task records older than `max_age`; returns how many.
    fn cleanup(&self, max_age: Duration) -> BoxFuture<'_, Result<usize, BackendError>>;

    /// Counters and gauges.
    fn stats(&self) -> BoxFuture<'_, Result<BackendStats, BackendError>>;

    /// One round trip to whatever holds the state (Redis `PING`, Postgres `SELECT 1`), for health checks. The
    /// default, for a backend in this process, answers at once.
    fn ping(&self) -> BoxFuture<'_, Result<(), BackendError>> {
        Box::pin(async { Ok(()) })
    }

    /// Stops taking work, lets running tasks finish until `deadline`, then cancels the rest (message `shutdown`).
    /// A backend whose tasks other workers can run may hand them back to those instead (status `pending` again,
    /// as Redis in `workers` mode does), so that a worker's shutdown does not cancel its callers' work.
    fn shutdown(&self, deadline: Duration) -> BoxFuture<'_, Result<(), BackendError>>;
}
