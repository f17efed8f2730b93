//! The Redis backend across processes (several backends on one Redis stand in for replicas and workers), through
//! outages, restarts and lost workers. Each test starts its own `redis-server`.
#![cfg(feature = "redis")]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use futures::future::BoxFuture;
use refcache_backends::redis::{
    Mode, RedisConfig, RedisServer, RedisServerOptions, RedisTaskBackend,
};
use refcache_core::registry::TaskRegistration;
use refcache_core::{
    BackendError, CacheKey, CancelOutcome, RefId, Submission, Submitted, TaskBackend, TaskContext,
    TaskError, TaskOptions, TaskSnapshot, TaskSpec, TaskStatus,
};
use serde_json::{Value, json};
use tokio::sync::watch;

const PATIENCE: Duration = Duration::from_secs(30);
const GATED: &str = "it.redis.gated";

struct Gate {
    open: watch::Sender<bool>,
    runs: AtomicU32,
    cancelled: AtomicU32,
}

fn gate(id: &str) -> Arc<Gate> {
    static GATES: OnceLock<Mutex<HashMap<String, Arc<Gate>>>> = OnceLock::new();
    GATES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(id.to_owned())
        .or_insert_with(|| {
            Arc::new(Gate {
                open: watch::channel(false).0,
                runs: AtomicU32::new(0),
                cancelled: AtomicU32::new(0),
            })
        })
        .clone()
}

/// Counts a run, then waits for its gate (answering `value`) or its cancellation.
fn gated(
    args: Value,
    ctx: TaskContext,
) -> BoxFuture<'static, Result<refcache_core::JsonText, TaskError>> {
    Box::pin(async move {
        let g = gate(args["gate"].as_str().unwrap_or_default());
        g.runs.fetch_add(1, Ordering::SeqCst);
        let mut open = g.open.subscribe();
        tokio::select! {
            _ = open.wait_for(|o| *o) => Ok(refcache_core::JsonText::from(&args["value"])),
            () = ctx.cancelled() => {
                g.cancelled.fetch_add(1, Ordering::SeqCst);
                Err(TaskError::new("stopped on cancel"))
            }
        }
    })
}

inventory::submit!(TaskRegistration::new(|| GATED, gated));

fn new_gate() -> String {
    uuid_like()
}

fn uuid_like() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "g{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

fn submission(args: Value) -> (Submission, RefId, CacheKey) {
    let key = CacheKey::from_json(GATED, "it", &args).unwrap();
    let ref_id = RefId::generate("it");
    let spec = TaskSpec::new(ref_id.clone(), key, GATED, "it", args)
        .with_options(TaskOptions::default().ttl(Some(Duration::from_secs(600))));
    (Submission::new(spec, None), ref_id, key)
}

async fn until(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let give_up = tokio::time::Instant::now() + PATIENCE;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < give_up,
            "gave up waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn finished(b: &dyn TaskBackend, ref_id: &RefId) -> TaskSnapshot {
    let snapshot = b
        .wait(ref_id, Some(tokio::time::Instant::now() + PATIENCE))
        .await
        .expect("wait")
        .expect("known");
    assert!(snapshot.info.status.is_terminal(), "{:?}", snapshot.info);
    snapshot
}

fn config(server: &RedisServer) -> RedisConfig {
    RedisConfig::from_url(&server.url()).unwrap()
}

