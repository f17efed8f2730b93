//! Access policies: what each actor may do with a reference, set per function with `#[cached(policy = ...)]`.
//!
//! The four presets, as a user, an agent and the system see them: `public` (users everything, agents read and
//! execute), `user_only` (agents nothing: a reference is as unknown to them as a made-up id, to the letter),
//! `read_only` (everyone reads, nobody else does anything) and `execute_only` (private computation: an agent gets a
//! `Restricted` answer everywhere it could read the value, whether by the call, a poll, `full` or a page, yet it may
//! hand the ref id to another tool, which receives the value, and read that tool's public result; users read the
//! value). Then policy expressions: `deny` and `allow` glob patterns over `kind:id`, and an owner with permissions
//! of its own. A policy with an invalid glob fails every call with `RefCacheError::Policy` naming the pattern.

use std::sync::{LazyLock, Mutex};

use refcache::{
    AccessPolicy, Actor, CachedResponse, GetOptions, Permissions, PolicyError, RefCache,
    RefCacheError, TaskStatus, cached,
};
use serde_json::{Value, json};

#[path = "support/runs.rs"]
mod support;
use support::{bump, runs};

static CACHE: LazyLock<RefCache> = LazyLock::new(RefCache::new);

/// A ref id of this cache's form that no task ever had.
fn unknown_id() -> String {
    format!("{}:fedcba9876543210fedcba9876543210", CACHE.name())
}

/// What `actor` gets polling `ref_id`.
async fn poll_as(actor: &Actor, ref_id: &str) -> Result<CachedResponse, RefCacheError> {
    actor.clone().scope(CACHE.get_cached_result(ref_id)).await
}

/// What `actor` may do with `ref_id`, by `reference_info` (`None` when it may not see it).
async fn permissions_of(actor: &Actor, ref_id: &str) -> Option<Permissions> {
    match actor.clone().scope(CACHE.reference_info(ref_id)).await {
        Ok(info) => Some(info.permissions),
        Err(RefCacheError::NotFound) => None,
        Err(e) => panic!("reference_info as {actor}: {e:?}"),
    }
}

#[cached(cache = CACHE, policy = "public")]
async fn open_report(label: String) -> String {
    bump(&label);
    format!("open {label}")
}

#[cached(cache = CACHE, policy = "user_only")]
async fn private_report(label: String) -> String {
    bump(&label);
    format!("private {label}")
}

#[cached(cache = CACHE, policy = "read_only")]
async fn frozen_report(label: String) -> String {
    bump(&label);
    format!("frozen {label}")
}

#[cached(cache = CACHE, policy = "execute_only")]
async fn sealed_report(label: String) -> String {
    bump(&label);
    format!("sealed {label}")
}

/// What an actor sees of a reference: the value, a restricted answer, or nothing at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sight {
    Value,
    Restricted,
    Hidden,
}

async fn sight(actor: &Actor, ref_id: &str, expected: &str) -> Sight {
    match poll_as(actor, ref_id).await {
        Ok(CachedResponse::Restricted(_)) => Sight::Restricted,
        Ok(response) => {
            assert_eq!(
                response.value().map(refcache::JsonText::to_value).as_ref(),
                Some(&json!(expected)),
                "{actor} reads {ref_id}"
            );
            Sight::Value
        }
        Err(RefCacheError::NotFound) => Sight::Hidden,
        Err(e) => panic!("{actor} polling {ref_id}: {e:?}"),
    }
}

