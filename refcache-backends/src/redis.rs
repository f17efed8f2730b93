//! The Redis task backend (feature `redis`): shared results across replicas, worker processes, crash recovery.
//!
//! [`RedisTaskBackend`] keeps task records, values and the key-to-ref index in Redis, so that a call, a poll, a
//! cancel or a list can land on any replica. Tasks run in one of two [`Mode`]s:
//! - `local`: in the process that took the call (its state in Redis);
//! - `workers`: on worker processes ([`worker::run`]) that take tasks off a Redis Stream with a consumer group and
//!   run them by their registered name.
//!
//! How it maps onto Redis (keys in `keys.rs`, atomic scripts in `scripts.rs`, events in `events.rs`, running tasks in
//! `runner.rs`, task output in `output.rs`, input requests in `input.rs`, the stream consumer and crash recovery in `worker.rs`) is described in `docs/backends.md`. The
//! struct and its shared state are `state.rs`, below every other file (with the leaves `config.rs`, `keys.rs`,
//! `scripts.rs`, `hub.rs`, the in-process followers, and `held.rs`, the tasks held here); `backend.rs` (construction,
//! the background loops, the `TaskBackend` impl) is at the top, and its methods call into one file per path:
//! `submit.rs`, `poll.rs`, `list.rs` and `control.rs`; `config.rs` holds its settings and `factory.rs` the
//! `REFCACHE_BACKEND=redis://...` hookup. Imports run one way (`farm-studio look refcache-backends/src`: no circle).
//!
//! Switching a service from the in-process default is config alone: `REFCACHE_BACKEND=redis://127.0.0.1:6379/0`
//! (options in the query: `?mode=workers&key_prefix=myapp&lease=30&max_deliveries=3`). With the `redis-tls`
//! feature, `rediss://` connects over TLS (rustls), checking the server against the system's roots or the CA
//! given by `tls_ca_file` ([`RedisTls`]).

mod backend;
mod config;
mod control;
mod events;
mod factory;
mod held;
mod hub;
mod input;
mod keys;
mod list;
mod output;
mod poll;
mod runner;
mod scripts;
mod server;
mod state;
mod submit;
mod tls;
pub mod worker;

pub use config::{Mode, RedisConfig, RedisConfigError};
pub use server::{
    RedisServer, RedisServerError, RedisServerOptions, RedisServerTls, command_name,
    monitored_command,
};
pub use state::{RedisBackendError, RedisTaskBackend};
pub use tls::RedisTls;
