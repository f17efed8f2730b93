//! A Redis that cannot be lied to (#15 §4): forged and malformed events on `<prefix>:events`, data under the prefix
//! that is not refcache's, and scripts that must not stop half-way. Each test starts its own `redis-server` and
//! writes to it as a hostile or careless neighbour would (another app on the same Redis can publish and write).
#![cfg(feature = "redis")]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use futures::future::BoxFuture;
use refcache_backends::redis::{Mode, RedisConfig, RedisServer, RedisTaskBackend};
use refcache_core::registry::TaskRegistration;
use refcache_core::{
    BackendError, CacheKey, JsonText, RefId, StoredValue, Submission, Submitted, TaskBackend,
    TaskContext, TaskError, TaskFilter, TaskOptions, TaskSnapshot, TaskSpec, TaskStatus,
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
fn gated(args: Value, ctx: TaskContext) -> BoxFuture<'static, Result<JsonText, TaskError>> {
    Box::pin(async move {
        let g = gate(args["gate"].as_str().unwrap_or_default());
        g.runs.fetch_add(1, Ordering::SeqCst);
        let mut open = g.open.subscribe();
        tokio::select! {
            _ = open.wait_for(|o| *o) => Ok(JsonText::from(&args["value"])),
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

/// In `workers` mode the submitter's waiter takes a task's end from its event, which carries the record and the
/// value the terminal script wrote, and the token the submission put in the record. A forged end event, well
/// formed but with another token (guessed, empty, or none), is a hint like any other: the waiter reads the record,
/// goes on waiting, and answers the real end and value once the task ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_end_event_without_the_tasks_token_is_not_believed() {
    let server = server();
    let replica = RedisTaskBackend::new(config(&server).mode(Mode::Workers)).unwrap();
    let worker = RedisTaskBackend::worker(config(&server)).unwrap();
    worker.start().await.unwrap();
    let events = format!("{}:events", replica.config().key_prefix);
    let mut conn = raw(&server).await;
    let id = new_gate();
    let (sub, ref_id, key) = submission(json!({"gate": id, "value": 42}));
    assert!(matches!(
        replica.submit(sub).await.unwrap(),
        Submitted::Started(_)
    ));
    until("the worker runs it", async || {
        gate(&id).runs.load(Ordering::SeqCst) == 1
    })
    .await;
    let waiter = {
        let replica = replica.clone();
        let ref_id = ref_id.clone();
        tokio::spawn(
            async move { finished_or_not(&replica, &ref_id, Duration::from_secs(3)).await },
        )
    };
    // The waiter follows from before the task existed; give it a moment to be waiting.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut record = replica.get(&ref_id).await.unwrap().unwrap().info;
    record.status = TaskStatus::Complete;
    let record = serde_json::to_string(&record).unwrap();
    let value = StoredValue::new(
        ref_id.clone(),
        key,
        GATED,
        "it",
        JsonText::from(&json!("forged")),
        Duration::from_secs(600),
    );
    let value = serde_json::to_string(&value).unwrap();
    let body = format!("{} {record}{value}", record.len());
    for token in ["0123456789abcdef0123456789abcdef", "", "-"] {
        publish(
            &mut conn,
            &events,
            &format!("{ref_id} complete {token} {body}"),
        )
        .await;
    }
    publish(&mut conn, &events, &format!("{ref_id} complete {body}")).await;
    let waited = waiter.await.unwrap();
    assert_eq!(
        waited.info.status,
        TaskStatus::Processing,
        "a waiter does not take a forged end: {:?}",
        waited.value
    );

    // The real end is answered (by a read: the first wait's end took the token's channel with it).
    let waiter = {
        let replica = replica.clone();
        let ref_id = ref_id.clone();
        tokio::spawn(async move { finished_or_not(&replica, &ref_id, PATIENCE).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    gate(&id).open.send_replace(true);
    let done = waiter.await.unwrap();
    assert_eq!(done.info.status, TaskStatus::Complete);
    assert_eq!(done.value.expect("its value").value, json!(42));
    assert_eq!(gate(&id).runs.load(Ordering::SeqCst), 1);
    worker.shutdown(Duration::from_secs(5)).await.unwrap();
}

/// Review finding (2026-12-07): whoever can publish on `P:events` can read it too, tokens included. A genuine end
/// event replayed, as heard, or with a value for another cache key under the same ref and token, while a follower
/// of that task still lives here (an output follower): neither is taken (the token was used up by the first), and no value
/// from an event goes into the near cache, for the task's key or another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_end_event_is_not_taken_again_nor_cached_under_another_key() {
    use futures::StreamExt;
    let server = server();
    let replica = RedisTaskBackend::new(config(&server).mode(Mode::Workers)).unwrap();
    let worker = RedisTaskBackend::worker(config(&server)).unwrap();
    worker.start().await.unwrap();
    replica.start().await.unwrap();
    let events = format!("{}:events", replica.config().key_prefix);
    let mut neighbour = redis::Client::open(server.url())
        .unwrap()
        .get_async_pubsub()
        .await
        .unwrap();
    neighbour.subscribe(&events).await.unwrap();
    let mut heard = neighbour.into_on_message();
    let mut conn = raw(&server).await;
    // One task to its end, taken from its event by a waiter that waits before the end.
    let run = async |value: i64| {
        let id = new_gate();
        let (sub, ref_id, _) = submission(json!({"gate": id, "value": value}));
        assert!(matches!(
            replica.submit(sub).await.unwrap(),
            Submitted::Started(_)
        ));
        let mut waiting = replica.wait(&ref_id, Some(tokio::time::Instant::now() + PATIENCE));
        assert!(futures::poll!(&mut waiting).is_pending());
        gate(&id).open.send_replace(true);
        let done = waiting.await.unwrap().expect("known");
        assert_eq!(done.info.status, TaskStatus::Complete);
        assert_eq!(done.value.expect("its value").value, json!(value));
        ref_id
    };
    let id = new_gate();
    let (sub, ref_id, _) = submission(json!({"gate": id, "value": 1}));
    assert!(matches!(
        replica.submit(sub).await.unwrap(),
        Submitted::Started(_)
    ));
    // A follower that outlives the wait: an output follower, held and not polled.
    let _output = replica
        .follow_output(&ref_id)
        .await
        .unwrap()
        .expect("in flight");
    let mut waiting = replica.wait(&ref_id, Some(tokio::time::Instant::now() + PATIENCE));
    assert!(futures::poll!(&mut waiting).is_pending());
    gate(&id).open.send_replace(true);
    assert_eq!(
        waiting
            .await
            .unwrap()
            .expect("known")
            .value
            .expect("its value")
            .value,
        json!(1)
    );
    let end = format!("{ref_id} complete ");
    let genuine = loop {
        let msg = tokio::time::timeout(PATIENCE, heard.next())
            .await
            .expect("the end's event")
            .expect("subscribed");
        let payload: String = msg.get_payload().unwrap();
        if payload.starts_with(&end) {
            break payload;
        }
    };
    let rest = &genuine[end.len()..];
    let (token, rest) = rest.split_once(' ').expect("a token");
    let (len, body) = rest.split_once(' ').expect("a record length");
    let record = &body[..len.parse::<usize>().unwrap()];
    let other = CacheKey::from_json(GATED, "it", &json!({"another": "call"})).unwrap();
    let forged = StoredValue::new(
        ref_id.clone(),
        other,
        GATED,
        "it",
        JsonText::from(&json!("forged")),
        Duration::from_secs(600),
    );
    let forged = serde_json::to_string(&forged).unwrap();
    publish(
        &mut conn,
        &events,
        &format!(
            "{ref_id} complete {token} {} {record}{forged}",
            record.len()
        ),
    )
    .await;
    publish(&mut conn, &events, &genuine).await;
    // A barrier: this end's event comes after those, and the replica handles events in order.
    run(2).await;
    let near = replica.near_cache().expect("a near cache");
    assert!(
        near.get(&other).await.is_none(),
        "a value from an event is in the near cache under another key"
    );
    assert!(replica.lookup(&other).await.unwrap().is_none());
    let again = finished_or_not(&replica, &ref_id, PATIENCE).await;
    assert_eq!(again.value.expect("its value").value, json!(1));
    worker.shutdown(Duration::from_secs(5)).await.unwrap();
}

/// `end_in_event = false` (`workers` mode): no token goes into the record, so no end event carries the record or
/// the value; the submitter's waiter reads the end, and answers it as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_end_in_event_off_no_end_event_carries_the_value() {
    let server = server();
    let url = format!("{}?mode=workers&end_in_event=false", server.url());
    let replica = RedisTaskBackend::new(RedisConfig::from_url(&url).unwrap()).unwrap();
    assert!(!replica.config().end_in_event);
    let worker = RedisTaskBackend::worker(config(&server)).unwrap();
    worker.start().await.unwrap();
    let mut conn = raw(&server).await;
    let id = new_gate();
    let (sub, ref_id, _) = submission(json!({"gate": id, "value": 5}));
    assert!(matches!(
        replica.submit(sub).await.unwrap(),
        Submitted::Started(_)
    ));
    let tok: Option<String> = redis::cmd("HGET")
        .arg(format!("{}:task:{ref_id}", replica.config().key_prefix))
        .arg("tok")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(tok, None, "no token in the record");
    gate(&id).open.send_replace(true);
    let done = finished_or_not(&replica, &ref_id, PATIENCE).await;
    assert_eq!(done.info.status, TaskStatus::Complete);
    assert_eq!(done.value.expect("its value").value, json!(5));
    assert!(RedisConfig::from_url(&format!("{}?end_in_event=maybe", server.url())).is_err());
    worker.shutdown(Duration::from_secs(5)).await.unwrap();
}

/// A wait until `within` has passed: the task's record then (or its end).
async fn finished_or_not(b: &RedisTaskBackend, ref_id: &RefId, within: Duration) -> TaskSnapshot {
    b.wait(ref_id, Some(tokio::time::Instant::now() + within))
        .await
        .expect("wait")
        .expect("known")
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

async fn cmd(conn: &mut redis::aio::MultiplexedConnection, args: &[&str]) {
    let mut c = redis::cmd(args[0]);
    for a in &args[1..] {
        c.arg(*a);
    }
    let _: redis::Value = c.query_async(conn).await.unwrap();
}

fn foreign(err: &BackendError) -> bool {
    matches!(err, BackendError::ForeignData(_)) && err.to_string().contains("not refcache's")
}

/// A record key of the wrong type, and a record hash without its `info` field, cost themselves alone: `list`
/// answers every other record, and reading either answers `ForeignData` (not "unavailable", and no hint that the
/// port is not Redis).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_record_costs_itself_alone() {
    let server = server();
    let a = RedisTaskBackend::new(config(&server)).unwrap();
    let p = a.config().key_prefix.clone();
    let mut conn = raw(&server).await;
    let (id, good, _) = running(&a, json!("good")).await;
    gate(&id).open.send_replace(true);
    finished(&a, &good).await;

    let string_ref = RefId::generate("it");
    let bare_ref = RefId::generate("it");
    let (t1, t2) = (
        format!("{p}:task:{string_ref}"),
        format!("{p}:task:{bare_ref}"),
    );
    cmd(&mut conn, &["SET", &t1, "someone else's"]).await;
    cmd(&mut conn, &["HSET", &t2, "status", "complete"]).await;
    for r in [&string_ref, &bare_ref] {
        cmd(
            &mut conn,
            &["ZADD", &format!("{p}:index"), "9999999999999", r.as_str()],
        )
        .await;
    }

    let page = a
        .list(TaskFilter::default())
        .await
        .expect("list works for everyone");
    let listed: Vec<_> = page.tasks.iter().map(|i| i.ref_id.clone()).collect();
    assert_eq!(listed, vec![good.clone()], "the good record alone");
    for r in [&string_ref, &bare_ref] {
        let err = a.get(r).await.expect_err("not a refcache record");
        assert!(foreign(&err), "{err}");
        assert!(!err.to_string().contains("Redis protocol"), "{err}");
    }
    assert_eq!(
        a.get(&good).await.unwrap().unwrap().info.status,
        TaskStatus::Complete
    );
}

/// With `<prefix>:stats` (or the queue's sequence) of the wrong type, a submission is refused with `ForeignData`
/// before the script writes anything: no record, no in-flight entry, no queue member is left behind, and once
/// the foreign key is gone the same call runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_key_leaves_no_half_written_submission() {
    let server = server();
    foreign_keys_leave_no_half_written_submission(&server, Mode::Local).await;
}

/// The same in `workers` mode (review finding, #17: a foreign `<prefix>:stats` no longer refused the submission
/// there, and every claim of the task then failed: it waited for good).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_key_leaves_no_half_written_submission_in_workers_mode() {
    let server = server();
    let worker = RedisTaskBackend::worker(config(&server)).unwrap();
    worker.start().await.unwrap();
    foreign_keys_leave_no_half_written_submission(&server, Mode::Workers).await;
    worker.shutdown(Duration::from_secs(5)).await.unwrap();
}

async fn foreign_keys_leave_no_half_written_submission(server: &RedisServer, mode: Mode) {
    let a = RedisTaskBackend::new(config(server).mode(mode)).unwrap();
    let p = a.config().key_prefix.clone();
    let mut conn = raw(server).await;
    for (key, kind) in [("stats", "string"), ("seq", "list"), ("pending", "hash")] {
        let foreign_key = format!("{p}:{key}");
        match kind {
            "string" => cmd(&mut conn, &["SET", &foreign_key, "x"]).await,
            "list" => cmd(&mut conn, &["RPUSH", &foreign_key, "x"]).await,
            _ => cmd(&mut conn, &["HSET", &foreign_key, "x", "y"]).await,
        }
        let id = new_gate();
        let (sub, ref_id, key_of_call) = submission(json!({"gate": id, "value": 3}));
        let err = a.submit(sub).await.expect_err("refused");
        assert!(foreign(&err), "{err}");
        assert!(
            err.to_string().contains(&foreign_key),
            "names the key: {err}"
        );
        let mut keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{p}:*"))
            .query_async(&mut conn)
            .await
            .unwrap();
        // The process's own gauges (`P:workers`) are written by its maintenance loop, not by a call; the stream
        // (`workers` mode) by the worker's consumer group, and it holds no entry.
        keys.retain(|k| *k != format!("{p}:workers") && *k != format!("{p}:queue"));
        keys.sort();
        assert_eq!(keys, vec![foreign_key.clone()], "nothing half-written");
        let entries: u64 = redis::cmd("XLEN")
            .arg(format!("{p}:queue"))
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(entries, 0, "no stream entry");
        assert_eq!(a.get(&ref_id).await.unwrap().map(|s| s.info.status), None);
        cmd(&mut conn, &["DEL", &foreign_key]).await;
        let (sub, ref_id, _) = submission(json!({"gate": id, "value": 3}));
        assert!(matches!(
            a.submit(sub).await.unwrap(),
            Submitted::Started(_)
        ));
        gate(&id).open.send_replace(true);
        assert_eq!(
            finished(&a, &ref_id).await.info.status,
            TaskStatus::Complete
        );
        assert!(a.lookup(&key_of_call).await.unwrap().is_some());
        cmd(&mut conn, &["FLUSHALL"]).await;
    }
}

/// A task whose end cannot be recorded because `<prefix>:stats` became foreign while it ran leaves its record as
/// it was (processing, no value) rather than half-terminal, and is refused with `ForeignData` on a cancel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_key_leaves_no_half_written_transition() {
    let server = server();
    let a = RedisTaskBackend::new(config(&server)).unwrap();
    let p = a.config().key_prefix.clone();
    let mut conn = raw(&server).await;
    let (id, ref_id, key) = running(&a, json!(5)).await;
    cmd(&mut conn, &["SET", &format!("{p}:stats"), "x"]).await;
    let err = a.cancel(&ref_id).await.expect_err("refused");
    assert!(foreign(&err), "{err}");
    let now = a.get(&ref_id).await.unwrap().expect("there");
    assert_eq!(now.info.status, TaskStatus::Processing, "unchanged");
    assert_eq!(gate(&id).cancelled.load(Ordering::SeqCst), 0);
    cmd(&mut conn, &["DEL", &format!("{p}:stats")]).await;
    gate(&id).open.send_replace(true);
    assert_eq!(
        finished(&a, &ref_id).await.info.status,
        TaskStatus::Complete
    );
    assert!(a.lookup(&key).await.unwrap().is_some());
}

const BIG: &str = "it.hostile.big";

/// A list of `n` numbers.
fn big(args: Value, _ctx: TaskContext) -> BoxFuture<'static, Result<JsonText, TaskError>> {
    Box::pin(async move {
        let n = args["n"].as_u64().unwrap_or(0);
        Ok(JsonText::from(&Value::Array(
            (0..n).map(Value::from).collect(),
        )))
    })
}

