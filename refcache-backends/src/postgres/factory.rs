//! The `REFCACHE_BACKEND=postgres://...` hookup.

use std::sync::Arc;

use refcache_core::{BackendFactory, ConfigError, RefCacheConfig, TaskBackend};

use super::backend::PostgresTaskBackend;
use super::config::{self, PostgresConfig};

/// `REFCACHE_BACKEND=postgres://...` (and `postgresql://`) builds a [`PostgresTaskBackend`]: switching from
/// `memory` is config alone.
fn from_config(config: &RefCacheConfig) -> Result<Arc<dyn TaskBackend>, ConfigError> {
    let failed = |message: String| ConfigError::Backend {
        backend: config::redact(&config.backend),
        message,
    };
    let postgres =
        PostgresConfig::from_refcache_config(config).map_err(|e| failed(e.to_string()))?;
    let backend = PostgresTaskBackend::new(postgres).map_err(|e| failed(e.to_string()))?;
    Ok(Arc::new(backend))
}

inventory::submit!(BackendFactory::new("postgres", from_config));
inventory::submit!(BackendFactory::new("postgresql", from_config));
