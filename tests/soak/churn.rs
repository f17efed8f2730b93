//! Soak: churn and concurrent panics on the in-process backend, with small counts so that CI runs it in seconds,
//! and counts scalable by environment variable for a longer run:
//!
//! - `REFCACHE_SOAK_CHURN` (default 20,000): distinct calls, 500 at a time, through a cache bounded to 2,000
//!   records and 4 MiB of values; the process's RSS after the whole churn stays within a wide margin of its RSS
//!   after the first fifth (flat: the bounds hold, nothing leaks per task).
//! - `REFCACHE_SOAK_PANICS` (default 2,000): that many calls panic at once; each fails as `panicked: …`, and the
//!   cache answers the next call.
//!
//! `cargo test --release --test soak_churn -- --nocapture` prints the figures (`docs/reliability.md`).

use std::sync::{Arc, LazyLock, Once};
use std::time::{Duration, Instant};

use refcache::{MemoryBackendConfig, MemoryTaskBackend, RefCache, TaskStatus, cached};

static CACHE: LazyLock<RefCache> = LazyLock::new(|| {
    let mut config = MemoryBackendConfig::default();
    config.max_task_records = 2_000;
    config.max_capacity_bytes = 4 * 1024 * 1024;
    config.max_queued = 1_000_000;
    RefCache::builder()
        .backend(Arc::new(MemoryTaskBackend::new(config)))
        .expect("a valid cache")
});

#[cached(cache = CACHE, async_timeout = 30.0)]
async fn churn(i: u64) -> Vec<u64> {
    tokio::task::yield_now().await;
    (i..i + 16).collect()
}

#[cached(cache = CACHE, async_timeout = 60.0)]
async fn boom(i: u64) -> u64 {
    panic!("soak boom {i}")
}

fn count(var: &str, default: u64) -> u64 {
    std::env::var(var)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{var} must be a count, not `{v}`"))
        })
        .unwrap_or(default)
}

/// The process's resident set, in bytes (Linux).
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm (Linux)");
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// The soak's own panics are expected: they are not printed (any other panic is, as usual).
fn quiet_soak_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let ours = info
                .payload()
                .downcast_ref::<String>()
                .is_some_and(|m| m.starts_with("soak boom"));
            if !ours {
                default(info);
            }
        }));
    });
}

async fn round(from: u64, to: u64) {
    let mut start = from;
    while start < to {
        let end = (start + 500).min(to);
        let calls = (start..end).map(|i| tokio::spawn(churn(i)));
        for call in futures::future::join_all(calls).await {
            let response = call.unwrap().unwrap();
            assert_eq!(response.status(), TaskStatus::Complete);
        }
        start = end;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_keeps_rss_flat() {
    let n = count("REFCACHE_SOAK_CHURN", 20_000).max(10);
    let began = Instant::now();
    round(0, n / 5).await;
    let warm = rss();
    round(n / 5, n).await;
    let end = rss();
    let stats = CACHE.backend().stats().await.unwrap();
    let records: u64 = stats.by_status.values().sum();
    eprintln!(
        "soak churn: {n} tasks in {:.1?}; RSS {:.1} MiB after {}, {:.1} MiB after {n}; {records} records kept",
        began.elapsed(),
        warm as f64 / 1048576.0,
        n / 5,
        end as f64 / 1048576.0,
    );
    assert!(records <= 2_000 + 500, "the record cap holds: {records}");
    assert!(
        end <= warm + (warm / 2).max(64 * 1024 * 1024),
        "RSS grew from {warm} to {end} bytes over the churn"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_panics_fail_their_tasks_and_harm_nothing() {
    quiet_soak_panics();
    let n = count("REFCACHE_SOAK_PANICS", 2_000);
    let began = Instant::now();
    let calls = (0..n).map(|i| tokio::spawn(boom(1_000_000 + i)));
    let mut failed = 0;
    for call in futures::future::join_all(calls).await {
        let response = call.expect("the caller's task does not panic").unwrap();
        assert_eq!(response.status(), TaskStatus::Failed);
        assert!(
            response
                .error()
                .unwrap()
                .message
                .starts_with("panicked: soak boom"),
            "{:?}",
            response.error()
        );
        failed += 1;
    }
    eprintln!(
        "soak panics: {failed} of {n} concurrent panics failed their tasks in {:.1?}",
        began.elapsed()
    );
    assert_eq!(failed, n);
    let after = tokio::time::timeout(Duration::from_secs(30), churn(u64::MAX - 100))
        .await
        .expect("the cache still answers")
        .unwrap();
    assert_eq!(after.status(), TaskStatus::Complete);
}
