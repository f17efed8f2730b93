//! Sessions: a task made in session A is invisible to session B from the first poll on (get, cancel, retry, list
//! all answer as if it did not exist), calls in different sessions never share an execution or a value, and
//! `end_session` cancels the session's running and queued work and drops its records.

use std::sync::LazyLock;
use std::time::Duration;

use refcache::{CancelOutcome, RefCache, RefCacheError, Session, TaskFilter, TaskStatus, cached};

#[path = "support/runs.rs"]
mod support;
use support::{bump, runs};

static CACHE: LazyLock<RefCache> = LazyLock::new(RefCache::new);

#[cached(cache = CACHE, async_timeout = 0.5)]
async fn work(label: String, seconds: u64) -> String {
    bump(&label);
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    label
}

#[tokio::test(start_paused = true)]
async fn another_session_cannot_see_poll_cancel_or_list_a_task() {
    let alice = Session::new("alice");
    let bob = Session::new("bob");
    let response = alice
        .clone()
        .scope(work("alice-job".into(), 10))
        .await
        .unwrap();
    let ref_id = response.ref_id().to_string();
    assert_eq!(response.status(), TaskStatus::Processing);

    // From the first poll on, bob gets the same opaque answer as for an unknown id.
    let err = bob
        .clone()
        .scope(CACHE.get_cached_result(&ref_id))
        .await
        .unwrap_err();
    assert!(matches!(err, RefCacheError::NotFound), "{err:?}");
    assert_eq!(
        bob.clone().scope(CACHE.cancel_task(&ref_id)).await.unwrap(),
        CancelOutcome::NotFound
    );
    assert!(matches!(
        bob.clone().scope(CACHE.retry_task(&ref_id)).await,
        Err(RefCacheError::NotFound)
    ));
    let listed = bob
        .clone()
        .scope(CACHE.list_tasks(TaskFilter::all()))
        .await
        .unwrap();
    assert!(
        listed.tasks.iter().all(|t| t.ref_id.as_str() != ref_id),
        "bob's list has no alice task"
    );
    // Nor does a caller outside any session.
    assert!(CACHE.get_cached_result(&ref_id).await.is_err());

    // Alice sees it everywhere.
    let polled = alice
        .clone()
        .scope(CACHE.get_cached_result(&ref_id))
        .await
        .unwrap();
    assert_eq!(polled.status(), TaskStatus::Processing);
    let listed = alice
        .clone()
        .scope(CACHE.list_tasks(TaskFilter::all()))
        .await
        .unwrap();
    assert!(listed.tasks.iter().any(|t| t.ref_id.as_str() == ref_id));
    assert!(
        listed
            .tasks
            .iter()
            .all(|t| t.session_id.as_deref() == Some("alice"))
    );
}

#[tokio::test(start_paused = true)]
async fn sessions_never_share_an_execution_or_a_value() {
    let a = Session::new("a")
        .scope(work("shared-args".into(), 1))
        .await
        .unwrap();
    let b = Session::new("b")
        .scope(work("shared-args".into(), 1))
        .await
        .unwrap();
    assert_ne!(a.ref_id(), b.ref_id());
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(runs("shared-args"), 2, "one execution per session");
    let again = Session::new("a")
        .scope(work("shared-args".into(), 1))
        .await
        .unwrap();
    assert!(
        again.is_complete() && again.ref_id() == a.ref_id(),
        "a hit within the same session"
    );
}

#[tokio::test(start_paused = true)]
async fn ending_a_session_cancels_its_work_and_drops_its_records() {
    let session = Session::new("ending");
    let running = session
        .clone()
        .scope(work("to-cancel".into(), 100))
        .await
        .unwrap();
    let finished = session
        .clone()
        .scope(work("finished".into(), 0))
        .await
        .unwrap();
    assert!(finished.is_complete());
    let touched = CACHE.end_session("ending").await.unwrap();
    assert_eq!(touched, 2);
    let gone = session
        .clone()
        .scope(CACHE.get_cached_result(running.ref_id().as_str()))
        .await;
    assert!(matches!(gone, Err(RefCacheError::NotFound)), "{gone:?}");
    let listed = session
        .clone()
        .scope(CACHE.list_tasks(TaskFilter::all()))
        .await
        .unwrap();
    assert!(listed.tasks.is_empty(), "{:?}", listed.tasks);
    tokio::time::sleep(Duration::from_secs(200)).await;
    assert!(
        session
            .scope(CACHE.list_tasks(TaskFilter::all()))
            .await
            .unwrap()
            .tasks
            .is_empty()
    );
}

#[cached(cache = CACHE, name = "sessions::other_task")]
async fn other_task(n: u32) -> u32 {
    n
}

#[tokio::test(start_paused = true)]
async fn lists_filter_by_status_name_and_page_with_a_cursor() {
    let session = Session::new("lister");
    session
        .clone()
        .scope(async {
            for i in 0..3 {
                work(format!("listed-{i}"), 0).await.unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            other_task(1).await.unwrap();
        })
        .await;
    let named = session
        .clone()
        .scope(CACHE.list_tasks(TaskFilter::all().task_name("sessions::other_task")))
        .await
        .unwrap();
    assert_eq!(named.tasks.len(), 1);
    let first = session
        .clone()
        .scope(CACHE.list_tasks(TaskFilter::all().task_name("sessions::work").limit(2)))
        .await
        .unwrap();
    assert_eq!(first.tasks.len(), 2);
    assert!(
        first.tasks[0].created_at >= first.tasks[1].created_at,
        "newest first"
    );
    let cursor = first.next_cursor.clone().expect("a next page");
    let rest = session
        .clone()
        .scope(
            CACHE.list_tasks(
                TaskFilter::all()
                    .task_name("sessions::work")
                    .limit(2)
                    .cursor(cursor),
            ),
        )
        .await
        .unwrap();
    assert_eq!(rest.tasks.len(), 1);
    assert!(rest.next_cursor.is_none());
    let complete = session
        .clone()
        .scope(CACHE.list_tasks(TaskFilter::all().status(TaskStatus::Complete)))
        .await;
    assert_eq!(complete.unwrap().tasks.len(), 4);

    let err = session
        .scope(CACHE.list_tasks(TaskFilter::all().cursor("garbage")))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("invalid cursor `garbage`"),
        "{err}"
    );
}