#[tokio::test]
async fn the_presets_as_a_user_an_agent_and_the_system_see_them() {
    let user = Actor::user("alice");
    let agent = Actor::agent("claude");
    let system = Actor::system();
    let rw = Permissions::READ | Permissions::EXECUTE;
    // (preset, reference made by a user, value, [(actor, sight, permissions)])
    let made = [
        (
            "public",
            user.clone()
                .scope(open_report("preset".into()))
                .await
                .unwrap(),
            "open preset",
            [
                (&user, Sight::Value, Some(Permissions::FULL)),
                (&agent, Sight::Value, Some(rw)),
                (&system, Sight::Value, Some(Permissions::FULL)),
            ],
        ),
        (
            "user_only",
            user.clone()
                .scope(private_report("preset".into()))
                .await
                .unwrap(),
            "private preset",
            [
                (&user, Sight::Value, Some(Permissions::FULL)),
                (&agent, Sight::Hidden, None),
                (&system, Sight::Value, Some(Permissions::FULL)),
            ],
        ),
        (
            "read_only",
            user.clone()
                .scope(frozen_report("preset".into()))
                .await
                .unwrap(),
            "frozen preset",
            [
                (&user, Sight::Value, Some(Permissions::READ)),
                (&agent, Sight::Value, Some(Permissions::READ)),
                (&system, Sight::Value, Some(Permissions::FULL)),
            ],
        ),
        (
            "execute_only",
            user.clone()
                .scope(sealed_report("preset".into()))
                .await
                .unwrap(),
            "sealed preset",
            [
                (&user, Sight::Value, Some(Permissions::FULL)),
                (&agent, Sight::Restricted, Some(Permissions::EXECUTE)),
                (&system, Sight::Value, Some(Permissions::FULL)),
            ],
        ),
    ];
    for (preset, response, value, expectations) in &made {
        assert_eq!(
            response.value().map(refcache::JsonText::to_value).as_ref(),
            Some(&json!(value)),
            "{preset}: the calling user reads the value"
        );
        let ref_id = response.ref_id().as_str();
        for (actor, expected_sight, expected_permissions) in expectations {
            assert_eq!(
                sight(actor, ref_id, value).await,
                *expected_sight,
                "{preset} as {actor}"
            );
            assert_eq!(
                permissions_of(actor, ref_id).await,
                *expected_permissions,
                "{preset}: permissions of {actor}"
            );
        }
    }

    // Calls made by the agent and by the system (fresh arguments, so each call makes its own reference).
    let by_agent = agent
        .clone()
        .scope(open_report("agent-call".into()))
        .await
        .unwrap();
    assert_eq!(
        by_agent.value().map(refcache::JsonText::to_value).as_ref(),
        Some(&json!("open agent-call"))
    );
    let by_agent = agent
        .clone()
        .scope(frozen_report("agent-call".into()))
        .await
        .unwrap();
    assert_eq!(
        by_agent.value().map(refcache::JsonText::to_value).as_ref(),
        Some(&json!("frozen agent-call"))
    );
    let by_agent = agent
        .clone()
        .scope(sealed_report("agent-call".into()))
        .await
        .unwrap();
    assert!(
        matches!(by_agent, CachedResponse::Restricted(_)),
        "{}",
        by_agent.to_json()
    );
    let system_calls = [
        system
            .clone()
            .scope(open_report("system-call".into()))
            .await
            .unwrap(),
        system
            .clone()
            .scope(private_report("system-call".into()))
            .await
            .unwrap(),
        system
            .clone()
            .scope(frozen_report("system-call".into()))
            .await
            .unwrap(),
        system
            .clone()
            .scope(sealed_report("system-call".into()))
            .await
            .unwrap(),
    ];
    for (response, prefix) in system_calls
        .iter()
        .zip(["open", "private", "frozen", "sealed"])
    {
        assert_eq!(
            response.value().map(refcache::JsonText::to_value).as_ref(),
            Some(&json!(format!("{prefix} system-call"))),
            "the system reads what its calls make"
        );
    }
}

