//! Every path to a reference applies the same access checks, and a task still in flight is no exception
//! (mcp-refcache skipped the checks for in-flight tasks: polling one leaked its status to anyone).
//!
//! A task is held in flight by a gate that the test opens. While it runs, and again once it is complete, an actor
//! that may not see it (another user for a `user:alice` namespace, an agent for a `user_only` policy) gets exactly
//! what a made-up unknown id gets, on every path: `get_cached_result` (plain, full, paged), `task_info`,
//! `reference_info`, `cancel_task` (`CancelOutcome::NotFound`), `retry_task`, `delete`, `clear_namespace` (nothing
//! deleted) and reference resolution (`UnresolvedReference` with the same reason as an unknown id); `list_tasks`
//! does not list it; and a call of the same tool does not hand it the reference. The allowed actor can do each.
//! An actor that may see a reference but lacks the permission for an operation (`read_only`: read, but not cancel,
//! retry or delete) gets `RefCacheError::PermissionDenied` naming the operation.

use std::sync::LazyLock;
use std::time::Duration;

use refcache::{
    Actor, CachedResponse, CancelOutcome, GetOptions, Permissions, RefCache, RefCacheError, RefId,
    TaskFilter, TaskStatus, cached,
};
use serde_json::{Value, json};

#[path = "support/gates.rs"]
mod gates;
#[path = "support/runs.rs"]
mod support;
use gates::{gate, open};
use support::{bump, runs};

static CACHE: LazyLock<RefCache> = LazyLock::new(RefCache::new);

#[cached(cache = CACHE, namespace = "user:alice", async_timeout = 0.5)]
async fn alice_job(label: String) -> String {
    gate(&label).notified().await;
    bump(&label);
    format!("alice {label}")
}

#[cached(cache = CACHE, namespace = "users-only", policy = "user_only", async_timeout = 0.5)]
async fn users_job(label: String) -> String {
    gate(&label).notified().await;
    bump(&label);
    format!("users {label}")
}

#[cached(cache = CACHE, namespace = "frozen", policy = "read_only", async_timeout = 0.5)]
async fn frozen_job(label: String) -> String {
    gate(&label).notified().await;
    bump(&label);
    format!("frozen {label}")
}

#[cached(cache = CACHE, namespace = "sealed", policy = "execute_only", async_timeout = 0.5)]
async fn sealed_job(label: String) -> String {
    gate(&label).notified().await;
    bump(&label);
    format!("sealed {label}")
}

/// A public tool taking any JSON, to pass references to.
#[cached(cache = CACHE)]
async fn consume(input: Value) -> String {
    format!("consumed {input}")
}

/// A ref id of this cache's form that no task ever had.
fn unknown_id() -> String {
    format!("{}:00112233445566778899aabbccddeeff", CACHE.name())
}

/// Waits, on the paused clock, until the task of `ref_id` is finished.
async fn settle(ref_id: &str) -> TaskStatus {
    let id = RefId::parse(ref_id).unwrap();
    let snapshot = CACHE
        .backend()
        .wait(&id, None)
        .await
        .unwrap()
        .expect("the task exists");
    snapshot.info.status
}

/// The status the system sees for `ref_id`, or `None` when the reference is gone.
async fn status(ref_id: &str) -> Option<TaskStatus> {
    match Actor::system().scope(CACHE.task_info(ref_id)).await {
        Ok(info) => Some(info.status),
        Err(RefCacheError::NotFound) => None,
        Err(e) => panic!("{e:?}"),
    }
}

/// Starts `call` as `actor` and checks that it is held in flight.
async fn start(
    actor: &Actor,
    call: impl Future<Output = Result<CachedResponse, RefCacheError>>,
) -> String {
    let response = actor.clone().scope(call).await.unwrap();
    assert_eq!(
        response.status(),
        TaskStatus::Processing,
        "held by its gate"
    );
    response.ref_id().to_string()
}

/// Asserts that two results are errors with the same variant and the same text once the ref ids are masked.
fn assert_same_error<T: std::fmt::Debug>(
    denied: Result<T, RefCacheError>,
    unknown: Result<T, RefCacheError>,
    ref_id: &str,
    what: &str,
) {
    let denied = denied.expect_err(what);
    let unknown = unknown.expect_err(what);
    assert_eq!(
        std::mem::discriminant(&denied),
        std::mem::discriminant(&unknown),
        "{what}: {denied:?} vs {unknown:?}"
    );
    assert_eq!(
        denied.to_string().replace(ref_id, "<ref>"),
        unknown.to_string().replace(&unknown_id(), "<ref>"),
        "{what}: the same text as for an unknown id"
    );
}

