//! Postgres backend benchmarks (issue #20), each against a raw `SELECT 1` round trip in the same run, on a private
//! PostgreSQL (`initdb` in a temporary directory, a free loopback port, `fsync` on as in production, stopped at the
//! end).
//!
//! ```text
//! cargo bench -p refcache-benches --features postgres --bench postgres
//! ```
//!
//! - `postgres/select_1`: a raw prepared `SELECT 1` over a `tokio-postgres` connection (the backend's driver): the
//!   baseline.
//! - `postgres/submit_complete_poll/local`: one task through the backend, `local` mode: `submit`, `wait` until it is
//!   complete, then `get` (the poll). New arguments every time, so every call is a miss. Target: p50 ≤ 3 ms.
//! - `postgres/submit_complete_poll/workers`: the same in `workers` mode: a replica submits, a worker in the same
//!   process claims the task (`FOR UPDATE SKIP LOCKED`) and runs it by its registered name.
//! - `postgres/throughput_4_workers`: 2,000 trivial tasks submitted at once by one replica and run by 4 workers (each
//!   its own pool and listener), until all are complete. Target: ≥ 2,000 tasks/s. Against
//!   `postgres/throughput_memory_backend`, the same 2,000 tasks through the in-process `MemoryTaskBackend`.
//!
//! Every operation runs inside a tokio worker task of a 2-thread runtime, as a request handler does; every backend
//! (replicas and workers) runs in this one process, and the server on the same 2 CPUs. After the criterion
//! benchmarks it prints:
//! - the p50/p99 of 1,000 individually timed round trips of each kind, interleaved with as many `SELECT 1`s, with
//!   the ratio of each median to `SELECT 1`'s and the median of each step (submit, wait until complete, poll);
//! - tasks/s over a few timed batches with 4 workers, 1 worker, in `local` mode and in memory, with the CPU each task
//!   cost this process (`/proc/self/stat`) and the server (`/proc/<pid>/stat` of the postmaster and its backends,
//!   also by kind of server process);
//! - the statements one task costs and the server's planning and execution time per task, from
//!   `pg_stat_statements`; the commits, WAL flushes, WAL bytes and full-page images per task (`pg_stat_wal`);
//! - then one more batch, not counted, with a sampler of `pg_stat_activity` every 2 ms: the share of active backends
//!   per statement and wait event (the sampler costs the server CPU of its own, so it stays out of the figures).
//!
//! Before the timed round trips, the statements of each kind of round trip: `pg_stat_statements` over 200 round
//! trips in a row, each statement's calls per round trip and mean time per call (stable figures beside the
//! wall-clock). `REFCACHE_PG_BENCH_ROUNDTRIP=1` runs those and the timed round trips alone (no criterion, no
//! throughput): a few minutes, for the #20 round-trip figure.
//!
//! `REFCACHE_PG_BENCH_QUICK=1` runs the batches with 4 workers alone (no criterion, no round trips), for profiling
//! the server; `REFCACHE_PG_BENCH_FSYNC=on|off` runs one of the two servers; `REFCACHE_PG_BENCH_BATCHES=n` times `n`
//! batches (5 by default); `REFCACHE_PG_BENCH_EACH=1` prints each timed batch on its own (tasks/s, the server's CPU
//! per task, and each statement's shared buffers per call, which grow with dead rows and index entries and are not
//! noise under load) and then the schema's table and index statistics.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use futures::future::join_all;
use refcache::postgres::{
    Mode, PostgresConfig, PostgresServer, PostgresServerOptions, PostgresTaskBackend,
};
use refcache::registry::{self, TaskRegistration};
use refcache::{
    CacheKey, MemoryBackendConfig, MemoryTaskBackend, RefId, Submission, Submitted, TaskBackend,
    TaskOptions, TaskSpec, TaskStatus, cached,
};
use serde_json::json;
use tokio::runtime::Runtime;

/// The task's registered name (the `name` of the `#[cached]` function below).
const NOOP: &str = "bench.postgres.noop";
/// Tasks per throughput batch.
const BATCH: u64 = 2_000;
/// Workers in the throughput benchmark.
const WORKERS: usize = 4;
/// Individually timed operations for the percentiles.
const TIMED: usize = 1_000;
/// A bound on any wait; reached only if the backend is broken.
const PATIENCE: Duration = Duration::from_secs(60);

/// The task: answers its argument. A `#[cached]` free function whose parameters are all key arguments is registered
/// by name, so a worker finds it; the benchmark submits it through the `TaskBackend` trait, not this wrapper.
#[cached(name = "bench.postgres.noop")]
async fn noop(i: u64) -> u64 {
    i
}

/// Distinct arguments for every task of the run, so that every submission is a miss.
static NEXT: AtomicU64 = AtomicU64::new(0);

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
    /// A raw prepared `SELECT 1`.
    Select1(Arc<tokio_postgres::Client>, tokio_postgres::Statement),
    /// Submit, wait until complete, poll.
    RoundTrip(Arc<dyn TaskBackend>),
}

