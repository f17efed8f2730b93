//! refcache across processes: two HTTP replicas and two workers sharing one Redis, or one Postgres.
//!
//! ```text
//! cargo run --example distributed --features redis,postgres                       # on Redis
//! cargo run --example distributed --features redis,postgres -- --engine postgres  # on Postgres
//! ```
//!
//! With no subcommand this is the demo. It starts its own server (a free loopback port, a temporary directory):
//! `redis-server` with AOF on (Debian's `redis-server` package, or `REFCACHE_REDIS_SERVER` naming the binary), or
//! with `--engine postgres` a PostgreSQL (`initdb` + `pg_ctl`, Debian's `postgresql` package), unless
//! `REFCACHE_BACKEND` names a server already running (`redis://...` or `postgres://...`). It then runs itself as
//! two workers and two replicas (child processes), and:
//! 1. calls `slow_square` on replica A, which answers a processing reference after its 0.5 s `async_timeout`;
//! 2. polls that reference on replica B until it is complete (a worker ran it: neither replica did);
//! 3. calls again on replica B: a cache hit, under the same reference, and the task ran once;
//! 4. stops the children with SIGTERM and waits for them to exit.
//!
//! The pieces also run by hand, against a server of your own (each in its own terminal):
//!
//! ```text
//! export REFCACHE_BACKEND='redis://127.0.0.1:6379/0?mode=workers'    # or 'postgres://app@127.0.0.1:5432/app?mode=workers'
//! cargo run --example distributed --features redis,postgres -- worker
//! cargo run --example distributed --features redis,postgres -- worker
//! cargo run --example distributed --features redis,postgres -- replica --http 127.0.0.1:8001
//! cargo run --example distributed --features redis,postgres -- replica --http 127.0.0.1:8002
//!
//! curl -s -X POST localhost:8001/call/slow_square -d '{"x": 12, "ms": 5000}'   # {"ref_id": "refcache:...", "status": "processing", ...}
//! curl -s localhost:8002/poll/refcache:...                                    # progress, then {"value": 144, ...}
//! curl -s -X POST localhost:8002/cancel/refcache:...                          # {"outcome": "cancelled", ...}
//! curl -s localhost:8001/stats                                                # cluster-wide counters
//! redis-cli get demo:runs:12                                                  # how many times the task started
//! psql -c "SELECT value FROM demo_counters WHERE name = 'demo:runs:12'"       # the same, on Postgres
//! ```
//!
//! - `replica [--http ADDR]` (default `127.0.0.1:0`, a free port) serves HTTP over the cache configured by the
//!   environment (`REFCACHE_BACKEND`, ...), prints `replica: serving http://ADDR`, and stops on SIGTERM or Ctrl-C.
//!   Routes: `POST /call/slow_square` with `{"x": i64, "ms": u64}` (the cached call's response), `GET
//!   /poll/{ref_id}` (`get_cached_result`), `POST /cancel/{ref_id}`, `GET /stats`. A call or poll that cannot be
//!   served (the server down, an unknown reference, bad JSON) answers 4xx or 5xx with the error's text.
//! - `worker` runs the worker of the engine that `REFCACHE_BACKEND` names ([`refcache::worker::run`] for Redis,
//!   [`refcache::worker::postgres::run`] for Postgres) until SIGTERM or Ctrl-C: it takes tasks and runs them by
//!   name.
//!
//! In `workers` mode a replica only submits: `slow_square` is a free `#[cached]` function whose parameters are all in
//! the key, so it is registered under its `name` at link time, and the workers (this same binary) run it by name.
//! It counts its executions in the same server (`demo:runs:{x}`, and the worker's pid in `demo:pid:{x}`: Redis keys,
//! or rows of the table `demo_counters` on Postgres), so that a demo or a test can see where and how often it ran.

