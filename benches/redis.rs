//! Redis backend benchmarks (issue #6), each against a raw Redis `PING` round trip in the same run, on a private
//! `redis-server` (started on a free loopback port, killed at the end).
//!
//! ```text
//! cargo bench -p refcache-benches --features redis --bench redis
//! ```
//!
//! - `redis/ping`: a raw `PING` over a `ConnectionManager` (the connection type the backend uses): the baseline.
//! - `redis/submit_complete_poll/local`: one task through the backend, `local` mode: `submit`, `wait` until it is
//!   complete, then `get` (the poll). New arguments every time, so every call is a miss. Target: p50 ≤ 2 ms.
//! - `redis/submit_complete_poll/workers`: the same in `workers` mode: a replica submits, a worker in the same
//!   process takes the task off the stream and runs it by its registered name.
//! - `redis/throughput_4_workers`: 2,000 trivial tasks submitted at once by one replica and run by 4 workers (each
//!   its own connections), until all are complete. Target: ≥ 5,000 tasks/s. Against
//!   `redis/throughput_memory_backend`, the same 2,000 tasks through the in-process `MemoryTaskBackend` with as many
//!   slots (4 × 32).
//!
//! Every operation runs inside a tokio worker task of a 2-thread runtime, as a request handler does; every backend
//! (replicas and workers) runs in this one process. After the criterion benchmarks it prints:
//! - the p50/p99 of 1,000 individually timed round trips of each kind, interleaved with as many `PING`s, with the
//!   ratio of each median to `PING`'s and the median of each step (submit, wait until complete, poll);
//! - tasks/s over a few timed batches with 4 workers, 1 worker, in `local` mode and in memory, with the CPU each
//!   task cost this process and the Redis server;
//! - the Redis commands one task costs, counted with `MONITOR` (top-level commands only: what the backend sends,
//!   not what its scripts run inside Redis);
//! - the server's time per task by script and command (`SLOWLOG` with a threshold of 0: every top-level
//!   command's own time, a script's inner commands inside it), in a pass of its own, since the log costs the
//!   server too;
//! - last, the summary of issue 17 §3, `redis per task`: for one task from submit to the poll that reads it
//!   (1,000 one after another, in `local` and `workers` mode) and for the 4-worker throughput, the CPU per task of
//!   this process (`getrusage(RUSAGE_SELF)`: every role runs in it) and of the bench's own `redis-server`
//!   (`INFO cpu`, `used_cpu_sys` + `used_cpu_user`), and the commands per task. CPU time is far steadier under load
//!   than wall time. Targets: ≤ 150 µs of CPU per task in all, ≤ 4 round trips from submit to the poll.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use futures::StreamExt;
use futures::future::join_all;
use redis::aio::ConnectionManager;
use refcache::redis::{
    Mode, RedisConfig, RedisServer, RedisTaskBackend, command_name, monitored_command,
};
use refcache::registry::{self, TaskRegistration};
use refcache::{
    CacheKey, MemoryBackendConfig, MemoryTaskBackend, RefId, Submission, Submitted, TaskBackend,
    TaskOptions, TaskSpec, TaskStatus, cached,
};
use serde_json::json;
use tokio::runtime::Runtime;

/// The task's registered name (the `name` of the `#[cached]` function below).
const NOOP: &str = "bench.redis.noop";
/// Tasks per throughput batch.
const BATCH: u64 = 2_000;
/// Workers in the throughput benchmark.
const WORKERS: usize = 4;
/// Individually timed operations for the percentiles.
const TIMED: usize = 1_000;
/// Round trips whose commands are counted.
const COUNTED: u64 = 200;
/// Tasks at once whose commands are counted: fewer than `BATCH`, since `MONITOR` slows the server enough that
/// 2,000 submissions at once ran past the default 5 s command timeout on the loaded machine (2026-12-03; the
/// bench's backends now wait 60 s too).
const COUNTED_BATCH: u64 = 500;
/// A bound on any wait; reached only if the backend is broken.
const PATIENCE: Duration = Duration::from_secs(30);

