//! The Redis backend's shortcuts (issue 17 §3) answer what the long way answers. In `workers` mode:
//! - a `wait` on the replica that submitted the task skips its first read (it has followed the task since before it
//!   existed); a `wait` on another replica reads. Both must answer the same, whether the task is still running,
//!   finished before the wait began, or was cancelled elsewhere;
//! - a worker claims a task from the record its stream entry carries instead of reading it; the record it ends
//!   with keeps what the submission wrote (creation time, session, priority), as one read back would.
//!
//! Each test starts its own `redis-server`; the replicas and the worker are backends of one process.
#![cfg(feature = "redis")]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use futures::future::BoxFuture;
use refcache_backends::redis::{
    Mode, RedisConfig, RedisServer, RedisTaskBackend, monitored_command,
};
use refcache_core::registry::TaskRegistration;
use refcache_core::{
    CacheKey, CancelOutcome, JsonText, RefId, Submission, Submitted, TaskBackend, TaskContext,
    TaskError, TaskOptions, TaskSnapshot, TaskSpec, TaskStatus,
};
use serde_json::{Value, json};
use tokio::sync::watch;

const PATIENCE: Duration = Duration::from_secs(30);
const GATED: &str = "it.fast.gated";

struct Gate {
    open: watch::Sender<bool>,
    runs: AtomicU32,
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
            })
        })
        .clone()
}

/// Counts a run, then waits for its gate (answering `value`) or its cancellation.
fn gated(args: Value, ctx: TaskContext) -> BoxFuture<'static, Result<JsonText, TaskError>> {
    Box::pin(async move {
        let g = gate(args["gate"].as_str().unwrap_or_default());
        g.runs.fetch_add(1, Ordering::SeqCst);
        let mut open = g.open.subscribe();
        tokio::select! {
            _ = open.wait_for(|o| *o) => Ok(JsonText::from(&args["value"])),
            () = ctx.cancelled() => Err(TaskError::new("stopped on cancel")),
        }
    })
}

inventory::submit!(TaskRegistration::new(|| GATED, gated));

fn new_gate() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "f{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// A submission of the gated task; a job is given, as the facade gives one, and the worker runs it by name.
fn submission(args: Value, options: TaskOptions) -> (Submission, RefId) {
    let key = CacheKey::from_json(GATED, "it", &args).unwrap();
    let ref_id = RefId::generate("it");
    let spec = TaskSpec::new(ref_id.clone(), key, GATED, "it", args).with_options(options);
    let job = refcache_core::registry::find(GATED).map(TaskRegistration::job);
    (Submission::new(spec, job), ref_id)
}

fn options() -> TaskOptions {
    TaskOptions::default().ttl(Some(Duration::from_secs(600)))
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

async fn wait(b: &RedisTaskBackend, ref_id: &RefId, within: Duration) -> TaskSnapshot {
    b.wait(ref_id, Some(tokio::time::Instant::now() + within))
        .await
        .expect("wait")
        .expect("known")
}

/// What two answers must share: the record as JSON (every field) and the value.
fn same(a: &TaskSnapshot, b: &TaskSnapshot) {
    assert_eq!(
        serde_json::to_value(&a.info).unwrap(),
        serde_json::to_value(&b.info).unwrap(),
        "the same record"
    );
    assert_eq!(
        a.value.as_ref().map(|v| v.value.clone()),
        b.value.as_ref().map(|v| v.value.clone()),
        "the same value"
    );
}

struct Cluster {
    /// Submits (`workers` mode): its waits take the short way.
    a: RedisTaskBackend,
    /// Another replica: its waits read.
    b: RedisTaskBackend,
    _worker: RedisTaskBackend,
    _server: RedisServer,
}

async fn cluster() -> Cluster {
    let server = RedisServer::start().expect("redis-server must be installed");
    let config = || RedisConfig::from_url(&server.url()).unwrap();
    let a = RedisTaskBackend::new(config().mode(Mode::Workers)).unwrap();
    let b = RedisTaskBackend::new(config().mode(Mode::Workers)).unwrap();
    let worker = RedisTaskBackend::worker(config()).unwrap();
    for backend in [&a, &b, &worker] {
        backend.start().await.expect("Redis answers");
    }
    Cluster {
        a,
        b,
        _worker: worker,
        _server: server,
    }
}

async fn started(backend: &RedisTaskBackend, submission: Submission) {
    assert!(matches!(
        backend.submit(submission).await.unwrap(),
        Submitted::Started(_)
    ));
}

/// A task still running: the submitter's wait, which has read nothing, answers at its deadline with the record
/// another replica's wait reads; once the task ends, both answer its end and value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_on_the_submitting_replica_answers_as_one_elsewhere() {
    let c = cluster().await;
    let id = new_gate();
    let (sub, ref_id) = submission(json!({"gate": id, "value": 7}), options());
    started(&c.a, sub).await;
    until("the worker runs it", async || {
        gate(&id).runs.load(Ordering::SeqCst) == 1
    })
    .await;
    let here = wait(&c.a, &ref_id, Duration::from_millis(300)).await;
    let there = wait(&c.b, &ref_id, Duration::from_millis(300)).await;
    assert_eq!(here.info.status, TaskStatus::Processing);
    same(&here, &there);

    let id = new_gate();
    let (sub, ref_id) = submission(json!({"gate": id, "value": 8}), options());
    started(&c.a, sub).await;
    let (a, b, r) = (c.a.clone(), c.b.clone(), ref_id.clone());
    let here = tokio::spawn(async move { wait(&a, &r, PATIENCE).await });
    let r = ref_id.clone();
    let there = tokio::spawn(async move { wait(&b, &r, PATIENCE).await });
    until("the worker runs it", async || {
        gate(&id).runs.load(Ordering::SeqCst) == 1
    })
    .await;
    gate(&id).open.send_replace(true);
    let (here, there) = (here.await.unwrap(), there.await.unwrap());
    assert_eq!(here.info.status, TaskStatus::Complete);
    assert_eq!(here.value.as_ref().expect("a value").value, json!(8));
    same(&here, &there);
}