use std::io::Write;
use std::net::SocketAddr;
use std::process::{ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::StatusCode;
use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use refcache::postgres::{PostgresConfig, PostgresServer, PostgresServerOptions};
use refcache::redis::{RedisConfig, RedisServer, RedisServerOptions};
use refcache::{
    BackendError, CancelOutcome, RefCache, RefCacheConfig, RefCacheError, TaskContext, TaskError,
    cached,
};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

/// The longest `slow_square` may be asked to take.
const MAX_MS: u64 = 3_600_000;
/// How long the demo waits for anything (a child to start, a task to finish, a child to exit).
const PATIENCE: Duration = Duration::from_secs(60);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Squares `x` after `ms` milliseconds of work, reporting progress every 100 ms and stopping when cancelled.
///
/// Counts its executions (`demo:runs:{x}`), records the pid of the process running it (`demo:pid:{x}`), each
/// 100 ms step (`demo:ticks:{x}`), and, when it stops on a cancel, `demo:stopped:{x}`, in the server of
/// `REFCACHE_BACKEND`.
#[cached(name = "demo.slow_square", async_timeout = 0.5)]
async fn slow_square(ctx: &TaskContext, x: i64, ms: u64) -> Result<i64, TaskError> {
    if ms > MAX_MS {
        return Err(TaskError::new(format!("ms must be at most {MAX_MS}, got {ms}")).permanent());
    }
    let counters = Counters::of_env().map_err(|e| TaskError::new(e).permanent())?;
    let unavailable = |e: String| TaskError::new(format!("demo counters: {e}"));
    counters
        .incr(&format!("demo:runs:{x}"))
        .await
        .map_err(unavailable)?;
    counters
        .set(&format!("demo:pid:{x}"), &std::process::id().to_string())
        .await
        .map_err(unavailable)?;
    let steps = ms.div_ceil(100).max(1);
    for step in 1..=steps {
        let pause = Duration::from_millis(ms.saturating_sub((step - 1) * 100).min(100));
        let cancelled = tokio::select! {
            () = tokio::time::sleep(pause) => {
                // A missed tick is no reason to fail the work (the server may be restarting).
                let _ = counters.incr(&format!("demo:ticks:{x}")).await;
                ctx.progress(step as f64, Some(steps as f64), format!("step {step} of {steps}"))
                    .is_err()
            }
            () = ctx.cancelled() => true,
        };
        if cancelled {
            let _ = counters
                .set(&format!("demo:stopped:{x}"), "cancelled")
                .await;
            return Err(TaskError::new("cancelled").permanent());
        }
    }
    x.checked_mul(x)
        .ok_or_else(|| TaskError::new(format!("{x} squared does not fit in 64 bits")).permanent())
}

/// The demo's counters, in the server that `REFCACHE_BACKEND` names: Redis keys, or rows of a Postgres table
/// `demo_counters (name, value)`.
enum Counters {
    Redis(ConnectionManager),
    Postgres(Box<PgCounters>),
}

/// A Postgres connection for the counters, made again after a failure (the server may have restarted).
struct PgCounters {
    url: String,
    client: tokio::sync::Mutex<Option<tokio_postgres::Client>>,
}

impl PgCounters {
    async fn run<T>(
        &self,
        op: impl AsyncFnOnce(&tokio_postgres::Client) -> Result<T, tokio_postgres::Error>,
    ) -> Result<T, String> {
        let mut slot = self.client.lock().await;
        if slot.as_ref().is_none_or(tokio_postgres::Client::is_closed) {
            let (client, connection) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls)
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(connection);
            client
                .batch_execute(
                    "CREATE TABLE IF NOT EXISTS demo_counters (name text PRIMARY KEY, value text NOT NULL)",
                )
                .await
                .map_err(|e| e.to_string())?;
            *slot = Some(client);
        }
        let client = slot.as_ref().expect("connected above");
        let result = op(client).await;
        if result.is_err() {
            *slot = None;
        }
        result.map_err(|e| e.to_string())
    }
}

