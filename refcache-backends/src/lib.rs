//! Remote task backends for refcache, one feature each.
//!
//! # Features
//! None is on by default; without one, this crate is empty.
//!
//! - `redis`: [`redis`]: the Redis task backend ([`redis::RedisTaskBackend`]): records, values and single-flight in
//!   Redis, tasks run `local`ly or on worker processes ([`redis::worker::run`]), leases and takeover of a lost
//!   worker's tasks. Also [`redis::RedisServer`], a private `redis-server` for tests and demos.
//!
//! Backends are chosen in config (`REFCACHE_BACKEND=redis://...`), so switching from the in-process default changes
//! no code. Most users enable the `redis` feature of the `refcache` facade instead of depending on this crate.
//!
//! # Supported Rust versions
//! Rust 1.88 or newer (edition 2024), as the rest of refcache.

#[cfg(feature = "redis")]
pub mod redis;

#[cfg(feature = "postgres")]
pub mod postgres;