/// Two replicas in `local` mode: a call on one joins the other's execution, a poll and a cancel from either reach
/// it, and a finished value is a hit on both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_single_flight_polls_cancels_and_hits() {
    let server = RedisServer::start().expect("redis-server");
    let a = RedisTaskBackend::new(config(&server)).unwrap();
    let b = RedisTaskBackend::new(config(&server)).unwrap();

    let id = new_gate();
    let args = json!({"gate": id, "value": 7});
    let (sub, ref_id, key) = submission(args.clone());
    assert!(matches!(
        a.submit(sub).await.unwrap(),
        Submitted::Started(_)
    ));
    until("the task runs on A", async || {
        gate(&id).runs.load(Ordering::SeqCst) == 1
    })
    .await;
    let (sub, _, _) = submission(args.clone());
    match b.submit(sub).await.unwrap() {
        Submitted::Joined(joined) => assert_eq!(joined, ref_id, "B joins A's execution"),
        other => panic!("expected a join, got {other:?}"),
    }
    let on_b = b.get(&ref_id).await.unwrap().expect("B sees A's task");
    assert_eq!(on_b.info.status, TaskStatus::Processing);
    gate(&id).open.send_replace(true);
    let done = finished(&b, &ref_id).await;
    assert_eq!(done.value.expect("value").value, json!(7));
    assert_eq!(
        gate(&id).runs.load(Ordering::SeqCst),
        1,
        "one execution across replicas"
    );
    let (sub, _, _) = submission(args);
    assert!(matches!(b.submit(sub).await.unwrap(), Submitted::Hit(v) if v.ref_id == ref_id));
    assert_eq!(b.lookup(&key).await.unwrap().expect("hit").ref_id, ref_id);

    // Cancel on B stops the work on A.
    let id = new_gate();
    let (sub, ref_id, _) = submission(json!({"gate": id}));
    a.submit(sub).await.unwrap();
    until("the task runs on A", async || {
        gate(&id).runs.load(Ordering::SeqCst) == 1
    })
    .await;
    assert_eq!(b.cancel(&ref_id).await.unwrap(), CancelOutcome::Cancelled);
    until("A's task sees the cancel", async || {
        gate(&id).cancelled.load(Ordering::SeqCst) == 1
    })
    .await;
    assert_eq!(
        finished(&a, &ref_id).await.info.status,
        TaskStatus::Cancelled
    );
    until("A frees the slot", async || {
        a.stats().await.unwrap().running == 0
    })
    .await;
}

/// While Redis is down, calls and polls fail with `Unavailable` (no hang, no panic); a task that finishes during
/// the outage records its end once Redis is back; and everything works again without a restart of ours.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_is_unavailable_and_work_resumes() {
    let mut server =
        RedisServer::start_with(RedisServerOptions::default().aof(true)).expect("redis-server");
    let a = RedisTaskBackend::new(config(&server)).unwrap();
    let id = new_gate();
    let (sub, ref_id, key) = submission(json!({"gate": id, "value": "survived"}));
    a.submit(sub).await.unwrap();
    until("the task runs", async || {
        gate(&id).runs.load(Ordering::SeqCst) == 1
    })
    .await;

    server.kill();
    let started = tokio::time::Instant::now();
    let poll = a.get(&ref_id).await;
    assert!(
        matches!(poll, Err(BackendError::Unavailable(_))),
        "{poll:?}"
    );
    let (sub, _, _) = submission(json!({"gate": new_gate()}));
    let call = a.submit(sub).await;
    assert!(
        matches!(call, Err(BackendError::Unavailable(_))),
        "{call:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "errors come fast: {:?}",
        started.elapsed()
    );
    // The task finishes while Redis is down: its end is retried until Redis is back.
    gate(&id).open.send_replace(true);
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.restart().expect("restarts");
    until("Redis answers again", async || a.get(&ref_id).await.is_ok()).await;
    let done = finished(&a, &ref_id).await;
    assert_eq!(done.info.status, TaskStatus::Complete, "{:?}", done.info);
    assert_eq!(done.value.unwrap().value, json!("survived"));
    assert_eq!(a.lookup(&key).await.unwrap().unwrap().ref_id, ref_id);
    assert_eq!(gate(&id).runs.load(Ordering::SeqCst), 1);
}

