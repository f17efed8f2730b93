//! Admin operations on references: list (filtered by namespace, newest first, paged with a cursor), reference info
//! (the record and what the caller may do, never the value), delete (value and record gone; an in-flight task is
//! cancelled; the same call runs afresh), clear a namespace (what the caller may delete, counted) and stats (counts
//! by status).
//!
//! Every one obeys access: a reference the caller may not see is never listed or counted, and info and delete
//! answer `NotFound` for it, exactly as for an unknown id; one it may see but not delete is `PermissionDenied`.
//! The system actor may do everything. A reference whose value has expired is gone for all of them alike.
//!
//! Each test works in a namespace of its own (the tools take it from the actor's `ns` attribute), so that tests
//! running side by side never see each other's references.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::LazyLock;
use std::time::Duration;

use refcache::{
    Actor, CachedResponse, Permissions, RefCache, RefCacheError, RefId, TaskContext, TaskFilter,
    TaskInfo, TaskStatus, cached,
};
use serde_json::Value;

#[path = "support/gates.rs"]
mod gates;
#[path = "support/runs.rs"]
mod support;
use gates::{gate, open};
use support::{bump, runs};

static CACHE: LazyLock<RefCache> = LazyLock::new(RefCache::new);

// ---------------------------------------------------------------------------------------------------------------
// Gates: a gated task waits until the test opens its gate (a stored permit, so opening first is fine too).

/// Waits until the gated task `label` has seen its cancellation (bounded by paused time, like `settle`).
async fn saw_cancel(label: &str) {
    tokio::time::timeout(
        Duration::from_secs(60),
        gate(&format!("{label}/cancelled")).notified(),
    )
    .await
    .unwrap_or_else(|_| panic!("task {label} was never told it was cancelled"));
}

/// Waits until the task behind `ref_id` is terminal; answers its status. (The clock is paused: the minute passes
/// only if nothing else can run, so it bounds a hang, never a slow machine.)
async fn settle(ref_id: &RefId) -> TaskStatus {
    let snapshot =
        tokio::time::timeout(Duration::from_secs(60), CACHE.backend().wait(ref_id, None))
            .await
            .expect("the task ends once its gate is open");
    snapshot.unwrap().expect("the task is known").info.status
}

// ---------------------------------------------------------------------------------------------------------------
// Tools, all in the namespace named by the calling actor's `ns` attribute.

fn user(id: &str, ns: &str) -> Actor {
    Actor::user(id).with_attribute("ns", ns)
}

fn agent(id: &str, ns: &str) -> Actor {
    Actor::agent(id).with_attribute("ns", ns)
}

/// Public: users may do everything, agents read and execute.
#[cached(cache = CACHE, namespace = "{ns}")]
async fn item(label: String, n: u32) -> Vec<u32> {
    bump(&label);
    (0..n).collect()
}

#[cached(cache = CACHE, namespace = "{ns}", policy = "user_only")]
async fn private_item(label: String) -> String {
    bump(&label);
    label
}

/// Users and agents may read it, and nothing else: not even its maker may delete it.
#[cached(cache = CACHE, namespace = "{ns}", policy = "read_only")]
async fn frozen_item(label: String) -> String {
    bump(&label);
    label
}

#[cached(cache = CACHE, namespace = "{ns}")]
async fn failing_item(label: String) -> Result<u32, String> {
    bump(&label);
    Err(format!("{label} broke"))
}

/// Waits on its gate; stops when cancelled, and opens `<label>/cancelled` to say it saw the cancellation.
#[cached(cache = CACHE, namespace = "{ns}", async_timeout = 0.5)]
async fn gated_item(label: String, ctx: TaskContext) -> Result<String, String> {
    bump(&label);
    let gate = gate(&label);
    tokio::select! {
        () = gate.notified() => Ok(label),
        () = ctx.cancelled() => {
            open(&format!("{label}/cancelled"));
            Err("cancelled".to_owned())
        }
    }
}

/// Its value lives 1 ms (value TTLs run on the wall clock).
#[cached(cache = CACHE, namespace = "{ns}", ttl = 0.001)]
async fn short_lived(label: String) -> String {
    bump(&label);
    label
}

