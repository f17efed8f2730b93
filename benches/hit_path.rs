//! The hit path and the miss overhead, each against its nearest alternative in the same run.
//!
//! ```text
//! cargo bench -p refcache-benches --bench hit_path
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

/// A large result (about 60k tokens): every hit answers a preview.
fn big_list(n: u64) -> Value {
    Value::Array(
        (0..n)
            .map(|i| json!({"id": i, "name": format!("item-{i}")}))
            .collect(),
    )
}

#[cached(async_timeout = 5.0, cache = CACHE)]
async fn cached_big_list(n: u64) -> Value {
    big_list(n)
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
    // The same hit made by an actor in a session (as every MCP request is): the scoped path, with a per-session key.
    let agent = || refcache::Actor::agent("bench").with_session("mcp-connection:0123456789abcdef");
    rt.block_on(agent().scope(cached_lookup_user(7))).unwrap();
    hit.bench_function("cached_as_agent_in_session", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(agent().scope(cached_lookup_user(black_box(7))).await) })
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

    // A hit of a large value answers its preview: made once, then remembered, against making it on every hit.
    let mut large = c.benchmark_group("hit_large");
    rt.block_on(cached_big_list(5000)).unwrap();
    large.bench_function("cached_preview", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(cached_big_list(black_box(5000)).await) })
    });
    let value = big_list(5000);
    let previewer = refcache::Previewer::default();
    let size = previewer.measure.of(&value);
    large.bench_function("preview_made_each_time", |b| {
        b.iter(|| {
            black_box(previewer.preview_sized(
                &value,
                size,
                refcache::PreviewStrategy::Sample,
                None,
            ))
        })
    });
    large.finish();

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
    // The same on a two-worker multi-thread runtime, as a server runs: the calls are made from inside a worker task
    // (as a request handler makes them; driving them from `block_on` would time cross-thread wake-ups instead), and
    // the value's store insert happens after the caller is woken, beside the next call.
    let mt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let next = Arc::new(AtomicU64::new(1_000_000_000));
    let on_worker = |cached: bool| {
        let next = next.clone();
        let mt = &mt;
        move |iters: u64| {
            let next = next.clone();
            mt.block_on(async move {
                tokio::spawn(async move {
                    let start = std::time::Instant::now();
                    for _ in 0..iters {
                        let id = next.fetch_add(1, Ordering::Relaxed);
                        if cached {
                            black_box(cached_lookup_user(id).await.unwrap());
                        } else {
                            black_box(lookup_user(id).await);
                        }
                    }
                    start.elapsed()
                })
                .await
                .unwrap()
            })
        }
    };
    miss.bench_function("cached_multi_thread", |b| b.iter_custom(on_worker(true)));
    miss.bench_function("direct_call_multi_thread", |b| {
        b.iter_custom(on_worker(false))
    });
    miss.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
