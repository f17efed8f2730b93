//! `RefCache`: the front door. A call flows key → hit? → backend (single-flight, run) → wait → response; a poll
//! flows ref id → backend record → response.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde_json::Value;
use tokio::runtime::{Handle, Runtime};

use crate::BackendStats;
use crate::backend::{
    CancelOutcome, RetryOutcome, Submission, Submitted, TaskBackend, TaskFilter, TaskPage,
    TaskSnapshot, TaskSpec,
};
use crate::config::{ConfigError, RefCacheConfig};
use crate::error::{BackendError, RefCacheError};
use crate::execute::LocalJob;
use crate::format::AsyncResponseFormat;
use crate::key::{CacheKey, KeyPrefix};
use crate::memory::MemoryTaskBackend;
use crate::ref_id::{RefId, is_cache_name};
use crate::registry::{self, TaskMeta};
use crate::response::CachedResponse;
use crate::session::Session;
use crate::task::TaskInfo;

/// A reference cache: finished values by call, and the tasks that produce them, behind one backend.
///
/// Cheap to clone (an `Arc`); clones share everything. Build one with [`RefCache::new`] (in-process backend,
/// defaults), [`RefCache::from_config`], or [`RefCache::builder`]; or let `#[cached]` use the process-wide
/// [`default_cache`](crate::default_cache).
#[derive(Clone)]
pub struct RefCache {
    inner: Arc<CacheInner>,
}

struct CacheInner {
    name: String,
    default_ttl: Duration,
    backend: Arc<dyn TaskBackend>,
    /// A runtime of our own, started on first need: for sync callers and callers outside tokio.
    runtime: Mutex<Option<Runtime>>,
    shut_down: AtomicBool,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl Drop for CacheInner {
    fn drop(&mut self) {
        // Dropping a runtime from async code panics; shutting it down in the background never does.
        if let Some(runtime) = self
            .runtime
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            runtime.shutdown_background();
        }
    }
}

impl std::fmt::Debug for RefCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RefCache")
            .field("name", &self.inner.name)
            .field("backend", &self.inner.backend.name())
            .finish_non_exhaustive()
    }
}

impl Default for RefCache {
    fn default() -> Self {
        Self::new()
    }
}

/// Options of [`RefCache::get_cached_result_with`].
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct GetOptions {
    /// The response format for a task that is not complete (default: `standard`).
    pub format: Option<AsyncResponseFormat>,
}

impl GetOptions {
    /// Answer in `format`.
    pub fn format(mut self, format: AsyncResponseFormat) -> Self {
        self.format = Some(format);
        self
    }
}

/// Builds a [`RefCache`] around a chosen backend.
#[derive(Debug, Clone)]
pub struct RefCacheBuilder {
    name: String,
    default_ttl: Duration,
}

impl RefCacheBuilder {
    /// The cache name (the prefix of its ref ids): 1 to 64 of `A-Z a-z 0-9 _ - .`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// How long values stay when their function sets no `ttl`.
    pub fn default_ttl(mut self, ttl: Duration) -> Self {
        self.default_ttl = ttl;
        self
    }

    /// A cache over the in-process backend with default settings.
    pub fn build(self) -> Result<RefCache, ConfigError> {
        self.backend(Arc::new(MemoryTaskBackend::default()))
    }

    /// A cache over `backend`.
    pub fn backend(self, backend: Arc<dyn TaskBackend>) -> Result<RefCache, ConfigError> {
        if !is_cache_name(&self.name) {
            return Err(ConfigError::InvalidValue {
                key: "name".into(),
                value: self.name,
                expected: "1 to 64 of the characters A-Z a-z 0-9 _ - .".into(),
            });
        }
        if self.default_ttl.is_zero() {
            return Err(ConfigError::InvalidValue {
                key: "default_ttl".into(),
                value: "0".into(),
                expected: "a positive duration".into(),
            });
        }
        Ok(RefCache {
            inner: Arc::new(CacheInner {
                name: self.name,
                default_ttl: self.default_ttl,
                backend,
                runtime: Mutex::new(None),
                shut_down: AtomicBool::new(false),
                hits: AtomicU64::new(0),
                misses: AtomicU64::new(0),
            }),
        })
    }
}

