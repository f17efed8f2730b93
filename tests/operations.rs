//! Operations (feature `prometheus`): the metrics a service owner scrapes, and the health endpoint. One global
//! Prometheus recorder is installed for this binary (a process has one), the routes are served on a loopback
//! port, and both are read over HTTP as a scraper reads them. Each test uses task names of its own, so the
//! counters it asserts on are its own.
#![cfg(feature = "prometheus")]

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, LazyLock, OnceLock};
use std::time::Duration;

use refcache::ops::PrometheusHandle;
use refcache::{RefCache, TaskContext, TaskStatus, cached};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long anything may take on a loaded machine before a test gives up.
const PATIENCE: Duration = Duration::from_secs(30);

static CACHE: LazyLock<RefCache> = LazyLock::new(RefCache::new);

fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            refcache::ops::install_prometheus().expect("the only recorder of this process")
        })
        .clone()
}

/// Serves `routes(cache)` on a free loopback port; answers its address.
async fn serve(cache: RefCache, metrics: Option<PrometheusHandle>) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app: axum::Router = refcache::ops::routes(cache, metrics);
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// `GET path` over HTTP/1.1: the status code, the content type and the body.
async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await.unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let content_type = head
        .lines()
        .find_map(|l| l.strip_prefix("content-type: "))
        .unwrap_or_default()
        .to_owned();
    (status, content_type, body.to_owned())
}

/// The value of the sample `name{...}` whose labels include every one of `labels`, in a Prometheus text page.
fn sample(page: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
            (metric == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))))
            .then(|| value.parse().ok())?
        })
}

/// Scrapes `/metrics` until `name{labels}` reads `want`, or fails showing the last page.
async fn until_sample(addr: std::net::SocketAddr, name: &str, labels: &[(&str, &str)], want: f64) {
    let give_up = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (_, _, page) = get(addr, "/metrics").await;
        if sample(&page, name, labels) == Some(want) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < give_up,
            "{name}{labels:?} never read {want}; last page:\n{page}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cached(cache = CACHE, name = "ops.square")]
async fn square(n: i64) -> i64 {
    n * n
}

#[cached(cache = CACHE, name = "ops.fails")]
async fn fails(n: i64) -> Result<i64, std::io::Error> {
    Err(std::io::Error::other(format!("no {n}")))
}

static FLAKY_RUNS: AtomicU32 = AtomicU32::new(0);

/// Fails its first attempt, then succeeds.
#[cached(cache = CACHE, name = "ops.flaky", max_retries = 1, retry_backoff = 0.01)]
async fn flaky(n: i64) -> Result<i64, std::io::Error> {
    if FLAKY_RUNS.fetch_add(1, Ordering::SeqCst) == 0 {
        return Err(std::io::Error::other("first attempt"));
    }
    Ok(n)
}

#[cached(cache = CACHE, name = "ops.hangs", execution_timeout = 0.05)]
async fn hangs(n: i64) -> i64 {
    tokio::time::sleep(Duration::from_secs(3600)).await;
    n
}

/// Runs until cancelled, or until its gate opens.
#[cached(cache = CACHE, name = "ops.gated", async_timeout = 0.01)]
async fn gated(id: u32, ctx: TaskContext) -> Result<u32, std::io::Error> {
    let gate = gate(id);
    tokio::select! {
        () = ctx.cancelled() => Err(std::io::Error::other("stopped on cancel")),
        () = gate.notified() => Ok(id),
    }
}

fn gate(id: u32) -> Arc<tokio::sync::Notify> {
    static GATES: LazyLock<
        std::sync::Mutex<std::collections::HashMap<u32, Arc<tokio::sync::Notify>>>,
    > = LazyLock::new(Default::default);
    GATES.lock().unwrap().entry(id).or_default().clone()
}

/// Every counter moves once for what it counts: a miss submits, starts and completes; the same call again is a
/// hit; a failure, a retry, a timeout and a cancel each count under their own task. Histograms record the run
/// and the call. The page is Prometheus text with the task and backend labels.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_histograms_and_labels_as_scraped() {
    let addr = serve(CACHE.clone(), Some(prometheus())).await;
    let task = |name: &'static str| [("task", name), ("backend", "memory")];

    assert_eq!(
        square(7).await.unwrap().value_as::<i64>().unwrap(),
        Some(49)
    );
    assert_eq!(
        square(7).await.unwrap().value_as::<i64>().unwrap(),
        Some(49)
    );
    let (status, content_type, page) = get(addr, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    assert!(
        page.contains("# TYPE refcache_calls_hit_total counter"),
        "{page}"
    );
    let t = task("ops.square");
    assert_eq!(
        sample(&page, "refcache_calls_submitted_total", &t),
        Some(1.0),
        "{page}"
    );
    assert_eq!(sample(&page, "refcache_tasks_started_total", &t), Some(1.0));
    assert_eq!(
        sample(&page, "refcache_tasks_completed_total", &t),
        Some(1.0)
    );
    assert_eq!(sample(&page, "refcache_calls_hit_total", &t), Some(1.0));
    assert_eq!(
        sample(&page, "refcache_task_run_seconds_count", &t),
        Some(1.0)
    );
    assert_eq!(
        sample(&page, "refcache_task_queue_wait_seconds_count", &t),
        Some(1.0)
    );
    // The second call was a near-cache hit: only the first records a response time.
    assert_eq!(
        sample(&page, "refcache_call_response_seconds_count", &t),
        Some(1.0)
    );
    assert_eq!(sample(&page, "refcache_tasks_running", &t), Some(0.0));

    assert_eq!(fails(1).await.unwrap().status(), TaskStatus::Failed);
    until_sample(addr, "refcache_tasks_failed_total", &task("ops.fails"), 1.0).await;

    assert_eq!(flaky(1).await.unwrap().value_as::<i64>().unwrap(), Some(1));
    until_sample(
        addr,
        "refcache_tasks_retried_total",
        &task("ops.flaky"),
        1.0,
    )
    .await;
    until_sample(
        addr,
        "refcache_tasks_completed_total",
        &task("ops.flaky"),
        1.0,
    )
    .await;

    assert_eq!(hangs(1).await.unwrap().status(), TaskStatus::Failed);
    until_sample(
        addr,
        "refcache_tasks_timed_out_total",
        &task("ops.hangs"),
        1.0,
    )
    .await;
    let (_, _, page) = get(addr, "/metrics").await;
    assert_eq!(
        sample(&page, "refcache_tasks_failed_total", &task("ops.hangs")),
        None,
        "a timeout is counted as a timeout, not a failure"
    );
}

/// While a task runs, the running gauge holds it; a second identical call joins it; a cancel counts once and the
/// gauge drops back to zero.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_running_gauge_joins_and_cancels() {
    let addr = serve(CACHE.clone(), Some(prometheus())).await;
    let t = [("task", "ops.gated"), ("backend", "memory")];

    let first = gated(1).await.unwrap();
    assert_eq!(first.status(), TaskStatus::Processing);
    until_sample(addr, "refcache_tasks_running", &t, 1.0).await;
    let second = gated(1).await.unwrap();
    assert_eq!(second.ref_id(), first.ref_id());
    until_sample(addr, "refcache_calls_joined_total", &t, 1.0).await;

    CACHE.cancel_task(first.ref_id().as_str()).await.unwrap();
    until_sample(addr, "refcache_tasks_cancelled_total", &t, 1.0).await;
    until_sample(addr, "refcache_tasks_running", &t, 0.0).await;

    // Another one, let through its gate: completed, and the gauge is back at zero.
    let third = gated(2).await.unwrap();
    until_sample(addr, "refcache_tasks_running", &t, 1.0).await;
    gate(2).notify_one();
    until_sample(addr, "refcache_tasks_completed_total", &t, 1.0).await;
    until_sample(addr, "refcache_tasks_running", &t, 0.0).await;
    let done = CACHE
        .get_cached_result(third.ref_id().as_str())
        .await
        .unwrap();
    assert_eq!(done.value_as::<u32>().unwrap(), Some(2));
}