impl Counters {
    /// The counters of the server in `REFCACHE_BACKEND`, made once per process.
    fn of_env() -> Result<&'static Counters, String> {
        static COUNTERS: OnceLock<Result<Counters, String>> = OnceLock::new();
        COUNTERS
            .get_or_init(|| {
                let backend = std::env::var("REFCACHE_BACKEND").map_err(|_| {
                    "REFCACHE_BACKEND is not set: the demo's task needs its server".to_owned()
                })?;
                Counters::for_backend(&backend)
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    fn for_backend(backend: &str) -> Result<Counters, String> {
        let url = backend.split('?').next().unwrap_or_default();
        if url.starts_with("postgres") {
            return Ok(Counters::Postgres(Box::new(PgCounters {
                url: url.to_owned(),
                client: tokio::sync::Mutex::new(None),
            })));
        }
        let client = redis::Client::open(url).map_err(|e| format!("`{url}`: {e}"))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(5)))
            .set_number_of_retries(1);
        ConnectionManager::new_lazy_with_config(client, config)
            .map(Counters::Redis)
            .map_err(|e| e.to_string())
    }

    async fn incr(&self, name: &str) -> Result<i64, String> {
        match self {
            Counters::Redis(conn) => conn.clone().incr(name, 1).await.map_err(|e| e.to_string()),
            Counters::Postgres(pg) => {
                pg.run(async |c| {
                    let row = c
                        .query_one(
                            "INSERT INTO demo_counters VALUES ($1, '1') ON CONFLICT (name) DO UPDATE
                             SET value = (demo_counters.value::bigint + 1)::text RETURNING value::bigint",
                            &[&name],
                        )
                        .await?;
                    Ok(row.get(0))
                })
                .await
            }
        }
    }

    async fn set(&self, name: &str, value: &str) -> Result<(), String> {
        match self {
            Counters::Redis(conn) => conn.clone().set(name, value).await.map_err(|e| e.to_string()),
            Counters::Postgres(pg) => {
                pg.run(async |c| {
                    c.execute(
                        "INSERT INTO demo_counters VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET value = $2",
                        &[&name, &value],
                    )
                    .await
                    .map(drop)
                })
                .await
            }
        }
    }

    async fn get(&self, name: &str) -> Result<Option<String>, String> {
        match self {
            Counters::Redis(conn) => conn.clone().get(name).await.map_err(|e| e.to_string()),
            Counters::Postgres(pg) => {
                pg.run(async |c| {
                    let row = c
                        .query_opt("SELECT value FROM demo_counters WHERE name = $1", &[&name])
                        .await?;
                    Ok(row.map(|r| r.get(0)))
                })
                .await
            }
        }
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        None => demo(Engine::Redis).await,
        Some("--engine") => match args.get(1).map(String::as_str) {
            Some("redis") if args.len() == 2 => demo(Engine::Redis).await,
            Some("postgres") if args.len() == 2 => demo(Engine::Postgres).await,
            _ => Err("usage: distributed --engine redis|postgres".into()),
        },
        Some("replica") => replica(&args[1..]).await,
        Some("worker") if args.len() == 1 => worker().await,
        Some(_) => Err(
            "usage: distributed [--engine redis|postgres] | replica [--http ADDR] | worker".into(),
        ),
    };
    if let Err(err) = result {
        eprintln!("distributed: {err}");
        std::process::exit(1);
    }
}

// ----------------------------------------------------------------------------------------------------------------
// The worker.

async fn worker() -> Result<(), BoxError> {
    let settings = RefCacheConfig::load()?;
    let tasks: Vec<&str> = refcache::registry::names()
        .into_iter()
        .filter(|name| name.starts_with("demo."))
        .collect();
    if settings.backend.starts_with("postgres") {
        let config = PostgresConfig::from_refcache_config(&settings)?;
        println!(
            "worker {}: running {tasks:?} from {} (schema {})",
            std::process::id(),
            config.redacted_url(),
            config.schema
        );
        refcache::worker::postgres::run(config).await?;
    } else {
        let config = RedisConfig::from_refcache_config(&settings)?;
        println!(
            "worker {}: running {tasks:?} from {}",
            std::process::id(),
            config.redacted_url()
        );
        refcache::worker::run(config).await?;
    }
    println!("worker {}: stopped", std::process::id());
    Ok(())
}

// ----------------------------------------------------------------------------------------------------------------
// The replica.

