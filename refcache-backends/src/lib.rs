//! Remote task backends for refcache, one feature each.
//!
//! - `redis`: [`redis`] — for now the managed `redis-server` that tests and demos run against
//!   ([`redis::RedisServer`]); the backend itself is being built (issue #6).
//!
//! Backends are chosen in config (`REFCACHE_BACKEND`), so switching from the in-process default changes no code.

#[cfg(feature = "redis")]
pub mod redis;