/// The task: answers its argument. A `#[cached]` free function whose parameters are all key arguments is registered
/// by name, so a worker finds it; the benchmark submits it through the `TaskBackend` trait, not this wrapper.
#[cached(name = "bench.redis.noop")]
async fn noop(i: u64) -> u64 {
    i
}

/// Distinct arguments for every task of the run, so that every submission is a miss.
static NEXT: AtomicU64 = AtomicU64::new(0);

/// A submission of `NOOP` with new arguments, carrying the local job as an in-process caller would.
fn submission() -> (Submission, RefId, u64) {
    let i = NEXT.fetch_add(1, Ordering::Relaxed);
    let args = json!({ "i": i });
    let key = CacheKey::from_json(NOOP, "bench", &args).expect("JSON args");
    let ref_id = RefId::generate("bench");
    let spec = TaskSpec::new(ref_id.clone(), key, NOOP, "bench", args)
        .with_options(TaskOptions::default().ttl(Some(Duration::from_secs(600))));
    let job = registry::find(NOOP).map(TaskRegistration::job);
    (Submission::new(spec, job), ref_id, i)
}

/// How long each step of a round trip took.
#[derive(Debug, Clone, Copy, Default)]
struct Steps {
    submit: Duration,
    wait: Duration,
    poll: Duration,
}

impl Steps {
    fn total(&self) -> Duration {
        self.submit + self.wait + self.poll
    }
}

/// Submits a new task and waits until it is complete; `poll`: then reads it again, as a client's poll does.
async fn run_task(backend: &dyn TaskBackend, poll: bool) -> Steps {
    let (submission, ref_id, i) = submission();
    let start = Instant::now();
    match backend.submit(submission).await.expect("submit") {
        Submitted::Started(_) => {}
        other => panic!("expected a new execution (a miss), got {other:?}"),
    }
    let submitted = Instant::now();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let done = backend
        .wait(&ref_id, Some(deadline))
        .await
        .expect("wait")
        .expect("the task's record");
    let completed = Instant::now();
    assert_eq!(
        done.info.status,
        TaskStatus::Complete,
        "task {ref_id} did not complete in {PATIENCE:?}: {:?}",
        done.info.error
    );
    if poll {
        let polled = backend
            .get(&ref_id)
            .await
            .expect("get")
            .expect("the task's record");
        let value = polled.value.expect("a complete task's value");
        assert_eq!(value.value, json!(i));
        black_box(value);
    }
    Steps {
        submit: submitted - start,
        wait: completed - submitted,
        poll: completed.elapsed(),
    }
}

/// One timed operation.
#[derive(Clone)]
enum Op {
    /// A raw `PING`.
    Ping(ConnectionManager),
    /// Submit, wait until complete, poll.
    RoundTrip(Arc<dyn TaskBackend>),
}

impl Op {
    async fn once(&mut self) -> Steps {
        match self {
            Self::Ping(conn) => {
                let start = Instant::now();
                let pong: String = redis::cmd("PING").query_async(conn).await.expect("PING");
                black_box(pong);
                Steps {
                    submit: start.elapsed(),
                    ..Steps::default()
                }
            }
            Self::RoundTrip(backend) => run_task(backend.as_ref(), true).await,
        }
    }

    /// `iters` operations in a row, inside a worker task; the time they took.
    fn time(&self, rt: &Runtime, iters: u64) -> Duration {
        let mut op = self.clone();
        rt.block_on(rt.spawn(async move {
            let start = Instant::now();
            for _ in 0..iters {
                op.once().await;
            }
            start.elapsed()
        }))
        .expect("the timed task")
    }
}

/// `BATCH` tasks submitted at once through `backend` (each its own future: submit, then wait until complete), from
/// inside a worker task; the time until all are complete.
fn time_batch(rt: &Runtime, backend: &Arc<dyn TaskBackend>) -> Duration {
    let backend = backend.clone();
    rt.block_on(rt.spawn(async move {
        let start = Instant::now();
        join_all((0..BATCH).map(|_| run_task(backend.as_ref(), false))).await;
        start.elapsed()
    }))
    .expect("the batch")
}

