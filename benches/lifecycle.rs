//! Task lifecycle benchmarks (issue #3), each against its nearest alternative in the same run.
//!
//! ```text
//! cargo bench -p refcache-benches --bench lifecycle
//! ```
//!
//! - `throughput/memory_backend`: 1,000 no-op tasks submitted to a `MemoryTaskBackend` and awaited, against
//!   `throughput/spawn_oneshot`, 1,000 bare `tokio::spawn`s each answering on a oneshot. Target: ≥ 200k tasks/s
//!   and ≥ 0.3× the bare figure.
//! - `poll/get_cached_result_100k`: `get_cached_result` of a random finished task among 100,000, against
//!   `poll/moka_get_100k`, a raw moka get among as many. Target: p99 ≤ 5 µs; the p50/p99 over 100,000 timed polls
//!   are printed first.
//! - Memory per finished task record, with a counting allocator (printed). Target: ≤ 1 KiB beyond its value.
//! - `async_timeout/reference_after_10ms`: a `#[cached(async_timeout = 0.01)]` call whose work takes 100 ms, until
//!   it returns the processing reference, against `async_timeout/bare_timeout_10ms`, a bare `tokio::time::timeout`
//!   of 10 ms around a spawned 100 ms sleep. Target: p99 over 1,000 calls ≤ timeout + 1 ms; the p50/p99 of 1,000
//!   calls of each are printed first.

use std::alloc::System;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cap::Cap;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures::future::{BoxFuture, join_all};
use refcache::{
    CacheKey, MemoryBackendConfig, MemoryTaskBackend, RefCache, RefId, Submission, TaskBackend,
    TaskContext, TaskError, TaskSpec,
};
use serde_json::{Value, json};

#[global_allocator]
static ALLOCATOR: Cap<System> = Cap::new(System, usize::MAX);

fn noop(_: Value, _: TaskContext) -> BoxFuture<'static, Result<refcache::JsonText, TaskError>> {
    Box::pin(async { Ok(refcache::JsonText::default()) })
}

fn backend(max_workers: usize, records: u64) -> Arc<MemoryTaskBackend> {
    let mut config = MemoryBackendConfig::default();
    config.max_workers = max_workers;
    config.max_queued = 1_000_000;
    config.max_task_records = records;
    Arc::new(MemoryTaskBackend::new(config))
}

fn submission(i: u64) -> Submission {
    let args = json!({ "i": i });
    let key = CacheKey::from_json("bench.noop", "public", &args).unwrap();
    let spec = TaskSpec::new(
        RefId::generate("refcache"),
        key,
        "bench.noop",
        "public",
        args,
    );
    Submission::new(spec, Some(Arc::new(noop)))
}

/// Runs `tasks` no-op tasks through `backend` from inside a worker task; returns the time taken.
async fn run_batch(backend: Arc<MemoryTaskBackend>, first: u64, tasks: u64) -> Duration {
    let start = Instant::now();
    let submitted = join_all((first..first + tasks).map(|i| backend.submit(submission(i)))).await;
    let refs: Vec<RefId> = submitted
        .into_iter()
        .map(|s| s.unwrap().ref_id().clone())
        .collect();
    for r in &refs {
        black_box(backend.wait(r, None).await.unwrap());
    }
    start.elapsed()
}

fn throughput(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("throughput");
    const BATCH: u64 = 1_000;
    group.throughput(Throughput::Elements(BATCH));
    let b = backend(64, 50_000);
    let mut next = 0u64;
    group.bench_function("memory_backend", |bench| {
        bench.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let b = b.clone();
                let first = next;
                next += BATCH;
                total +=
                    rt.block_on(
                        async move { tokio::spawn(run_batch(b, first, BATCH)).await.unwrap() },
                    );
            }
            total
        })
    });
    group.bench_function("spawn_oneshot", |bench| {
        bench.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                total += rt.block_on(async {
                    tokio::spawn(async {
                        let start = Instant::now();
                        let receivers: Vec<_> = (0..BATCH)
                            .map(|i| {
                                let (tx, rx) = tokio::sync::oneshot::channel();
                                tokio::spawn(async move {
                                    let _ = tx.send(i);
                                });
                                rx
                            })
                            .collect();
                        for rx in receivers {
                            black_box(rx.await.unwrap());
                        }
                        start.elapsed()
                    })
                    .await
                    .unwrap()
                });
            }
            total
        })
    });
    group.finish();
}

