//! Output throughput (issue 18 §5): a command printing 200 MB streams into its task's 1 MiB output log through
//! `refcache::command::run_command`, compared in the same run with the same output going through a pipe to `cat`
//! into /dev/null. The command is `seq 1 23456790` (200,000,007 bytes); each run's spec differs by its
//! `timeout_seconds` only, so that no run joins or hits an earlier one.
//!
//! First a small memory measurement: one run through refcache while this process's RSS is sampled every 5 ms;
//! the growth is the largest sample less the RSS before the run (the 1 MiB log included). Then criterion times
//! both ways (10 samples each).
//!
//! ```text
//! cargo bench -p refcache-benches --all-features --bench output_throughput
//! ```
//!
//! It prints both rates and the RSS growth, and fails (exit 1) when refcache streams under 100 MB/s or grows RSS
//! by 16 MiB or more.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use criterion::Criterion;
use refcache::command::{CommandOutcome, CommandSpec, Commands, run_command};

const LAST: u64 = 23_456_790;
/// What `seq 1 LAST` prints.
const BYTES: u64 = 200_000_007;

static RUN: AtomicU32 = AtomicU32::new(0);

fn spec() -> CommandSpec {
    let run = RUN.fetch_add(1, Ordering::Relaxed);
    CommandSpec::new("seq", ["1".to_owned(), LAST.to_string()])
        .timeout_seconds(3600.0 + f64::from(run))
}

/// One run through refcache, to its end: how long it took.
async fn through_refcache() -> Duration {
    let cache = refcache::default_cache().expect("the default cache");
    let start = Instant::now();
    let mut response = run_command(spec()).await.expect("run_command");
    while !response.status().is_terminal() {
        tokio::time::sleep(Duration::from_millis(2)).await;
        response = cache
            .get_cached_result(response.ref_id().as_str())
            .await
            .expect("poll");
    }
    let took = start.elapsed();
    // The outcome quotes the output's tail (4 KiB): more than a preview shows.
    let full = refcache::GetOptions::default().full(true);
    let json = cache
        .get_cached_result_with(response.ref_id().as_str(), &full)
        .await
        .expect("the outcome")
        .to_json();
    let outcome: CommandOutcome =
        serde_json::from_value(json["value"].clone()).unwrap_or_else(|e| panic!("{e}: {json}"));
    assert_eq!(outcome.output_bytes, BYTES, "{json}");
    took
}

/// The same output through a pipe to `cat` into /dev/null.
fn through_cat() -> Duration {
    let start = Instant::now();
    let mut seq = std::process::Command::new("seq")
        .args(["1".to_owned(), LAST.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("seq");
    let pipe = seq.stdout.take().unwrap();
    let cat = std::process::Command::new("cat")
        .stdin(pipe)
        .stdout(Stdio::null())
        .status()
        .expect("cat");
    assert!(cat.success() && seq.wait().unwrap().success());
    start.elapsed()
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn mb_per_s(took: Duration) -> f64 {
    BYTES as f64 / 1e6 / took.as_secs_f64()
}

fn main() {
    Commands::new()
        .allow(["seq"])
        .install()
        .expect("the bench's command settings");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // Warm up (the runtime, the cache, the page cache for seq), then measure memory over one run.
    runtime.block_on(through_refcache());
    let before = rss_kib();
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let sampling = sampling.clone();
        std::thread::spawn(move || {
            let mut peak = 0;
            while sampling.load(Ordering::Relaxed) {
                peak = peak.max(rss_kib());
                std::thread::sleep(Duration::from_millis(5));
            }
            peak.max(rss_kib())
        })
    };
    let took = runtime.block_on(through_refcache());
    sampling.store(false, Ordering::Relaxed);
    let peak = sampler.join().unwrap();
    let growth_kib = peak.saturating_sub(before);
    let cat = through_cat();
    println!(
        "output_throughput: 200 MB via refcache in {:.0} ms = {:.0} MB/s; via a pipe to cat > /dev/null in {:.0} ms \
         = {:.0} MB/s; RSS {before} KiB -> peak {peak} KiB, growth {:.1} MiB",
        took.as_secs_f64() * 1e3,
        mb_per_s(took),
        cat.as_secs_f64() * 1e3,
        mb_per_s(cat),
        growth_kib as f64 / 1024.0,
    );

    let mut criterion = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(20))
        .configure_from_args();
    let mut group = criterion.benchmark_group("output_throughput");
    group.throughput(criterion::Throughput::Bytes(BYTES));
    group.bench_function("seq_200MB_via_refcache_into_1MiB_log", |b| {
        b.to_async(&runtime).iter(through_refcache);
    });
    group.bench_function("seq_200MB_via_pipe_to_cat_devnull", |b| b.iter(through_cat));
    group.finish();
    criterion.final_summary();

    if mb_per_s(took) < 100.0 || growth_kib >= 16 * 1024 {
        eprintln!("output_throughput: over the bound (>= 100 MB/s, RSS growth < 16 MiB)");
        std::process::exit(1);
    }
}