/// The private Redis and every backend on it. Each benchmark has its own key prefix, so that only its own
/// processes see its stream and events.
struct Setup {
    ping: ConnectionManager,
    /// `local` mode.
    local: Arc<dyn TaskBackend>,
    /// `workers` mode: the submitting replica, and its one worker.
    replica: Arc<dyn TaskBackend>,
    /// The throughput benchmark: the submitting replica, and its four workers.
    tp_replica: Arc<dyn TaskBackend>,
    /// The in-process alternative.
    memory: Arc<dyn TaskBackend>,
    /// Every Redis backend, for the shutdown.
    all: Vec<RedisTaskBackend>,
    client: redis::Client,
    /// Last: killed after the backends are gone.
    server: RedisServer,
}

impl Setup {
    fn start(rt: &Runtime) -> Self {
        assert!(
            registry::find(NOOP).is_some(),
            "the benchmark task `{NOOP}` is not registered"
        );
        let server = RedisServer::start().expect("a private redis-server (install `redis-server`)");
        let url = server.url();
        let config = |prefix: &str| {
            let mut config = RedisConfig::from_url(&url)
                .expect("the server's URL")
                .key_prefix(prefix)
                .max_queued(1_000_000);
            // Thousands of commands at once on a loaded 2-core machine (and under `MONITOR`) can wait longer than
            // the default 5 s for an answer: a bench measures, it should not fail on a slow reply.
            config.command_timeout = Duration::from_secs(60);
            config
        };
        rt.block_on(async {
            let client = redis::Client::open(url.as_str()).expect("a Redis client");
            let ping = client.get_connection_manager().await.expect("a connection");
            let local = RedisTaskBackend::new(config("bench-local")).expect("the local backend");
            let replica = RedisTaskBackend::new(config("bench-workers").mode(Mode::Workers))
                .expect("the workers-mode replica");
            let worker = RedisTaskBackend::worker(config("bench-workers")).expect("a worker");
            let tp_replica = RedisTaskBackend::new(config("bench-tp").mode(Mode::Workers))
                .expect("the throughput replica");
            let tp_workers: Vec<RedisTaskBackend> = (0..WORKERS)
                .map(|_| RedisTaskBackend::worker(config("bench-tp")).expect("a worker"))
                .collect();
            let mut all = vec![
                local.clone(),
                replica.clone(),
                worker.clone(),
                tp_replica.clone(),
            ];
            all.extend(tp_workers.iter().cloned());
            for backend in &all {
                backend.start().await.expect("Redis answers");
            }
            let mut memory = MemoryBackendConfig::default();
            memory.max_workers = WORKERS * tp_workers[0].config().max_workers;
            memory.max_queued = 1_000_000;
            let setup = Self {
                ping,
                local: Arc::new(local),
                replica: Arc::new(replica),
                tp_replica: Arc::new(tp_replica),
                memory: Arc::new(MemoryTaskBackend::new(memory)),
                all,
                client,
                server,
            };
            // One task through each, checked (this also loads the scripts).
            for backend in [
                &setup.local,
                &setup.replica,
                &setup.tp_replica,
                &setup.memory,
            ] {
                run_task(backend.as_ref(), true).await;
            }
            setup
        })
    }