#[cached(cache = CACHE, namespace = "user:{user_id}")]
async fn mine(label: String) -> String {
    bump(&label);
    label
}

/// The ref id of a call that completed.
fn complete_ref(response: &CachedResponse) -> String {
    assert!(
        response.is_complete(),
        "expected a complete response, got {:?}",
        response.to_json()
    );
    response.ref_id().to_string()
}

/// Every record `actor` may list in `namespace`, walking the pages `limit` at a time; checks each page's bound.
async fn walk(actor: &Actor, namespace: &str, limit: usize) -> Vec<TaskInfo> {
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..100 {
        let mut filter = TaskFilter::all().namespace(namespace).limit(limit);
        if let Some(c) = cursor.take() {
            filter = filter.cursor(c);
        }
        let page = actor.clone().scope(CACHE.list_tasks(filter)).await.unwrap();
        assert!(
            page.tasks.len() <= limit,
            "a page holds at most `limit` records: {}",
            page.tasks.len()
        );
        all.extend(page.tasks);
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return all,
        }
    }
    panic!("the cursor walk did not end");
}

fn ids(infos: &[TaskInfo]) -> Vec<String> {
    infos.iter().map(|i| i.ref_id.to_string()).collect()
}

/// Checks a walk: every expected record exactly once, nothing else, newest first.
fn assert_walk(infos: &[TaskInfo], expected: &BTreeSet<String>, who: &str) {
    let listed = ids(infos);
    let unique: BTreeSet<String> = listed.iter().cloned().collect();
    assert_eq!(
        unique.len(),
        listed.len(),
        "{who}: no record is listed twice: {listed:?}"
    );
    assert_eq!(&unique, expected, "{who}: exactly the visible records");
    assert!(
        infos.windows(2).all(|w| w[0].created_at >= w[1].created_at),
        "{who}: newest first"
    );
}

async fn stats(actor: &Actor, namespace: &str) -> (BTreeMap<TaskStatus, u64>, u64) {
    let stats = actor
        .clone()
        .scope(CACHE.reference_stats(Some(namespace)))
        .await
        .unwrap();
    (stats.by_status, stats.total)
}

// ---------------------------------------------------------------------------------------------------------------
// List.

#[tokio::test(start_paused = true)]
async fn list_filters_by_namespace_and_a_cursor_walk_returns_each_visible_record_once() {
    let ns = "admin-list";
    let alice = user("alice", ns);
    let mut public = BTreeSet::new();
    let mut private = BTreeSet::new();
    // Public and user-only records interleaved, so that an agent's pages skip some.
    for i in 0..7 {
        let label = format!("list-{i}");
        let response = if i % 3 == 1 {
            let r = alice.clone().scope(private_item(label)).await.unwrap();
            private.insert(complete_ref(&r));
            r
        } else {
            let r = alice.clone().scope(item(label, i)).await.unwrap();
            public.insert(complete_ref(&r));
            r
        };
        assert!(response.is_complete());
    }
    // One still running: in-flight records are listed too.
    let running = alice
        .clone()
        .scope(gated_item("list-running".into()))
        .await
        .unwrap();
    assert_eq!(running.status(), TaskStatus::Processing);
    public.insert(running.ref_id().to_string());
    // A record in another namespace is never listed here.
    let elsewhere = user("alice", "admin-list-other")
        .scope(item("list-elsewhere".into(), 1))
        .await
        .unwrap();

    let everything: BTreeSet<String> = public.union(&private).cloned().collect();
    for limit in [1, 2, 3, 50] {
        let as_user = walk(&alice, ns, limit).await;
        assert_walk(&as_user, &everything, &format!("user, limit {limit}"));
        assert!(
            as_user.iter().all(|i| &*i.namespace == ns),
            "only the namespace asked for"
        );
        let as_agent = walk(&agent("lister", ns), ns, limit).await;
        assert_walk(
            &as_agent,
            &public,
            &format!("agent, limit {limit} (no user-only records)"),
        );
        let as_system = walk(&Actor::system(), ns, limit).await;
        assert_walk(&as_system, &everything, &format!("system, limit {limit}"));
    }
    let listed = walk(&alice, ns, 50).await;
    let running_info = listed
        .iter()
        .find(|i| i.ref_id == *running.ref_id())
        .unwrap();
    assert_eq!(running_info.status, TaskStatus::Processing);
    assert!(
        !ids(&listed).contains(&elsewhere.ref_id().to_string()),
        "another namespace's record"
    );
    assert_eq!(walk(&alice, "admin-list-other", 10).await.len(), 1);

    open("list-running");
    assert_eq!(settle(running.ref_id()).await, TaskStatus::Complete);
}

