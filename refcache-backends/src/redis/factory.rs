//! The config hookup: `REFCACHE_BACKEND=redis://...` (and `rediss://`) builds a [`RedisTaskBackend`].

use std::sync::Arc;

use refcache_core::{BackendFactory, ConfigError, RefCacheConfig, TaskBackend};

use super::config::RedisConfig;
use super::state::RedisTaskBackend;

/// `REFCACHE_BACKEND=redis://...` (and `rediss://`) builds a [`RedisTaskBackend`]: switching from `memory` is
/// config alone.
fn from_config(config: &RefCacheConfig) -> Result<Arc<dyn TaskBackend>, ConfigError> {
    let redis = RedisConfig::from_refcache_config(config).map_err(|e| ConfigError::Backend {
        backend: refcache_core::redact_url(&config.backend),
        message: e.to_string(),
    })?;
    let backend = RedisTaskBackend::new(redis).map_err(|e| ConfigError::Backend {
        backend: refcache_core::redact_url(&config.backend),
        message: e.to_string(),
    })?;
    Ok(Arc::new(backend))
}

inventory::submit!(BackendFactory::new("redis", from_config));
inventory::submit!(BackendFactory::new("rediss", from_config));
