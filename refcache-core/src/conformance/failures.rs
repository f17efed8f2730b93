//! Failures: errors and panics, automatic retries, the execution timeout, and `retry` of a failed task.

use std::time::Duration;

use serde_json::json;

use super::fixture::Factory;
use super::support::{find, settings, submission_with, submit, wait_terminal};
use super::tasks::{FAIL, FLAKY, GATED, PANIC, executions, new_gate, open};
use crate::contract::backend::Submitted;
use crate::contract::spec::TaskOptions;
use crate::model::ref_id::RefId;
use crate::model::task::TaskStatus;

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
