//! Namespaces: where a reference lives decides who may touch it, before its policy says what they may do.
//!
//! One test per rule: `public` is open to everyone; `session:<id>` only to actors in that session (whether the
//! session comes from `Actor::with_session` or from `Session::scope`); `user:<id>` only to that user (another user
//! and every agent get the very error an unknown id gets); `agent:<id>` only to that agent; `shared:<group>` to
//! everyone, narrowed by a policy's `allow` patterns; any other name is a custom namespace, open to everyone. The
//! system actor passes every rule.
//!
//! Then templates: `namespace = "user:{user_id}"` is filled from the actor of each call, so two users calling the
//! same function with the same arguments get two references and two executions, and each sees only its own, while
//! the same user calling twice gets a hit. An actor without the variable fails the call with
//! `NamespaceError::MissingVariable`, whose message names the variable and how to provide it. `{session_id}` and
//! actor attributes (`{team}`) fill the same way, and the namespace recorded on the task is the filled one.

use std::sync::LazyLock;

use refcache::{
    AccessPolicy, Actor, CachedResponse, NamespaceError, RefCache, RefCacheError, Session,
    TaskFilter, TaskStatus, cached,
};

#[path = "support/runs.rs"]
mod support;
use support::{bump, runs};

static CACHE: LazyLock<RefCache> = LazyLock::new(RefCache::new);

/// A ref id of this cache's form that no task ever had.
fn unknown_id() -> String {
    format!("{}:0123456789abcdef0123456789abcdef", CACHE.name())
}

/// The error an unknown id gets, as text: what every denied actor must get too.
async fn unknown_error() -> String {
    let err = CACHE.get_cached_result(&unknown_id()).await.unwrap_err();
    assert!(matches!(err, RefCacheError::NotFound), "{err:?}");
    err.to_string()
}

/// Polls `ref_id` as `actor`.
async fn poll_as(actor: &Actor, ref_id: &str) -> Result<CachedResponse, RefCacheError> {
    actor.clone().scope(CACHE.get_cached_result(ref_id)).await
}

/// Asserts that `actor` sees the complete value `expected` under `ref_id`, by poll and by task info.
async fn assert_sees(actor: &Actor, ref_id: &str, expected: &str) {
    let polled = poll_as(actor, ref_id)
        .await
        .unwrap_or_else(|e| panic!("{actor} should see {ref_id}, got {e}"));
    assert_eq!(
        polled.value().map(refcache::JsonText::to_value).as_ref(),
        Some(&serde_json::json!(expected)),
        "{actor} reads the value of {ref_id}"
    );
    let info = actor
        .clone()
        .scope(CACHE.task_info(ref_id))
        .await
        .unwrap_or_else(|e| panic!("{actor} should see the task of {ref_id}, got {e}"));
    assert_eq!(info.status, TaskStatus::Complete);
}

/// Asserts that `actor` gets exactly what an unknown id gets, by poll and by task info.
async fn assert_hidden(actor: &Actor, ref_id: &str) {
    let unknown = unknown_error().await;
    let err = poll_as(actor, ref_id).await.unwrap_err();
    assert!(
        matches!(err, RefCacheError::NotFound),
        "{actor} polling {ref_id}: {err:?}"
    );
    assert_eq!(
        err.to_string(),
        unknown,
        "{actor}: same text as an unknown id"
    );
    let err = actor
        .clone()
        .scope(CACHE.task_info(ref_id))
        .await
        .unwrap_err();
    assert!(
        matches!(err, RefCacheError::NotFound),
        "{actor} task_info {ref_id}: {err:?}"
    );
    assert_eq!(err.to_string(), unknown);
}

// ---------------------------------------------------------------------------------------------------------------
// The rules, one fixed namespace each.

#[cached(cache = CACHE, namespace = "public")]
async fn in_public(label: String) -> String {
    bump(&label);
    format!("public {label}")
}

#[cached(cache = CACHE, namespace = "session:s1")]
async fn in_session_s1(label: String) -> String {
    bump(&label);
    format!("session {label}")
}

#[cached(cache = CACHE, namespace = "user:alice")]
async fn in_user_alice(label: String) -> String {
    bump(&label);
    format!("alice {label}")
}