#[tokio::test]
async fn user_only_hides_a_reference_from_agents_exactly_as_an_unknown_id() {
    let made = Actor::user("alice")
        .scope(private_report("hidden".into()))
        .await
        .unwrap();
    let ref_id = made.ref_id().to_string();
    let unknown = unknown_id();
    for agent in [
        Actor::agent("claude"),
        Actor::anonymous_agent(),
        Actor::agent("claude").with_session("s1"),
    ] {
        let denied = poll_as(&agent, &ref_id).await.unwrap_err();
        let missing = poll_as(&agent, &unknown).await.unwrap_err();
        assert!(matches!(denied, RefCacheError::NotFound), "{denied:?}");
        assert!(matches!(missing, RefCacheError::NotFound), "{missing:?}");
        assert_eq!(denied.to_string(), missing.to_string(), "{agent}: poll");
        assert_eq!(denied.to_string(), "Invalid or inaccessible reference");

        let denied = agent
            .clone()
            .scope(CACHE.task_info(&ref_id))
            .await
            .unwrap_err();
        let missing = agent
            .clone()
            .scope(CACHE.task_info(&unknown))
            .await
            .unwrap_err();
        assert_eq!(
            denied.to_string(),
            missing.to_string(),
            "{agent}: task_info"
        );
        let denied = agent
            .clone()
            .scope(CACHE.reference_info(&ref_id))
            .await
            .unwrap_err();
        let missing = agent
            .clone()
            .scope(CACHE.reference_info(&unknown))
            .await
            .unwrap_err();
        assert_eq!(
            denied.to_string(),
            missing.to_string(),
            "{agent}: reference_info"
        );
    }
    // Every user, and the system, reads it.
    for actor in [Actor::user("bob"), Actor::anonymous_user(), Actor::system()] {
        assert_eq!(
            sight(&actor, &ref_id, "private hidden").await,
            Sight::Value,
            "{actor}"
        );
    }
}

