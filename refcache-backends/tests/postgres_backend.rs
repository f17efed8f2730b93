//! What the Postgres backend promises beyond the shared conformance suite, each against a real PostgreSQL that the
//! test starts itself: one lifetime for a record and its value, migrations (versioned, refused when newer, applied
//! once by replicas starting together), apps side by side by schema, notifications as hints only, bad rows that
//! cost only themselves, takeover and dead letters, outages, passwords, and TLS.
#![cfg(feature = "postgres")]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

use futures::future::BoxFuture;
use refcache_backends::postgres::{
    Mode, PostgresConfig, PostgresServer, PostgresServerOptions, PostgresTaskBackend,
};
use refcache_core::registry::{self, TaskRegistration};
use refcache_core::{
    BackendError, CacheKey, RefId, RetryOutcome, Submission, Submitted, TaskBackend, TaskContext,
    TaskError, TaskFilter, TaskOptions, TaskSnapshot, TaskSpec, TaskStatus,
};
use serde_json::{Value, json};
use tokio::sync::watch;

/// The longest any awaited event may take, on a loaded 2-core machine.
const PATIENCE: Duration = Duration::from_secs(30);

fn shared() -> &'static PostgresServer {
    static SERVER: OnceLock<PostgresServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        PostgresServer::start()
            .expect("PostgreSQL's server must be installed (Debian: apt-get install postgresql)")
    })
}

fn fresh_schema(what: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{what}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

async fn config_on(url: String, schema: &str) -> PostgresConfig {
    PostgresConfig::from_url(&url)
        .expect("valid url")
        .schema(schema)
        .lease(Duration::from_secs(3))
}

async fn shared_config(schema: &str) -> PostgresConfig {
    let url = tokio::task::spawn_blocking(|| shared().url())
        .await
        .unwrap();
    config_on(url, schema).await
}

/// A connection of the test's own, for reading and tampering with the tables.
async fn sql(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect to the test's server");
    tokio::spawn(connection);
    client
}

// ---------------------------------------------------------------------------------------------------------------
// A gated task, registered by name.

const GATED: &str = "refcache.postgres-test.gated";

fn gates() -> &'static Mutex<HashMap<String, watch::Sender<bool>>> {
    static GATES: OnceLock<Mutex<HashMap<String, watch::Sender<bool>>>> = OnceLock::new();
    GATES.get_or_init(Default::default)
}

fn gate(id: &str) -> watch::Sender<bool> {
    gates()
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(id.to_owned())
        .or_insert_with(|| watch::channel(false).0)
        .clone()
}

fn open(id: &str) {
    gate(id).send_replace(true);
}

fn gated(
    args: Value,
    ctx: TaskContext,
) -> BoxFuture<'static, Result<refcache_core::JsonText, TaskError>> {
    Box::pin(async move {
        let id = args["gate"].as_str().unwrap_or_default().to_owned();
        let mut rx = gate(&id).subscribe();
        tokio::select! {
            _ = rx.wait_for(|open| *open) => Ok(refcache_core::JsonText::from(args.get("value").unwrap_or(&Value::Null))),
            () = ctx.cancelled() => Err(TaskError::new("stopped on cancel")),
        }
    })
}

inventory::submit!(TaskRegistration::new(|| GATED, gated));

fn submission(args: Value, value_ttl: Duration) -> (Submission, RefId, CacheKey) {
    let key = CacheKey::from_json(GATED, "test", &args).unwrap();
    let ref_id = RefId::generate("test");
    let spec = TaskSpec::new(ref_id.clone(), key, GATED, "test", args)
        .with_options(TaskOptions::default().ttl(Some(value_ttl)));
    let job = registry::find(GATED).map(TaskRegistration::job);
    (Submission::new(spec, job), ref_id, key)
}

async fn run_to_end(b: &dyn TaskBackend, args: Value, value_ttl: Duration) -> (RefId, CacheKey) {
    let (sub, ref_id, key) = submission(args, value_ttl);
    b.submit(sub).await.unwrap();
    let done = wait_end(b, &ref_id).await;
    assert_eq!(done.info.status, TaskStatus::Complete, "{:?}", done.info);
    (ref_id, key)
}

async fn wait_end(b: &dyn TaskBackend, ref_id: &RefId) -> TaskSnapshot {
    let snapshot = b
        .wait(ref_id, Some(tokio::time::Instant::now() + PATIENCE))
        .await
        .unwrap()
        .expect("known");
    assert!(snapshot.info.status.is_terminal(), "{:?}", snapshot.info);
    snapshot
}

