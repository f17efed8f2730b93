//! The backend conformance suite: the behaviour every [`TaskBackend`] must show, as tests any backend runs
//! against itself. Feature `test-utils`.
//!
//! The suite drives a backend with tasks registered by name in this module (so that a backend whose workers run
//! in another task or process finds them too) and controlled through in-process gates, never sleeps. Run it with
//! [`backend_conformance!`](crate::backend_conformance):
//!
//! ```text
//! fn make(settings: refcache_core::conformance::Settings) -> BoxFuture<'static, Fixture> { ... }
//! refcache_core::backend_conformance!(make);
//! ```

use std::any::Any;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::contract::backend::TaskSnapshot;
use crate::contract::backend::{CancelOutcome, Submission, Submitted, TaskBackend};
use crate::contract::context::TaskContext;
use crate::contract::list::TaskFilter;
use crate::contract::registry::{self, TaskRegistration};
use crate::contract::spec::TaskOptions;
use crate::contract::spec::TaskSpec;
use crate::model::error::BackendError;
use crate::model::key::CacheKey;
use crate::model::ref_id::RefId;
use crate::model::task::{TaskError, TaskStatus};

/// Limits the suite asks a backend to be built with.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Settings {
    /// Tasks running at once.
    pub max_workers: usize,
    /// Tasks waiting at most.
    pub max_queued: usize,
    /// Grace period of a cancelled task.
    pub cancel_grace: Duration,
}

/// A backend under test, plus whatever must live as long as it (a server process, a temp dir).
pub struct Fixture {
    /// The backend.
    pub backend: Arc<dyn TaskBackend>,
    _guard: Option<Box<dyn Any + Send + Sync>>,
}

impl Fixture {
    /// A fixture of `backend` alone.
    pub fn new(backend: Arc<dyn TaskBackend>) -> Self {
        Self {
            backend,
            _guard: None,
        }
    }

    /// A fixture that keeps `guard` alive as long as the backend.
    pub fn with_guard(backend: Arc<dyn TaskBackend>, guard: impl Any + Send + Sync) -> Self {
        Self {
            backend,
            _guard: Some(Box::new(guard)),
        }
    }
}

/// How the suite builds a backend.
pub type Factory = fn(Settings) -> BoxFuture<'static, Fixture>;

/// Generous bound for anything the suite waits on; reached only when a backend is broken.
const PATIENCE: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------------------------------
// Gates: how the suite controls its tasks.

struct Gate {
    open: watch::Sender<bool>,
    executions: AtomicU32,
}

fn gates() -> &'static Mutex<HashMap<String, Arc<Gate>>> {
    static GATES: OnceLock<Mutex<HashMap<String, Arc<Gate>>>> = OnceLock::new();
    GATES.get_or_init(Default::default)
}

fn gate(id: &str) -> Arc<Gate> {
    gates()
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(id.to_owned())
        .or_insert_with(|| {
            Arc::new(Gate {
                open: watch::channel(false).0,
                executions: AtomicU32::new(0),
            })
        })
        .clone()
}

/// A fresh gate id.
fn new_gate() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

fn open(id: &str) {
    gate(id).open.send_replace(true);
}

fn executions(id: &str) -> u32 {
    gate(id).executions.load(Ordering::SeqCst)
}

async fn wait_open(id: &str) {
    let mut rx = gate(id).open.subscribe();
    let _ = rx.wait_for(|open| *open).await;
}

fn arg_str(args: &Value, name: &str) -> String {
    args.get(name)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

// ---------------------------------------------------------------------------------------------------------------
// The suite's tasks, registered by name.

const GATED: &str = "refcache.conformance.gated";
const FAIL: &str = "refcache.conformance.fail";
const PANIC: &str = "refcache.conformance.panic";
const PROGRESS: &str = "refcache.conformance.progress";
const STUBBORN: &str = "refcache.conformance.stubborn";
const FLAKY: &str = "refcache.conformance.flaky";

fn starts() -> &'static Mutex<Vec<String>> {
    static STARTS: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    STARTS.get_or_init(Default::default)
}

/// The order in which gated tasks of these gates started.
fn start_order(ids: &[&str]) -> Vec<String> {
    let all = starts().lock().unwrap_or_else(PoisonError::into_inner);
    all.iter()
        .filter(|id| ids.contains(&id.as_str()))
        .cloned()
        .collect()
}

/// Counts an execution, waits for its gate (or its cancellation), returns `value`.
fn gated(args: Value, ctx: TaskContext) -> BoxFuture<'static, Result<Value, TaskError>> {
    Box::pin(async move {
        let id = arg_str(&args, "gate");
        gate(&id).executions.fetch_add(1, Ordering::SeqCst);
        starts()
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(id.clone());
        tokio::select! {
            () = wait_open(&id) => Ok(args.get("value").cloned().unwrap_or(Value::Null)),
            () = ctx.cancelled() => Err(TaskError::new("stopped on cancel")),
        }
    })
}