/// `/health` answers the backend's round trip: 200 with `ok: true` for the in-process backend, and no `/metrics`
/// route when no exporter handle is given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_answers_the_round_trip() {
    let cache = RefCache::new();
    let health = cache.health().await;
    assert!(health.ok, "{health:?}");
    assert_eq!(health.backend, "memory");

    let addr = serve(cache, None).await;
    let (status, content_type, body) = get(addr, "/health").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(content_type, "application/json");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["ok"], true, "{body}");
    assert_eq!(json["backend"], "memory");
    assert!(
        json["round_trip_ms"].as_f64().is_some_and(|ms| ms >= 0.0),
        "{body}"
    );
    assert_eq!(get(addr, "/metrics").await.0, 404);
}

/// A backend that does not answer makes `/health` answer 503 with the backend's error, which says what to check.
#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_503_when_the_backend_is_down() {
    use refcache::redis::{RedisConfig, RedisTaskBackend};
    // A port nothing listens on: bound, then closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = RedisConfig::from_url(&format!("redis://127.0.0.1:{port}/0")).unwrap();
    let backend = RedisTaskBackend::new(config).unwrap();
    let cache = RefCache::builder().backend(Arc::new(backend)).unwrap();

    let addr = serve(cache, None).await;
    let (status, _, body) = get(addr, "/health").await;
    assert_eq!(status, 503, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["ok"], false);
    assert_eq!(json["backend"], "redis");
    assert!(
        json["error"]
            .as_str()
            .is_some_and(|e| e.contains(&format!("127.0.0.1:{port}"))),
        "{body}"
    );
}

/// A cache with one worker slot, so that a second task queues.
static ONE_SLOT: LazyLock<RefCache> = LazyLock::new(|| {
    let mut config = refcache::MemoryBackendConfig::default();
    config.max_workers = 1;
    RefCache::builder()
        .backend(Arc::new(refcache::MemoryTaskBackend::new(config)))
        .unwrap()
});

#[cached(cache = ONE_SLOT, name = "ops.queued", async_timeout = 0.01)]
async fn one_slot(id: u32, ctx: TaskContext) -> Result<u32, std::io::Error> {
    ctx.cancelled().await;
    Err(std::io::Error::other(format!("{id} stopped on cancel")))
}

/// The queued gauge holds a task while it waits for a slot, and lets go when it leaves the queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queued_gauge_follows_the_queue() {
    let addr = serve(ONE_SLOT.clone(), Some(prometheus())).await;
    let t = [("task", "ops.queued"), ("backend", "memory")];

    let running = one_slot(1).await.unwrap();
    until_sample(addr, "refcache_tasks_running", &t, 1.0).await;
    let queued = one_slot(2).await.unwrap();
    until_sample(addr, "refcache_tasks_queued", &t, 1.0).await;

    ONE_SLOT
        .cancel_task(queued.ref_id().as_str())
        .await
        .unwrap();
    until_sample(addr, "refcache_tasks_queued", &t, 0.0).await;
    ONE_SLOT
        .cancel_task(running.ref_id().as_str())
        .await
        .unwrap();
    until_sample(addr, "refcache_tasks_running", &t, 0.0).await;
}