fn poll_latency(c: &mut Criterion) {
    const TASKS: u64 = 100_000;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let b = backend(64, TASKS);
    let cache = RefCache::builder().backend(b.clone()).unwrap();
    let refs: Vec<String> = rt.block_on(async {
        let mut refs = Vec::new();
        for chunk in 0..TASKS / 1000 {
            let submitted =
                join_all((chunk * 1000..(chunk + 1) * 1000).map(|i| b.submit(submission(i)))).await;
            for s in submitted {
                let r = s.unwrap().ref_id().clone();
                b.wait(&r, None).await.unwrap();
                refs.push(r.to_string());
            }
        }
        refs
    });
    let moka: moka::future::Cache<u64, Arc<Value>> = moka::future::Cache::new(TASKS);
    rt.block_on(async {
        for i in 0..TASKS {
            moka.insert(i, Arc::new(Value::Null)).await;
        }
    });

    // Percentiles over 100,000 individually timed polls.
    let mut samples: Vec<Duration> = rt.block_on(async {
        let mut samples = Vec::with_capacity(TASKS as usize);
        for i in 0..TASKS as usize {
            let r = &refs[(i * 7919) % refs.len()];
            let start = Instant::now();
            black_box(cache.get_cached_result(r).await.unwrap());
            samples.push(start.elapsed());
        }
        samples
    });
    samples.sort();
    let pct = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    println!(
        "poll latency over {} polls with {} tracked tasks: p50 {:?}, p99 {:?}, p99.9 {:?}",
        samples.len(),
        refs.len(),
        pct(0.50),
        pct(0.99),
        pct(0.999)
    );

    let mut raw: Vec<Duration> = rt.block_on(async {
        let mut raw = Vec::with_capacity(TASKS as usize);
        for i in 0..TASKS {
            let start = Instant::now();
            black_box(moka.get(&((i * 7919) % TASKS)).await);
            raw.push(start.elapsed());
        }
        raw
    });
    raw.sort();
    let raw_pct = |p: f64| raw[((raw.len() as f64 * p) as usize).min(raw.len() - 1)];
    println!(
        "raw moka get over {} gets among {TASKS} entries: p50 {:?}, p99 {:?}, p99.9 {:?}",
        raw.len(),
        raw_pct(0.50),
        raw_pct(0.99),
        raw_pct(0.999)
    );

    let mut group = c.benchmark_group("poll");
    let mut i = 0usize;
    group.bench_function("get_cached_result_100k", |bench| {
        bench.to_async(&rt).iter(|| {
            i = (i + 7919) % refs.len();
            let r = refs[i].clone();
            let cache = &cache;
            async move { black_box(cache.get_cached_result(&r).await.unwrap()) }
        })
    });
    let mut j = 0u64;
    group.bench_function("moka_get_100k", |bench| {
        bench.to_async(&rt).iter(|| {
            j = (j + 7919) % TASKS;
            let moka = &moka;
            async move { black_box(moka.get(&j).await) }
        })
    });
    group.finish();
}

fn memory_per_record(_: &mut Criterion) {
    const TASKS: u64 = 20_000;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let b = backend(64, TASKS * 2);
    rt.block_on(async {
        // Warm up the allocator and the backend's tables, then measure a second batch of finished tasks.
        run_batch(b.clone(), 0, 1_000).await;
        b.store().usage().await;
        let before = ALLOCATOR.allocated();
        for chunk in 0..TASKS / 1_000 {
            run_batch(b.clone(), 10_000_000 + chunk * 1_000, 1_000).await;
        }
        b.store().usage().await;
        let after = ALLOCATOR.allocated();
                let per_task = (after.saturating_sub(before)) as f64 / TASKS as f64;
        // The value tier alone: the same stored values in a fresh store.
        let store = refcache::ValueStore::new(u64::MAX / 2);
        let before_store = ALLOCATOR.allocated();
        for i in 0..TASKS {
            let args = json!({ "i": i });
            let key = CacheKey::from_json("bench.noop", "public", &args).unwrap();
            let value = refcache::StoredValue::new(
                RefId::generate("refcache"),
                key,
                "bench.noop",
                "public",
                refcache::JsonText::default(),
                Duration::from_secs(3600),
            );
            store.insert(Arc::new(value)).await;
        }
        store.usage().await;
        let per_value = ALLOCATOR.allocated().saturating_sub(before_store) as f64 / TASKS as f64;
        println!("memory per stored null value (value tier alone): {per_value:.0} bytes");
        println!("memory per finished task record beyond its value: {:.0} bytes", per_task - per_value);
        // Each task's value is `null`: 4 bytes of JSON in a `StoredValue` with its ref id, key and names.
        println!(
            "memory per finished task (record + index + stored null value + moka entry), over {TASKS} tasks: \
             {per_task:.0} bytes"
        );
    });
}