/// With AOF on, a queued task and a finished value survive a Redis restart: the value is still served, and the
/// queued task runs when a worker comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aof_keeps_queued_tasks_and_finished_values_across_a_restart() {
    let mut server =
        RedisServer::start_with(RedisServerOptions::default().aof(true)).expect("redis-server");
    let replica = RedisTaskBackend::new(config(&server).mode(Mode::Workers)).unwrap();
    let worker = RedisTaskBackend::worker(config(&server)).unwrap();
    worker.start().await.unwrap();
    let done_gate = new_gate();
    gate(&done_gate).open.send_replace(true);
    let (sub, done_ref, done_key) = submission(json!({"gate": done_gate, "value": 1}));
    replica.submit(sub).await.unwrap();
    assert_eq!(
        finished(&replica, &done_ref).await.info.status,
        TaskStatus::Complete
    );
    worker.shutdown(Duration::from_secs(5)).await.unwrap();

    let queued_gate = new_gate();
    gate(&queued_gate).open.send_replace(true);
    let (sub, queued_ref, _) = submission(json!({"gate": queued_gate, "value": 2}));
    replica.submit(sub).await.unwrap();
    assert_eq!(
        replica.get(&queued_ref).await.unwrap().unwrap().info.status,
        TaskStatus::Pending,
        "no worker runs it yet"
    );

    server.kill();
    server.restart().expect("restarts");
    until("Redis answers again", async || replica.ping().await.is_ok()).await;
    let fresh = RedisTaskBackend::new(config(&server).mode(Mode::Workers)).unwrap();
    assert_eq!(
        fresh
            .lookup(&done_key)
            .await
            .unwrap()
            .expect("the finished value survived")
            .ref_id,
        done_ref
    );
    let worker = RedisTaskBackend::worker(config(&server)).unwrap();
    worker.start().await.unwrap();
    let done = finished(&replica, &queued_ref).await;
    assert_eq!(done.value.expect("the queued task ran").value, json!(2));
    assert_eq!(gate(&queued_gate).runs.load(Ordering::SeqCst), 1);
}

/// Runs a worker on its own runtime, which the test can drop mid-task: the worker stops dead, as if killed (no
/// terminal write, no ack, no more lease renewals).
struct DoomedWorker {
    runtime: Option<tokio::runtime::Runtime>,
}

/// A runtime of its own (built on another thread: a test's runtime cannot block on one), with `setup` run on it.
fn own_runtime<F>(setup: F) -> tokio::runtime::Runtime
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(setup);
        runtime
    })
    .join()
    .expect("the setup does not panic")
}

impl DoomedWorker {
    fn start(config: RedisConfig) -> Self {
        let runtime = own_runtime(async {
            let worker = RedisTaskBackend::worker(config).unwrap();
            worker.start().await.unwrap();
            std::mem::forget(worker);
        });
        Self {
            runtime: Some(runtime),
        }
    }