inventory::submit!(TaskRegistration::new(|| BIG, big));

/// The bytes Redis has sent its clients so far.
async fn sent(conn: &mut redis::aio::MultiplexedConnection) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("stats")
        .query_async(conn)
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("total_net_output_bytes:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("INFO stats has total_net_output_bytes")
}

/// No timing oracle (#15 §4): the front door decides access on the record before it reads a value, so a poll (and
/// `task_info`) of another owner's 200k-item value makes Redis send about what a poll of an unknown id does; the
/// owner's own poll sends the value. Compared in bytes Redis sent (its `total_net_output_bytes`), not in time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_poll_reads_no_more_than_an_unknown_one() {
    let server = server();
    let backend = Arc::new(RedisTaskBackend::new(config(&server)).unwrap());
    let cache = refcache_core::RefCache::builder()
        .name("it")
        .backend(backend.clone())
        .unwrap();
    let mut conn = raw(&server).await;
    let args = json!({"n": 200_000});
    let key = CacheKey::from_json(BIG, "user:alice", &args).unwrap();
    let ref_id = RefId::generate("it");
    let spec = TaskSpec::new(ref_id.clone(), key, BIG, "user:alice", args)
        .with_options(TaskOptions::default().ttl(Some(Duration::from_secs(600))));
    backend.submit(Submission::new(spec, None)).await.unwrap();
    assert_eq!(
        finished(backend.as_ref(), &ref_id).await.info.status,
        TaskStatus::Complete
    );
    let unknown = RefId::generate("it").to_string();
    let foreign = ref_id.to_string();

    let bob = refcache_core::Actor::user("bob");
    let alice = refcache_core::Actor::user("alice");
    let mut cost = async |who: &refcache_core::Actor, id: &str| {
        let before = sent(&mut conn).await;
        for _ in 0..5 {
            let polled = who.clone().scope(cache.get_cached_result(id)).await;
            let info = who.clone().scope(cache.task_info(id)).await;
            if who == &bob {
                assert!(
                    matches!(polled, Err(refcache_core::RefCacheError::NotFound)),
                    "{polled:?}"
                );
                assert!(
                    matches!(info, Err(refcache_core::RefCacheError::NotFound)),
                    "{info:?}"
                );
            } else {
                polled.expect("the owner reads it");
            }
        }
        sent(&mut conn).await - before
    };
    let unknown_cost = cost(&bob, &unknown).await;
    let foreign_cost = cost(&bob, &foreign).await;
    let own_cost = cost(&alice, &foreign).await;
    eprintln!(
        "bytes sent by Redis for 5 polls: unknown {unknown_cost}, foreign {foreign_cost}, own {own_cost}"
    );
    assert!(
        own_cost > 5 * 1_000_000,
        "the measure sees the value: the owner's polls sent {own_cost} bytes"
    );
    assert!(
        foreign_cost < 2 * unknown_cost + 16_384,
        "a foreign poll sent {foreign_cost} bytes, an unknown one {unknown_cost}"
    );
}