    fn stop(self, rt: &Runtime) {
        rt.block_on(async {
            for backend in &self.all {
                let _ = backend.shutdown(Duration::from_secs(1)).await;
            }
        });
        drop(self.server);
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    println!("{}", machine_load("at the start"));
    let setup = Setup::start(&rt);
    let ping = Op::Ping(setup.ping.clone());
    let local = Op::RoundTrip(setup.local.clone());
    let workers = Op::RoundTrip(setup.replica.clone());

    let mut group = c.benchmark_group("redis");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    group.bench_function("ping", |b| b.iter_custom(|iters| ping.time(&rt, iters)));
    // A round trip takes about a millisecond: fewer samples fit the measurement time.
    group.sample_size(50);
    group.bench_function(BenchmarkId::new("submit_complete_poll", "local"), |b| {
        b.iter_custom(|iters| local.time(&rt, iters))
    });
    group.bench_function(BenchmarkId::new("submit_complete_poll", "workers"), |b| {
        b.iter_custom(|iters| workers.time(&rt, iters))
    });

    // A batch takes a good fraction of a second: the same number of batches per sample.
    group
        .throughput(Throughput::Elements(BATCH))
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .measurement_time(Duration::from_secs(12));
    group.bench_function("throughput_4_workers", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| time_batch(&rt, &setup.tp_replica)).sum())
    });
    group.bench_function("throughput_memory_backend", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| time_batch(&rt, &setup.memory)).sum())
    });
    group.finish();

    latency(
        &rt,
        &[
            ("ping", &ping),
            ("submit_complete_poll/local", &local),
            ("submit_complete_poll/workers", &workers),
        ],
    );
    let tp_cpu = throughput(&rt, &setup);
    let counts = commands(&rt, &setup);
    script_time(&rt, &setup);
    let rt_cpu = round_trip_cpu(&rt, &setup);
    per_task_summary(&rt_cpu, &tp_cpu, &counts);
    println!("{}", machine_load("at the end"));
    setup.stop(&rt);
}

/// The CPUs and the load average (Linux), since every figure here depends on both.
fn machine_load(when: &str) -> String {
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    format!(
        "machine {when}: {cpus} CPUs, load average {}",
        load.join(" ")
    )
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

/// `TIMED` rounds of every operation in turn (interleaved, so that all see the same machine), each timed alone:
/// percentiles, the ratio of each median to the first operation's (`PING`), and the median of each step.
fn latency(rt: &Runtime, ops: &[(&str, &Op)]) {
    println!();
    let mut timed: Vec<Op> = ops.iter().map(|(_, op)| (*op).clone()).collect();
    let samples: Vec<Vec<Steps>> = rt
        .block_on(rt.spawn(async move {
            let mut samples = vec![Vec::with_capacity(TIMED); timed.len()];
            for _ in 0..TIMED {
                for (op, samples) in timed.iter_mut().zip(samples.iter_mut()) {
                    samples.push(op.once().await);
                }
            }
            samples
        }))
        .expect("the timed task");
    let mut base = None;
    for ((name, _), steps) in ops.iter().zip(samples) {
        let sorted = |f: fn(&Steps) -> Duration| {
            let mut v: Vec<Duration> = steps.iter().map(f).collect();
            v.sort();
            v
        };
        let total = sorted(Steps::total);
        let p50 = pct(&total, 0.5);
        let base = *base.get_or_insert(p50);
        println!(
            "redis/{name:<29} {TIMED} timed alone: p50 {p50:>9.2?}  p99 {:>9.2?}  p99.9 {:>9.2?}  max {:>9.2?}  \
             p50 = {:>5.1}x PING's",
            pct(&total, 0.99),
            pct(&total, 0.999),
            total[total.len() - 1],
            p50.as_secs_f64() / base.as_secs_f64(),
        );
        if name.starts_with("submit_complete_poll") {
            println!(
                "    step medians: submit {:.2?}, wait until complete {:.2?}, poll {:.2?}",
                pct(&sorted(|s| s.submit), 0.5),
                pct(&sorted(|s| s.wait), 0.5),
                pct(&sorted(|s| s.poll), 0.5),
            );
        }
    }
}

/// CPU time (user + system) used so far by this process, every thread: `getrusage(RUSAGE_SELF)`, to the µs.
fn process_cpu() -> Option<Duration> {
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF).ok()?;
    let micros = |t: nix::sys::time::TimeVal| -> Option<u64> {
        Some(u64::try_from(t.tv_sec()).ok()? * 1_000_000 + u64::try_from(t.tv_usec()).ok()?)
    };
    let total = micros(usage.user_time())? + micros(usage.system_time())?;
    Some(Duration::from_micros(total))
}