#[cached(cache = CACHE, namespace = "agent:claude")]
async fn in_agent_claude(label: String) -> String {
    bump(&label);
    format!("claude {label}")
}

#[cached(cache = CACHE, namespace = "shared:team")]
async fn in_shared_team(label: String) -> String {
    bump(&label);
    format!("shared {label}")
}

#[cached(
    cache = CACHE,
    namespace = "shared:core",
    policy = AccessPolicy::public().allow("user:alice").allow("agent:helper-*")
)]
async fn in_shared_core(label: String) -> String {
    bump(&label);
    format!("core {label}")
}

#[cached(cache = CACHE, namespace = "jobs")]
async fn in_jobs(label: String) -> String {
    bump(&label);
    format!("jobs {label}")
}

#[cached(cache = CACHE, namespace = "team:x")]
async fn in_team_x(label: String) -> String {
    bump(&label);
    format!("team {label}")
}

#[tokio::test]
async fn public_is_open_to_everyone() {
    let made = Actor::user("alice")
        .scope(in_public("pub-1".into()))
        .await
        .unwrap();
    let ref_id = made.ref_id().to_string();
    assert_eq!(
        made.value().map(refcache::JsonText::to_value).as_ref(),
        Some(&serde_json::json!("public pub-1"))
    );
    for actor in [
        Actor::user("alice"),
        Actor::user("bob"),
        Actor::anonymous_user(),
        Actor::agent("claude"),
        Actor::anonymous_agent(),
        Actor::user("carol").with_session("any"),
        Actor::system(),
    ] {
        assert_sees(&actor, &ref_id, "public pub-1").await;
    }
    // And with no scope at all.
    let polled = CACHE.get_cached_result(&ref_id).await.unwrap();
    assert_eq!(
        polled.value().map(refcache::JsonText::to_value).as_ref(),
        Some(&serde_json::json!("public pub-1"))
    );
    let info = CACHE.task_info(&ref_id).await.unwrap();
    assert_eq!(&*info.namespace, "public");
}

#[tokio::test]
async fn session_namespace_admits_only_actors_in_that_session() {
    // Made by the system, outside any session: only the namespace rule binds the reference to `s1`.
    let made = Actor::system()
        .scope(in_session_s1("sess-1".into()))
        .await
        .unwrap();
    let ref_id = made.ref_id().to_string();
    assert_eq!(
        made.value().map(refcache::JsonText::to_value).as_ref(),
        Some(&serde_json::json!("session sess-1"))
    );
    let info = Actor::system()
        .scope(CACHE.task_info(&ref_id))
        .await
        .unwrap();
    assert_eq!(&*info.namespace, "session:s1");
    assert_eq!(
        info.session_id, None,
        "the task itself is bound to no session"
    );

    // In session s1, through the actor: users and agents alike.
    for actor in [
        Actor::user("alice").with_session("s1"),
        Actor::user("bob").with_session("s1"),
        Actor::agent("claude").with_session("s1"),
    ] {
        assert_sees(&actor, &ref_id, "session sess-1").await;
    }
    // In session s1, through `Session::scope`: the anonymous user, and a scoped actor that takes the session.
    let polled = Session::new("s1")
        .scope(CACHE.get_cached_result(&ref_id))
        .await
        .unwrap();
    assert_eq!(
        polled.value().map(refcache::JsonText::to_value).as_ref(),
        Some(&serde_json::json!("session sess-1"))
    );
    let polled = Actor::agent("claude")
        .scope(Session::new("s1").scope(CACHE.get_cached_result(&ref_id)))
        .await
        .unwrap();
    assert_eq!(
        polled.value().map(refcache::JsonText::to_value).as_ref(),
        Some(&serde_json::json!("session sess-1"))
    );

    // Anyone else: another session, no session, an agent, the anonymous user.
    for actor in [
        Actor::user("alice").with_session("s2"),
        Actor::user("alice"),
        Actor::agent("claude"),
        Actor::anonymous_user(),
    ] {
        assert_hidden(&actor, &ref_id).await;
    }
    let err = Session::new("s2")
        .scope(CACHE.get_cached_result(&ref_id))
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), unknown_error().await);
    let err = CACHE.get_cached_result(&ref_id).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        unknown_error().await,
        "no scope at all: the anonymous user, in no session"
    );

    // Made from within the session, it is visible there and nowhere else.
    let mine = Session::new("s1")
        .scope(in_session_s1("sess-2".into()))
        .await
        .unwrap();
    let mine = mine.ref_id().to_string();
    assert_sees(
        &Actor::user("x").with_session("s1"),
        &mine,
        "session sess-2",
    )
    .await;
    assert_hidden(&Actor::user("x").with_session("s2"), &mine).await;
    assert_sees(&Actor::system(), &mine, "session sess-2").await;
}