async fn rows_of(client: &tokio_postgres::Client, schema: &str, ref_id: &RefId) -> (i64, i64) {
    let row = client
        .query_one(
            &format!(
                "SELECT (SELECT count(*) FROM \"{schema}\".tasks WHERE ref_id = $1),
                        (SELECT count(*) FROM \"{schema}\".task_values WHERE ref_id = $1)"
            ),
            &[&ref_id.as_str()],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

/// Waits (for the upkeep loop) until `check` holds.
async fn until(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let give_up = tokio::time::Instant::now() + PATIENCE;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < give_up,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------------------------------------------

/// Issue 15 §1 on Postgres: a complete record lives as long as its value, however the two TTLs compare; when one
/// goes the other goes too, in the table and to readers; and after `cleanup` the same call runs anew.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_and_its_value_have_one_lifetime() {
    let schema = fresh_schema("lifetime");
    let config = shared_config(&schema)
        .await
        .task_ttl(Duration::from_secs(1));
    let url = config.url.clone();
    let b = PostgresTaskBackend::new(config).unwrap();
    let db = sql(&url).await;

    // task_ttl (1 s) shorter than the value's TTL (600 s): past task_ttl, the hit's ref id still polls.
    let id = uuid::Uuid::new_v4().to_string();
    open(&id);
    let (long_ref, long_key) = run_to_end(
        &b,
        json!({"gate": id, "value": 1}),
        Duration::from_secs(600),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let hit = b
        .lookup(&long_key)
        .await
        .unwrap()
        .expect("the value stays 600 s");
    assert_eq!(hit.ref_id, long_ref);
    let polled = b
        .get(&long_ref)
        .await
        .unwrap()
        .expect("the hit's ref id still polls");
    assert_eq!(polled.info.status, TaskStatus::Complete);
    assert_eq!(rows_of(&db, &schema, &long_ref).await, (1, 1));

    // The value's TTL (1 s) shorter than task_ttl: once the value has gone, the record reads as gone too, and
    // the upkeep removes both rows.
    let id = uuid::Uuid::new_v4().to_string();
    open(&id);
    let args = json!({"gate": id, "value": 2});
    let (short_ref, short_key) = run_to_end(&b, args.clone(), Duration::from_secs(1)).await;
    until("the value to expire", async || {
        b.lookup(&short_key).await.unwrap().is_none()
    })
    .await;
    assert!(
        b.get(&short_ref).await.unwrap().is_none(),
        "a complete record without its value is gone"
    );
    // The same call then runs anew (before the expired rows are swept), under a new ref id that polls.
    let (sub, again_ref, _) = submission(args, Duration::from_secs(600));
    assert!(matches!(
        b.submit(sub).await.unwrap(),
        Submitted::Started(_)
    ));
    assert_eq!(
        wait_end(&b, &again_ref).await.info.status,
        TaskStatus::Complete
    );
    assert_eq!(
        b.lookup(&short_key).await.unwrap().unwrap().ref_id,
        again_ref
    );
    until("the upkeep to remove both expired rows", async || {
        rows_of(&db, &schema, &short_ref).await == (0, 0)
    })
    .await;
    assert_eq!(rows_of(&db, &schema, &again_ref).await, (1, 1));

    // cleanup drops record and value together: no hit is left that hands out a ref id which then fails to poll.
    assert!(b.cleanup(Duration::ZERO).await.unwrap() >= 2);
    assert!(b.lookup(&long_key).await.unwrap().is_none());
    assert!(
        b.near_cache().unwrap().get(&long_key).await.is_none(),
        "the near cache dropped it too"
    );
    assert!(b.get(&long_ref).await.unwrap().is_none());
    assert_eq!(rows_of(&db, &schema, &long_ref).await, (0, 0));
}

/// Values are kept as their exact JSON text (never jsonb): key order and number forms come back as the task
/// returned them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_come_back_exactly_as_returned() {
    let schema = fresh_schema("exact");
    let config = shared_config(&schema).await;
    let url = config.url.clone();
    let b = PostgresTaskBackend::new(config).unwrap();
    let id = uuid::Uuid::new_v4().to_string();
    open(&id);
    let value: Value = serde_json::from_str(
        r#"{"zeta": 1, "alpha": [1.50, 2e3, 12345678901234567890], "mid": {"b": null, "a": "x"}}"#,
    )
    .unwrap();
    let expected = serde_json::to_string(&value).unwrap();
    let (ref_id, _) = run_to_end(
        &b,
        json!({"gate": id, "value": value}),
        Duration::from_secs(600),
    )
    .await;
    let db = sql(&url).await;
    let text: String = db
        .query_one(
            &format!("SELECT value FROM \"{schema}\".task_values WHERE ref_id = $1"),
            &[&ref_id.as_str()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(text, expected, "the column holds the value's JSON text");
    let fresh = PostgresTaskBackend::new(shared_config(&schema).await).unwrap();
    let read = fresh.get(&ref_id).await.unwrap().unwrap().value.unwrap();
    assert_eq!(serde_json::to_string(&read.value).unwrap(), expected);
}

/// A schema written by a newer refcache is refused with an error that says so, and is left exactly as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_schema_is_refused_and_never_altered() {
    let schema = fresh_schema("newer");
    let config = shared_config(&schema).await;
    let url = config.url.clone();
    PostgresTaskBackend::new(config.clone())
        .unwrap()
        .migrate()
        .await
        .unwrap();
    let db = sql(&url).await;
    db.batch_execute(&format!(
        "INSERT INTO \"{schema}\".schema_version (version) VALUES (99);
         ALTER TABLE \"{schema}\".tasks ADD COLUMN from_the_future integer"
    ))
    .await
    .unwrap();
    let b = PostgresTaskBackend::new(config).unwrap();
    let err = b.get(&RefId::generate("test")).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, BackendError::Other(_)), "{err:?}");
    assert!(
        text.contains(&format!(
            "version 99, newer than this binary's {}",
            refcache_backends::postgres::SCHEMA_VERSION
        )),
        "{text}"
    );
    assert!(text.contains("left unchanged"), "{text}");
    let versions: Vec<i32> = db
        .query(
            &format!("SELECT version FROM \"{schema}\".schema_version ORDER BY version"),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut expected: Vec<i32> = (1..=refcache_backends::postgres::SCHEMA_VERSION).collect();
    expected.push(99);
    assert_eq!(versions, expected);
    let future: i64 = db
        .query_one(
            "SELECT count(*) FROM information_schema.columns WHERE table_schema = $1 AND column_name = 'from_the_future'",
            &[&schema],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(future, 1, "the newer schema's column is still there");
}

/// Replicas starting together on a new schema migrate it once (an advisory lock), and all of them work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_starting_together_migrate_once() {
    let schema = fresh_schema("together");
    let config = shared_config(&schema).await;
    let url = config.url.clone();
    let replicas: Vec<PostgresTaskBackend> = (0..6)
        .map(|_| PostgresTaskBackend::new(config.clone()).unwrap())
        .collect();
    let results = futures::future::join_all(replicas.iter().map(|r| r.migrate())).await;
    for result in results {
        result.expect("every replica gets a ready schema");
    }
    let db = sql(&url).await;
    let n: i64 = db
        .query_one(
            &format!("SELECT count(*) FROM \"{schema}\".schema_version"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        n,
        i64::from(refcache_backends::postgres::SCHEMA_VERSION),
        "each migration applied once"
    );
}

/// Two apps share one database by schema: the same call in each runs in each, and neither sees the other's
/// tasks, values or cancels.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_apps_share_a_database_by_schema() {
    let a = PostgresTaskBackend::new(shared_config(&fresh_schema("app_a")).await).unwrap();
    let b = PostgresTaskBackend::new(shared_config(&fresh_schema("app_b")).await).unwrap();
    let id = uuid::Uuid::new_v4().to_string();
    let args = json!({"gate": id, "value": 5});
    let (sub_a, ref_a, key) = submission(args.clone(), Duration::from_secs(600));
    let (sub_b, ref_b, _) = submission(args, Duration::from_secs(600));
    assert!(matches!(
        a.submit(sub_a).await.unwrap(),
        Submitted::Started(_)
    ));
    assert!(
        matches!(b.submit(sub_b).await.unwrap(), Submitted::Started(_)),
        "the same key in another app is not joined across apps"
    );
    assert!(
        b.get(&ref_a).await.unwrap().is_none(),
        "app b cannot see app a's task"
    );
    assert_eq!(
        b.cancel(&ref_a).await.unwrap(),
        refcache_core::CancelOutcome::NotFound
    );
    assert_eq!(a.list(TaskFilter::all()).await.unwrap().tasks.len(), 1);
    open(&id);
    wait_end(&a, &ref_a).await;
    wait_end(&b, &ref_b).await;
    assert_eq!(a.lookup(&key).await.unwrap().unwrap().ref_id, ref_a);
    assert_eq!(b.lookup(&key).await.unwrap().unwrap().ref_id, ref_b);
}

/// Anyone with database access can NOTIFY. Forged hints (an end, a drop, garbage) on the channel neither stop a
/// running task nor drop a value: the backend reads the row, which says otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_notifications_change_nothing() {
    let schema = fresh_schema("forged");
    let config = shared_config(&schema).await;
    let url = config.url.clone();
    let b = PostgresTaskBackend::new(config).unwrap();
    b.start().await.unwrap();
    let done_gate = uuid::Uuid::new_v4().to_string();
    open(&done_gate);
    let (done_ref, done_key) = run_to_end(
        &b,
        json!({"gate": done_gate, "value": 1}),
        Duration::from_secs(600),
    )
    .await;
    let running_gate = uuid::Uuid::new_v4().to_string();
    let (sub, running_ref, _) = submission(
        json!({"gate": running_gate, "value": 2}),
        Duration::from_secs(600),
    );
    b.submit(sub).await.unwrap();
    let db = sql(&url).await;
    let channel = format!("refcache.{schema}");
    for payload in [
        format!("{running_ref} end"),
        format!(
            "{running_ref} drop {}",
            CacheKey::from_json("x", "y", &json!({})).unwrap().to_hex()
        ),
        format!("{done_ref} drop {}", done_key.to_hex()),
        "garbage".to_owned(),
        format!("{running_ref} cancelled {{}}"),
    ] {
        db.execute("SELECT pg_notify($1, $2)", &[&channel, &payload])
            .await
            .unwrap();
    }
    // The hints are read within this bounded wait; a task stopped by one would end (failed) inside it.
    let still = b
        .wait(
            &running_ref,
            Some(tokio::time::Instant::now() + Duration::from_millis(1500)),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        still.info.status,
        TaskStatus::Processing,
        "{:?}",
        still.info
    );
    assert_eq!(
        b.near_cache()
            .unwrap()
            .get(&done_key)
            .await
            .map(|v| v.ref_id.clone()),
        Some(done_ref.clone())
    );
    open(&running_gate);
    assert_eq!(
        wait_end(&b, &running_ref).await.info.status,
        TaskStatus::Complete
    );
    assert!(b.get(&done_ref).await.unwrap().is_some());
}

/// A record that is not refcache's (unreadable JSON) costs only itself: lists leave it out, other records read,
/// and its own read says what is wrong. In `workers` mode a task with an unreadable spec fails alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_row_costs_only_itself() {
    let schema = fresh_schema("corrupt");
    let config = shared_config(&schema).await;
    let url = config.url.clone();
    let b = PostgresTaskBackend::new(config.clone()).unwrap();
    let mut refs = Vec::new();
    for i in 0..3 {
        let id = uuid::Uuid::new_v4().to_string();
        open(&id);
        refs.push(
            run_to_end(
                &b,
                json!({"gate": id, "value": i}),
                Duration::from_secs(600),
            )
            .await
            .0,
        );
    }
    let db = sql(&url).await;
    db.execute(
        &format!("UPDATE \"{schema}\".tasks SET info = 'not json' WHERE ref_id = $1"),
        &[&refs[1].as_str()],
    )
    .await
    .unwrap();
    let listed = b.list(TaskFilter::all()).await.unwrap();
    let ids: Vec<&RefId> = listed.tasks.iter().map(|t| &t.ref_id).collect();
    assert_eq!(
        ids,
        vec![&refs[2], &refs[0]],
        "the bad record alone is left out"
    );
    let err = b.get(&refs[1]).await.unwrap_err();
    assert!(err.to_string().contains("unreadable task record"), "{err}");
    assert!(b.get(&refs[0]).await.unwrap().is_some());
    assert_eq!(b.stats().await.unwrap().by_status[&TaskStatus::Complete], 3);

    // Workers mode: a queued task whose spec is garbage fails; the next one runs.
    let workers_schema = fresh_schema("corrupt_w");
    let submitter =
        PostgresTaskBackend::new(shared_config(&workers_schema).await.mode(Mode::Workers)).unwrap();
    let bad_gate = uuid::Uuid::new_v4().to_string();
    let (sub, bad_ref, _) = submission(json!({"gate": bad_gate}), Duration::from_secs(600));
    submitter
        .submit(Submission::new(sub.spec, None))
        .await
        .unwrap();
    db.execute(
        &format!("UPDATE \"{workers_schema}\".tasks SET spec = '{{' WHERE ref_id = $1"),
        &[&bad_ref.as_str()],
    )
    .await
    .unwrap();
    let good_gate = uuid::Uuid::new_v4().to_string();
    open(&good_gate);
    let (sub, good_ref, _) = submission(
        json!({"gate": good_gate, "value": 1}),
        Duration::from_secs(600),
    );
    submitter
        .submit(Submission::new(sub.spec, None))
        .await
        .unwrap();
    let worker = PostgresTaskBackend::worker(shared_config(&workers_schema).await).unwrap();
    worker.start().await.unwrap();
    let bad = wait_end(&submitter, &bad_ref).await;
    assert_eq!(bad.info.status, TaskStatus::Failed);
    assert_eq!(
        bad.info.error.unwrap().code.as_deref(),
        Some("CORRUPT_TASK")
    );
    assert_eq!(
        wait_end(&submitter, &good_ref).await.info.status,
        TaskStatus::Complete
    );
}

/// A task whose worker vanished mid-run (its lease ran out) is taken over by the fleet and completes; one that has
/// used up `max_deliveries` fails `worker lost` (Redis's error code) and shows in the dead-letter view.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_workers_tasks_are_taken_over_or_dead_lettered() {
    let schema = fresh_schema("lost");
    let config = shared_config(&schema).await.max_deliveries(2);
    let url = config.url.clone();
    let submitter = PostgresTaskBackend::new(config.clone().mode(Mode::Workers)).unwrap();
    let db = sql(&url).await;
    let mut refs = Vec::new();
    for deliveries in [1, 2] {
        let id = uuid::Uuid::new_v4().to_string();
        open(&id);
        let (sub, ref_id, _) = submission(
            json!({"gate": id, "value": deliveries}),
            Duration::from_secs(600),
        );
        submitter
            .submit(Submission::new(sub.spec, None))
            .await
            .unwrap();
        // As a worker that claimed and started it, then died: processing, its lease run out.
        db.execute(
            &format!(
                "UPDATE \"{schema}\".tasks SET status = 'processing', owner = 'ghost', deliveries = $2,
                 lease_until = now() - interval '1 second' WHERE ref_id = $1"
            ),
            &[&ref_id.as_str(), &deliveries],
        )
        .await
        .unwrap();
        refs.push(ref_id);
    }
    let worker = PostgresTaskBackend::worker(config).unwrap();
    worker.start().await.unwrap();
    let taken_over = wait_end(&submitter, &refs[0]).await;
    assert_eq!(
        taken_over.info.status,
        TaskStatus::Complete,
        "{:?}",
        taken_over.info
    );
    let dead = wait_end(&submitter, &refs[1]).await;
    assert_eq!(dead.info.status, TaskStatus::Failed);
    let error = dead.info.error.unwrap();
    assert_eq!(error.code.as_deref(), Some("WORKER_LOST"));
    assert!(
        error
            .message
            .starts_with("worker lost: the task was delivered 2 times"),
        "{}",
        error.message
    );
    assert_eq!(
        worker.dead_letters(10).await.unwrap(),
        vec![refs[1].clone()]
    );
    let deliveries: i32 = db
        .query_one(
            &format!("SELECT deliveries FROM \"{schema}\".dead_letters"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(deliveries, 2);
}

/// While Postgres is down, calls and polls answer `Unavailable` with a hint (no panic, no hang); when it is back,
/// the same backend works again with its data, with no restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_answers_unavailable_and_work_resumes() {
    let mut server = tokio::task::spawn_blocking(PostgresServer::start)
        .await
        .unwrap()
        .unwrap();
    let config = config_on(server.url(), "outage")
        .await
        .command_timeout(Duration::from_secs(2));
    let b = PostgresTaskBackend::new(config).unwrap();
    let id = uuid::Uuid::new_v4().to_string();
    open(&id);
    let (ref_id, _) = run_to_end(
        &b,
        json!({"gate": id, "value": 9}),
        Duration::from_secs(600),
    )
    .await;
    let server = tokio::task::spawn_blocking(move || {
        server.kill();
        server
    })
    .await
    .unwrap();
    // The first call may meet a pooled connection that has just closed; the next ones connect anew, are refused,
    // and say what to check.
    let started = std::time::Instant::now();
    for attempt in 0..3 {
        let err = b.get(&ref_id).await.unwrap_err();
        assert!(started.elapsed() < PATIENCE, "answered, not hung");
        let BackendError::Unavailable(text) = &err else {
            panic!("expected Unavailable, got {err:?}");
        };
        if attempt > 0 {
            assert!(text.contains("is PostgreSQL running"), "{text}");
        }
    }
    let (sub, _, _) = submission(json!({"gate": "x"}), Duration::from_secs(600));
    assert!(matches!(
        b.submit(sub).await,
        Err(BackendError::Unavailable(_))
    ));

    let mut server = server;
    let server = tokio::task::spawn_blocking(move || {
        server.restart().unwrap();
        server
    })
    .await
    .unwrap();
    until("the backend to read again", async || {
        b.get(&ref_id).await.is_ok()
    })
    .await;
    let back = b
        .get(&ref_id)
        .await
        .unwrap()
        .expect("nothing finished is lost");
    assert_eq!(back.value.unwrap().value, json!(9));
    let id = uuid::Uuid::new_v4().to_string();
    open(&id);
    run_to_end(
        &b,
        json!({"gate": id, "value": 10}),
        Duration::from_secs(600),
    )
    .await;
    drop(server);
}

/// The password is in no error and no `Debug`: neither a refused login's, nor an outage's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_never_appear_in_errors_or_debug() {
    const SECRET: &str = "s3cret-Pw";
    let mut server = tokio::task::spawn_blocking(|| {
        PostgresServer::start_with(PostgresServerOptions::default().password(SECRET))
    })
    .await
    .unwrap()
    .unwrap();
    let url = server.url();
    assert!(url.contains(SECRET));
    let good = PostgresTaskBackend::new(config_on(url.clone(), "pw").await).unwrap();
    good.ping().await.expect("the right password logs in");
    assert!(!format!("{good:?}").contains(SECRET));
    assert!(!format!("{:?}", good.config()).contains(SECRET));

    let wrong = url.replace(SECRET, "wrong-Pw");
    let bad = PostgresTaskBackend::new(config_on(wrong, "pw").await).unwrap();
    let err = bad.ping().await.unwrap_err().to_string();
    assert!(err.contains("refused the login"), "{err}");
    assert!(!err.contains("wrong-Pw") && !err.contains(SECRET), "{err}");
    let in_query = format!(
        "postgres://postgres@127.0.0.1:{}/postgres?password=wrong-Pw",
        server.port()
    );
    let bad = PostgresTaskBackend::new(config_on(in_query, "pw").await).unwrap();
    let err = bad.ping().await.unwrap_err().to_string();
    assert!(!err.contains("wrong-Pw"), "{err}");

    server = tokio::task::spawn_blocking(move || {
        server.kill();
        server
    })
    .await
    .unwrap();
    let err = good.ping().await.unwrap_err().to_string();
    assert!(!err.contains(SECRET), "{err}");
    drop(server);
}

