//! The value store's byte bound bounds memory (#15 §2): values are held as their JSON text, and the bound weighs
//! that text, so 60 values of 6.8 MiB of JSON under the default 256 MiB bound keep RSS within twice the bound.
//! (Held as `serde_json::Value`, the same 60 values took 5.6 GiB.)
//!
//! A test binary of its own: RSS is the whole process's, and another test running beside it would move it.

use std::sync::LazyLock;

use refcache::{Previewer, RefCache, SizeMeasure, cached};
use serde::Serialize;

/// The default byte bound; values are answered whole (a `max_size` above their size), so that the test weighs the
/// store and not the previews (counting the tokens of 6.8 MiB takes most of a minute in a debug build).
static CACHE: LazyLock<RefCache> = LazyLock::new(|| {
    RefCache::builder()
        .previewer(Previewer::new(SizeMeasure::Characters, 16 << 20))
        .build()
        .expect("a valid cache")
});

/// The default `max_capacity_bytes`.
const BOUND: u64 = 256 * 1024 * 1024;

#[derive(Serialize)]
struct Row {
    id: u64,
    name: String,
    tags: Vec<u32>,
}

/// About 6.8 MiB of JSON: 7,000 rows of about 1 KiB each.
#[cached(cache = CACHE)]
async fn big_table(seed: u64) -> Vec<Row> {
    (0..7_000)
        .map(|i| Row {
            id: seed * 100_000 + i,
            name: format!("{seed}-{i}-{}", "x".repeat(900)),
            tags: (0..20).collect(),
        })
        .collect()
}

/// Resident set size in bytes, from `/proc/self/statm` (its second field, in pages).
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm (Linux)");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|f| f.parse().ok())
        .expect("statm's resident field");
    // 4 KiB pages on every Linux this runs on (x86_64, aarch64 with 4K pages).
    pages * 4096
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_values_of_6_8_mib_stay_within_twice_the_bound_in_rss() {
    // Warm up what every call allocates once (the runtime, the cache, the first buffers).
    let first = big_table(0).await.unwrap();
    let size = first.stored().expect("complete").size;
    assert!(
        (6_500_000..7_500_000).contains(&size),
        "each value is about 6.8 MiB of JSON: {size}"
    );
    drop(first);
    let before = rss_bytes();
    let mut peak = before;
    for seed in 1..=60 {
        let response = big_table(seed).await.unwrap();
        assert!(
            response.is_complete(),
            "value {seed} is stored and answered"
        );
        drop(response);
        peak = peak.max(rss_bytes());
    }
    let backend = CACHE.backend();
    let (entries, weighted) = backend
        .near_cache()
        .expect("the memory backend's store")
        .usage()
        .await;
    assert!(
        weighted <= BOUND,
        "the store's weight {weighted} is within {BOUND}"
    );
    assert!(
        (30..=40).contains(&entries),
        "the bound holds about 38 values of 6.8 MiB: {entries}"
    );
    let after = rss_bytes();
    let grown = after.saturating_sub(before);
    eprintln!(
        "memory_bound: {entries} values, {} MiB weighed; RSS {} -> {} MiB (grew {} MiB, peak {} MiB)",
        weighted >> 20,
        before >> 20,
        after >> 20,
        grown >> 20,
        peak >> 20
    );
    assert!(
        grown <= 2 * BOUND,
        "RSS grew {} MiB, more than twice the {} MiB bound",
        grown >> 20,
        BOUND >> 20
    );
}
