//! The distributed example (`examples/distributed.rs`) as a real cluster, on each engine: each test starts its own
//! server (`redis-server` with AOF on, or a PostgreSQL), two replica processes and two worker processes of the
//! example binary, and drives the replicas over HTTP. The task counts its executions in the same server
//! (`demo:runs:{x}`), so that the tests see work across processes. Every scenario runs once per engine
//! ([`on_both_engines!`]), from one body.
//!
//! Timing: the task's 0.5 s `async_timeout` and the 2 s lease are part of what is tested, so these tests run on the
//! wall clock. Every wait is for an event (a status, a counter, a key), bounded by a wide deadline ([`PATIENCE`]);
//! the one fixed pause checks that something does *not* happen (a cancelled task's ticks stay still).
#![cfg(all(feature = "redis", feature = "postgres"))]

#[path = "support/examples.rs"]
mod examples;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use futures::future::join_all;
use redis::AsyncCommands;
use refcache::postgres::PostgresServer;
use refcache::redis::{RedisServer, RedisServerOptions};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

/// The longest any awaited event may take, on a loaded 2-core machine.
const PATIENCE: Duration = Duration::from_secs(60);
/// How long a request may take to be answered with an error while the server is down (the backends promise their
/// command timeout, 5 s, plus a connection attempt).
const OUTAGE_ANSWER: Duration = Duration::from_secs(30);

/// Which server the cluster shares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Engine {
    Redis,
    Postgres,
}

/// The cluster's server.
enum Server {
    Redis(RedisServer),
    Postgres(PostgresServer),
}

impl Server {
    fn start(engine: Engine) -> Self {
        match engine {
            Engine::Redis => Self::Redis(
                RedisServer::start_with(RedisServerOptions::default().aof(true))
                    .expect("start redis-server"),
            ),
            Engine::Postgres => Self::Postgres(PostgresServer::start().expect("start PostgreSQL")),
        }
    }

    fn url(&self) -> String {
        match self {
            Self::Redis(s) => s.url(),
            Self::Postgres(s) => s.url(),
        }
    }

    /// A crash: SIGKILL for Redis (AOF has every write), an immediate stop for Postgres (the WAL has every commit).
    fn kill(&mut self) {
        match self {
            Self::Redis(s) => s.kill(),
            Self::Postgres(s) => s.kill(),
        }
    }

    fn restart(&mut self) {
        match self {
            Self::Redis(s) => s.restart().expect("restart redis-server"),
            Self::Postgres(s) => s.restart().expect("restart PostgreSQL"),
        }
    }
}

/// The example's binary.
fn example_binary() -> PathBuf {
    examples::binary("distributed")
}

/// The example as a child process with `REFCACHE_BACKEND=backend` and no other `REFCACHE_*` variable.
async fn spawn(backend: &str, args: &[&str], stdout: Stdio) -> Child {
    let bin = tokio::task::spawn_blocking(example_binary).await.unwrap();
    let mut command = Command::new(bin);
    for (var, _) in std::env::vars_os() {
        if var.to_string_lossy().starts_with("REFCACHE_") {
            command.env_remove(var);
        }
    }
    command
        .args(args)
        .env("REFCACHE_BACKEND", backend)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("start the example")
}

struct Replica {
    child: Child,
    url: String,
}

/// A server, two replicas and two workers. Every child is killed when it is dropped.
struct Cluster {
    engine: Engine,
    replicas: Vec<Replica>,
    workers: Vec<Child>,
    /// Declared last: dropped after the children.
    server: Server,
    /// The server's URL (no options), for the test's own reads.
    server_url: String,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in self
            .replicas
            .iter_mut()
            .map(|r| &mut r.child)
            .chain(self.workers.iter_mut())
        {
            let _ = child.start_kill();
        }
    }
}

impl Cluster {
    async fn start(engine: Engine) -> Self {
        let server = tokio::task::spawn_blocking(move || Server::start(engine))
            .await
            .unwrap();
        let server_url = server.url();
        let backend = format!("{server_url}?mode=workers&lease=2&max_deliveries=3");
        let mut workers = Vec::new();
        for _ in 0..2 {
            workers.push(spawn(&backend, &["worker"], Stdio::null()).await);
        }
        let mut cluster = Self {
            engine,
            replicas: Vec::new(),
            workers,
            server,
            server_url,
        };
        for _ in 0..2 {
            let mut child = spawn(
                &backend,
                &["replica", "--http", "127.0.0.1:0"],
                Stdio::piped(),
            )
            .await;
            let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
            let url = tokio::time::timeout(PATIENCE, async {
                let line = lines
                    .next_line()
                    .await
                    .unwrap()
                    .expect("the replica exited before serving");
                line.strip_prefix("replica: serving ")
                    .unwrap_or_else(|| panic!("unexpected first line `{line}`"))
                    .to_owned()
            })
            .await
            .expect("the replica announces its address");
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            cluster.replicas.push(Replica { child, url });
        }
        cluster
    }