/// CPU time used so far by the Redis server (`INFO cpu`).
fn redis_cpu(rt: &Runtime, conn: &ConnectionManager) -> Option<Duration> {
    let mut conn = conn.clone();
    let info: String = rt
        .block_on(redis::cmd("INFO").arg("cpu").query_async(&mut conn))
        .ok()?;
    let secs: f64 = info
        .lines()
        .filter_map(|l| {
            l.strip_prefix("used_cpu_sys:")
                .or_else(|| l.strip_prefix("used_cpu_user:"))
        })
        .filter_map(|v| v.trim().parse::<f64>().ok())
        .sum();
    Some(Duration::from_secs_f64(secs))
}

/// The CPU time of this process and of the Redis server at one moment, to take the cost of what runs after it.
struct CpuMeter {
    client: Option<Duration>,
    server: Option<Duration>,
}

/// CPU per task, in µs: this process (every role runs in it) and the Redis server.
#[derive(Debug, Clone, Copy, Default)]
struct CpuPerTask {
    client_us: Option<f64>,
    server_us: Option<f64>,
}

impl CpuMeter {
    fn start(rt: &Runtime, conn: &ConnectionManager) -> Self {
        Self {
            client: process_cpu(),
            server: redis_cpu(rt, conn),
        }
    }

    /// The CPU per task spent since `start`, over `tasks` tasks.
    fn per_task(&self, rt: &Runtime, conn: &ConnectionManager, tasks: f64) -> CpuPerTask {
        let per_task = |before: Option<Duration>, after: Option<Duration>| {
            Some(after?.checked_sub(before?)?.as_secs_f64() * 1e6 / tasks)
        };
        CpuPerTask {
            client_us: per_task(self.client, process_cpu()),
            server_us: per_task(self.server, redis_cpu(rt, conn)),
        }
    }
}

impl CpuPerTask {
    fn in_all(&self) -> Option<f64> {
        Some(self.client_us? + self.server_us?)
    }

    fn describe(&self) -> String {
        let us = |v: Option<f64>| v.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.0} µs"));
        format!(
            "this process {}, redis-server {}, in all {}",
            us(self.client_us),
            us(self.server_us),
            us(self.in_all())
        )
    }
}

/// The 4-worker throughput, as the summary reports it.
#[derive(Debug, Clone, Copy, Default)]
struct FourWorkers {
    /// Median, min and max tasks/s over the timed batches.
    tasks_per_s: (f64, f64, f64),
    cpu: CpuPerTask,
}

/// Tasks/s over a few timed batches of each configuration, with the CPU each task cost this process (every role
/// runs in it) and the Redis server. Returns the 4-worker figures.
fn throughput(rt: &Runtime, setup: &Setup) -> FourWorkers {
    println!();
    const BATCHES: u32 = 5;
    let configs: [(&str, &Arc<dyn TaskBackend>); 4] = [
        ("throughput_4_workers", &setup.tp_replica),
        ("throughput_1_worker", &setup.replica),
        ("throughput_local", &setup.local),
        ("throughput_memory_backend", &setup.memory),
    ];
    let mut medians = Vec::new();
    let mut four_workers = FourWorkers::default();
    for (name, backend) in configs {
        let _: Result<(), _> = rt.block_on(
            redis::cmd("CONFIG")
                .arg("RESETSTAT")
                .query_async(&mut setup.ping.clone()),
        );
        let meter = CpuMeter::start(rt, &setup.ping);
        let mut per_s: Vec<f64> = (0..BATCHES)
            .map(|_| BATCH as f64 / time_batch(rt, backend).as_secs_f64())
            .collect();
        let tasks = f64::from(BATCHES) * BATCH as f64;
        let cpu = meter.per_task(rt, &setup.ping, tasks);
        per_s.sort_by(f64::total_cmp);
        let median = per_s[per_s.len() / 2];
        println!(
            "redis/{name:<26} {BATCH} at once, {BATCHES} batches: median {median:>6.0} tasks/s (min {:.0}, max {:.0}); \
             CPU per task: {}",
            per_s[0],
            per_s[per_s.len() - 1],
            cpu.describe(),
        );
        if name != "throughput_memory_backend" {
            println!("    {}", server_time(rt, &setup.ping, tasks));
        }
        if name == "throughput_4_workers" {
            four_workers = FourWorkers {
                tasks_per_s: (median, per_s[0], per_s[per_s.len() - 1]),
                cpu,
            };
        }
        medians.push(median);
    }
    println!(
        "redis with {WORKERS} workers: {:.1}x the tasks/s of 1 worker, {:.3}x the in-process memory backend's",
        medians[0] / medians[1],
        medians[0] / medians[3]
    );
    four_workers
}

