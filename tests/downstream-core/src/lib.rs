//! A crate that depends on `refcache-core` directly, not on the facade: the code `#[cached]` generates must find
//! `refcache_core`.

use refcache_core::cached;

/// A cached function in a crate that only has refcache-core.
#[cached(async_timeout = 1.0)]
pub async fn double(n: u64) -> u64 {
    n * 2
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn resolves_through_refcache_core() {
        let response = super::double(21).await.unwrap();
        assert_eq!(response.value_as::<u64>().unwrap(), Some(42));
    }
}