/// A task that finished, or was cancelled on another replica, before the submitter waited: the submitter's wait
/// answers the end, as a wait elsewhere does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_that_comes_after_the_end_answers_the_end() {
    let c = cluster().await;
    let id = new_gate();
    let (sub, ref_id) = submission(json!({"gate": id, "value": "done"}), options());
    started(&c.a, sub).await;
    gate(&id).open.send_replace(true);
    until("the task completes", async || {
        c.b.get(&ref_id)
            .await
            .unwrap()
            .is_some_and(|s| s.info.status == TaskStatus::Complete)
    })
    .await;
    let here = wait(&c.a, &ref_id, PATIENCE).await;
    let there = wait(&c.b, &ref_id, PATIENCE).await;
    assert_eq!(here.info.status, TaskStatus::Complete);
    same(&here, &there);

    let id = new_gate();
    let (sub, ref_id) = submission(json!({"gate": id, "value": "never"}), options());
    started(&c.a, sub).await;
    until("the worker runs it", async || {
        gate(&id).runs.load(Ordering::SeqCst) == 1
    })
    .await;
    assert_eq!(c.b.cancel(&ref_id).await.unwrap(), CancelOutcome::Cancelled);
    let here = wait(&c.a, &ref_id, PATIENCE).await;
    let there = wait(&c.b, &ref_id, PATIENCE).await;
    assert_eq!(here.info.status, TaskStatus::Cancelled);
    same(&here, &there);
}

/// The worker claims from the record its stream entry carries: what the submission wrote (creation time, session,
/// queue order) is in the record the task ends with, as after a read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_from_the_stream_entry_keeps_the_submitted_record() {
    let c = cluster().await;
    let id = new_gate();
    let (sub, ref_id) = submission(
        json!({"gate": id, "value": 1}),
        options().session_id(Some("s-1".to_owned())).priority(3),
    );
    started(&c.a, sub).await;
    let submitted = c.b.get(&ref_id).await.unwrap().expect("known").info;
    until("the worker runs it", async || {
        gate(&id).runs.load(Ordering::SeqCst) == 1
    })
    .await;
    let running = c.b.get(&ref_id).await.unwrap().expect("known").info;
    assert_eq!(running.status, TaskStatus::Processing);
    assert!(running.started_at.is_some());
    gate(&id).open.send_replace(true);
    let done = wait(&c.b, &ref_id, PATIENCE).await.info;
    assert_eq!(done.status, TaskStatus::Complete);
    for info in [&running, &done] {
        assert_eq!(info.ref_id, submitted.ref_id);
        assert_eq!(info.created_at, submitted.created_at);
        assert_eq!(info.session_id.as_deref(), Some("s-1"));
        assert_eq!(info.task_name, submitted.task_name);
        assert_eq!(info.namespace, submitted.namespace);
        assert_eq!(info.max_retries, submitted.max_retries);
        assert_eq!(
            serde_json::to_value(&info.policy).unwrap(),
            serde_json::to_value(&submitted.policy).unwrap()
        );
    }
    assert_eq!(done.started_at, running.started_at);
}