/// CPU per task of `TIMED` round trips one after another (submit, wait until complete, the poll that reads the
/// value), in `local` and `workers` mode, after the CPU of as many raw `PING`s (the in-run baseline: one round trip
/// and nothing else), each with where the server's time went (`INFO commandstats` deltas).
fn round_trip_cpu(rt: &Runtime, setup: &Setup) -> Vec<(&'static str, CpuPerTask)> {
    println!();
    [
        ("ping", Op::Ping(setup.ping.clone())),
        (
            "submit_complete_poll/local",
            Op::RoundTrip(setup.local.clone()),
        ),
        (
            "submit_complete_poll/workers",
            Op::RoundTrip(setup.replica.clone()),
        ),
    ]
    .into_iter()
    .map(|(name, op)| {
        let _: Result<(), _> = rt.block_on(
            redis::cmd("CONFIG")
                .arg("RESETSTAT")
                .query_async(&mut setup.ping.clone()),
        );
        let meter = CpuMeter::start(rt, &setup.ping);
        op.time(rt, TIMED as u64);
        let cpu = meter.per_task(rt, &setup.ping, TIMED as f64);
        println!(
            "redis/{name:<29} {TIMED} one after another: {}",
            server_time(rt, &setup.ping, TIMED as f64)
        );
        (name, cpu)
    })
    .collect()
}

/// Issue 17 §3's figures in one place: CPU and commands per task, and the 4-worker throughput beside them.
fn per_task_summary(
    round_trips: &[(&str, CpuPerTask)],
    four_workers: &FourWorkers,
    commands: &BTreeMap<&str, f64>,
) {
    println!();
    println!(
        "redis per task (CPU: getrusage of this process, where every role runs, and INFO cpu of the bench's \
         redis-server; commands: MONITOR, top-level only):"
    );
    let commands_of = |name: &str| {
        commands
            .get(name)
            .map_or_else(|| "n/a".to_owned(), |n| format!("{n:.2}"))
    };
    for (name, cpu) in round_trips {
        if *name == "ping" {
            println!(
                "  redis/{name:<29} {TIMED} one after another (the baseline): CPU per PING {}; 1 command",
                cpu.describe()
            );
            continue;
        }
        println!(
            "  redis/{name:<29} {TIMED} one after another: CPU per task {}; {} commands per task",
            cpu.describe(),
            commands_of(name)
        );
    }
    let (median, min, max) = four_workers.tasks_per_s;
    println!(
        "  redis/{:<29} {BATCH} at once (no poll): CPU per task {}; {} commands per task; {median:.0} tasks/s \
         (min {min:.0}, max {max:.0})",
        "throughput_4_workers",
        four_workers.cpu.describe(),
        commands_of("throughput_4_workers"),
    );
    let worst_cpu = round_trips
        .iter()
        .filter(|(name, _)| *name != "ping")
        .filter_map(|(_, cpu)| cpu.in_all())
        .fold(f64::NAN, f64::max);
    let worst_commands = round_trips
        .iter()
        .filter_map(|(name, _)| commands.get(name).copied())
        .fold(f64::NAN, f64::max);
    let met = |ok: bool| if ok { "met" } else { "not met" };
    println!(
        "  target ≤ 150 µs of CPU per task in all: {} (worst round trip {worst_cpu:.0} µs); \
         ≤ 4 round trips from submit to the poll: {} (worst {worst_commands:.2} commands)",
        met(worst_cpu <= 150.0),
        met(worst_commands <= 4.0),
    );
}