// ---------------------------------------------------------------------------------------------------------------
// Info.

#[tokio::test(start_paused = true)]
async fn reference_info_tells_everything_but_the_value() {
    let ns = "admin-info";
    let alice = user("alice", ns);
    let done = complete_ref(
        &alice
            .clone()
            .scope(item("info-done".into(), 3))
            .await
            .unwrap(),
    );

    let info = alice
        .clone()
        .scope(CACHE.reference_info(&done))
        .await
        .unwrap();
    assert_eq!(info.task.ref_id.as_str(), done);
    assert_eq!(info.task.status, TaskStatus::Complete);
    assert_eq!(&*info.task.namespace, ns);
    assert_eq!(info.size, Some("[0,1,2]".len()), "the value's JSON length");
    assert_eq!(info.total_items, Some(3));
    assert_eq!(info.permissions, Permissions::FULL, "a user, public policy");
    assert!(info.stored_at.is_some());
    assert_eq!(info.ttl_seconds, Some(3600.0), "the cache's default TTL");

    let json = serde_json::to_value(&info).unwrap();
    let object = json.as_object().expect("an object");
    assert!(
        !object.contains_key("value") && !object.contains_key("preview"),
        "no value in the info: {json}"
    );
    assert!(
        !json.to_string().contains("[0,1,2]"),
        "the value appears nowhere: {json}"
    );
    assert_eq!(json["ref_id"], Value::String(done.clone()));
    assert_eq!(json["status"], "complete");
    assert_eq!(json["namespace"], ns);
    assert_eq!(json["size"], 7);
    assert_eq!(json["total_items"], 3);
    assert!(json.get("permissions").is_some(), "{json}");

    // The caller's own permissions: an agent may read and execute.
    let as_agent = agent("peek", ns)
        .scope(CACHE.reference_info(&done))
        .await
        .unwrap();
    assert_eq!(
        as_agent.permissions,
        Permissions::READ | Permissions::EXECUTE
    );

    // A task in flight: no value yet, so no size.
    let running = alice
        .clone()
        .scope(gated_item("info-running".into()))
        .await
        .unwrap();
    let info = alice
        .clone()
        .scope(CACHE.reference_info(running.ref_id().as_str()))
        .await
        .unwrap();
    assert_eq!(info.task.status, TaskStatus::Processing);
    assert_eq!(
        (info.size, info.total_items, info.stored_at),
        (None, None, None)
    );

    // A failed task: its error, no value.
    let failed = alice
        .clone()
        .scope(failing_item("info-failed".into()))
        .await
        .unwrap();
    let info = alice
        .clone()
        .scope(CACHE.reference_info(failed.ref_id().as_str()))
        .await
        .unwrap();
    assert_eq!(info.task.status, TaskStatus::Failed);
    assert_eq!(
        info.task.error.as_ref().map(|e| e.message.as_str()),
        Some("info-failed broke")
    );
    assert_eq!(info.size, None);

    open("info-running");
    assert_eq!(settle(running.ref_id()).await, TaskStatus::Complete);
    let info = alice
        .scope(CACHE.reference_info(running.ref_id().as_str()))
        .await
        .unwrap();
    assert_eq!(info.task.status, TaskStatus::Complete);
    assert_eq!(info.size, Some("\"info-running\"".len()));
    assert_eq!(info.total_items, None, "a string has no items");

    // Ids that are not references of this cache.
    let unknown = format!("{}:0123456789abcdef0123456789abcdef", CACHE.name());
    assert!(matches!(
        CACHE.reference_info(&unknown).await,
        Err(RefCacheError::NotFound)
    ));
    assert!(matches!(
        CACHE
            .reference_info("elsewhere:0123456789abcdef0123456789abcdef")
            .await,
        Err(RefCacheError::NotFound)
    ));
    assert!(matches!(
        CACHE.reference_info("not a ref id").await,
        Err(RefCacheError::MalformedRefId { .. })
    ));
}

