//! Layer 3, the in-process backend: [`MemoryTaskBackend`](crate::MemoryTaskBackend), the default. Tasks run on
//! tokio in this process; state and values live in memory (values in a byte-bounded moka cache, task records in a
//! TTL-bounded history). Built on the contract and the model only.
//!
//! - `config.rs`: its settings;
//! - `backend.rs`: the backend and its `TaskBackend` implementation;
//! - `driver.rs`: its shared state, and the life of a task in it (admit, spawn, drive, complete, retire);
//! - `active.rs`: a task in flight, its phases and its hooks;
//! - `history.rs`: finished task records.

mod active;
pub(crate) mod backend;
pub(crate) mod config;
mod driver;
mod history;
