//! Progress: visible to the next `get`, and followed live by `watch`.

use serde_json::json;

use super::fixture::Factory;
use super::support::{PATIENCE, settings, submit, wait_terminal, wait_until};
use super::tasks::{PROGRESS, new_gate, open};
use crate::model::ref_id::RefId;
use crate::model::task::TaskStatus;

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