// ---------------------------------------------------------------------------------------------------------------
// Delete.

#[tokio::test(start_paused = true)]
async fn delete_drops_the_value_and_the_record_and_the_call_runs_again() {
    let ns = "admin-delete";
    let alice = user("alice", ns);
    let first = alice.clone().scope(item("del".into(), 2)).await.unwrap();
    let id = complete_ref(&first);
    assert_eq!(runs("del"), 1);

    alice.clone().scope(CACHE.delete(&id)).await.unwrap();

    let polled = alice.clone().scope(CACHE.get_cached_result(&id)).await;
    assert!(
        matches!(polled, Err(RefCacheError::NotFound)),
        "the value is gone: {:?}",
        polled.map(|r| r.to_json())
    );
    assert!(matches!(
        alice.clone().scope(CACHE.reference_info(&id)).await,
        Err(RefCacheError::NotFound)
    ));
    assert!(
        !ids(&walk(&alice, ns, 50).await).contains(&id),
        "the record is gone"
    );
    assert!(
        matches!(
            alice.clone().scope(CACHE.delete(&id)).await,
            Err(RefCacheError::NotFound)
        ),
        "deleting twice"
    );

    // The same call is no hit any more: it runs again, under a new reference.
    let again = alice.clone().scope(item("del".into(), 2)).await.unwrap();
    assert_eq!(runs("del"), 2, "a new execution");
    assert_ne!(complete_ref(&again), id);
    assert_eq!(again.value(), first.value());
    // And the new reference is a hit from now on.
    let hit = alice.scope(item("del".into(), 2)).await.unwrap();
    assert_eq!(hit.ref_id(), again.ref_id());
    assert_eq!(runs("del"), 2);
}

#[tokio::test(start_paused = true)]
async fn deleting_an_in_flight_task_cancels_it() {
    let ns = "admin-delete-running";
    let alice = user("alice", ns);
    let running = alice
        .clone()
        .scope(gated_item("del-running".into()))
        .await
        .unwrap();
    assert_eq!(running.status(), TaskStatus::Processing);
    let id = running.ref_id().to_string();

    alice.clone().scope(CACHE.delete(&id)).await.unwrap();
    // The task itself was told: it saw the cancellation and stopped.
    saw_cancel("del-running").await;

    assert!(matches!(
        alice.clone().scope(CACHE.get_cached_result(&id)).await,
        Err(RefCacheError::NotFound)
    ));
    assert!(matches!(
        alice.clone().scope(CACHE.reference_info(&id)).await,
        Err(RefCacheError::NotFound)
    ));
    assert!(matches!(
        alice.clone().scope(CACHE.delete(&id)).await,
        Err(RefCacheError::NotFound)
    ));
    assert!(walk(&Actor::system(), ns, 50).await.is_empty(), "no record");

    // The same call starts afresh, and completes normally.
    let again = alice
        .clone()
        .scope(gated_item("del-running".into()))
        .await
        .unwrap();
    assert_ne!(again.ref_id().as_str(), id);
    assert_eq!(runs("del-running"), 2);
    open("del-running");
    assert_eq!(settle(again.ref_id()).await, TaskStatus::Complete);
    let value = alice
        .scope(CACHE.get_cached_result(again.ref_id().as_str()))
        .await
        .unwrap();
    assert_eq!(
        value.value().map(refcache::JsonText::to_value).as_ref(),
        Some(&Value::from("del-running"))
    );
    assert!(matches!(
        CACHE.get_cached_result(&id).await,
        Err(RefCacheError::NotFound)
    ));
}

