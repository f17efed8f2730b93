//! refcache-core: the runtime behind `#[cached]`.
//!
//! Long-running tool calls for MCP servers and other RPC services. A `#[cached]` function submits its work to a
//! [`TaskBackend`] and waits at most `async_timeout`. Done in time: the caller gets the value, and it is cached.
//! Not done: the caller gets a processing reference (`ref_id`), the same execution continues in the background, and
//! anyone can poll [`get_cached_result`] for status, progress, the value, the error or the cancellation.
//!
//! Most users depend on the `refcache` facade crate, which re-exports this one.
//!
//! # Features
//! - `macros` (default): re-export the `#[cached]` attribute.
//! - `test-utils`: the backend conformance suite, [`conformance`].
//! - `mcp`: the rmcp integration, `mcp`: `#[cached]` on `#[tool]` methods, the ready-made polling tools and MCP
//!   Tasks.
//! - `metrics`: counters, gauges and histograms through the `metrics` facade ([`metric_names`]).
//! - `prometheus`: the Prometheus exporter and the `/metrics` and `/health` routes, `ops`. Implies `metrics`.
//! - `command`: the command job, `command`: allowlisted programs whose output streams into the task's log.
//! - `web`: the live task page and its JSON API, `web`: an axum router to mount beside `/mcp`.
//!
//! # Supported Rust versions
//! The minimum supported Rust version is 1.88 (edition 2024).
//!
//! # Example
//! ```
//! use refcache_core::{RefCache, TaskStatus, cached};
//!
//! #[cached(async_timeout = 5.0)]
//! async fn square(n: i64) -> Result<i64, std::convert::Infallible> {
//!     Ok(n * n)
//! }
//!
//! # #[tokio::main] async fn main() -> Result<(), refcache_core::RefCacheError> {
//! let first = square(12).await?;
//! assert_eq!(first.value_as::<i64>()?, Some(144));
//! let again = refcache_core::get_cached_result(first.ref_id().as_str()).await?;
//! assert_eq!(again.status(), TaskStatus::Complete);
//! # Ok(()) }
//! ```

#[allow(unused_extern_crates)]
extern crate self as refcache_core;

// The crate is in layers, lowest first. A file imports only from its own layer or a lower one, and no files or
// folders import one another in a circle: `tests/layers.rs` checks both (`.ci/run`, step `layers`).

// 1. The model: ref ids, keys, task states and records, errors, formats, previews, actors, sessions, namespaces,
//    access, output streams and chunks, input requests. No I/O.
mod model;

// 2. The contract: `TaskBackend`, `TaskSpec`, listing, the value store, `run_task`, `TaskContext`, the registry,
//    the scheduler, the bounded output log, metrics. What every backend implements (the Redis and Postgres
//    backends do, in `refcache-backends/src/redis.rs` + `redis/` and `postgres.rs` + `postgres/`).
mod contract;

// 3. The in-process backend: `MemoryTaskBackend`, the default.
mod memory;

// 4. The front door: `RefCache` (call, poll, output, control, admin, put, reference inputs, responses, health).
mod cache;

// 5. The edges: they know the backends, or sit on the front door: config, the process-wide cache, conformance,
//    MCP, operations, commands, the web page, and what the macro calls.

// Settings, and the backend they name (`RefCache::from_config`).
mod config;

// The process-wide default cache.
mod global;

#[cfg(feature = "test-utils")]
pub mod conformance;

#[cfg(feature = "mcp")]
pub mod mcp;

// The Prometheus exporter and the `/metrics` and `/health` routes.
#[cfg(feature = "prometheus")]
pub mod ops;

// The command job: allowlisted programs, streamed output, process-group stop.
#[cfg(feature = "command")]
pub mod command;
// The live task page and its JSON API.
#[cfg(feature = "web")]
pub mod web;

#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;

pub use cache::admin::{ReferenceInfo, ReferenceStats};
pub use cache::call_options::CallOptions;
pub use cache::health::Health;
pub use cache::output::MAX_OUTPUT_READ;
pub use cache::poll::GetOptions;
pub use cache::put::PUT_TASK_NAME;
pub use cache::resolve::{MAX_REFERENCE_DEPTH, MAX_RESOLVED_BYTES, MAX_RESOLVED_REFERENCES};
pub use cache::response::{
    AsyncResponse, CachedResponse, CompleteResponse, PreviewResponse, RestrictedResponse,
};
pub use cache::{RefCache, RefCacheBuilder};
pub use config::{BackendFactory, RefCacheConfig, redact_url};
pub use contract::backend::{
    BackendStats, CancelOutcome, RespondOutcome, RetryOutcome, Submission, Submitted, TaskBackend,
    TaskSnapshot,
};
pub use contract::context::{AskError, Cancelled, LocalJob, TaskContext, TaskHooks};
pub use contract::execute::{Ending, RunLimits, job_for, run as run_job, run_task, timeout_error};
pub use contract::list::{ListCursor, TaskFilter, TaskPage};
/// The names of the metrics refcache emits with the `metrics` feature (`docs/operations.md`).
pub use contract::metrics as metric_names;
pub use contract::output::{Appended, OutputLog, STATUS_LINE_MAX, status_line};
pub use contract::registry;
pub use contract::scheduler::Scheduler;
pub use contract::spec::{DEFAULT_RETRY_BACKOFF, DEFAULT_RETRY_BACKOFF_MAX, TaskOptions, TaskSpec};
pub use contract::store::{StoredValue, ValueStore};
pub use global::{default_cache, get_cached_result, get_cached_result_with, set_default_cache};
pub use memory::backend::MemoryTaskBackend;
pub use memory::config::{DEFAULT_MAX_RECORD_BYTES, MemoryBackendConfig};
pub use model::access::{AccessPolicy, Permissions, PolicyError};
pub use model::actor::{Actor, ActorKind};
pub use model::error::{BackendError, ConfigError, INACCESSIBLE_REFERENCE, RefCacheError};
pub use model::excerpt::excerpt;
pub use model::format::AsyncResponseFormat;
pub use model::input::{InputAnswerError, InputRequest, InputSchema, InputSchemaError};
pub use model::json_text::JsonText;
pub use model::key::{CacheKey, DEFAULT_MAX_ARGUMENT_BYTES, KeyBuilder, KeyPrefix};
pub use model::namespace::{MAX_NAMESPACE_LEN, Namespace, NamespaceError, NamespaceTemplate};
pub use model::output::{DEFAULT_OUTPUT_LIMIT, DEFAULT_OUTPUT_READ, OutputChunk, OutputStream};
pub use model::preview::{
    PageFit, Preview, PreviewStrategy, Previewer, SizeMeasure, TokenEncoding,
};
pub use model::record::TaskInfo;
pub use model::ref_id::RefId;
pub use model::schema::ExpectedSchema;
pub use model::session::Session;
pub use model::task::{RetryInfo, Retryable, TaskError, TaskProgress, TaskStatus, Timestamp};

/// The `#[cached]` attribute. See the crate docs of `refcache` for its arguments.
#[cfg(feature = "macros")]
#[doc(inline)]
pub use refcache_macros::cached;