/// `sslmode=require` encrypts (the server sees TLS on the connection); `verify-full` checks the certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_require_and_verify_full() {
    let server = tokio::task::spawn_blocking(|| {
        PostgresServer::start_with(PostgresServerOptions::default().tls(true))
    })
    .await
    .unwrap()
    .expect("start a TLS server (needs openssl)");
    let url = format!("{}?sslmode=require", server.url());
    let b = PostgresTaskBackend::new(config_on(url, "tls").await).unwrap();
    let id = uuid::Uuid::new_v4().to_string();
    open(&id);
    run_to_end(
        &b,
        json!({"gate": id, "value": 1}),
        Duration::from_secs(600),
    )
    .await;
    let cert = server.certificate();
    let verify = format!(
        "postgres://postgres@localhost:{}/postgres?sslmode=verify-full&sslrootcert={}",
        server.port(),
        cert.display()
    );
    let v = PostgresTaskBackend::new(config_on(verify, "tls").await).unwrap();
    v.ping()
        .await
        .expect("verify-full against the server's own certificate");
    // The server's view: every refcache connection is encrypted.
    let (client, connection) = tokio_postgres::connect(&server.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let plain: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
             WHERE a.application_name = 'refcache' AND NOT s.ssl",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let encrypted: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
             WHERE a.application_name = 'refcache' AND s.ssl",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(plain, 0);
    assert!(encrypted >= 2, "{encrypted}");
}

/// `max_queued` bounds the waiting tasks cluster-wide: one more is refused with `QueueFull` and leaves no row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_refuses_and_leaves_nothing() {
    let schema = fresh_schema("full");
    let config = shared_config(&schema).await.max_workers(1).max_queued(2);
    let url = config.url.clone();
    let b = PostgresTaskBackend::new(config).unwrap();
    let gates: Vec<String> = (0..4).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    let mut refs = Vec::new();
    for (i, gate) in gates[..3].iter().enumerate() {
        let (sub, ref_id, _) = submission(json!({"gate": gate}), Duration::from_secs(600));
        assert!(matches!(
            b.submit(sub).await.unwrap(),
            Submitted::Started(_)
        ));
        if i == 0 {
            // The first one runs (it holds the one slot); the next two wait.
            until("the first task to start", async || {
                b.get(&ref_id).await.unwrap().unwrap().info.status == TaskStatus::Processing
            })
            .await;
        }
        refs.push(ref_id);
    }
    let (sub, refused, _) = submission(json!({"gate": gates[3]}), Duration::from_secs(600));
    let err = b.submit(sub).await.unwrap_err();
    assert!(
        matches!(err, BackendError::QueueFull { max_queued: 2 }),
        "{err:?}"
    );
    assert!(b.get(&refused).await.unwrap().is_none());
    assert_eq!(rows_of(&sql(&url).await, &schema, &refused).await, (0, 0));
    for gate in &gates[..3] {
        open(gate);
    }
    for ref_id in &refs {
        assert_eq!(wait_end(&b, ref_id).await.info.status, TaskStatus::Complete);
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Output and input across processes: a worker instance runs the task, a `RefCache` on another instance follows
// its output and answers its question. (Two backends in one test process share nothing but the database: each
// has its own connections, listener and held tasks.)

const PRINTS: &str = "refcache.postgres-test.prints";

/// Prints `line 1` and `line 2`, waits for its gate, prints `line 3`; with `ask`, then asks to go on and returns
/// the answer.
fn prints(
    args: Value,
    ctx: TaskContext,
) -> BoxFuture<'static, Result<refcache_core::JsonText, TaskError>> {
    Box::pin(async move {
        ctx.stdout("line 1\n");
        ctx.stdout("line 2\n");
        let id = args["gate"].as_str().unwrap_or_default().to_owned();
        let mut rx = gate(&id).subscribe();
        tokio::select! {
            _ = rx.wait_for(|open| *open) => {}
            () = ctx.cancelled() => return Err(TaskError::new("stopped on cancel")),
        }
        ctx.stdout("line 3\n");
        if args["ask"].as_bool() != Some(true) {
            return Ok(refcache_core::JsonText::from(&json!("printed")));
        }
        let schema = json!({"type": "object", "properties": {"go": {"type": "boolean"}}, "required": ["go"]});
        let answer = ctx.ask("go on?", schema, None).await?;
        Ok(refcache_core::JsonText::from(&answer))
    })
}

inventory::submit!(TaskRegistration::new(|| PRINTS, prints));

/// A replica (submits, never runs: `workers` mode) and a worker (claims and runs) on one fresh schema, and a
/// `RefCache` on the replica.
async fn replica_and_worker(
    what: &str,
) -> (
    PostgresTaskBackend,
    PostgresTaskBackend,
    refcache_core::RefCache,
    String,
) {
    let schema = fresh_schema(what);
    let config = shared_config(&schema).await;
    let replica = PostgresTaskBackend::new(config.clone().mode(Mode::Workers)).unwrap();
    let worker = PostgresTaskBackend::worker(config).unwrap();
    worker.start().await.unwrap();
    let cache = refcache_core::RefCache::builder()
        .name("test")
        .backend(std::sync::Arc::new(replica.clone()))
        .unwrap();
    (replica, worker, cache, schema)
}

fn prints_submission(args: Value) -> (Submission, RefId) {
    let key = CacheKey::from_json(PRINTS, "test", &args).unwrap();
    let ref_id = RefId::generate("test");
    let spec = TaskSpec::new(ref_id.clone(), key, PRINTS, "test", args);
    let job = registry::find(PRINTS).map(TaskRegistration::job);
    (Submission::new(spec, job), ref_id)
}

