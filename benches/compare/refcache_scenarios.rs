//! The refcache side of the side-by-side comparison with the Python mcp-refcache 0.2.1.
//!
//! ```text
//! bash benches/compare/run.sh     # both sides, then one table
//! cargo bench -p refcache-benches --bench compare     # this side alone: one JSON line per scenario on stdout
//! ```
//!
//! The same scenarios, with the same parameters, as `benches/compare/mcp_refcache_scenarios.py`, through the
//! public facade (`#[refcache::cached(async_timeout = ...)]` on the process-wide cache, `refcache::get_cached_result`
//! to poll):
//!
//! - `hit_us`, `miss_us`: the cost per call of an async tool that returns at once, same arguments (a hit) or new
//!   ones every call (a miss), called from a worker task of a 2-worker multi-thread runtime, with the response
//!   turned into its wire JSON text (`to_json_string`, the value's stored text spliced in, as the MCP edge sends
//!   it), where mcp-refcache's call returns its response dict; batch means over 10
//!   batches. Library calls on both sides: no MCP request, actor or session around them.
//!
//! The process-wide cache is built from the defaults, whatever `REFCACHE_*` the environment holds.
//! - `timed_out_return_ms`: how long a call whose work (2 s) outlasts `async_timeout` (0.1 s) takes to return the
//!   processing reference.
//! - `timed_out_executions`: how many times the body of one such call ran, counted once it is complete and twice
//!   the work's duration has passed.
//! - `concurrent_in_time_executions`, `concurrent_timed_out_executions`: body executions for 20 concurrent calls with
//!   the same arguments (0.5 s of work), with an `async_timeout` longer (5 s) and shorter (0.1 s) than the work.
//! - `sync_return_ms`, `sync_executions`: a plain sync function (1 s of `std::thread::sleep`) with an
//!   `async_timeout` of 0.05 s, called from a plain thread: when the caller gets control back, and how many times
//!   its body ran.
//!
//! Counting scenarios wait for the observable end: every reference polled until complete, then no body running and
//! none started for twice the work's duration.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use refcache::{TaskStatus, cached};
use serde_json::{Value, json};

// Scenario parameters. They must match the constants of the same names in mcp_refcache_scenarios.py; the timeouts
// are literals in the attributes below (0.1 s, 5.0 s, 0.1 s, 0.05 s).

/// Hit batches, and calls per batch.
const HIT_BATCHES: usize = 10;
/// Calls per hit batch.
const HIT_CALLS: u64 = 10_000;
/// Miss batches.
const MISS_BATCHES: usize = 10;
/// Calls per miss batch.
const MISS_CALLS: u64 = 2_000;
/// Timed-out calls whose return time is measured, each with its own arguments.
const TIMED_OUT_CALLS: u64 = 15;
/// The work of a timed-out call (`async_timeout = 0.1` on `slow_job`).
const TIMED_OUT_WORK: Duration = Duration::from_secs(2);
/// Concurrent identical calls.
const CONCURRENT_CALLS: usize = 20;
/// The work of each concurrent call.
const CONCURRENT_WORK: Duration = Duration::from_millis(500);
/// Sync calls whose return time is measured.
const SYNC_CALLS: u64 = 5;
/// The work of the sync function (`async_timeout = 0.05` on `blocking_job`).
const SYNC_WORK: Duration = Duration::from_secs(1);
/// How long any wait for background work may take before the run fails.
const WAIT_CAP: Duration = Duration::from_secs(60);

/// Counts executions of a function body per argument, and how many are running right now.
///
/// Counted at the very start of the body; `running` goes back down when the body ends in any way (return, panic,
/// or its future dropped), so a wait can tell when no execution is left.
struct Executions {
    /// Executions started, per key.
    per_key: Mutex<HashMap<u64, u64>>,
    /// Executions started, all keys.
    total: AtomicU64,
    /// Executions started and not yet ended.
    running: AtomicI64,
}

impl Executions {
    /// No executions yet.
    fn new() -> Self {
        Self {
            per_key: Mutex::new(HashMap::new()),
            total: AtomicU64::new(0),
            running: AtomicI64::new(0),
        }
    }