/// Where the Redis server spent its time since the last `CONFIG RESETSTAT` (`INFO commandstats`), per task, the
/// costliest first. A script's inner commands count both in it and on their own.
fn server_time(rt: &Runtime, conn: &ConnectionManager, tasks: f64) -> String {
    let mut conn = conn.clone();
    let Ok(info) = rt.block_on(
        redis::cmd("INFO")
            .arg("commandstats")
            .query_async::<String>(&mut conn),
    ) else {
        return "no INFO commandstats".to_owned();
    };
    // `cmdstat_evalsha:calls=10000,usec=2500000,usec_per_call=250.00,...`
    let mut stats: Vec<(String, f64, f64)> = info
        .lines()
        .filter_map(|line| {
            let (name, fields) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let field = |key: &str| {
                fields
                    .split(',')
                    .find_map(|f| f.strip_prefix(key))
                    .and_then(|v| v.parse::<f64>().ok())
            };
            Some((name.to_ascii_uppercase(), field("calls=")?, field("usec=")?))
        })
        .filter(|(name, ..)| !matches!(name.as_str(), "INFO" | "CONFIG|RESETSTAT"))
        .collect();
    stats.sort_by(|a, b| b.2.total_cmp(&a.2));
    let each: Vec<String> = stats
        .iter()
        .take(8)
        .map(|(name, calls, usec)| {
            format!("{name} {:.1} µs ({:.2} calls)", usec / tasks, calls / tasks)
        })
        .collect();
    format!("Redis command time per task: {}", each.join(", "))
}

/// The Redis commands one task costs, counted with `MONITOR`: the top-level commands carrying the benchmark's key
/// prefix (the scripts' own inner commands are left out), per task.
fn commands(rt: &Runtime, setup: &Setup) -> BTreeMap<&'static str, f64> {
    println!();
    let mut per_task = BTreeMap::new();
    let cases: [(&'static str, &str, u64, &Arc<dyn TaskBackend>); 3] = [
        (
            "submit_complete_poll/local",
            "bench-local",
            COUNTED,
            &setup.local,
        ),
        (
            "submit_complete_poll/workers",
            "bench-workers",
            COUNTED,
            &setup.replica,
        ),
        (
            "throughput_4_workers",
            "bench-tp",
            COUNTED_BATCH,
            &setup.tp_replica,
        ),
    ];
    for (name, prefix, tasks, backend) in cases {
        let counts = rt.block_on(async {
            let monitor = setup.client.get_async_monitor().await.expect("MONITOR");
            let mut lines = monitor.into_on_message::<String>();
            let backend = backend.clone();
            if tasks == COUNTED_BATCH {
                join_all((0..tasks).map(|_| run_task(backend.as_ref(), false))).await;
            } else {
                for _ in 0..tasks {
                    run_task(backend.as_ref(), true).await;
                }
            }
            // A marker after the last command: every line before it has arrived.
            let mut conn = setup.ping.clone();
            let _: String = redis::cmd("ECHO")
                .arg("bench-monitor-end")
                .query_async(&mut conn)
                .await
                .expect("ECHO");
            let mut counts: BTreeMap<String, u64> = BTreeMap::new();
            while let Some(line) = tokio::time::timeout(PATIENCE, lines.next())
                .await
                .expect("MONITOR lines")
            {
                if line.contains("\"bench-monitor-end\"") {
                    break;
                }
                if let Some(command) = monitored_command(&line, prefix) {
                    *counts.entry(command).or_default() += 1;
                }
            }
            counts
        });
        let total: u64 = counts.values().sum();
        let each: Vec<String> = counts
            .iter()
            .map(|(command, n)| format!("{command} {:.2}", *n as f64 / tasks as f64))
            .collect();
        println!(
            "redis/{name}: {:.2} Redis commands per task over {tasks} tasks: {}",
            total as f64 / tasks as f64,
            each.join(", ")
        );
        per_task.insert(name, total as f64 / tasks as f64);
    }
    per_task
}

