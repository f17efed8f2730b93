//! Remote task backends for refcache, one feature each.
//!
//! # Features
//! None is on by default; without one, this crate is empty.
//!
//! - `redis`: [`redis`]: the Redis task backend ([`redis::RedisTaskBackend`]): records, values and single-flight in
//!   Redis, tasks run `local`ly or on worker processes ([`redis::worker::run`]), leases and takeover of a lost
//!   worker's tasks. Also [`redis::RedisServer`], a private `redis-server` for tests and demos.
//! - `postgres`: [`postgres`]: the Postgres task backend ([`postgres::PostgresTaskBackend`]): records, values and
//!   single-flight in tables of one schema, tasks run `local`ly or on worker processes
//!   ([`postgres::worker::run`]) that claim them with `FOR UPDATE SKIP LOCKED` under leases, waits by
//!   `LISTEN`/`NOTIFY`, versioned migrations. Also [`postgres::PostgresServer`], a private PostgreSQL for tests and
//!   demos.
//!
//! Backends are chosen in config (`REFCACHE_BACKEND=redis://...` or `postgres://...`), so switching from the
//! in-process default changes no code. Most users enable the `redis` or `postgres` feature of the `refcache` facade
//! instead of depending on this crate.
//!
//! # Supported Rust versions
//! Rust 1.88 or newer (edition 2024), as the rest of refcache.

#[cfg(feature = "redis")]
pub mod redis;

#[cfg(feature = "postgres")]
pub mod postgres;