    /// Counts one execution under `key`; it ends when the returned guard is dropped.
    fn run(&self, key: u64) -> Running<'_> {
        *self.per_key.lock().unwrap().entry(key).or_default() += 1;
        self.total.fetch_add(1, Ordering::SeqCst);
        self.running.fetch_add(1, Ordering::SeqCst);
        Running(self)
    }

    /// Executions started under `key`.
    fn of(&self, key: u64) -> u64 {
        self.per_key.lock().unwrap().get(&key).copied().unwrap_or(0)
    }

    /// Waits until no execution is running and none has started for `quiet` (so queued work had its chance).
    async fn wait_until_quiet(&self, quiet: Duration) {
        let give_up = Instant::now() + WAIT_CAP;
        let mut seen = self.total.load(Ordering::SeqCst);
        let mut quiet_since = Instant::now();
        loop {
            let total = self.total.load(Ordering::SeqCst);
            if self.running.load(Ordering::SeqCst) != 0 || total != seen {
                seen = total;
                quiet_since = Instant::now();
            } else if quiet_since.elapsed() >= quiet {
                return;
            }
            assert!(Instant::now() < give_up, "executions never stopped");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// One running execution: ends it when dropped, however the body ends.
struct Running<'a>(&'a Executions);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Executions of `slow_job`.
static TIMED_OUT: LazyLock<Executions> = LazyLock::new(Executions::new);
/// Executions of `shared_job_in_time`.
static CONCURRENT_IN_TIME: LazyLock<Executions> = LazyLock::new(Executions::new);
/// Executions of `shared_job_timed_out`.
static CONCURRENT_TIMED_OUT: LazyLock<Executions> = LazyLock::new(Executions::new);
/// Executions of `blocking_job`.
static SYNC: LazyLock<Executions> = LazyLock::new(Executions::new);

/// Returns a small user record at once (the hit and miss scenarios).
#[cached(async_timeout = 5.0)]
async fn lookup_user(user_id: u64) -> Value {
    json!({"id": user_id, "name": "Ada", "roles": ["admin", "dev"]})
}

/// Works for `TIMED_OUT_WORK`, longer than its `async_timeout`.
#[cached(async_timeout = 0.1)]
async fn slow_job(job: u64) -> Value {
    let _running = TIMED_OUT.run(job);
    tokio::time::sleep(TIMED_OUT_WORK).await;
    json!({"job": job, "done": true})
}

/// Works for `CONCURRENT_WORK`, well within its `async_timeout`.
#[cached(async_timeout = 5.0)]
async fn shared_job_in_time(job: String) -> Value {
    let _running = CONCURRENT_IN_TIME.run(0);
    tokio::time::sleep(CONCURRENT_WORK).await;
    json!({"job": job, "done": true})
}

/// Works for `CONCURRENT_WORK`, longer than its `async_timeout`.
#[cached(async_timeout = 0.1)]
async fn shared_job_timed_out(job: String) -> Value {
    let _running = CONCURRENT_TIMED_OUT.run(0);
    tokio::time::sleep(CONCURRENT_WORK).await;
    json!({"job": job, "done": true})
}

/// Blocks its thread for `SYNC_WORK`: a plain sync function, which stays sync under `#[cached]`.
#[cached(async_timeout = 0.05)]
fn blocking_job(job: u64) -> Value {
    let _running = SYNC.run(job);
    std::thread::sleep(SYNC_WORK);
    json!({"job": job, "done": true})
}

/// The median of the samples (the mean of the two middle ones for an even count, as Python's `statistics.median`).
fn median(samples: &[f64]) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len().is_multiple_of(2) {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    } else {
        sorted[mid]
    }
}

/// Prints one scenario's result as a JSON line: median, min and max of its samples.
fn emit(scenario: &str, unit: &str, samples: &[f64], detail: &str) {
    let min = samples.iter().copied().fold(f64::INFINITY, f64::min);
    let max = samples.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let line = json!({
        "impl": "refcache",
        "version": env!("CARGO_PKG_VERSION"),
        "scenario": scenario,
        "unit": unit,
        "median": median(samples),
        "min": min,
        "max": max,
        "samples": samples.len(),
        "detail": detail,
    });
    println!("{line}");
}

/// Progress for the person running the comparison (stderr, so stdout stays JSON lines).
fn log(message: &str) {
    eprintln!("[refcache] {message}");
}