/// The server's time per task by top-level command, scripts by name: `SLOWLOG` with a threshold of 0 logs every
/// command a client sends with the time it took (a script's inner commands inside it, as `INFO commandstats`
/// counts `EVALSHA`), over tasks one after another and over a batch at once. A pass of its own: the log costs the
/// server an entry per command, which the CPU figures above do not carry.
fn script_time(rt: &Runtime, setup: &Setup) {
    println!();
    let cases: [(&'static str, &str, u64, &Arc<dyn TaskBackend>); 3] = [
        (
            "submit_complete_poll/local",
            "bench-local",
            COUNTED,
            &setup.local,
        ),
        (
            "submit_complete_poll/workers",
            "bench-workers",
            COUNTED,
            &setup.replica,
        ),
        (
            "throughput_4_workers",
            "bench-tp",
            COUNTED_BATCH,
            &setup.tp_replica,
        ),
    ];
    let mut conn = setup.ping.clone();
    let config = |conn: &mut ConnectionManager, name: &str, value: i64| {
        let _: Result<(), _> = rt.block_on(
            redis::cmd("CONFIG")
                .arg("SET")
                .arg(name)
                .arg(value)
                .query_async(conn),
        );
    };
    config(&mut conn, "slowlog-max-len", 1_000_000);
    for (name, prefix, tasks, backend) in cases {
        config(&mut conn, "slowlog-log-slower-than", 0);
        let _: Result<(), _> =
            rt.block_on(redis::cmd("SLOWLOG").arg("RESET").query_async(&mut conn));
        let backend = backend.clone();
        rt.block_on(rt.spawn(async move {
            if tasks == COUNTED_BATCH {
                join_all((0..tasks).map(|_| run_task(backend.as_ref(), false))).await;
            } else {
                for _ in 0..tasks {
                    run_task(backend.as_ref(), true).await;
                }
            }
        }))
        .expect("the logged tasks");
        config(&mut conn, "slowlog-log-slower-than", 10_000);
        let log: redis::Value = rt
            .block_on(
                redis::cmd("SLOWLOG")
                    .arg("GET")
                    .arg(-1)
                    .query_async(&mut conn),
            )
            .expect("SLOWLOG GET");
        // Each entry: id, time, duration (µs), arguments, client address, client name.
        let mut by: BTreeMap<String, (u64, i64)> = BTreeMap::new();
        if let redis::Value::Array(entries) = log {
            for entry in entries {
                let redis::Value::Array(fields) = entry else {
                    continue;
                };
                let (Some(redis::Value::Int(us)), Some(redis::Value::Array(args))) =
                    (fields.get(2), fields.get(3))
                else {
                    continue;
                };
                let args: Vec<String> = args
                    .iter()
                    .filter_map(|a| match a {
                        redis::Value::BulkString(b) => {
                            Some(String::from_utf8_lossy(b).into_owned())
                        }
                        redis::Value::SimpleString(s) => Some(s.clone()),
                        _ => None,
                    })
                    .collect();
                if let Some(command) = command_name(&args, prefix) {
                    let slot = by.entry(command).or_default();
                    slot.0 += 1;
                    slot.1 += us;
                }
            }
        }
        let _: Result<(), _> =
            rt.block_on(redis::cmd("SLOWLOG").arg("RESET").query_async(&mut conn));
        let total: i64 = by.values().map(|(_, us)| us).sum();
        let mut rows: Vec<(&String, &(u64, i64))> = by.iter().collect();
        rows.sort_by_key(|(_, (_, us))| std::cmp::Reverse(*us));
        let each: Vec<String> = rows
            .iter()
            .map(|(command, (calls, us))| {
                format!(
                    "{command} {:.1} µs ({:.2} calls, {:.1} µs each)",
                    *us as f64 / tasks as f64,
                    *calls as f64 / tasks as f64,
                    *us as f64 / (*calls).max(1) as f64
                )
            })
            .collect();
        println!(
            "redis/{name}: server time per task by command (SLOWLOG, {tasks} tasks): {:.1} µs: {}",
            total as f64 / tasks as f64,
            each.join(", ")
        );
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