async fn replica(args: &[String]) -> Result<(), BoxError> {
    let addr = match args {
        [] => "127.0.0.1:0",
        [flag, addr] if flag == "--http" => addr.as_str(),
        _ => return Err("usage: distributed replica [--http ADDR]".into()),
    };
    let cache = RefCache::from_config(&RefCacheConfig::load()?)?;
    // `slow_square` uses the process-wide cache: make it this one.
    refcache::set_default_cache(cache.clone())
        .map_err(|_| "the process-wide cache was already set")?;
    let app = Router::new()
        .route("/call/slow_square", post(call_slow_square))
        .route("/poll/{ref_id}", get(poll))
        .route("/cancel/{ref_id}", post(cancel))
        .route("/stats", get(stats))
        .with_state(cache.clone());
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let mut stdout = std::io::stdout();
    writeln!(stdout, "replica: serving http://{}", listener.local_addr()?)?;
    stdout.flush()?;
    axum::serve(listener, app)
        .with_graceful_shutdown(terminated())
        .await?;
    cache.shutdown(Duration::from_secs(5)).await?;
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
async fn terminated() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CallArgs {
    x: i64,
    ms: u64,
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(http::header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// An error as `{"error": text}`, with the status that says whose fault it is.
fn error_response(err: &RefCacheError) -> Response {
    let status = match err {
        RefCacheError::NotFound => StatusCode::NOT_FOUND,
        RefCacheError::MalformedRefId { .. }
        | RefCacheError::Argument { .. }
        | RefCacheError::InvalidFormat { .. } => StatusCode::BAD_REQUEST,
        RefCacheError::Backend(
            BackendError::Unavailable(_)
            | BackendError::QueueFull { .. }
            | BackendError::ShuttingDown,
        ) => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    json_response(status, &json!({ "error": err.to_string() }))
}

async fn call_slow_square(body: Bytes) -> Response {
    let args: CallArgs = match serde_json::from_slice(&body) {
        Ok(args) => args,
        Err(e) => {
            return json_response(
                StatusCode::BAD_REQUEST,
                &json!({ "error": format!("expected {{\"x\": integer, \"ms\": integer}}: {e}") }),
            );
        }
    };
    if args.ms > MAX_MS {
        return json_response(
            StatusCode::BAD_REQUEST,
            &json!({ "error": format!("ms must be at most {MAX_MS}, got {}", args.ms) }),
        );
    }
    match slow_square(args.x, args.ms).await {
        Ok(response) => json_response(StatusCode::OK, &response.to_json()),
        Err(err) => error_response(&err),
    }
}

async fn poll(State(cache): State<RefCache>, Path(ref_id): Path<String>) -> Response {
    match cache.get_cached_result(&ref_id).await {
        Ok(response) => json_response(StatusCode::OK, &response.to_json()),
        Err(err) => error_response(&err),
    }
}

async fn cancel(State(cache): State<RefCache>, Path(ref_id): Path<String>) -> Response {
    match cache.cancel_task(&ref_id).await {
        Ok(CancelOutcome::Cancelled) => json_response(
            StatusCode::OK,
            &json!({ "ref_id": ref_id, "outcome": "cancelled" }),
        ),
        Ok(CancelOutcome::AlreadyFinished(status)) => json_response(
            StatusCode::OK,
            &json!({ "ref_id": ref_id, "outcome": "already_finished", "status": status }),
        ),
        Ok(CancelOutcome::NotFound) => error_response(&RefCacheError::NotFound),
        Ok(other) => json_response(
            StatusCode::OK,
            &json!({ "ref_id": ref_id, "outcome": format!("{other:?}") }),
        ),
        Err(err) => error_response(&err),
    }
}

async fn stats(State(cache): State<RefCache>) -> Response {
    match cache.stats().await {
        Ok(stats) => json_response(
            StatusCode::OK,
            &serde_json::to_value(stats).unwrap_or_default(),
        ),
        Err(err) => error_response(&err),
    }
}

// ----------------------------------------------------------------------------------------------------------------
// The demo.

/// A child process of the demo: SIGKILLed if the demo ends before stopping it.
struct Proc {
    name: String,
    child: Child,
}

impl Proc {
    fn spawn(name: &str, args: &[&str], backend: &str) -> Result<Self, BoxError> {
        let mut command = Command::new(std::env::current_exe()?);
        command.args(args);
        // The children read their settings from the environment: only the backend, not a stray REFCACHE_* (such
        // as REFCACHE_REDIS_SERVER, which is no cache setting).
        for (var, _) in std::env::vars_os() {
            if var.to_string_lossy().starts_with("REFCACHE_") {
                command.env_remove(var);
            }
        }
        let child = command
            .env("REFCACHE_BACKEND", backend)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()?;
        Ok(Self {
            name: name.to_owned(),
            child,
        })
    }

    /// Reads its first line (a replica's address), then forwards the rest of its output.
    async fn first_line(&mut self) -> Result<String, BoxError> {
        let stdout = self.child.stdout.take().ok_or("stdout already taken")?;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let line = tokio::time::timeout(PATIENCE, lines.next_line())
            .await
            .map_err(|_| format!("{} did not start within {PATIENCE:?}", self.name))??
            .ok_or_else(|| format!("{} exited before it started", self.name))?;
        let name = self.name.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                println!("    [{name}] {line}");
            }
        });
        Ok(line)
    }

    /// SIGTERM, then waits for it to exit (SIGKILL after [`PATIENCE`]).
    async fn stop(&mut self) -> Result<ExitStatus, BoxError> {
        if let Some(pid) = self.child.id() {
            let pid = nix::unistd::Pid::from_raw(i32::try_from(pid)?);
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)?;
        }
        match tokio::time::timeout(PATIENCE, self.child.wait()).await {
            Ok(status) => Ok(status?),
            Err(_) => {
                self.child.kill().await?;
                Err(format!("{} did not stop within {PATIENCE:?} of SIGTERM", self.name).into())
            }
        }
    }
}

