//! refcache: long-running tool calls for MCP servers, done right.
//!
//! Put `#[cached]` on a tool function. The call submits its work to a [`TaskBackend`] and waits at most
//! `async_timeout`. Done in time: the caller gets the value, and it is cached. Not done: the caller gets a
//! processing reference, the **same** execution continues in the background (it is never started twice), and any
//! client polls [`get_cached_result`] for status, progress, the value, the error or the cancellation.
//!
//! ```
//! use refcache::{cached, CachedResponse};
//!
//! /// Squares a number, slowly.
//! #[cached(async_timeout = 5.0, response_format = "standard", namespace = "math", ttl = 3600)]
//! async fn slow_square(n: i64) -> Result<i64, std::io::Error> {
//!     tokio::time::sleep(std::time::Duration::from_millis(10)).await;
//!     Ok(n * n)
//! }
//!
//! # #[tokio::main] async fn main() -> Result<(), refcache::RefCacheError> {
//! let response: CachedResponse = slow_square(7).await?;
//! assert_eq!(response.value_as::<i64>()?, Some(49));
//! # Ok(()) }
//! ```
//!
//! # The attribute
//!
//! | argument | type | default | meaning |
//! |---|---|---|---|
//! | `async_timeout` | seconds (number > 0) | none: wait until done | how long the caller waits before getting a processing reference |
//! | `response_format` | `"minimal"`, `"standard"`, `"full"` | `"standard"` | how much a not-yet-complete response says |
//! | `namespace` | string or template (`"user:{user_id}"`) | `"public"` | the namespace of the values; part of the key; a template is filled from the calling [`Actor`] |
//! | `ttl` | seconds (number > 0) | the cache's `default_ttl` (3600) | how long the value stays cached |
//! | `cache` | expression of a type that derefs to [`RefCache`] | the process-wide [`default_cache`] | which cache to use |
//! | `name` | string | module path + function name (`Type::method` for methods) | the task's stable name; workers run tasks by it |
//! | `crate` | string path | found from `Cargo.toml` | where the runtime is, when it cannot be found (re-exports) |
//! | `skip(a, b)` | parameter names | none | leave parameters out of the key |
//! | `max_retries` | whole number ≥ 0 | `0` | retries after a failed attempt (retryable errors only) |
//! | `retry_backoff` | seconds (number > 0) | `1.0` | the first retry's delay; it doubles each retry, with jitter |
//! | `retry_backoff_max` | seconds (number > 0) | `60.0` | the cap on a retry's delay |
//! | `execution_timeout` | seconds (number > 0) | the backend's default (none) | hard limit on the whole execution, retries included; past it the task fails with `TIMEOUT` |
//! | `max_concurrent` | whole number ≥ 1 | none | at most this many executions of this task at a time |
//! | `priority` | whole number (may be negative) | `0` | higher starts first when tasks queue; FIFO within one |
//! | `max_size` | whole number ≥ 1 | the cache's (1000 tokens) | the largest value answered whole; a larger one gets a preview of at most this size |
//! | `output_limit` | whole number of bytes ≥ 1 | the cache's (1 MiB) | the cap of the task's output log ([`TaskContext::output`]); the oldest bytes go first |
//! | `max_argument_bytes` | whole number ≥ 1 | the cache's (1 MiB) | the limit on one call's arguments, in bytes of canonical JSON; a call over it is refused at once with `ArgumentsTooLarge` |
//! | `preview` | `"sample"`, `"paginate"`, `"truncate"` | the cache's (`"sample"`) | how a value larger than `max_size` is previewed |
//! | `policy` | `"public"`, `"user_only"`, `"read_only"`, `"execute_only"`, or an expression of type [`AccessPolicy`] | `"public"` | who may do what with the references it makes |
//! | `resolve_refs` | `true` or `false` | `true` | replace ref ids in the arguments by their values before the call |
//!
//! The task lifecycle (progress, retries, cancellation, timeouts, queueing, sessions, shutdown) is described in
//! `docs/lifecycle.md`; references, previews, paging, namespaces, access and reference inputs in `docs/refcache.md`.
//!
//! The wrapper keeps the function's name and parameters and returns
//! `Result<`[`CachedResponse`]`, `[`RefCacheError`]`>`. A task that fails is a response with status `failed`;
//! an `Err` means the call itself could not be made (bad arguments, backend unavailable, queue full).
//!
//! ## Parameters and the key
//! The key is a blake3 hash of the task name, the namespace, and the canonical JSON (RFC 8785, with integers written
//! exactly) of the key parameters. Key parameters must be owned and implement `Serialize + DeserializeOwned` (they
//! are deserialized again when the task runs, possibly in a worker process). These are **not** part of the key:
//! - `&self`: methods run on a clone of `self`, so `Self: Clone + Send + Sync + 'static`;
//! - a [`TaskContext`] (or `&TaskContext`) parameter: it is supplied by the runtime and removed from the wrapper's
//!   signature; use it to report progress, set a partial result and observe cancellation;
//! - parameters whose type is named `RequestContext`, `Peer`, `Extension` or `Meta` (rmcp's context types);
//! - parameters listed in `skip(...)`, such as a database pool: `#[cached(skip(pool))]`.
//!
//! Parameters out of the key are cloned into the background task, so they must be `Clone + Send + Sync + 'static`.
//!
//! ## Sync functions
//! A sync function stays sync: its work runs on tokio's blocking pool, and the caller returns at `async_timeout`,
//! not when the work ends. It works from a plain `fn main` with no runtime, and from inside a tokio runtime (it
//! never calls `block_on`; it waits on a channel while the cache's own runtime drives the call).
//!
//! ## Return types
//! A `Result<T, E>` (spelled `Result`, any path) fails the task with `E`'s `Display` text; an `Err` is never
//! cached. Any other return type is the value. The value must implement `Serialize`. If the success type
//! implements `schemars::JsonSchema`, full-format responses carry its schema in `expected_schema.schema`;
//! otherwise that field is `null` and `expected_schema.return_type` still names the type.
//!
//! ## MCP tools (feature `mcp`)
//! Put `#[cached]` **above** rmcp's `#[tool]` on a method of a `#[tool_router]` impl: the wrapper becomes the rmcp
//! tool. It keeps the tool's name, description and input schema (the `Parameters<T>` type), takes two more
//! extractors (the `_async_response_format` override and the request context, for the caller's owner and progress
//! token), and answers a `CallToolResponse`: the value, a preview, the processing reference, or an MCP task.
//! `#[cached]` below `#[tool]`, or on a `#[tool]` free function, is a compile error. See `refcache::mcp` and
//! `docs/mcp.md`.
//!
//! # Features
//! - `macros` (default): the `#[cached]` attribute.
//! - `mcp`: the rmcp 3.x integration, `refcache::mcp`: cached `#[tool]` methods, the ready-made polling tools
//!   (`get_cached_result`, `cancel_task`, `list_tasks`, `retry_task`), MCP Tasks (SEP-2663), per-owner isolation
//!   and progress notifications.
//! - `redis`: the Redis backend, `refcache::redis`: results shared across replicas, `local` or `workers` mode,
//!   worker processes (`refcache::worker::run`), crash recovery. Selected by config alone:
//!   `REFCACHE_BACKEND=redis://127.0.0.1:6379/0`. See `docs/backends.md`.
//! - `redis-tls`: `rediss://` (TLS to Redis, with rustls), checked against the system's roots or a CA given as
//!   `?tls_ca_file=...`; implies `redis`.
//! - `postgres`: the Postgres backend, `refcache::postgres`: the same, on the Postgres a team already runs, with
//!   durable results, `FOR UPDATE SKIP LOCKED` workers (`refcache::worker::postgres::run`) and `LISTEN`/`NOTIFY`
//!   waits. Selected by config alone: `REFCACHE_BACKEND=postgres://user@127.0.0.1:5432/db`.
//! - `metrics`: counters, gauges and histograms through the `metrics` facade, labelled by task and backend
//!   (`refcache::metric_names`, `docs/operations.md`). Off: the calls compile to nothing.
//! - `prometheus`: the Prometheus exporter and the `/metrics` and `/health` axum routes (`refcache::ops`); implies
//!   `metrics`. [`RefCache::health`] (one timed round trip to the backend) is there without any feature.
//! - `web`: the live task page and its JSON API, `refcache::web`: an axum router to mount beside `/mcp`, with MCP's
//!   owners, output streamed over server-sent events, cancel, retry and commands (`docs/web.md`).
//! - `test-utils`: the backend conformance suite (`refcache::conformance`), for backend authors.
//!
//! # Supported Rust versions
//! Rust 1.88 or newer (edition 2024).