    async fn call(&self, replica: usize, x: i64, ms: u64) -> Value {
        let (status, body) = http(
            "POST",
            &self.replicas[replica].url,
            "/call/slow_square",
            Some(&json!({"x": x, "ms": ms})),
        )
        .await;
        assert_eq!(status, 200, "call slow_square({x}, {ms}): {body}");
        body
    }

    async fn poll(&self, replica: usize, ref_id: &str) -> (u16, Value) {
        http(
            "GET",
            &self.replicas[replica].url,
            &format!("/poll/{ref_id}"),
            None,
        )
        .await
    }

    /// Polls until the task is complete, failed or cancelled; answers the last poll.
    async fn poll_until_done(&self, replica: usize, ref_id: &str) -> Value {
        let start = Instant::now();
        loop {
            let (status, body) = self.poll(replica, ref_id).await;
            assert_eq!(status, 200, "poll {ref_id}: {body}");
            if is_done(&body) {
                return body;
            }
            assert!(
                start.elapsed() < PATIENCE,
                "{ref_id} did not finish: {body}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn cancel(&self, replica: usize, ref_id: &str) -> Value {
        let (status, body) = http(
            "POST",
            &self.replicas[replica].url,
            &format!("/cancel/{ref_id}"),
            None,
        )
        .await;
        assert_eq!(status, 200, "cancel {ref_id}: {body}");
        body
    }

    async fn stats(&self, replica: usize) -> Value {
        let (status, body) = http("GET", &self.replicas[replica].url, "/stats", None).await;
        assert_eq!(status, 200, "stats: {body}");
        body
    }

    /// A demo counter (`demo:*`), read from the cluster's server: a Redis key, or a row of `demo_counters`.
    async fn get_text(&self, key: &str) -> Option<String> {
        match self.engine {
            Engine::Redis => {
                let mut conn = redis::Client::open(self.server_url.as_str())
                    .unwrap()
                    .get_multiplexed_async_connection()
                    .await
                    .expect("connect to the test's redis-server");
                conn.get(key).await.unwrap()
            }
            Engine::Postgres => {
                let client = self.postgres().await;
                let table: bool = client
                    .query_one("SELECT to_regclass('demo_counters') IS NOT NULL", &[])
                    .await
                    .unwrap()
                    .get(0);
                if !table {
                    return None;
                }
                client
                    .query_opt("SELECT value FROM demo_counters WHERE name = $1", &[&key])
                    .await
                    .unwrap()
                    .map(|r| r.get(0))
            }
        }
    }

    /// A connection of the test's own to the cluster's Postgres.
    async fn postgres(&self) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(&self.server_url, tokio_postgres::NoTls)
            .await
            .expect("connect to the test's PostgreSQL");
        tokio::spawn(connection);
        client
    }

    async fn get_int(&self, key: &str) -> i64 {
        self.get_text(key)
            .await
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// `demo:runs:{x}`: how many times the task started, cluster-wide.
    async fn runs(&self, x: i64) -> i64 {
        self.get_int(&format!("demo:runs:{x}")).await
    }

    /// How many tasks failed `worker lost` (Redis's dead-letter list, Postgres's dead-letter view).
    async fn dead_letters(&self) -> i64 {
        match self.engine {
            Engine::Redis => {
                let mut conn = redis::Client::open(self.server_url.as_str())
                    .unwrap()
                    .get_multiplexed_async_connection()
                    .await
                    .unwrap();
                conn.llen("refcache:dead").await.unwrap()
            }
            Engine::Postgres => self
                .postgres()
                .await
                .query_one("SELECT count(*) FROM refcache.dead_letters", &[])
                .await
                .unwrap()
                .get(0),
        }
    }

    /// Every child is still running (none crashed).
    fn assert_all_alive(&mut self) {
        for (i, replica) in self.replicas.iter_mut().enumerate() {
            assert!(
                matches!(replica.child.try_wait(), Ok(None)),
                "replica {i} exited"
            );
        }
        for (i, worker) in self.workers.iter_mut().enumerate() {
            assert!(matches!(worker.try_wait(), Ok(None)), "worker {i} exited");
        }
    }
}

/// Whether a poll's answer is final: complete, failed or cancelled.
fn is_done(body: &Value) -> bool {
    body["is_complete"] == true || matches!(body["status"].as_str(), Some("failed" | "cancelled"))
}

fn ref_id(body: &Value) -> String {
    body["ref_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no ref_id in {body}"))
        .to_owned()
}

/// Waits until `check` holds, polling every 50 ms, for at most [`PATIENCE`].
async fn until(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < PATIENCE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One HTTP/1.1 request on its own connection; the status and the body (JSON, or the text as a JSON string).
async fn http(method: &str, base: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    tokio::time::timeout(PATIENCE, http_once(method, base, path, body))
        .await
        .unwrap_or_else(|_| panic!("{method} {base}{path}: no answer within {PATIENCE:?}"))
}

async fn http_once(method: &str, base: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let addr = base.strip_prefix("http://").expect("an http:// URL");
    let body = body.map(Value::to_string).unwrap_or_default();
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut reply = Vec::new();
    stream
        .read_to_end(&mut reply)
        .await
        .unwrap_or_else(|e| panic!("{method} {base}{path}: reading the answer: {e}"));
    let text = String::from_utf8(reply).expect("a UTF-8 answer");
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("{method} {base}{path}: a malformed answer `{text}`"));
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "the replica sends whole bodies: {head}"
    );
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("a malformed status line in `{head}`"));
    let body = serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.to_owned()));
    (status, body)
}