/// The engine the demo starts its own server of.
#[derive(Debug, Clone, Copy)]
enum Engine {
    Redis,
    Postgres,
}

/// The demo's own server, stopped when it is dropped.
#[allow(dead_code, reason = "held only to be dropped at the end of the demo")]
enum OwnServer {
    Redis(RedisServer),
    Postgres(PostgresServer),
}

async fn demo(engine: Engine) -> Result<(), BoxError> {
    // Our own server, unless the environment names one.
    let (_server, backend) = match std::env::var("REFCACHE_BACKEND") {
        Ok(backend) if backend.starts_with("redis") || backend.starts_with("postgres") => {
            println!("demo: using the server of REFCACHE_BACKEND={backend}");
            (None, with_workers_mode(&backend))
        }
        _ => match engine {
            Engine::Redis => {
                let server = tokio::task::spawn_blocking(|| {
                    RedisServer::start_with(RedisServerOptions::default().aof(true))
                })
                .await??;
                println!("demo: started redis-server at {} (AOF on)", server.url());
                let backend = format!("{}?mode=workers", server.url());
                (Some(OwnServer::Redis(server)), backend)
            }
            Engine::Postgres => {
                let server = tokio::task::spawn_blocking(|| {
                    PostgresServer::start_with(PostgresServerOptions::default().fsync(true))
                })
                .await??;
                println!("demo: started PostgreSQL at {}", server.url());
                let backend = format!("{}?mode=workers", server.url());
                (Some(OwnServer::Postgres(server)), backend)
            }
        },
    };
    println!("demo: REFCACHE_BACKEND={backend}");

    let mut workers = Vec::new();
    for name in ["worker 1", "worker 2"] {
        let mut worker = Proc::spawn(name, &["worker"], &backend)?;
        let line = worker.first_line().await?;
        println!("demo: {name} started: {line}");
        workers.push(worker);
    }
    let mut replicas = Vec::new();
    let mut urls = Vec::new();
    for name in ["replica A", "replica B"] {
        let mut replica = Proc::spawn(name, &["replica", "--http", "127.0.0.1:0"], &backend)?;
        let line = replica.first_line().await?;
        let url = line
            .strip_prefix("replica: serving ")
            .ok_or_else(|| format!("{name} printed `{line}`, not its address"))?
            .to_owned();
        println!("demo: {name} serving {url}");
        replicas.push(replica);
        urls.push(url);
    }
    let (a, b) = (&urls[0], &urls[1]);

    // Arguments no earlier run used, so that the first call is a miss even on a Redis of your own.
    let x = i64::from(std::process::id() % 10_000) + 1;
    let args = json!({ "x": x, "ms": 3000 });
    let start = Instant::now();
    println!("\ndemo: POST {a}/call/slow_square {args}");
    let first = request("POST", a, "/call/slow_square", Some(&args)).await?;
    println!("demo:   -> {first}");
    let ref_id = first["ref_id"]
        .as_str()
        .ok_or("the call answered no ref_id")?
        .to_owned();
    if first["is_complete"] != true {
        println!("demo: the task outlasts the 0.5 s timeout: polling {ref_id} on replica B");
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let polled = request("GET", b, &format!("/poll/{ref_id}"), None).await?;
            if polled["is_complete"] == true {
                println!(
                    "demo:   {:4.1} s: complete, value {}",
                    start.elapsed().as_secs_f64(),
                    polled["value"]
                );
                break;
            }
            let status = polled["status"].as_str().unwrap_or("?");
            if status != "pending" && status != "processing" {
                return Err(format!("the task ended {status}: {polled}").into());
            }
            println!(
                "demo:   {:4.1} s: {status}, {}",
                start.elapsed().as_secs_f64(),
                polled["progress"]["message"]
                    .as_str()
                    .unwrap_or("not started yet")
            );
            if start.elapsed() > PATIENCE {
                return Err(format!("{ref_id} did not finish within {PATIENCE:?}").into());
            }
        }
    }

    println!("\ndemo: POST {b}/call/slow_square {args} (the same call, on the other replica)");
    let again = request("POST", b, "/call/slow_square", Some(&args)).await?;
    println!("demo:   -> {again}");
    if again["is_complete"] != true || again["ref_id"] != first["ref_id"] {
        return Err(format!("expected a cache hit under {ref_id}, got {again}").into());
    }
    let stats = request("GET", a, "/stats", None).await?;
    println!(
        "demo: a cache hit under the same ref_id; executions cluster-wide: {}, this task's runs: {}",
        stats["executions"],
        task_runs(&backend, x).await?
    );

    println!("\ndemo: stopping the replicas and the workers (SIGTERM)");
    for proc in replicas.iter_mut().chain(workers.iter_mut()) {
        let status = proc.stop().await?;
        println!("demo: {} exited: {status}", proc.name);
        if !status.success() {
            return Err(format!("{} exited with {status}", proc.name).into());
        }
    }
    println!("demo: done");
    Ok(())
}