#[tokio::test(start_paused = true)]
async fn delete_needs_delete_and_hides_what_the_caller_may_not_see() {
    let ns = "admin-delete-access";
    let alice = user("alice", ns);
    let public = complete_ref(
        &alice
            .clone()
            .scope(item("del-acl-pub".into(), 1))
            .await
            .unwrap(),
    );
    let private = complete_ref(
        &alice
            .clone()
            .scope(private_item("del-acl-priv".into()))
            .await
            .unwrap(),
    );
    let frozen = complete_ref(
        &alice
            .clone()
            .scope(frozen_item("del-acl-frozen".into()))
            .await
            .unwrap(),
    );
    let robot = agent("robot", ns);

    // An agent sees the public one but may not delete it.
    match robot.clone().scope(CACHE.delete(&public)).await {
        Err(RefCacheError::PermissionDenied {
            ref_id,
            operation,
            needed,
        }) => {
            assert_eq!(ref_id, public);
            assert_eq!(operation, "delete");
            assert_eq!(needed, Permissions::DELETE);
        }
        other => panic!("expected PermissionDenied, got {other:?}"),
    }
    // It may not even see the user-only one: as if it did not exist.
    assert!(matches!(
        robot.clone().scope(CACHE.delete(&private)).await,
        Err(RefCacheError::NotFound)
    ));
    assert!(matches!(
        robot.scope(CACHE.reference_info(&private)).await,
        Err(RefCacheError::NotFound)
    ));
    // Read-only: its maker may see it but not delete it.
    assert!(matches!(
        alice.clone().scope(CACHE.delete(&frozen)).await,
        Err(RefCacheError::PermissionDenied { .. })
    ));
    // Nothing was deleted.
    assert_eq!(walk(&Actor::system(), ns, 50).await.len(), 3);

    // The system may delete anything.
    for id in [&public, &private, &frozen] {
        Actor::system().scope(CACHE.delete(id)).await.unwrap();
    }
    assert!(walk(&Actor::system(), ns, 50).await.is_empty());
}

// ---------------------------------------------------------------------------------------------------------------
// Clear a namespace.

#[tokio::test(start_paused = true)]
async fn clear_namespace_deletes_what_the_caller_may_delete_and_counts_it() {
    let ns = "admin-clear";
    let other = "admin-clear-other";
    let alice = user("alice", ns);
    let mut items = Vec::new();
    for i in 0..3 {
        items.push(complete_ref(
            &alice
                .clone()
                .scope(item(format!("clear-{i}"), i))
                .await
                .unwrap(),
        ));
    }
    let frozen = complete_ref(
        &alice
            .clone()
            .scope(frozen_item("clear-frozen".into()))
            .await
            .unwrap(),
    );
    let kept = complete_ref(
        &user("alice", other)
            .scope(item("clear-other".into(), 1))
            .await
            .unwrap(),
    );

    // An agent, under the default public policy, may delete nothing.
    let cleared = agent("robot", ns)
        .scope(CACHE.clear_namespace(ns))
        .await
        .unwrap();
    assert_eq!(cleared, 0, "agents have no DELETE");
    assert_eq!(walk(&Actor::system(), ns, 50).await.len(), 4);

    // A user deletes the public ones, not the read-only one.
    let cleared = alice
        .clone()
        .scope(CACHE.clear_namespace(ns))
        .await
        .unwrap();
    assert_eq!(cleared, 3);
    for id in &items {
        assert!(
            matches!(
                alice.clone().scope(CACHE.get_cached_result(id)).await,
                Err(RefCacheError::NotFound)
            ),
            "{id} is gone"
        );
    }
    assert_eq!(
        ids(&walk(&Actor::system(), ns, 50).await),
        vec![frozen.clone()]
    );
    // The calls run again.
    alice
        .clone()
        .scope(item("clear-0".into(), 0))
        .await
        .unwrap();
    assert_eq!(runs("clear-0"), 2);

    // Another namespace is untouched.
    assert_eq!(
        ids(&walk(&Actor::system(), other, 50).await),
        vec![kept.clone()]
    );
    assert!(
        alice
            .clone()
            .scope(CACHE.get_cached_result(&kept))
            .await
            .unwrap()
            .is_complete()
    );

    // The system clears everything in it.
    let cleared = Actor::system()
        .scope(CACHE.clear_namespace(ns))
        .await
        .unwrap();
    assert_eq!(cleared, 2, "the read-only record and the new clear-0");
    assert!(walk(&Actor::system(), ns, 50).await.is_empty());
    assert!(matches!(
        CACHE.get_cached_result(&frozen).await,
        Err(RefCacheError::NotFound)
    ));
    assert_eq!(walk(&Actor::system(), other, 50).await.len(), 1);

    // An empty namespace clears nothing; an invalid one is an error.
    assert_eq!(
        alice
            .clone()
            .scope(CACHE.clear_namespace(ns))
            .await
            .unwrap(),
        0
    );
    assert!(matches!(
        alice.scope(CACHE.clear_namespace("no spaces")).await,
        Err(RefCacheError::Namespace(_))
    ));
}

