//! The shared backend conformance suite against the Postgres backend, in both modes. One PostgreSQL server (on a
//! free loopback port, in a temporary directory) serves the whole file; each test gets a schema of its own, so
//! the tests are as isolated as with a server each, without paying an `initdb` per test.
//!
//! - `local`: the backend runs what it submits, with its state in Postgres.
//! - `workers`: the backend submits to the table and, being built as a worker, also claims and runs the tasks by
//!   their registered names (the suite's tasks are registered at link time).
#![cfg(feature = "postgres")]

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use futures::future::BoxFuture;
use refcache_backends::postgres::{Mode, PostgresConfig, PostgresServer, PostgresTaskBackend};
use refcache_core::conformance::{Fixture, Settings};

/// The file's server, started on first use and stopped when the test binary exits.
fn server() -> &'static PostgresServer {
    static SERVER: OnceLock<PostgresServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        PostgresServer::start().expect(
            "PostgreSQL's server must be installed for the Postgres backend's tests (Debian: apt-get install \
             postgresql)",
        )
    })
}

/// A fresh schema per test.
fn config(settings: Settings) -> PostgresConfig {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let schema = format!(
        "conformance_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    PostgresConfig::from_url(&server().url())
        .expect("valid url")
        .schema(schema)
        .max_workers(settings.max_workers)
        .max_queued(settings.max_queued)
        .cancel_grace(settings.cancel_grace)
        .task_ttl(settings.task_ttl)
}

mod local {
    use super::*;

    fn make(settings: Settings) -> BoxFuture<'static, Fixture> {
        Box::pin(async move {
            let config = tokio::task::spawn_blocking(move || config(settings))
                .await
                .unwrap();
            let backend = PostgresTaskBackend::new(config.mode(Mode::Local)).expect("backend");
            backend.start().await.expect("postgres answers");
            Fixture::new(std::sync::Arc::new(backend))
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
            let config = tokio::task::spawn_blocking(move || config(settings))
                .await
                .unwrap();
            let backend = PostgresTaskBackend::worker(config).expect("backend");
            backend.start().await.expect("postgres answers");
            Fixture::new(std::sync::Arc::new(backend))
        })
    }

    refcache_core::backend_conformance!(make);
    refcache_core::backend_conformance!(output: make);
    refcache_core::backend_conformance!(input: make);
}