/// Issue 18 §1 on Postgres: what a worker prints reaches a `RefCache` on another instance while the task runs
/// (followed by notification, not polled), with the last line as the record's status message; the rest comes
/// after the end, and the log goes with the record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_follows_what_a_worker_prints_before_it_ends() {
    let (replica, worker, cache, schema) = replica_and_worker("output_b").await;
    let id = uuid::Uuid::new_v4().to_string();
    let (sub, ref_id) = prints_submission(json!({"gate": id}));
    replica.submit(sub).await.unwrap();
    let mut follow = cache.follow_output(ref_id.as_str(), 0).await.unwrap();
    let mut seen = String::new();
    let mut next = 0;
    tokio::time::timeout(PATIENCE, async {
        while !seen.contains("line 2\n") {
            let chunk = futures::StreamExt::next(&mut follow)
                .await
                .expect("the stream goes on while the task runs")
                .expect("a chunk");
            assert_eq!(chunk.offset, next, "offsets follow on: {chunk:?}");
            assert!(!chunk.done, "the task still runs: {chunk:?}");
            next = chunk.next_offset;
            seen.push_str(&chunk.text);
        }
    })
    .await
    .expect("the worker's lines reach the replica while it runs");
    assert_eq!(seen, "line 1\nline 2\n");
    let db = sql(&shared_config(&schema).await.url).await;
    let owner: Option<String> = db
        .query_one(
            &format!("SELECT owner FROM \"{schema}\".tasks WHERE ref_id = $1"),
            &[&ref_id.as_str()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        owner.as_deref(),
        Some(worker.consumer()),
        "the worker runs it"
    );
    until("the last line as the status message", async || {
        let info = replica.get(&ref_id).await.unwrap().unwrap().info;
        info.status == TaskStatus::Processing && info.message() == "line 2"
    })
    .await;

    open(&id);
    let rest = tokio::time::timeout(PATIENCE, async {
        let mut rest = String::new();
        loop {
            let chunk = futures::StreamExt::next(&mut follow)
                .await
                .expect("the stream ends after the last chunk")
                .expect("a chunk");
            rest.push_str(&chunk.text);
            if chunk.done {
                return rest;
            }
        }
    })
    .await
    .expect("the end is followed too");
    assert_eq!(rest, "line 3\n");
    assert!(replica.delete(&ref_id).await.unwrap());
    let left: i64 = db
        .query_one(
            &format!("SELECT count(*) FROM \"{schema}\".task_output WHERE ref_id = $1"),
            &[&ref_id.as_str()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "the log went with its record");
    assert!(matches!(
        cache.read_output(ref_id.as_str(), 0, None).await,
        Err(refcache_core::RefCacheError::NotFound)
    ));
}

/// Issue 19 §1 on Postgres: a worker's task asks; a `RefCache` on another instance sees the question and answers;
/// of two replicas answering at once, one takes it; the task hears the answer and completes with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_answers_what_a_worker_asks_once() {
    let (replica, _worker, cache, schema) = replica_and_worker("input_b").await;
    let id = uuid::Uuid::new_v4().to_string();
    open(&id);
    let (sub, ref_id) = prints_submission(json!({"gate": id, "ask": true}));
    replica.submit(sub).await.unwrap();
    until("input_required with the question", async || {
        let info = replica.get(&ref_id).await.unwrap().unwrap().info;
        info.status == TaskStatus::InputRequired
    })
    .await;
    let info = replica.get(&ref_id).await.unwrap().unwrap().info;
    let request = info.input_request.clone().expect("the question");
    assert_eq!(request.message, "go on?");
    assert_eq!(info.message(), "Input required: go on?");
    let listed = replica.list(TaskFilter::default()).await.unwrap();
    assert_eq!(listed.tasks[0].status, TaskStatus::InputRequired);
    assert!(listed.tasks[0].input_request.is_some());
    // An answer that does not fit is refused by the front door, naming the field; the task keeps waiting.
    let bad = cache
        .respond(ref_id.as_str(), json!({"go": "yes"}))
        .await
        .unwrap_err();
    assert!(bad.to_string().contains("go"), "{bad}");
    // Two replicas answer at once: one UPDATE matches.
    let other = PostgresTaskBackend::new(shared_config(&schema).await.mode(Mode::Workers)).unwrap();
    let (a, b) = tokio::join!(
        replica.respond(&ref_id, &request.key, json!({"go": true})),
        other.respond(&ref_id, &request.key, json!({"go": false})),
    );
    let outcomes = [a.unwrap(), b.unwrap()];
    let accepted = outcomes
        .iter()
        .filter(|o| **o == refcache_core::RespondOutcome::Accepted)
        .count();
    assert_eq!(accepted, 1, "{outcomes:?}");
    let done = wait_end(&replica, &ref_id).await;
    assert_eq!(done.info.status, TaskStatus::Complete, "{:?}", done.info);
    let winner = if outcomes[0] == refcache_core::RespondOutcome::Accepted {
        json!({"go": true})
    } else {
        json!({"go": false})
    };
    assert_eq!(done.value.unwrap().value, winner);
    assert_eq!(done.info.input_request, None);
    assert!(matches!(
        cache.respond(ref_id.as_str(), json!({"go": true})).await,
        Err(refcache_core::RefCacheError::NotWaiting {
            status: TaskStatus::Complete,
            ..
        })
    ));
}

/// Issue 15 §2 on Postgres: `stats()` reports what finished records and values weigh, and `max_record_bytes`
/// bounds the records: past it the upkeep drops those that would expire first, with their values, and the newest
/// still poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_bytes_are_reported_and_bounded() {
    let schema = fresh_schema("record_bytes");
    // Each record weighs about 6 kB (its 5 kB argument is in its spec); the bound keeps about three.
    let bound = 20_000;
    let config = shared_config(&schema).await.max_record_bytes(bound);
    let b = PostgresTaskBackend::new(config).unwrap();
    let pad = "x".repeat(5_000);
    let mut refs = Vec::new();
    for i in 0..10 {
        let id = uuid::Uuid::new_v4().to_string();
        open(&id);
        let (ref_id, _) = run_to_end(
            &b,
            json!({"gate": id, "pad": pad, "value": i}),
            Duration::from_secs(600),
        )
        .await;
        refs.push(ref_id);
        if i == 0 {
            let stats = b.stats().await.unwrap();
            assert!(
                (5_000..8_000).contains(&stats.record_bytes),
                "one record of about 6 kB: {stats:?}"
            );
            assert!(stats.value_bytes > 0, "{stats:?}");
        }
    }
    // The upkeep runs every lease / 3 (1 s here).
    until("the records within max_record_bytes", async || {
        b.stats().await.unwrap().record_bytes <= bound
    })
    .await;
    let stats = b.stats().await.unwrap();
    assert!(stats.record_bytes > bound / 2, "{stats:?}");
    let newest = b
        .get(refs.last().unwrap())
        .await
        .unwrap()
        .expect("the newest stays");
    assert_eq!(newest.info.status, TaskStatus::Complete);
    assert_eq!(newest.value.unwrap().value, json!(9));
    assert!(
        b.get(&refs[0]).await.unwrap().is_none(),
        "the oldest went, value and all"
    );
}

/// `max_task_records` on Postgres, as on the in-process backend: past it the upkeep drops the finished records
/// that would expire first, each with its value (in the table, not only to readers), and the newest still poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_records_are_bounded_by_count() {
    let schema = fresh_schema("record_count");
    let bound = 3;
    let config = shared_config(&schema).await.max_task_records(bound);
    let url = config.url.clone();
    let b = PostgresTaskBackend::new(config).unwrap();
    let mut refs = Vec::new();
    for i in 0..8 {
        let id = uuid::Uuid::new_v4().to_string();
        open(&id);
        let (ref_id, _) = run_to_end(
            &b,
            json!({"gate": id, "value": i}),
            Duration::from_secs(600),
        )
        .await;
        refs.push(ref_id);
    }
    // The upkeep runs every lease / 3 (1 s here).
    let finished = async || {
        let stats = b.stats().await.unwrap();
        stats
            .by_status
            .get(&TaskStatus::Complete)
            .copied()
            .unwrap_or(0)
    };
    until("the records within max_task_records", async || {
        finished().await <= bound
    })
    .await;
    assert_eq!(finished().await, bound, "exactly the bound stays");
    let client = sql(&url).await;
    for (i, ref_id) in refs.iter().enumerate() {
        let kept = i >= refs.len() - 3;
        let (records, values) = rows_of(&client, &schema, ref_id).await;
        assert_eq!(
            (records, values),
            if kept { (1, 1) } else { (0, 0) },
            "task {i}: a record and its value go together, the oldest first"
        );
        assert_eq!(b.get(ref_id).await.unwrap().is_some(), kept, "task {i}");
    }
    let newest = b.get(refs.last().unwrap()).await.unwrap().unwrap();
    assert_eq!(newest.value.unwrap().value, json!(7));
}

// ---------------------------------------------------------------------------------------------------------------
// Batching (issue 20): concurrent submissions share a statement and its commit. A statement is held open by a
// conflicting uncommitted row from a connection of the test's own (the in-flight index makes the insert wait for
// that transaction), so that what queues behind it, and when it is written, is decided by the test, not by timing.

/// A `workers`-mode replica with no worker (its tasks stay pending, queued) and one statement of each kind in
/// flight at a time (`pool_size` 1), so that whatever arrives while one is in flight shares the next.
async fn one_slot_replica(what: &str) -> (PostgresTaskBackend, String, String) {
    let schema = fresh_schema(what);
    let mut config = shared_config(&schema)
        .await
        .mode(Mode::Workers)
        .command_timeout(PATIENCE);
    config.pool_size = 1;
    let url = config.url.clone();
    let b = PostgresTaskBackend::new(config).unwrap();
    b.start().await.unwrap();
    (b, schema, url)
}

/// Inserts, uncommitted, a pending row for `key` in `tx`: a submission of the same key waits for `tx` to end.
async fn hold_key(tx: &tokio_postgres::Transaction<'_>, schema: &str, key: &CacheKey) {
    tx.execute(
        &format!(
            "INSERT INTO \"{schema}\".tasks (ref_id, cache_key, status, info, spec, task_name, namespace,
                                             created_ms, queued)
             VALUES ($1, $2, 'pending', '{{}}', '{{}}', 'blocker', 'test', 0, false)"
        ),
        &[&format!("blocker-{}", uuid::Uuid::new_v4()), &key.to_hex()],
    )
    .await
    .unwrap();
}

/// How many statements of the backend inserting into `schema`'s tasks wait on a lock now.
async fn inserts_waiting(db: &tokio_postgres::Client, schema: &str) -> i64 {
    db.query_one(
        "SELECT count(*) FROM pg_stat_activity
         WHERE wait_event_type = 'Lock' AND query LIKE '%INSERT INTO ' || $1 || '.tasks%'",
        &[&format!("\"{schema}\"")],
    )
    .await
    .unwrap()
    .get(0)
}

/// The transaction that wrote each of `refs`' rows (`xmin`), `None` for a ref with no row: rows written by one
/// statement of the backend share one.
async fn writers(
    db: &tokio_postgres::Client,
    schema: &str,
    refs: &[&RefId],
) -> Vec<Option<String>> {
    let mut out = Vec::new();
    for ref_id in refs {
        let rows = db
            .query(
                &format!("SELECT xmin::text FROM \"{schema}\".tasks WHERE ref_id = $1"),
                &[&ref_id.as_str()],
            )
            .await
            .unwrap();
        out.push(rows.first().map(|r| r.get(0)));
    }
    out
}

fn spawn_submit(
    b: &PostgresTaskBackend,
    sub: Submission,
) -> tokio::task::JoinHandle<Result<Submitted, BackendError>> {
    let b = b.clone();
    tokio::spawn(async move { b.submit(sub).await })
}

