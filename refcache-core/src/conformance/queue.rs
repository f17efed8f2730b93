//! The queue: pending tasks and their positions, priority, per-task concurrency, and shutdown.

use std::time::Duration;

use serde_json::json;

use super::fixture::{Factory, Settings};
use super::support::{
    settings, submission, submission_with, submit, wait_executions, wait_terminal,
};
use super::tasks::{GATED, executions, new_gate, open, start_order};
use crate::contract::backend::CancelOutcome;
use crate::contract::spec::TaskOptions;
use crate::model::error::BackendError;
use crate::model::task::TaskStatus;

/// Over `max_workers`, tasks are `pending` with a queue position; cancelling one removes it from the queue.
pub async fn queue_and_pending(make: Factory) {
    let fx = make(Settings {
        max_workers: 1,
        ..settings()
    })
    .await;
    let b = &*fx.backend;
    let first = new_gate();
    let (_, first_ref, _) = submit(b, GATED, json!({"gate": first, "value": 1})).await;
    wait_executions(&first, 1).await;
    let second = new_gate();
    let third = new_gate();
    let (_, second_ref, _) = submit(b, GATED, json!({"gate": second, "value": 2})).await;
    let (_, third_ref, _) = submit(b, GATED, json!({"gate": third, "value": 3})).await;
    let info = b.get(&second_ref).await.unwrap().unwrap().info;
    assert_eq!(info.status, TaskStatus::Pending);
    assert_eq!(info.queue_position, Some(1));
    assert_eq!(
        b.get(&third_ref)
            .await
            .unwrap()
            .unwrap()
            .info
            .queue_position,
        Some(2)
    );
    assert_eq!(
        b.cancel(&second_ref).await.unwrap(),
        CancelOutcome::Cancelled
    );
    assert_eq!(
        b.get(&third_ref)
            .await
            .unwrap()
            .unwrap()
            .info
            .queue_position,
        Some(1)
    );
    open(&first);
    open(&third);
    wait_terminal(b, &first_ref).await;
    assert_eq!(
        wait_terminal(b, &third_ref).await.info.status,
        TaskStatus::Complete
    );
    assert_eq!(
        executions(&second),
        0,
        "a cancelled pending task never runs"
    );
}

/// Higher priority starts first; FIFO within a priority.
pub async fn priority_orders_the_queue(make: Factory) {
    let fx = make(Settings {
        max_workers: 1,
        ..settings()
    })
    .await;
    let b = &*fx.backend;
    let occupier = new_gate();
    let (_, occ_ref, _) = submit(b, GATED, json!({"gate": occupier, "value": 0})).await;
    wait_executions(&occupier, 1).await;
    let (low1, low2, high) = (new_gate(), new_gate(), new_gate());
    for (id, priority) in [(&low1, 0), (&low2, 0), (&high, 5)] {
        open(id);
        let options = TaskOptions::default().priority(priority);
        b.submit(submission_with(GATED, json!({"gate": id, "value": 1}), options).0)
            .await
            .unwrap();
    }
    open(&occupier);
    wait_terminal(b, &occ_ref).await;
    wait_executions(&low2, 1).await;
    assert_eq!(
        start_order(&[&low1, &low2, &high]),
        vec![high.clone(), low1.clone(), low2.clone()]
    );
}

/// `max_concurrent` holds a task name at its limit, though workers are free.
pub async fn max_concurrent_per_task(make: Factory) {
    let fx = make(settings()).await;
    let b = &*fx.backend;
    let (first, second) = (new_gate(), new_gate());
    let options = TaskOptions::default().max_concurrent(Some(1));
    let (sub, first_ref, _) =
        submission_with(GATED, json!({"gate": first, "value": 1}), options.clone());
    b.submit(sub).await.unwrap();
    wait_executions(&first, 1).await;
    let (sub, second_ref, _) = submission_with(GATED, json!({"gate": second, "value": 2}), options);
    b.submit(sub).await.unwrap();
    let info = b.get(&second_ref).await.unwrap().unwrap().info;
    assert_eq!(info.status, TaskStatus::Pending, "{info:?}");
    assert_eq!(executions(&second), 0);
    open(&first);
    open(&second);
    wait_terminal(b, &first_ref).await;
    assert_eq!(
        wait_terminal(b, &second_ref).await.info.status,
        TaskStatus::Complete
    );
}

/// After `shutdown`, new work is refused with `ShuttingDown`, and what ran past the deadline is cancelled with
/// the message `shutdown`, or, on a backend whose other workers can run it, handed back to them (`pending`).
pub async fn shutdown_refuses_work(make: Factory) {
    let fx = make(settings()).await;
    let b = &*fx.backend;
    let id = new_gate();
    let (_, ref_id, _) = submit(b, GATED, json!({"gate": id})).await;
    wait_executions(&id, 1).await;
    b.shutdown(Duration::from_millis(50)).await.unwrap();
    let info = b.get(&ref_id).await.unwrap().unwrap().info;
    match info.status {
        TaskStatus::Cancelled => assert_eq!(info.status_message.as_deref(), Some("shutdown")),
        TaskStatus::Pending => assert_eq!(info.started_at, None, "{info:?}"),
        _ => panic!("neither cancelled nor handed back: {info:?}"),
    }
    let (sub, _, _) = submission(GATED, json!({"gate": new_gate()}));
    assert!(matches!(
        b.submit(sub).await,
        Err(BackendError::ShuttingDown)
    ));
}
