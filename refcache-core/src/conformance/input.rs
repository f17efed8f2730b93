//! Input requests: a task asks, its record shows the question, an answer reaches it through the backend (from any
//! replica), and a cancel or the time limit ends the wait.

use serde_json::json;

use super::fixture::Factory;
use super::support::{settings, submit, wait_terminal, wait_until};
use super::tasks::ASK;
use crate::contract::backend::{CancelOutcome, RespondOutcome};
use crate::model::task::TaskStatus;

/// Ask, show the question, refuse a stale key, take the answer, and refuse an answer once the task runs on.
pub async fn input_round_trip(make: Factory) {
    let fx = make(settings()).await;
    let b = &*fx.backend;
    let (_, ref_id, _) = submit(b, ASK, json!({"message": "Delete 3 records?"})).await;
    wait_until(b, &ref_id, "input_required", |s| {
        s.info.status == TaskStatus::InputRequired
    })
    .await;
    let info = b.get(&ref_id).await.unwrap().unwrap().info;
    let request = info
        .input_request
        .clone()
        .expect("the question is on the record");
    assert_eq!(request.message, "Delete 3 records?");
    assert_eq!(request.schema["required"], json!(["confirm"]));
    assert_eq!(request.deadline, None);
    assert!(
        info.message().contains("Delete 3 records?"),
        "{}",
        info.message()
    );
    assert_eq!(
        b.respond(&ref_id, "no-such-key", json!({"confirm": true}))
            .await
            .unwrap(),
        RespondOutcome::NotWaiting(TaskStatus::InputRequired),
        "an answer to another question is refused"
    );
    assert_eq!(
        b.respond(&ref_id, &request.key, json!({"confirm": true}))
            .await
            .unwrap(),
        RespondOutcome::Accepted
    );
    let done = wait_terminal(b, &ref_id).await;
    assert_eq!(done.info.status, TaskStatus::Complete, "{:?}", done.info);
    assert_eq!(done.info.input_request, None);
    let value = done.value.expect("value stored");
    assert_eq!(value.value, json!({"answer": {"confirm": true}}));
    assert_eq!(
        b.respond(&ref_id, &request.key, json!({"confirm": true}))
            .await
            .unwrap(),
        RespondOutcome::NotWaiting(TaskStatus::Complete),
        "a finished task takes no answer"
    );
    let unknown = crate::model::ref_id::RefId::generate("conformance");
    assert_eq!(
        b.respond(&unknown, "input-1", json!({})).await.unwrap(),
        RespondOutcome::NotFound
    );
}

/// A cancel ends the wait: the task is cancelled and shows no question.
pub async fn input_cancel_while_waiting(make: Factory) {
    let fx = make(settings()).await;
    let b = &*fx.backend;
    let (_, ref_id, _) = submit(b, ASK, json!({"message": "go on?"})).await;
    wait_until(b, &ref_id, "input_required", |s| {
        s.info.status == TaskStatus::InputRequired
    })
    .await;
    assert_eq!(b.cancel(&ref_id).await.unwrap(), CancelOutcome::Cancelled);
    let done = wait_terminal(b, &ref_id).await;
    assert_eq!(done.info.status, TaskStatus::Cancelled);
    assert_eq!(done.info.input_request, None);
}

/// A time limit that passes fails the task with "no input came"; a schema that does not compile fails the ask
/// before anything is asked.
pub async fn input_time_limit_and_bad_schema(make: Factory) {
    let fx = make(settings()).await;
    let b = &*fx.backend;
    let (_, ref_id, _) = submit(b, ASK, json!({"message": "quick?", "timeout_ms": 300})).await;
    let done = wait_terminal(b, &ref_id).await;
    assert_eq!(done.info.status, TaskStatus::Failed, "{:?}", done.info);
    let error = done.info.error.expect("an error");
    assert!(error.message.contains("no input came"), "{}", error.message);
    assert_eq!(error.code.as_deref(), Some("NO_INPUT"));

    let (_, bad, _) = submit(
        b,
        ASK,
        json!({"message": "x", "schema": {"type": "object", "properties": {"a": {"type": "object"}}}}),
    )
    .await;
    let done = wait_terminal(b, &bad).await;
    assert_eq!(done.info.status, TaskStatus::Failed);
    let error = done.info.error.expect("an error");
    assert_eq!(
        error.code.as_deref(),
        Some("INPUT_SCHEMA"),
        "{}",
        error.message
    );
    assert!(
        error.message.contains("/properties/a/type"),
        "{}",
        error.message
    );
}
