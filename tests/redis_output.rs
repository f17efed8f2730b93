//! A task's output on Redis across processes' worth of instances (issue 18 §1): a worker (a backend instance in
//! `workers` mode) runs a task that prints lines; replica A took the call, replica B (another instance on the same
//! `redis-server`, which runs nothing) reads the lines through `RefCache` before the task ends: by
//! `read_output`, by the poll's `output_offset`, as the status message, and by `follow_output`, which wakes on the
//! events channel. The three instances share nothing but the Redis.
//!
//! Every wait is for an event or a read that shows it, bounded by [`PATIENCE`]; the task waits at a gate, so
//! "before it ends" is a fact of the test, not a race.
#![cfg(feature = "redis")]

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use futures::StreamExt;
use refcache::redis::{Mode, RedisConfig, RedisServer, RedisTaskBackend};
use refcache::{GetOptions, RefCache, TaskContext, TaskStatus, cached};

#[path = "support/gates.rs"]
mod gates;
use gates::{gate, open};

/// The longest any awaited event may take, on a loaded 2-core machine.
const PATIENCE: Duration = Duration::from_secs(30);

static SERVER: LazyLock<RedisServer> = LazyLock::new(|| {
    RedisServer::start().expect(
        "redis-server must be installed for the Redis backend's tests (Debian: apt-get install redis-server)",
    )
});

fn config() -> RedisConfig {
    RedisConfig::from_url(&SERVER.url())
        .expect("valid url")
        .mode(Mode::Workers)
}

/// A replica over its own backend instance: it submits and polls; in `workers` mode it runs nothing.
fn replica() -> RefCache {
    let backend = RedisTaskBackend::new(config()).expect("backend");
    RefCache::builder()
        .backend(Arc::new(backend))
        .expect("cache")
}

/// Replica A: the one the function is called on.
static A: LazyLock<RefCache> = LazyLock::new(replica);

/// Prints `lines` lines, waits at its gate, prints one more and ends. Run by the worker, by its registered name.
#[deny(clippy::all, unused_braces)]
#[cached(async_timeout = 0.05, cache = A)]
async fn printer(label: String, lines: u32, ctx: TaskContext) -> Result<u32, String> {
    for i in 1..=lines {
        ctx.stdout(&format!("line {i} of {label}\n"));
    }
    gate(&label).notified().await;
    ctx.stdout("after the gate\n");
    Ok(lines)
}

async fn until(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let give_up = tokio::time::Instant::now() + PATIENCE;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < give_up,
            "gave up waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poll_on_replica_b_reads_what_a_worker_prints_before_the_task_ends() {
    let worker = RedisTaskBackend::worker(config()).expect("worker");
    worker.start().await.expect("redis answers");
    let b = replica();

    let label = format!("b-{}", std::process::id());
    let first = printer(label.clone(), 3).await.expect("the call");
    let ref_id = first.ref_id().to_string();
    assert!(!first.status().is_terminal(), "{first:?}");

    // Followed on B from offset 0 before anything is known to be written: it wakes on the events channel.
    let mut follow = b.follow_output(&ref_id, 0).await.expect("follow on B");

    // Read on B through RefCache while the task waits at its gate.
    let want = format!("line 1 of {label}\nline 2 of {label}\nline 3 of {label}\n");
    until("the three lines on replica B", async || {
        b.read_output(&ref_id, 0, None)
            .await
            .expect("read on B")
            .text
            == want
    })
    .await;
    let polled = b
        .get_cached_result_with(&ref_id, &GetOptions::default().output_offset(0))
        .await
        .expect("poll on B");
    assert_eq!(polled.status(), TaskStatus::Processing, "{polled:?}");
    let chunk = polled.output().expect("the poll carries the output");
    assert_eq!(
        (chunk.offset, chunk.dropped, chunk.text.as_str()),
        (0, 0, want.as_str())
    );
    assert!(!chunk.done, "the task still runs: {chunk:?}");
    let offset = chunk.next_offset;
    assert_eq!(offset, want.len() as u64);
    until("the last line as the status message on B", async || {
        let r = b.get_cached_result(&ref_id).await.expect("poll on B");
        r.message().contains(&format!("line 3 of {label}"))
    })
    .await;
    let mut followed = String::new();
    while followed.len() < want.len() {
        let chunk = tokio::time::timeout(PATIENCE, follow.next())
            .await
            .expect("a chunk before the task ends")
            .expect("the stream goes on")
            .expect("a chunk");
        assert!(!chunk.done, "{chunk:?}");
        followed.push_str(&chunk.text);
    }
    assert_eq!(followed, want);

    // The rest, and the end, from B's offset.
    open(&label);
    let last = tokio::time::timeout(PATIENCE, follow.next())
        .await
        .expect("the last chunk")
        .expect("the stream goes on to the end")
        .expect("a chunk");
    let mut tail = last.text.clone();
    let mut done = last.done;
    while !done {
        let chunk = tokio::time::timeout(PATIENCE, follow.next())
            .await
            .expect("the end")
            .expect("the stream ends with a done chunk")
            .expect("a chunk");
        tail.push_str(&chunk.text);
        done = chunk.done;
    }
    assert_eq!(tail, "after the gate\n");
    until("the task complete on B", async || {
        b.get_cached_result(&ref_id)
            .await
            .expect("poll on B")
            .status()
            == TaskStatus::Complete
    })
    .await;
    let rest = b
        .read_output(&ref_id, offset, None)
        .await
        .expect("read on B");
    assert_eq!(
        (rest.offset, rest.text.as_str(), rest.done),
        (offset, "after the gate\n", true)
    );
}
