//! The Postgres task backend (feature `postgres`): shared results across replicas, worker processes, crash
//! recovery, for teams that already run Postgres and want no second piece of infrastructure.
//!
//! [`PostgresTaskBackend`] keeps task records and values in tables of one schema, so that a call, a poll, a cancel
//! or a list can land on any replica. Tasks run in one of two [`Mode`]s:
//! - `local`: in the process that took the call (its state in Postgres);
//! - `workers`: on worker processes ([`worker::run`]) that claim tasks with `FOR UPDATE SKIP LOCKED` under leases
//!   and run them by their registered name.
//!
//! How it maps onto Postgres (tables in `migrations/`, statements in `schema.rs`, notifications in `notify.rs`,
//! running tasks in `runner.rs`, claiming, leases and recovery in `worker.rs`) is described in `docs/backends.md`.
//! The backend itself is `backend.rs` (the struct, construction, the `TaskBackend` impl) over the state its clones
//! share (`inner.rs`) and the statements' plumbing (`query.rs`); its methods call into one file per path:
//! `submit.rs`, `poll.rs`, `list.rs`, `control.rs`, `output.rs`, `input.rs`, `stats.rs`, with each status change a
//! compare-and-set in `transition.rs`. `codec.rs` holds the columns' encodings, `hub.rs` the in-process followers,
//! `held.rs` the tasks held here, `config.rs` the settings and `factory.rs` the `REFCACHE_BACKEND` hookup.
//!
//! Switching a service from the in-process default is config alone:
//! `REFCACHE_BACKEND=postgres://app@127.0.0.1:5432/app` (options in the query:
//! `?mode=workers&schema=myapp&lease=30&max_deliveries=3&sslmode=require`).

mod backend;
mod batch;
mod codec;
mod config;
mod control;
mod factory;
mod held;
mod hub;
mod inner;
mod input;
mod list;
mod notify;
mod output;
mod poll;
mod pool;
mod query;
mod runner;
mod schema;
mod server;
mod stats;
mod submit;
mod tls;
mod transition;
pub mod worker;

pub use backend::{PostgresBackendError, PostgresTaskBackend};
pub use config::{Mode, PostgresConfig, PostgresConfigError, SslMode};
pub use schema::{SCHEMA_VERSION, SchemaError};
pub use server::{PostgresServer, PostgresServerError, PostgresServerOptions};