/// Asserts that `actor` gets, on every path, exactly what an unknown id gets; and that it changed nothing.
async fn assert_hidden_everywhere(actor: &Actor, ref_id: &str, namespace: &str) {
    let unknown = unknown_id();
    let before = status(ref_id).await.expect("the reference exists");

    for (what, options) in [
        ("get_cached_result", GetOptions::default()),
        ("get_cached_result full", GetOptions::default().full(true)),
        ("get_cached_result page", GetOptions::default().page(1)),
    ] {
        let denied = actor
            .clone()
            .scope(CACHE.get_cached_result_with(ref_id, &options))
            .await;
        let missing = actor
            .clone()
            .scope(CACHE.get_cached_result_with(&unknown, &options))
            .await;
        assert!(
            matches!(denied, Err(RefCacheError::NotFound)),
            "{actor} {what}: {:?}",
            denied.map(|r| r.to_json())
        );
        assert_same_error(denied, missing, ref_id, &format!("{actor} {what}"));
    }
    let denied = actor.clone().scope(CACHE.task_info(ref_id)).await;
    let missing = actor.clone().scope(CACHE.task_info(&unknown)).await;
    assert_same_error(denied, missing, ref_id, &format!("{actor} task_info"));
    let denied = actor.clone().scope(CACHE.reference_info(ref_id)).await;
    let missing = actor.clone().scope(CACHE.reference_info(&unknown)).await;
    assert_same_error(denied, missing, ref_id, &format!("{actor} reference_info"));
    let denied = actor.clone().scope(CACHE.retry_task(ref_id)).await;
    let missing = actor.clone().scope(CACHE.retry_task(&unknown)).await;
    assert_same_error(denied, missing, ref_id, &format!("{actor} retry_task"));
    let denied = actor.clone().scope(CACHE.delete(ref_id)).await;
    let missing = actor.clone().scope(CACHE.delete(&unknown)).await;
    assert_same_error(denied, missing, ref_id, &format!("{actor} delete"));
    assert_eq!(
        actor
            .clone()
            .scope(CACHE.cancel_task(ref_id))
            .await
            .unwrap(),
        CancelOutcome::NotFound,
        "{actor} cancel_task"
    );
    assert_eq!(
        actor
            .clone()
            .scope(CACHE.cancel_task(&unknown))
            .await
            .unwrap(),
        CancelOutcome::NotFound
    );
    assert_eq!(
        actor
            .clone()
            .scope(CACHE.clear_namespace(namespace))
            .await
            .unwrap(),
        0,
        "{actor} clear_namespace deletes nothing it may not see"
    );

    // Reference resolution: through a tool, and directly.
    let denied = actor.clone().scope(consume(json!(ref_id))).await;
    let missing = actor.clone().scope(consume(json!(unknown))).await;
    let reason_of = |result: Result<CachedResponse, RefCacheError>, what: &str| match result {
        Err(RefCacheError::UnresolvedReference {
            argument, reason, ..
        }) => (argument, reason),
        other => panic!(
            "{actor} {what}: expected UnresolvedReference, got {:?}",
            other.map(|r| r.to_json())
        ),
    };
    let (argument, reason) = reason_of(denied.clone(), "resolving the hidden reference");
    assert_eq!(
        (argument, reason.clone()),
        reason_of(missing.clone(), "resolving an unknown id"),
        "{actor}: resolution says the same as for an unknown id"
    );
    assert_eq!(reason, "Invalid or inaccessible reference", "{actor}");
    assert_same_error(denied, missing, ref_id, &format!("{actor} resolution"));
    let denied = CACHE.resolve_refs_as(json!({"doc": [ref_id]}), actor).await;
    let missing = CACHE
        .resolve_refs_as(json!({"doc": [unknown]}), actor)
        .await;
    assert_same_error(denied, missing, ref_id, &format!("{actor} resolve_refs_as"));

    // Not listed, with or without a namespace filter.
    for filter in [
        TaskFilter::all().limit(1000),
        TaskFilter::all().namespace(namespace).limit(1000),
    ] {
        let listed = actor.clone().scope(CACHE.list_tasks(filter)).await.unwrap();
        assert!(
            listed.tasks.iter().all(|t| t.ref_id.as_str() != ref_id),
            "{actor}: list_tasks does not list it"
        );
    }

    // None of it touched the task.
    assert_eq!(
        status(ref_id).await,
        Some(before),
        "{actor} changed nothing"
    );
}