#[tokio::test]
async fn an_agent_calling_a_user_only_tool_learns_nothing() {
    // The user's value, then the agent's call with the same arguments (a hit on the user's value), then one with
    // new arguments (a reference the agent may not see). Either way the agent may neither read nor execute what
    // the call produced: it must not be told the ref id, nor that it is "execute-only".
    let made = Actor::user("alice")
        .scope(private_report("agent-calls".into()))
        .await
        .unwrap();
    for label in ["agent-calls", "agent-calls-fresh"] {
        let result = Actor::agent("claude")
            .scope(private_report(label.into()))
            .await;
        match result {
            Ok(response) => panic!(
                "an agent called a user_only tool ({label}) and got {} (the user's reference is {})",
                response.to_json(),
                made.ref_id()
            ),
            Err(err) => {
                assert!(
                    matches!(err, RefCacheError::CallDenied { .. }),
                    "{label}: {err:?}"
                );
                assert!(
                    !err.to_string().contains(made.ref_id().as_str()),
                    "the refusal names no reference"
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Execute-only: private computation.

/// The values `tally` received, by call.
static RECEIVED: LazyLock<Mutex<Vec<Value>>> = LazyLock::new(Default::default);

#[cached(cache = CACHE, policy = "execute_only")]
async fn salaries(team: String) -> Vec<String> {
    bump(format!("salaries:{team}"));
    (1..=5).map(|i| format!("s3cr3t-{team}-{i}")).collect()
}

/// A public tool that takes any JSON: the agent passes a ref id, the tool receives the value.
#[cached(cache = CACHE)]
async fn tally(rows: Value) -> String {
    RECEIVED.lock().unwrap().push(rows.clone());
    let rows = rows.as_array().map_or(0, Vec::len);
    format!("{rows} rows")
}

fn assert_restricted(response: &CachedResponse, ref_id: &str, what: &str) {
    assert!(
        matches!(response, CachedResponse::Restricted(_)),
        "{what}: {}",
        response.to_json()
    );
    assert_eq!(response.ref_id().as_str(), ref_id, "{what}");
    assert_eq!(response.status(), TaskStatus::Complete, "{what}");
    assert_eq!(response.value(), None, "{what}");
    assert!(response.preview_of().is_none(), "{what}");
    let wire = response.to_json();
    let mut keys: Vec<&str> = wire
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["is_async", "is_complete", "message", "ref_id", "status"],
        "{what}: {wire}"
    );
    assert_eq!(wire["is_complete"], json!(true), "{what}");
    assert_eq!(wire["is_async"], json!(false), "{what}");
    assert!(
        !wire.to_string().contains("s3cr3t"),
        "{what}: no part of the value anywhere: {wire}"
    );
    assert!(
        response.message().contains("execute-only"),
        "{what}: {}",
        response.message()
    );
}

#[tokio::test]
async fn execute_only_is_private_computation_for_agents() {
    let agent = Actor::agent("claude");
    let call = agent.clone().scope(salaries("blue".into())).await.unwrap();
    let ref_id = call.ref_id().to_string();
    assert_eq!(runs("salaries:blue"), 1, "it ran");
    assert_restricted(&call, &ref_id, "the agent's own call");

    // Polling, whole, full, paged: restricted every time.
    let options = [
        ("poll", GetOptions::default()),
        ("full", GetOptions::default().full(true)),
        ("page 1", GetOptions::default().page(1)),
        (
            "page 2 of size 2",
            GetOptions::default().page(2).page_size(2),
        ),
        ("page_size", GetOptions::default().page_size(2)),
        ("tiny max_size", GetOptions::default().max_size(1)),
    ];
    for (what, options) in &options {
        let polled = agent
            .clone()
            .scope(CACHE.get_cached_result_with(&ref_id, options))
            .await
            .unwrap();
        assert_restricted(&polled, &ref_id, what);
    }
    // It may see that the reference exists, and what it may do with it: execute, nothing else.
    let info = agent
        .clone()
        .scope(CACHE.reference_info(&ref_id))
        .await
        .unwrap();
    assert_eq!(info.permissions, Permissions::EXECUTE);
    assert_eq!(info.task.status, TaskStatus::Complete);
    // A second call by the agent is a hit, and still restricted.
    let again = agent.clone().scope(salaries("blue".into())).await.unwrap();
    assert_restricted(&again, &ref_id, "the agent's second call");
    assert_eq!(runs("salaries:blue"), 1, "a hit");

    // The agent hands the reference to another tool: the tool receives the value, the agent reads the tool's result.
    let tallied = agent.clone().scope(tally(json!(ref_id))).await.unwrap();
    assert_eq!(
        tallied.value().map(refcache::JsonText::to_value).as_ref(),
        Some(&json!("5 rows")),
        "{}",
        tallied.to_json()
    );
    let expected: Value = json!([
        "s3cr3t-blue-1",
        "s3cr3t-blue-2",
        "s3cr3t-blue-3",
        "s3cr3t-blue-4",
        "s3cr3t-blue-5"
    ]);
    assert!(
        RECEIVED.lock().unwrap().contains(&expected),
        "the tool received the value itself"
    );
    let polled = agent
        .clone()
        .scope(CACHE.get_cached_result(tallied.ref_id().as_str()))
        .await
        .unwrap();
    assert_eq!(
        polled.value().map(refcache::JsonText::to_value).as_ref(),
        Some(&json!("5 rows")),
        "the tool's own result is public"
    );

    // A user reads the value: by the same call (a hit), by a poll, whole, and by page.
    let user = Actor::user("alice");
    let hit = user.clone().scope(salaries("blue".into())).await.unwrap();
    assert_eq!(hit.ref_id().as_str(), ref_id);
    assert_eq!(
        hit.value().map(refcache::JsonText::to_value).as_ref(),
        Some(&expected)
    );
    assert_eq!(runs("salaries:blue"), 1);
    let polled = user
        .clone()
        .scope(CACHE.get_cached_result(&ref_id))
        .await
        .unwrap();
    assert_eq!(
        polled.value().map(refcache::JsonText::to_value).as_ref(),
        Some(&expected)
    );
    let full = user
        .clone()
        .scope(CACHE.get_cached_result_with(&ref_id, &GetOptions::default().full(true)))
        .await
        .unwrap();
    assert_eq!(
        full.value().map(refcache::JsonText::to_value).as_ref(),
        Some(&expected)
    );
    let page = user
        .clone()
        .scope(CACHE.get_cached_result_with(&ref_id, &GetOptions::default().page(2).page_size(2)))
        .await
        .unwrap();
    let preview = page.preview_of().expect("a page");
    assert_eq!(preview.value, json!(["s3cr3t-blue-3", "s3cr3t-blue-4"]));
    assert_eq!(
        user.clone()
            .scope(CACHE.reference_info(&ref_id))
            .await
            .unwrap()
            .permissions,
        Permissions::FULL
    );
}

// ---------------------------------------------------------------------------------------------------------------
// Policy expressions.

#[cached(cache = CACHE, policy = AccessPolicy::public().deny("agent:evil-*"))]
async fn guarded(label: String) -> String {
    bump(&label);
    format!("guarded {label}")
}

#[cached(
    cache = CACHE,
    policy = AccessPolicy::public().allow("user:team-*").allow("agent:bot-?")
)]
async fn members_only(label: String) -> String {
    bump(&label);
    format!("members {label}")
}

#[cached(
    cache = CACHE,
    policy = AccessPolicy::read_only().owner("user:alice", Permissions::FULL)
)]
async fn owned(label: String) -> String {
    bump(&label);
    format!("owned {label}")
}

