//! The process-wide default cache that `#[cached]` uses when no `cache = ...` is given.

use std::sync::{Mutex, OnceLock, PoisonError};

use crate::cache::RefCache;
use crate::cache::poll::GetOptions;
use crate::cache::response::CachedResponse;
use crate::config::RefCacheConfig;
use crate::model::error::RefCacheError;

static DEFAULT: OnceLock<RefCache> = OnceLock::new();
static INIT: Mutex<()> = Mutex::new(());

/// The process-wide cache.
///
/// On first use it is built from [`RefCacheConfig::load`] (the `REFCACHE_CONFIG` file and `REFCACHE_*` variables),
/// unless [`set_default_cache`] was called first. A configuration error is returned (and retried on the next call),
/// never replaced by a silent default.
pub fn default_cache() -> Result<&'static RefCache, RefCacheError> {
    if let Some(cache) = DEFAULT.get() {
        return Ok(cache);
    }
    let _guard = INIT.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(cache) = DEFAULT.get() {
        return Ok(cache);
    }
    let config = RefCacheConfig::load()?;
    let cache = RefCache::from_config(&config)?;
    Ok(DEFAULT.get_or_init(|| cache))
}

/// Sets the process-wide cache explicitly, at startup. Fails, handing the cache back, if it is already set (by an
/// earlier call or by a first use).
pub fn set_default_cache(cache: RefCache) -> Result<(), RefCache> {
    let _guard = INIT.lock().unwrap_or_else(PoisonError::into_inner);
    DEFAULT.set(cache)
}

/// Polls a reference on the process-wide cache. See [`RefCache::get_cached_result`].
pub async fn get_cached_result(ref_id: &str) -> Result<CachedResponse, RefCacheError> {
    default_cache()?.get_cached_result(ref_id).await
}

/// Polls a reference on the process-wide cache, with options. See [`RefCache::get_cached_result_with`].
pub async fn get_cached_result_with(
    ref_id: &str,
    options: &GetOptions,
) -> Result<CachedResponse, RefCacheError> {
    default_cache()?
        .get_cached_result_with(ref_id, options)
        .await
}