/// Asserts what the allowed `actor` sees of a task held in flight, and that it may pass the access checks of each
/// operation (cancelling and deleting are checked on tasks of their own).
async fn assert_allowed_in_flight(actor: &Actor, ref_id: &str, namespace: &str) {
    let polled = actor
        .clone()
        .scope(CACHE.get_cached_result(ref_id))
        .await
        .unwrap();
    assert_eq!(polled.status(), TaskStatus::Processing, "{actor}");
    assert_eq!(polled.ref_id().as_str(), ref_id);
    let info = actor.clone().scope(CACHE.task_info(ref_id)).await.unwrap();
    assert_eq!(info.status, TaskStatus::Processing);
    assert_eq!(&*info.namespace, namespace);
    let info = actor
        .clone()
        .scope(CACHE.reference_info(ref_id))
        .await
        .unwrap();
    assert_eq!(info.permissions, Permissions::FULL, "{actor}");
    assert_eq!(info.size, None, "no value yet");
    let err = actor
        .clone()
        .scope(CACHE.retry_task(ref_id))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            RefCacheError::NotRetryable {
                status: TaskStatus::Processing,
                ..
            }
        ),
        "{actor}: retry passes the access check and finds it running: {err:?}"
    );
    // Resolving an in-flight reference is refused, saying why: not the same text as for an unknown id.
    match actor.clone().scope(consume(json!(ref_id))).await {
        Err(RefCacheError::UnresolvedReference { reason, .. }) => {
            assert!(reason.contains("still processing"), "{actor}: {reason}");
        }
        other => panic!("{actor}: {:?}", other.map(|r| r.to_json())),
    }
    let listed = actor
        .clone()
        .scope(CACHE.list_tasks(TaskFilter::all().namespace(namespace).limit(1000)))
        .await
        .unwrap();
    assert!(
        listed.tasks.iter().any(|t| t.ref_id.as_str() == ref_id),
        "{actor} lists it"
    );
}

/// Asserts what the allowed `actor` can do with the complete reference: read, inspect, pass, list; retry and cancel
/// pass the access check; then it deletes it.
async fn assert_allowed_complete(actor: &Actor, ref_id: &str, namespace: &str, value: &str) {
    let polled = actor
        .clone()
        .scope(CACHE.get_cached_result(ref_id))
        .await
        .unwrap();
    assert_eq!(
        polled.value().map(refcache::JsonText::to_value).as_ref(),
        Some(&json!(value)),
        "{actor}"
    );
    let full = actor
        .clone()
        .scope(CACHE.get_cached_result_with(ref_id, &GetOptions::default().full(true)))
        .await
        .unwrap();
    assert_eq!(
        full.value().map(refcache::JsonText::to_value).as_ref(),
        Some(&json!(value))
    );
    let info = actor.clone().scope(CACHE.task_info(ref_id)).await.unwrap();
    assert_eq!(info.status, TaskStatus::Complete);
    let info = actor
        .clone()
        .scope(CACHE.reference_info(ref_id))
        .await
        .unwrap();
    assert_eq!(info.permissions, Permissions::FULL);
    assert_eq!(info.size, Some(json!(value).to_string().len()));
    let passed = actor.clone().scope(consume(json!(ref_id))).await.unwrap();
    assert_eq!(
        passed.value().map(refcache::JsonText::to_value).as_ref(),
        Some(&json!(format!("consumed {}", json!(value)))),
        "{actor} passes it to a tool"
    );
    let listed = actor
        .clone()
        .scope(CACHE.list_tasks(TaskFilter::all().namespace(namespace).limit(1000)))
        .await
        .unwrap();
    assert!(listed.tasks.iter().any(|t| t.ref_id.as_str() == ref_id));
    let err = actor
        .clone()
        .scope(CACHE.retry_task(ref_id))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            RefCacheError::NotRetryable {
                status: TaskStatus::Complete,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        actor
            .clone()
            .scope(CACHE.cancel_task(ref_id))
            .await
            .unwrap(),
        CancelOutcome::AlreadyFinished(TaskStatus::Complete)
    );
    actor
        .clone()
        .scope(CACHE.delete(ref_id))
        .await
        .expect("the allowed actor deletes it");
    assert_eq!(status(ref_id).await, None, "deleted");
    let gone = actor.clone().scope(CACHE.get_cached_result(ref_id)).await;
    assert!(matches!(gone, Err(RefCacheError::NotFound)), "{gone:?}");
}