/// A task that a worker's `take` claims (the stream read and the claim in one script, #17 §3) but whose spec does
/// not read as refcache's (a careless neighbour rewrote it) cannot run: it fails at once with `UNREADABLE_TASK`,
/// permanent, and its stream entry is acknowledged and deleted in the same step. Neither left `processing` under
/// the worker (the take claimed it) nor left for a lease to run out (the lease here is 300 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_take_claimed_task_whose_spec_does_not_read_fails_unreadable_with_its_entry_acked() {
    let server = server();
    let prefix = "unreadable";
    let cfg = || {
        config(&server)
            .key_prefix(prefix)
            .lease(Duration::from_secs(300))
    };
    let replica = RedisTaskBackend::new(cfg().mode(Mode::Workers)).unwrap();
    replica.start().await.unwrap();
    let id = new_gate();
    let (sub, ref_id, _) = submission(json!({"gate": id, "value": 1}));
    assert!(matches!(
        replica.submit(sub).await.unwrap(),
        Submitted::Started(_)
    ));
    // Pending on the stream, no worker yet: its spec rewritten, and its record naming another stream entry (as a
    // handed-back task's does), so that the take reads the spec from the record, not from the entry (the record
    // itself stays as the submission wrote it, so the take's claim goes ahead).
    let mut conn = raw(&server).await;
    let task = format!("{prefix}:task:{ref_id}");
    cmd(
        &mut conn,
        &["HSET", &task, "spec", "{\"not\": \"a spec\"", "msg", "0-1"],
    )
    .await;

    // The worker's first take claims it (it holds nothing).
    let worker = RedisTaskBackend::worker(cfg()).unwrap();
    worker.start().await.unwrap();
    let done = finished(&replica, &ref_id).await;
    assert_eq!(done.info.status, TaskStatus::Failed, "{:?}", done.info);
    let error = done.info.error.expect("an error");
    assert_eq!(error.code.as_deref(), Some("UNREADABLE_TASK"), "{error:?}");
    assert!(!error.retryable, "a spec that does not read is permanent");
    assert_eq!(gate(&id).runs.load(Ordering::SeqCst), 0, "it never ran");
    // As Redis has it too, and the stream entry is gone: acknowledged and deleted, nothing pending.
    let status: Option<String> = redis::cmd("HGET")
        .arg(&task)
        .arg("status")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(status.as_deref(), Some("failed"));
    let queue = format!("{prefix}:queue");
    let len: u64 = redis::cmd("XLEN")
        .arg(&queue)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(len, 0, "the entry is deleted");
    let pending: (u64, redis::Value, redis::Value, redis::Value) = redis::cmd("XPENDING")
        .arg(&queue)
        .arg("workers")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(pending.0, 0, "the entry is acknowledged");
    // The worker is free: a sound task runs on it.
    let next_gate = new_gate();
    gate(&next_gate).open.send_replace(true);
    let (sub, next, _) = submission(json!({"gate": next_gate, "value": 2}));
    assert!(matches!(
        replica.submit(sub).await.unwrap(),
        Submitted::Started(_)
    ));
    assert_eq!(
        finished(&replica, &next).await.info.status,
        TaskStatus::Complete
    );
    for b in [&worker, &replica] {
        b.shutdown(Duration::from_secs(5)).await.unwrap();
    }
}