/// One test per engine for each scenario: `redis::<name>` and `postgres::<name>`, from one body.
macro_rules! on_both_engines {
    ($($name:ident),* $(,)?) => {
        mod redis_engine {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Engine::Redis).await;
                }
            )*
        }
        mod postgres_engine {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Engine::Postgres).await;
                }
            )*
        }
    };
}

on_both_engines!(
    a_call_on_one_replica_is_polled_to_completion_on_the_other,
    a_cancel_on_one_replica_stops_the_work_started_on_the_other,
    ten_concurrent_identical_calls_across_replicas_run_once,
    a_worker_killed_mid_task_is_taken_over_by_the_other,
    a_server_restart_keeps_finished_values_and_an_outage_answers_errors,
);

async fn a_call_on_one_replica_is_polled_to_completion_on_the_other(engine: Engine) {
    let cluster = Cluster::start(engine).await;
    let x = 101;
    let started = cluster.call(0, x, 3000).await;
    assert_eq!(
        started["is_async"], true,
        "a 3 s task outlasts 0.5 s: {started}"
    );
    assert!(
        matches!(started["status"].as_str(), Some("pending" | "processing")),
        "{started}"
    );
    let id = ref_id(&started);

    // Replica B knows the task: it shows its progress, then its value.
    let start = Instant::now();
    let mut saw_progress = false;
    let done = loop {
        let (status, polled) = cluster.poll(1, &id).await;
        assert_eq!(status, 200, "{polled}");
        if is_done(&polled) {
            break polled;
        }
        saw_progress |= polled["status"] == "processing"
            && polled["progress"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("step "));
        assert!(start.elapsed() < PATIENCE, "{id} did not finish: {polled}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        saw_progress,
        "a poll on replica B showed the task's progress"
    );
    assert_eq!(done["is_complete"], true, "{done}");
    assert_eq!(done["value"], json!(x * x));
    assert_eq!(ref_id(&done), id);
    assert_eq!(cluster.runs(x).await, 1);

    // The same call on B: a hit, under the same reference, without running again.
    let again = cluster.call(1, x, 3000).await;
    assert_eq!(again["is_complete"], true, "a hit: {again}");
    assert_eq!(again["value"], json!(x * x));
    assert_eq!(ref_id(&again), id);
    assert_eq!(cluster.runs(x).await, 1);
    // Neither replica ran it: a worker did.
    let pid: i64 = cluster.get_int(&format!("demo:pid:{x}")).await;
    let workers: Vec<i64> = cluster
        .workers
        .iter()
        .map(|w| i64::from(w.id().unwrap()))
        .collect();
    assert!(workers.contains(&pid), "ran in {pid}, workers {workers:?}");
}

async fn a_cancel_on_one_replica_stops_the_work_started_on_the_other(engine: Engine) {
    let cluster = Cluster::start(engine).await;
    let x = 202;
    let started = cluster.call(0, x, 600_000).await;
    let id = ref_id(&started);
    // The work runs on a worker: it started, ticks, and the cluster counts it as running.
    until("the task to tick on a worker", async || {
        cluster.get_int(&format!("demo:ticks:{x}")).await >= 2
    })
    .await;
    until("the stats to count the running task", async || {
        cluster.stats(1).await["running"] == 1
    })
    .await;

    let cancelled = cluster.cancel(1, &id).await;
    assert_eq!(cancelled["outcome"], "cancelled", "{cancelled}");
    let polled = cluster.poll_until_done(0, &id).await;
    assert_eq!(polled["status"], "cancelled", "{polled}");

    // The task itself saw the cancel and stopped (it records that as it returns)...
    until("the task to stop on its cancel", async || {
        let stopped = cluster.get_text(&format!("demo:stopped:{x}")).await;
        stopped.as_deref() == Some("cancelled")
    })
    .await;
    // ... its ticks stay still (it ticks every 100 ms while it runs) ...
    let ticks = cluster.get_int(&format!("demo:ticks:{x}")).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        cluster.get_int(&format!("demo:ticks:{x}")).await,
        ticks,
        "the cancelled task still ticks"
    );
    // ... and its worker is free: nothing runs anywhere in the cluster.
    until("the workers to report nothing running", async || {
        cluster.stats(0).await["running"] == 0
    })
    .await;
    let stats = cluster.stats(0).await;
    assert_eq!(stats["cancellations"], 1, "{stats}");
    assert_eq!(stats["executions"], 1, "{stats}");
    assert_eq!(cluster.runs(x).await, 1);
    // Cancelling again, from A: still cancelled (idempotent); the poll on B agrees.
    assert_eq!(cluster.cancel(0, &id).await["outcome"], "cancelled");
    assert_eq!(cluster.poll_until_done(1, &id).await["status"], "cancelled");
}

