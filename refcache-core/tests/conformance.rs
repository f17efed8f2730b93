//! `MemoryTaskBackend` runs the shared backend conformance suite.

use std::sync::Arc;

use futures::future::BoxFuture;
use refcache_core::conformance::{Fixture, Settings};
use refcache_core::{MemoryBackendConfig, MemoryTaskBackend};

fn make(settings: Settings) -> BoxFuture<'static, Fixture> {
    Box::pin(async move {
        let mut config = MemoryBackendConfig::default();
        config.max_workers = settings.max_workers;
        config.max_queued = settings.max_queued;
        config.cancel_grace = settings.cancel_grace;
        config.task_ttl = settings.task_ttl;
        Fixture::new(Arc::new(MemoryTaskBackend::new(config)))
    })
}

refcache_core::backend_conformance!(make);

mod input {
    use super::make;
    refcache_core::backend_conformance!(input: make);
}

mod output {
    use super::make;
    refcache_core::backend_conformance!(output: make);
}