#[cached(
    cache = CACHE,
    policy = AccessPolicy::user_only().owner("agent:boss", Permissions::READ)
)]
async fn boss_may_read(label: String) -> String {
    bump(&label);
    format!("boss {label}")
}

#[cached(cache = CACHE, policy = AccessPolicy::public().deny("user:[bc]*"))]
async fn not_b_or_c(label: String) -> String {
    bump(&label);
    format!("class {label}")
}

#[tokio::test]
async fn deny_patterns_are_globs_over_kind_and_id() {
    let made = Actor::user("alice")
        .scope(guarded("deny".into()))
        .await
        .unwrap();
    let ref_id = made.ref_id().to_string();
    for denied in [Actor::agent("evil-1"), Actor::agent("evil-")] {
        assert_eq!(sight(&denied, &ref_id, "").await, Sight::Hidden, "{denied}");
    }
    for allowed in [
        Actor::agent("evilish"),
        Actor::agent("good"),
        Actor::user("evil-1"),
        Actor::user("bob"),
    ] {
        assert_eq!(
            sight(&allowed, &ref_id, "guarded deny").await,
            Sight::Value,
            "{allowed}: `agent:evil-*` does not match it"
        );
    }

    let made = Actor::user("alice")
        .scope(not_b_or_c("class".into()))
        .await
        .unwrap();
    let ref_id = made.ref_id().to_string();
    for denied in [Actor::user("bob"), Actor::user("carol")] {
        assert_eq!(sight(&denied, &ref_id, "").await, Sight::Hidden, "{denied}");
    }
    for allowed in [
        Actor::user("alice"),
        Actor::user("dave"),
        Actor::agent("bob"),
    ] {
        assert_eq!(
            sight(&allowed, &ref_id, "class class").await,
            Sight::Value,
            "{allowed}"
        );
    }
}

#[tokio::test]
async fn allow_patterns_admit_only_the_actors_they_match() {
    let made = Actor::user("team-1")
        .scope(members_only("allow".into()))
        .await
        .unwrap();
    assert_eq!(
        made.value().map(refcache::JsonText::to_value).as_ref(),
        Some(&json!("members allow"))
    );
    let ref_id = made.ref_id().to_string();
    for member in [
        Actor::user("team-1"),
        Actor::user("team-"),
        Actor::agent("bot-7"),
        Actor::system(),
    ] {
        assert_eq!(
            sight(&member, &ref_id, "members allow").await,
            Sight::Value,
            "{member}"
        );
    }
    for outsider in [
        Actor::user("bob"),
        Actor::anonymous_user(),
        Actor::agent("bot-12"),
        Actor::agent("bot-"),
        Actor::agent("team-1"),
    ] {
        assert_eq!(
            sight(&outsider, &ref_id, "").await,
            Sight::Hidden,
            "{outsider}"
        );
    }
}