/// The backend URL with `mode=workers`, unless it names a mode.
fn with_workers_mode(backend: &str) -> String {
    match backend.split_once('?') {
        Some((_, query)) if query.split('&').any(|p| p.starts_with("mode=")) => backend.to_owned(),
        Some(_) => format!("{backend}&mode=workers"),
        None => format!("{backend}?mode=workers"),
    }
}

/// `demo:runs:{x}`: how many times the task started.
async fn task_runs(backend: &str, x: i64) -> Result<i64, BoxError> {
    let counters = Counters::for_backend(backend)?;
    let runs = counters.get(&format!("demo:runs:{x}")).await?;
    Ok(runs.and_then(|r| r.parse().ok()).unwrap_or(0))
}

/// A minimal HTTP/1.1 client (one request per connection), so that the demo needs no HTTP client crate. Answers
/// the JSON body; a status other than 200 is an error with the body's text.
async fn request(
    method: &str,
    base: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<Value, BoxError> {
    let addr: SocketAddr = base
        .strip_prefix("http://")
        .ok_or_else(|| format!("not an http:// URL: {base}"))?
        .parse()?;
    let body = body.map(Value::to_string).unwrap_or_default();
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply).await?;
        Ok::<_, std::io::Error>(reply)
    };
    let reply = tokio::time::timeout(PATIENCE, exchange)
        .await
        .map_err(|_| format!("{method} {base}{path}: no answer within {PATIENCE:?}"))??;
    let text = String::from_utf8(reply)?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or("a malformed HTTP response")?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or("a malformed HTTP status line")?;
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Err("a chunked HTTP response (the replica sends whole bodies)".into());
    }
    if status != 200 {
        return Err(format!("{method} {base}{path}: HTTP {status}: {body}").into());
    }
    Ok(serde_json::from_str(body)?)
}