/// What two running (or finished) records share when only their ref ids, arguments and times differ: every other
/// field of the record as JSON.
fn shape(info: &refcache_core::TaskInfo) -> Value {
    let mut v = serde_json::to_value(info).unwrap();
    let o = v.as_object_mut().unwrap();
    for field in [
        "ref_id",
        "created_at",
        "updated_at",
        "started_at",
        "finished_at",
    ] {
        o.remove(field);
    }
    v
}

/// The raw task hash in Redis, without the fields that name the task itself (its record, spec, key, queue member).
async fn raw_fields(server: &RedisServer, prefix: &str, ref_id: &RefId) -> HashMap<String, String> {
    let mut conn = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let mut fields: HashMap<String, String> = redis::cmd("HGETALL")
        .arg(format!("{prefix}:task:{ref_id}"))
        .query_async(&mut conn)
        .await
        .unwrap();
    let qm = fields
        .get("qm")
        .cloned()
        .expect("the record has a queue member");
    let pending: Option<f64> = redis::cmd("ZSCORE")
        .arg(format!("{prefix}:pending"))
        .arg(qm)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(pending, None, "a running task is out of the queue");
    for name in ["info", "spec", "key", "qm"] {
        assert!(fields.remove(name).is_some(), "the record has `{name}`");
    }
    fields
}

/// `local` mode: a task submitted with a slot free is claimed by its submit script (no `claim` round trip); one
/// submitted while every slot is taken is queued and claimed when a slot frees up (the long way). Both run once, and
/// their records (while running and after the end), their fields in Redis and the counters are the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_claimed_by_its_submission_is_as_one_claimed_from_the_queue() {
    let server = RedisServer::start().expect("redis-server must be installed");
    let mut config = RedisConfig::from_url(&server.url()).unwrap();
    config.max_workers = 1;
    let prefix = config.key_prefix.clone();
    let a = RedisTaskBackend::new(config.clone()).unwrap();
    let b = RedisTaskBackend::new(config).unwrap();
    a.start().await.unwrap();
    b.start().await.unwrap();

    let (fast_gate, slow_gate) = (new_gate(), new_gate());
    let opts = || options().session_id(Some("s-2".to_owned())).priority(2);
    let (sub, fast) = submission(json!({"gate": fast_gate, "value": "a"}), opts());
    started(&a, sub).await;
    let fast_running = b.get(&fast).await.unwrap().expect("known").info;
    assert_eq!(
        fast_running.status,
        TaskStatus::Processing,
        "claimed at once"
    );
    assert!(fast_running.started_at.is_some());
    let (sub, slow) = submission(json!({"gate": slow_gate, "value": "a"}), opts());
    started(&a, sub).await;
    let queued = b.get(&slow).await.unwrap().expect("known").info;
    assert_eq!(queued.status, TaskStatus::Pending, "the one slot is taken");
    assert_eq!(queued.queue_position, Some(1));
    until("the first runs", async || {
        gate(&fast_gate).runs.load(Ordering::SeqCst) == 1
    })
    .await;
    let fast_fields = raw_fields(&server, &prefix, &fast).await;

    gate(&fast_gate).open.send_replace(true);
    until("the second runs", async || {
        gate(&slow_gate).runs.load(Ordering::SeqCst) == 1
    })
    .await;
    let slow_running = b.get(&slow).await.unwrap().expect("known").info;
    assert_eq!(slow_running.status, TaskStatus::Processing);
    assert_eq!(slow_running.created_at, queued.created_at);
    assert!(slow_running.started_at.is_some());
    assert_eq!(shape(&fast_running), shape(&slow_running));
    assert_eq!(fast_fields, raw_fields(&server, &prefix, &slow).await);

    gate(&slow_gate).open.send_replace(true);
    let fast_done = wait(&b, &fast, PATIENCE).await;
    let slow_done = wait(&b, &slow, PATIENCE).await;
    for done in [&fast_done, &slow_done] {
        assert_eq!(done.info.status, TaskStatus::Complete);
        assert_eq!(done.value.as_ref().expect("a value").value, json!("a"));
    }
    assert_eq!(shape(&fast_done.info), shape(&slow_done.info));
    assert_eq!(fast_done.info.started_at, fast_running.started_at);
    assert_eq!(slow_done.info.started_at, slow_running.started_at);
    assert_eq!(gate(&fast_gate).runs.load(Ordering::SeqCst), 1);
    assert_eq!(gate(&slow_gate).runs.load(Ordering::SeqCst), 1);
    let stats = b.stats().await.unwrap();
    assert_eq!(stats.executions, 2, "each claim counts once");
}