#[tokio::test]
async fn an_owner_gets_its_own_permissions() {
    // read_only for everyone, everything for alice.
    let first = Actor::user("alice")
        .scope(owned("owner-1".into()))
        .await
        .unwrap();
    let second = Actor::user("alice")
        .scope(owned("owner-2".into()))
        .await
        .unwrap();
    let (first, second) = (first.ref_id().to_string(), second.ref_id().to_string());
    assert_eq!(
        permissions_of(&Actor::user("alice"), &first).await,
        Some(Permissions::FULL)
    );
    assert_eq!(
        permissions_of(&Actor::user("bob"), &first).await,
        Some(Permissions::READ)
    );
    let err = Actor::user("bob")
        .scope(CACHE.delete(&first))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            RefCacheError::PermissionDenied {
                operation: "delete",
                ..
            }
        ),
        "{err:?}"
    );
    Actor::user("alice")
        .scope(CACHE.delete(&first))
        .await
        .expect("the owner may delete");
    assert_eq!(
        sight(&Actor::system(), &first, "").await,
        Sight::Hidden,
        "deleted"
    );
    assert_eq!(
        sight(&Actor::user("bob"), &second, "owned owner-2").await,
        Sight::Value
    );

    // user_only, with one agent that may read.
    let made = Actor::user("alice")
        .scope(boss_may_read("owner-3".into()))
        .await
        .unwrap();
    let ref_id = made.ref_id().to_string();
    assert_eq!(
        sight(&Actor::agent("boss"), &ref_id, "boss owner-3").await,
        Sight::Value
    );
    assert_eq!(
        permissions_of(&Actor::agent("boss"), &ref_id).await,
        Some(Permissions::READ)
    );
    assert_eq!(
        sight(&Actor::agent("intern"), &ref_id, "").await,
        Sight::Hidden
    );
}

#[cached(cache = CACHE, policy = AccessPolicy::public().deny("agent:["))]
async fn bad_deny(label: String) -> String {
    bump(&label);
    label
}

#[cached(cache = CACHE, policy = AccessPolicy::public().allow("user:alice").allow("user:[b"))]
async fn bad_allow(label: String) -> String {
    bump(&label);
    label
}

#[tokio::test]
async fn a_policy_with_an_invalid_pattern_fails_every_call_naming_it() {
    let check = |result: Result<CachedResponse, RefCacheError>, pattern: &str, who: &str| {
        let err = result.expect_err(who);
        match &err {
            RefCacheError::Policy(PolicyError::Pattern { pattern: p, .. }) => {
                assert_eq!(p, pattern, "{who}");
            }
            other => panic!("{who}: expected a policy error, got {other:?}"),
        }
        let text = err.to_string();
        assert!(
            text.contains(&format!("`{pattern}`")),
            "{who}: names the pattern: {text}"
        );
    };
    for _ in 0..2 {
        check(bad_deny("bad-1".into()).await, "agent:[", "no scope");
        check(
            Actor::user("alice").scope(bad_deny("bad-1".into())).await,
            "agent:[",
            "a user",
        );
        check(
            Actor::agent("claude").scope(bad_deny("bad-1".into())).await,
            "agent:[",
            "an agent",
        );
        check(
            Actor::system().scope(bad_deny("bad-1".into())).await,
            "agent:[",
            "the system",
        );
        check(
            Actor::user("alice").scope(bad_allow("bad-2".into())).await,
            "user:[b",
            "an allowed user, past a valid pattern",
        );
    }
    assert_eq!(runs("bad-1"), 0, "nothing ran");
    assert_eq!(runs("bad-2"), 0, "nothing ran");
}

// ---------------------------------------------------------------------------------------------------------------
// Nothing of a private value leaks through errors.

#[cached(cache = CACHE, policy = "execute_only")]
async fn secret_number(label: String) -> u64 {
    bump(&label);
    987_654_321
}

#[cached(cache = CACHE)]
async fn wants_text(s: String) -> String {
    s
}

#[cached(cache = CACHE, resolve_refs = false)]
async fn store_raw(label: String, value: Value) -> Value {
    bump(&label);
    value
}