#[tokio::test(start_paused = true)]
async fn clearing_cancels_the_namespaces_running_tasks() {
    let ns = "admin-clear-running";
    let alice = user("alice", ns);
    let running = alice
        .clone()
        .scope(gated_item("clear-running".into()))
        .await
        .unwrap();
    assert_eq!(running.status(), TaskStatus::Processing);
    assert_eq!(
        alice
            .clone()
            .scope(CACHE.clear_namespace(ns))
            .await
            .unwrap(),
        1
    );
    saw_cancel("clear-running").await;
    assert!(matches!(
        alice
            .scope(CACHE.get_cached_result(running.ref_id().as_str()))
            .await,
        Err(RefCacheError::NotFound)
    ));
}

// ---------------------------------------------------------------------------------------------------------------
// Stats.

#[tokio::test(start_paused = true)]
async fn reference_stats_count_by_status_what_the_caller_may_see() {
    let ns = "admin-stats";
    let alice = user("alice", ns);
    for i in 0..2 {
        alice
            .clone()
            .scope(item(format!("stats-{i}"), i))
            .await
            .unwrap();
    }
    alice
        .clone()
        .scope(private_item("stats-private".into()))
        .await
        .unwrap();
    let failed = alice
        .clone()
        .scope(failing_item("stats-failed".into()))
        .await
        .unwrap();
    assert_eq!(failed.status(), TaskStatus::Failed);
    let running = alice
        .clone()
        .scope(gated_item("stats-running".into()))
        .await
        .unwrap();
    let cancelled = alice
        .clone()
        .scope(gated_item("stats-cancelled".into()))
        .await
        .unwrap();
    alice
        .clone()
        .scope(CACHE.cancel_task(cancelled.ref_id().as_str()))
        .await
        .unwrap();
    saw_cancel("stats-cancelled").await;
    // Elsewhere: never counted here.
    user("alice", "admin-stats-other")
        .scope(item("stats-other".into(), 1))
        .await
        .unwrap();

    let expected = |complete: u64| {
        BTreeMap::from([
            (TaskStatus::Complete, complete),
            (TaskStatus::Failed, 1),
            (TaskStatus::Processing, 1),
            (TaskStatus::Cancelled, 1),
        ])
    };
    assert_eq!(stats(&alice, ns).await, (expected(3), 6), "a user sees all");
    assert_eq!(
        stats(&agent("robot", ns), ns).await,
        (expected(2), 5),
        "an agent does not see the user-only one"
    );
    assert_eq!(stats(&Actor::system(), ns).await, (expected(3), 6));
    assert_eq!(
        stats(&alice, "admin-stats-nothing").await,
        (BTreeMap::new(), 0),
        "an empty namespace"
    );
    assert_eq!(stats(&alice, "admin-stats-other").await.1, 1);

    open("stats-running");
    assert_eq!(settle(running.ref_id()).await, TaskStatus::Complete);
    let (by_status, total) = stats(&alice, ns).await;
    assert_eq!(by_status.get(&TaskStatus::Complete), Some(&4));
    assert_eq!(by_status.get(&TaskStatus::Processing), None);
    assert_eq!(total, 6);
}

// ---------------------------------------------------------------------------------------------------------------
// Access across all of them.

