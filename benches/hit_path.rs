//! The hit path and the miss overhead, each against its nearest alternative in the same run.
//!
//! ```text
//! cargo bench --bench hit_path
//! ```
//!
//! - `hit/cached`: a `#[cached]` call whose value is cached, against `hit/moka_get` (a raw
//!   `moka::future::Cache::get` of the same `Arc`'d value) and `hit/direct_call` (the function itself).
//! - `miss/cached`: a `#[cached]` call of a function that returns at once, with new arguments every time, against
//!   `miss/direct_call`.
//!
//! Targets (issue #2): hit median ≤ 0.4 µs and ≤ 3× the raw moka get; miss overhead over a direct call ≤ 3 µs.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};

use criterion::{Criterion, criterion_group, criterion_main};
use refcache::{MemoryBackendConfig, MemoryTaskBackend, RefCache, cached};
use serde_json::{Value, json};

static CACHE: LazyLock<RefCache> = LazyLock::new(|| {
    let mut config = MemoryBackendConfig::default();
    // Misses insert a value each: keep the store and the record history small so the benchmark's memory stays flat.
    config.max_capacity_bytes = 32 * 1024 * 1024;
    config.max_task_records = 10_000;
    RefCache::builder()
        .backend(Arc::new(MemoryTaskBackend::new(config)))
        .unwrap()
});

async fn lookup_user(id: u64) -> Value {
    json!({"id": id, "name": "Ada", "roles": ["admin", "dev"]})
}

#[cached(async_timeout = 5.0, cache = CACHE)]
async fn cached_lookup_user(id: u64) -> Value {
    lookup_user(id).await
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    let mut hit = c.benchmark_group("hit");
    rt.block_on(cached_lookup_user(7)).unwrap();
    hit.bench_function("cached", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(cached_lookup_user(black_box(7)).await) })
    });
    let moka: moka::future::Cache<u64, Arc<Value>> = moka::future::Cache::new(10_000);
    rt.block_on(moka.insert(7, Arc::new(rt.block_on(lookup_user(7)))));
    hit.bench_function("moka_get", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(moka.get(&black_box(7)).await) })
    });
    hit.bench_function("direct_call", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(lookup_user(black_box(7)).await) })
    });
    hit.finish();

    let mut miss = c.benchmark_group("miss");
    let next = AtomicU64::new(1_000_000);
    miss.bench_function("cached", |b| {
        b.to_async(&rt).iter(|| async {
            black_box(cached_lookup_user(next.fetch_add(1, Ordering::Relaxed)).await)
        })
    });
    miss.bench_function("direct_call", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(lookup_user(next.fetch_add(1, Ordering::Relaxed)).await) })
    });
    miss.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