/// `workers` mode: a task taken with a slot free is claimed by the `take` script that reads its stream entry (no
/// `claim` round trip; the script writes `processing` and the start time into the record in Redis); one taken
/// while the worker's one slot is busy waits there, pending, and is claimed the long way (the `claim` script, from
/// a record built here) when the slot frees up. Both run once, and their records (while running and after the
/// end), their fields in Redis and the counters are the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_claimed_by_its_take_is_as_one_claimed_the_long_way() {
    let server = RedisServer::start().expect("redis-server must be installed");
    let mut config = RedisConfig::from_url(&server.url()).unwrap();
    config.max_workers = 1;
    config.prefetch = 4;
    let prefix = config.key_prefix.clone();
    let replica = RedisTaskBackend::new(config.clone().mode(Mode::Workers)).unwrap();
    let worker = RedisTaskBackend::worker(config).unwrap();
    replica.start().await.unwrap();
    worker.start().await.unwrap();
    // A task's own fields: its stream entry and its end's token differ from task to task.
    let fields = async |ref_id: &RefId| {
        let mut f = raw_fields(&server, &prefix, ref_id).await;
        assert!(
            f.remove("msg").is_some(),
            "the record names its stream entry"
        );
        assert!(f.remove("tok").is_some(), "the record has its end's token");
        f
    };

    let (fast_gate, slow_gate) = (new_gate(), new_gate());
    let opts = || options().session_id(Some("s-3".to_owned())).priority(2);
    let (sub, fast) = submission(json!({"gate": fast_gate, "value": "w"}), opts());
    started(&replica, sub).await;
    until("the first runs", async || {
        gate(&fast_gate).runs.load(Ordering::SeqCst) == 1
    })
    .await;
    let fast_running = replica.get(&fast).await.unwrap().expect("known").info;
    assert_eq!(fast_running.status, TaskStatus::Processing);
    assert!(fast_running.started_at.is_some(), "{fast_running:?}");
    let fast_fields = fields(&fast).await;
    let (sub, slow) = submission(json!({"gate": slow_gate, "value": "w"}), opts());
    started(&replica, sub).await;
    let mut raw = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    until("the worker holds the second too", async || {
        let pending: (u64, Option<String>, Option<String>, redis::Value) = redis::cmd("XPENDING")
            .arg(format!("{prefix}:queue"))
            .arg("workers")
            .query_async(&mut raw)
            .await
            .unwrap();
        pending.0 == 2
    })
    .await;
    let queued = replica.get(&slow).await.unwrap().expect("known").info;
    assert_eq!(queued.status, TaskStatus::Pending, "the one slot is taken");

    gate(&fast_gate).open.send_replace(true);
    until("the second runs", async || {
        gate(&slow_gate).runs.load(Ordering::SeqCst) == 1
    })
    .await;
    let slow_running = replica.get(&slow).await.unwrap().expect("known").info;
    assert_eq!(slow_running.status, TaskStatus::Processing);
    assert_eq!(slow_running.created_at, queued.created_at);
    assert!(slow_running.started_at.is_some());
    assert_eq!(shape(&fast_running), shape(&slow_running));
    assert_eq!(fast_fields, fields(&slow).await);

    gate(&slow_gate).open.send_replace(true);
    let fast_done = wait(&replica, &fast, PATIENCE).await;
    let slow_done = wait(&replica, &slow, PATIENCE).await;
    for done in [&fast_done, &slow_done] {
        assert_eq!(done.info.status, TaskStatus::Complete);
        assert_eq!(done.value.as_ref().expect("a value").value, json!("w"));
    }
    assert_eq!(shape(&fast_done.info), shape(&slow_done.info));
    assert_eq!(fast_done.info.started_at, fast_running.started_at);
    assert_eq!(slow_done.info.started_at, slow_running.started_at);
    assert_eq!(gate(&fast_gate).runs.load(Ordering::SeqCst), 1);
    assert_eq!(gate(&slow_gate).runs.load(Ordering::SeqCst), 1);
    assert_eq!(
        replica.stats().await.unwrap().executions,
        2,
        "each claim counts once"
    );
    worker.shutdown(Duration::from_secs(5)).await.unwrap();
}