#[tokio::test(start_paused = true)]
async fn a_task_in_a_user_namespace_is_hidden_in_flight_and_after() {
    let alice = Actor::user("alice");
    let denied = [
        Actor::user("bob"),
        Actor::agent("alice"),
        Actor::agent("claude"),
        Actor::anonymous_user(),
    ];
    let ref_id = start(&alice, alice_job("ns-held".into())).await;

    for actor in &denied {
        assert_hidden_everywhere(actor, &ref_id, "user:alice").await;
    }
    assert_allowed_in_flight(&alice, &ref_id, "user:alice").await;
    assert_eq!(runs("ns-held"), 0, "still held");

    open("ns-held");
    assert_eq!(settle(&ref_id).await, TaskStatus::Complete);
    for actor in &denied {
        assert_hidden_everywhere(actor, &ref_id, "user:alice").await;
    }
    assert_allowed_complete(&alice, &ref_id, "user:alice", "alice ns-held").await;
}

#[tokio::test(start_paused = true)]
async fn a_user_only_task_is_hidden_from_agents_in_flight_and_after() {
    let alice = Actor::user("alice");
    let denied = [
        Actor::agent("claude"),
        Actor::anonymous_agent(),
        Actor::agent("claude").with_session("s1"),
    ];
    let ref_id = start(&alice, users_job("policy-held".into())).await;

    for actor in &denied {
        assert_hidden_everywhere(actor, &ref_id, "users-only").await;
    }
    assert_allowed_in_flight(&alice, &ref_id, "users-only").await;
    // Any user may: the policy is about kinds.
    assert_allowed_in_flight(&Actor::user("bob"), &ref_id, "users-only").await;

    open("policy-held");
    assert_eq!(settle(&ref_id).await, TaskStatus::Complete);
    for actor in &denied {
        assert_hidden_everywhere(actor, &ref_id, "users-only").await;
    }
    assert_allowed_complete(
        &Actor::user("bob"),
        &ref_id,
        "users-only",
        "users policy-held",
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn only_the_allowed_actor_may_cancel_or_delete_an_in_flight_task() {
    let alice = Actor::user("alice");
    let to_cancel = start(&alice, alice_job("ns-cancel".into())).await;
    let to_delete = start(&alice, users_job("policy-delete".into())).await;

    // Denied actors' attempts change nothing.
    for (actor, ref_id) in [
        (Actor::user("bob"), &to_cancel),
        (Actor::agent("claude"), &to_delete),
    ] {
        assert_eq!(
            actor
                .clone()
                .scope(CACHE.cancel_task(ref_id))
                .await
                .unwrap(),
            CancelOutcome::NotFound
        );
        let err = actor.clone().scope(CACHE.delete(ref_id)).await.unwrap_err();
        assert!(matches!(err, RefCacheError::NotFound), "{err:?}");
        assert_eq!(status(ref_id).await, Some(TaskStatus::Processing));
    }

    assert_eq!(
        alice
            .clone()
            .scope(CACHE.cancel_task(&to_cancel))
            .await
            .unwrap(),
        CancelOutcome::Cancelled
    );
    assert_eq!(settle(&to_cancel).await, TaskStatus::Cancelled);
    alice
        .clone()
        .scope(CACHE.delete(&to_delete))
        .await
        .expect("alice deletes the task in flight");
    assert_eq!(status(&to_delete).await, None, "gone for everyone");
    // Even if the bodies get to finish (within the cancel grace), the outcome stands.
    open("ns-cancel");
    open("policy-delete");
    tokio::time::sleep(Duration::from_secs(10)).await;
    let polled = alice
        .clone()
        .scope(CACHE.get_cached_result(&to_cancel))
        .await
        .unwrap();
    assert_eq!(polled.status(), TaskStatus::Cancelled);
    assert_eq!(status(&to_delete).await, None, "still gone");
}

#[tokio::test(start_paused = true)]
async fn a_call_by_a_denied_actor_does_not_join_or_reveal_an_in_flight_task() {
    let alice = Actor::user("alice");
    let ref_id = start(&alice, alice_job("ns-join".into())).await;
    // Bob calls the same tool with the same arguments while alice's task runs. He may not see her reference: he
    // must not be handed its id or status.
    let bob = Actor::user("bob").scope(alice_job("ns-join".into())).await;
    open("ns-join");
    match bob {
        Ok(response) => panic!(
            "bob's call answered {} (alice's reference is {ref_id})",
            response.to_json()
        ),
        Err(err) => {
            assert!(matches!(err, RefCacheError::CallDenied { .. }), "{err:?}");
            assert!(
                !err.to_string().contains(&ref_id),
                "the refusal names no reference"
            );
        }
    }
    assert_eq!(settle(&ref_id).await, TaskStatus::Complete);
}

#[tokio::test(start_paused = true)]
async fn a_visible_reference_without_the_permission_is_permission_denied() {
    let alice = Actor::user("alice");
    let claude = Actor::agent("claude");
    let frozen = start(&alice, frozen_job("ro-held".into())).await;
    let sealed = start(&alice, sealed_job("xo-held".into())).await;

    let denied = |result: Result<(), RefCacheError>,
                  ref_id: &str,
                  operation: &str,
                  needed: Permissions,
                  who: &Actor| {
        let err = result.expect_err(operation);
        match &err {
            RefCacheError::PermissionDenied {
                ref_id: r,
                operation: o,
                needed: n,
            } => {
                assert_eq!(r, ref_id, "{who} {operation}");
                assert_eq!(*o, operation, "{who}");
                assert_eq!(*n, needed, "{who} {operation}");
            }
            other => panic!("{who} {operation}: expected PermissionDenied, got {other:?}"),
        }
        let text = err.to_string();
        assert!(text.contains(operation), "names the operation: {text}");
        assert!(text.contains(ref_id), "names the reference: {text}");
    };
    let cancel = |actor: &Actor, ref_id: &str| {
        let (actor, ref_id) = (actor.clone(), ref_id.to_owned());
        async move {
            actor
                .scope(CACHE.cancel_task(&ref_id))
                .await
                .map(|outcome| panic!("cancel answered {outcome:?}"))
        }
    };
    let retry = |actor: &Actor, ref_id: &str| {
        let (actor, ref_id) = (actor.clone(), ref_id.to_owned());
        async move {
            actor
                .scope(CACHE.retry_task(&ref_id))
                .await
                .map(|id| panic!("retry answered {id}"))
        }
    };
    let delete = |actor: &Actor, ref_id: &str| {
        let (actor, ref_id) = (actor.clone(), ref_id.to_owned());
        async move { actor.scope(CACHE.delete(&ref_id)).await }
    };

    for phase in ["in flight", "complete"] {
        // read_only: users and agents may read, and see it in flight, but not cancel, retry or delete it.
        for actor in [&alice, &claude] {
            let polled = actor
                .clone()
                .scope(CACHE.get_cached_result(&frozen))
                .await
                .unwrap();
            if phase == "in flight" {
                assert_eq!(polled.status(), TaskStatus::Processing, "{actor}");
            } else {
                assert_eq!(
                    polled.value().map(refcache::JsonText::to_value).as_ref(),
                    Some(&json!("frozen ro-held")),
                    "{actor}"
                );
            }
            let info = actor
                .clone()
                .scope(CACHE.reference_info(&frozen))
                .await
                .unwrap();
            assert_eq!(info.permissions, Permissions::READ, "{actor}");
            denied(
                cancel(actor, &frozen).await,
                &frozen,
                "cancel",
                Permissions::EXECUTE,
                actor,
            );
            denied(
                retry(actor, &frozen).await,
                &frozen,
                "retry",
                Permissions::EXECUTE,
                actor,
            );
            denied(
                delete(actor, &frozen).await,
                &frozen,
                "delete",
                Permissions::DELETE,
                actor,
            );
            assert_eq!(
                actor
                    .clone()
                    .scope(CACHE.clear_namespace("frozen"))
                    .await
                    .unwrap(),
                0,
                "{actor} {phase}: clear_namespace skips what it may not delete"
            );
        }
        // execute_only: the agent sees it and may retry or cancel it, but not delete it.
        let info = claude
            .clone()
            .scope(CACHE.reference_info(&sealed))
            .await
            .unwrap();
        assert_eq!(info.permissions, Permissions::EXECUTE);
        denied(
            delete(&claude, &sealed).await,
            &sealed,
            "delete",
            Permissions::DELETE,
            &claude,
        );
        assert_eq!(
            claude
                .clone()
                .scope(CACHE.clear_namespace("sealed"))
                .await
                .unwrap(),
            0
        );
        let err = claude
            .clone()
            .scope(CACHE.retry_task(&sealed))
            .await
            .unwrap_err();
        assert!(
            matches!(err, RefCacheError::NotRetryable { .. }),
            "{phase}: the agent passes the retry check: {err:?}"
        );

        if phase == "in flight" {
            assert_eq!(status(&frozen).await, Some(TaskStatus::Processing));
            assert_eq!(status(&sealed).await, Some(TaskStatus::Processing));
            open("ro-held");
            open("xo-held");
            assert_eq!(settle(&frozen).await, TaskStatus::Complete);
            assert_eq!(settle(&sealed).await, TaskStatus::Complete);
        }
    }
    assert_eq!(
        claude
            .clone()
            .scope(CACHE.cancel_task(&sealed))
            .await
            .unwrap(),
        CancelOutcome::AlreadyFinished(TaskStatus::Complete),
        "the agent passes the cancel check"
    );
    // The system may do what the policy denies everyone else.
    assert_eq!(
        Actor::system()
            .scope(CACHE.clear_namespace("frozen"))
            .await
            .unwrap(),
        1
    );
    Actor::system().scope(CACHE.delete(&sealed)).await.unwrap();
    assert_eq!(status(&frozen).await, None);
    assert_eq!(status(&sealed).await, None);
}

#[tokio::test(start_paused = true)]
async fn the_agent_may_cancel_an_execute_only_task_in_flight() {
    let sealed = start(&Actor::user("alice"), sealed_job("xo-cancel".into())).await;
    let claude = Actor::agent("claude");
    let polled = claude
        .clone()
        .scope(CACHE.get_cached_result(&sealed))
        .await
        .unwrap();
    assert_eq!(
        polled.status(),
        TaskStatus::Processing,
        "EXECUTE lets it poll the status"
    );
    assert_eq!(
        claude
            .clone()
            .scope(CACHE.cancel_task(&sealed))
            .await
            .unwrap(),
        CancelOutcome::Cancelled
    );
    assert_eq!(settle(&sealed).await, TaskStatus::Cancelled);
    open("xo-cancel");
}

/// Reads a reference itself (`resolve_refs = false`): what it may read is what its caller may read. Its result
/// depends on who calls, so its namespace says so (otherwise one caller's answer would be another's hit).
#[cached(cache = CACHE, resolve_refs = false, namespace = "reader:{actor_id}")]
async fn read_through(ref_id: String) -> String {
    match CACHE.get_cached_result(&ref_id).await {
        Ok(response) => format!("read {}", response.to_json()),
        Err(err) => format!("refused: {err}"),
    }
}

/// The same, sync.
#[cached(cache = CACHE, resolve_refs = false, namespace = "reader:{actor_id}")]
fn read_through_sync(ref_id: String) -> String {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            match CACHE.get_cached_result(&ref_id).await {
                Ok(response) => format!("read {}", response.to_json()),
                Err(err) => format!("refused: {err}"),
            }
        })
}

#[tokio::test(start_paused = true)]
async fn a_tool_body_runs_as_its_caller_so_it_cannot_read_for_it_what_it_may_not() {
    let alice = Actor::user("alice");
    let ref_id = start(&alice, users_job("body-as-caller".into())).await;
    open("body-as-caller");
    assert_eq!(settle(&ref_id).await, TaskStatus::Complete);

    // An agent may not see the user-only value; a tool it calls, reading the reference itself, may not either.
    let agent = Actor::agent("claude");
    for response in [
        agent
            .clone()
            .scope(read_through(ref_id.clone()))
            .await
            .unwrap(),
        agent
            .clone()
            .sync_scope(|| read_through_sync(ref_id.clone()))
            .unwrap(),
    ] {
        let text = response.value_as::<String>().unwrap().unwrap();
        assert!(
            text.starts_with("refused: Invalid or inaccessible reference"),
            "{text}"
        );
    }
    // A user may, through the same tool.
    let read = Actor::user("bob")
        .scope(read_through(ref_id.clone()))
        .await
        .unwrap();
    let text = read.value_as::<String>().unwrap().unwrap();
    assert!(text.contains("users body-as-caller"), "{text}");
}