/// Review finding (#17): a held task whose claim Redis does not answer as a claim (here a `P:stats` that is not
/// refcache's makes the script refuse; a timeout or a reset is the same to the worker: whether the claim ran is not
/// known) keeps its stream entry, for the lease. Acked, the task would be lost: pending for good with its in-flight
/// key, joined by every later call, and no entry for anyone to run. Once the key is mended, the lease (2 s here)
/// brings the entry back and the task runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_tasks_claim_that_fails_keeps_its_entry_for_the_lease() {
    let server = server();
    let prefix = "claim-fails";
    let cfg = || {
        config(&server)
            .key_prefix(prefix)
            .lease(Duration::from_secs(2))
    };
    let replica = RedisTaskBackend::new(cfg().mode(Mode::Workers)).unwrap();
    let mut one_slot = cfg();
    one_slot.max_workers = 1;
    one_slot.prefetch = 4;
    let worker = RedisTaskBackend::worker(one_slot).unwrap();
    for b in [&replica, &worker] {
        b.start().await.unwrap();
    }
    // A runs in the one slot.
    let (a_gate, a, _) = running(&replica, json!("a")).await;
    // B is read while A runs: held here, pending, claimed when the slot frees.
    let b_gate = new_gate();
    gate(&b_gate).open.send_replace(true);
    let (sub, b, _) = submission(json!({"gate": b_gate, "value": "b"}));
    assert!(matches!(
        replica.submit(sub).await.unwrap(),
        Submitted::Started(_)
    ));
    let mut conn = raw(&server).await;
    let queue = format!("{prefix}:queue");
    until("B's entry is the worker's", async || {
        let pending: (u64, redis::Value, redis::Value, redis::Value) = redis::cmd("XPENDING")
            .arg(&queue)
            .arg("workers")
            .query_async(&mut conn)
            .await
            .unwrap();
        pending.0 == 2
    })
    .await;
    // A's end frees the slot; B's claim then meets a `P:stats` that is not a hash.
    let stats = format!("{prefix}:stats");
    cmd(&mut conn, &["SET", &stats, "not refcache's"]).await;
    gate(&a_gate).open.send_replace(true);
    assert_eq!(
        finished(&replica, &a).await.info.status,
        TaskStatus::Complete
    );
    // Wide: B's claim follows A's end at once (the replica's wait has just answered); the key must not be mended
    // before it ran. (Too short a margin could only let the claim pass, never fail the test.)
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        gate(&b_gate).runs.load(Ordering::SeqCst),
        0,
        "B's claim was refused"
    );
    cmd(&mut conn, &["DEL", &stats]).await;
    let done = finished(&replica, &b).await;
    assert_eq!(done.info.status, TaskStatus::Complete, "{:?}", done.info);
    assert_eq!(gate(&b_gate).runs.load(Ordering::SeqCst), 1);
    for b in [&worker, &replica] {
        b.shutdown(Duration::from_secs(5)).await.unwrap();
    }
}