/// How long the work behind the timed-out calls takes: far longer than the 10 ms timeout, so that a timeout that
/// fires late on a loaded machine (20 ms late was seen at load 10, where 30 ms of work then finished first and
/// failed the run) still finds the work running, and short enough that no more than about ten calls run in the
/// background at once (under the default 32 workers, so none waits as pending).
const WORK: Duration = Duration::from_millis(100);

/// The work behind the timed-out calls.
#[refcache::cached(async_timeout = 0.01)]
async fn slow_work(i: u64) -> u64 {
    tokio::time::sleep(WORK).await;
    i
}

/// One call that times out: returns how long the caller waited, and checks that it got a reference.
async fn timed_out_call(i: u64) -> Duration {
    let start = Instant::now();
    let response = slow_work(i).await.unwrap();
    let waited = start.elapsed();
    assert_eq!(response.status(), refcache::TaskStatus::Processing);
    waited
}

/// The nearest alternative: a bare 10 ms timeout around a spawned sleep as long as the work.
async fn bare_timeout() -> Duration {
    let start = Instant::now();
    let work = tokio::spawn(tokio::time::sleep(WORK));
    let timed_out = tokio::time::timeout(Duration::from_millis(10), work).await;
    let waited = start.elapsed();
    assert!(timed_out.is_err());
    waited
}

fn async_timeout(c: &mut Criterion) {
    const CALLS: u64 = 1_000;
    // The in-process defaults, whatever REFCACHE_* the environment holds.
    let cache = RefCache::builder().build().expect("a default cache");
    assert!(
        refcache::set_default_cache(cache).is_ok(),
        "the process-wide cache was already built"
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // Percentiles over 1,000 calls made one after another from a worker task, as a request handler makes them.
    let (mut cached, mut bare) = rt.block_on(async {
        tokio::spawn(async {
            let mut cached = Vec::with_capacity(CALLS as usize);
            let mut bare = Vec::with_capacity(CALLS as usize);
            for i in 0..CALLS {
                cached.push(timed_out_call(i).await);
                bare.push(bare_timeout().await);
            }
            (cached, bare)
        })
        .await
        .unwrap()
    });
    cached.sort();
    bare.sort();
    let pct = |samples: &[Duration], p: f64| {
        samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)]
    };
    println!(
        "reference after async_timeout = 10 ms over {CALLS} calls: p50 {:?}, p99 {:?}, max {:?}",
        pct(&cached, 0.50),
        pct(&cached, 0.99),
        cached[cached.len() - 1]
    );
    println!(
        "bare tokio timeout of 10 ms over {CALLS} calls: p50 {:?}, p99 {:?}, max {:?}",
        pct(&bare, 0.50),
        pct(&bare, 0.99),
        bare[bare.len() - 1]
    );

    let mut group = c.benchmark_group("async_timeout");
    group.sample_size(20);
    let mut next = CALLS;
    group.bench_function("reference_after_10ms", |bench| {
        bench.iter_custom(|iters| {
            let first = next;
            next += iters;
            rt.block_on(async move {
                tokio::spawn(async move {
                    let mut total = Duration::ZERO;
                    for i in first..first + iters {
                        total += timed_out_call(i).await;
                    }
                    total
                })
                .await
                .unwrap()
            })
        })
    });
    group.bench_function("bare_timeout_10ms", |bench| {
        bench.iter_custom(|iters| {
            rt.block_on(async move {
                tokio::spawn(async move {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        total += bare_timeout().await;
                    }
                    total
                })
                .await
                .unwrap()
            })
        })
    });
    group.finish();
}

criterion_group!(
    benches,
    throughput,
    poll_latency,
    memory_per_record,
    async_timeout
);
criterion_main!(benches);
