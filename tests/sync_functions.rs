//! Sync functions stay sync: the work runs on a blocking pool and the caller returns at `async_timeout`, not when
//! the work ends. They work from a plain `fn main` with no runtime and from inside any tokio runtime.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, LazyLock, Mutex};
use std::time::{Duration, Instant};

use refcache::{RefCache, TaskStatus, cached};

static CACHE: LazyLock<RefCache> = LazyLock::new(RefCache::new);
#[path = "support/runs.rs"]
mod support;
use support::{bump, runs};

/// Gates that the blocking work waits on, opened by the test: the work's length is an event, not a sleep.
/// A gate: shut until opened.
type Gate = Arc<(Mutex<bool>, Condvar)>;

static GATES: LazyLock<Mutex<HashMap<String, Gate>>> = LazyLock::new(Default::default);

fn gate(name: &str) -> Gate {
    GATES
        .lock()
        .unwrap()
        .entry(name.to_owned())
        .or_default()
        .clone()
}

fn open(name: &str) {
    let gate = gate(name);
    *gate.0.lock().unwrap() = true;
    gate.1.notify_all();
}

#[deny(clippy::all, unused_braces)]
#[cached(async_timeout = 0.2, cache = CACHE)]
fn blocking_work(gate_name: String) -> Result<String, String> {
    bump(&gate_name);
    let gate = gate(&gate_name);
    let mut open = gate.0.lock().unwrap();
    while !*open {
        open = gate.1.wait(open).unwrap();
    }
    Ok(format!("{gate_name} done"))
}

fn poll_until_complete(ref_id: &str) -> refcache::CachedResponse {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let give_up = Instant::now() + Duration::from_secs(30);
        loop {
            let response = CACHE.get_cached_result(ref_id).await.unwrap();
            if response.status().is_terminal() {
                return response;
            }
            assert!(Instant::now() < give_up, "never completed");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
}

#[test]
fn from_a_plain_thread_with_no_runtime_the_caller_returns_at_the_timeout() {
    let start = Instant::now();
    let response = blocking_work("plain".into()).unwrap();
    // The gate is still shut, so the work cannot have ended: the caller returned without waiting for it.
    assert_eq!(response.status(), TaskStatus::Processing);
    assert!(
        start.elapsed() >= Duration::from_millis(200),
        "waited at least async_timeout"
    );
    open("plain");
    let done = poll_until_complete(response.ref_id().as_str());
    assert_eq!(
        done.value_as::<String>().unwrap().as_deref(),
        Some("plain done")
    );
}

#[test]
fn work_done_in_time_returns_the_value() {
    open("quick");
    let response = blocking_work("quick".into()).unwrap();
    assert!(response.is_complete(), "{:?}", response.to_json());
}

#[tokio::test(flavor = "current_thread")]
async fn inside_a_current_thread_runtime_it_neither_panics_nor_deadlocks() {
    let response = blocking_work("current".into()).unwrap();
    assert_eq!(response.status(), TaskStatus::Processing);
    open("current");
    let give_up = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let r = CACHE
            .get_cached_result(response.ref_id().as_str())
            .await
            .unwrap();
        if r.is_complete() {
            break;
        }
        assert!(tokio::time::Instant::now() < give_up);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inside_a_multi_thread_runtime_it_returns_at_the_timeout() {
    let response = blocking_work("multi".into()).unwrap();
    assert_eq!(response.status(), TaskStatus::Processing);
    // A second identical call joins the same execution.
    let again = blocking_work("multi".into()).unwrap();
    assert_eq!(again.ref_id(), response.ref_id());
    open("multi");
    assert_eq!(runs("multi"), 1);
}

#[cached(cache = CACHE)]
fn sync_no_timeout(n: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(50));
    n + 1
}

#[test]
fn without_a_timeout_a_sync_caller_waits_for_the_value() {
    assert_eq!(
        sync_no_timeout(1).unwrap().value_as::<u64>().unwrap(),
        Some(2)
    );
}