impl Op {
    async fn once(&mut self) -> Steps {
        match self {
            Self::Select1(client, statement) => {
                let start = Instant::now();
                let row = client.query_one(&*statement, &[]).await.expect("SELECT 1");
                black_box(row.get::<_, i32>(0));
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

/// The private server and every backend on it. Each benchmark has its own schema, so that only its own processes
/// claim its tasks and hear its notifications.
struct Setup {
    select1: Op,
    sql: Arc<tokio_postgres::Client>,
    local: Arc<dyn TaskBackend>,
    /// `workers` mode: the submitting replica (its one worker runs beside it).
    replica: Arc<dyn TaskBackend>,
    /// The throughput benchmark: the submitting replica (its four workers run beside it).
    tp_replica: Arc<dyn TaskBackend>,
    memory: Arc<dyn TaskBackend>,
    all: Vec<PostgresTaskBackend>,
    /// Last: stopped after the backends are gone.
    server: PostgresServer,
}

impl Setup {
    fn start(rt: &Runtime, fsync: bool) -> Self {
        assert!(
            registry::find(NOOP).is_some(),
            "the benchmark task `{NOOP}` is not registered"
        );
        let server = PostgresServer::start_with(
            PostgresServerOptions::default()
                .fsync(fsync)
                .stat_statements(true),
        )
        .expect("a private PostgreSQL (install Debian's `postgresql`)");
        let url = server.url();
        let config = |schema: &str| {
            PostgresConfig::from_url(&url)
                .expect("the server's URL")
                .schema(schema)
                .max_queued(1_000_000)
                // A burst of 2,000 on a contended disk is measured, not refused at the 5 s default.
                .command_timeout(Duration::from_secs(60))
        };
        rt.block_on(async {
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .expect("a connection");
            tokio::spawn(connection);
            // Planning time too: a statement planned again on every call costs the server CPU that its
            // execution time does not show.
            client
                .batch_execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
                .await
                .expect("pg_stat_statements");
            for statement in [
                "ALTER SYSTEM SET pg_stat_statements.track_planning = on",
                "SELECT pg_reload_conf()",
            ] {
                client
                    .batch_execute(statement)
                    .await
                    .expect("pg_stat_statements.track_planning");
            }
            let statement = client.prepare("SELECT 1").await.expect("prepare");
            let sql = Arc::new(client);
            let local = PostgresTaskBackend::new(config("bench_local")).expect("the local backend");
            let replica = PostgresTaskBackend::new(config("bench_workers").mode(Mode::Workers))
                .expect("the workers-mode replica");
            let worker = PostgresTaskBackend::worker(config("bench_workers")).expect("a worker");
            let tp_replica = PostgresTaskBackend::new(config("bench_tp").mode(Mode::Workers))
                .expect("the throughput replica");
            let tp_workers: Vec<PostgresTaskBackend> = (0..WORKERS)
                .map(|_| PostgresTaskBackend::worker(config("bench_tp")).expect("a worker"))
                .collect();
            let mut all = vec![
                local.clone(),
                replica.clone(),
                worker.clone(),
                tp_replica.clone(),
            ];
            all.extend(tp_workers.iter().cloned());
            for backend in &all {
                backend.start().await.expect("Postgres answers");
            }
            let mut memory = MemoryBackendConfig::default();
            memory.max_workers = WORKERS * tp_workers[0].config().max_workers;
            memory.max_queued = 1_000_000;
            let setup = Self {
                select1: Op::Select1(sql.clone(), statement),
                sql,
                local: Arc::new(local),
                replica: Arc::new(replica),
                tp_replica: Arc::new(tp_replica),
                memory: Arc::new(MemoryTaskBackend::new(memory)),
                all,
                server,
            };
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
    // `REFCACHE_PG_BENCH_QUICK=1`: the timed batches with 4 workers alone (no criterion, no round trips), for
    // profiling the server; `REFCACHE_PG_BENCH_FSYNC=on|off`: one of the two servers only.
    let quick = std::env::var("REFCACHE_PG_BENCH_QUICK").is_ok_and(|v| v == "1");
    // `REFCACHE_PG_BENCH_ROUNDTRIP=1`: the round trips alone (their statements, then the timed ones), no criterion,
    // no throughput.
    let round_trips_only = std::env::var("REFCACHE_PG_BENCH_ROUNDTRIP").is_ok_and(|v| v == "1");
    let only = std::env::var("REFCACHE_PG_BENCH_FSYNC").ok();
    println!("{}", machine_load("at the start"));
    let flush_before = fsync_latency();
    println!("{flush_before}");
    let mut summaries = Vec::new();
    // fsync on is the server's default and what production runs; off shows what the disk's flushes cost.
    for (fsync, suffix) in [(true, ""), (false, "_fsync_off")] {
        if only.as_deref().is_some_and(|o| (o == "on") != fsync) {
            continue;
        }
        let setup = Setup::start(&rt, fsync);
        if quick {
            println!("\n== fsync {}", if fsync { "on" } else { "off" });
            let four = throughput(&rt, &setup, true);
            let load = machine_load("after this server's figures");
            println!("{load}");
            summaries.push(Summary {
                fsync,
                p50s: Vec::new(),
                four,
                load,
            });
            setup.stop(&rt);
            continue;
        }
        let select1 = setup.select1.clone();
        let local = Op::RoundTrip(setup.local.clone());
        let workers = Op::RoundTrip(setup.replica.clone());
        if round_trips_only {
            println!("\n== fsync {}", if fsync { "on" } else { "off" });
            round_trip_statements(&rt, &setup, &local, "bench_local", "local");
            round_trip_statements(&rt, &setup, &workers, "bench_workers", "workers");
            let p50s = latency(
                &rt,
                &[
                    ("select_1", &select1),
                    ("submit_complete_poll/local", &local),
                    ("submit_complete_poll/workers", &workers),
                ],
            );
            let load = machine_load("after this server's figures");
            println!("{load}");
            summaries.push(Summary {
                fsync,
                p50s,
                four: None,
                load,
            });
            setup.stop(&rt);
            continue;
        }

        let mut group = c.benchmark_group("postgres");
        group
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(5));
        group.bench_function(format!("select_1{suffix}"), |b| {
            b.iter_custom(|iters| select1.time(&rt, iters))
        });
        group
            .sample_size(20)
            .measurement_time(Duration::from_secs(8));
        group.bench_function(
            BenchmarkId::new("submit_complete_poll", format!("local{suffix}")),
            |b| b.iter_custom(|iters| local.time(&rt, iters)),
        );
        group.bench_function(
            BenchmarkId::new("submit_complete_poll", format!("workers{suffix}")),
            |b| b.iter_custom(|iters| workers.time(&rt, iters)),
        );
        group
            .throughput(Throughput::Elements(BATCH))
            .sampling_mode(SamplingMode::Flat)
            .sample_size(10)
            .measurement_time(Duration::from_secs(20));
        group.bench_function(format!("throughput_4_workers{suffix}"), |b| {
            b.iter_custom(|iters| (0..iters).map(|_| time_batch(&rt, &setup.tp_replica)).sum())
        });
        if fsync {
            group.bench_function("throughput_memory_backend", |b| {
                b.iter_custom(|iters| (0..iters).map(|_| time_batch(&rt, &setup.memory)).sum())
            });
        }
        group.finish();

        println!("\n== fsync {}", if fsync { "on" } else { "off" });
        round_trip_statements(&rt, &setup, &local, "bench_local", "local");
        round_trip_statements(&rt, &setup, &workers, "bench_workers", "workers");
        let p50s = latency(
            &rt,
            &[
                ("select_1", &select1),
                ("submit_complete_poll/local", &local),
                ("submit_complete_poll/workers", &workers),
            ],
        );
        let four = throughput(&rt, &setup, false);
        let load = machine_load("after this server's figures");
        println!("{load}");
        summaries.push(Summary {
            fsync,
            p50s,
            four,
            load,
        });
        setup.stop(&rt);
    }
    let flush_after = fsync_latency();
    println!("{flush_after}");
    // Every figure issue #20 asks for, in one place (the criterion figures above are beside them).
    println!(
        "\n== issue #20's figures, {} (targets: round trip p50 <= 3 ms on loopback, {WORKERS} workers >= 2,000 \
         tasks/s)",
        if quick {
            "quick run: the timed batches alone"
        } else if round_trips_only {
            "round trips alone"
        } else {
            "timed after criterion"
        }
    );
    for summary in &summaries {
        println!("{summary}");
    }
    println!("at the start, {flush_before}\nat the end, {flush_after}");
}

/// What one flush of the disk costs now (`pg_test_fsync`, one 8 kB write then `fdatasync`, 1 s): with `fsync` on,
/// every durable commit waits for one (group commit shares it among concurrent commits).
fn fsync_latency() -> String {
    let Some(bin) = std::fs::read_dir("/usr/lib/postgresql").ok().and_then(|d| {
        d.filter_map(Result::ok)
            .map(|e| e.path().join("bin/pg_test_fsync"))
            .find(|p| p.is_file())
    }) else {
        return "pg_test_fsync: not found".to_owned();
    };
    let file = std::env::temp_dir().join(format!("refcache-bench-fsync-{}", std::process::id()));
    let out = std::process::Command::new(bin)
        .args(["-s", "1", "-f"])
        .arg(&file)
        .output();
    let _ = std::fs::remove_file(&file);
    let text = out
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("fdatasync"))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "no figure".to_owned());
    format!("disk flush now (pg_test_fsync, one 8 kB write): {line}")
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

/// `TIMED` rounds of every operation in turn (interleaved, so that all see the same machine), each timed alone.
fn latency(rt: &Runtime, ops: &[(&str, &Op)]) -> Vec<Duration> {
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
    let mut p50s = Vec::new();
    for ((name, _), steps) in ops.iter().zip(samples) {
        let sorted = |f: fn(&Steps) -> Duration| {
            let mut v: Vec<Duration> = steps.iter().map(f).collect();
            v.sort();
            v
        };
        let total = sorted(Steps::total);
        let p50 = pct(&total, 0.5);
        p50s.push(p50);
        let base = *base.get_or_insert(p50);
        println!(
            "postgres/{name:<29} {TIMED} timed alone: p50 {p50:>9.2?}  p99 {:>9.2?}  p99.9 {:>9.2?}  max {:>9.2?}  \
             p50 = {:>5.1}x SELECT 1's",
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
    p50s
}

/// Round trips run one after another (nothing else on the server) for the statement trace.
const TRACED: usize = 200;

/// The statements one round trip costs the server (`pg_stat_statements` over `TRACED` round trips run one after
/// another: a count per round trip, stable under any load), each with its calls per round trip and its mean time
/// per call (planning and executing); the notifications are the `hints` statement's (the payloads are sent in
/// one statement per burst). The upkeep loops' statements (every `lease / 3`) are counted too, as "other".
fn round_trip_statements(rt: &Runtime, setup: &Setup, op: &Op, schema: &str, name: &str) {
    rt.block_on(setup.sql.batch_execute("SELECT pg_stat_statements_reset()"))
        .expect("reset pg_stat_statements");
    let mut timed = op.clone();
    let start = Instant::now();
    rt.block_on(rt.spawn(async move {
        for _ in 0..TRACED {
            timed.once().await;
        }
    }))
    .expect("the traced round trips");
    let took = start.elapsed();
    let rows = rt
        .block_on(setup.sql.query(
            "SELECT calls::float8, total_exec_time + total_plan_time, query FROM pg_stat_statements
             WHERE query LIKE '%' || $1 || '%' OR query LIKE 'SELECT %pg_notify($1, %'",
            &[&format!("\"{schema}\"")],
        ))
        .expect("pg_stat_statements");
    let n = TRACED as f64;
    let mut each: std::collections::BTreeMap<String, (f64, f64)> = Default::default();
    for row in &rows {
        let (calls, ms, query): (f64, f64, String) = (row.get(0), row.get(1), row.get(2));
        let short = match label(&query) {
            "select" | "update" | "other" => query
                .split_whitespace()
                .take(6)
                .collect::<Vec<_>>()
                .join(" "),
            label => label.to_owned(),
        };
        let entry = each.entry(short).or_default();
        entry.0 += calls;
        entry.1 += ms;
    }
    let total: f64 = each.values().map(|(c, _)| c).sum();
    let mut sorted: Vec<_> = each.into_iter().collect();
    sorted.sort_by(|a, b| b.1.0.total_cmp(&a.1.0));
    let list: Vec<String> = sorted
        .iter()
        .map(|(q, (c, ms))| format!("`{q}` {:.2} ({:.0} µs/call)", c / n, ms * 1e3 / c.max(1.0)))
        .collect();
    println!(
        "postgres/submit_complete_poll/{name}: {:.2} statements per round trip ({TRACED} in a row, {:.2?} each): {}",
        total / n,
        took / TRACED as u32,
        list.join(", ")
    );
}

/// utime + stime of a `/proc/<pid>/stat` (clock ticks of 1/100 s), with the children it has waited for.
fn stat_cpu(path: &str, with_children: bool) -> Option<Duration> {
    let stat = std::fs::read_to_string(path).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let field = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    let mut ticks = field(11)? + field(12)?;
    if with_children {
        ticks += field(13)? + field(14)?;
    }
    Some(Duration::from_millis(ticks * 10))
}

/// CPU time used so far by this process.
fn process_cpu() -> Option<Duration> {
    stat_cpu("/proc/self/stat", false)
}

/// The server's CPU time so far by kind of process: `client backend` (the statements), `autovacuum`, `walwriter`,
/// `checkpointer`, `background writer`, `other` (the rest of the live ones), and `exited` (the postmaster itself
/// and the children it has reaped: autovacuum workers, closed connections).
fn server_cpu_by_kind(
    server: &PostgresServer,
) -> Option<std::collections::BTreeMap<&'static str, Duration>> {
    let main = server.pid()?;
    let mut kinds = std::collections::BTreeMap::new();
    kinds.insert("exited", stat_cpu(&format!("/proc/{main}/stat"), true)?);
    for entry in std::fs::read_dir("/proc").ok()?.filter_map(Result::ok) {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let parent = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if parent != Some(main) {
            continue;
        }
        let title = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let kind = [
            ("autovacuum", "autovacuum"),
            ("walwriter", "walwriter"),
            ("checkpointer", "checkpointer"),
            ("background writer", "background writer"),
            ("127.0.0.1", "client backend"),
        ]
        .iter()
        .find(|(needle, _)| title.contains(needle))
        .map_or("other", |(_, kind)| *kind);
        *kinds.entry(kind).or_default() +=
            stat_cpu(&format!("/proc/{pid}/stat"), false).unwrap_or_default();
    }
    Some(kinds)
}

/// Tasks/s over a few timed batches of each configuration, with the CPU each task cost this process (every role
/// runs in it) and the server (by kind of server process), the statements per task, and then one more batch,
/// not counted, with the wait-event sampler on (it costs the server CPU of its own).
fn throughput(rt: &Runtime, setup: &Setup, quick: bool) -> Option<Throughput4> {
    println!();
    let batches: u32 = std::env::var("REFCACHE_PG_BENCH_BATCHES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(5);
    let mut configs: Vec<(&str, &Arc<dyn TaskBackend>, &str)> = vec![
        ("throughput_4_workers", &setup.tp_replica, "bench_tp"),
        ("throughput_1_worker", &setup.replica, "bench_workers"),
        ("throughput_local", &setup.local, "bench_local"),
        ("throughput_memory_backend", &setup.memory, ""),
    ];
    if quick {
        configs.truncate(1);
    }
    let mut medians = Vec::new();
    let mut four = None;
    for (name, backend, schema) in configs {
        rt.block_on(setup.sql.batch_execute("SELECT pg_stat_statements_reset()"))
            .expect("reset pg_stat_statements");
        let commits_before = rt.block_on(commits_and_flushes(&setup.sql));
        let (cpu, server) = (process_cpu(), server_cpu_by_kind(&setup.server));
        let each = std::env::var("REFCACHE_PG_BENCH_EACH").is_ok_and(|v| v == "1");
        let mut per_s: Vec<f64> = (0..batches)
            .map(|i| {
                if !each || schema.is_empty() {
                    return BATCH as f64 / time_batch(rt, backend).as_secs_f64();
                }
                // One batch profiled alone: what each statement cost, in buffers (stable under load) and time.
                rt.block_on(
                    setup
                        .sql
                        .batch_execute("SELECT pg_stat_statements_reset()"),
                )
                .expect("reset pg_stat_statements");
                if i == 1 && std::env::var("REFCACHE_PG_BENCH_ANALYZE").is_ok_and(|v| v == "1") {
                    // What autovacuum's ANALYZE does during a long run (criterion's), at once.
                    rt.block_on(setup.sql.batch_execute(&format!(
                        "ANALYZE \"{schema}\".tasks; ANALYZE \"{schema}\".task_values; ANALYZE \"{schema}\".counters"
                    )))
                    .expect("ANALYZE");
                    println!("    (ANALYZE of {schema}'s tables before this batch)");
                }
                let server_before = server_cpu_by_kind(&setup.server);
                let rate = BATCH as f64 / time_batch(rt, backend).as_secs_f64();
                let server_after = server_cpu_by_kind(&setup.server);
                let cpu = match (&server_before, &server_after) {
                    (Some(b), Some(a)) => {
                        let busy = |k: &std::collections::BTreeMap<&str, Duration>| {
                            k.get("client backend").copied().unwrap_or_default()
                        };
                        format!(
                            "{:.0} µs",
                            busy(a).saturating_sub(busy(b)).as_secs_f64() * 1e6 / BATCH as f64
                        )
                    }
                    _ => "n/a".to_owned(),
                };
                println!(
                    "    batch {i}: {rate:.0} tasks/s, server client-backend CPU {cpu} per task; {}",
                    blocks(rt, &setup.sql, schema, BATCH as f64)
                );
                rate
            })
            .collect();
        if each && !schema.is_empty() {
            println!("    {}", tables(rt, &setup.sql, schema));
            println!("{}", plans(rt, &setup.sql, schema));
        }
        let tasks = f64::from(batches) * BATCH as f64;
        let commits_after = rt.block_on(commits_and_flushes(&setup.sql));
        let (cpu_after, server_after) = (process_cpu(), server_cpu_by_kind(&setup.server));
        let per_task = |d: Duration| format!("{:.0} µs", d.as_secs_f64() * 1e6 / tasks);
        let cost = |before: Option<Duration>, after: Option<Duration>| match (before, after) {
            (Some(b), Some(a)) => per_task(a.saturating_sub(b)),
            _ => "n/a".to_owned(),
        };
        let sum = |kinds: &Option<std::collections::BTreeMap<&str, Duration>>| {
            kinds.as_ref().map(|k| k.values().sum::<Duration>())
        };
        per_s.sort_by(f64::total_cmp);
        let median = per_s[per_s.len() / 2];
        if four.is_none() {
            four = Some(Throughput4 {
                median,
                min: per_s[0],
                max: per_s[per_s.len() - 1],
                client: cost(cpu, cpu_after),
                server: cost(sum(&server), sum(&server_after)),
            });
        }
        println!(
            "postgres/{name:<26} {BATCH} at once, {batches} batches: median {median:>6.0} tasks/s (min {:.0}, max \
             {:.0}); CPU per task: this process {}, server {}",
            per_s[0],
            per_s[per_s.len() - 1],
            cost(cpu, cpu_after),
            cost(sum(&server), sum(&server_after)),
        );
        if let (Some(before), Some(after)) = (&server, &server_after) {
            let kinds: Vec<String> = after
                .iter()
                .map(|(kind, a)| {
                    let b = before.get(kind).copied().unwrap_or_default();
                    format!("{kind} {}", per_task(a.saturating_sub(b)))
                })
                .collect();
            println!("    server CPU per task by process: {}", kinds.join(", "));
        }
        if !schema.is_empty() {
            println!("    {}", statements(rt, &setup.sql, schema, tasks));
        }
        if let (Some(before), Some(after)) = (commits_before, commits_after) {
            println!(
                "    per task (whole server): {:.2} commits, {:.2} WAL flushes, {:.0} bytes of WAL, {:.2} full-page \
                 images",
                (after.0 - before.0) as f64 / tasks,
                (after.1 - before.1) as f64 / tasks,
                (after.2 - before.2) as f64 / tasks,
                (after.3 - before.3) as f64 / tasks
            );
        }
        if !schema.is_empty() {
            let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let sampler = rt.spawn(sample_waits(setup.sql.clone(), stop.clone()));
            let sampled = BATCH as f64 / time_batch(rt, backend).as_secs_f64();
            stop.store(true, Ordering::Relaxed);
            let waits = rt.block_on(sampler).expect("the sampler");
            println!(
                "    one more batch, sampled ({sampled:.0} tasks/s, not counted above): {waits}"
            );
        }
        medians.push(median);
    }
    if medians.len() == 4 {
        println!(
            "postgres with {WORKERS} workers: {:.1}x the tasks/s of 1 worker, {:.3}x the in-process memory backend's",
            medians[0] / medians[1],
            medians[0] / medians[3]
        );
    }
    four
}

/// The 4-worker figures of one server, for the summary.
struct Throughput4 {
    median: f64,
    min: f64,
    max: f64,
    /// CPU per task of this process (every replica and worker), formatted.
    client: String,
    /// CPU per task of the server (every kind of server process), formatted.
    server: String,
}

/// Issue #20's figures of one server, for the summary printed at the end of the run.
struct Summary {
    fsync: bool,
    /// The timed p50s of `SELECT 1`, the `local` and the `workers` round trip (none in a quick run).
    p50s: Vec<Duration>,
    four: Option<Throughput4>,
    load: String,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "fsync {:<3}:", if self.fsync { "on" } else { "off" })?;
        if let [select1, local, workers] = self.p50s[..] {
            let x = |d: Duration| d.as_secs_f64() / select1.as_secs_f64();
            write!(
                f,
                " SELECT 1 p50 {select1:.2?}; round trip p50 local {local:.2?} ({:.0}x), workers {workers:.2?} ({:.0}x);",
                x(local),
                x(workers)
            )?;
        }
        if let Some(t) = &self.four {
            write!(
                f,
                " {WORKERS} workers {:.0} tasks/s (min {:.0}, max {:.0}), CPU per task client {}, server {};",
                t.median, t.min, t.max, t.client, t.server
            )?;
        }
        write!(f, " {}", self.load)
    }
}

/// The server's commits (`pg_stat_database`, every database), WAL flushes (`pg_stat_wal.wal_sync`), WAL bytes and
/// full-page images so far.
async fn commits_and_flushes(sql: &tokio_postgres::Client) -> Option<(i64, i64, i64, i64)> {
    let row = sql
        .query_one(
            "SELECT (SELECT sum(xact_commit)::bigint FROM pg_stat_database), wal_sync, wal_bytes::bigint, wal_fpi
             FROM pg_stat_wal",
            &[],
        )
        .await
        .ok()?;
    Some((row.get(0), row.get(1), row.get(2), row.get(3)))
}

/// What the server's active client backends are doing, sampled every 2 ms until `stop`: the share of samples per
/// wait event (`CPU`: none, running or runnable) and statement.
async fn sample_waits(
    sql: Arc<tokio_postgres::Client>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> String {
    let statement = sql
        .prepare(
            "SELECT coalesce(wait_event_type || ':' || wait_event, 'CPU'), query FROM pg_stat_activity
             WHERE state = 'active' AND backend_type = 'client backend' AND pid <> pg_backend_pid()",
        )
        .await
        .expect("prepare the sampler");
    let mut counts: std::collections::HashMap<(String, &'static str), u64> = Default::default();
    let mut samples = 0u64;
    let mut busy = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let Ok(rows) = sql.query(&statement, &[]).await else {
            break;
        };
        samples += 1;
        for row in &rows {
            busy += 1;
            let wait: String = row.get(0);
            let label = label(row.get::<_, Option<&str>>(1).unwrap_or(""));
            *counts.entry((wait, label)).or_default() += 1;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let mut each: Vec<_> = counts.into_iter().collect();
    each.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    let top: Vec<String> = each
        .iter()
        .take(8)
        .map(|((wait, label), n)| {
            format!(
                "{label} {wait} {:.0}%",
                *n as f64 * 100.0 / busy.max(1) as f64
            )
        })
        .collect();
    format!(
        "server backends active: {:.1} on average over {samples} samples; by statement and wait event: {}",
        busy as f64 / samples.max(1) as f64,
        top.join(", ")
    )
}

/// A short name for one of the backend's statements (the first pattern it contains). The patterns hold no
/// literal: `pg_stat_statements` shows constants as `$n`.
fn label(query: &str) -> &'static str {
    let q: String = query.split_whitespace().collect::<Vec<_>>().join(" ");
    [
        ("AS b (ref_id, status, info, record_ttl", "end_batch"),
        ("tasks (ref_id, cache_key, status", "insert"),
        ("pg_notify($1, p)", "hints"),
        ("deliveries = t.deliveries +", "start_batch"),
        ("deliveries = deliveries +", "start"),
        ("octet_length(v.value)", "read_batch"),
        ("FOR UPDATE SKIP LOCKED", "fetch"),
        ("SET lease_until", "renew"),
        ("dead_at = CASE WHEN $8", "transition"),
        ("SELECT status FROM", "status"),
        ("'confirmations'", "confirm"),
        ("SELECT ref_id, status FROM", "statuses"),
        ("WITH cur AS", "join"),
        ("SELECT t.status, t.info, t.cache_key", "record"),
        ("SELECT value, meta FROM", "value_by_ref"),
        ("SELECT min(seq)", "oldest_pending"),
        ("UPDATE", "update"),
        ("SELECT", "select"),
    ]
    .iter()
    .find(|(needle, _)| q.contains(needle))
    .map_or("other", |(_, name)| *name)
}

/// What the server ran for the tasks of `schema` since the last reset (`pg_stat_statements`), per task.
fn statements(rt: &Runtime, sql: &tokio_postgres::Client, schema: &str, tasks: f64) -> String {
    let rows = rt.block_on(sql.query(
        "SELECT calls::float8, total_exec_time + total_plan_time, query FROM pg_stat_statements
         WHERE query LIKE '%' || $1 || '%' OR query IN ('BEGIN', 'COMMIT', 'ROLLBACK')
            OR query LIKE 'SELECT %pg_notify($1, %'",
        &[&format!("\"{schema}\"")],
    ));
    let Ok(rows) = rows else {
        return "no pg_stat_statements".to_owned();
    };
    let mut calls = 0.0;
    let mut ms = 0.0;
    let mut each: Vec<(f64, f64, String)> = Vec::new();
    for row in &rows {
        let (c, t, q): (f64, f64, String) = (row.get(0), row.get(1), row.get(2));
        calls += c;
        ms += t;
        let short = match label(&q) {
            "select" | "update" | "other" => {
                q.split_whitespace().take(6).collect::<Vec<_>>().join(" ")
            }
            name => name.to_owned(),
        };
        each.push((c, t, short));
    }
    each.sort_by(|a, b| b.1.total_cmp(&a.1));
    let top: Vec<String> = each
        .iter()
        .take(8)
        .map(|(c, t, q)| format!("`{q}` {:.2} calls {:.0} µs", c / tasks, t * 1e3 / tasks))
        .collect();
    format!(
        "server statements per task: {:.1} ({:.0} µs planning and executing; the BEGIN/COMMIT and hint counts \
         are the whole server's); \
         costliest: {}",
        calls / tasks,
        ms * 1e3 / tasks,
        top.join(", ")
    )
}

/// Per task, for each of the costliest statements of `schema` since the last reset: the shared buffers it touched
/// (hit + read: what grows with a table's dead rows and index entries, and is not noise under load) and its time.
fn blocks(rt: &Runtime, sql: &tokio_postgres::Client, schema: &str, tasks: f64) -> String {
    let rows = rt.block_on(sql.query(
        "SELECT calls::float8, (shared_blks_hit + shared_blks_read)::float8, total_exec_time, rows::float8, query
         FROM pg_stat_statements WHERE query LIKE '%' || $1 || '%'",
        &[&format!("\"{schema}\"")],
    ));
    let Ok(rows) = rows else {
        return "no pg_stat_statements".to_owned();
    };
    let mut each: Vec<(f64, f64, f64, f64, String)> = rows
        .iter()
        .map(|r| {
            let q: String = r.get(4);
            let short = match label(&q) {
                "select" | "update" | "other" => {
                    q.split_whitespace().take(5).collect::<Vec<_>>().join(" ")
                }
                name => name.to_owned(),
            };
            (r.get(0), r.get(1), r.get(2), r.get(3), short)
        })
        .collect();
    each.sort_by(|a, b| b.1.total_cmp(&a.1));
    let total: f64 = each.iter().map(|e| e.1).sum();
    let top: Vec<String> = each
        .iter()
        .take(6)
        .map(|(c, b, t, r, q)| {
            format!(
                "`{q}` {:.1} blocks/call {:.1} blocks {:.0} µs {:.2} calls {:.1} rows/call",
                b / c.max(1.0),
                b / tasks,
                t * 1e3 / tasks,
                c / tasks,
                r / c.max(1.0)
            )
        })
        .collect();
    format!("buffers per task {:.1}: {}", total / tasks, top.join(", "))
}

/// The schema's tables and indexes: live and dead rows, updates and in-place ones, vacuums; each index's size
/// and the entries its scans read.
fn tables(rt: &Runtime, sql: &tokio_postgres::Client, schema: &str) -> String {
    let tables = rt.block_on(sql.query(
        "SELECT relname, n_live_tup, n_dead_tup, n_tup_upd, n_tup_hot_upd, autovacuum_count, autoanalyze_count,
                pg_relation_size(relid)
         FROM pg_stat_user_tables WHERE schemaname = $1 ORDER BY relname",
        &[&schema],
    ));
    let indexes = rt.block_on(sql.query(
        "SELECT indexrelname, idx_scan, idx_tup_read, idx_tup_fetch, pg_relation_size(indexrelid)
         FROM pg_stat_user_indexes WHERE schemaname = $1 ORDER BY indexrelname",
        &[&schema],
    ));
    let (Ok(tables), Ok(indexes)) = (tables, indexes) else {
        return "no table statistics".to_owned();
    };
    let t: Vec<String> = tables
        .iter()
        .map(|r| {
            format!(
                "{} live {} dead {} upd {} hot {} autovacuum {} autoanalyze {} {} kB",
                r.get::<_, &str>(0),
                r.get::<_, i64>(1),
                r.get::<_, i64>(2),
                r.get::<_, i64>(3),
                r.get::<_, i64>(4),
                r.get::<_, i64>(5),
                r.get::<_, i64>(6),
                r.get::<_, i64>(7) / 1024
            )
        })
        .collect();
    let i: Vec<String> = indexes
        .iter()
        .map(|r| {
            format!(
                "{} scans {} read {} fetched {} {} kB",
                r.get::<_, &str>(0),
                r.get::<_, i64>(1),
                r.get::<_, i64>(2),
                r.get::<_, i64>(3),
                r.get::<_, i64>(4) / 1024
            )
        })
        .collect();
    format!("tables: {}\n    indexes: {}", t.join("; "), i.join("; "))
}

/// The plans the server picks for the batched start and end of three tasks of `schema` (their text from
/// `pg_stat_statements`, prepared here), custom and generic (`plan_cache_mode`): not run (`EXPLAIN` without
/// `ANALYZE`), so nothing is changed.
fn plans(rt: &Runtime, sql: &tokio_postgres::Client, schema: &str) -> String {
    rt.block_on(async {
        let mut out = String::new();
        let refs: Vec<String> = match sql
            .query(
                &format!("SELECT ref_id FROM \"{schema}\".tasks ORDER BY seq DESC LIMIT 3"),
                &[],
            )
            .await
        {
            Ok(rows) => rows.iter().map(|r| r.get(0)).collect(),
            Err(e) => return format!("no refs: {e}"),
        };
        for (name, needle) in [
            ("start_batch", "deliveries = t.deliveries +"),
            ("end_batch", "AS b (ref_id, status, info, record_ttl"),
        ] {
            let Ok(row) = sql
                .query_one(
                    "SELECT query FROM pg_stat_statements WHERE query LIKE '%' || $1 || '%' AND query LIKE '%' || $2 || '%' LIMIT 1",
                    &[&needle, &format!("\"{schema}\"")],
                )
                .await
            else {
                out.push_str(&format!("    {name}: not in pg_stat_statements\n"));
                continue;
            };
            let query: String = row.get(0);
            let _ = sql.batch_execute("DEALLOCATE ALL").await;
            if let Err(e) = sql.batch_execute(&format!("PREPARE p AS {query}")).await {
                out.push_str(&format!("    {name}: cannot prepare: {e}\n"));
                continue;
            }
            let arr = |v: &str| format!("ARRAY[{}]", refs.iter().map(|_| format!("'{v}'")).collect::<Vec<_>>().join(","));
            let ids = format!("ARRAY[{}]", refs.iter().map(|r| format!("'{r}'")).collect::<Vec<_>>().join(","));
            let args = if name == "start_batch" {
                format!("{ids}, {}, 'nobody', 1000, 3, 0", arr("{}"))
            } else {
                format!(
                    "{ids}, {}, {}, ARRAY[1000,1000,1000]::bigint[], {}, {}, ARRAY[1000,1000,1000]::bigint[], 'nobody'",
                    arr("complete"),
                    arr("{}"),
                    arr("1"),
                    arr("{}")
                )
            };
            for mode in ["force_custom_plan", "force_generic_plan"] {
                let _ = sql.batch_execute(&format!("SET plan_cache_mode = {mode}")).await;
                match sql.query(&format!("EXPLAIN EXECUTE p({args})"), &[]).await {
                    Ok(rows) => {
                        out.push_str(&format!("    {name} ({mode}):\n"));
                        for r in rows {
                            out.push_str(&format!("      {}\n", r.get::<_, &str>(0)));
                        }
                    }
                    Err(e) => out.push_str(&format!("    {name} ({mode}): {e}\n")),
                }
            }
            let _ = sql.batch_execute("RESET plan_cache_mode; DEALLOCATE ALL").await;
        }
        out
    })
}

criterion_group!(benches, bench);
criterion_main!(benches);
