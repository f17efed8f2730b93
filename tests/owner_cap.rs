//! A per-owner cap on tasks in flight (`RefCacheBuilder::max_tasks_per_owner`, config `max_tasks_per_owner`), as
//! the MCP tasks security guidance asks: over it, a call is refused before it is submitted with
//! `RefCacheError::TooManyTasks`, which names the cap; other owners are not affected; a place is given back when
//! the task ends. (Over MCP: `mcp_in_process.rs`, `an_owner_over_the_task_cap_gets_too_many_tasks`.)

use std::sync::LazyLock;
use std::time::Duration;

use refcache::{Actor, RefCache, RefCacheError, RefId, TaskStatus, cached};

#[path = "support/gates.rs"]
mod gates;
use gates::{gate, open};

static CACHE: LazyLock<RefCache> = LazyLock::new(|| {
    RefCache::builder()
        .name("capped-owners")
        .max_tasks_per_owner(Some(2))
        .build()
        .unwrap()
});

/// Waits for its gate; answers at once with a processing reference (async_timeout is tiny).
#[cached(cache = CACHE, async_timeout = 0.001)]
async fn gated(label: String) -> String {
    gate(&label).notified().await;
    label
}

async fn settle(ref_id: &RefId) -> TaskStatus {
    let snapshot =
        tokio::time::timeout(Duration::from_secs(60), CACHE.backend().wait(ref_id, None))
            .await
            .expect("the task ends once its gate is open");
    snapshot.unwrap().expect("the task is known").info.status
}

#[tokio::test]
async fn an_owner_over_the_cap_is_refused_naming_it_and_others_are_not() {
    let alice = || Actor::user("alice");
    let a1 = alice().scope(gated("alice-1".into())).await.unwrap();
    let a2 = alice().scope(gated("alice-2".into())).await.unwrap();
    assert_eq!(a1.status(), TaskStatus::Processing);
    assert_eq!(a2.status(), TaskStatus::Processing);
    match alice().scope(gated("alice-3".into())).await {
        Err(error @ RefCacheError::TooManyTasks { limit: 2, .. }) => {
            let text = error.to_string();
            assert!(text.starts_with("too many tasks"), "{text}");
            assert!(text.contains("user:alice"), "names the owner: {text}");
            assert!(
                text.contains("max_tasks_per_owner"),
                "names the setting: {text}"
            );
        }
        other => panic!("expected TooManyTasks, got {other:?}"),
    }
    // Another owner is not affected.
    let b1 = Actor::user("bob")
        .scope(gated("bob-1".into()))
        .await
        .unwrap();
    assert_eq!(b1.status(), TaskStatus::Processing);

    // A place comes back when a task ends.
    open("alice-1");
    assert_eq!(settle(a1.ref_id()).await, TaskStatus::Complete);
    let give_up = tokio::time::Instant::now() + Duration::from_secs(30);
    let a3 = loop {
        match alice().scope(gated("alice-3".into())).await {
            Ok(response) => break response,
            Err(RefCacheError::TooManyTasks { .. }) => {
                assert!(
                    tokio::time::Instant::now() < give_up,
                    "the place never came back"
                );
                tokio::task::yield_now().await;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err(other) => panic!("{other}"),
        }
    };
    assert_eq!(a3.status(), TaskStatus::Processing);
    for label in ["alice-2", "alice-3", "bob-1"] {
        open(label);
    }
    for r in [a2.ref_id(), a3.ref_id(), b1.ref_id()] {
        assert_eq!(settle(r).await, TaskStatus::Complete);
    }
    // A hit starts nothing and is answered whatever the count.
    let hit = alice().scope(gated("alice-1".into())).await.unwrap();
    assert!(hit.is_complete());
}

#[test]
fn a_zero_cap_is_a_config_error() {
    let error = RefCache::builder()
        .max_tasks_per_owner(Some(0))
        .build()
        .unwrap_err();
    assert!(error.to_string().contains("max_tasks_per_owner"), "{error}");
}