fn fail(args: Value, _ctx: TaskContext) -> BoxFuture<'static, Result<Value, TaskError>> {
    Box::pin(async move {
        let id = arg_str(&args, "gate");
        gate(&id).executions.fetch_add(1, Ordering::SeqCst);
        let error = TaskError::new(arg_str(&args, "message"));
        let permanent = args
            .get("permanent")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        Err(if permanent { error.permanent() } else { error })
    })
}

/// Fails its first `fail` executions (counted per gate), then returns `"ok"`.
fn flaky(args: Value, _ctx: TaskContext) -> BoxFuture<'static, Result<Value, TaskError>> {
    Box::pin(async move {
        let id = arg_str(&args, "gate");
        let n = gate(&id).executions.fetch_add(1, Ordering::SeqCst) + 1;
        let fail = args.get("fail").and_then(Value::as_u64).unwrap_or(0);
        if u64::from(n) <= fail {
            Err(TaskError::new(format!("transient {n}")))
        } else {
            Ok(json!("ok"))
        }
    })
}

fn panics(args: Value, _ctx: TaskContext) -> BoxFuture<'static, Result<Value, TaskError>> {
    Box::pin(async move { panic!("{}", arg_str(&args, "message")) })
}

/// Reports progress 1 of 2, then waits for its gate.
fn progress(args: Value, ctx: TaskContext) -> BoxFuture<'static, Result<Value, TaskError>> {
    Box::pin(async move {
        let id = arg_str(&args, "gate");
        gate(&id).executions.fetch_add(1, Ordering::SeqCst);
        let _ = ctx.progress(1.0, Some(2.0), "halfway");
        wait_open(&id).await;
        Ok(json!("done"))
    })
}

/// Ignores cancellation: waits for its gate whatever happens, then returns `late`.
fn stubborn(args: Value, _ctx: TaskContext) -> BoxFuture<'static, Result<Value, TaskError>> {
    Box::pin(async move {
        let id = arg_str(&args, "gate");
        gate(&id).executions.fetch_add(1, Ordering::SeqCst);
        wait_open(&id).await;
        Ok(json!("late"))
    })
}

inventory::submit!(TaskRegistration::new(|| GATED, gated));
inventory::submit!(TaskRegistration::new(|| FAIL, fail));
inventory::submit!(TaskRegistration::new(|| PANIC, panics));
inventory::submit!(TaskRegistration::new(|| PROGRESS, progress));
inventory::submit!(TaskRegistration::new(|| STUBBORN, stubborn));
inventory::submit!(TaskRegistration::new(|| FLAKY, flaky));

/// A submission of the registered task `name` with `args`, carrying the local job as an in-process caller would.
fn submission(name: &str, args: Value) -> (Submission, RefId, CacheKey) {
    submission_with(name, args, TaskOptions::default())
}

/// The same, with options.
fn submission_with(name: &str, args: Value, options: TaskOptions) -> (Submission, RefId, CacheKey) {
    let key = CacheKey::from_json(name, "conformance", &args).expect("JSON args");
    let ref_id = RefId::generate("conformance");
    let spec = TaskSpec::new(ref_id.clone(), key, name, "conformance", args)
        .with_options(options.ttl(Some(Duration::from_secs(600))));
    let job = registry::find(name).map(TaskRegistration::job);
    (Submission::new(spec, job), ref_id, key)
}

async fn submit(
    backend: &dyn TaskBackend,
    name: &str,
    args: Value,
) -> (Submitted, RefId, CacheKey) {
    let (sub, ref_id, key) = submission(name, args);
    let submitted = backend.submit(sub).await.expect("submit");
    (submitted, ref_id, key)
}

/// The finished value for `key` as `RefCache` finds it: the near cache, then the backend's remote tier.
async fn find(
    backend: &dyn TaskBackend,
    key: &CacheKey,
) -> Option<Arc<crate::contract::store::StoredValue>> {
    if let Some(near) = backend.near_cache()
        && let Some(found) = near.get(key).await
    {
        return Some(found);
    }
    backend.lookup(key).await.expect("lookup")
}

async fn wait_terminal(backend: &dyn TaskBackend, ref_id: &RefId) -> TaskSnapshot {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let snapshot = backend
        .wait(ref_id, Some(deadline))
        .await
        .expect("wait")
        .expect("task known");
    assert!(
        snapshot.info.status.is_terminal(),
        "task did not finish within {PATIENCE:?}: {:?}",
        snapshot.info
    );
    snapshot
}