#[tokio::test(start_paused = true)]
async fn a_reference_the_caller_cannot_see_is_not_found_not_listed_not_counted() {
    let alice = Actor::user("admin-alice");
    let bob = Actor::user("admin-bob");
    let ns = "user:admin-alice";
    let id = complete_ref(&alice.clone().scope(mine("acl-mine".into())).await.unwrap());
    let unknown = format!("{}:0123456789abcdef0123456789abcdef", CACHE.name());

    // Bob: the same answers as for an id that does not exist.
    for probe in [&id, &unknown] {
        assert!(matches!(
            bob.clone().scope(CACHE.reference_info(probe)).await,
            Err(RefCacheError::NotFound)
        ));
        assert!(matches!(
            bob.clone().scope(CACHE.delete(probe)).await,
            Err(RefCacheError::NotFound)
        ));
    }
    assert!(walk(&bob, ns, 10).await.is_empty(), "not listed for bob");
    assert_eq!(stats(&bob, ns).await, (BTreeMap::new(), 0), "not counted");
    assert_eq!(
        bob.clone().scope(CACHE.clear_namespace(ns)).await.unwrap(),
        0,
        "bob cannot clear alice's namespace"
    );
    // An agent neither.
    assert!(walk(&Actor::agent("admin-agent"), ns, 10).await.is_empty());

    // Alice sees it everywhere.
    assert_eq!(ids(&walk(&alice, ns, 10).await), vec![id.clone()]);
    assert_eq!(stats(&alice, ns).await.1, 1);
    let info = alice
        .clone()
        .scope(CACHE.reference_info(&id))
        .await
        .unwrap();
    assert_eq!(info.permissions, Permissions::FULL);

    // The system may do everything.
    assert_eq!(ids(&walk(&Actor::system(), ns, 10).await), vec![id.clone()]);
    assert_eq!(stats(&Actor::system(), ns).await.1, 1);
    let info = Actor::system()
        .scope(CACHE.reference_info(&id))
        .await
        .unwrap();
    assert_eq!(info.permissions, Permissions::FULL);
    Actor::system().scope(CACHE.delete(&id)).await.unwrap();
    assert!(matches!(
        alice.scope(CACHE.reference_info(&id)).await,
        Err(RefCacheError::NotFound)
    ));
}

// ---------------------------------------------------------------------------------------------------------------
// Expiry.

/// A reference whose value has expired is gone: poll, info and delete answer `NotFound`, as for an unknown id. So
/// it is not listed or counted either: a list must not offer ids that every other operation denies exist.
///
/// Value TTLs run on the wall clock, so this test runs on it: it waits 50 ms past a 1 ms TTL, which is certain to
/// have passed, however slow the machine.
#[tokio::test]
async fn a_reference_whose_value_expired_is_neither_listed_nor_counted() {
    let ns = "admin-expired";
    let alice = user("alice", ns);
    let expired = complete_ref(
        &alice
            .clone()
            .scope(short_lived("expired".into()))
            .await
            .unwrap(),
    );
    let kept = complete_ref(
        &alice
            .clone()
            .scope(item("expired-kept".into(), 1))
            .await
            .unwrap(),
    );
    tokio::time::sleep(Duration::from_millis(50)).await;

    assert!(matches!(
        alice.clone().scope(CACHE.get_cached_result(&expired)).await,
        Err(RefCacheError::NotFound)
    ));
    assert!(matches!(
        alice.clone().scope(CACHE.reference_info(&expired)).await,
        Err(RefCacheError::NotFound)
    ));
    assert!(matches!(
        alice.clone().scope(CACHE.delete(&expired)).await,
        Err(RefCacheError::NotFound)
    ));

    assert_eq!(
        ids(&walk(&alice, ns, 10).await),
        vec![kept],
        "only the live reference is listed"
    );
    assert_eq!(
        stats(&alice, ns).await,
        (BTreeMap::from([(TaskStatus::Complete, 1)]), 1),
        "only the live reference is counted"
    );
}

