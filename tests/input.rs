//! Input requests through the front door (#19 §1): a task asks, polls show `input_required` and the question, the
//! owner answers with `RefCache::respond`; a bad answer names its field and the task keeps waiting; an answer to a
//! task that is not waiting is refused with its status; anyone but the owner gets the not-found answer; a sync body
//! asks with `ask_blocking`.

use std::sync::LazyLock;
use std::time::Duration;

use refcache::{Actor, RefCache, RefCacheError, TaskContext, TaskError, TaskStatus, cached};
use serde_json::json;

static CACHE: LazyLock<RefCache> = LazyLock::new(RefCache::new);

fn confirm_schema() -> serde_json::Value {
    json!({
        "type": "object",
        "properties": {"confirm": {"type": "boolean"}, "count": {"type": "integer", "minimum": 1}},
        "required": ["confirm"],
    })
}

#[cached(cache = CACHE, async_timeout = 0.05)]
async fn purge(n: u32, ctx: TaskContext) -> Result<String, TaskError> {
    let answer = ctx
        .ask(format!("Delete {n} records?"), confirm_schema(), None)
        .await?;
    Ok(format!("confirm={}", answer["confirm"]))
}

#[cached(cache = CACHE, async_timeout = 0.05)]
fn purge_sync(n: u32, ctx: &TaskContext) -> Result<String, TaskError> {
    let answer = ctx.ask_blocking(format!("Sync delete {n}?"), confirm_schema(), None)?;
    Ok(format!("confirm={}", answer["confirm"]))
}

async fn until_status(ref_id: &str, status: TaskStatus) -> refcache::TaskInfo {
    let give_up = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let info = CACHE.task_info(ref_id).await.unwrap();
        if info.status == status {
            return info;
        }
        assert!(
            tokio::time::Instant::now() < give_up,
            "never {status}: {info:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_answers_and_bad_answers_name_the_field() {
    let alice = Actor::user("alice");
    let response = alice.clone().scope(purge(3)).await.unwrap();
    let ref_id = response.ref_id().to_string();
    let info = alice
        .clone()
        .scope(until_status(&ref_id, TaskStatus::InputRequired))
        .await;
    let question = info.input_request.expect("question on the record");
    assert_eq!(question.message, "Delete 3 records?");
    assert_eq!(question.owner.as_deref(), Some("user:alice"));
    let polled = alice
        .clone()
        .scope(CACHE.get_cached_result(&ref_id))
        .await
        .unwrap();
    assert_eq!(polled.status(), TaskStatus::InputRequired);

    // Someone else: the same answer as an unknown id.
    let bob = Actor::user("bob")
        .scope(CACHE.respond(&ref_id, json!({"confirm": true})))
        .await;
    assert!(matches!(bob, Err(RefCacheError::NotFound)), "{bob:?}");

    // A bad answer names the field; the task keeps waiting.
    for (answer, field) in [
        (json!({"confirm": "yes"}), "confirm"),
        (json!({}), "confirm"),
        (json!({"confirm": true, "count": 0}), "count"),
        (json!("yes"), ""),
    ] {
        let refused = alice
            .clone()
            .scope(CACHE.respond(&ref_id, answer.clone()))
            .await;
        match refused {
            Err(RefCacheError::InvalidAnswer { error, .. }) => {
                assert_eq!(error.field, field, "{answer}: {error}")
            }
            other => panic!("{answer}: expected InvalidAnswer, got {other:?}"),
        }
    }
    let still = alice.clone().scope(CACHE.task_info(&ref_id)).await.unwrap();
    assert_eq!(still.status, TaskStatus::InputRequired, "keeps waiting");

    alice
        .clone()
        .scope(CACHE.respond(&ref_id, json!({"confirm": true})))
        .await
        .unwrap();
    until_status(&ref_id, TaskStatus::Complete).await;
    let done = alice
        .clone()
        .scope(CACHE.get_cached_result(&ref_id))
        .await
        .unwrap();
    assert_eq!(
        done.value_as::<String>().unwrap().as_deref(),
        Some("confirm=true")
    );

    // Not waiting any more: refused with its status.
    let late = alice
        .scope(CACHE.respond(&ref_id, json!({"confirm": true})))
        .await;
    match late {
        Err(
            e @ RefCacheError::NotWaiting {
                status: TaskStatus::Complete,
                ..
            },
        ) => {
            assert!(e.to_string().contains("complete"), "{e}")
        }
        other => panic!("expected NotWaiting(complete), got {other:?}"),
    }
    let unknown = CACHE.respond("refcache:nope", json!({})).await;
    assert!(unknown.is_err(), "{unknown:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_body_asks_with_ask_blocking() {
    let ref_id = tokio::task::spawn_blocking(|| purge_sync(7).unwrap().ref_id().to_string())
        .await
        .unwrap();
    let info = until_status(&ref_id, TaskStatus::InputRequired).await;
    assert_eq!(info.input_request.unwrap().message, "Sync delete 7?");
    CACHE
        .respond(&ref_id, json!({"confirm": false}))
        .await
        .unwrap();
    until_status(&ref_id, TaskStatus::Complete).await;
    let done = CACHE.get_cached_result(&ref_id).await.unwrap();
    assert_eq!(
        done.value_as::<String>().unwrap().as_deref(),
        Some("confirm=false")
    );
}