/// Review finding (#17): a stream entry that does not read (a field name that is not UTF-8, no `ref`: a careless
/// neighbour's `XADD`) read together with a sound task's entry, by a worker that already holds a task (the plain
/// `XREADGROUP`), costs itself alone: it is acknowledged and dropped, and the sound task runs. (Decoded as one
/// answer, the bad entry failed the whole read: both sat in the worker's pending list, never held.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_entry_that_does_not_read_costs_itself_alone() {
    let server = server();
    let prefix = "bad-entry";
    let cfg = || {
        config(&server)
            .key_prefix(prefix)
            .lease(Duration::from_secs(300))
    };
    let replica = RedisTaskBackend::new(cfg().mode(Mode::Workers)).unwrap();
    let worker = RedisTaskBackend::worker(cfg()).unwrap();
    for b in [&replica, &worker] {
        b.start().await.unwrap();
    }
    // A runs: the worker holds a task, so it reads the stream with the plain read.
    let (a_gate, a, _) = running(&replica, json!("a")).await;
    let queue = format!("{prefix}:queue");
    let mut conn = raw(&server).await;
    let _: String = redis::cmd("XADD")
        .arg(&queue)
        .arg("*")
        .arg(&b"\xff\xfe"[..])
        .arg("x")
        .query_async(&mut conn)
        .await
        .unwrap();
    // B right after: the worker is woken by B's submission and reads both in one answer.
    let b_gate = new_gate();
    gate(&b_gate).open.send_replace(true);
    let (sub, b, _) = submission(json!({"gate": b_gate, "value": "b"}));
    assert!(matches!(
        replica.submit(sub).await.unwrap(),
        Submitted::Started(_)
    ));
    assert_eq!(
        finished(&replica, &b).await.info.status,
        TaskStatus::Complete
    );
    until("the bad entry is acknowledged and deleted", async || {
        let len: u64 = redis::cmd("XLEN")
            .arg(&queue)
            .query_async(&mut conn)
            .await
            .unwrap();
        // A's entry alone.
        len == 1
    })
    .await;
    gate(&a_gate).open.send_replace(true);
    assert_eq!(
        finished(&replica, &a).await.info.status,
        TaskStatus::Complete
    );
    for b in [&worker, &replica] {
        b.shutdown(Duration::from_secs(5)).await.unwrap();
    }
}