/// The scripts are sent by their SHA with the arguments written straight into the command (not `redis::Script`):
/// one that Redis no longer has (`SCRIPT FLUSH`, as after a restart) is loaded again, and the call answers as
/// before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_flushed_from_redis_is_loaded_again() {
    let server = RedisServer::start().expect("redis-server must be installed");
    let a = RedisTaskBackend::new(RedisConfig::from_url(&server.url()).unwrap()).unwrap();
    a.start().await.unwrap();
    let mut conn = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    for value in [1, 2] {
        let id = new_gate();
        gate(&id).open.send_replace(true);
        let (sub, ref_id) = submission(json!({"gate": id, "value": value}), options());
        started(&a, sub).await;
        let done = wait(&a, &ref_id, PATIENCE).await;
        assert_eq!(done.info.status, TaskStatus::Complete);
        let polled = a.get(&ref_id).await.unwrap().expect("known");
        assert_eq!(polled.value.expect("a value").value, json!(value));
        let _: () = redis::cmd("SCRIPT")
            .arg("FLUSH")
            .query_async(&mut conn)
            .await
            .unwrap();
    }
}

/// A submission that reserved the one slot and is dropped while its script is on the way (a cancelled request)
/// gives the slot back: the next task still starts. Redis is paused for 3 s (`CLIENT PAUSE`) so that the script
/// waits there while the caller goes away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submission_dropped_mid_round_trip_gives_its_slot_back() {
    let server = RedisServer::start().expect("redis-server must be installed");
    let mut config = RedisConfig::from_url(&server.url()).unwrap();
    config.max_workers = 1;
    let a = RedisTaskBackend::new(config).unwrap();
    a.start().await.unwrap();
    let mut admin = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();

    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(3_000)
        .arg("ALL")
        .query_async(&mut admin)
        .await
        .unwrap();
    let (sub, dropped) = submission(json!({"gate": new_gate(), "value": "a"}), options());
    let submitting = {
        let a = a.clone();
        tokio::spawn(async move { a.submit(sub).await })
    };
    // Wide: the submission reserves its slot and sends its script at its first poll.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!submitting.is_finished(), "Redis is paused");
    submitting.abort();
    assert!(submitting.await.unwrap_err().is_cancelled());
    // (Redis pauses `CLIENT UNPAUSE` too: the pause ends by itself.) The client may or may not have sent the
    // dropped script: either no record, or the task it claimed.
    if let Some(record) = a.get(&dropped).await.unwrap() {
        assert_eq!(record.info.status, TaskStatus::Processing);
    }

    let next_gate = new_gate();
    gate(&next_gate).open.send_replace(true);
    let (sub, next) = submission(json!({"gate": next_gate, "value": "b"}), options());
    started(&a, sub).await;
    let done = wait(&a, &next, PATIENCE).await;
    assert_eq!(
        done.info.status,
        TaskStatus::Complete,
        "the slot came back: {:?}",
        done.info
    );
    assert_eq!(gate(&next_gate).runs.load(Ordering::SeqCst), 1);
}

/// A TCP proxy in front of Redis that can hold back what the server sends, on every connection but event
/// subscriptions (which it records): a test can let a script run in Redis and keep its answer from the caller.
struct HoldingProxy {
    port: u16,
    hold: Arc<AtomicBool>,
    /// Also held: what the server sends on command connections that contains this text.
    hold_containing: Arc<Mutex<Option<Vec<u8>>>>,
    /// Everything the server sent on subscriber connections.
    events: Arc<Mutex<Vec<u8>>>,
}