async fn ten_concurrent_identical_calls_across_replicas_run_once(engine: Engine) {
    let cluster = Cluster::start(engine).await;
    let x = 303;
    let calls = (0..10).map(|i| cluster.call(i % 2, x, 3000));
    let answers = join_all(calls).await;
    let id = ref_id(&answers[0]);
    for answer in &answers {
        assert_eq!(ref_id(answer), id, "one execution, one reference: {answer}");
    }
    let done = cluster.poll_until_done(1, &id).await;
    assert_eq!(done["is_complete"], true, "{done}");
    assert_eq!(done["value"], json!(x * x));
    assert_eq!(cluster.runs(x).await, 1, "ten calls, one execution");
    let stats = cluster.stats(0).await;
    assert_eq!(stats["executions"], 1, "{stats}");
    // Those that came while it ran joined it (at least the nine after the first, unless it finished first).
    let joined = answers.iter().filter(|a| a["is_async"] == true).count();
    assert!(
        stats["coalesced"].as_u64().unwrap() + 1 >= joined as u64,
        "{stats}, {joined} joined"
    );
}

async fn a_worker_killed_mid_task_is_taken_over_by_the_other(engine: Engine) {
    let mut cluster = Cluster::start(engine).await;
    let x = 404;
    let started = cluster.call(0, x, 6000).await;
    let id = ref_id(&started);
    // The task counts its start, then records the pid of the worker that runs it.
    until("the task to start on a worker", async || {
        cluster.get_int(&format!("demo:pid:{x}")).await != 0
    })
    .await;
    assert_eq!(cluster.runs(x).await, 1);
    let pid = cluster.get_int(&format!("demo:pid:{x}")).await;
    let victim = cluster
        .workers
        .iter()
        .position(|w| w.id().map(i64::from) == Some(pid))
        .unwrap_or_else(|| panic!("the task runs in {pid}, which is not one of the workers"));
    let survivor = i64::from(cluster.workers[1 - victim].id().unwrap());

    // SIGKILL: nothing is flushed, the lease is not renewed.
    cluster.workers[victim].start_kill().unwrap();
    cluster.workers[victim].wait().await.unwrap();
    let (status, polled) = cluster.poll(1, &id).await;
    assert_eq!(status, 200);
    assert!(
        !is_done(&polled),
        "killed mid-task, it cannot be done: {polled}"
    );

    // After the lease (2 s) the other worker takes it over and runs it to the end.
    let done = cluster.poll_until_done(1, &id).await;
    assert_eq!(done["is_complete"], true, "{done}");
    assert_eq!(done["value"], json!(x * x));
    assert_eq!(
        cluster.runs(x).await,
        2,
        "started on the killed worker, then on the other"
    );
    assert_eq!(cluster.get_int(&format!("demo:pid:{x}")).await, survivor);
    // The result landed once: one complete record, the same on both replicas, and nothing dead-lettered.
    let stats = cluster.stats(0).await;
    assert_eq!(stats["executions"], 2, "{stats}");
    assert_eq!(stats["by_status"]["complete"], 1, "{stats}");
    assert_eq!(cluster.poll_until_done(0, &id).await, done);
    assert_eq!(cluster.dead_letters().await, 0);
    // A new call is a hit.
    let again = cluster.call(0, x, 6000).await;
    assert_eq!(
        (again["is_complete"].clone(), ref_id(&again)),
        (json!(true), id)
    );
    assert_eq!(cluster.runs(x).await, 2);
    assert!(matches!(cluster.workers[1 - victim].try_wait(), Ok(None)));
}

