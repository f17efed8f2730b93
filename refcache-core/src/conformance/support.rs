//! What the tests share: submissions of the suite's tasks, and bounded waits on a backend's own events.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::fixture::Settings;
use super::tasks::executions;
use crate::contract::backend::{Submission, Submitted, TaskBackend, TaskSnapshot};
use crate::contract::registry::{self, TaskRegistration};
use crate::contract::spec::{TaskOptions, TaskSpec};
use crate::model::key::CacheKey;
use crate::model::ref_id::RefId;

/// Generous bound for anything the suite waits on; reached only when a backend is broken.
pub(super) const PATIENCE: Duration = Duration::from_secs(20);

/// A submission of the registered task `name` with `args`, carrying the local job as an in-process caller would.
pub(super) fn submission(name: &str, args: Value) -> (Submission, RefId, CacheKey) {
    submission_with(name, args, TaskOptions::default())
}

/// The same, with options.
pub(super) fn submission_with(
    name: &str,
    args: Value,
    options: TaskOptions,
) -> (Submission, RefId, CacheKey) {
    let key = CacheKey::from_json(name, "conformance", &args).expect("JSON args");
    let ref_id = RefId::generate("conformance");
    let spec = TaskSpec::new(ref_id.clone(), key, name, "conformance", args)
        .with_options(options.ttl(Some(Duration::from_secs(600))));
    let job = registry::find(name).map(TaskRegistration::job);
    (Submission::new(spec, job), ref_id, key)
}

pub(super) async fn submit(
    backend: &dyn TaskBackend,
    name: &str,
    args: Value,
) -> (Submitted, RefId, CacheKey) {
    let (sub, ref_id, key) = submission(name, args);
    let submitted = backend.submit(sub).await.expect("submit");
    (submitted, ref_id, key)
}

/// The finished value for `key` as `RefCache` finds it: the near cache, then the backend's remote tier.
pub(super) async fn find(
    backend: &dyn TaskBackend,
    key: &CacheKey,
) -> Option<Arc<crate::contract::store::StoredValue>> {
    if let Some(near) = backend.near_cache()
        && let Some(found) = near.get(key).await
    {
        return Some(found);
    }
    backend.lookup(key).await.expect("lookup")
}

pub(super) async fn wait_terminal(backend: &dyn TaskBackend, ref_id: &RefId) -> TaskSnapshot {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let snapshot = backend
        .wait(ref_id, Some(deadline))
        .await
        .expect("wait")
        .expect("task known");
    assert!(
        snapshot.info.status.is_terminal(),
        "task did not finish within {PATIENCE:?}: {:?}",
        snapshot.info
    );
    snapshot
}

/// Waits, event by event, until `pred` holds for the task's record.
pub(super) async fn wait_until(
    backend: &dyn TaskBackend,
    ref_id: &RefId,
    what: &str,
    pred: impl Fn(&TaskSnapshot) -> bool,
) {
    let give_up = tokio::time::Instant::now() + PATIENCE;
    loop {
        let snapshot = backend.get(ref_id).await.expect("get").expect("task known");
        if pred(&snapshot) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < give_up,
            "gave up waiting for {what}: {:?}",
            snapshot.info
        );
        // Short bounded waits on the backend's own event path; returns early when the task ends.
        let _ = backend
            .wait(
                ref_id,
                Some(tokio::time::Instant::now() + Duration::from_millis(20)),
            )
            .await;
    }
}

pub(super) async fn wait_executions(id: &str, n: u32) {
    let give_up = tokio::time::Instant::now() + PATIENCE;
    while executions(id) < n {
        assert!(tokio::time::Instant::now() < give_up, "task never started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

pub(super) fn settings() -> Settings {
    Settings {
        max_workers: 4,
        max_queued: 100,
        cancel_grace: Duration::from_secs(5),
        task_ttl: Duration::from_secs(600),
    }
}
