//! Cancellation: sticky and idempotent, and a result that arrives after it is dropped.

use std::time::Duration;

use serde_json::json;

use super::fixture::Factory;
use super::support::{PATIENCE, find, settings, submit, wait_executions, wait_terminal};
use super::tasks::{GATED, STUBBORN, new_gate, open};
use crate::contract::backend::CancelOutcome;
use crate::model::ref_id::RefId;
use crate::model::task::TaskStatus;

/// Cancel: sticky, idempotent, distinct answers for unknown and finished tasks.
pub async fn cancel_semantics(make: Factory) {
    let fx = make(settings()).await;
    let b = &*fx.backend;
    let id = new_gate();
    let (_, ref_id, key) = submit(b, GATED, json!({"gate": id})).await;
    wait_executions(&id, 1).await;
    assert_eq!(b.cancel(&ref_id).await.unwrap(), CancelOutcome::Cancelled);
    assert_eq!(
        b.cancel(&ref_id).await.unwrap(),
        CancelOutcome::Cancelled,
        "cancel is idempotent"
    );
    let done = wait_terminal(b, &ref_id).await;
    assert_eq!(done.info.status, TaskStatus::Cancelled);
    assert!(find(b, &key).await.is_none());
    assert_eq!(
        b.cancel(&RefId::generate("conformance")).await.unwrap(),
        CancelOutcome::NotFound
    );

    let finished = new_gate();
    open(&finished);
    let (_, fin_ref, _) = submit(b, GATED, json!({"gate": finished, "value": 1})).await;
    wait_terminal(b, &fin_ref).await;
    assert_eq!(
        b.cancel(&fin_ref).await.unwrap(),
        CancelOutcome::AlreadyFinished(TaskStatus::Complete)
    );
}

/// A result that arrives after a cancel is discarded, not cached; the status stays `cancelled`.
pub async fn late_result_is_discarded(make: Factory) {
    let fx = make(settings()).await;
    let b = &*fx.backend;
    let id = new_gate();
    let (_, ref_id, key) = submit(b, STUBBORN, json!({"gate": id})).await;
    wait_executions(&id, 1).await;
    assert_eq!(b.cancel(&ref_id).await.unwrap(), CancelOutcome::Cancelled);
    open(&id); // the task now finishes, within its grace period
    // Let the late result arrive and be dropped; the record must stay cancelled.
    let give_up = tokio::time::Instant::now() + PATIENCE;
    while b.stats().await.unwrap().running > 0 {
        assert!(
            tokio::time::Instant::now() < give_up,
            "stubborn task never wound down"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let info = b.get(&ref_id).await.unwrap().unwrap().info;
    assert_eq!(info.status, TaskStatus::Cancelled);
    assert!(
        find(b, &key).await.is_none(),
        "a late result must not be cached"
    );
}
