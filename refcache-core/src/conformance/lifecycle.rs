//! A task's life: submit, single-flight, wait with a deadline, run by name, unknown ids.

use std::time::Duration;

use serde_json::json;

use super::fixture::Factory;
use super::support::{
    PATIENCE, find, settings, submission, submit, wait_executions, wait_terminal,
};
use super::tasks::{GATED, executions, new_gate, open};
use crate::contract::backend::Submitted;
use crate::model::ref_id::RefId;
use crate::model::task::TaskStatus;

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
