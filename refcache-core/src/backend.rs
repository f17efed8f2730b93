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
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::execute::LocalJob;
use crate::model::access::AccessPolicy;
use crate::model::error::BackendError;
use crate::model::key::CacheKey;
use crate::model::preview::PreviewStrategy;
use crate::model::record::TaskInfo;
use crate::model::ref_id::RefId;
use crate::model::task::TaskStatus;
use crate::store::{StoredValue, ValueStore};

/// What runs and what it is called: the serializable half of a submission.
///
/// A remote worker needs nothing more than this to run the task: it finds the function by `task_name` in the
/// registry of `#[cached]` functions and calls it with `args`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TaskSpec {
    /// Where the result lands.
    pub ref_id: RefId,
    /// The identity of the call, for single-flight and hits.
    pub key: CacheKey,
    /// The task's stable name (the `name` attribute argument).
    pub task_name: Arc<str>,
    /// The namespace its value belongs to.
    pub namespace: Arc<str>,
    /// The arguments, as a JSON object of parameter name to value.
    pub args: Value,
    /// How it runs.
    pub options: TaskOptions,
    /// Who may do what with its reference and value.
    #[serde(default)]
    pub policy: Arc<AccessPolicy>,
    /// The actor whose call started it (`None`: an anonymous user). The work runs as this actor, so that what it
    /// reads through the cache (references it resolves itself, nested calls) is what its caller may read.
    #[serde(default)]
    pub actor: Option<crate::model::actor::Actor>,
}

impl TaskSpec {
    /// A spec with default options.
    pub fn new(
        ref_id: RefId,
        key: CacheKey,
        task_name: impl Into<Arc<str>>,
        namespace: impl Into<Arc<str>>,
        args: Value,
    ) -> Self {
        Self {
            ref_id,
            key,
            task_name: task_name.into(),
            namespace: namespace.into(),
            args,
            options: TaskOptions::default(),
            policy: Arc::default(),
            actor: None,
        }
    }

    /// The same spec, run as `actor`.
    pub fn with_actor(mut self, actor: Option<crate::model::actor::Actor>) -> Self {
        self.actor = actor;
        self
    }

    /// The same spec under another access policy.
    pub fn with_policy(mut self, policy: Arc<AccessPolicy>) -> Self {
        self.policy = policy;
        self
    }

    /// The same spec with other options.
    pub fn with_options(mut self, options: TaskOptions) -> Self {
        self.options = options;
        self
    }
}

/// How a task runs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TaskOptions {
    /// How long the finished value stays cached. `None`: the backend's default.
    #[serde(with = "opt_secs", default)]
    pub ttl: Option<Duration>,
    /// Higher starts first; FIFO within one priority.
    #[serde(default)]
    pub priority: i32,
    /// The session the task belongs to.
    #[serde(default)]
    pub session_id: Option<String>,
    /// Retries after a failed attempt (0: none). Only errors marked retryable are retried.
    #[serde(default)]
    pub max_retries: u32,
    /// The first retry's delay; attempt `n` waits `retry_backoff * 2^(n-1)`, with jitter, capped by
    /// `retry_backoff_max`. `None`: 1 s.
    #[serde(with = "opt_secs", default)]
    pub retry_backoff: Option<Duration>,
    /// The cap on a retry's delay. `None`: 60 s.
    #[serde(with = "opt_secs", default)]
    pub retry_backoff_max: Option<Duration>,
    /// The hard limit on the whole execution, retries included. `None`: the backend's default, if any.
    #[serde(with = "opt_secs", default)]
    pub execution_timeout: Option<Duration>,
    /// At most this many executions of this task name at a time. `None`: only `max_workers` limits it.
    #[serde(default)]
    pub max_concurrent: Option<u32>,
    /// The largest value answered whole (the function's `max_size`). `None`: the cache's default.
    #[serde(default)]
    pub max_size: Option<usize>,
    /// How a larger value is previewed (the function's `preview`). `None`: the cache's default.
    #[serde(default)]
    pub preview_strategy: Option<PreviewStrategy>,
}