#[tokio::test(start_paused = true)]
async fn a_zero_limit_is_refused_not_rounded_up() {
    let err = CACHE
        .list_tasks(TaskFilter::all().limit(0))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            RefCacheError::InvalidOption {
                option: "limit",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("from 1"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn within_a_session_stats_count_what_the_list_lists() {
    let ns = "adm-session-stats";
    // One task outside any session, two in session s1.
    user("u", ns)
        .scope(item("outside".into(), 1))
        .await
        .unwrap();
    let in_session = user("u", ns).with_session("s1");
    in_session
        .clone()
        .scope(item("inside-1".into(), 1))
        .await
        .unwrap();
    in_session
        .clone()
        .scope(item("inside-2".into(), 1))
        .await
        .unwrap();
    let listed = walk(&in_session, ns, 10).await;
    let (by_status, total) = stats(&in_session, ns).await;
    assert_eq!(listed.len(), 2, "only the session's tasks are listed");
    assert_eq!(total, 2, "and only they are counted: {by_status:?}");
    let (_, outside_total) = stats(&user("u", ns), ns).await;
    assert_eq!(
        outside_total, 1,
        "outside the session, only the session-less task"
    );
}

#[tokio::test(start_paused = true)]
async fn a_cursor_names_no_reference_the_caller_may_not_see() {
    let ns = "user:cursor-alice";
    let alice = Actor::user("cursor-alice");
    let mut alices = Vec::new();
    for i in 0..5 {
        let made = alice
            .clone()
            .scope(mine(format!("cursor-{i}")))
            .await
            .unwrap();
        alices.push(made.ref_id().to_string());
    }
    let page = Actor::user("cursor-bob")
        .scope(CACHE.list_tasks(TaskFilter::all().namespace(ns).limit(1)))
        .await
        .unwrap();
    assert!(page.tasks.is_empty());
    if let Some(cursor) = &page.next_cursor {
        for id in &alices {
            let hex = id.rsplit_once(':').unwrap().1;
            assert!(!cursor.contains(hex), "the cursor {cursor} names {id}");
        }
    }
    // Alice walks her own namespace with the same kind of cursor.
    let walked = walk(&alice, ns, 2).await;
    assert_eq!(walked.len(), 5);
}

/// A cache whose cancelled tasks may take their time to stop.
static PATIENT: LazyLock<RefCache> = LazyLock::new(|| {
    RefCache::builder()
        .backend(std::sync::Arc::new(refcache::MemoryTaskBackend::new({
            let mut config = refcache::MemoryBackendConfig::default();
            config.cancel_grace = Duration::from_secs(30);
            config
        })))
        .unwrap()
});

/// Ignores cancellation: it ends when the gate named by its own ref id opens.
#[cached(cache = PATIENT, async_timeout = 0.5)]
async fn stubborn(label: String, ctx: TaskContext) -> String {
    gate(ctx.ref_id().unwrap().as_str()).notified().await;
    label
}

#[tokio::test(start_paused = true)]
async fn deleting_a_cancelled_task_that_is_still_stopping_keeps_the_next_executions_value() {
    let first = stubborn("stubborn".into()).await.unwrap();
    let first_id = first.ref_id().to_string();
    PATIENT.cancel_task(&first_id).await.unwrap();
    // The same call runs afresh (the cancelled one is not joined) and completes, while the first still winds down.
    let second = stubborn("stubborn".into()).await.unwrap();
    let second_id = second.ref_id().to_string();
    assert_ne!(first_id, second_id);
    // Only the second may finish: the first stays active, winding down, through the delete below.
    open(&second_id);
    let done = tokio::time::timeout(
        Duration::from_secs(60),
        PATIENT.backend().wait(second.ref_id(), None),
    )
    .await
    .expect("the second execution ends once the gate opens")
    .unwrap()
    .unwrap();
    assert_eq!(done.info.status, TaskStatus::Complete);
    PATIENT.delete(&first_id).await.unwrap();
    PATIENT.backend().near_cache().unwrap().usage().await;
    let polled = PATIENT.get_cached_result(&second_id).await.unwrap();
    assert_eq!(
        polled.value().map(refcache::JsonText::to_value).as_ref(),
        Some(&Value::from("stubborn")),
        "the second execution's value survives the first's deletion"
    );
    assert_eq!(
        stubborn("stubborn".into()).await.unwrap().ref_id().as_str(),
        second_id,
        "and answers the call"
    );
}