#[tokio::test]
async fn user_namespace_admits_only_that_user() {
    let alice = Actor::user("alice");
    let made = alice
        .clone()
        .scope(in_user_alice("user-1".into()))
        .await
        .unwrap();
    let ref_id = made.ref_id().to_string();
    assert_eq!(
        made.value().map(refcache::JsonText::to_value).as_ref(),
        Some(&serde_json::json!("alice user-1"))
    );
    assert_sees(&alice, &ref_id, "alice user-1").await;
    assert_sees(&alice.clone().with_session("s9"), &ref_id, "alice user-1").await;

    for actor in [
        Actor::user("bob"),
        Actor::user("alicea"),
        Actor::anonymous_user(),
        // An agent never passes a user rule, not even one with the same id.
        Actor::agent("alice"),
        Actor::agent("claude"),
        Actor::anonymous_agent(),
    ] {
        assert_hidden(&actor, &ref_id).await;
    }
    let err = CACHE.get_cached_result(&ref_id).await.unwrap_err();
    assert_eq!(err.to_string(), unknown_error().await, "no scope at all");
    assert_sees(&Actor::system(), &ref_id, "alice user-1").await;
}

#[tokio::test]
async fn agent_namespace_admits_only_that_agent() {
    let claude = Actor::agent("claude");
    let made = claude
        .clone()
        .scope(in_agent_claude("agent-1".into()))
        .await
        .unwrap();
    let ref_id = made.ref_id().to_string();
    assert_eq!(
        made.value().map(refcache::JsonText::to_value).as_ref(),
        Some(&serde_json::json!("claude agent-1"))
    );
    assert_sees(&claude, &ref_id, "claude agent-1").await;

    for actor in [
        Actor::agent("gpt"),
        Actor::agent("claude-2"),
        Actor::anonymous_agent(),
        // A user never passes an agent rule, not even one with the same id.
        Actor::user("claude"),
        Actor::anonymous_user(),
    ] {
        assert_hidden(&actor, &ref_id).await;
    }
    assert_sees(&Actor::system(), &ref_id, "claude agent-1").await;
}

#[tokio::test]
async fn shared_namespace_is_open_unless_the_policy_allows_only_some() {
    // Open: everyone sees it.
    let open = Actor::user("alice")
        .scope(in_shared_team("shared-1".into()))
        .await
        .unwrap();
    let open = open.ref_id().to_string();
    for actor in [
        Actor::user("alice"),
        Actor::user("bob"),
        Actor::agent("claude"),
        Actor::anonymous_user(),
        Actor::system(),
    ] {
        assert_sees(&actor, &open, "shared shared-1").await;
    }

    // Narrowed by `allow`: alice and the `helper-*` agents; nobody else.
    let narrow = Actor::user("alice")
        .scope(in_shared_core("shared-2".into()))
        .await
        .unwrap();
    assert_eq!(
        narrow.value().map(refcache::JsonText::to_value).as_ref(),
        Some(&serde_json::json!("core shared-2"))
    );
    let narrow = narrow.ref_id().to_string();
    for actor in [
        Actor::user("alice"),
        Actor::agent("helper-1"),
        Actor::agent("helper-x"),
        Actor::system(),
    ] {
        assert_sees(&actor, &narrow, "core shared-2").await;
    }
    for actor in [
        Actor::user("bob"),
        Actor::agent("claude"),
        Actor::agent("helper"),
        Actor::anonymous_user(),
    ] {
        assert_hidden(&actor, &narrow).await;
    }
}