    fn kill(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// A worker lost mid-task: after its lease the task is taken over by a live worker and lands once; and a task
/// whose workers keep dying fails with `worker lost` after `max_deliveries` and lands in the dead-letter list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_workers_task_is_taken_over_or_dead_lettered() {
    let server = RedisServer::start().expect("redis-server");
    let short = config(&server)
        .lease(Duration::from_secs(1))
        .max_deliveries(2);
    let replica = RedisTaskBackend::new(short.clone().mode(Mode::Workers)).unwrap();

    // Taken over: the first worker dies mid-task; a second finishes it.
    let id = new_gate();
    let mut doomed = DoomedWorker::start(short.clone());
    let (sub, ref_id, _) = submission(json!({"gate": id, "value": "once"}));
    replica.submit(sub).await.unwrap();
    until("the doomed worker runs it", async || {
        gate(&id).runs.load(Ordering::SeqCst) == 1
    })
    .await;
    doomed.kill();
    gate(&id).open.send_replace(true);
    let survivor = RedisTaskBackend::worker(short.clone()).unwrap();
    survivor.start().await.unwrap();
    let done = finished(&replica, &ref_id).await;
    assert_eq!(done.info.status, TaskStatus::Complete, "{:?}", done.info);
    assert_eq!(done.value.unwrap().value, json!("once"));
    assert_eq!(
        gate(&id).runs.load(Ordering::SeqCst),
        2,
        "run again after the loss, once"
    );
    survivor.shutdown(Duration::from_secs(5)).await.unwrap();

    // Dead-lettered: two deliveries, two dead workers.
    let id = new_gate();
    let (sub, ref_id, _) = submission(json!({"gate": id}));
    replica.submit(sub).await.unwrap();
    for n in 1..=2 {
        let mut doomed = DoomedWorker::start(short.clone());
        until("a worker runs it", async || {
            gate(&id).runs.load(Ordering::SeqCst) == n
        })
        .await;
        doomed.kill();
    }
    let reaper = RedisTaskBackend::worker(short).unwrap();
    reaper.start().await.unwrap();
    let done = finished(&replica, &ref_id).await;
    assert_eq!(done.info.status, TaskStatus::Failed);
    let error = done.info.error.unwrap();
    assert_eq!(error.code.as_deref(), Some("WORKER_LOST"));
    assert!(
        error.message.starts_with("worker lost"),
        "{}",
        error.message
    );
    assert_eq!(
        gate(&id).runs.load(Ordering::SeqCst),
        2,
        "not run a third time"
    );
    assert_eq!(replica.dead_letters(10).await.unwrap(), vec![ref_id]);
}

/// In `local` mode, a replica that dies leaves no task `processing` forever: its lease runs out and the task
/// fails with `worker lost`, so that a new call runs the work again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_replicas_local_task_fails_instead_of_hanging() {
    let server = RedisServer::start().expect("redis-server");
    let short = config(&server).lease(Duration::from_secs(1));
    let id = new_gate();
    let (sub, ref_id, _) = submission(json!({"gate": id}));
    let doomed_config = short.clone();
    let runtime = own_runtime(async move {
        let doomed = RedisTaskBackend::new(doomed_config).unwrap();
        doomed.submit(sub).await.unwrap();
        std::mem::forget(doomed);
    });
    until("the task runs", async || {
        gate(&id).runs.load(Ordering::SeqCst) == 1
    })
    .await;
    runtime.shutdown_background();
    let survivor = RedisTaskBackend::new(short).unwrap();
    survivor.start().await.unwrap();
    let done = finished(&survivor, &ref_id).await;
    assert_eq!(done.info.status, TaskStatus::Failed);
    assert_eq!(
        done.info.error.unwrap().code.as_deref(),
        Some("WORKER_LOST")
    );
    let (sub, _, _) = submission(json!({"gate": id}));
    assert!(
        matches!(survivor.submit(sub).await.unwrap(), Submitted::Started(_)),
        "a new call runs the work again"
    );
}

/// Config alone selects the backend: `REFCACHE_BACKEND=redis://...` builds a Redis-backed `RefCache`, and bad
/// options are errors that name the fix.
#[tokio::test]
async fn the_backend_url_selects_redis() {
    let server = RedisServer::start().expect("redis-server");
    let url = format!("{}?mode=workers&key_prefix=app1", server.url());
    let config =
        refcache_core::RefCacheConfig::load_from_vars([("REFCACHE_BACKEND", url.as_str())])
            .unwrap();
    let cache = refcache_core::RefCache::from_config(&config).unwrap();
    assert_eq!(cache.backend().name(), "redis");
    let bad = refcache_core::RefCacheConfig::load_from_vars([(
        "REFCACHE_BACKEND",
        "redis://127.0.0.1:1/0?mode=fleet",
    )])
    .unwrap();
    let err = refcache_core::RefCache::from_config(&bad)
        .unwrap_err()
        .to_string();
    assert!(err.contains("expected `local` or `workers`"), "{err}");
}

/// In `workers` mode, a task that no worker could run (a closure not registered by name: a method, or a function
/// with skipped parameters) runs in the process that took the call, with its state in Redis all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unregistered_closure_runs_where_it_was_called_in_workers_mode() {
    let server = RedisServer::start().expect("redis-server");
    let replica = RedisTaskBackend::new(config(&server).mode(Mode::Workers)).unwrap();
    let other = RedisTaskBackend::new(config(&server).mode(Mode::Workers)).unwrap();
    let job: refcache_core::LocalJob = Arc::new(|args: Value, _ctx| {
        Box::pin(async move { Ok(refcache_core::JsonText::from(json!({"echo": args["n"]}))) })
    });
    let args = json!({"n": 5});
    let key = CacheKey::from_json("it.redis.method", "it", &args).unwrap();
    let ref_id = RefId::generate("it");
    let spec = TaskSpec::new(ref_id.clone(), key, "it.redis.method", "it", args)
        .with_options(TaskOptions::default().ttl(Some(Duration::from_secs(600))));
    replica
        .submit(Submission::new(spec, Some(job)))
        .await
        .unwrap();
    let done = finished(&other, &ref_id).await;
    assert_eq!(
        done.value.expect("ran on the replica").value,
        json!({"echo": 5})
    );
}