impl HoldingProxy {
    fn start(upstream: u16) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let hold = Arc::new(AtomicBool::new(false));
        let hold_containing = Arc::new(Mutex::new(None::<Vec<u8>>));
        let events = Arc::new(Mutex::new(Vec::new()));
        let (hold_all, events_all) = (hold.clone(), events.clone());
        let containing_all = hold_containing.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let subscriber = Arc::new(AtomicBool::new(false));
                let (mut from_client, mut to_server) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                let subscribes = subscriber.clone();
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n @ 1..) = from_client.read(&mut buf) {
                        if buf[..n]
                            .windows(9)
                            .any(|w| w.eq_ignore_ascii_case(b"SUBSCRIBE"))
                        {
                            subscribes.store(true, Ordering::SeqCst);
                        }
                        if to_server.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = to_server.shutdown(std::net::Shutdown::Both);
                });
                let (mut from_server, mut to_client) = (server, client);
                let (hold, events) = (hold_all.clone(), events_all.clone());
                let containing = containing_all.clone();
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n @ 1..) = from_server.read(&mut buf) {
                        if subscriber.load(Ordering::SeqCst) {
                            lock(&events).extend_from_slice(&buf[..n]);
                        } else {
                            let held = |bytes: &[u8]| {
                                lock(&containing)
                                    .as_deref()
                                    .is_some_and(|t| bytes.windows(t.len()).any(|w| w == t))
                            };
                            while hold.load(Ordering::SeqCst) || held(&buf[..n]) {
                                std::thread::sleep(Duration::from_millis(1));
                            }
                        }
                        if to_client.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = to_client.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        Self {
            port,
            hold,
            hold_containing,
            events,
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn sent_event(&self, event: &str) -> bool {
        let events = lock(&self.events);
        events.windows(event.len()).any(|w| w == event.as_bytes())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Review finding (#17): in `local` mode a task claimed by its own submission can be cancelled from another
/// replica after the submit script ran and before the submitting process holds the task (the cancel's event
/// arrives first, when nothing here holds it yet). It must not run then: its slot is free again at once.
///
/// Deterministic: a proxy holds the submit script's answer until the cancel's event has reached the submitting
/// process. `max_workers = 1`: a second task runs only once the slot is free (were the first run, it would wait
/// for a gate that never opens).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_cancelled_before_its_submitter_holds_it_does_not_run() {
    let server = RedisServer::start().expect("redis-server must be installed");
    let proxy = HoldingProxy::start(server.port());
    let mut through_proxy = RedisConfig::from_url(&proxy.url()).unwrap();
    through_proxy.max_workers = 1;
    // The held answer must not time out.
    through_proxy.command_timeout = Duration::from_secs(60);
    let prefix = through_proxy.key_prefix.clone();
    let a = RedisTaskBackend::new(through_proxy).unwrap();
    let b = RedisTaskBackend::new(RedisConfig::from_url(&server.url()).unwrap()).unwrap();
    a.start().await.unwrap();
    let mut admin = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    until("the submitter follows the events", async || {
        let (_, subscribers): (String, u32) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(format!("{prefix}:events"))
            .query_async(&mut admin)
            .await
            .unwrap();
        subscribers >= 1
    })
    .await;

    // Its scripts loaded first: a `NOSCRIPT` answer held back would hold the submission before its script runs.
    let warm = new_gate();
    gate(&warm).open.send_replace(true);
    let (sub, warmed) = submission(json!({"gate": warm, "value": "w"}), options());
    started(&a, sub).await;
    assert_eq!(
        wait(&a, &warmed, PATIENCE).await.info.status,
        TaskStatus::Complete
    );
    // Its slot free again (the wait can answer before the runner lets go of it): the next submission claims.
    until("the warm-up task's slot is free", async || {
        a.stats().await.unwrap().running == 0
    })
    .await;

    let never = new_gate();
    let (sub, cancelled) = submission(json!({"gate": never, "value": "a"}), options());
    proxy.hold.store(true, Ordering::SeqCst);
    let submitting = {
        let a = a.clone();
        tokio::spawn(async move { a.submit(sub).await })
    };
    let task = format!("{prefix}:task:{cancelled}");
    until("the submit script claimed the task", async || {
        let status: Option<String> = redis::cmd("HGET")
            .arg(&task)
            .arg("status")
            .query_async(&mut admin)
            .await
            .unwrap();
        status.as_deref() == Some("processing")
    })
    .await;
    assert_eq!(
        b.cancel(&cancelled).await.unwrap(),
        CancelOutcome::Cancelled
    );
    let event = format!("{cancelled} cancelled");
    until("the cancel's event reached the submitter", async || {
        proxy.sent_event(&event)
    })
    .await;
    // Wide: the submitter's listener takes the event off its socket (nothing else runs on this runtime). Nothing
    // shows that it has, so this is a margin: 3 s, for a loaded 2-core machine (the task must not be held first).
    tokio::time::sleep(Duration::from_secs(3)).await;
    proxy.hold.store(false, Ordering::SeqCst);
    assert!(matches!(
        submitting.await.unwrap().unwrap(),
        Submitted::Started(_)
    ));

    let next_gate = new_gate();
    gate(&next_gate).open.send_replace(true);
    let (sub, next) = submission(json!({"gate": next_gate, "value": "b"}), options());
    started(&a, sub).await;
    let done = wait(&a, &next, PATIENCE).await;
    assert_eq!(
        done.info.status,
        TaskStatus::Complete,
        "the cancelled task gave its slot back: {:?}",
        done.info
    );
    assert_eq!(
        gate(&never).runs.load(Ordering::SeqCst),
        0,
        "the cancelled task did not run"
    );
    let record = b.get(&cancelled).await.unwrap().expect("known").info;
    assert_eq!(record.status, TaskStatus::Cancelled);
}

/// In `workers` mode a task claimed by a worker's `take` (the stream read and the claim in one script) can be
/// cancelled from a replica after the script ran and before the worker holds the task (the cancel's event arrives
/// while the take's answer is on its way, when nothing there holds it yet). It must not run then, and the worker's
/// slot is free again at once.
///
/// Deterministic: a proxy holds every answer to the worker's commands (not its subscription) that names the task,
/// from before its submission, so the take that claims it answers only after the cancel's event has reached the
/// worker (an idle take's empty answer passes).
/// `max_workers = 1`: a second task runs only once the slot is free (were the first run, it would wait for a gate
/// that never opens).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_cancelled_between_its_take_and_its_hold_does_not_run() {
    let server = RedisServer::start().expect("redis-server must be installed");
    let proxy = HoldingProxy::start(server.port());
    let prefix = "take-cancel";
    let mut through_proxy = RedisConfig::from_url(&proxy.url())
        .unwrap()
        .key_prefix(prefix)
        .lease(Duration::from_secs(300));
    through_proxy.max_workers = 1;
    through_proxy.prefetch = 0;
    // The held answers must not time out.
    through_proxy.command_timeout = Duration::from_secs(60);
    let worker = RedisTaskBackend::worker(through_proxy).unwrap();
    let replica = RedisTaskBackend::new(
        RedisConfig::from_url(&server.url())
            .unwrap()
            .key_prefix(prefix)
            .mode(Mode::Workers),
    )
    .unwrap();
    for backend in [&worker, &replica] {
        backend.start().await.unwrap();
    }
    let mut admin = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    // Its scripts loaded and its take woken once (a `NOSCRIPT` answer held back would hold the take before its
    // script runs).
    let warm = new_gate();
    gate(&warm).open.send_replace(true);
    let (sub, warmed) = submission(json!({"gate": warm, "value": "w"}), options());
    started(&replica, sub).await;
    assert_eq!(
        wait(&replica, &warmed, PATIENCE).await.info.status,
        TaskStatus::Complete
    );
    until("the warm-up task's slot is free", async || {
        worker.stats().await.unwrap().running == 0
    })
    .await;

    let never = new_gate();
    let (sub, cancelled) = submission(json!({"gate": never, "value": "a"}), options());
    *lock(&proxy.hold_containing) = Some(cancelled.as_str().as_bytes().to_vec());
    started(&replica, sub).await;
    let task = format!("{prefix}:task:{cancelled}");
    until("a take claimed the task", async || {
        let status: Option<String> = redis::cmd("HGET")
            .arg(&task)
            .arg("status")
            .query_async(&mut admin)
            .await
            .unwrap();
        status.as_deref() == Some("processing")
    })
    .await;
    assert_eq!(
        replica.cancel(&cancelled).await.unwrap(),
        CancelOutcome::Cancelled
    );
    let event = format!("{cancelled} cancelled");
    until("the cancel's event reached the worker", async || {
        proxy.sent_event(&event)
    })
    .await;
    // Wide: the worker's listener takes the event off its socket (nothing shows that it has, so this is a
    // margin: 3 s, for a loaded 2-core machine; the take's answer must not reach the worker first).
    tokio::time::sleep(Duration::from_secs(3)).await;
    *lock(&proxy.hold_containing) = None;

    let next_gate = new_gate();
    gate(&next_gate).open.send_replace(true);
    let (sub, next) = submission(json!({"gate": next_gate, "value": "b"}), options());
    started(&replica, sub).await;
    let done = wait(&replica, &next, PATIENCE).await;
    assert_eq!(
        done.info.status,
        TaskStatus::Complete,
        "the cancelled task gave its slot back: {:?}",
        done.info
    );
    assert_eq!(
        gate(&never).runs.load(Ordering::SeqCst),
        0,
        "the cancelled task did not run"
    );
    let record = replica.get(&cancelled).await.unwrap().expect("known").info;
    assert_eq!(record.status, TaskStatus::Cancelled);
}

/// A poll of a complete task takes the value from the near cache when it holds that ref's, reading only the
/// value's names from Redis' text (#17 §3): it answers what a poll with a cold near cache answers, on the
/// replica that ran the task, on another one (cold, then warm), in `local` mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poll_from_the_near_cache_answers_as_one_that_parses_the_value() {
    let server = RedisServer::start().expect("redis-server must be installed");
    let config = || RedisConfig::from_url(&server.url()).unwrap();
    let (a, b) = (
        RedisTaskBackend::new(config()).unwrap(),
        RedisTaskBackend::new(config()).unwrap(),
    );
    let id = new_gate();
    gate(&id).open.send_replace(true);
    let (sub, ref_id) = submission(
        json!({"gate": id, "value": {"nested": [1, "two", null]}}),
        options().session_id(Some("s-near".to_owned())),
    );
    started(&a, sub).await;
    let ran_here = wait(&a, &ref_id, PATIENCE).await;
    assert_eq!(ran_here.info.status, TaskStatus::Complete);
    let cold = b.get(&ref_id).await.unwrap().expect("known");
    let warm = b.get(&ref_id).await.unwrap().expect("known");
    let near = a.get(&ref_id).await.unwrap().expect("known");
    assert_eq!(
        cold.value.as_ref().expect("a value").value,
        json!({"nested": [1, "two", null]})
    );
    for other in [&warm, &near] {
        same(&cold, other);
        assert_eq!(
            serde_json::to_value(cold.value.as_deref().unwrap()).unwrap(),
            serde_json::to_value(other.value.as_deref().unwrap()).unwrap(),
            "the same stored value, every field"
        );
    }
}

/// Issue 17 §3's count, pinned: one task in `workers` mode, from its submission to the poll that reads its value,
/// costs the replica its submission and the poll (its waiter takes the end from the end's event: no read), and
/// the worker its `take` (woken by `P:queued`: the stream read and the claim in one script) and its end (the ack
/// in the same script): 4 round trips. (The waiter is waiting when the task ends; one that begins after the end
/// reads the record, one round trip more.) Counted with `MONITOR` (top-level commands only) over tasks one after
/// another; the lease is long, so that no upkeep falls inside the count. An idle worker also takes once a second
/// (and a wake-up that came in meanwhile may make one more): takes beyond one per task are only those.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_in_workers_mode_costs_four_round_trips_from_submit_to_poll() {
    use futures::StreamExt;
    const TASKS: usize = 5;
    let server = RedisServer::start().expect("redis-server must be installed");
    let config = || {
        RedisConfig::from_url(&server.url())
            .unwrap()
            .key_prefix("rt")
            .lease(Duration::from_secs(300))
    };
    let replica = RedisTaskBackend::new(config().mode(Mode::Workers)).unwrap();
    let worker = RedisTaskBackend::worker(config()).unwrap();
    for backend in [&replica, &worker] {
        backend.start().await.expect("Redis answers");
    }
    let one = async |n: usize| {
        let id = new_gate();
        let (sub, ref_id) = submission(json!({"gate": id, "value": n}), options());
        started(&replica, sub).await;
        // The wait polled once before the task can end: it has taken the follower its submission made (a wait
        // that comes after the end reads, as one on another replica does).
        let mut waiting = replica.wait(&ref_id, Some(tokio::time::Instant::now() + PATIENCE));
        assert!(futures::poll!(&mut waiting).is_pending());
        gate(&id).open.send_replace(true);
        let done = waiting.await.expect("wait").expect("known");
        assert_eq!(done.info.status, TaskStatus::Complete);
        assert_eq!(done.value.expect("its value").value, json!(n));
        let polled = replica.get(&ref_id).await.unwrap().expect("known");
        assert_eq!(polled.value.expect("its value").value, json!(n));
    };
    // Scripts loaded, the upkeep's first round done.
    one(0).await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let client = redis::Client::open(server.url()).unwrap();
    let monitor = client.get_async_monitor().await.expect("MONITOR");
    let mut lines = monitor.into_on_message::<String>();
    let began = std::time::Instant::now();
    for n in 1..=TASKS {
        one(n).await;
    }
    let elapsed = began.elapsed();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: String = redis::cmd("ECHO")
        .arg("rt-end")
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
    loop {
        let line = tokio::time::timeout(PATIENCE, lines.next())
            .await
            .expect("MONITOR lines")
            .expect("MONITOR open");
        if line.contains("\"rt-end\"") {
            break;
        }
        if let Some(command) = monitored_command(&line, "rt") {
            *counts.entry(command).or_default() += 1;
        }
    }
    let takes = counts.remove("EVALSHA(take)").unwrap_or(0);
    let idle = 2 * (elapsed.as_secs() as usize + 1);
    assert!(
        (TASKS..=TASKS + idle).contains(&takes),
        "{takes} takes for {TASKS} tasks in {elapsed:?}"
    );
    let expected: std::collections::BTreeMap<String, usize> = [
        ("EVALSHA(submit)", TASKS),
        ("EVALSHA(get)", TASKS),
        ("EVALSHA(transition)", TASKS),
    ]
    .into_iter()
    .map(|(c, n)| (c.to_owned(), n))
    .collect();
    assert_eq!(
        counts, expected,
        "round trips of {TASKS} tasks besides the stream reads"
    );
}
