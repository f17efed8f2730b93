//! Task records: lists and pages, sessions, cleanup, delete, and the access that travels with a task.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::fixture::Factory;
use super::support::{find, settings, submission_with, submit, wait_executions, wait_terminal};
use super::tasks::{FAIL, GATED, new_gate, open};
use crate::contract::backend::{Submission, Submitted};
use crate::contract::list::TaskFilter;
use crate::contract::registry::{self, TaskRegistration};
use crate::contract::spec::{TaskOptions, TaskSpec};
use crate::model::key::CacheKey;
use crate::model::ref_id::RefId;
use crate::model::task::TaskStatus;

/// Lists are newest first, filter by status, and page with a cursor.
pub async fn list_and_page(make: Factory) {
    let fx = make(settings()).await;
    let b = &*fx.backend;
    let mut refs = Vec::new();
    for i in 0..5 {
        let id = new_gate();
        open(&id);
        let (_, r, _) = submit(b, GATED, json!({"gate": id, "value": i})).await;
        wait_terminal(b, &r).await;
        refs.push(r);
        // Distinct creation times, so that newest-first is well defined.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let failing = new_gate();
    let (_, failed_ref, _) = submit(b, FAIL, json!({"gate": failing, "message": "x"})).await;
    wait_terminal(b, &failed_ref).await;

    let complete = b
        .list(TaskFilter::all().status(TaskStatus::Complete).limit(2))
        .await
        .unwrap();
    let listed: Vec<&RefId> = complete.tasks.iter().map(|t| &t.ref_id).collect();
    assert_eq!(listed, vec![&refs[4], &refs[3]], "newest first");
    let cursor = complete.next_cursor.expect("more pages");
    let next = b
        .list(
            TaskFilter::all()
                .status(TaskStatus::Complete)
                .limit(2)
                .cursor(cursor),
        )
        .await
        .unwrap();
    let listed: Vec<&RefId> = next.tasks.iter().map(|t| &t.ref_id).collect();
    assert_eq!(listed, vec![&refs[2], &refs[1]]);
    let failed = b
        .list(TaskFilter::all().status(TaskStatus::Failed))
        .await
        .unwrap();
    assert!(failed.tasks.iter().all(|t| t.status == TaskStatus::Failed));
    assert!(failed.tasks.iter().any(|t| t.ref_id == failed_ref));
}

/// `end_session` cancels a session's running work and drops all its records; other sessions are untouched.
pub async fn end_session_drops_the_session(make: Factory) {
    let fx = make(settings()).await;
    let b = &*fx.backend;
    let in_session = |s: &str| TaskOptions::default().session_id(Some(s.to_owned()));
    let (running, done, other) = (new_gate(), new_gate(), new_gate());
    open(&done);
    open(&other);
    let (sub, running_ref, _) = submission_with(GATED, json!({"gate": running}), in_session("s1"));
    b.submit(sub).await.unwrap();
    let (sub, done_ref, _) =
        submission_with(GATED, json!({"gate": done, "value": 1}), in_session("s1"));
    b.submit(sub).await.unwrap();
    let (sub, other_ref, _) =
        submission_with(GATED, json!({"gate": other, "value": 1}), in_session("s2"));
    b.submit(sub).await.unwrap();
    wait_terminal(b, &done_ref).await;
    wait_terminal(b, &other_ref).await;
    wait_executions(&running, 1).await;
    assert_eq!(b.end_session("s1").await.unwrap(), 2);
    assert!(b.get(&running_ref).await.unwrap().is_none());
    assert!(b.get(&done_ref).await.unwrap().is_none());
    assert!(
        b.get(&other_ref).await.unwrap().is_some(),
        "another session is untouched"
    );
    assert!(
        b.list(TaskFilter::all().session("s1"))
            .await
            .unwrap()
            .tasks
            .is_empty()
    );
}

/// `cleanup(max_age)` removes finished records older than `max_age` and says how many.
pub async fn cleanup_removes_old_records(make: Factory) {
    let fx = make(settings()).await;
    let b = &*fx.backend;
    let id = new_gate();
    open(&id);
    let (_, ref_id, _) = submit(b, GATED, json!({"gate": id, "value": 1})).await;
    wait_terminal(b, &ref_id).await;
    assert_eq!(
        b.cleanup(Duration::from_secs(3600)).await.unwrap(),
        0,
        "nothing that old"
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(b.cleanup(Duration::from_millis(10)).await.unwrap() >= 1);
    assert!(b.get(&ref_id).await.unwrap().is_none());
}

/// `delete` drops a finished task's record and value; an in-flight task is cancelled and forgotten, and its late
/// value is never stored. Deleting again answers `false`; the same call then runs afresh.
pub async fn delete_drops_record_and_value(make: Factory) {
    let fx = make(settings()).await;
    let b = &*fx.backend;
    let done = new_gate();
    open(&done);
    let (_, done_ref, done_key) = submit(b, GATED, json!({"gate": done, "value": 7})).await;
    wait_terminal(b, &done_ref).await;
    assert!(find(b, &done_key).await.is_some());
    assert!(
        b.delete(&done_ref).await.unwrap(),
        "there was something to delete"
    );
    assert!(
        b.get(&done_ref).await.unwrap().is_none(),
        "the record is gone"
    );
    assert!(find(b, &done_key).await.is_none(), "the value is gone");
    assert!(!b.delete(&done_ref).await.unwrap(), "deleting twice");

    let running = new_gate();
    let args = json!({"gate": running, "value": 8});
    let (_, running_ref, running_key) = submit(b, GATED, args.clone()).await;
    wait_executions(&running, 1).await;
    assert!(b.delete(&running_ref).await.unwrap());
    assert!(b.get(&running_ref).await.unwrap().is_none());
    open(&running);
    let (again, again_ref, _) = submit(b, GATED, args).await;
    assert!(
        matches!(again, Submitted::Started(_)),
        "a deleted execution is not joined: {again:?}"
    );
    let snapshot = wait_terminal(b, &again_ref).await;
    assert_eq!(snapshot.info.status, TaskStatus::Complete);
    assert_eq!(
        find(b, &running_key).await.map(|v| v.ref_id.clone()),
        Some(again_ref),
        "the key's value is the new execution's, never the deleted one's"
    );
    assert!(!b.delete(&RefId::generate("conformance")).await.unwrap());
}

/// A task's namespace, policy, session and preview settings travel with it: on its record, on its stored value,
/// and through a list filtered by namespace.
pub async fn access_travels_with_the_task(make: Factory) {
    let fx = make(settings()).await;
    let b = &*fx.backend;
    let id = new_gate();
    open(&id);
    let args = json!({"gate": id, "value": [1, 2, 3]});
    let key = CacheKey::from_json(GATED, "user:alice", &args).expect("JSON args");
    let ref_id = RefId::generate("conformance");
    let policy = Arc::new(crate::model::access::AccessPolicy::execute_only().deny("agent:evil-*"));
    let options = TaskOptions::default()
        .ttl(Some(Duration::from_secs(600)))
        .session_id(Some("s1".into()))
        .preview(
            Some(50),
            Some(crate::model::preview::PreviewStrategy::Paginate),
        );
    let spec = TaskSpec::new(ref_id.clone(), key, GATED, "user:alice", args)
        .with_options(options)
        .with_policy(policy.clone());
    let job = registry::find(GATED).map(TaskRegistration::job);
    b.submit(Submission::new(spec, job)).await.unwrap();
    let snapshot = wait_terminal(b, &ref_id).await;
    assert_eq!(snapshot.info.policy, policy);
    assert_eq!(&*snapshot.info.namespace, "user:alice");
    assert_eq!(snapshot.info.session_id.as_deref(), Some("s1"));
    let stored = snapshot.value.expect("complete");
    assert_eq!(stored.policy, policy);
    assert_eq!(&*stored.namespace, "user:alice");
    assert_eq!(stored.session_id.as_deref(), Some("s1"));
    assert_eq!(stored.max_size, Some(50));
    assert_eq!(
        stored.preview_strategy,
        Some(crate::model::preview::PreviewStrategy::Paginate)
    );
    let listed = b
        .list(TaskFilter::all().namespace("user:alice"))
        .await
        .unwrap();
    assert_eq!(listed.tasks.len(), 1);
    assert_eq!(listed.tasks[0].ref_id, ref_id);
    assert!(
        b.list(TaskFilter::all().namespace("user:bob"))
            .await
            .unwrap()
            .tasks
            .is_empty()
    );
}