/// Polls every reference with `get_cached_result` until its value is cached; a failed or cancelled task panics.
async fn poll_until_done(ref_ids: &[String]) {
    let give_up = Instant::now() + WAIT_CAP;
    let mut pending = ref_ids.to_vec();
    while !pending.is_empty() {
        let mut still = Vec::new();
        for ref_id in pending {
            let response = refcache::get_cached_result(&ref_id).await.expect("poll");
            match response.status() {
                TaskStatus::Complete => {}
                TaskStatus::Pending | TaskStatus::Processing => still.push(ref_id),
                other => panic!("task {ref_id} ended {}", other.as_str()),
            }
        }
        pending = still;
        assert!(
            pending.is_empty() || Instant::now() < give_up,
            "{} tasks never completed",
            pending.len()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Times `batches` batches of `calls` awaited calls to `lookup_user`; returns each batch's mean per call in µs.
async fn per_call_us(batches: usize, calls: u64, first_arg: u64, step: u64) -> Vec<f64> {
    let mut arg = first_arg;
    let mut means = Vec::with_capacity(batches);
    for _ in 0..batches {
        let start = Instant::now();
        for _ in 0..calls {
            // The wire text, as the MCP edge sends it (mcp-refcache's call returns its response dict).
            black_box(
                lookup_user(black_box(arg))
                    .await
                    .expect("call")
                    .to_json_string(),
            );
            arg += step;
        }
        means.push(start.elapsed().as_nanos() as f64 / calls as f64 / 1000.0);
    }
    means
}

/// Hit and miss cost per call of an async tool that returns at once.
async fn hit_and_miss() {
    let first = lookup_user(7).await.expect("first call");
    assert!(first.is_complete(), "{}", first.to_json());
    per_call_us(1, HIT_CALLS / 10, 7, 0).await; // warm-up
    let hits = per_call_us(HIT_BATCHES, HIT_CALLS, 7, 0).await;
    emit(
        "hit_us",
        "us",
        &hits,
        &format!("{HIT_BATCHES} batches x {HIT_CALLS} calls, same args; batch means"),
    );
    log(&format!("hit: {:.2} us", median(&hits)));

    per_call_us(1, MISS_CALLS / 10, 10_000_000, 1).await; // warm-up
    let misses = per_call_us(MISS_BATCHES, MISS_CALLS, 1_000_000, 1).await;
    emit(
        "miss_us",
        "us",
        &misses,
        &format!("{MISS_BATCHES} batches x {MISS_CALLS} calls, new args each; batch means"),
    );
    log(&format!("miss: {:.2} us", median(&misses)));
}

/// How long a call whose work outlasts `async_timeout` takes to return, and how often one such call runs the body.
async fn timed_out_calls() {
    let work_s = TIMED_OUT_WORK.as_secs_f64();
    let mut returns_ms = Vec::new();
    let mut ref_ids = Vec::new();
    for job in 0..TIMED_OUT_CALLS {
        let start = Instant::now();
        let response = slow_job(job).await.expect("call");
        returns_ms.push(start.elapsed().as_secs_f64() * 1000.0);
        assert!(!response.is_complete(), "{}", response.to_json());
        ref_ids.push(response.ref_id().to_string());
    }
    emit(
        "timed_out_return_ms",
        "ms",
        &returns_ms,
        &format!("{TIMED_OUT_CALLS} calls, distinct args, work {work_s:.1} s, async_timeout 0.1 s"),
    );
    log(&format!(
        "timed-out return: {:.1} ms; waiting for the background work",
        median(&returns_ms)
    ));
    poll_until_done(&ref_ids).await;
    TIMED_OUT.wait_until_quiet(2 * TIMED_OUT_WORK).await;

    // One call, alone: how many times did its body run once everything has finished?
    let job = 1_000;
    let start = Instant::now();
    let response = slow_job(job).await.expect("call");
    assert!(!response.is_complete(), "{}", response.to_json());
    poll_until_done(&[response.ref_id().to_string()]).await;
    let settle = 2 * TIMED_OUT_WORK + Duration::from_millis(500);
    tokio::time::sleep(settle.saturating_sub(start.elapsed())).await;
    TIMED_OUT.wait_until_quiet(Duration::from_secs(1)).await;
    let runs = TIMED_OUT.of(job);
    emit(
        "timed_out_executions",
        "count",
        &[runs as f64],
        &format!(
            "1 call, work {work_s:.1} s, async_timeout 0.1 s; counted after completion + 2x work"
        ),
    );
    log(&format!("executions for one timed-out call: {runs}"));
}

/// Body executions for `CONCURRENT_CALLS` concurrent calls with the same arguments, each its own tokio task.
async fn concurrent_identical<F, Fut>(
    call: F,
    executions: &Executions,
    timeout_s: f64,
    scenario: &str,
) where
    F: Fn() -> Fut,
    Fut:
        Future<Output = Result<refcache::CachedResponse, refcache::RefCacheError>> + Send + 'static,
{
    let handles: Vec<_> = (0..CONCURRENT_CALLS)
        .map(|_| tokio::spawn(call()))
        .collect();
    let mut responses = Vec::new();
    for handle in handles {
        responses.push(handle.await.expect("join").expect("call"));
    }
    let mut ref_ids: Vec<String> = responses.iter().map(|r| r.ref_id().to_string()).collect();
    ref_ids.sort();
    ref_ids.dedup();
    let distinct = ref_ids.len();
    let in_flight: Vec<String> = responses
        .iter()
        .filter(|r| !r.is_complete())
        .map(|r| r.ref_id().to_string())
        .collect();
    poll_until_done(&in_flight).await;
    executions.wait_until_quiet(2 * CONCURRENT_WORK).await;
    let total = executions.total.load(Ordering::SeqCst);
    emit(
        scenario,
        "count",
        &[total as f64],
        &format!(
            "{CONCURRENT_CALLS} concurrent identical calls, work {:.1} s, async_timeout {timeout_s:.1} s; \
             {distinct} distinct ref_ids",
            CONCURRENT_WORK.as_secs_f64()
        ),
    );
    log(&format!("{scenario}: {total} executions"));
}

/// The scenarios whose tools are async, run from a worker task of the multi-thread runtime.
async fn async_scenarios() {
    hit_and_miss().await;
    timed_out_calls().await;
    concurrent_identical(
        || shared_job_in_time("same".to_owned()),
        &CONCURRENT_IN_TIME,
        5.0,
        "concurrent_in_time_executions",
    )
    .await;
    concurrent_identical(
        || shared_job_timed_out("same".to_owned()),
        &CONCURRENT_TIMED_OUT,
        0.1,
        "concurrent_timed_out_executions",
    )
    .await;
}

/// A plain sync tool with a short `async_timeout`, called from this plain thread (no runtime entered): when does the
/// caller get control back? The runtime is used only to poll afterwards.
fn sync_function(rt: &tokio::runtime::Runtime) {
    let mut returns_ms = Vec::new();
    let mut ref_ids = Vec::new();
    for job in 0..SYNC_CALLS {
        let start = Instant::now();
        let response = blocking_job(job).expect("call");
        returns_ms.push(start.elapsed().as_secs_f64() * 1000.0);
        assert!(!response.is_complete(), "{}", response.to_json());
        ref_ids.push(response.ref_id().to_string());
    }
    emit(
        "sync_return_ms",
        "ms",
        &returns_ms,
        &format!(
            "{SYNC_CALLS} calls from a plain thread, work {:.1} s (std::thread::sleep), async_timeout 0.05 s",
            SYNC_WORK.as_secs_f64()
        ),
    );
    log(&format!(
        "sync return: {:.1} ms; waiting for the background work",
        median(&returns_ms)
    ));
    rt.block_on(async {
        poll_until_done(&ref_ids).await;
        SYNC.wait_until_quiet(2 * SYNC_WORK).await;
    });
    let per_call: Vec<f64> = (0..SYNC_CALLS).map(|job| SYNC.of(job) as f64).collect();
    emit(
        "sync_executions",
        "count",
        &per_call,
        &format!("per call, over the {SYNC_CALLS} calls above, after completion"),
    );
    log(&format!("sync executions per call: {per_call:?}"));
}

/// Runs every scenario; `cargo bench` passes arguments such as `--bench`, which are ignored.
fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    log(&format!("refcache {}", env!("CARGO_PKG_VERSION")));
    // The defaults, whatever REFCACHE_* the environment holds, as the Python side pins its MemoryTaskBackend.
    let cache = refcache::RefCache::builder()
        .build()
        .expect("a default cache");
    assert!(
        refcache::set_default_cache(cache).is_ok(),
        "the process-wide cache was already built"
    );
    rt.block_on(async { tokio::spawn(async_scenarios()).await })
        .expect("async scenarios");
    sync_function(&rt);
}