/// A backend outlives the runtime that first used it (a process-wide cache used from one `#[tokio::test]`, then
/// another): its background loops start again on the next runtime, so waits stay event-driven.
#[test]
fn a_backend_outlives_the_runtime_that_started_it() {
    let server = RedisServer::start().expect("redis-server");
    let backend = RedisTaskBackend::new(config(&server)).unwrap();
    for round in 0..2 {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let backend = backend.clone();
        runtime.block_on(async move {
            let id = new_gate();
            let (sub, ref_id, _) = submission(json!({"gate": id, "value": round}));
            backend.submit(sub).await.unwrap();
            until("the task runs", async || {
                gate(&id).runs.load(Ordering::SeqCst) == 1
            })
            .await;
            let waiting = tokio::spawn({
                let backend = backend.clone();
                let ref_id = ref_id.clone();
                async move { finished(&backend, &ref_id).await }
            });
            gate(&id).open.send_replace(true);
            let started = tokio::time::Instant::now();
            let done = waiting.await.unwrap();
            assert_eq!(done.value.unwrap().value, json!(round));
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "woken by the event, not by the deadline (round {round})"
            );
        });
        drop(runtime);
    }
}

/// A worker shutting down (issue 15) stops taking tasks, hands the ones it only queued back to the stream at once,
/// lets a running task finish within the deadline, and at the deadline hands the rest back instead of cancelling
/// them: another worker runs them to completion, and the hand back does not count as a lost delivery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_shutting_down_hands_its_tasks_to_another() {
    let server = RedisServer::start().expect("redis-server");
    let replica = RedisTaskBackend::new(config(&server).mode(Mode::Workers)).unwrap();
    let leaving =
        RedisTaskBackend::worker(config(&server).max_workers(2).max_deliveries(1)).unwrap();
    leaving.start().await.unwrap();
    let (finishing, handed, queued) = (new_gate(), new_gate(), new_gate());
    let mut refs = Vec::new();
    for id in [&finishing, &handed, &queued] {
        let (sub, ref_id, _) = submission(json!({"gate": id, "value": id}));
        replica.submit(sub).await.unwrap();
        refs.push(ref_id);
    }
    until("two tasks running on the leaving worker", async || {
        gate(&finishing).runs.load(Ordering::SeqCst) == 1
            && gate(&handed).runs.load(Ordering::SeqCst) == 1
    })
    .await;
    // The third is held there too (delivered, queued behind its two slots).
    let mut raw = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let queue = format!("{}:queue", leaving.config().key_prefix);
    until(
        "three entries delivered to the leaving worker",
        async || {
            let pending: redis::streams::StreamPendingReply = redis::cmd("XPENDING")
                .arg(&queue)
                .arg("workers")
                .query_async(&mut raw)
                .await
                .unwrap();
            pending.count() == 3
        },
    )
    .await;
    let staying = RedisTaskBackend::worker(config(&server).max_deliveries(1)).unwrap();
    staying.start().await.unwrap();

    let shutdown = tokio::spawn({
        let leaving = leaving.clone();
        async move { leaving.shutdown(Duration::from_secs(10)).await }
    });
    until(
        "the queued task handed back and run by the other worker",
        async || gate(&queued).runs.load(Ordering::SeqCst) == 1,
    )
    .await;
    assert!(
        !shutdown.is_finished(),
        "a task still runs on the leaving worker"
    );
    // A running task finishes on the leaving worker within the deadline.
    gate(&finishing).open.send_replace(true);
    let done = finished(&replica, &refs[0]).await;
    assert_eq!(done.info.status, TaskStatus::Complete, "{:?}", done.info);

    // At the deadline the other running task is handed back, not cancelled.
    shutdown.await.unwrap().unwrap();
    until(
        "the handed-back task running on the other worker",
        async || gate(&handed).runs.load(Ordering::SeqCst) == 2,
    )
    .await;
    assert_eq!(
        gate(&handed).cancelled.load(Ordering::SeqCst),
        1,
        "stopped on the leaving worker"
    );
    let running = replica.get(&refs[1]).await.unwrap().unwrap().info;
    assert_eq!(running.status, TaskStatus::Processing, "{running:?}");
    gate(&handed).open.send_replace(true);
    gate(&queued).open.send_replace(true);
    for (ref_id, id) in refs.iter().zip([&finishing, &handed, &queued]) {
        let done = finished(&replica, ref_id).await;
        assert_eq!(done.info.status, TaskStatus::Complete, "{:?}", done.info);
        assert_eq!(done.value.unwrap().value, json!(id));
    }
    assert_eq!(gate(&finishing).runs.load(Ordering::SeqCst), 1);
    assert_eq!(gate(&queued).runs.load(Ordering::SeqCst), 1);
    assert!(
        replica.dead_letters(10).await.unwrap().is_empty(),
        "a hand back is not a lost delivery (max_deliveries = 1)"
    );
    staying.shutdown(Duration::from_secs(5)).await.unwrap();
}