/// Waits, event by event, until `pred` holds for the task's record.
async fn wait_until(
    backend: &dyn TaskBackend,
    ref_id: &RefId,
    what: &str,
    pred: impl Fn(&TaskSnapshot) -> bool,
) {
    let give_up = tokio::time::Instant::now() + PATIENCE;
    loop {
        let snapshot = backend.get(ref_id).await.expect("get").expect("task known");
        if pred(&snapshot) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < give_up,
            "gave up waiting for {what}: {:?}",
            snapshot.info
        );
        // Short bounded waits on the backend's own event path; returns early when the task ends.
        let _ = backend
            .wait(
                ref_id,
                Some(tokio::time::Instant::now() + Duration::from_millis(20)),
            )
            .await;
    }
}

async fn wait_executions(id: &str, n: u32) {
    let give_up = tokio::time::Instant::now() + PATIENCE;
    while executions(id) < n {
        assert!(tokio::time::Instant::now() < give_up, "task never started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn settings() -> Settings {
    Settings {
        max_workers: 4,
        max_queued: 100,
        cancel_grace: Duration::from_secs(5),
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The tests.

/// A submitted task is known at once, `processing` once started, and `complete` with its value after.
pub async fn submit_wait_complete(make: Factory) {
    let fx = make(settings()).await;
    let b = &*fx.backend;
    let id = new_gate();
    let (submitted, ref_id, key) =
        submit(b, GATED, json!({"gate": id, "value": {"answer": 42}})).await;
    assert!(
        matches!(submitted, Submitted::Started(ref r) if *r == ref_id),
        "{submitted:?}"
    );
    let info = b
        .get(&ref_id)
        .await
        .unwrap()
        .expect("known right after submit")
        .info;
    assert!(
        matches!(info.status, TaskStatus::Processing | TaskStatus::Pending),
        "{info:?}"
    );
    wait_executions(&id, 1).await;
    assert_eq!(
        b.get(&ref_id).await.unwrap().unwrap().info.status,
        TaskStatus::Processing
    );
    assert!(find(b, &key).await.is_none(), "no value before completion");
    open(&id);
    let done = wait_terminal(b, &ref_id).await;
    assert_eq!(done.info.status, TaskStatus::Complete);
    assert_eq!(
        done.value.expect("value with complete").value,
        json!({"answer": 42})
    );
    let hit = find(b, &key).await.expect("a hit after completion");
    assert_eq!(hit.ref_id, ref_id);
    assert_eq!(executions(&id), 1);
}

/// Concurrent submissions of one key join the first execution: exactly one runs.
pub async fn single_flight(make: Factory) {
    let fx = make(settings()).await;
    let b = fx.backend.clone();
    let id = new_gate();
    let args = json!({"gate": id, "value": 1});
    let mut handles = Vec::new();
    for _ in 0..20 {
        let b = b.clone();
        let args = args.clone();
        handles.push(tokio::spawn(
            async move { submit(&*b, GATED, args).await.0 },
        ));
    }
    let mut refs = Vec::new();
    for h in handles {
        refs.push(h.await.unwrap().ref_id().clone());
    }
    refs.dedup();
    assert_eq!(
        refs.len(),
        1,
        "every caller must get the same ref id: {refs:?}"
    );
    wait_executions(&id, 1).await;
    open(&id);
    wait_terminal(&*b, &refs[0]).await;
    assert_eq!(executions(&id), 1, "20 identical submissions must run once");
    let stats = b.stats().await.unwrap();
    assert!(stats.coalesced >= 19, "{stats:?}");
}

/// `wait` returns at its deadline when the task is still running, with the running record.
pub async fn wait_respects_deadline(make: Factory) {
    let fx = make(settings()).await;
    let b = &*fx.backend;
    let id = new_gate();
    let (_, ref_id, _) = submit(b, GATED, json!({"gate": id})).await;
    let start = tokio::time::Instant::now();
    let snapshot = b
        .wait(&ref_id, Some(start + Duration::from_millis(100)))
        .await
        .unwrap()
        .unwrap();
    let waited = start.elapsed();
    assert!(!snapshot.info.status.is_terminal());
    assert!(
        waited >= Duration::from_millis(100),
        "returned before the deadline: {waited:?}"
    );
    assert!(waited < PATIENCE, "overslept: {waited:?}");
    open(&id);
    wait_terminal(b, &ref_id).await;
}

/// An error fails the task with its text, is not cached, and a new submission runs again.
pub async fn failure_is_not_cached(make: Factory) {
    let fx = make(settings()).await;
    let b = &*fx.backend;
    let id = new_gate();
    let args = json!({"gate": id, "message": "disk on fire"});
    let (_, ref_id, key) = submit(b, FAIL, args.clone()).await;
    let done = wait_terminal(b, &ref_id).await;
    assert_eq!(done.info.status, TaskStatus::Failed);
    assert_eq!(done.info.error.unwrap().message, "disk on fire");
    assert!(
        find(b, &key).await.is_none(),
        "an error is never a cached value"
    );
    let (again, ref2, _) = submit(b, FAIL, args).await;
    assert!(
        matches!(again, Submitted::Started(_)),
        "a failed key runs again: {again:?}"
    );
    wait_terminal(b, &ref2).await;
    assert_eq!(executions(&id), 2);
}

/// A panic fails the task with `panicked: <message>`; the backend keeps working.
pub async fn panic_becomes_failure(make: Factory) {
    let fx = make(settings()).await;
    let b = &*fx.backend;
    let (_, ref_id, _) = submit(b, PANIC, json!({"message": "kaboom", "n": new_gate()})).await;
    let done = wait_terminal(b, &ref_id).await;
    assert_eq!(done.info.status, TaskStatus::Failed);
    assert_eq!(done.info.error.unwrap().message, "panicked: kaboom");
    let id = new_gate();
    open(&id);
    let (_, ok_ref, _) = submit(b, GATED, json!({"gate": id, "value": 1})).await;
    assert_eq!(
        wait_terminal(b, &ok_ref).await.info.status,
        TaskStatus::Complete
    );
}

/// Progress reports are visible to the next `get`.
pub async fn progress_is_visible(make: Factory) {
    let fx = make(settings()).await;
    let b = &*fx.backend;
    let id = new_gate();
    let (_, ref_id, _) = submit(b, PROGRESS, json!({"gate": id})).await;
    wait_until(b, &ref_id, "progress", |s| s.info.progress.is_some()).await;
    let progress = b
        .get(&ref_id)
        .await
        .unwrap()
        .unwrap()
        .info
        .progress
        .unwrap();
    assert_eq!(
        (
            progress.current,
            progress.total,
            progress.message.as_deref()
        ),
        (1.0, Some(2.0), Some("halfway"))
    );
    assert_eq!(progress.percentage(), Some(50.0));
    open(&id);
    wait_terminal(b, &ref_id).await;
}

/// `watch`, where the backend can follow a task: the receiver wakes on progress, and on the end.
pub async fn watch_follows_progress(make: Factory) {
    let fx = make(settings()).await;
    let b = &*fx.backend;
    let id = new_gate();
    let (_, ref_id, _) = submit(b, PROGRESS, json!({"gate": id})).await;
    let Some(mut rx) = b.watch(&ref_id).await.unwrap() else {
        // This backend cannot follow tasks: live progress forwarding is off, and nothing else depends on it.
        open(&id);
        wait_terminal(b, &ref_id).await;
        return;
    };
    let seen = tokio::time::timeout(PATIENCE, rx.wait_for(|i| i.progress.is_some()))
        .await
        .expect("watch wakes on progress")
        .expect("the sender lives while the task runs")
        .progress
        .clone();
    assert_eq!(seen.and_then(|p| p.message).as_deref(), Some("halfway"));
    open(&id);
    let end = tokio::time::timeout(PATIENCE, rx.wait_for(|i| i.status.is_terminal())).await;
    let ended = end
        .expect("watch wakes on the end")
        .expect("the terminal record is seen before the sender goes")
        .status;
    assert_eq!(ended, TaskStatus::Complete);
    assert!(
        b.watch(&RefId::generate("conformance"))
            .await
            .unwrap()
            .is_none(),
        "unknown: None"
    );
}

/// Cancel: sticky, idempotent, distinct answers for unknown and finished tasks.
pub async fn cancel_semantics(make: Factory) {
    let fx = make(settings()).await;
    let b = &*fx.backend;
    let id = new_gate();
    let (_, ref_id, key) = submit(b, GATED, json!({"gate": id})).await;
    wait_executions(&id, 1).await;
    assert_eq!(b.cancel(&ref_id).await.unwrap(), CancelOutcome::Cancelled);
    assert_eq!(
        b.cancel(&ref_id).await.unwrap(),
        CancelOutcome::Cancelled,
        "cancel is idempotent"
    );
    let done = wait_terminal(b, &ref_id).await;
    assert_eq!(done.info.status, TaskStatus::Cancelled);
    assert!(find(b, &key).await.is_none());
    assert_eq!(
        b.cancel(&RefId::generate("conformance")).await.unwrap(),
        CancelOutcome::NotFound
    );

    let finished = new_gate();
    open(&finished);
    let (_, fin_ref, _) = submit(b, GATED, json!({"gate": finished, "value": 1})).await;
    wait_terminal(b, &fin_ref).await;
    assert_eq!(
        b.cancel(&fin_ref).await.unwrap(),
        CancelOutcome::AlreadyFinished(TaskStatus::Complete)
    );
}

/// A result that arrives after a cancel is discarded, not cached; the status stays `cancelled`.
pub async fn late_result_is_discarded(make: Factory) {
    let fx = make(settings()).await;
    let b = &*fx.backend;
    let id = new_gate();
    let (_, ref_id, key) = submit(b, STUBBORN, json!({"gate": id})).await;
    wait_executions(&id, 1).await;
    assert_eq!(b.cancel(&ref_id).await.unwrap(), CancelOutcome::Cancelled);
    open(&id); // the task now finishes, within its grace period
    // Let the late result arrive and be dropped; the record must stay cancelled.
    let give_up = tokio::time::Instant::now() + PATIENCE;
    while b.stats().await.unwrap().running > 0 {
        assert!(
            tokio::time::Instant::now() < give_up,
            "stubborn task never wound down"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let info = b.get(&ref_id).await.unwrap().unwrap().info;
    assert_eq!(info.status, TaskStatus::Cancelled);
    assert!(
        find(b, &key).await.is_none(),
        "a late result must not be cached"
    );
}

/// Over `max_workers`, tasks are `pending` with a queue position; cancelling one removes it from the queue.
pub async fn queue_and_pending(make: Factory) {
    let fx = make(Settings {
        max_workers: 1,
        ..settings()
    })
    .await;
    let b = &*fx.backend;
    let first = new_gate();
    let (_, first_ref, _) = submit(b, GATED, json!({"gate": first, "value": 1})).await;
    wait_executions(&first, 1).await;
    let second = new_gate();
    let third = new_gate();
    let (_, second_ref, _) = submit(b, GATED, json!({"gate": second, "value": 2})).await;
    let (_, third_ref, _) = submit(b, GATED, json!({"gate": third, "value": 3})).await;
    let info = b.get(&second_ref).await.unwrap().unwrap().info;
    assert_eq!(info.status, TaskStatus::Pending);
    assert_eq!(info.queue_position, Some(1));
    assert_eq!(
        b.get(&third_ref)
            .await
            .unwrap()
            .unwrap()
            .info
            .queue_position,
        Some(2)
    );
    assert_eq!(
        b.cancel(&second_ref).await.unwrap(),
        CancelOutcome::Cancelled
    );
    assert_eq!(
        b.get(&third_ref)
            .await
            .unwrap()
            .unwrap()
            .info
            .queue_position,
        Some(1)
    );
    open(&first);
    open(&third);
    wait_terminal(b, &first_ref).await;
    assert_eq!(
        wait_terminal(b, &third_ref).await.info.status,
        TaskStatus::Complete
    );
    assert_eq!(
        executions(&second),
        0,
        "a cancelled pending task never runs"
    );
}

/// A task with no local job runs by its registered name; an unknown name fails clearly instead of hanging.
pub async fn runs_by_name(make: Factory) {
    let fx = make(settings()).await;
    let b = &*fx.backend;
    let id = new_gate();
    open(&id);
    let (mut sub, ref_id, _) = submission(GATED, json!({"gate": id, "value": "by name"}));
    sub.job = None;
    b.submit(sub).await.unwrap();
    let done = wait_terminal(b, &ref_id).await;
    assert_eq!(done.value.unwrap().value, json!("by name"));

    let (mut sub, ref_id, _) = submission("refcache.conformance.no-such-task", json!({}));
    sub.job = None;
    b.submit(sub).await.unwrap();
    let done = wait_terminal(b, &ref_id).await;
    assert_eq!(done.info.status, TaskStatus::Failed);
    assert!(
        done.info.error.unwrap().message.contains("unknown task"),
        "clear error for an unknown name"
    );
}

/// Unknown ids are unknown to `get` and `wait`.
pub async fn unknown_ids(make: Factory) {
    let fx = make(settings()).await;
    let b = &*fx.backend;
    let unknown = RefId::generate("conformance");
    assert!(b.get(&unknown).await.unwrap().is_none());
    assert!(
        b.wait(&unknown, Some(tokio::time::Instant::now()))
            .await
            .unwrap()
            .is_none()
    );
}

/// Lists are newest first, filter by status, and page with a cursor.
pub async fn list_and_page(make: Factory) {
    let fx = make(settings()).await;
    let b = &*fx.backend;
    let mut refs = Vec::new();
    for i in 0..5 {
        let id = new_gate();
        open(&id);
        let (_, r, _) = submit(b, GATED, json!({"gate": id, "value": i})).await;
        wait_terminal(b, &r).await;
        refs.push(r);
        // Distinct creation times, so that newest-first is well defined.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let failing = new_gate();
    let (_, failed_ref, _) = submit(b, FAIL, json!({"gate": failing, "message": "x"})).await;
    wait_terminal(b, &failed_ref).await;

    let complete = b
        .list(TaskFilter::all().status(TaskStatus::Complete).limit(2))
        .await
        .unwrap();
    let listed: Vec<&RefId> = complete.tasks.iter().map(|t| &t.ref_id).collect();
    assert_eq!(listed, vec![&refs[4], &refs[3]], "newest first");
    let cursor = complete.next_cursor.expect("more pages");
    let next = b
        .list(
            TaskFilter::all()
                .status(TaskStatus::Complete)
                .limit(2)
                .cursor(cursor),
        )
        .await
        .unwrap();
    let listed: Vec<&RefId> = next.tasks.iter().map(|t| &t.ref_id).collect();
    assert_eq!(listed, vec![&refs[2], &refs[1]]);
    let failed = b
        .list(TaskFilter::all().status(TaskStatus::Failed))
        .await
        .unwrap();
    assert!(failed.tasks.iter().all(|t| t.status == TaskStatus::Failed));
    assert!(failed.tasks.iter().any(|t| t.ref_id == failed_ref));
}

/// After `shutdown`, new work is refused with `ShuttingDown`, and what ran is finished.
pub async fn shutdown_refuses_work(make: Factory) {
    let fx = make(settings()).await;
    let b = &*fx.backend;
    let id = new_gate();
    let (_, ref_id, _) = submit(b, GATED, json!({"gate": id})).await;
    wait_executions(&id, 1).await;
    b.shutdown(Duration::from_millis(50)).await.unwrap();
    let info = b.get(&ref_id).await.unwrap().unwrap().info;
    assert_eq!(info.status, TaskStatus::Cancelled, "{info:?}");
    assert_eq!(info.status_message.as_deref(), Some("shutdown"));
    let (sub, _, _) = submission(GATED, json!({"gate": new_gate()}));
    assert!(matches!(
        b.submit(sub).await,
        Err(BackendError::ShuttingDown)
    ));
}

/// Retries run with backoff until success; the record counts them and keeps one history entry per failure.
pub async fn retries_until_success(make: Factory) {
    let fx = make(settings()).await;
    let b = &*fx.backend;
    let id = new_gate();
    let options = TaskOptions::default().max_retries(3).retry_backoff(
        Some(Duration::from_millis(10)),
        Some(Duration::from_millis(50)),
    );
    let (sub, ref_id, _) = submission_with(FLAKY, json!({"gate": id, "fail": 2}), options);
    b.submit(sub).await.unwrap();
    let done = wait_terminal(b, &ref_id).await;
    assert_eq!(done.info.status, TaskStatus::Complete, "{:?}", done.info);
    assert_eq!(executions(&id), 3);
    assert_eq!(done.info.retry_count, 2);
    let errors: Vec<&str> = done
        .info
        .retry_history
        .iter()
        .map(|r| r.error.as_str())
        .collect();
    assert_eq!(errors, vec!["transient 1", "transient 2"]);
    assert!(b.stats().await.unwrap().retries >= 2);
}

/// An error marked permanent is not retried.
pub async fn permanent_errors_are_not_retried(make: Factory) {
    let fx = make(settings()).await;
    let b = &*fx.backend;
    let id = new_gate();
    let options = TaskOptions::default()
        .max_retries(5)
        .retry_backoff(Some(Duration::from_millis(10)), None);
    let args = json!({"gate": id, "message": "bad input", "permanent": true});
    let (sub, ref_id, _) = submission_with(FAIL, args, options);
    b.submit(sub).await.unwrap();
    let done = wait_terminal(b, &ref_id).await;
    assert_eq!(done.info.status, TaskStatus::Failed);
    assert_eq!(executions(&id), 1);
}

/// Past its execution timeout a task fails with code `TIMEOUT`, and the work is stopped.
pub async fn execution_timeout_fails_the_task(make: Factory) {
    let fx = make(settings()).await;
    let b = &*fx.backend;
    let id = new_gate();
    let options = TaskOptions::default().execution_timeout(Some(Duration::from_millis(200)));
    let (sub, ref_id, key) = submission_with(GATED, json!({"gate": id, "value": 1}), options);
    b.submit(sub).await.unwrap();
    let done = wait_terminal(b, &ref_id).await;
    assert_eq!(done.info.status, TaskStatus::Failed);
    let error = done.info.error.expect("an error");
    assert_eq!(error.code.as_deref(), Some("TIMEOUT"));
    assert_eq!(error.message, "Operation exceeded timeout of 0.2 seconds");
    assert_eq!(
        error.details.expect("details")["timeout_seconds"],
        json!(0.2)
    );
    assert!(error.remediation.is_some());
    open(&id); // too late: the result must not land
    assert!(find(b, &key).await.is_none());
    assert!(b.stats().await.unwrap().timeouts >= 1);
}

/// Higher priority starts first; FIFO within a priority.
pub async fn priority_orders_the_queue(make: Factory) {
    let fx = make(Settings {
        max_workers: 1,
        ..settings()
    })
    .await;
    let b = &*fx.backend;
    let occupier = new_gate();
    let (_, occ_ref, _) = submit(b, GATED, json!({"gate": occupier, "value": 0})).await;
    wait_executions(&occupier, 1).await;
    let (low1, low2, high) = (new_gate(), new_gate(), new_gate());
    for (id, priority) in [(&low1, 0), (&low2, 0), (&high, 5)] {
        open(id);
        let options = TaskOptions::default().priority(priority);
        b.submit(submission_with(GATED, json!({"gate": id, "value": 1}), options).0)
            .await
            .unwrap();
    }
    open(&occupier);
    wait_terminal(b, &occ_ref).await;
    wait_executions(&low2, 1).await;
    assert_eq!(
        start_order(&[&low1, &low2, &high]),
        vec![high.clone(), low1.clone(), low2.clone()]
    );
}

/// `max_concurrent` holds a task name at its limit, though workers are free.
pub async fn max_concurrent_per_task(make: Factory) {
    let fx = make(settings()).await;
    let b = &*fx.backend;
    let (first, second) = (new_gate(), new_gate());
    let options = TaskOptions::default().max_concurrent(Some(1));
    let (sub, first_ref, _) =
        submission_with(GATED, json!({"gate": first, "value": 1}), options.clone());
    b.submit(sub).await.unwrap();
    wait_executions(&first, 1).await;
    let (sub, second_ref, _) = submission_with(GATED, json!({"gate": second, "value": 2}), options);
    b.submit(sub).await.unwrap();
    let info = b.get(&second_ref).await.unwrap().unwrap().info;
    assert_eq!(info.status, TaskStatus::Pending, "{info:?}");
    assert_eq!(executions(&second), 0);
    open(&first);
    open(&second);
    wait_terminal(b, &first_ref).await;
    assert_eq!(
        wait_terminal(b, &second_ref).await.info.status,
        TaskStatus::Complete
    );
}

/// `retry` re-runs a failed task under its ref id, and says why when it cannot.
pub async fn retry_reruns_a_failed_task(make: Factory) {
    let fx = make(settings()).await;
    let b = &*fx.backend;
    let id = new_gate();
    let (_, ref_id, _) = submit(b, FLAKY, json!({"gate": id, "fail": 1})).await;
    assert_eq!(
        wait_terminal(b, &ref_id).await.info.status,
        TaskStatus::Failed
    );
    assert_eq!(
        b.retry(&ref_id).await.unwrap(),
        crate::contract::backend::RetryOutcome::Restarted
    );
    let done = wait_terminal(b, &ref_id).await;
    assert_eq!(done.info.status, TaskStatus::Complete);
    assert_eq!(done.value.unwrap().value, json!("ok"));
    assert_eq!(
        b.retry(&ref_id).await.unwrap(),
        crate::contract::backend::RetryOutcome::NotFailed(TaskStatus::Complete)
    );
    let unknown = RefId::generate("conformance");
    assert_eq!(
        b.retry(&unknown).await.unwrap(),
        crate::contract::backend::RetryOutcome::NotFound
    );
}

/// `end_session` cancels a session's running work and drops all its records; other sessions are untouched.
pub async fn end_session_drops_the_session(make: Factory) {
    let fx = make(settings()).await;
    let b = &*fx.backend;
    let in_session = |s: &str| TaskOptions::default().session_id(Some(s.to_owned()));
    let (running, done, other) = (new_gate(), new_gate(), new_gate());
    open(&done);
    open(&other);
    let (sub, running_ref, _) = submission_with(GATED, json!({"gate": running}), in_session("s1"));
    b.submit(sub).await.unwrap();
    let (sub, done_ref, _) =
        submission_with(GATED, json!({"gate": done, "value": 1}), in_session("s1"));
    b.submit(sub).await.unwrap();
    let (sub, other_ref, _) =
        submission_with(GATED, json!({"gate": other, "value": 1}), in_session("s2"));
    b.submit(sub).await.unwrap();
    wait_terminal(b, &done_ref).await;
    wait_terminal(b, &other_ref).await;
    wait_executions(&running, 1).await;
    assert_eq!(b.end_session("s1").await.unwrap(), 2);
    assert!(b.get(&running_ref).await.unwrap().is_none());
    assert!(b.get(&done_ref).await.unwrap().is_none());
    assert!(
        b.get(&other_ref).await.unwrap().is_some(),
        "another session is untouched"
    );
    assert!(
        b.list(TaskFilter::all().session("s1"))
            .await
            .unwrap()
            .tasks
            .is_empty()
    );
}

/// `cleanup(max_age)` removes finished records older than `max_age` and says how many.
pub async fn cleanup_removes_old_records(make: Factory) {
    let fx = make(settings()).await;
    let b = &*fx.backend;
    let id = new_gate();
    open(&id);
    let (_, ref_id, _) = submit(b, GATED, json!({"gate": id, "value": 1})).await;
    wait_terminal(b, &ref_id).await;
    assert_eq!(
        b.cleanup(Duration::from_secs(3600)).await.unwrap(),
        0,
        "nothing that old"
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(b.cleanup(Duration::from_millis(10)).await.unwrap() >= 1);
    assert!(b.get(&ref_id).await.unwrap().is_none());
}

/// `delete` drops a finished task's record and value; an in-flight task is cancelled and forgotten, and its late
/// value is never stored. Deleting again answers `false`; the same call then runs afresh.
pub async fn delete_drops_record_and_value(make: Factory) {
    let fx = make(settings()).await;
    let b = &*fx.backend;
    let done = new_gate();
    open(&done);
    let (_, done_ref, done_key) = submit(b, GATED, json!({"gate": done, "value": 7})).await;
    wait_terminal(b, &done_ref).await;
    assert!(find(b, &done_key).await.is_some());
    assert!(
        b.delete(&done_ref).await.unwrap(),
        "there was something to delete"
    );
    assert!(
        b.get(&done_ref).await.unwrap().is_none(),
        "the record is gone"
    );
    assert!(find(b, &done_key).await.is_none(), "the value is gone");
    assert!(!b.delete(&done_ref).await.unwrap(), "deleting twice");

    let running = new_gate();
    let args = json!({"gate": running, "value": 8});
    let (_, running_ref, running_key) = submit(b, GATED, args.clone()).await;
    wait_executions(&running, 1).await;
    assert!(b.delete(&running_ref).await.unwrap());
    assert!(b.get(&running_ref).await.unwrap().is_none());
    open(&running);
    let (again, again_ref, _) = submit(b, GATED, args).await;
    assert!(
        matches!(again, Submitted::Started(_)),
        "a deleted execution is not joined: {again:?}"
    );
    let snapshot = wait_terminal(b, &again_ref).await;
    assert_eq!(snapshot.info.status, TaskStatus::Complete);
    assert_eq!(
        find(b, &running_key).await.map(|v| v.ref_id.clone()),
        Some(again_ref),
        "the key's value is the new execution's, never the deleted one's"
    );
    assert!(!b.delete(&RefId::generate("conformance")).await.unwrap());
}

/// A task's namespace, policy, session and preview settings travel with it: on its record, on its stored value,
/// and through a list filtered by namespace.
pub async fn access_travels_with_the_task(make: Factory) {
    let fx = make(settings()).await;
    let b = &*fx.backend;
    let id = new_gate();
    open(&id);
    let args = json!({"gate": id, "value": [1, 2, 3]});
    let key = CacheKey::from_json(GATED, "user:alice", &args).expect("JSON args");
    let ref_id = RefId::generate("conformance");
    let policy = Arc::new(crate::model::access::AccessPolicy::execute_only().deny("agent:evil-*"));
    let options = TaskOptions::default()
        .ttl(Some(Duration::from_secs(600)))
        .session_id(Some("s1".into()))
        .preview(
            Some(50),
            Some(crate::model::preview::PreviewStrategy::Paginate),
        );
    let spec = TaskSpec::new(ref_id.clone(), key, GATED, "user:alice", args)
        .with_options(options)
        .with_policy(policy.clone());
    let job = registry::find(GATED).map(TaskRegistration::job);
    b.submit(Submission::new(spec, job)).await.unwrap();
    let snapshot = wait_terminal(b, &ref_id).await;
    assert_eq!(snapshot.info.policy, policy);
    assert_eq!(&*snapshot.info.namespace, "user:alice");
    assert_eq!(snapshot.info.session_id.as_deref(), Some("s1"));
    let stored = snapshot.value.expect("complete");
    assert_eq!(stored.policy, policy);
    assert_eq!(&*stored.namespace, "user:alice");
    assert_eq!(stored.session_id.as_deref(), Some("s1"));
    assert_eq!(stored.max_size, Some(50));
    assert_eq!(
        stored.preview_strategy,
        Some(crate::model::preview::PreviewStrategy::Paginate)
    );
    let listed = b
        .list(TaskFilter::all().namespace("user:alice"))
        .await
        .unwrap();
    assert_eq!(listed.tasks.len(), 1);
    assert_eq!(listed.tasks[0].ref_id, ref_id);
    assert!(
        b.list(TaskFilter::all().namespace("user:bob"))
            .await
            .unwrap()
            .tasks
            .is_empty()
    );
}

/// Generates one `#[tokio::test]` per conformance test, each with a fresh backend from `$make` (a
/// [`Factory`](crate::conformance::Factory)).
#[macro_export]
macro_rules! backend_conformance {
    ($make:path) => {
        $crate::backend_conformance!(@tests $make;
            submit_wait_complete, single_flight, wait_respects_deadline, failure_is_not_cached,
            panic_becomes_failure, progress_is_visible, cancel_semantics, late_result_is_discarded,
                        queue_and_pending, runs_by_name, unknown_ids, list_and_page, shutdown_refuses_work,
            retries_until_success, permanent_errors_are_not_retried, execution_timeout_fails_the_task,
            priority_orders_the_queue, max_concurrent_per_task, retry_reruns_a_failed_task,
            end_session_drops_the_session, cleanup_removes_old_records, delete_drops_record_and_value,
            access_travels_with_the_task, watch_follows_progress);
    };
    (@tests $make:path; $($name:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                $crate::conformance::$name($make).await;
            }
        )*
    };
}
