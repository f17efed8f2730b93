//! Layer 4, the front door: [`RefCache`]. A call flows key → hit? → backend (single-flight, run) → wait → response
//! (`call.rs`); a poll flows ref id → backend record → access → response (`poll.rs`). This file holds the cache
//! itself, its builder and its accessors; the paths that use it are its children:
//!
//! - `call.rs`: the call path; `poll.rs`: the poll path; `control.rs`: cancel, retry, sessions, stats, shutdown;
//! - `admin.rs`: list, reference info, delete, clear a namespace; `resolve.rs`: reference inputs;
//! - `response.rs`: the wire shapes; `call_options.rs`: per-call options; `observe.rs`: observing a submission;
//! - `output.rs`: reading and following a task's output.
//! - `owner_cap.rs`: the cap on tasks in flight per owner; `submissions.rs`: hints of new work for live lists.
//!
//! Built on the in-process backend (the default), the contract and the model.

pub(crate) mod admin;
pub(crate) mod call;
pub(crate) mod call_options;
mod control;
pub(crate) mod health;
pub(crate) mod observe;
pub(crate) mod output;
pub(crate) mod owner_cap;
pub(crate) mod poll;
pub(crate) mod put;
pub(crate) mod resolve;
pub(crate) mod response;
mod submissions;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::runtime::{Handle, Runtime};

use crate::contract::backend::TaskBackend;
use crate::memory::backend::MemoryTaskBackend;
use crate::model::error::{BackendError, ConfigError, RefCacheError};
use crate::model::preview::Previewer;
use crate::model::ref_id::{RefId, is_cache_name};

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
    /// The backend's name as the `backend` label of metrics.
    backend_label: &'static str,
    /// A runtime of our own, started on first need: for sync callers and callers outside tokio.
    runtime: Mutex<Option<Runtime>>,
    shut_down: AtomicBool,
    hits: AtomicU64,
    misses: AtomicU64,
    /// The output log's byte cap for functions that set none (`None`: the backend's default, 1 MiB).
    output_limit: Option<usize>,
    /// The limit on a call's arguments, in bytes of canonical JSON (a function may set its own).
    max_argument_bytes: usize,
    /// The cap on tasks in flight per owner (`None`: no cap).
    owner_cap: Option<owner_cap::OwnerCap>,
    /// Counts submissions, to wake [`RefCache::follow_submissions`].
    submissions: tokio::sync::watch::Sender<u64>,
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

/// Builds a [`RefCache`] around a chosen backend.
#[derive(Debug, Clone)]
pub struct RefCacheBuilder {
    name: String,
    default_ttl: Duration,
    previewer: Previewer,
    output_limit: Option<usize>,
    max_argument_bytes: usize,
    max_tasks_per_owner: Option<usize>,
}

impl RefCacheBuilder {
    /// The byte cap of a task's output log, for functions that set no `output_limit` (default 1 MiB).
    pub fn output_limit(mut self, bytes: usize) -> Self {
        self.output_limit = Some(bytes);
        self
    }

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

    /// The limit on one call's arguments, in bytes of canonical JSON (default 1 MiB,
    /// [`DEFAULT_MAX_ARGUMENT_BYTES`](crate::DEFAULT_MAX_ARGUMENT_BYTES)); a function may set its own with
    /// `#[cached(max_argument_bytes = ..)]`. A call over it is refused at once, while its key is built, with
    /// [`RefCacheError::ArgumentsTooLarge`](crate::RefCacheError::ArgumentsTooLarge). Large inputs travel better as
    /// reference inputs: a ref id is a few dozen bytes, and the value it names is not counted.
    pub fn max_argument_bytes(mut self, limit: usize) -> Self {
        self.max_argument_bytes = limit;
        self
    }

    /// The cap on tasks one owner (the calling actor: over MCP, the requester) may have in flight at once in this
    /// process, as the MCP tasks security guidance asks of a server (default: `None`, no cap). A call that would
    /// start one more is refused before it is submitted, with
    /// [`RefCacheError::TooManyTasks`](crate::RefCacheError::TooManyTasks), which names the cap; a hit, or a call
    /// that joins a task in flight, starts nothing, but is refused too while the owner is at the cap. Calls made
    /// outside any actor scope count as the anonymous user's. A task counts from its submission until it ends,
    /// also when the call's submission answers an error or the caller goes away before it answers (a remote
    /// backend may have started the task all the same); with a cap set, the submission runs on a task of its own
    /// for that reason. After such an error the place is held only while the backend can say within 10 s that the
    /// task is in flight (then until it ends): during an outage it is given back, so the owner's next call meets
    /// the backend's error rather than the cap. An error that says nothing started (`QueueFull`, `ShuttingDown`)
    /// gives it back at once.
    pub fn max_tasks_per_owner(mut self, cap: Option<usize>) -> Self {
        self.max_tasks_per_owner = cap;
        self
    }

    /// A cache over the in-process backend with default settings.
    pub fn build(self) -> Result<RefCache, ConfigError> {
        self.backend(Arc::new(MemoryTaskBackend::default()))
    }

    /// A cache over the in-process backend with these settings:
    /// `RefCache::builder().memory(MemoryBackendConfig::default().max_workers(8))`. A zero `max_workers` is refused
    /// with [`ConfigError::InvalidValue`] naming it.
    pub fn memory(
        self,
        config: crate::memory::config::MemoryBackendConfig,
    ) -> Result<RefCache, ConfigError> {
        if config.max_workers == 0 {
            return Err(ConfigError::InvalidValue {
                key: "max_workers".into(),
                value: "0".into(),
                expected: "a positive whole number of tasks that may run at once".into(),
            });
        }
        self.backend(Arc::new(MemoryTaskBackend::new(config)))
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
        if self.output_limit == Some(0) {
            return Err(ConfigError::InvalidValue {
                key: "output_limit".into(),
                value: "0".into(),
                expected: "a positive number of bytes, such as 1048576 (1 MiB)".into(),
            });
        }
        if self.max_argument_bytes == 0 {
            return Err(ConfigError::InvalidValue {
                key: "max_argument_bytes".into(),
                value: "0".into(),
                expected: "a positive whole number of bytes".into(),
            });
        }
        if self.max_tasks_per_owner == Some(0) {
            return Err(ConfigError::InvalidValue {
                key: "max_tasks_per_owner".into(),
                value: "0".into(),
                expected: "a positive whole number, or `None` for no cap".into(),
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
                backend_label: crate::contract::metrics::backend_label(backend.name()),
                backend,
                runtime: Mutex::new(None),
                shut_down: AtomicBool::new(false),
                hits: AtomicU64::new(0),
                misses: AtomicU64::new(0),
                output_limit: self.output_limit,
                max_argument_bytes: self.max_argument_bytes,
                owner_cap: self.max_tasks_per_owner.map(owner_cap::OwnerCap::new),
                submissions: tokio::sync::watch::Sender::new(0),
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
            output_limit: None,
            max_argument_bytes: crate::model::key::DEFAULT_MAX_ARGUMENT_BYTES,
            max_tasks_per_owner: None,
        }
    }

    /// The cap on tasks in flight per owner (see [`RefCacheBuilder::max_tasks_per_owner`]).
    pub fn max_tasks_per_owner(&self) -> Option<usize> {
        self.inner.owner_cap.as_ref().map(owner_cap::OwnerCap::max)
    }

    /// The limit on one call's arguments, in bytes of canonical JSON (see
    /// [`RefCacheBuilder::max_argument_bytes`]).
    pub fn max_argument_bytes(&self) -> usize {
        self.inner.max_argument_bytes
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
}