/// Issue 20: the caller that takes a batch of submissions and writes it may be dropped while the statement runs
/// (a cancelled request). The other rows of its batch are still written and answered: the statement runs to its
/// end on a task of its own.
///
/// A current-thread runtime, so that the callers queue in the order they are spawned (the first queued takes the
/// next batch).
#[tokio::test(flavor = "current_thread")]
async fn a_caller_dropped_mid_statement_does_not_fail_its_batch() {
    let (b, schema, url) = one_slot_replica("dropped_taker").await;
    let db = sql(&url).await;
    let ttl = Duration::from_secs(600);
    let (z_sub, z_ref, z_key) = submission(json!({"gate": "batch-z"}), ttl);
    let (a_sub, a_ref, a_key) = submission(json!({"gate": "batch-a"}), ttl);
    let (b_sub, b_ref, _) = submission(json!({"gate": "batch-b"}), ttl);

    // Two blockers: one for Z's key (Z's statement holds the one slot while A and B queue), one for A's key (the
    // statement A takes, with B's row in it, waits while A is dropped).
    let mut hold_z = sql(&url).await;
    let hold_z = hold_z.transaction().await.unwrap();
    hold_key(&hold_z, &schema, &z_key).await;
    let mut hold_a = sql(&url).await;
    let hold_a = hold_a.transaction().await.unwrap();
    hold_key(&hold_a, &schema, &a_key).await;

    let z = spawn_submit(&b, z_sub);
    until("Z's statement to wait on its key", async || {
        inserts_waiting(&db, &schema).await == 1
    })
    .await;
    // A queues first (a round trip of the test's own lets it run), then B.
    let a = spawn_submit(&b, a_sub);
    inserts_waiting(&db, &schema).await;
    let bh = spawn_submit(&b, b_sub);
    inserts_waiting(&db, &schema).await;
    assert!(!a.is_finished() && !bh.is_finished());

    // Z's statement ends; A takes the queue (A and B) into the next one, which waits on A's key.
    hold_z.rollback().await.unwrap();
    assert!(matches!(z.await.unwrap(), Ok(Submitted::Started(r)) if r == z_ref));
    until("the batch of A and B to wait on A's key", async || {
        inserts_waiting(&db, &schema).await == 1
    })
    .await;
    // B's row is in A's statement: B has no answer while that statement waits.
    assert!(
        !bh.is_finished(),
        "B was answered before A's statement ended"
    );

    // A is dropped mid-statement; then its statement may go on.
    a.abort();
    assert!(a.await.unwrap_err().is_cancelled());
    assert!(
        !bh.is_finished(),
        "B was answered before A's statement ended"
    );
    hold_a.rollback().await.unwrap();

    let answer = tokio::time::timeout(PATIENCE, bh)
        .await
        .expect("B is answered")
        .unwrap();
    assert!(
        matches!(&answer, Ok(Submitted::Started(r)) if *r == b_ref),
        "B's row must not fail with its taker: {answer:?}"
    );
    // Both rows of the dropped caller's statement landed, in one commit (A's, though nobody heard its answer);
    // the blockers are gone.
    let written = writers(&db, &schema, &[&z_ref, &a_ref, &b_ref]).await;
    assert!(written.iter().all(Option::is_some), "{written:?}");
    assert_eq!(written[1], written[2], "A's and B's rows share a statement");
    assert_ne!(written[0], written[1]);
    let rows: i64 = db
        .query_one(
            &format!("SELECT count(*) FROM \"{schema}\".tasks WHERE status = 'pending'"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 3, "Z, A and B pending; no blocker left");
    for ref_id in [&z_ref, &a_ref, &b_ref] {
        let snapshot = b.get(ref_id).await.unwrap().expect("the row is there");
        assert_eq!(snapshot.info.status, TaskStatus::Pending);
    }
}

/// Issue 20: submissions that arrive while a statement is in flight share the next one (one statement, one commit
/// for all their rows), and each row is still decided alone: a row whose key is in flight already is refused and
/// joins that task, two rows of one key in the batch run once (one inserted, the other joins it), and neither
/// stops the others.
#[tokio::test(flavor = "current_thread")]
async fn concurrent_submissions_share_a_statement_and_each_row_is_decided_alone() {
    let (b, schema, url) = one_slot_replica("shared_statement").await;
    let db = sql(&url).await;
    let ttl = Duration::from_secs(600);

    // X is in flight before the batch.
    let (x_sub, x_ref, _) = submission(json!({"gate": "share-x"}), ttl);
    assert!(matches!(b.submit(x_sub).await.unwrap(), Submitted::Started(r) if r == x_ref));

    let (z_sub, z_ref, z_key) = submission(json!({"gate": "share-z"}), ttl);
    let mut hold = sql(&url).await;
    let hold = hold.transaction().await.unwrap();
    hold_key(&hold, &schema, &z_key).await;
    let z = spawn_submit(&b, z_sub);
    until("Z's statement to wait on its key", async || {
        inserts_waiting(&db, &schema).await == 1
    })
    .await;

    // While Z's statement holds the slot: eight new calls, X again, and a new call Y twice.
    let fresh: Vec<(Submission, RefId, CacheKey)> = (0..8)
        .map(|i| submission(json!({"gate": format!("share-{i}")}), ttl))
        .collect();
    let fresh_refs: Vec<RefId> = fresh.iter().map(|(_, r, _)| r.clone()).collect();
    let mut handles: Vec<_> = fresh
        .into_iter()
        .map(|(sub, _, _)| spawn_submit(&b, sub))
        .collect();
    let (x_again, x_again_ref, _) = submission(json!({"gate": "share-x"}), ttl);
    handles.push(spawn_submit(&b, x_again));
    let (y1, y1_ref, y_key) = submission(json!({"gate": "share-y"}), ttl);
    let (y2, y2_ref, _) = submission(json!({"gate": "share-y"}), ttl);
    handles.push(spawn_submit(&b, y1));
    handles.push(spawn_submit(&b, y2));
    inserts_waiting(&db, &schema).await;
    assert!(handles.iter().all(|h| !h.is_finished()));

    hold.rollback().await.unwrap();
    assert!(matches!(z.await.unwrap(), Ok(Submitted::Started(r)) if r == z_ref));
    let mut answers = Vec::new();
    for h in handles {
        answers.push(
            tokio::time::timeout(PATIENCE, h)
                .await
                .expect("answered")
                .unwrap()
                .unwrap(),
        );
    }

    // Each new call started its own task.
    for (answer, ref_id) in answers.iter().zip(&fresh_refs) {
        assert!(
            matches!(answer, Submitted::Started(r) if r == ref_id),
            "{answer:?}"
        );
    }
    // X again joined X, and left no row.
    assert!(
        matches!(&answers[8], Submitted::Joined(r) if *r == x_ref),
        "{:?}",
        answers[8]
    );
    // Y ran once: one of the two rows was inserted, the other joined it.
    let y = match (&answers[9], &answers[10]) {
        (Submitted::Started(a), Submitted::Joined(b)) if a == b && *a == y1_ref => &y1_ref,
        (Submitted::Joined(a), Submitted::Started(b)) if a == b && *b == y2_ref => &y2_ref,
        other => panic!("two rows of one key must run once: {other:?}"),
    };
    let y_rows: i64 = db
        .query_one(
            &format!("SELECT count(*) FROM \"{schema}\".tasks WHERE cache_key = $1"),
            &[&y_key.to_hex()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(y_rows, 1, "one row for Y's key");

    // The applied rows of the batch share one statement (one writing transaction), Z's was its own, and the
    // refused rows have none.
    let mut batch: Vec<&RefId> = fresh_refs.iter().collect();
    batch.push(y);
    let written = writers(&db, &schema, &batch).await;
    assert!(written.iter().all(Option::is_some), "{written:?}");
    assert!(
        written.iter().all(|w| *w == written[0]),
        "11 concurrent submissions share one statement: {written:?}"
    );
    let others = writers(&db, &schema, &[&z_ref, &x_ref, &x_again_ref]).await;
    assert!(others[0].is_some() && others[0] != written[0], "{others:?}");
    assert!(others[1].is_some() && others[1] != written[0], "{others:?}");
    assert_eq!(others[2], None, "a refused row leaves nothing");
    let pending: i64 = db
        .query_one(&format!("SELECT count(*) FROM \"{schema}\".tasks"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(pending, 11, "X, Z, the eight new calls and Y");
}

const FAILS: &str = "refcache.postgres-test.fails";

fn fails(
    _: Value,
    _: TaskContext,
) -> BoxFuture<'static, Result<refcache_core::JsonText, TaskError>> {
    Box::pin(async { Err(TaskError::new("failed on purpose").permanent()) })
}

inventory::submit!(TaskRegistration::new(|| FAILS, fails));

/// A snapshot as JSON (the record and the value), for comparing two reads of one task.
fn snapshot_json(snapshot: Option<&TaskSnapshot>) -> Value {
    snapshot.map_or(Value::Null, |s| {
        json!({
            "info": serde_json::to_value(&s.info).unwrap(),
            "value": s.value.as_ref().map(|v| serde_json::to_value(&**v).unwrap()),
        })
    })
}

/// Issue 20: a waiter reads a finished task's record and its value in one statement, shared with the other
/// waiters' reads (the fast path), where `get` reads the record, then the value (the slow path). Both answer the
/// same: a complete task with a small value, one whose value is too large to come along (read on its own, or
/// taken from the near cache), a failed task, a cancelled one, and a complete record whose value has gone
/// (nothing) — on the process that ran the task and on another one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiters_read_answers_what_get_answers() {
    let schema = fresh_schema("wait_read");
    let config = shared_config(&schema).await;
    let b = PostgresTaskBackend::new(config.clone()).unwrap();
    let other = PostgresTaskBackend::new(config).unwrap();
    let ttl = Duration::from_secs(600);

    let small = uuid::Uuid::new_v4().to_string();
    open(&small);
    let (small_ref, _) =
        run_to_end(&b, json!({"gate": small, "value": {"b": 2, "a": 1}}), ttl).await;
    let large = uuid::Uuid::new_v4().to_string();
    open(&large);
    let (large_ref, _) = run_to_end(
        &b,
        json!({"gate": large, "value": "x".repeat(100_000)}),
        ttl,
    )
    .await;
    let key = CacheKey::from_json(FAILS, "test", &json!({})).unwrap();
    let failed_ref = RefId::generate("test");
    let spec = TaskSpec::new(failed_ref.clone(), key, FAILS, "test", json!({}));
    b.submit(Submission::new(
        spec,
        registry::find(FAILS).map(TaskRegistration::job),
    ))
    .await
    .unwrap();
    assert_eq!(
        wait_end(&b, &failed_ref).await.info.status,
        TaskStatus::Failed
    );
    let (sub, cancelled_ref, _) =
        submission(json!({"gate": uuid::Uuid::new_v4().to_string()}), ttl);
    b.submit(sub).await.unwrap();
    b.cancel(&cancelled_ref).await.unwrap();
    assert_eq!(
        wait_end(&b, &cancelled_ref).await.info.status,
        TaskStatus::Cancelled
    );
    let short = uuid::Uuid::new_v4().to_string();
    open(&short);
    let (gone_ref, _) = run_to_end(
        &b,
        json!({"gate": short, "value": 3}),
        Duration::from_secs(1),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;

    for backend in [&b, &other] {
        for ref_id in [
            &small_ref,
            &large_ref,
            &failed_ref,
            &cancelled_ref,
            &gone_ref,
        ] {
            let waited = backend
                .wait(ref_id, Some(tokio::time::Instant::now() + PATIENCE))
                .await
                .unwrap();
            let got = backend.get(ref_id).await.unwrap();
            assert_eq!(
                snapshot_json(waited.as_ref()),
                snapshot_json(got.as_ref()),
                "{ref_id}: wait and get disagree"
            );
            assert_eq!(waited.is_none(), *ref_id == gone_ref, "{ref_id}");
        }
        let large = backend
            .wait(&large_ref, None)
            .await
            .unwrap()
            .unwrap()
            .value
            .unwrap();
        assert_eq!(large.value, json!("x".repeat(100_000)));
    }
}

/// A running task's lease is renewed while another transaction share-locks its row, as the foreign-key check of
/// an output insert does (`FOR KEY SHARE`). Renewal neither skips the row (a task that writes output all the time
/// would lose its lease to its own writes, and be taken over while it runs) nor waits for the lock (the lease would
/// run out meanwhile). Held here for two and a half leases.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_is_renewed_while_the_row_is_share_locked() {
    let schema = fresh_schema("renew_locked");
    let config = shared_config(&schema).await;
    let url = config.url.clone();
    let replica = PostgresTaskBackend::new(config.clone().mode(Mode::Workers)).unwrap();
    replica.start().await.unwrap();
    let worker = PostgresTaskBackend::worker(config).unwrap();
    worker.start().await.unwrap();
    let id = format!("renew-{}", uuid::Uuid::new_v4());
    let (sub, ref_id, _) = submission(json!({"gate": id, "value": 1}), Duration::from_secs(600));
    replica.submit(sub).await.unwrap();
    let db = sql(&url).await;
    let row = format!(
        "SELECT status, lease_until > now(), deliveries FROM \"{schema}\".tasks WHERE ref_id = $1"
    );
    until("the worker runs it", async || {
        let r = db.query_one(&row, &[&ref_id.as_str()]).await.unwrap();
        r.get::<_, String>(0) == "processing"
    })
    .await;

    let mut locker = sql(&url).await;
    let tx = locker.transaction().await.unwrap();
    tx.execute(
        &format!("SELECT 1 FROM \"{schema}\".tasks WHERE ref_id = $1 FOR KEY SHARE"),
        &[&ref_id.as_str()],
    )
    .await
    .unwrap();
    // The test lease is 3 s, renewed every second.
    tokio::time::sleep(Duration::from_millis(7_500)).await;
    let r = db.query_one(&row, &[&ref_id.as_str()]).await.unwrap();
    assert_eq!(r.get::<_, String>(0), "processing");
    assert!(
        r.get::<_, bool>(1),
        "the lease ran out while the row was share-locked"
    );
    assert_eq!(r.get::<_, i32>(2), 1, "delivered once");
    tx.rollback().await.unwrap();

    open(&id);
    let done = wait_end(&replica, &ref_id).await;
    assert_eq!(done.info.status, TaskStatus::Complete, "{:?}", done.info);
    let r = db.query_one(&row, &[&ref_id.as_str()]).await.unwrap();
    assert_eq!(r.get::<_, i32>(2), 1, "it ran once");
}

/// Review of issue 20: a migration applies over a schema where what it changes is already so (an index dropped by
/// hand before it ran, say): version 4 drops two indexes, version 5 creates one, and each still applies when they
/// are gone, or there, already. (The runner compares versions only, never a migration's text, so a migration
/// already applied is never run again whatever its text.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_applies_over_what_is_already_there() {
    let schema = fresh_schema("reapply");
    let config = shared_config(&schema).await;
    let url = config.url.clone();
    PostgresTaskBackend::new(config.clone())
        .unwrap()
        .migrate()
        .await
        .unwrap();
    let db = sql(&url).await;
    // Back to version 3 on paper, with the indexes as version 5 left them.
    db.execute(
        &format!("DELETE FROM \"{schema}\".schema_version WHERE version >= 4"),
        &[],
    )
    .await
    .unwrap();
    let b = PostgresTaskBackend::new(config).unwrap();
    b.migrate()
        .await
        .expect("versions 4 and 5 apply again over their own result");
    let versions: Vec<i32> = db
        .query(
            &format!("SELECT version FROM \"{schema}\".schema_version ORDER BY version"),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        versions,
        (1..=refcache_backends::postgres::SCHEMA_VERSION).collect::<Vec<_>>()
    );
    let (sub, ref_id, _) = submission(json!({"gate": "reapply"}), Duration::from_secs(60));
    assert!(matches!(b.submit(sub).await.unwrap(), Submitted::Started(r) if r == ref_id));
}

/// Review of issue 20: `end_session` locks its rows in ref order, as the batched starts, ends and lease renewals
/// lock theirs, so that it waits on them instead of deadlocking with them. The test's transaction plays a batch
/// over two rows of the session: it locks the first by ref, then the second once `end_session` waits. A session
/// deleted in scan order (here the second ref's row comes first) would hold the second row by then: a deadlock,
/// which fails one of the two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ending_a_session_locks_its_rows_in_ref_order() {
    let schema = fresh_schema("session_order");
    let config = shared_config(&schema).await.command_timeout(PATIENCE);
    let url = config.url.clone();
    let b = PostgresTaskBackend::new(config).unwrap();
    b.start().await.unwrap();
    let db = sql(&url).await;
    let mut refs = [RefId::generate("test"), RefId::generate("test")];
    refs.sort_by(|x, y| x.as_str().cmp(y.as_str()));
    let [first, second] = refs;
    // The second ref's row is written first: a scan (of the heap, or of the session index, in heap order) meets it
    // first.
    for (ref_id, key) in [(&second, "k2"), (&first, "k1")] {
        db.execute(
            &format!(
                "INSERT INTO \"{schema}\".tasks (ref_id, cache_key, status, info, spec, task_name, namespace,
                                                 session_id, created_ms, queued, finished_at)
                 VALUES ($1, $2, 'failed', '{{}}', '{{}}', 'x', 'test', 'sess', 0, false, now())"
            ),
            &[&ref_id.as_str(), &key],
        )
        .await
        .unwrap();
    }
    let mut batch = sql(&url).await;
    let batch = batch.transaction().await.unwrap();
    let lock = format!("SELECT 1 FROM \"{schema}\".tasks WHERE ref_id = $1 FOR UPDATE");
    batch.execute(&lock, &[&first.as_str()]).await.unwrap();

    let ender = {
        let b = b.clone();
        tokio::spawn(async move { b.end_session("sess").await })
    };
    until("end_session to wait on the first row", async || {
        db.query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%session_id = $1%'",
            &[],
        )
        .await
        .unwrap()
        .get::<_, i64>(0)
            == 1
    })
    .await;
    batch
        .execute(&lock, &[&second.as_str()])
        .await
        .expect("the second row is not locked by end_session, which waits on the first");
    batch.commit().await.unwrap();
    let ended = tokio::time::timeout(PATIENCE, ender)
        .await
        .expect("end_session ends")
        .unwrap();
    assert_eq!(ended.expect("end_session, no deadlock"), 2);
    let left: i64 = db
        .query_one(&format!("SELECT count(*) FROM \"{schema}\".tasks"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
}

/// Review of issue 20: the upkeep's check for lost leases (every `lease / 3`, in every process) reads the tasks
/// that hold a lease (the `tasks_leased` index), not the queue: with 5,000 tasks waiting, it reads none of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lease_check_does_not_read_the_queue() {
    let schema = fresh_schema("lease_scan");
    let config = shared_config(&schema).await.mode(Mode::Workers);
    let url = config.url.clone();
    let b = PostgresTaskBackend::new(config).unwrap();
    b.migrate().await.unwrap();
    let db = sql(&url).await;
    db.batch_execute(&format!(
        "INSERT INTO \"{schema}\".tasks (ref_id, cache_key, status, info, spec, task_name, namespace, created_ms,
                                         queued)
         SELECT 'queued-' || i, 'key-' || i, 'pending', '{{}}', '{{}}', 'x', 'test', 0, true
         FROM generate_series(1, 5000) i;
         ANALYZE \"{schema}\".tasks"
    ))
    .await
    .unwrap();
    let index = format!(
        "SELECT coalesce(sum(idx_scan) FILTER (WHERE indexrelname = 'tasks_leased'), 0)::bigint,
                coalesce(sum(idx_tup_read) FILTER (WHERE indexrelname = 'tasks_in_flight'), 0)::bigint,
                count(*) FILTER (WHERE indexrelname = 'tasks_leased')
         FROM pg_stat_user_indexes WHERE schemaname = '{schema}'"
    );
    let read = async || {
        let r = db.query_one(&index, &[]).await.unwrap();
        (r.get::<_, i64>(0), r.get::<_, i64>(1), r.get::<_, i64>(2))
    };
    let (leased_before, in_flight_before, exists) = read().await;
    assert_eq!(exists, 1, "the tasks_leased index is there");
    // The upkeep runs every second (a 3 s lease); its scans reach the statistics within a second or so.
    b.start().await.unwrap();
    until("two lease checks through tasks_leased", async || {
        read().await.0 >= leased_before + 2
    })
    .await;
    let (_, in_flight_after, _) = read().await;
    assert!(
        in_flight_after - in_flight_before < 1_000,
        "the lease checks read {} entries of the single-flight index",
        in_flight_after - in_flight_before
    );
}