const WRITES: &str = "it.hostile.writes";

/// Writes a line of output, then answers its argument.
fn writes(args: Value, ctx: TaskContext) -> BoxFuture<'static, Result<JsonText, TaskError>> {
    Box::pin(async move {
        ctx.stdout("a line\n");
        Ok(JsonText::from(&args["value"]))
    })
}

inventory::submit!(TaskRegistration::new(|| WRITES, writes));

/// Review finding (#17): the end expires a task's output log with its record only when the record says a log was
/// written (`ocap`); pinned: a task that wrote output ends with its log expiring, no later than its record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tasks_output_log_expires_with_its_record_after_its_end() {
    let server = server();
    let a = RedisTaskBackend::new(config(&server)).unwrap();
    let p = a.config().key_prefix.clone();
    let args = json!({"value": "w"});
    let key = CacheKey::from_json(WRITES, "it", &args).unwrap();
    let ref_id = RefId::generate("it");
    let spec = TaskSpec::new(ref_id.clone(), key, WRITES, "it", args)
        .with_options(TaskOptions::default().ttl(Some(Duration::from_secs(600))));
    assert!(matches!(
        a.submit(Submission::new(spec, None)).await.unwrap(),
        Submitted::Started(_)
    ));
    assert_eq!(
        finished(&a, &ref_id).await.info.status,
        TaskStatus::Complete
    );
    let mut conn = raw(&server).await;
    let ttl = async |conn: &mut redis::aio::MultiplexedConnection, key: String| -> i64 {
        redis::cmd("PTTL").arg(key).query_async(conn).await.unwrap()
    };
    let log = ttl(&mut conn, format!("{p}:out:{ref_id}")).await;
    let record = ttl(&mut conn, format!("{p}:task:{ref_id}")).await;
    assert!(record > 0, "the record expires: {record}");
    assert!(
        log > 0 && log <= record + 1_000,
        "the log expires with it: {log} (record {record})"
    );
}
