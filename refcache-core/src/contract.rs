//! Layer 2, the contract: what every backend implements and shares. The [`TaskBackend`](crate::TaskBackend) trait
//! and its answers, what a submission carries (`TaskSpec`, `TaskOptions`), listing, the value store, the execution
//! wrapper every backend runs its tasks through (`run_task`) and the handle a task receives (`TaskContext`), the
//! registry of tasks by name, and the scheduler. Imports only the model.
//!
//! The in-process backend (`memory/`) builds on it here; the remote ones (`refcache-backends`: Redis, and Postgres
//! next) build on it from outside, through the public re-exports.

pub(crate) mod backend;
pub(crate) mod context;
pub(crate) mod execute;
pub(crate) mod list;
pub mod metrics;
pub(crate) mod offload;
pub(crate) mod output;
pub mod registry;
pub(crate) mod scheduler;
pub(crate) mod spec;
pub(crate) mod store;