/// Issue 20: a submission's insert commits asynchronously (no WAL flush of its own), yet a reference returned to a
/// caller survives a server crash: `submit` answers only once a durable commit covers the row (its task's end, or
/// a confirmation of its own). Ten submissions of tasks that wait, then at once an immediate stop (what is not in
/// the WAL written out is lost, as in a crash) and a restart: every ref returned has its row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_returned_reference_survives_a_server_crash() {
    let mut server = tokio::task::spawn_blocking(PostgresServer::start)
        .await
        .unwrap()
        .expect("a private PostgreSQL");
    let url = server.url();
    let schema = fresh_schema("crash");
    let b = PostgresTaskBackend::new(config_on(url.clone(), &schema).await).unwrap();
    b.start().await.unwrap();
    let id = format!("crash-{}", uuid::Uuid::new_v4());
    let mut refs = Vec::new();
    for i in 0..10 {
        let (sub, ref_id, _) = submission(json!({"gate": id, "i": i}), Duration::from_secs(600));
        assert!(matches!(b.submit(sub).await.unwrap(), Submitted::Started(r) if r == ref_id));
        refs.push(ref_id.as_str().to_owned());
    }
    tokio::task::block_in_place(|| server.restart()).expect("the server restarts");
    let db = sql(&url).await;
    let rows: i64 = db
        .query_one(
            &format!("SELECT count(*) FROM \"{schema}\".tasks WHERE ref_id = ANY($1)"),
            &[&refs],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        rows, 10,
        "every ref returned by submit has its row after the crash"
    );
    // Each was confirmed on its own (none ended within the grace): one durable statement each, counted.
    let confirmations: i64 = db
        .query_one(
            &format!(
                "SELECT coalesce(sum(n), 0)::bigint FROM \"{schema}\".counters WHERE name = 'confirmations'"
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(confirmations, 10);
    open(&id);
    drop(b);
}

/// Issue 20: the batched starts and ends find their rows by ref (the primary key), never by scanning a partial
/// index of the tasks in flight, whatever the statistics say: once `ANALYZE` had seen how few rows are in flight,
/// the planner scanned all of `tasks_leased` (every entry, dead ones too) for each end, and all of
/// `tasks_in_flight` for each start. Twenty tasks run to their end after an `ANALYZE` of 5,000 finished ones; the
/// lease index is read by the upkeep alone (a 60 s lease: one check at the start, the next 20 s later).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_and_ends_find_their_rows_by_ref() {
    let schema = fresh_schema("by_ref");
    let config = shared_config(&schema).await.lease(Duration::from_secs(60));
    let url = config.url.clone();
    let b = PostgresTaskBackend::new(config).unwrap();
    b.start().await.unwrap();
    let db = sql(&url).await;
    db.batch_execute(&format!(
        "INSERT INTO \"{schema}\".tasks (ref_id, cache_key, status, info, spec, task_name, namespace, created_ms,
                                         queued, finished_at)
         SELECT 'done-' || i, 'key-' || i, 'failed', '{{}}', '{{}}', 'x', 'test', 0, false, now()
         FROM generate_series(1, 5000) i;
         ANALYZE \"{schema}\".tasks"
    ))
    .await
    .unwrap();
    let scans = format!(
        "SELECT coalesce(sum(idx_scan), 0)::bigint FROM pg_stat_user_indexes
         WHERE schemaname = '{schema}' AND indexrelname = 'tasks_leased'"
    );
    // The upkeep's first check (at start) has reached the statistics: backends report within ~10 s of going idle.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let before: i64 = db.query_one(&scans, &[]).await.unwrap().get(0);
    for i in 0..20 {
        let id = format!("byref-{}-{i}", uuid::Uuid::new_v4());
        open(&id);
        run_to_end(
            &b,
            json!({"gate": id, "value": i}),
            Duration::from_secs(600),
        )
        .await;
    }
    tokio::time::sleep(Duration::from_secs(12)).await;
    let after: i64 = db.query_one(&scans, &[]).await.unwrap().get(0);
    assert!(
        after - before < 5,
        "twenty ends scanned tasks_leased {} times",
        after - before
    );
}