#[cached(cache = CACHE, policy = "execute_only", resolve_refs = false)]
async fn secret_raw(label: String, value: Value) -> Value {
    bump(&label);
    value
}

#[cached(cache = CACHE, policy = "execute_only", execution_timeout = 1.0)]
async fn slow_secret(label: String, ctx: refcache::TaskContext) -> String {
    ctx.set_partial_result(json!(format!("partial-{label}")));
    tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
    label
}

#[tokio::test]
async fn a_type_mismatch_does_not_quote_a_value_the_caller_may_not_read() {
    let agent = Actor::agent("analyst");
    let secret = agent
        .clone()
        .scope(secret_number("mismatch".into()))
        .await
        .unwrap();
    let err = agent
        .clone()
        .scope(wants_text(secret.ref_id().to_string()))
        .await
        .unwrap_err();
    assert!(
        matches!(err, RefCacheError::ResolvedArgument { .. }),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        !text.contains("987654321"),
        "the value stays private: {text}"
    );
    assert!(
        text.contains("argument `s`"),
        "still names the argument: {text}"
    );
    // A user who may read it gets serde's full explanation.
    let user = Actor::user("u")
        .scope(wants_text(secret.ref_id().to_string()))
        .await
        .unwrap_err();
    assert!(user.to_string().contains("987654321"), "{user}");
}

#[tokio::test]
async fn errors_inside_a_private_value_name_only_the_reference_passed() {
    let agent = Actor::agent("analyst");
    let missing = format!("{}:0123456789abcdef0123456789abcdef", CACHE.name());
    let private = agent
        .clone()
        .scope(secret_raw(
            "inside".into(),
            json!({"the_private_field_name": missing}),
        ))
        .await
        .unwrap();
    let private_id = private.ref_id().to_string();
    let err = agent
        .clone()
        .scope(store_raw("inside-use".into(), json!(null)))
        .await
        .map(|_| ());
    assert!(err.is_ok());
    let err = agent
        .clone()
        .scope(wants_any(json!({"input": private_id})))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        !text.contains("the_private_field_name") && !text.contains(&missing),
        "nothing of the value's content: {text}"
    );
    match err {
        RefCacheError::UnresolvedReference {
            argument, ref_id, ..
        } => {
            assert_eq!(argument, "value.input");
            assert_eq!(ref_id, private_id, "only the reference the caller passed");
        }
        other => panic!("{other:?}"),
    }
}

#[cached(cache = CACHE)]
async fn wants_any(value: Value) -> Value {
    value
}

#[tokio::test(start_paused = true)]
async fn a_partial_result_is_not_shown_to_an_actor_that_may_not_read() {
    let agent = Actor::agent("analyst");
    let response = agent
        .clone()
        .scope(refcache::AsyncResponseFormat::Full.scope(slow_secret("partial".into())))
        .await
        .unwrap();
    let ref_id = response.ref_id().to_string();
    let failed = CACHE
        .backend()
        .wait(response.ref_id(), None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(failed.info.status, TaskStatus::Failed, "timed out");
    let polled = agent
        .clone()
        .scope(CACHE.get_cached_result_with(
            &ref_id,
            &refcache::GetOptions::default().format(refcache::AsyncResponseFormat::Full),
        ))
        .await
        .unwrap()
        .to_json();
    assert_eq!(polled["error_code"], json!("TIMEOUT"));
    assert!(
        !polled.to_string().contains("partial-partial"),
        "no partial result for the agent: {polled}"
    );
    let info = agent.clone().scope(CACHE.task_info(&ref_id)).await.unwrap();
    assert!(info.error.unwrap().details.is_none());
    // A user may read it: the partial result is there.
    let user = Actor::user("u")
        .scope(CACHE.get_cached_result_with(
            &ref_id,
            &refcache::GetOptions::default().format(refcache::AsyncResponseFormat::Full),
        ))
        .await
        .unwrap()
        .to_json();
    assert!(user.to_string().contains("partial-partial"), "{user}");
}
