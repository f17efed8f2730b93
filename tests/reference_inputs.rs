//! Reference inputs: a tool argument that is a ref id (`<cache-name>:<32 lowercase hex>`) is replaced by the value it
//! refers to before the call, wherever it sits: the whole argument, or a string deep inside a struct, an array or a
//! map, several at once. The cache key is computed from the resolved arguments, so passing a reference and passing
//! its value are the same call (one execution, one ref id, the second a hit).
//!
//! A reference whose value is (or holds) another reference is followed; references that resolve to each other
//! form a cycle, which is an error naming the whole chain. `resolve_refs = false` opts a tool out: it receives the
//! ref id text as it is. A reference that cannot be resolved (unknown, still running, failed, cancelled, or one
//! the caller may not see) is an error naming the argument path and saying what to do, and the tool does not run.
//! Resolving needs `READ` or `EXECUTE`: an agent may hand an execute-only reference to a tool without seeing it,
//! and a reference it may not see at all fails with exactly the text of an unknown one. A string that merely looks
//! like a ref id is passed as it is. `RefCache::resolve_refs` does the same to any JSON value.

use std::collections::{BTreeMap, HashMap};
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use refcache::{
    Actor, CachedResponse, INACCESSIBLE_REFERENCE, MAX_REFERENCE_DEPTH, RefCache, RefCacheError,
    RefId, TaskContext, TaskStatus, cached,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

#[path = "support/gates.rs"]
mod gates;
#[path = "support/runs.rs"]
mod support;
use gates::{gate, open};
use support::{bump, runs};

static CACHE: LazyLock<RefCache> = LazyLock::new(RefCache::new);

// ---------------------------------------------------------------------------------------------------------------
// Gates: a gated task waits until the test opens its gate (a stored permit, so opening first is fine too).

/// Ref ids the test hands to gated tasks, by label (read when the gate opens).
static SLOTS: LazyLock<Mutex<HashMap<String, String>>> = LazyLock::new(Default::default);

/// Waits until the task behind `ref_id` is terminal; answers its status. (The clock is paused: the minute passes
/// only if nothing else can run, so it bounds a hang, never a slow machine.)
async fn settle(ref_id: &RefId) -> TaskStatus {
    let snapshot =
        tokio::time::timeout(Duration::from_secs(60), CACHE.backend().wait(ref_id, None))
            .await
            .expect("the task ends once its gate is open");
    snapshot.unwrap().expect("the task is known").info.status
}

/// A ref id of this cache that no task has.
fn unknown_ref() -> String {
    format!("{}:0123456789abcdef0123456789abcdef", CACHE.name())
}

// ---------------------------------------------------------------------------------------------------------------
// Tools.

/// Stores `value` under a fresh reference.
#[cached(cache = CACHE)]
async fn produce(label: String, value: Value) -> Value {
    bump(&label);
    value
}

/// Answers what it received, so the test sees what resolution passed in.
#[cached(cache = CACHE)]
async fn consume(label: String, input: Value) -> Value {
    bump(&label);
    input
}

#[cached(cache = CACHE)]
async fn count_items(label: String, input: Value) -> usize {
    bump(&label);
    input.as_array().map_or(0, Vec::len)
}

#[cached(cache = CACHE)]
async fn consume_items(label: String, items: Vec<Value>) -> Vec<Value> {
    bump(&label);
    items
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Doc {
    title: String,
    source: Value,
    pages: Vec<Value>,
}

#[cached(cache = CACHE)]
async fn consume_doc(label: String, doc: Doc) -> Doc {
    bump(&label);
    doc
}

#[cached(cache = CACHE)]
async fn consume_map(label: String, by_name: BTreeMap<String, Value>) -> BTreeMap<String, Value> {
    bump(&label);
    by_name
}

/// Several reference-bearing arguments in one call.
#[cached(cache = CACHE)]
async fn combine(label: String, left: Value, right: Value, rest: Vec<Value>) -> Value {
    bump(&label);
    json!({"left": left, "right": right, "rest": rest})
}

/// Opts out: the ref id text arrives as it is (and is stored as the value).
#[cached(cache = CACHE, resolve_refs = false)]
async fn echo(s: String) -> String {
    s
}

#[cached(cache = CACHE, resolve_refs = false)]
async fn raw(label: String, input: Value) -> Value {
    bump(&label);
    input
}

/// Returns its own ref id: a reference that refers to itself.
#[cached(cache = CACHE)]
async fn own_ref(label: String, ctx: TaskContext) -> String {
    bump(&label);
    ctx.ref_id().expect("a task has a ref id").to_string()
}

/// Waits on its gate, then returns the ref id the test put in its slot (or `value` when there is none).
#[cached(cache = CACHE, async_timeout = 0.5)]
async fn gated(label: String, value: Value) -> Value {
    bump(&label);
    gate(&label).notified().await;
    match SLOTS.lock().unwrap().get(&label) {
        Some(ref_id) => Value::String(ref_id.clone()),
        None => value,
    }
}

/// One at a time: a second call waits as `pending` behind the first.
#[cached(cache = CACHE, async_timeout = 0.5, max_concurrent = 1)]
async fn one_at_a_time(label: String) -> String {
    bump(&label);
    gate(&label).notified().await;
    label
}

#[cached(cache = CACHE)]
async fn fails(label: String) -> Result<Value, String> {
    bump(&label);
    Err(format!("boom in {label}"))
}

#[cached(cache = CACHE, policy = "execute_only")]
async fn secret(label: String) -> Value {
    json!({"secret": label})
}

#[cached(cache = CACHE, policy = "user_only")]
async fn private(label: String) -> Value {
    json!({"private": label})
}

#[cached(cache = CACHE, namespace = "user:{user_id}")]
async fn mine(label: String) -> Value {
    json!({"mine": label})
}

#[cached(cache = CACHE)]
fn sync_produce(label: String, n: i64) -> Vec<i64> {
    bump(&label);
    (0..n).collect()
}

#[cached(cache = CACHE)]
fn sync_sum(label: String, numbers: Value) -> i64 {
    bump(&label);
    numbers
        .as_array()
        .expect("resolved to an array")
        .iter()
        .map(|n| n.as_i64().expect("numbers"))
        .sum()
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

/// The parts of an `UnresolvedReference`, or a panic naming what came instead.
fn unresolved(result: Result<CachedResponse, RefCacheError>) -> (String, String, String, String) {
    match result {
        Err(err @ RefCacheError::UnresolvedReference { .. }) => {
            let text = err.to_string();
            let RefCacheError::UnresolvedReference {
                argument,
                ref_id,
                reason,
            } = err
            else {
                unreachable!()
            };
            (argument, ref_id, reason, text)
        }
        Err(other) => panic!("expected UnresolvedReference, got {other:?}"),
        Ok(response) => panic!(
            "expected UnresolvedReference, got a response: {:?}",
            response.to_json()
        ),
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Resolution where the reference sits.

#[tokio::test(start_paused = true)]
async fn a_top_level_reference_is_replaced_by_its_value() {
    let value = json!({"rows": [1, 2, 3], "name": "top"});
    let source = complete_ref(&produce("top-src".into(), value.clone()).await.unwrap());
    let response = consume("top-use".into(), json!(source)).await.unwrap();
    assert_eq!(
        response.value().map(refcache::JsonText::to_value).as_ref(),
        Some(&value),
        "the tool received the referenced value, not the ref id"
    );
    assert_eq!(runs("top-use"), 1);
    assert_ne!(
        response.ref_id().as_str(),
        source,
        "the consumer's call has its own reference"
    );
}

#[tokio::test(start_paused = true)]
async fn references_deep_in_a_struct_an_array_and_a_map_are_replaced() {
    let text = complete_ref(
        &produce("deep-a".into(), json!("chapter one"))
            .await
            .unwrap(),
    );
    let table = complete_ref(
        &produce("deep-b".into(), json!([[1, 2], [3, 4]]))
            .await
            .unwrap(),
    );

    let doc = Doc {
        title: "report".into(),
        source: json!({"inline": {"body": text.clone(), "n": 7}}),
        pages: vec![json!(1), json!({"table": table.clone()}), json!("plain")],
    };
    let response = consume_doc("deep-doc".into(), doc).await.unwrap();
    let got: Doc = response.value_as().unwrap().unwrap();
    assert_eq!(
        got,
        Doc {
            title: "report".into(),
            source: json!({"inline": {"body": "chapter one", "n": 7}}),
            pages: vec![json!(1), json!({"table": [[1, 2], [3, 4]]}), json!("plain")],
        },
        "a struct field, nested objects and array items all resolve"
    );

    let items = vec![json!(0), json!([json!(table.clone())]), json!(text.clone())];
    let response = consume_items("deep-items".into(), items).await.unwrap();
    assert_eq!(
        response.value().map(refcache::JsonText::to_value).as_ref(),
        Some(&json!([0, [[[1, 2], [3, 4]]], "chapter one"]))
    );

    let by_name = BTreeMap::from([
        ("text".to_owned(), json!(text)),
        ("table".to_owned(), json!({"cells": table})),
        ("other".to_owned(), json!(null)),
    ]);
    let response = consume_map("deep-map".into(), by_name).await.unwrap();
    assert_eq!(
        response.value().map(refcache::JsonText::to_value).as_ref(),
        Some(&json!({"text": "chapter one", "table": {"cells": [[1, 2], [3, 4]]}, "other": null}))
    );
    assert_eq!(
        (runs("deep-doc"), runs("deep-items"), runs("deep-map")),
        (1, 1, 1)
    );
}

#[tokio::test(start_paused = true)]
async fn several_references_in_one_call_each_resolve() {
    let a = complete_ref(&produce("several-a".into(), json!(1)).await.unwrap());
    let b = complete_ref(
        &produce("several-b".into(), json!({"b": true}))
            .await
            .unwrap(),
    );
    let c = complete_ref(&produce("several-c".into(), json!(["c"])).await.unwrap());
    let response = combine(
        "several".into(),
        json!(a.clone()),
        json!({"nested": b.clone()}),
        vec![json!(c), json!(a.clone()), json!("not a ref")],
    )
    .await
    .unwrap();
    assert_eq!(
        response.value().map(refcache::JsonText::to_value).as_ref(),
        Some(&json!({
            "left": 1,
            "right": {"nested": {"b": true}},
            "rest": [["c"], 1, "not a ref"],
        })),
        "every reference resolves, and one used twice resolves twice (that is no cycle)"
    );
    assert_eq!(runs("several"), 1);
}

// ---------------------------------------------------------------------------------------------------------------
// The key.

#[tokio::test(start_paused = true)]
async fn the_key_is_computed_from_the_resolved_arguments() {
    let value = json!({"query": "select 1", "limit": 10});
    let source = complete_ref(&produce("key-src".into(), value.clone()).await.unwrap());

    // By reference first, then by value: one execution, one ref id.
    let by_ref = consume("key-use".into(), json!(source.clone()))
        .await
        .unwrap();
    let by_value = consume("key-use".into(), value.clone()).await.unwrap();
    assert_eq!(runs("key-use"), 1, "the second call is a hit");
    assert_eq!(by_ref.ref_id(), by_value.ref_id(), "the same call");
    assert_eq!(
        by_value.value().map(refcache::JsonText::to_value).as_ref(),
        Some(&value)
    );

    // By value first, then by reference: the same.
    let by_value_2 = consume("key-use-2".into(), value.clone()).await.unwrap();
    let by_ref_2 = consume("key-use-2".into(), json!(source.clone()))
        .await
        .unwrap();
    assert_eq!(runs("key-use-2"), 1, "the call by reference is a hit");
    assert_eq!(by_ref_2.ref_id(), by_value_2.ref_id());

    // Another reference to an equal value is the same call too.
    let twin = complete_ref(&produce("key-twin".into(), value.clone()).await.unwrap());
    assert_ne!(twin, source, "two producers, two references");
    let by_twin = consume("key-use".into(), json!(twin)).await.unwrap();
    assert_eq!(by_twin.ref_id(), by_ref.ref_id());
    assert_eq!(
        runs("key-use"),
        1,
        "a reference to an equal value hits as well"
    );

    // A reference to a different value is a different call.
    let other = complete_ref(
        &produce("key-other".into(), json!({"query": "select 2"}))
            .await
            .unwrap(),
    );
    let different = consume("key-use".into(), json!(other)).await.unwrap();
    assert_ne!(different.ref_id(), by_ref.ref_id());
    assert_eq!(runs("key-use"), 2);
}

// ---------------------------------------------------------------------------------------------------------------
// Chains and cycles.

#[tokio::test(start_paused = true)]
async fn a_reference_that_resolves_to_another_reference_is_followed() {
    let base = complete_ref(
        &produce("chain-base".into(), json!({"deep": 42}))
            .await
            .unwrap(),
    );
    // `echo` does not resolve: its value is the ref id text itself.
    let hop1 = complete_ref(&echo(base.clone()).await.unwrap());
    let stored = CACHE.get_cached_result(&hop1).await.unwrap();
    assert_eq!(
        stored.value().map(refcache::JsonText::to_value).as_ref(),
        Some(&json!(base)),
        "echo stored the ref id"
    );
    let hop2 = complete_ref(&echo(hop1.clone()).await.unwrap());

    let response = consume("chain-use".into(), json!([hop2, {"via": hop1}]))
        .await
        .unwrap();
    assert_eq!(
        response.value().map(refcache::JsonText::to_value).as_ref(),
        Some(&json!([{"deep": 42}, {"via": {"deep": 42}}])),
        "hop2 -> hop1 -> base, and hop1 -> base, are followed to the value"
    );

    // A value that holds a ref id somewhere inside is followed too.
    let holder = complete_ref(
        &raw("chain-holder".into(), json!({"inner": [base.clone()]}))
            .await
            .unwrap(),
    );
    let response = consume("chain-use-2".into(), json!(holder)).await.unwrap();
    assert_eq!(
        response.value().map(refcache::JsonText::to_value).as_ref(),
        Some(&json!({"inner": [{"deep": 42}]}))
    );
    assert_eq!((runs("chain-use"), runs("chain-use-2")), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn a_reference_to_itself_is_a_cycle_naming_the_chain() {
    let own = complete_ref(&own_ref("cycle-self".into()).await.unwrap());
    assert_eq!(
        CACHE
            .get_cached_result(&own)
            .await
            .unwrap()
            .value()
            .map(refcache::JsonText::to_value)
            .as_ref(),
        Some(&json!(own)),
        "the task returned its own ref id"
    );

    let err = consume("cycle-self-use".into(), json!({"x": own.clone()}))
        .await
        .unwrap_err();
    let text = err.to_string();
    match err {
        RefCacheError::ReferenceCycle { chain } => {
            assert_eq!(chain, vec![own.clone(), own.clone()], "{text}");
        }
        other => panic!("expected ReferenceCycle, got {other:?}"),
    }
    assert!(
        text.contains(&format!("references form a cycle: {own} -> {own}")),
        "{text}"
    );
    assert!(text.contains("passing a value instead"), "{text}");
    assert_eq!(runs("cycle-self-use"), 0, "the tool did not run");

    let direct = CACHE.resolve_refs(json!(own.clone())).await.unwrap_err();
    assert!(
        matches!(&direct, RefCacheError::ReferenceCycle { chain } if chain.len() == 2),
        "{direct:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn two_references_to_each_other_are_a_cycle_naming_the_whole_chain() {
    // A waits on its gate; meanwhile B is made to refer to A; then A is let finish with B's ref id as its value.
    let a = gated("cycle-a".into(), Value::Null).await.unwrap();
    assert_eq!(a.status(), TaskStatus::Processing);
    let a_id = a.ref_id().to_string();
    let b_id = complete_ref(&echo(a_id.clone()).await.unwrap());
    SLOTS
        .lock()
        .unwrap()
        .insert("cycle-a".to_owned(), b_id.clone());
    open("cycle-a");
    assert_eq!(settle(a.ref_id()).await, TaskStatus::Complete);
    assert_eq!(
        CACHE
            .get_cached_result(&a_id)
            .await
            .unwrap()
            .value()
            .map(refcache::JsonText::to_value)
            .as_ref(),
        Some(&json!(b_id))
    );

    for (start, chain) in [
        (&a_id, vec![a_id.clone(), b_id.clone(), a_id.clone()]),
        (&b_id, vec![b_id.clone(), a_id.clone(), b_id.clone()]),
    ] {
        let err = consume_items("cycle-two-use".into(), vec![json!(start)])
            .await
            .unwrap_err();
        let text = err.to_string();
        let expected = format!("references form a cycle: {}", chain.join(" -> "));
        assert!(text.contains(&expected), "{text}");
        match err {
            RefCacheError::ReferenceCycle { chain: got } => assert_eq!(got, chain),
            other => panic!("expected ReferenceCycle, got {other:?}"),
        }
    }
    assert_eq!(runs("cycle-two-use"), 0);
}

#[tokio::test(start_paused = true)]
async fn chains_resolve_up_to_the_depth_limit() {
    let base = complete_ref(&produce("depth-base".into(), json!("bottom")).await.unwrap());
    // The base and MAX_REFERENCE_DEPTH - 1 echoes: a chain of MAX_REFERENCE_DEPTH references.
    let mut top = base;
    for _ in 1..MAX_REFERENCE_DEPTH {
        top = complete_ref(&echo(top).await.unwrap());
    }
    let response = consume("depth-use".into(), json!(top.clone()))
        .await
        .unwrap();
    assert_eq!(
        response.value().map(refcache::JsonText::to_value).as_ref(),
        Some(&json!("bottom")),
        "a chain of MAX_REFERENCE_DEPTH references resolves"
    );
    let deeper = complete_ref(&echo(top).await.unwrap());
    let (_, _, reason, _) = unresolved(consume("depth-use".into(), json!(deeper)).await);
    assert!(
        reason.contains(&format!("deeper than {MAX_REFERENCE_DEPTH}")),
        "{reason}"
    );
    assert_eq!(runs("depth-use"), 1);
}

#[tokio::test(start_paused = true)]
async fn the_tool_receives_the_whole_value_not_a_preview() {
    let big: Vec<u32> = (0..800).collect();
    let made = produce("big-src".into(), json!(big)).await.unwrap();
    assert!(
        made.preview_of().is_some(),
        "too large to answer whole: the caller gets a preview"
    );
    let counted = count_items("big-use".into(), json!(made.ref_id().to_string()))
        .await
        .unwrap();
    assert_eq!(
        counted.value().map(refcache::JsonText::to_value).as_ref(),
        Some(&json!(800)),
        "the tool got every item"
    );
}

// ---------------------------------------------------------------------------------------------------------------
// Opting out.

#[tokio::test(start_paused = true)]
async fn resolve_refs_false_passes_the_ref_id_text_as_it_is() {
    let source = complete_ref(&produce("optout-src".into(), json!({"v": 1})).await.unwrap());
    let input = json!({"ref": source.clone(), "list": [source.clone()]});
    let response = raw("optout".into(), input.clone()).await.unwrap();
    assert_eq!(
        response.value().map(refcache::JsonText::to_value).as_ref(),
        Some(&input),
        "nothing was resolved"
    );

    // Not even an unknown reference is an error there.
    let missing = unknown_ref();
    let response = raw("optout".into(), json!(missing.clone())).await.unwrap();
    assert_eq!(
        response.value().map(refcache::JsonText::to_value).as_ref(),
        Some(&json!(missing))
    );

    // And the key is the text's: passing the value itself is a different call.
    raw(
        "optout".into(),
        json!({"ref": {"v": 1}, "list": [{"v": 1}]}),
    )
    .await
    .unwrap();
    assert_eq!(runs("optout"), 3);
}

// ---------------------------------------------------------------------------------------------------------------
// References that cannot be resolved.

#[tokio::test(start_paused = true)]
async fn an_unknown_reference_names_the_argument_and_the_tool_does_not_run() {
    let missing = unknown_ref();
    let (argument, ref_id, reason, text) = unresolved(
        consume_items(
            "unres-unknown".into(),
            vec![json!(1), json!("two"), json!(missing.clone())],
        )
        .await,
    );
    assert_eq!(argument, "items[2]");
    assert_eq!(ref_id, missing);
    assert_eq!(reason, INACCESSIBLE_REFERENCE);
    assert!(text.contains("`items[2]`"), "{text}");
    assert!(
        text.contains("pass the value itself, or a reference to a complete value"),
        "the error says what to do: {text}"
    );

    let (argument, ..) = unresolved(consume("unres-unknown".into(), json!(missing)).await);
    assert_eq!(
        argument, "input",
        "a whole argument is named by its parameter"
    );
    assert_eq!(runs("unres-unknown"), 0, "the tool never ran");
}

#[tokio::test(start_paused = true)]
async fn a_reference_still_processing_says_to_poll_and_pass_it_again() {
    let running = gated("unres-running".into(), json!({"done": true}))
        .await
        .unwrap();
    assert_eq!(running.status(), TaskStatus::Processing);
    let id = running.ref_id().to_string();
    let doc = Doc {
        title: "t".into(),
        source: json!(id.clone()),
        pages: vec![],
    };
    let (argument, ref_id, reason, text) =
        unresolved(consume_doc("unres-running-use".into(), doc.clone()).await);
    assert_eq!(argument, "doc.source");
    assert_eq!(ref_id, id);
    assert!(reason.contains("still processing"), "{reason}");
    assert!(
        reason.contains("get_cached_result") && reason.contains("once complete"),
        "the reason says what to do: {reason}"
    );
    assert!(text.contains(&reason), "{text}");
    assert_eq!(runs("unres-running-use"), 0);

    // Once it completes, the same call goes through.
    open("unres-running");
    assert_eq!(settle(running.ref_id()).await, TaskStatus::Complete);
    let response = consume_doc("unres-running-use".into(), doc).await.unwrap();
    let got: Doc = response.value_as().unwrap().unwrap();
    assert_eq!(got.source, json!({"done": true}));
    assert_eq!(runs("unres-running-use"), 1);
}

#[tokio::test(start_paused = true)]
async fn a_pending_reference_says_it_is_pending() {
    let first = one_at_a_time("pend-1".into()).await.unwrap();
    assert_eq!(first.status(), TaskStatus::Processing);
    let queued = one_at_a_time("pend-2".into()).await.unwrap();
    assert_eq!(
        queued.status(),
        TaskStatus::Pending,
        "queued behind max_concurrent = 1"
    );
    let (argument, _, reason, _) =
        unresolved(consume("pend-use".into(), json!({"q": queued.ref_id().to_string()})).await);
    assert_eq!(argument, "input.q");
    assert!(reason.contains("pending"), "{reason}");
    assert!(reason.contains("get_cached_result"), "{reason}");
    assert_eq!(runs("pend-use"), 0);
    open("pend-1");
    open("pend-2");
    assert_eq!(settle(first.ref_id()).await, TaskStatus::Complete);
    assert_eq!(settle(queued.ref_id()).await, TaskStatus::Complete);
}

#[tokio::test(start_paused = true)]
async fn a_failed_reference_says_it_failed_and_why() {
    let failed = fails("unres-fail".into()).await.unwrap();
    assert_eq!(failed.status(), TaskStatus::Failed);
    let id = failed.ref_id().to_string();
    let by_name = BTreeMap::from([("input".to_owned(), json!(id.clone()))]);
    let (argument, ref_id, reason, _) =
        unresolved(consume_map("unres-fail-use".into(), by_name).await);
    assert_eq!(argument, "by_name.input");
    assert_eq!(ref_id, id);
    assert!(reason.contains("failed"), "{reason}");
    assert!(
        reason.contains("boom in unres-fail"),
        "the task's error is named: {reason}"
    );
    assert_eq!(runs("unres-fail-use"), 0);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_reference_says_it_was_cancelled() {
    let running = gated("unres-cancel".into(), json!(1)).await.unwrap();
    let id = running.ref_id().to_string();
    assert_eq!(
        CACHE.cancel_task(&id).await.unwrap(),
        refcache::CancelOutcome::Cancelled
    );
    let (argument, ref_id, reason, _) =
        unresolved(consume_items("unres-cancel-use".into(), vec![json!({"x": id.clone()})]).await);
    assert_eq!(argument, "items[0].x");
    assert_eq!(ref_id, id);
    assert!(reason.contains("cancelled"), "{reason}");
    assert_eq!(runs("unres-cancel-use"), 0);
    // Long after (the gate was never opened; the task was given up on), it still cannot be resolved.
    tokio::time::sleep(Duration::from_secs(60)).await;
    let (_, _, reason, _) =
        unresolved(consume_items("unres-cancel-use".into(), vec![json!({"x": id})]).await);
    assert!(reason.contains("cancelled"), "{reason}");
}

// ---------------------------------------------------------------------------------------------------------------
// Permissions.

#[tokio::test(start_paused = true)]
async fn execute_is_enough_to_pass_a_reference_to_a_tool() {
    let secret_id = complete_ref(&secret("perm-exec".into()).await.unwrap());
    let agent = Actor::agent("ri-agent");

    // The agent may not read the value...
    let polled = agent
        .clone()
        .scope(CACHE.get_cached_result(&secret_id))
        .await
        .unwrap();
    assert!(
        matches!(polled, CachedResponse::Restricted(_)),
        "{:?}",
        polled.to_json()
    );
    assert_eq!(polled.value(), None);

    // ...but may hand it to a tool, which receives the value.
    let used = agent
        .clone()
        .scope(consume(
            "perm-exec-use".into(),
            json!({"doc": secret_id.clone()}),
        ))
        .await
        .unwrap();
    assert_eq!(
        used.value().map(refcache::JsonText::to_value).as_ref(),
        Some(&json!({"doc": {"secret": "perm-exec"}}))
    );
    assert_eq!(runs("perm-exec-use"), 1);
    let direct = agent
        .scope(CACHE.resolve_refs(json!([secret_id])))
        .await
        .unwrap();
    assert_eq!(direct, json!([{"secret": "perm-exec"}]));
}

#[tokio::test(start_paused = true)]
async fn a_reference_the_caller_may_not_see_reads_like_an_unknown_one() {
    let private_id = complete_ref(&private("perm-private".into()).await.unwrap());
    let missing = unknown_ref();
    let agent = Actor::agent("ri-agent-2");

    let (argument, ref_id, reason, text) = unresolved(
        agent
            .clone()
            .scope(consume(
                "perm-private-use".into(),
                json!([private_id.clone()]),
            ))
            .await,
    );
    assert_eq!(
        (argument.as_str(), ref_id.as_str()),
        ("input[0]", private_id.as_str())
    );
    let (_, _, unknown_reason, unknown_text) = unresolved(
        agent
            .clone()
            .scope(consume("perm-private-use".into(), json!([missing.clone()])))
            .await,
    );
    assert_eq!(reason, INACCESSIBLE_REFERENCE);
    assert_eq!(reason, unknown_reason, "nothing tells the two apart");
    assert_eq!(
        text.replace(&private_id, "<ref>"),
        unknown_text.replace(&missing, "<ref>"),
        "the whole message is the same"
    );
    assert_eq!(runs("perm-private-use"), 0);
    assert!(
        CACHE
            .resolve_refs_as(json!(private_id.clone()), &agent)
            .await
            .is_err()
    );

    // A user may; so may the system.
    let used = Actor::user("ri-user")
        .scope(consume(
            "perm-private-use".into(),
            json!([private_id.clone()]),
        ))
        .await
        .unwrap();
    assert_eq!(
        used.value().map(refcache::JsonText::to_value).as_ref(),
        Some(&json!([{"private": "perm-private"}]))
    );
    assert_eq!(
        CACHE
            .resolve_refs_as(json!(private_id), &Actor::system())
            .await
            .unwrap(),
        json!({"private": "perm-private"})
    );
}

#[tokio::test(start_paused = true)]
async fn a_reference_in_another_users_namespace_cannot_be_resolved() {
    let alice = Actor::user("ri-alice");
    let bob = Actor::user("ri-bob");
    let alices = complete_ref(&alice.clone().scope(mine("perm-ns".into())).await.unwrap());

    let (_, _, reason, _) = unresolved(
        bob.scope(consume("perm-ns-use".into(), json!(alices.clone())))
            .await,
    );
    assert_eq!(reason, INACCESSIBLE_REFERENCE);
    assert_eq!(runs("perm-ns-use"), 0);

    let used = alice
        .scope(consume("perm-ns-use".into(), json!(alices)))
        .await
        .unwrap();
    assert_eq!(
        used.value().map(refcache::JsonText::to_value).as_ref(),
        Some(&json!({"mine": "perm-ns"}))
    );
    assert_eq!(runs("perm-ns-use"), 1);
}

// ---------------------------------------------------------------------------------------------------------------
// Lookalikes, and the method itself.

#[tokio::test(start_paused = true)]
async fn strings_that_merely_look_like_ref_ids_are_passed_as_they_are() {
    let real = complete_ref(&produce("look-src".into(), json!("real")).await.unwrap());
    let name = CACHE.name();
    let hex = "0123456789abcdef0123456789abcdef";
    let lookalikes = json!([
        format!("{name}:{}", hex.to_uppercase()),
        format!("{name}:0123456789ABCDEF0123456789abcdef"),
        format!("{name}:{}", &hex[..31]),
        format!("{name}:{hex}0"),
        format!("{name}:{}g", &hex[..31]),
        format!(":{hex}"),
        format!("{name} {hex}"),
        format!("{}:{hex}", "n".repeat(65)),
        format!("see {real}"),
        format!("{real} "),
        format!(" {real}"),
        format!("{real}\n"),
    ]);
    let response = consume("look".into(), lookalikes.clone()).await.unwrap();
    assert_eq!(
        response.value().map(refcache::JsonText::to_value).as_ref(),
        Some(&lookalikes),
        "none of them is a ref id: all arrive unchanged"
    );
    assert_eq!(runs("look"), 1);
    assert_eq!(
        CACHE.resolve_refs(lookalikes.clone()).await.unwrap(),
        lookalikes
    );
    // Object keys are never resolved, only values.
    let keyed = json!({real.clone(): "value"});
    assert_eq!(CACHE.resolve_refs(keyed.clone()).await.unwrap(), keyed);
}

#[tokio::test(start_paused = true)]
async fn resolve_refs_resolves_any_json_value() {
    let a = complete_ref(&produce("direct-a".into(), json!([1, 2])).await.unwrap());
    let b = complete_ref(&produce("direct-b".into(), json!({"k": "v"})).await.unwrap());
    let resolved = CACHE
        .resolve_refs(json!({"a": a.clone(), "list": [b.clone(), "plain", 3], "n": null}))
        .await
        .unwrap();
    assert_eq!(
        resolved,
        json!({"a": [1, 2], "list": [{"k": "v"}, "plain", 3], "n": null})
    );
    assert_eq!(
        CACHE.resolve_refs(json!(a)).await.unwrap(),
        json!([1, 2]),
        "a bare ref id is replaced too"
    );
    assert_eq!(
        CACHE.resolve_refs(json!(42)).await.unwrap(),
        json!(42),
        "a value without references is unchanged"
    );

    let missing = unknown_ref();
    let err = CACHE
        .resolve_refs(json!({"list": [1, {"x": missing.clone()}]}))
        .await
        .unwrap_err();
    match err {
        RefCacheError::UnresolvedReference {
            argument,
            ref_id,
            reason,
        } => {
            assert_eq!(argument, "list[1].x");
            assert_eq!(ref_id, missing);
            assert_eq!(reason, INACCESSIBLE_REFERENCE);
        }
        other => panic!("expected UnresolvedReference, got {other:?}"),
    }
}

#[test]
fn a_sync_tool_resolves_references_too() {
    let source = complete_ref(&sync_produce("sync-src".into(), 5).unwrap());
    let total = sync_sum("sync-use".into(), json!(source)).unwrap();
    assert_eq!(
        total.value().map(refcache::JsonText::to_value).as_ref(),
        Some(&json!(10))
    );
    let again = sync_sum("sync-use".into(), json!([0, 1, 2, 3, 4])).unwrap();
    assert_eq!(again.ref_id(), total.ref_id(), "by value: a hit");
    assert_eq!(runs("sync-use"), 1);
}

#[tokio::test(start_paused = true)]
async fn strings_with_another_cache_name_are_data_not_references() {
    // `md5:<32 hex>` has the ref id form, but names no cache of ours: it can never resolve here, so it is passed on.
    let digest = "md5:d41d8cd98f00b204e9800998ecf8427e";
    let out = consume("foreign-name".into(), json!({"checksum": digest}))
        .await
        .unwrap();
    assert_eq!(
        out.value().map(refcache::JsonText::to_value).as_ref(),
        Some(&json!({"checksum": digest}))
    );
}

#[tokio::test(start_paused = true)]
async fn an_execute_only_caller_cannot_confirm_a_guess_of_the_value() {
    // The agent may pass the secret to a tool but not read it. Were the call keyed by the resolved value alone,
    // calling the tool with a guessed literal would hit the same reference and confirm the guess.
    let agent = Actor::agent("guesser");
    let secret_ref = agent
        .clone()
        .scope(secret("guess".into()))
        .await
        .unwrap()
        .ref_id()
        .to_string();
    let with_ref = agent
        .clone()
        .scope(consume("guess-use".into(), json!(secret_ref)))
        .await
        .unwrap();
    let guess = Actor::user("owner")
        .scope(CACHE.get_cached_result(&secret_ref))
        .await
        .unwrap()
        .value()
        .map(refcache::JsonText::to_value)
        .expect("a user reads it");
    let with_literal = agent
        .clone()
        .scope(consume("guess-use".into(), guess))
        .await
        .unwrap();
    assert_ne!(
        with_ref.ref_id(),
        with_literal.ref_id(),
        "the right guess is not a hit on the reference's call"
    );
    assert_eq!(
        runs("guess-use"),
        2,
        "two executions: nothing was confirmed"
    );
    // The same reference again is still one call.
    let again = agent
        .scope(consume("guess-use".into(), json!(secret_ref)))
        .await
        .unwrap();
    assert_eq!(again.ref_id(), with_ref.ref_id());
    assert_eq!(runs("guess-use"), 2);
}

#[tokio::test(start_paused = true)]
async fn a_bad_reference_inside_a_referenced_value_names_both_steps() {
    let missing = unknown_ref();
    // Stored as it is (`raw` does not resolve), then passed to a tool that does.
    let outer = raw("nested-bad".into(), json!({"inner": missing}))
        .await
        .unwrap();
    let outer_id = outer.ref_id().to_string();
    let (argument, ref_id, ..) =
        unresolved(consume("nested-bad-use".into(), json!(outer_id.clone())).await);
    assert_eq!(argument, format!("input<{outer_id}>.inner"));
    assert_eq!(ref_id, missing);
}

#[tokio::test(start_paused = true)]
async fn repeating_one_large_reference_is_bounded_not_multiplied() {
    // A 70 KB value, and an argument naming it 1000 times: 70 MB if each copy were made.
    let large = produce("large".into(), json!("x".repeat(70 * 1024)))
        .await
        .unwrap();
    let id = large.ref_id().to_string();
    let err = consume_items(
        "large-use".into(),
        std::iter::repeat_n(json!(id.clone()), 1000).collect(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, RefCacheError::ResolvedTooLarge { limit } if limit == refcache::MAX_RESOLVED_BYTES),
        "{err:?}"
    );
    assert_eq!(runs("large-use"), 0);
    // A couple of copies are fine.
    let few = consume_items(
        "large-use".into(),
        std::iter::repeat_n(json!(id), 2).collect(),
    )
    .await
    .unwrap();
    assert_eq!(few.status(), TaskStatus::Complete);
}

#[tokio::test(start_paused = true)]
async fn chains_of_repeated_references_are_charged_in_full() {
    // Level 0 is a 2 KB string; level n holds two references to level n - 1. Resolving level 16 would build 2^16
    // copies of the leaf (128 MB) from a few dozen distinct references: a repeat must cost what it expands to.
    let mut previous = produce("doubling-0".into(), json!("x".repeat(2048)))
        .await
        .unwrap()
        .ref_id()
        .to_string();
    for level in 1..=16 {
        previous = raw(
            format!("doubling-{level}"),
            json!([previous.clone(), previous]),
        )
        .await
        .unwrap()
        .ref_id()
        .to_string();
    }
    let err = consume("doubling-use".into(), json!(previous))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            RefCacheError::TooManyReferences { .. } | RefCacheError::ResolvedTooLarge { .. }
        ),
        "{err:?}"
    );
    assert_eq!(runs("doubling-use"), 0, "nothing ran");
}
