//! `RefCache`: the front door. A call flows key → hit? → backend (single-flight, run) → wait → response; a poll
//! flows ref id → backend record → response.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde_json::Value;
use tokio::runtime::{Handle, Runtime};

use crate::call_options::CallOptions;
use crate::config::RefCacheConfig;
use crate::contract::backend::BackendStats;
use crate::contract::backend::{
    CancelOutcome, RetryOutcome, Submission, Submitted, TaskBackend, TaskSnapshot,
};
use crate::contract::context::LocalJob;
use crate::contract::registry::{self, TaskMeta};
use crate::contract::spec::TaskSpec;
use crate::contract::store::StoredValue;
use crate::memory::backend::MemoryTaskBackend;
use crate::model::access::Permissions;
use crate::model::actor::Actor;
use crate::model::error::ConfigError;
use crate::model::error::{BackendError, RefCacheError};
use crate::model::format::AsyncResponseFormat;
use crate::model::key::{CacheKey, KeyBuilder, KeyPrefix};
use crate::model::preview::{PageFit, Preview, PreviewStrategy, Previewer};
use crate::model::record::TaskInfo;
use crate::model::ref_id::{RefId, is_cache_name};
use crate::model::session::Session;
use crate::response::CachedResponse;

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
    previewer: Previewer,
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
///
/// - neither `page`, `page_size` nor `full`: the whole value when it is within `max_size`, else a preview;
/// - `page` and/or `page_size`: one page of the value's items (1-indexed; `page_size` defaults to the cache's),
///   trimmed to `max_size`. A page beyond the last is empty, with the true totals;
/// - `full`: the whole value, whatever its size (it still needs `READ`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct GetOptions {
    /// The response format for a task that is not complete (default: `standard`).
    pub format: Option<AsyncResponseFormat>,
    /// The page to answer, from 1.
    pub page: Option<usize>,
    /// Items per page.
    pub page_size: Option<usize>,
    /// The largest value answered whole, and the largest preview or page (default: the function's `max_size`,
    /// else the cache's).
    pub max_size: Option<usize>,
    /// Answer the whole value, whatever its size.
    pub full: bool,
}

impl GetOptions {
    /// Answer in `format`.
    pub fn format(mut self, format: AsyncResponseFormat) -> Self {
        self.format = Some(format);
        self
    }

    /// Answer page `page` (from 1).
    pub fn page(mut self, page: usize) -> Self {
        self.page = Some(page);
        self
    }

    /// Pages of `page_size` items.
    pub fn page_size(mut self, page_size: usize) -> Self {
        self.page_size = Some(page_size);
        self
    }

    /// Answer whole only values within `max_size`; previews and pages within it too.
    pub fn max_size(mut self, max_size: usize) -> Self {
        self.max_size = Some(max_size);
        self
    }

    /// Answer the whole value, whatever its size.
    pub fn full(mut self, full: bool) -> Self {
        self.full = full;
        self
    }

    fn validate(&self) -> Result<(), RefCacheError> {
        let positive =
            |option: &'static str, value: Option<usize>, expected: &'static str| match value {
                Some(0) => Err(RefCacheError::InvalidOption {
                    option,
                    value: "0".into(),
                    expected,
                }),
                _ => Ok(()),
            };
        positive(
            "page",
            self.page,
            "a whole number from 1 (pages count from 1)",
        )?;
        positive(
            "page_size",
            self.page_size,
            "a whole number of items from 1",
        )?;
        positive(
            "max_size",
            self.max_size,
            "a whole number from 1, in the cache's measure (tokens or characters)",
        )?;
        if self.full && (self.page.is_some() || self.page_size.is_some()) {
            return Err(RefCacheError::InvalidOption {
                option: "full",
                value: "true".into(),
                expected: "`full` alone: it answers the whole value, so `page` and `page_size` cannot go with it",
            });
        }
        Ok(())
    }
}

/// Builds a [`RefCache`] around a chosen backend.
#[derive(Debug, Clone)]
pub struct RefCacheBuilder {
    name: String,
    default_ttl: Duration,
    previewer: Previewer,
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

    /// How values are measured and previewed: the size measure, the default `max_size` (1000 tokens), the page
    /// size (20) and the default strategy (`sample`).
    pub fn previewer(mut self, previewer: Previewer) -> Self {
        self.previewer = previewer;
        self
    }

