//! Redis (feature `redis`).
//!
//! The Redis task backend is in progress (issue #6). What is here already: [`RedisServer`], a `redis-server` child
//! process on a free loopback port, which the backend's tests, fault tests and the distributed example run against.

mod server;

pub use server::{RedisServer, RedisServerError, RedisServerOptions};