/// The first retry's delay when the task sets none.
pub const DEFAULT_RETRY_BACKOFF: Duration = Duration::from_secs(1);
/// The cap on a retry's delay when the task sets none.
pub const DEFAULT_RETRY_BACKOFF_MAX: Duration = Duration::from_secs(60);

impl TaskOptions {
    /// The delay before retry number `attempt` (1-based): `base * 2^(attempt-1)`, capped, with "equal jitter" (a
    /// uniformly random point in the upper half), so that many failing tasks do not retry in lockstep.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let base = self.retry_backoff.unwrap_or(DEFAULT_RETRY_BACKOFF);
        let cap = self.retry_backoff_max.unwrap_or(DEFAULT_RETRY_BACKOFF_MAX);
        let exp = base
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(30))
            .min(cap);
        exp.mul_f64(0.5 + fastrand::f64() * 0.5)
    }

    /// Sets the retries.
    pub fn max_retries(mut self, max_retries: u32) -> Self {
        self.max_retries = max_retries;
        self
    }

    /// Sets the retry backoff base and cap.
    pub fn retry_backoff(mut self, base: Option<Duration>, max: Option<Duration>) -> Self {
        self.retry_backoff = base;
        self.retry_backoff_max = max;
        self
    }

    /// Sets the execution timeout.
    pub fn execution_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.execution_timeout = timeout;
        self
    }

    /// Sets the per-task concurrency limit.
    pub fn max_concurrent(mut self, max: Option<u32>) -> Self {
        self.max_concurrent = max;
        self
    }

    /// Sets the preview settings: the largest value answered whole, and how a larger one is previewed.
    pub fn preview(mut self, max_size: Option<usize>, strategy: Option<PreviewStrategy>) -> Self {
        self.max_size = max_size;
        self.preview_strategy = strategy;
        self
    }

    /// Sets the value's time to live.
    pub fn ttl(mut self, ttl: Option<Duration>) -> Self {
        self.ttl = ttl;
        self
    }

    /// Sets the priority.
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    /// Sets the session.
    pub fn session_id(mut self, session_id: Option<String>) -> Self {
        self.session_id = session_id;
        self
    }
}

mod opt_secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        value: &Option<Duration>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(d) => s.serialize_some(&d.as_secs_f64()),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        let secs = Option::<f64>::deserialize(d)?;
        secs.map(|s| Duration::try_from_secs_f64(s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

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

/// Which tasks to list.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TaskFilter {
    /// Only this status.
    pub status: Option<TaskStatus>,
    /// Only this session.
    pub session_id: Option<String>,
    /// Only tasks outside any session.
    #[serde(default)]
    pub sessionless: bool,
    /// Only this task name.
    pub task_name: Option<String>,
    /// Only this namespace.
    #[serde(default)]
    pub namespace: Option<String>,
    /// At most this many (the backend caps it).
    pub limit: Option<usize>,
    /// Continue after this cursor (from an earlier page).
    pub cursor: Option<String>,
}

impl TaskFilter {
    /// Every task.
    pub fn all() -> Self {
        Self::default()
    }

    /// Only tasks in `status`.
    pub fn status(mut self, status: TaskStatus) -> Self {
        self.status = Some(status);
        self
    }

    /// Only tasks of `session_id`.
    pub fn session(mut self, session_id: impl Into<String>) -> Self {
        self.session_id = Some(session_id.into());
        self
    }

    /// Only tasks named `task_name`.
    pub fn task_name(mut self, task_name: impl Into<String>) -> Self {
        self.task_name = Some(task_name.into());
        self
    }

    /// Only tasks in `namespace`.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// At most `limit` tasks per page.
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = Some(limit);
        self
    }

    /// The page after `cursor`.
    pub fn cursor(mut self, cursor: impl Into<String>) -> Self {
        self.cursor = Some(cursor.into());
        self
    }

    /// Whether `info` passes the filter (cursor aside).
    pub fn matches(&self, info: &TaskInfo) -> bool {
        self.status.is_none_or(|s| s == info.status)
            && (!self.sessionless || info.session_id.is_none())
            && self
                .session_id
                .as_deref()
                .is_none_or(|s| info.session_id.as_deref() == Some(s))
            && self
                .task_name
                .as_deref()
                .is_none_or(|n| n == &*info.task_name)
            && self
                .namespace
                .as_deref()
                .is_none_or(|n| n == &*info.namespace)
    }
}