/// Issue 20 (review): a held task whose row is gone without a hint heard (deleted by hand here; a submission lost to
/// a crash alike) stops at the next lease renewal, so that it never runs for long beside a new execution of the
/// same call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_task_whose_row_is_gone_stops_at_the_next_renewal() {
    let schema = fresh_schema("gone_row");
    let config = shared_config(&schema).await;
    let url = config.url.clone();
    let b = PostgresTaskBackend::new(config).unwrap();
    b.start().await.unwrap();
    let db = sql(&url).await;
    let id = format!("gone-{}", uuid::Uuid::new_v4());
    let (sub, ref_id, _) = submission(json!({"gate": id}), Duration::from_secs(600));
    b.submit(sub).await.unwrap();
    until("the task to run", async || {
        b.stats().await.unwrap().running == 1
    })
    .await;
    // No NOTIFY: only the renewal can notice.
    db.execute(
        &format!("DELETE FROM \"{schema}\".tasks WHERE ref_id = $1"),
        &[&ref_id.as_str()],
    )
    .await
    .unwrap();
    until(
        "the task to stop (lease 3 s, renewed every second)",
        async || b.stats().await.unwrap().running == 0,
    )
    .await;
    open(&id);
}

/// Issue 20: `list` hands out the refs of tasks in flight, whose submissions may not be durable yet: it confirms
/// them (one durable statement that sees their rows) before it answers; a list of finished tasks only needs none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_confirms_the_tasks_in_flight_it_answers() {
    let schema = fresh_schema("list_confirm");
    let config = shared_config(&schema).await;
    let url = config.url.clone();
    let b = PostgresTaskBackend::new(config).unwrap();
    b.start().await.unwrap();
    let db = sql(&url).await;
    let confirmations = format!(
        "SELECT coalesce(sum(n), 0)::bigint FROM \"{schema}\".counters WHERE name = 'confirmations'"
    );
    let id = format!("list-{}", uuid::Uuid::new_v4());
    let (sub, ref_id, _) = submission(json!({"gate": id}), Duration::from_secs(600));
    b.submit(sub).await.unwrap();
    let before: i64 = db.query_one(&confirmations, &[]).await.unwrap().get(0);
    let listed = b.list(TaskFilter::all()).await.unwrap();
    assert_eq!(listed.tasks.len(), 1);
    assert_eq!(listed.tasks[0].ref_id, ref_id);
    let after: i64 = db.query_one(&confirmations, &[]).await.unwrap().get(0);
    assert_eq!(after, before + 1, "the listed task in flight was confirmed");
    open(&id);
    wait_end(&b, &ref_id).await;
    b.list(TaskFilter::all()).await.unwrap();
    let finished: i64 = db.query_one(&confirmations, &[]).await.unwrap().get(0);
    assert_eq!(finished, after, "a finished task needs no confirmation");
}

/// The confirmations counted in `schema` so far (each a durable statement of `Sql::confirm`).
async fn confirmations(db: &tokio_postgres::Client, schema: &str) -> i64 {
    db.query_one(
        &format!(
            "SELECT coalesce(sum(n), 0)::bigint FROM \"{schema}\".counters WHERE name = 'confirmations'"
        ),
        &[],
    )
    .await
    .unwrap()
    .get(0)
}

/// Issue 20 (the fast path): a task that ends within the grace makes its submission durable by its end alone (a
/// durable commit, whose WAL flush covers the older insert): no confirmation. Ten tasks that end at once, each
/// `submit` answered, then at once an immediate stop (as a crash) and a restart: every ref returned has its row,
/// complete, with its value, and not one was confirmed. (The grace is the widest allowed, 1 s, so that on a loaded
/// machine each task, which ends at once, ends within it.) The confirmation count pins the fast path; the rows
/// after the crash pin the end's durability only probabilistically: an asynchronous commit is also written out by
/// the WAL writer within 200 ms, so an end made asynchronous loses a row only when the stop comes first (it lost
/// the last of the ten when tried).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_tasks_reference_survives_a_crash_without_a_confirmation() {
    let mut server = tokio::task::spawn_blocking(PostgresServer::start)
        .await
        .unwrap()
        .expect("a private PostgreSQL");
    let url = server.url();
    let schema = fresh_schema("fast_crash");
    let config = config_on(url.clone(), &schema)
        .await
        .durable_grace(Duration::from_secs(1));
    let b = PostgresTaskBackend::new(config).unwrap();
    b.start().await.unwrap();
    let id = format!("fast-{}", uuid::Uuid::new_v4());
    open(&id);
    let mut refs = Vec::new();
    for i in 0..10 {
        let (sub, ref_id, _) = submission(
            json!({"gate": id, "i": i, "value": i}),
            Duration::from_secs(600),
        );
        assert!(matches!(b.submit(sub).await.unwrap(), Submitted::Started(r) if r == ref_id));
        refs.push(ref_id.as_str().to_owned());
    }
    tokio::task::block_in_place(|| server.restart()).expect("the server restarts");
    let db = sql(&url).await;
    let row = db
        .query_one(
            &format!(
                "SELECT (SELECT count(*) FROM \"{schema}\".tasks WHERE ref_id = ANY($1) AND status = 'complete'),
                        (SELECT count(*) FROM \"{schema}\".task_values WHERE ref_id = ANY($1))"
            ),
            &[&refs],
        )
        .await
        .unwrap();
    let (complete, values): (i64, i64) = (row.get(0), row.get(1));
    assert_eq!(
        (complete, values),
        (10, 10),
        "every ref returned by submit is complete, with its value, after the crash"
    );
    assert_eq!(
        confirmations(&db, &schema).await,
        0,
        "a task that ended within the grace needs no confirmation"
    );
    drop(b);
}

/// Issue 20: a submission whose confirmation fails (the server goes down while the confirmation waits) answers
/// `Unavailable`, never a reference: the confirmation is held on a lock of its counter row (the test's own
/// transaction), the server is stopped at once, and `submit` fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirmation_that_fails_answers_unavailable_not_a_reference() {
    let mut server = tokio::task::spawn_blocking(PostgresServer::start)
        .await
        .unwrap()
        .expect("a private PostgreSQL");
    let url = server.url();
    let schema = fresh_schema("confirm_fails");
    // The statement outlives the wait below: the server's stop, not the command timeout, ends it.
    let config = config_on(url.clone(), &schema)
        .await
        .command_timeout(PATIENCE);
    let b = PostgresTaskBackend::new(config).unwrap();
    b.start().await.unwrap();
    let mut db = sql(&url).await;
    let tx = db.transaction().await.unwrap();
    // The confirmations' counter rows (every shard), locked until the test's transaction ends: a confirmation's
    // upsert waits on its row. (Not the whole table: a submission inserted started counts its execution there.)
    tx.batch_execute(&format!(
        "INSERT INTO \"{schema}\".counters (name, shard, n) SELECT 'confirmations', g, 0 FROM generate_series(0, 15) g
         ON CONFLICT (name, shard) DO UPDATE SET n = counters.n"
    ))
    .await
    .unwrap();
    let id = format!("confirm-{}", uuid::Uuid::new_v4());
    let (sub, _, _) = submission(json!({"gate": id}), Duration::from_secs(600));
    let submitter = b.clone();
    let submit = tokio::spawn(async move { submitter.submit(sub).await });
    let watcher = sql(&url).await;
    until("the confirmation to wait on the lock", async || {
        watcher
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE wait_event_type = 'Lock' AND query LIKE '%''confirmations''%'",
                &[],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
            >= 1
    })
    .await;
    tokio::task::block_in_place(|| server.kill());
    let answer = tokio::time::timeout(PATIENCE, submit)
        .await
        .expect("submit answers once the server is gone")
        .unwrap();
    assert!(
        matches!(answer, Err(BackendError::Unavailable(_))),
        "expected Unavailable, got {answer:?}"
    );
    drop(tx);
    open(&id);
}