    /// The largest value answered whole, by default (functions and calls may set their own).
    pub fn max_size(mut self, max_size: usize) -> Self {
        self.previewer.max_size = max_size;
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
        if self.previewer.max_size == 0 || self.previewer.page_size == 0 {
            return Err(ConfigError::InvalidValue {
                key: "max_size / page_size".into(),
                value: "0".into(),
                expected: "positive whole numbers".into(),
            });
        }
        Ok(RefCache {
            inner: Arc::new(CacheInner {
                name: self.name,
                default_ttl: self.default_ttl,
                previewer: self.previewer,
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
            previewer: Previewer::default(),
        }
    }

    /// A cache built from settings: the backend named by `config.backend`, with its limits.
    pub fn from_config(config: &RefCacheConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let backend = crate::config::build_backend(config)?;
        Self::builder()
            .name(&config.name)
            .default_ttl(Duration::from_secs(config.default_ttl))
            .previewer(config.previewer()?)
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

    /// How values are measured and previewed by default.
    pub fn previewer(&self) -> &Previewer {
        &self.inner.previewer
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
    pub(crate) fn own_ref(&self, ref_id: &str) -> Result<RefId, RefCacheError> {
        let ref_id = RefId::parse(ref_id)?;
        if ref_id.cache_name() != self.inner.name {
            return Err(RefCacheError::NotFound);
        }
        Ok(ref_id)
    }

    /// Polls a reference: its value when complete (a preview when larger than `max_size`); otherwise its status,
    /// progress, error or cancellation, in the `standard` format.
    ///
    /// An unknown or expired id, and one the actor in effect may not see, answer [`RefCacheError::NotFound`]
    /// (`Invalid or inaccessible reference`); text that is not a ref id at all answers
    /// [`RefCacheError::MalformedRefId`]. A complete value the actor may execute but not read answers
    /// [`CachedResponse::Restricted`].
    pub async fn get_cached_result(&self, ref_id: &str) -> Result<CachedResponse, RefCacheError> {
        self.get_cached_result_with(ref_id, &GetOptions::default())
            .await
    }

    /// [`get_cached_result`](Self::get_cached_result) with options: format, page, page size, `max_size`, full.
    pub async fn get_cached_result_with(
        &self,
        ref_id: &str,
        options: &GetOptions,
    ) -> Result<CachedResponse, RefCacheError> {
        options.validate()?;
        let ref_id = self.own_ref(ref_id)?;
        let actor = Actor::current();
        let (snapshot, permissions) = self.visible(&ref_id, &actor).await?;
        let Some(stored) = snapshot.value else {
            return Ok(respond_pending(
                snapshot.info.redacted_for(permissions),
                options.format.unwrap_or_default(),
                None,
            ));
        };
        if !permissions.contains(Permissions::READ) {
            return Ok(CachedResponse::restricted(stored.ref_id.clone()));
        }
        let view = if options.full {
            View::Full
        } else if options.page.is_some() || options.page_size.is_some() {
            View::Page {
                page: options.page.unwrap_or(1),
                page_size: options.page_size,
            }
        } else {
            View::Auto
        };
        Ok(self.show(stored, view, options.max_size))
    }

    /// The task's record and value, and what `actor` may do with it, if it may see it at all
    /// ([`Permissions::can_see`]). Anything else is `NotFound`, with the same text as an unknown id.
    pub(crate) async fn visible(
        &self,
        ref_id: &RefId,
        actor: &Actor,
    ) -> Result<(TaskSnapshot, Permissions), RefCacheError> {
        let snapshot = self
            .inner
            .backend
            .get(ref_id)
            .await?
            .ok_or(RefCacheError::NotFound)?;
        let permissions = snapshot.info.permissions_for(actor);
        if !permissions.can_see() {
            return Err(RefCacheError::NotFound);
        }
        Ok((snapshot, permissions))
    }

    /// [`visible`](Self::visible), and `needed` on top: a visible reference without it is
    /// [`RefCacheError::PermissionDenied`].
    pub(crate) async fn permitted(
        &self,
        ref_id: &RefId,
        actor: &Actor,
        operation: &'static str,
        needed: Permissions,
    ) -> Result<TaskSnapshot, RefCacheError> {
        let (snapshot, permissions) = self.visible(ref_id, actor).await?;
        if !permissions.contains(needed) {
            return Err(RefCacheError::PermissionDenied {
                ref_id: ref_id.to_string(),
                operation,
                needed,
            });
        }
        Ok(snapshot)
    }

    /// The task record of a reference (needs `READ` or `EXECUTE`).
    pub async fn task_info(&self, ref_id: &str) -> Result<TaskInfo, RefCacheError> {
        let ref_id = self.own_ref(ref_id)?;
        let (snapshot, permissions) = self.visible(&ref_id, &Actor::current()).await?;
        Ok(snapshot.info.redacted_for(permissions))
    }

    /// Cancels a task (needs `EXECUTE`). An unknown (or invisible) id answers [`CancelOutcome::NotFound`]; a
    /// finished one [`CancelOutcome::AlreadyFinished`]. Cancelling twice answers `Cancelled` twice.
    pub async fn cancel_task(&self, ref_id: &str) -> Result<CancelOutcome, RefCacheError> {
        let ref_id = match self.own_ref(ref_id) {
            Ok(r) => r,
            Err(RefCacheError::NotFound) => return Ok(CancelOutcome::NotFound),
            Err(e) => return Err(e),
        };
        match self
            .permitted(&ref_id, &Actor::current(), "cancel", Permissions::EXECUTE)
            .await
        {
            Ok(_) => Ok(self.inner.backend.cancel(&ref_id).await?),
            Err(RefCacheError::NotFound) => Ok(CancelOutcome::NotFound),
            Err(e) => Err(e),
        }
    }

    /// Runs a failed task again, under the same ref id (needs `EXECUTE`). Errors: `NotFound` for an unknown (or
    /// invisible) id, [`RefCacheError::NotRetryable`] for a task that is not failed,
    /// [`RefCacheError::AlreadyRunning`] when the same call already runs again under another id.
    pub async fn retry_task(&self, ref_id: &str) -> Result<RefId, RefCacheError> {
        let ref_id = self.own_ref(ref_id)?;
        self.permitted(&ref_id, &Actor::current(), "retry", Permissions::EXECUTE)
            .await?;
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
    /// `prepare` builds the JSON arguments and the job; it runs only on a miss (or first, when the arguments may
    /// hold references to resolve).
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
        if !scope.access.can_see() {
            return Err(self.call_denied(meta, &scope));
        }
        // The hit path: the near cache, read in this very future (no extra async layer to copy its state through).
        if !scope.refs
            && let Some(near) = self.inner.backend.near_cache()
            && let Some(stored) = near.get(&key).await
        {
            self.inner.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(self.answer(stored, &scope));
        }
        // Everything else lives in its own boxed future, so that the hit path's future stays small.
        Box::pin(self.beyond_near_cache(meta, key, scope, prepare)).await
    }

    async fn beyond_near_cache<F>(
        &self,
        meta: &'static TaskMeta,
        mut key: CacheKey,
        scope: CallScope,
        prepare: F,
    ) -> Result<CachedResponse, RefCacheError>
    where
        F: FnOnce() -> Result<(Value, LocalJob), RefCacheError>,
    {
        let mut arguments = Arguments::Lazy(prepare);
        if scope.refs {
            // The arguments may hold references: resolve them, and key the call by the resolved arguments.
            let (args, job) = arguments.take()?;
            let (args, unreadable) = self.resolve_inputs(args, &scope.actor()).await?;
            if let Some(check) = scope.check {
                check(&args).map_err(|message| RefCacheError::ResolvedArgument {
                    task: meta.name().to_owned(),
                    // serde's text quotes the value it rejected: keep only the argument's name when the caller
                    // resolved a value it may not read.
                    message: if unreadable.is_empty() {
                        message
                    } else {
                        message
                            .split_once(": ")
                            .map_or("an argument", |(name, _)| name)
                            .to_owned()
                            + ": a value you may execute but not read does not fit its type"
                    },
                })?;
            }
            // A value the caller may use but not read must not be confirmable by guessing: a call with it is keyed
            // apart from the same call with a literal value (and from other references to an equal value).
            let prefix = scope.key_prefix(meta).with_private_inputs(&unreadable);
            key = CacheKey::from_json_with_prefix(meta.name(), prefix, &args)?;
            if let Some(near) = self.inner.backend.near_cache()
                && let Some(stored) = near.get(&key).await
            {
                self.inner.hits.fetch_add(1, Ordering::Relaxed);
                return Ok(self.answer(stored, &scope));
            }
            arguments = Arguments::Ready(args, job);
        }
        if let Some(stored) = self.inner.backend.lookup(&key).await? {
            self.inner.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(self.answer(stored, &scope));
        }
        self.inner.misses.fetch_add(1, Ordering::Relaxed);
        let (args, job) = arguments.take()?;
        let backend = &self.inner.backend;
        let ref_id = RefId::generate(&self.inner.name);
        let options = meta
            .options()
            .clone()
            .ttl(Some(meta.ttl().unwrap_or(self.inner.default_ttl)))
            .session_id(scope.session().map(|s| s.id().to_owned()));
        let policy = meta.policy().map_err(|e| e.clone())?.clone();
        let namespace = scope
            .caller
            .as_ref()
            .and_then(|c| c.namespace.clone())
            .unwrap_or_else(|| meta.namespace_arc().clone());
        let spec = TaskSpec::new(ref_id, key, meta.name_arc().clone(), namespace, args)
            .with_options(options)
            .with_policy(policy)
            .with_actor(scope.caller.as_ref().map(|c| c.actor.clone()));
        // The deadline is taken before submitting, so a slow submit cannot stretch the wait past `async_timeout`.
        let deadline = meta
            .async_timeout()
            .map(|t| tokio::time::Instant::now() + t);
        let ref_id = match backend.submit(Submission::new(spec, Some(job))).await? {
            Submitted::Hit(stored) => return Ok(self.answer(stored, &scope)),
            submitted => submitted.ref_id().clone(),
        };
        crate::observe::submitted(&ref_id);
        let snapshot = backend
            .wait(&ref_id, deadline)
            .await?
            .ok_or(RefCacheError::NotFound)?;
        match snapshot.value {
            Some(stored) => Ok(self.answer(stored, &scope)),
            None => Ok(respond_pending(
                snapshot.info.redacted_for(scope.access),
                scope.format,
                Some(meta),
            )),
        }
    }

    /// Why a caller may not make this call: it could not even see what the call makes.
    #[cold]
    fn call_denied(&self, meta: &TaskMeta, scope: &CallScope) -> RefCacheError {
        RefCacheError::CallDenied {
            task: meta.name().to_owned(),
            actor: scope.actor().to_string(),
            namespace: scope.namespace().unwrap_or(meta.namespace()).to_owned(),
        }
    }

    /// A call's answer for a finished value: whole, previewed, or restricted when the caller may use but not read
    /// it. (The caller may see it: `call` refused the call otherwise.)
    fn answer(&self, stored: Arc<StoredValue>, scope: &CallScope) -> CachedResponse {
        if !stored.readable_by_all()
            && !stored
                .permissions_for(&scope.actor())
                .contains(Permissions::READ)
        {
            return CachedResponse::restricted(stored.ref_id.clone());
        }
        self.show(stored, View::Auto, scope.max_size)
    }

    /// A readable value as `view` asks: whole, previewed, or one page. `max_size` is the caller's; without it, the
    /// value's function's; without that, the cache's.
    fn show(
        &self,
        stored: Arc<StoredValue>,
        view: View,
        max_size: Option<usize>,
    ) -> CachedResponse {
        let defaults = &self.inner.previewer;
        let previewer =
            defaults.max_size(max_size.or(stored.max_size).unwrap_or(defaults.max_size));
        let (strategy, page, previewer) = match view {
            View::Full => return CachedResponse::complete(stored),
            View::Auto if stored.fits(previewer.measure, previewer.max_size) => {
                return CachedResponse::complete(stored);
            }
            View::Auto => {
                let strategy = stored.preview_strategy.unwrap_or(previewer.strategy);
                let page = (strategy == PreviewStrategy::Paginate).then_some(1);
                (strategy, page, previewer)
            }
            View::Page { page, page_size } => (
                PreviewStrategy::Paginate,
                Some(page),
                previewer.page_size(page_size.unwrap_or(previewer.page_size)),
            ),
        };
        let preview = stored.preview(&previewer, strategy, page);
        let message = preview_message(&stored.ref_id, &preview, &previewer);
        CachedResponse::preview(stored, preview, message)
    }
}

/// A call's JSON arguments and job: prepared on first need (a miss, or arguments that may hold references).
enum Arguments<F> {
    Lazy(F),
    Ready(Value, LocalJob),
}

impl<F: FnOnce() -> Result<(Value, LocalJob), RefCacheError>> Arguments<F> {
    fn take(self) -> Result<(Value, LocalJob), RefCacheError> {
        match self {
            Self::Lazy(prepare) => prepare(),
            Self::Ready(args, job) => Ok((args, job)),
        }
    }
}

/// How a readable value is answered.
#[derive(Debug, Clone, Copy)]
enum View {
    /// Whole when it fits `max_size`, else a preview.
    Auto,
    /// One page.
    Page {
        page: usize,
        page_size: Option<usize>,
    },
    /// Whole, whatever its size.
    Full,
}

/// What a preview says about itself and how to get the rest.
fn preview_message(ref_id: &RefId, preview: &Preview, previewer: &Previewer) -> String {
    let unit = previewer.measure.unit();
    let items = preview
        .total_items
        .map(|n| format!(", {n} items in all"))
        .unwrap_or_default();
    let whole = format!(
        "get_cached_result(ref_id=\"{ref_id}\", full=true) returns the whole value ({} {unit})",
        preview.original_size
    );
    // What a page leaves out, if it did not fit `max_size` whole, and what to try to see all of it.
    let max = previewer.max_size;
    let fit = match (preview.page_fit, preview.page_items, preview.shown_items()) {
        (Some(PageFit::Sampled), Some(on_page), Some(shown)) if shown > 0 => format!(
            ": {shown} of its {on_page} items fit max_size {max} {unit}, sampled evenly. To see every item, try \
             page_size={shown} (the pages are then numbered anew) or a larger max_size"
        ),
        (Some(PageFit::Cut), Some(on_page), Some(shown)) if shown < on_page => format!(
            ": {shown} of its {on_page} items are shown, cut to fit max_size {max} {unit}. A larger max_size, or \
             full=true, shows them whole"
        ),
        (Some(PageFit::Sampled | PageFit::Cut), Some(_), _) => format!(
            ": its items are cut to fit max_size {max} {unit}. A larger max_size, or full=true, shows them whole"
        ),
        (Some(PageFit::Cut), None, _) => {
            format!(": it is cut to fit max_size {max} {unit}. full=true returns it whole")
        }
        _ => String::new(),
    };
    match (preview.page, preview.total_pages) {
        (Some(page), Some(pages)) if page > pages => format!(
            "Page {page} is beyond the last page, {pages}{items}. Ask for a page from 1 to {pages}; {whole}."
        ),
        (Some(page), Some(pages)) if page < pages => format!(
            "Page {page} of {pages}{items}{fit}. Next: get_cached_result(ref_id=\"{ref_id}\", page={}, \
             page_size={}); {whole}.",
            page + 1,
            previewer.page_size
        ),
        (Some(page), Some(pages)) => {
            format!("Page {page} of {pages}, the last{items}{fit}; {whole}.")
        }
        _ if preview.total_items.is_none() => format!(
            "The value is {} {unit}, more than max_size {}: this is a {} preview of {} {unit}; {whole}.",
            preview.original_size,
            previewer.max_size,
            preview.strategy.as_str(),
            preview.preview_size,
        ),
        _ => format!(
            "The value is {} {unit}, more than max_size {}: this is a {} preview of {} {unit}{items}. Page \
             through it with get_cached_result(ref_id=\"{ref_id}\", page=1, page_size={}); {whole}.",
            preview.original_size,
            previewer.max_size,
            preview.strategy.as_str(),
            preview.preview_size,
            previewer.page_size
        ),
    }
}

/// What a call carries from its call site: the response options, the caller's access, and (only when some scope
/// is in effect or the namespace is a template) the actor, session and namespace, captured where the call is made
/// (task-locals do not cross to the cache's own runtime). Kept small: it travels inside every call's future.
#[doc(hidden)]
#[derive(Debug, Clone)]
pub struct CallScope {
    /// The response format of this call.
    pub format: AsyncResponseFormat,
    /// What the caller may do with the references this call makes or joins.
    pub access: Permissions,
    /// Whether the arguments may hold references to resolve.
    pub refs: bool,
    /// The caller's `max_size`.
    pub max_size: Option<usize>,
    /// Checks resolved arguments against the parameter types.
    pub check: Option<ArgCheck>,
    /// Who calls, in which session and namespace. `None`: no scope is in effect and the namespace is fixed, so
    /// the caller is an anonymous user outside any session.
    pub caller: Option<Box<Caller>>,
}

/// The calling actor, its session and the filled namespace of one call.
#[doc(hidden)]
#[derive(Debug, Clone)]
pub struct Caller {
    /// The actor.
    pub actor: Actor,
    /// The session in effect.
    pub session: Option<Session>,
    /// The namespace, when the function's is a template (filled for this actor).
    pub namespace: Option<Arc<str>>,
}

/// Checks a call's resolved JSON arguments against its parameter types (generated by `#[cached]`).
#[doc(hidden)]
pub type ArgCheck = fn(&Value) -> Result<(), String>;

impl CallScope {
    /// The scope of a call to `meta` made here and now. Fails when the function's namespace template needs a
    /// variable the actor lacks, or its policy is invalid.
    pub fn capture(meta: &TaskMeta) -> Result<Self, RefCacheError> {
        let policy = meta.policy().map_err(Clone::clone)?;
        let template = meta.namespace_template().map_err(Clone::clone)?;
        if template.is_none() && !crate::model::scope::any_scope() {
            // No scope anywhere in the process: nothing to look up; the anonymous user's access is the task's own.
            return Ok(Self {
                format: meta.format(),
                access: meta.anonymous_access(),
                refs: false,
                max_size: None,
                check: None,
                caller: None,
            });
        }
        let options = CallOptions::current();
        if options.max_size == Some(0) {
            return Err(RefCacheError::InvalidOption {
                option: "max_size",
                value: "0".into(),
                expected: "a whole number from 1, in the cache's measure (tokens or characters)",
            });
        }
        let actor = Actor::current();
        let namespace = template
            .map(|t| t.fill(&actor).map(Arc::from))
            .transpose()?;
        let session = Session::current();
        let access = policy.permissions_for(
            &actor,
            namespace.as_deref().unwrap_or(meta.namespace()),
            session.as_ref().map(Session::id),
        );
        Ok(Self {
            format: options.format.unwrap_or(meta.format()),
            access,
            refs: false,
            max_size: options.max_size,
            check: None,
            caller: Some(Box::new(Caller {
                actor,
                session,
                namespace,
            })),
        })
    }

    /// Notes whether the key arguments so far may hold references to resolve, and how to check the resolved
    /// arguments against the parameter types.
    pub fn note_refs(&mut self, meta: &TaskMeta, key: &KeyBuilder<'_>, check: ArgCheck) {
        self.refs = meta.resolve_refs() && key.mentions_ref_id();
        if self.refs {
            self.check = Some(check);
        }
    }

    /// The actor making the call.
    pub fn actor(&self) -> std::borrow::Cow<'_, Actor> {
        match &self.caller {
            Some(caller) => std::borrow::Cow::Borrowed(&caller.actor),
            None => std::borrow::Cow::Owned(Actor::anonymous_user()),
        }
    }

    /// The session of the call.
    pub fn session(&self) -> Option<&Session> {
        self.caller.as_ref().and_then(|c| c.session.as_ref())
    }

    /// The filled namespace, when the function's is a template.
    pub fn namespace(&self) -> Option<&str> {
        self.caller.as_ref().and_then(|c| c.namespace.as_deref())
    }

    /// The key prefix of the call: the task's own, or one derived with the filled namespace and the session.
    pub fn key_prefix(&self, meta: &TaskMeta) -> KeyPrefix {
        let namespace = self.namespace().unwrap_or(meta.namespace());
        match (self.namespace(), self.session()) {
            (None, None) => meta.key_prefix(),
            (_, Some(session)) => KeyPrefix::with_session(meta.name(), namespace, session.id()),
            (Some(_), None) => KeyPrefix::new(meta.name(), namespace),
        }
    }
}

/// The answer for a task that has no value (yet).
fn respond_pending(
    info: TaskInfo,
    format: AsyncResponseFormat,
    meta: Option<&'static TaskMeta>,
) -> CachedResponse {
    let schema = if format == AsyncResponseFormat::Full {
        meta.or_else(|| registry::meta(&info.task_name))
            .map(TaskMeta::expected_schema)
    } else {
        None
    };
    CachedResponse::pending(info, format, schema)
}