/// One page of tasks, newest first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TaskPage {
    /// The tasks.
    pub tasks: Vec<TaskInfo>,
    /// Pass this as `cursor` for the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

impl TaskPage {
    /// A page.
    pub fn new(tasks: Vec<TaskInfo>, next_cursor: Option<String>) -> Self {
        Self { tasks, next_cursor }
    }
}

impl TaskPage {
    /// The default page size of a list.
    pub const DEFAULT_LIMIT: usize = 50;
    /// The largest page size of a list.
    pub const MAX_LIMIT: usize = 1000;

    /// One page of `infos` (the records that pass `filter`, in any order): newest first, after `filter.cursor`, at
    /// most `filter.limit` of them. Every backend pages through this one function, so cursors mean the same
    /// everywhere.
    pub fn paginate(infos: Vec<TaskInfo>, filter: &TaskFilter) -> Result<Self, BackendError> {
        let after = filter
            .cursor
            .as_deref()
            .map(ListCursor::parse)
            .transpose()?;
        let limit = filter
            .limit
            .unwrap_or(Self::DEFAULT_LIMIT)
            .clamp(1, Self::MAX_LIMIT);
        let mut infos: Vec<(ListCursor, TaskInfo)> =
            infos.into_iter().map(|i| (ListCursor::of(&i), i)).collect();
        infos.sort_by_key(|(key, _)| std::cmp::Reverse(*key));
        let start = match after {
            Some(cursor) => infos
                .iter()
                .position(|(key, _)| *key < cursor)
                .unwrap_or(infos.len()),
            None => 0,
        };
        let more = infos.len() > start + limit;
        let page: Vec<(ListCursor, TaskInfo)> = infos.into_iter().skip(start).take(limit).collect();
        let next_cursor = if more {
            page.last().map(|(key, _)| key.to_string())
        } else {
            None
        };
        Ok(Self::new(
            page.into_iter().map(|(_, i)| i).collect(),
            next_cursor,
        ))
    }
}

/// Where a list page ends: a record's creation time, with ties broken by a hash of its ref id. Lists are newest
/// first by this key, and the cursor is this key, so it names no ref id: a page that ends on a record the caller
/// may not see must not give its id away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ListCursor {
    at: std::time::SystemTime,
    tie: u64,
}

impl ListCursor {
    /// The sort key of `info`.
    pub fn of(info: &TaskInfo) -> Self {
        let hash = blake3::hash(info.ref_id.as_str().as_bytes());
        let mut tie = [0u8; 8];
        tie.copy_from_slice(&hash.as_bytes()[..8]);
        Self {
            at: info.created_at.0,
            tie: u64::from_le_bytes(tie),
        }
    }

    /// Reads a cursor handed out with an earlier page.
    pub fn parse(text: &str) -> Result<Self, BackendError> {
        let invalid = || BackendError::InvalidCursor(text.chars().take(100).collect());
        let (nanos, tie) = text.split_once('-').ok_or_else(invalid)?;
        let nanos: u64 = nanos.parse().map_err(|_| invalid())?;
        let tie = u64::from_str_radix(tie, 16).map_err(|_| invalid())?;
        Ok(Self {
            at: std::time::UNIX_EPOCH + Duration::from_nanos(nanos),
            tie,
        })
    }
}

impl std::fmt::Display for ListCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let nanos = self
            .at
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        write!(f, "{nanos}-{:016x}", self.tie)
    }
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

    /// Cancels the task: a pending task leaves the queue, a running one has its token fired.
    fn cancel<'a>(
        &'a self,
        ref_id: &'a RefId,
    ) -> BoxFuture<'a, Result<CancelOutcome, BackendError>>;

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

    /// Stops taking work, lets running tasks finish until `deadline`, then cancels the rest (message `shutdown`).
    fn shutdown(&self, deadline: Duration) -> BoxFuture<'_, Result<(), BackendError>>;
}
