//! A Redis that cannot be lied to (#15 §4): forged and malformed events on `<prefix>:events`, data under the prefix
//! that is not refcache's, and scripts that must not stop half-way. Each test starts its own `redis-server` and
//! writes to it as a hostile or careless neighbour would (another app on the same Redis can publish and write).
#![cfg(feature = "redis")]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use futures::future::BoxFuture;
use refcache_backends::redis::{RedisConfig, RedisServer, RedisTaskBackend};
use refcache_core::registry::TaskRegistration;
use refcache_core::{
    CacheKey, RefId, Submission, Submitted, TaskBackend, TaskContext, TaskError, TaskOptions,
    TaskSnapshot, TaskSpec, TaskStatus,
};
use serde_json::{Value, json};
use tokio::sync::watch;

const PATIENCE: Duration = Duration::from_secs(30);
const GATED: &str = "it.hostile.gated";

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
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "h{}-{}",
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

fn server() -> RedisServer {
    RedisServer::start()
        .expect("redis-server must be installed (Debian: apt-get install redis-server)")
}

fn config(server: &RedisServer) -> RedisConfig {
    RedisConfig::from_url(&server.url()).unwrap()
}

/// A raw connection, as another app on the same Redis has.
async fn raw(server: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

async fn publish(conn: &mut redis::aio::MultiplexedConnection, channel: &str, payload: &str) {
    let _: i64 = redis::cmd("PUBLISH")
        .arg(channel)
        .arg(payload)
        .query_async(conn)
        .await
        .unwrap();
}

/// Starts a gated task on `a` and waits until it runs; answers its gate id, ref id and key.
async fn running(a: &RedisTaskBackend, value: Value) -> (String, RefId, CacheKey) {
    let id = new_gate();
    let (sub, ref_id, key) = submission(json!({"gate": id, "value": value}));
    assert!(matches!(
        a.submit(sub).await.unwrap(),
        Submitted::Started(_)
    ));
    until("the task runs", async || {
        gate(&id).runs.load(Ordering::SeqCst) == 1
    })
    .await;
    (id, ref_id, key)
}

/// A barrier on `a`'s event stream: a real cancel made by `b` of a task running on `a`, published after whatever
/// was published before this call, and seen by `a` when that task stops. Events are handled in order, so when it
/// returns, `a` has handled (and verified) every earlier event; the sleep is a wide margin for the reads those
/// spawned.
async fn barrier(a: &RedisTaskBackend, b: &RedisTaskBackend) {
    let (id, ref_id, _) = running(a, json!(null)).await;
    b.cancel(&ref_id).await.unwrap();
    until("the barrier task sees its cancel", async || {
        gate(&id).cancelled.load(Ordering::SeqCst) == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
}

/// `PUBLISH <prefix>:events "<ref> cancelled {}"` (and `drop <key>`, `complete not-json`, a well-formed record
/// claiming `complete`, and garbage) changes nothing: the running local-mode task keeps running and completes, a
/// waiter and a watcher do not believe the claim, and the near cache keeps a value a forged drop names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_events_change_nothing() {
    let server = server();
    let a = RedisTaskBackend::new(config(&server)).unwrap();
    let b = RedisTaskBackend::new(config(&server)).unwrap();
    let events = format!("{}:events", a.config().key_prefix);
    let mut conn = raw(&server).await;

    // A finished value in A's near cache, for the forged drop.
    let (done_gate, done_ref, done_key) = running(&a, json!("kept")).await;
    gate(&done_gate).open.send_replace(true);
    assert_eq!(
        finished(&a, &done_ref).await.info.status,
        TaskStatus::Complete
    );
    let near = a.near_cache().expect("the Redis backend has a near cache");
    until("the value is in A's near cache", async || {
        near.get(&done_key).await.is_some()
    })
    .await;

    let (id, ref_id, key) = running(&a, json!(42)).await;
    let mut watcher = a.watch(&ref_id).await.unwrap().expect("in flight");
    let waiter = {
        let a = a.clone();
        let ref_id = ref_id.clone();
        tokio::spawn(async move {
            a.wait(
                &ref_id,
                Some(tokio::time::Instant::now() + Duration::from_secs(3)),
            )
            .await
        })
    };
    let mut claim = a.get(&ref_id).await.unwrap().unwrap().info;
    claim.status = TaskStatus::Complete;
    let claim = serde_json::to_string(&claim).unwrap();
    for payload in [
        format!("{ref_id} cancelled {{}}"),
        format!("{ref_id} drop {}", key.to_hex()),
        format!("{ref_id} complete not-json"),
        format!("{ref_id} failed {claim}"),
        format!("{ref_id} complete {claim}"),
        format!("{done_ref} drop {}", done_key.to_hex()),
        format!("{ref_id}"),
        "garbage".to_owned(),
        String::new(),
    ] {
        publish(&mut conn, &events, &payload).await;
    }
    barrier(&a, &b).await;

    assert_eq!(
        gate(&id).cancelled.load(Ordering::SeqCst),
        0,
        "the task was not stopped"
    );
    let now = a.get(&ref_id).await.unwrap().expect("still there");
    assert_eq!(now.info.status, TaskStatus::Processing);
    assert_eq!(
        watcher.borrow_and_update().status,
        TaskStatus::Processing,
        "a watcher is shown the record, not the event's claim"
    );
    let waited = waiter.await.unwrap().unwrap().expect("known");
    assert_eq!(
        waited.info.status,
        TaskStatus::Processing,
        "a waiter does not return on a forged `complete`"
    );
    assert!(
        near.get(&done_key).await.is_some(),
        "a forged drop does not evict a value that is still there"
    );

    gate(&id).open.send_replace(true);
    let done = finished(&b, &ref_id).await;
    assert_eq!(done.info.status, TaskStatus::Complete);
    assert_eq!(done.value.expect("value").value, json!(42));
    assert_eq!(gate(&id).runs.load(Ordering::SeqCst), 1, "it ran once");

    // A real deletion still stops and evicts, event and all.
    let (id, ref_id, _) = running(&a, json!(1)).await;
    assert!(b.delete(&ref_id).await.unwrap());
    until("a real delete stops the task", async || {
        gate(&id).cancelled.load(Ordering::SeqCst) == 1
    })
    .await;
    assert!(b.delete(&done_ref).await.unwrap());
    until("a real delete evicts the near copy", async || {
        near.get(&done_key).await.is_none()
    })
    .await;
}

/// Two apps on one Redis, each under its own `key_prefix`: events forged on one app's channel about the other's
/// tasks change nothing for either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apps_sharing_a_redis_by_prefix_cannot_stop_each_others_tasks() {
    let server = server();
    let mine = RedisTaskBackend::new(config(&server).key_prefix("mine")).unwrap();
    let mine_b = RedisTaskBackend::new(config(&server).key_prefix("mine")).unwrap();
    let theirs = RedisTaskBackend::new(config(&server).key_prefix("theirs")).unwrap();
    let mut conn = raw(&server).await;

    let (id, ref_id, key) = running(&mine, json!("mine")).await;
    // Another app (or anyone) knows the ref id, and publishes on both channels.
    for channel in ["mine:events", "theirs:events"] {
        publish(&mut conn, channel, &format!("{ref_id} cancelled {{}}")).await;
        publish(
            &mut conn,
            channel,
            &format!("{ref_id} drop {}", key.to_hex()),
        )
        .await;
    }
    assert_eq!(
        theirs.get(&ref_id).await.unwrap().map(|s| s.info.status),
        None
    );
    barrier(&mine, &mine_b).await;
    assert_eq!(gate(&id).cancelled.load(Ordering::SeqCst), 0);
    gate(&id).open.send_replace(true);
    assert_eq!(
        finished(&mine, &ref_id).await.info.status,
        TaskStatus::Complete
    );
}