async fn a_server_restart_keeps_finished_values_and_an_outage_answers_errors(engine: Engine) {
    let mut cluster = Cluster::start(engine).await;
    // A value finished before the restart.
    let x = 505;
    let first = cluster.call(0, x, 200).await;
    let id = ref_id(&first);
    let done = cluster.poll_until_done(0, &id).await;
    assert_eq!(done["value"], json!(x * x), "{done}");
    // A task still running when the server goes down.
    let y = 506;
    let running = ref_id(&cluster.call(1, y, 4000).await);
    until("the second task to start", async || {
        cluster.runs(y).await == 1
    })
    .await;

    // The server crashes (Redis: SIGKILL, AOF has every write; Postgres: an immediate stop, the WAL has every
    // commit).
    tokio::task::block_in_place(|| cluster.server.kill());
    for (replica, ref_id) in [(0, &id), (1, &running)] {
        let start = Instant::now();
        let (status, body) = tokio::time::timeout(OUTAGE_ANSWER, cluster.poll(replica, ref_id))
            .await
            .expect("a poll while the server is down answers (an error), not hangs");
        assert!(
            status >= 500,
            "a poll while the server is down: {status} {body}"
        );
        let error = body["error"].as_str().unwrap_or_default();
        assert!(error.contains("unavailable"), "{error}");
        eprintln!(
            "poll during the outage: {status} after {:?}: {error}",
            start.elapsed()
        );
    }
    let (status, body) = tokio::time::timeout(
        OUTAGE_ANSWER,
        http(
            "POST",
            &cluster.replicas[1].url,
            "/call/slow_square",
            Some(&json!({"x": 507, "ms": 100})),
        ),
    )
    .await
    .expect("a call while the server is down answers (an error), not hangs");
    assert!(
        status >= 500,
        "a call while the server is down: {status} {body}"
    );
    cluster.assert_all_alive();

    // Back, with its data. (Each replica may answer an error or two while its connections come back.)
    tokio::task::block_in_place(|| cluster.server.restart());
    for replica in [1, 0] {
        let start = Instant::now();
        let mut errors = Vec::new();
        let after = loop {
            let (status, body) = cluster.poll(replica, &id).await;
            if status == 200 {
                break body;
            }
            errors.push(format!("{status} {body}"));
            assert!(
                start.elapsed() < PATIENCE,
                "replica {replica} still cannot poll after the restart: {errors:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        eprintln!(
            "replica {replica} served the value {:?} after the restart; errors before: {errors:?}",
            start.elapsed()
        );
        assert_eq!(after["is_complete"], true, "{after}");
        assert_eq!(after["value"], json!(x * x));
        assert_eq!(ref_id(&after), id);
    }
    // A repeat call is a hit under the same reference, on either replica.
    for replica in [0, 1] {
        let again = cluster.call(replica, x, 200).await;
        assert_eq!(again["is_complete"], true, "a hit: {again}");
        assert_eq!(ref_id(&again), id);
    }
    assert_eq!(cluster.runs(x).await, 1);
    // The task that ran through the outage completes, with its value.
    let finished = cluster.poll_until_done(0, &running).await;
    assert_eq!(finished["is_complete"], true, "{finished}");
    assert_eq!(finished["value"], json!(y * y));
    // Nothing ran twice: the outage outlasted the 2 s lease, yet no worker took the running task over.
    assert_eq!(
        cluster.runs(y).await,
        1,
        "the task that ran through the outage ran once"
    );
    cluster.assert_all_alive();
}