impl RefCache {
    /// A cache named `refcache` over a default in-process backend.
    pub fn new() -> Self {
        Self::builder().build().expect("the defaults are valid")
    }

    /// A builder.
    pub fn builder() -> RefCacheBuilder {
        RefCacheBuilder {
            name: "refcache".to_owned(),
            default_ttl: Duration::from_secs(3600),
        }
    }

    /// A cache built from settings: the backend named by `config.backend`, with its limits.
    pub fn from_config(config: &RefCacheConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let backend = crate::config::build_backend(config)?;
        Self::builder()
            .name(&config.name)
            .default_ttl(Duration::from_secs(config.default_ttl))
            .backend(backend)
    }

    /// The cache name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The backend.
    pub fn backend(&self) -> &Arc<dyn TaskBackend> {
        &self.inner.backend
    }

    /// How long values stay when their function sets no `ttl`.
    pub fn default_ttl(&self) -> Duration {
        self.inner.default_ttl
    }

    /// The cache's own runtime, started on first use (two worker threads, named `refcache-rt`). Refused once the
    /// cache is shut down.
    pub(crate) fn runtime(&self) -> Result<Handle, BackendError> {
        let mut slot = self
            .inner
            .runtime
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if self.inner.shut_down.load(Ordering::Acquire) {
            return Err(BackendError::ShuttingDown);
        }
        if let Some(rt) = slot.as_ref() {
            return Ok(rt.handle().clone());
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("refcache-rt")
            .enable_all()
            .build()
            .map_err(|e| BackendError::Runtime(e.to_string()))?;
        let handle = rt.handle().clone();
        *slot = Some(rt);
        Ok(handle)
    }

    /// Parses a ref id and checks that it belongs to this cache. A foreign or unknown id is `NotFound`, with the
    /// same text as an inaccessible one.
    fn own_ref(&self, ref_id: &str) -> Result<RefId, RefCacheError> {
        let ref_id = RefId::parse(ref_id)?;
        if ref_id.cache_name() != self.inner.name {
            return Err(RefCacheError::NotFound);
        }
        Ok(ref_id)
    }

    /// Polls a reference: its value when complete; otherwise its status, progress, error or cancellation, in the
    /// `standard` format.
    ///
    /// An unknown or expired id answers [`RefCacheError::NotFound`] (`Invalid or inaccessible reference`); text
    /// that is not a ref id at all answers [`RefCacheError::MalformedRefId`].
    pub async fn get_cached_result(&self, ref_id: &str) -> Result<CachedResponse, RefCacheError> {
        self.get_cached_result_with(ref_id, &GetOptions::default())
            .await
    }

    /// [`get_cached_result`](Self::get_cached_result) with options.
    pub async fn get_cached_result_with(
        &self,
        ref_id: &str,
        options: &GetOptions,
    ) -> Result<CachedResponse, RefCacheError> {
        let ref_id = self.own_ref(ref_id)?;
        let snapshot = self.visible(&ref_id).await?;
        Ok(respond(snapshot, options.format.unwrap_or_default(), None))
    }

    /// The task's record and value, if the caller may see it: a task in a session is visible only within that
    /// session ([`Session`]). Anything else is `NotFound`, with the same text as an unknown id.
    async fn visible(&self, ref_id: &RefId) -> Result<TaskSnapshot, RefCacheError> {
        let snapshot = self
            .inner
            .backend
            .get(ref_id)
            .await?
            .ok_or(RefCacheError::NotFound)?;
        if !crate::session::visible(
            snapshot.info.session_id.as_deref(),
            Session::current().as_ref(),
        ) {
            return Err(RefCacheError::NotFound);
        }
        Ok(snapshot)
    }

    /// The task record of a reference.
    pub async fn task_info(&self, ref_id: &str) -> Result<TaskInfo, RefCacheError> {
        let ref_id = self.own_ref(ref_id)?;
        Ok(self.visible(&ref_id).await?.info)
    }

    /// Cancels a task. An unknown (or invisible) id answers [`CancelOutcome::NotFound`]; a finished one
    /// [`CancelOutcome::AlreadyFinished`]. Cancelling twice answers `Cancelled` twice.
    pub async fn cancel_task(&self, ref_id: &str) -> Result<CancelOutcome, RefCacheError> {
        let ref_id = match self.own_ref(ref_id) {
            Ok(r) => r,
            Err(RefCacheError::NotFound) => return Ok(CancelOutcome::NotFound),
            Err(e) => return Err(e),
        };
        match self.visible(&ref_id).await {
            Ok(_) => Ok(self.inner.backend.cancel(&ref_id).await?),
            Err(RefCacheError::NotFound) => Ok(CancelOutcome::NotFound),
            Err(e) => Err(e),
        }
    }

    /// Runs a failed task again, under the same ref id. Errors: `NotFound` for an unknown (or invisible) id,
    /// [`RefCacheError::NotRetryable`] for a task that is not failed, [`RefCacheError::AlreadyRunning`] when the
    /// same call already runs again under another id.
    pub async fn retry_task(&self, ref_id: &str) -> Result<RefId, RefCacheError> {
        let ref_id = self.own_ref(ref_id)?;
        self.visible(&ref_id).await?;
        match self.inner.backend.retry(&ref_id).await? {
            RetryOutcome::Restarted => Ok(ref_id),
            RetryOutcome::NotFailed(status) => Err(RefCacheError::NotRetryable {
                ref_id: ref_id.to_string(),
                status,
            }),
            RetryOutcome::AlreadyRunning(other) => Err(RefCacheError::AlreadyRunning {
                ref_id: other.to_string(),
            }),
            _ => Err(RefCacheError::NotFound),
        }
    }

    /// Ends a session: cancels its running and queued tasks and drops its task records. Returns how many tasks it
    /// touched.
    pub async fn end_session(&self, session_id: &str) -> Result<usize, RefCacheError> {
        Ok(self.inner.backend.end_session(session_id).await?)
    }

    /// Lists task records, newest first. Within a [`Session`], only that session's tasks; outside any session,
    /// only tasks outside any session.
    pub async fn list_tasks(&self, mut filter: TaskFilter) -> Result<TaskPage, RefCacheError> {
        match Session::current() {
            Some(session) => filter.session_id = Some(session.id().to_owned()),
            None => filter.sessionless = true,
        }
        Ok(self.inner.backend.list(filter).await?)
    }

    /// The backend's counters, with this cache's hits and misses.
    pub async fn stats(&self) -> Result<BackendStats, RefCacheError> {
        let mut stats = self.inner.backend.stats().await?;
        stats.hits = self.inner.hits.load(Ordering::Relaxed);
        stats.misses = self.inner.misses.load(Ordering::Relaxed);
        Ok(stats)
    }

    /// Removes finished task records older than `max_age`.
    pub async fn cleanup(&self, max_age: Duration) -> Result<usize, RefCacheError> {
        Ok(self.inner.backend.cleanup(max_age).await?)
    }

    /// Stops taking work, lets running tasks finish until `deadline`, then cancels the rest.
    ///
    /// Then the cache's own runtime (the one sync callers use) is shut down and its threads joined: afterwards no
    /// tokio task or thread of refcache's is left running. (A blocking sync tool that never returns keeps its
    /// thread: it cannot be aborted.)
    pub async fn shutdown(&self, deadline: Duration) -> Result<(), RefCacheError> {
        let start = tokio::time::Instant::now();
        self.inner.backend.shutdown(deadline).await?;
        self.inner.shut_down.store(true, Ordering::Release);
        let runtime = self
            .inner
            .runtime
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(runtime) = runtime {
            // Joining a runtime's threads blocks, and must not happen on a runtime thread: do it on a plain thread.
            let remaining = deadline
                .saturating_sub(start.elapsed())
                .max(Duration::from_millis(100));
            let (done, joined) = tokio::sync::oneshot::channel();
            std::thread::Builder::new()
                .name("refcache-shutdown".into())
                .spawn(move || {
                    runtime.shutdown_timeout(remaining);
                    let _ = done.send(());
                })
                .map_err(|e| {
                    BackendError::Runtime(format!("cannot start the shutdown thread: {e}"))
                })?;
            let _ = joined.await;
        }
        tracing::debug!(cache = %self.inner.name, "refcache shut down");
        Ok(())
    }

    /// Runs one cached call: the code behind every `#[cached]` function.
    ///
    /// `prepare` builds the JSON arguments and the job; it runs only on a miss.
    #[doc(hidden)]
    pub async fn call<F>(
        &self,
        meta: &'static TaskMeta,
        key: CacheKey,
        scope: CallScope,
        prepare: F,
    ) -> Result<CachedResponse, RefCacheError>
    where
        F: FnOnce() -> Result<(Value, LocalJob), RefCacheError>,
    {
        // The hit path: the near cache, read in this very future (no extra async layer to copy its state through).
        if let Some(near) = self.inner.backend.near_cache()
            && let Some(stored) = near.get(&key).await
        {
            self.inner.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(CachedResponse::complete(stored));
        }
        // Everything else lives in its own boxed future, so that the hit path's future stays small.
        Box::pin(self.beyond_near_cache(meta, key, scope, prepare)).await
    }

    async fn beyond_near_cache<F>(
        &self,
        meta: &'static TaskMeta,
        key: CacheKey,
        scope: CallScope,
        prepare: F,
    ) -> Result<CachedResponse, RefCacheError>
    where
        F: FnOnce() -> Result<(Value, LocalJob), RefCacheError>,
    {
        if let Some(stored) = self.inner.backend.lookup(&key).await? {
            self.inner.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(CachedResponse::complete(stored));
        }
        self.inner.misses.fetch_add(1, Ordering::Relaxed);
        let (args, job) = prepare()?;
        let backend = &self.inner.backend;
        let ref_id = RefId::generate(&self.inner.name);
        let options = meta
            .options()
            .clone()
            .ttl(Some(meta.ttl().unwrap_or(self.inner.default_ttl)))
            .session_id(scope.session.map(|s| s.id().to_owned()));
        let spec = TaskSpec::new(
            ref_id,
            key,
            meta.name_arc().clone(),
            meta.namespace_arc().clone(),
            args,
        )
        .with_options(options);
        // The deadline is taken before submitting, so a slow submit cannot stretch the wait past `async_timeout`.
        let deadline = meta
            .async_timeout()
            .map(|t| tokio::time::Instant::now() + t);
        let ref_id = match backend.submit(Submission::new(spec, Some(job))).await? {
            Submitted::Hit(stored) => return Ok(CachedResponse::complete(stored)),
            submitted => submitted.ref_id().clone(),
        };
        let snapshot = backend
            .wait(&ref_id, deadline)
            .await?
            .ok_or(RefCacheError::NotFound)?;
        Ok(respond(snapshot, scope.format, Some(meta)))
    }
}

/// What a call carries from its call site: the response format and the session, captured where the call is made
/// (task-locals do not cross to the cache's own runtime).
#[doc(hidden)]
#[derive(Debug, Clone)]
pub struct CallScope {
    /// The response format of this call.
    pub format: AsyncResponseFormat,
    /// The session of this call.
    pub session: Option<Session>,
}

impl CallScope {
    /// The scope of a call to `meta` made here and now.
    pub fn capture(meta: &TaskMeta) -> Self {
        Self {
            format: AsyncResponseFormat::current_override().unwrap_or(meta.format()),
            session: Session::current(),
        }
    }

    /// The key prefix of the call: the task's own, or one derived with the session.
    pub fn key_prefix(&self, meta: &TaskMeta) -> KeyPrefix {
        match &self.session {
            None => meta.key_prefix(),
            Some(session) => KeyPrefix::with_session(meta.name(), meta.namespace(), session.id()),
        }
    }
}

/// Turns a backend snapshot into the caller's response.
fn respond(
    snapshot: TaskSnapshot,
    format: AsyncResponseFormat,
    meta: Option<&'static TaskMeta>,
) -> CachedResponse {
    if let Some(value) = snapshot.value {
        return CachedResponse::complete(value);
    }
    let schema = if format == AsyncResponseFormat::Full {
        meta.or_else(|| registry::meta(&snapshot.info.task_name))
            .map(TaskMeta::expected_schema)
    } else {
        None
    };
    CachedResponse::pending(snapshot.info, format, schema)
}