/// Issue 20 (review): `retry` of a failed task whose call is in flight again under another ref answers
/// `AlreadyRunning(that ref)`, whose row may not be durable yet (an insert commits asynchronously until its
/// `submit` answers): the ref is confirmed (one durable statement, counted) before it is handed out, and its row
/// survives an immediate stop (as a crash) right after. The row in flight is the test's own, inserted with
/// `synchronous_commit=off` as a submission's is, and confirmed by nothing else. The confirmation count pins the
/// behaviour; the row after the crash would often be there without it too (the WAL writer writes an asynchronous
/// commit out within 200 ms).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retrys_running_reference_is_confirmed_and_survives_a_crash() {
    let mut server = tokio::task::spawn_blocking(PostgresServer::start)
        .await
        .unwrap()
        .expect("a private PostgreSQL");
    let url = server.url();
    let schema = fresh_schema("retry_crash");
    let b = PostgresTaskBackend::new(config_on(url.clone(), &schema).await).unwrap();
    b.start().await.unwrap();
    let db = sql(&url).await;
    let args = json!({"n": uuid::Uuid::new_v4().to_string()});
    let key = CacheKey::from_json(FAILS, "test", &args).unwrap();
    let first = RefId::generate("test");
    let spec = TaskSpec::new(first.clone(), key, FAILS, "test", args);
    let job = registry::find(FAILS).map(TaskRegistration::job);
    b.submit(Submission::new(spec, job)).await.unwrap();
    assert_eq!(wait_end(&b, &first).await.info.status, TaskStatus::Failed);
    // The same call in flight again under another ref, committed asynchronously.
    let second = RefId::generate("test");
    db.batch_execute("SET synchronous_commit = off")
        .await
        .unwrap();
    db.execute(
        &format!(
            "INSERT INTO \"{schema}\".tasks (ref_id, cache_key, status, info, spec, task_name, namespace, created_ms,
                                             queued)
             VALUES ($1, $2, 'pending', '{{}}', '{{}}', 'x', 'test', 0, true)"
        ),
        &[&second.as_str(), &key.to_hex()],
    )
    .await
    .unwrap();
    let before = confirmations(&db, &schema).await;
    assert_eq!(
        b.retry(&first).await.unwrap(),
        RetryOutcome::AlreadyRunning(second.clone())
    );
    assert_eq!(
        confirmations(&db, &schema).await,
        before + 1,
        "the running ref was confirmed before retry handed it out"
    );
    tokio::task::block_in_place(|| server.restart()).expect("the server restarts");
    let db = sql(&url).await;
    assert_eq!(
        rows_of(&db, &schema, &second).await.0,
        1,
        "the ref retry handed out has its row after the crash"
    );
    drop(b);
}

/// Calls of the statements `patterns` name (each a piece of its text; `pg_stat_statements` shows constants as
/// `$n`) since the last reset, for schema `schema`'s statements, in the order asked.
async fn statement_calls(db: &tokio_postgres::Client, schema: &str, patterns: &[&str]) -> Vec<i64> {
    let rows = db
        .query(
            "SELECT calls, query FROM pg_stat_statements WHERE query LIKE '%' || $1 || '%'",
            &[&format!("\"{schema}\"")],
        )
        .await
        .unwrap();
    patterns
        .iter()
        .map(|p| {
            rows.iter()
                .filter(|r| {
                    let q: String = r.get(1);
                    q.split_whitespace()
                        .collect::<Vec<_>>()
                        .join(" ")
                        .contains(p)
                })
                .map(|r| r.get::<_, i64>(0))
                .sum()
        })
        .collect()
}

/// Issue 20, the `local` round trip's statements: a task held here with a run slot free is inserted started (no
/// start statement), its end settles this process's submission (no read of the row for `made_durable`) and the
/// `wait` that follows (no read either): submit → complete → poll is the insert, the end and `get`'s read. Each
/// fast answer is what the slow path answers: the `wait` here (from the end kept here) against the `wait` of
/// another replica (which reads the row) and `get`, for a complete task, a failed one, and one under
/// `max_concurrent` (which keeps its start statement); the executions counter counts every run; a task deleted
/// here is not answered from the kept end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_round_trip_is_the_insert_the_end_and_the_poll() {
    let server = tokio::task::spawn_blocking(|| {
        PostgresServer::start_with(PostgresServerOptions::default().stat_statements(true))
    })
    .await
    .unwrap()
    .expect("a private PostgreSQL");
    let url = server.url();
    let db = sql(&url).await;
    db.batch_execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        .await
        .unwrap();
    let schema = fresh_schema("round_trip");
    // A wide grace, so that no end on a loaded machine comes too late for its submission (no confirmation).
    let config = config_on(url.clone(), &schema)
        .await
        .durable_grace(Duration::from_secs(1));
    let b = PostgresTaskBackend::new(config.clone()).unwrap();
    let other = PostgresTaskBackend::new(config).unwrap();
    b.start().await.unwrap();
    other.start().await.unwrap();
    let id = format!("rt-{}", uuid::Uuid::new_v4());
    open(&id);
    // Warm: every statement prepared once.
    run_to_end(
        &b,
        json!({"gate": id, "warm": true}),
        Duration::from_secs(600),
    )
    .await;
    db.batch_execute("SELECT pg_stat_statements_reset()")
        .await
        .unwrap();

    const N: i64 = 10;
    let mut refs = Vec::new();
    for i in 0..N {
        let (sub, ref_id, _) = submission(
            json!({"gate": id, "i": i, "value": {"i": i, "b": [1, 2]}}),
            Duration::from_secs(600),
        );
        assert!(matches!(b.submit(sub).await.unwrap(), Submitted::Started(r) if r == ref_id));
        let waited = b
            .wait(&ref_id, Some(tokio::time::Instant::now() + PATIENCE))
            .await
            .unwrap();
        let got = b.get(&ref_id).await.unwrap();
        assert_eq!(
            waited.as_ref().map(|s| s.info.status),
            Some(TaskStatus::Complete)
        );
        assert_eq!(
            snapshot_json(waited.as_ref()),
            snapshot_json(got.as_ref()),
            "{ref_id}: the wait answered from the end kept here and get disagree"
        );
        refs.push(ref_id);
    }
    let [inserts, starts, reads, ends, records, statuses] = statement_calls(
        &db,
        &schema,
        &[
            "tasks (ref_id, cache_key, status",
            "deliveries = t.deliveries +",
            "octet_length(v.value)",
            "AS b (ref_id, status, info, record_ttl",
            "SELECT t.status, t.info, t.cache_key",
            "SELECT status FROM",
        ],
    )
    .await[..] else {
        unreachable!()
    };
    assert_eq!(
        (inserts, starts, ends, records),
        (N, 0, N, N),
        "per round trip: one insert (started), no start, one end, one read of the record by get"
    );
    assert_eq!(
        (reads, statuses),
        (0, 0),
        "no waiter's read: the submission and the wait were settled by the end written here"
    );

    // The slow paths answer the same: another replica's wait and get read the row.
    for ref_id in &refs {
        let mine = b.get(ref_id).await.unwrap();
        let theirs = other
            .wait(ref_id, Some(tokio::time::Instant::now() + PATIENCE))
            .await
            .unwrap();
        assert_eq!(snapshot_json(theirs.as_ref()), snapshot_json(mine.as_ref()));
    }
    // A failed task: the end kept here is the failure a read answers.
    let key = CacheKey::from_json(FAILS, "test", &json!({"rt": id})).unwrap();
    let failed = RefId::generate("test");
    let spec = TaskSpec::new(failed.clone(), key, FAILS, "test", json!({"rt": id}));
    b.submit(Submission::new(
        spec,
        registry::find(FAILS).map(TaskRegistration::job),
    ))
    .await
    .unwrap();
    let fast = b
        .wait(&failed, Some(tokio::time::Instant::now() + PATIENCE))
        .await
        .unwrap();
    let slow = other
        .wait(&failed, Some(tokio::time::Instant::now() + PATIENCE))
        .await
        .unwrap();
    assert_eq!(
        fast.as_ref().map(|s| s.info.status),
        Some(TaskStatus::Failed)
    );
    assert_eq!(snapshot_json(fast.as_ref()), snapshot_json(slow.as_ref()));
    assert_eq!(
        snapshot_json(fast.as_ref()),
        snapshot_json(b.get(&failed).await.unwrap().as_ref())
    );
    // Under `max_concurrent` the task is inserted pending and started by its own statement, and answers the same.
    db.batch_execute("SELECT pg_stat_statements_reset()")
        .await
        .unwrap();
    let args = json!({"gate": id, "limited": true, "value": 7});
    let key = CacheKey::from_json(GATED, "test", &args).unwrap();
    let limited = RefId::generate("test");
    let spec = TaskSpec::new(limited.clone(), key, GATED, "test", args).with_options(
        TaskOptions::default()
            .ttl(Some(Duration::from_secs(600)))
            .max_concurrent(Some(1)),
    );
    b.submit(Submission::new(
        spec,
        registry::find(GATED).map(TaskRegistration::job),
    ))
    .await
    .unwrap();
    let fast = b
        .wait(&limited, Some(tokio::time::Instant::now() + PATIENCE))
        .await
        .unwrap();
    let slow = other
        .wait(&limited, Some(tokio::time::Instant::now() + PATIENCE))
        .await
        .unwrap();
    assert_eq!(snapshot_json(fast.as_ref()), snapshot_json(slow.as_ref()));
    assert_eq!(
        statement_calls(&db, &schema, &["deliveries = t.deliveries +"]).await,
        vec![1],
        "a task under max_concurrent is started by the start statement"
    );
    // Every run counted once as an execution (the warm-up, N, the failed one, the limited one).
    assert_eq!(b.stats().await.unwrap().executions, N as u64 + 3);
    // Deleted here: its `wait` reads the row (none), not the end kept here.
    let (sub, gone, _) = submission(json!({"gate": id, "gone": true}), Duration::from_secs(600));
    b.submit(sub).await.unwrap();
    assert!(b.delete(&gone).await.unwrap());
    assert!(
        b.wait(&gone, Some(tokio::time::Instant::now() + PATIENCE))
            .await
            .unwrap()
            .is_none(),
        "a deleted task's wait answers nothing"
    );
    drop((b, other));
    drop(server);
}