#[tokio::test]
async fn custom_namespaces_are_open_to_everyone() {
    let jobs = Actor::agent("claude")
        .scope(in_jobs("custom-1".into()))
        .await
        .unwrap();
    let jobs = jobs.ref_id().to_string();
    let team = Actor::user("alice")
        .scope(in_team_x("custom-2".into()))
        .await
        .unwrap();
    let team = team.ref_id().to_string();
    for actor in [
        Actor::user("alice"),
        Actor::user("bob"),
        Actor::agent("gpt"),
        Actor::anonymous_user(),
        Actor::user("carol").with_session("s1"),
        Actor::system(),
    ] {
        assert_sees(&actor, &jobs, "jobs custom-1").await;
        assert_sees(&actor, &team, "team custom-2").await;
    }
    let info = CACHE.task_info(&team).await.unwrap();
    assert_eq!(
        &*info.namespace, "team:x",
        "an unknown prefix is a custom name"
    );
}

#[tokio::test]
async fn the_system_passes_every_rule() {
    let made = [
        Actor::user("alice")
            .scope(in_public("sys-1".into()))
            .await
            .unwrap(),
        Actor::user("alice")
            .with_session("s1")
            .scope(in_session_s1("sys-2".into()))
            .await
            .unwrap(),
        Actor::user("alice")
            .scope(in_user_alice("sys-3".into()))
            .await
            .unwrap(),
        Actor::agent("claude")
            .scope(in_agent_claude("sys-4".into()))
            .await
            .unwrap(),
        Actor::user("alice")
            .scope(in_shared_core("sys-5".into()))
            .await
            .unwrap(),
        Actor::user("alice")
            .scope(in_jobs("sys-6".into()))
            .await
            .unwrap(),
    ];
    let expected = [
        "public sys-1",
        "session sys-2",
        "alice sys-3",
        "claude sys-4",
        "core sys-5",
        "jobs sys-6",
    ];
    let system = Actor::system();
    for (response, value) in made.iter().zip(expected) {
        assert_eq!(
            response.value().map(refcache::JsonText::to_value).as_ref(),
            Some(&serde_json::json!(value))
        );
        assert_sees(&system, response.ref_id().as_str(), value).await;
        let info = system
            .clone()
            .scope(CACHE.reference_info(response.ref_id().as_str()))
            .await
            .unwrap();
        assert_eq!(info.permissions, refcache::Permissions::FULL);
    }
    // The system lists all of them, whatever their namespace or session.
    let listed = system
        .clone()
        .scope(CACHE.list_tasks(TaskFilter::all().limit(1000)))
        .await
        .unwrap();
    for response in &made {
        assert!(
            listed.tasks.iter().any(|t| &t.ref_id == response.ref_id()),
            "the system lists {}",
            response.ref_id()
        );
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Templates.

#[cached(cache = CACHE, namespace = "user:{user_id}")]
async fn notes(topic: String) -> String {
    bump(format!("notes:{topic}"));
    format!("notes on {topic}")
}

#[tokio::test]
async fn a_user_template_gives_each_user_their_own_reference_and_execution() {
    let alice = Actor::user("alice");
    let bob = Actor::user("bob");
    let a = alice.clone().scope(notes("rust".into())).await.unwrap();
    let b = bob.clone().scope(notes("rust".into())).await.unwrap();
    assert!(a.is_complete() && b.is_complete());
    assert_ne!(a.ref_id(), b.ref_id(), "one reference per user");
    assert_eq!(runs("notes:rust"), 2, "one execution per user");
    let (a, b) = (a.ref_id().to_string(), b.ref_id().to_string());

    // Each sees only its own.
    assert_sees(&alice, &a, "notes on rust").await;
    assert_sees(&bob, &b, "notes on rust").await;
    assert_hidden(&alice, &b).await;
    assert_hidden(&bob, &a).await;
    assert_hidden(&Actor::agent("claude"), &a).await;

    // The same user again: a hit, no third execution.
    let again = alice.clone().scope(notes("rust".into())).await.unwrap();
    assert!(again.is_complete(), "{:?}", again.to_json());
    assert_eq!(again.ref_id().as_str(), a, "a hit for the same user");
    assert_eq!(runs("notes:rust"), 2);

    // The namespace recorded is the filled one, on the task and on the reference.
    let info = alice.clone().scope(CACHE.task_info(&a)).await.unwrap();
    assert_eq!(&*info.namespace, "user:alice");
    let info = bob.clone().scope(CACHE.reference_info(&b)).await.unwrap();
    assert_eq!(&*info.task.namespace, "user:bob");
    // And lists filter on it.
    let listed = alice
        .clone()
        .scope(CACHE.list_tasks(TaskFilter::all().namespace("user:alice")))
        .await
        .unwrap();
    assert!(listed.tasks.iter().any(|t| t.ref_id.as_str() == a));
    assert!(listed.tasks.iter().all(|t| &*t.namespace == "user:alice"));
    let listed = alice
        .clone()
        .scope(CACHE.list_tasks(TaskFilter::all().namespace("user:bob")))
        .await
        .unwrap();
    assert!(listed.tasks.is_empty(), "alice lists none of bob's");
}

#[tokio::test]
async fn a_template_variable_the_actor_lacks_fails_the_call_and_says_how_to_fix_it() {
    let check = |result: Result<CachedResponse, RefCacheError>, who: &str| {
        let err = result.expect_err(who);
        match &err {
            RefCacheError::Namespace(NamespaceError::MissingVariable { template, variable }) => {
                assert_eq!(template, "user:{user_id}", "{who}");
                assert_eq!(variable, "user_id", "{who}");
            }
            other => panic!("{who}: expected MissingVariable, got {other:?}"),
        }
        let text = err.to_string();
        assert!(
            text.contains("{user_id}"),
            "{who}: names the variable: {text}"
        );
        assert!(
            text.contains("Actor::user"),
            "{who}: says how to provide it: {text}"
        );
    };
    check(
        Actor::agent("claude").scope(notes("missing".into())).await,
        "an agent has no user_id",
    );
    check(
        notes("missing".into()).await,
        "no scope: the anonymous user has no id",
    );
    check(
        Actor::anonymous_user().scope(notes("missing".into())).await,
        "the anonymous user",
    );
    check(
        Session::new("s1").scope(notes("missing".into())).await,
        "a session alone has no user",
    );
    check(
        Actor::system().scope(notes("missing".into())).await,
        "the system has no user_id either",
    );
    assert_eq!(runs("notes:missing"), 0, "nothing ran");
}

#[cached(cache = CACHE, namespace = "session:{session_id}")]
async fn scratch(label: String) -> String {
    bump(format!("scratch:{label}"));
    format!("scratch {label}")
}

#[tokio::test]
async fn a_session_template_gives_each_session_its_own_reference() {
    let in_a = Actor::user("alice").with_session("tpl-a");
    let in_b = Actor::user("alice").with_session("tpl-b");
    let a = in_a.clone().scope(scratch("x".into())).await.unwrap();
    let b = in_b.clone().scope(scratch("x".into())).await.unwrap();
    assert_ne!(a.ref_id(), b.ref_id());
    assert_eq!(runs("scratch:x"), 2);
    let (a, b) = (a.ref_id().to_string(), b.ref_id().to_string());
    let info = in_a.clone().scope(CACHE.task_info(&a)).await.unwrap();
    assert_eq!(&*info.namespace, "session:tpl-a");
    assert_hidden(&in_b, &a).await;
    assert_hidden(&in_a, &b).await;
    // Another actor in the same session shares it: the namespace and the key are the session's.
    let same_session = Actor::agent("claude").with_session("tpl-a");
    let shared = same_session
        .clone()
        .scope(scratch("x".into()))
        .await
        .unwrap();
    assert_eq!(shared.ref_id().as_str(), a, "a hit within the session");
    assert_eq!(runs("scratch:x"), 2);

    // Through `Session::scope`.
    let c = Session::new("tpl-c")
        .scope(scratch("x".into()))
        .await
        .unwrap();
    let info = Session::new("tpl-c")
        .scope(CACHE.task_info(c.ref_id().as_str()))
        .await
        .unwrap();
    assert_eq!(&*info.namespace, "session:tpl-c");

    // Outside any session the variable is missing.
    let err = Actor::user("alice")
        .scope(scratch("x".into()))
        .await
        .unwrap_err();
    match &err {
        RefCacheError::Namespace(NamespaceError::MissingVariable { variable, .. }) => {
            assert_eq!(variable, "session_id");
        }
        other => panic!("expected MissingVariable, got {other:?}"),
    }
    let text = err.to_string();
    assert!(text.contains("{session_id}"), "{text}");
    assert!(text.contains(".with_session("), "{text}");
}

#[cached(cache = CACHE, namespace = "shared:{team}")]
async fn board(label: String) -> String {
    bump(format!("board:{label}"));
    format!("board {label}")
}

#[tokio::test]
async fn an_attribute_template_groups_actors_by_that_attribute() {
    let alice = Actor::user("alice").with_attribute("team", "blue");
    let bob = Actor::user("bob").with_attribute("team", "blue");
    let claude = Actor::agent("claude").with_attribute("team", "red");
    let blue = alice.clone().scope(board("plan".into())).await.unwrap();
    let blue_again = bob.clone().scope(board("plan".into())).await.unwrap();
    assert_eq!(
        blue.ref_id(),
        blue_again.ref_id(),
        "the same team shares the reference"
    );
    let red = claude.clone().scope(board("plan".into())).await.unwrap();
    assert_ne!(blue.ref_id(), red.ref_id(), "another team has its own");
    assert_eq!(runs("board:plan"), 2, "one execution per team");

    let info = alice
        .clone()
        .scope(CACHE.reference_info(blue.ref_id().as_str()))
        .await
        .unwrap();
    assert_eq!(&*info.task.namespace, "shared:blue");
    let info = claude
        .clone()
        .scope(CACHE.task_info(red.ref_id().as_str()))
        .await
        .unwrap();
    assert_eq!(&*info.namespace, "shared:red");
    // A shared namespace is open: the red agent may read the blue board.
    assert_sees(&claude, blue.ref_id().as_str(), "board plan").await;

    // Without the attribute, the call fails and says which attribute to set.
    let err = Actor::user("carol")
        .scope(board("plan".into()))
        .await
        .unwrap_err();
    match &err {
        RefCacheError::Namespace(NamespaceError::MissingVariable { template, variable }) => {
            assert_eq!(template, "shared:{team}");
            assert_eq!(variable, "team");
        }
        other => panic!("expected MissingVariable, got {other:?}"),
    }
    let text = err.to_string();
    assert!(text.contains("{team}"), "{text}");
    assert!(text.contains(r#".with_attribute("team", ..)"#), "{text}");
    assert_eq!(runs("board:plan"), 2);
}

#[tokio::test]
async fn a_call_never_hands_out_a_reference_the_caller_may_not_see() {
    // Alice's value, in her namespace.
    let made = Actor::user("alice")
        .scope(in_user_alice("call-1".into()))
        .await
        .unwrap();
    let alices = made.ref_id().to_string();

    // Bob calls the same function with the same arguments: the key is alice's (the namespace is fixed), but bob
    // may not even see her reference. He must not learn its id, nor be told it is "execute-only" (he may not
    // execute it either): the call is refused for what it is, whatever references exist.
    let bob = Actor::user("bob")
        .scope(in_user_alice("call-1".into()))
        .await;
    match &bob {
        Ok(response) => {
            assert_ne!(
                response.ref_id().as_str(),
                alices,
                "bob's call handed him alice's reference: {}",
                response.to_json()
            );
            panic!(
                "bob may not see a reference in user:alice, but his call answered {}",
                response.to_json()
            );
        }
        Err(err) => {
            assert!(matches!(err, RefCacheError::CallDenied { .. }), "{err:?}");
            let text = err.to_string();
            assert!(
                !text.contains(&alices),
                "the refusal names no reference: {text}"
            );
            assert!(
                text.contains("user:alice") && text.contains("user:bob"),
                "{text}"
            );
        }
    }
    // An agent calling with new arguments would make a reference in user:alice that it may not see: refused alike,
    // before anything runs.
    let agent = Actor::agent("claude")
        .scope(in_user_alice("call-2".into()))
        .await;
    match agent {
        Ok(response) => panic!(
            "an agent may not see a reference in user:alice, but its call answered {}",
            response.to_json()
        ),
        Err(err) => assert!(matches!(err, RefCacheError::CallDenied { .. }), "{err:?}"),
    }
}