#![cfg_attr(docsrs, feature(doc_cfg))]

#[allow(unused_extern_crates)]
extern crate self as refcache;

#[doc(inline)]
pub use refcache_core::*;

/// The Redis backend (feature `redis`). With the feature on, `REFCACHE_BACKEND=redis://...` selects it; build one
/// by hand with [`redis::RedisTaskBackend::new`] and [`RefCache::builder`].
#[cfg(feature = "redis")]
pub use refcache_backends::redis;

/// The Postgres backend (feature `postgres`). With the feature on, `REFCACHE_BACKEND=postgres://...` selects it;
/// build one by hand with [`postgres::PostgresTaskBackend::new`] and [`RefCache::builder`].
#[cfg(feature = "postgres")]
pub use refcache_backends::postgres;

/// Worker processes. Feature `redis`: [`worker::run`] takes tasks off the Redis stream and runs them by name until
/// SIGINT or SIGTERM. Feature `postgres`: [`worker::postgres::run`] does the same from the Postgres `tasks` table.
/// Link the crates that define your `#[cached]` functions into the worker binary.
#[cfg(any(feature = "redis", feature = "postgres"))]
pub mod worker {
    #[cfg(feature = "redis")]
    pub use refcache_backends::redis::worker::{run, run_until};
    #[cfg(feature = "redis")]
    pub use refcache_backends::redis::{Mode, RedisConfig};