/// A worker that shuts down while it waits for work: a task submitted meanwhile (its `P:queued` wake-up reaches
/// the leaving worker together with the stop) must not be taken by it, nor stay in its pending list (where only a
/// lease reaping, 30 s by default, would find it): the next worker runs it at once. (Before `take`, the leaving
/// worker's blocking read waited in Redis, which handed it the entry.) Deterministic: the stopping worker's
/// runtime is kept busy, so that it sees the stop and the wake-up at once.
#[test]
fn a_task_submitted_while_a_worker_shuts_down_is_not_stranded_with_it() {
    let server = RedisServer::start().expect("redis-server");
    // A takeover by lease would come long after the wait below.
    let long = config(&server).lease(Duration::from_secs(300));
    let leaving = RedisTaskBackend::worker(long.clone()).unwrap();
    let leaving_runtime = own_runtime({
        let leaving = leaving.clone();
        async move { leaving.start().await.unwrap() }
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let replica = RedisTaskBackend::new(long.clone().mode(Mode::Workers)).unwrap();
        // The leaving worker takes and runs a first task: it then waits for work.
        let first = new_gate();
        gate(&first).open.send_replace(true);
        let (sub, first_ref, _) = submission(json!({"gate": first, "value": "first"}));
        replica.submit(sub).await.unwrap();
        assert_eq!(
            finished(&replica, &first_ref).await.info.status,
            TaskStatus::Complete
        );
        // The leaving worker's only thread is taken: it sees its stop only once released.
        let (release, released) = std::sync::mpsc::channel::<()>();
        let (busy, is_busy) = tokio::sync::oneshot::channel();
        leaving_runtime.spawn(async move {
            let _ = busy.send(());
            let _ = released.recv_timeout(Duration::from_secs(60));
        });
        is_busy.await.unwrap();
        let shutdown = tokio::spawn({
            let leaving = leaving.clone();
            async move { leaving.shutdown(Duration::from_secs(5)).await }
        });
        let id = new_gate();
        gate(&id).open.send_replace(true);
        let (sub, ref_id, _) = submission(json!({"gate": id, "value": "not stranded"}));
        replica.submit(sub).await.unwrap();
        drop(release);
        shutdown.await.unwrap().unwrap();

        let next = RedisTaskBackend::worker(long).unwrap();
        next.start().await.unwrap();
        let done = replica
            .wait(
                &ref_id,
                Some(tokio::time::Instant::now() + Duration::from_secs(20)),
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            done.info.status,
            TaskStatus::Complete,
            "the next worker ran it, without waiting for a lease: {:?}",
            done.info
        );
        assert_eq!(done.value.unwrap().value, json!("not stranded"));
        assert_eq!(gate(&id).runs.load(Ordering::SeqCst), 1);
        next.shutdown(Duration::from_secs(5)).await.unwrap();
    });
    drop(leaving);
    leaving_runtime.shutdown_background();
}
