//! The shared backend conformance suite against the Redis backend, in both modes, each test against its own
//! `redis-server` on a free loopback port.
//!
//! - `local`: the backend runs what it submits, with its state in Redis.
//! - `workers`: the backend submits onto the stream and, being built as a worker, also consumes it; the tasks run
//!   by their registered names (the suite's tasks are registered at link time).
#![cfg(feature = "redis")]

use futures::future::BoxFuture;
use refcache_backends::redis::{Mode, RedisConfig, RedisServer, RedisTaskBackend};
use refcache_core::conformance::{Fixture, Settings};

fn config(server: &RedisServer, settings: Settings) -> RedisConfig {
    RedisConfig::from_url(&server.url())
        .expect("valid url")
        .max_workers(settings.max_workers)
        .max_queued(settings.max_queued)
        .cancel_grace(settings.cancel_grace)
        .task_ttl(settings.task_ttl)
}

fn server() -> RedisServer {
    RedisServer::start().expect(
        "redis-server must be installed for the Redis backend's tests (Debian: apt-get install redis-server)",
    )
}

mod local {
    use super::*;

    fn make(settings: Settings) -> BoxFuture<'static, Fixture> {
        Box::pin(async move {
            let server = server();
            let backend = RedisTaskBackend::new(config(&server, settings).mode(Mode::Local))
                .expect("backend");
            Fixture::with_guard(std::sync::Arc::new(backend), server)
        })
    }

    refcache_core::backend_conformance!(make);
    refcache_core::backend_conformance!(output: make);
    refcache_core::backend_conformance!(input: make);
}

mod workers {
    use super::*;

    fn make(settings: Settings) -> BoxFuture<'static, Fixture> {
        Box::pin(async move {
            let server = server();
            let backend = RedisTaskBackend::worker(config(&server, settings)).expect("backend");
            backend.start().await.expect("redis answers");
            Fixture::with_guard(std::sync::Arc::new(backend), server)
        })
    }

    refcache_core::backend_conformance!(make);
    refcache_core::backend_conformance!(output: make);
    refcache_core::backend_conformance!(input: make);
}