    /// Postgres worker processes (feature `postgres`): [`postgres::run`] claims tasks from the `tasks` table
    /// (`FOR UPDATE SKIP LOCKED`) and runs them by name until SIGINT or SIGTERM.
    #[cfg(feature = "postgres")]
    pub mod postgres {
        pub use refcache_backends::postgres::worker::{run, run_until};
        pub use refcache_backends::postgres::{Mode, PostgresConfig};
    }
}

// The docs' Rust blocks are compiled and run as doctests. The ones that show a feature's API are tested with that
// feature on, as the README's test command (`--all-features`) does.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

#[cfg(all(doctest, feature = "mcp", feature = "redis"))]
#[doc = include_str!("../docs/guide.md")]
struct GuideDoctests;

#[cfg(all(
    doctest,
    feature = "redis",
    feature = "postgres",
    feature = "test-utils"
))]
#[doc = include_str!("../docs/backends.md")]
struct BackendsDoctests;

#[cfg(doctest)]
#[doc = include_str!("../docs/lifecycle.md")]
struct LifecycleDoctests;

#[cfg(doctest)]
#[doc = include_str!("../docs/refcache.md")]
struct RefcacheDoctests;

#[cfg(all(doctest, feature = "mcp"))]
#[doc = include_str!("../docs/mcp.md")]
struct McpDoctests;

#[cfg(all(doctest, feature = "web"))]
#[doc = include_str!("../docs/web.md")]
struct WebDoctests;

#[cfg(all(doctest, feature = "prometheus"))]
#[doc = include_str!("../docs/operations.md")]
struct OperationsDoctests;
