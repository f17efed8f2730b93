//! Replicas on Redis: a worker (a backend instance in `workers` mode) runs the task, replica A took the call, and
//! replica B (another instance on the same `redis-server`, which runs nothing) sees the task through `RefCache`.
//! The three instances share nothing but the Redis; each test has its own key prefix.
//!
//! - Output (issue 18 §1): B reads what the worker prints before the task ends: by `read_output`, by the poll's
//!   `output_offset`, as the status message, and by `follow_output`, which wakes on the events channel.
//! - Input (issue 19 §1): the worker's task asks; B shows the question, refuses an answer that fails the schema
//!   (the task keeps waiting), and takes one; of two answers at once on A and B, exactly one is taken.
//!
//! Every wait is for an event or a read that shows it, bounded by [`PATIENCE`]; the task waits at a gate (or for
//! its answer), so "before it ends" is a fact of the test, not a race.
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

fn config(prefix: &str) -> RedisConfig {
    RedisConfig::from_url(&SERVER.url())
        .expect("valid url")
        .mode(Mode::Workers)
        .key_prefix(prefix)
}

/// A replica over its own backend instance: it submits and polls; in `workers` mode it runs nothing.
fn replica(prefix: &str) -> RefCache {
    let backend = RedisTaskBackend::new(config(prefix)).expect("backend");
    RefCache::builder()
        .backend(Arc::new(backend))
        .expect("cache")
}

/// Replica A of the output test: the one the function is called on.
static A: LazyLock<RefCache> = LazyLock::new(|| replica("output"));

/// Replica A of the input test.
static A_INPUT: LazyLock<RefCache> = LazyLock::new(|| replica("input"));

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

fn confirm_schema() -> serde_json::Value {
    serde_json::json!({
        "type": "object",
        "properties": {"confirm": {"type": "boolean"}},
        "required": ["confirm"]
    })
}

/// Asks for a confirmation twice (the second question after the first answer) and returns both answers.
#[deny(clippy::all, unused_braces)]
#[cached(async_timeout = 0.05, cache = A_INPUT)]
async fn confirm(label: String, ctx: TaskContext) -> Result<Vec<bool>, refcache::TaskError> {
    let first = ctx
        .ask(format!("Delete {label}?"), confirm_schema(), None)
        .await?;
    let second = ctx
        .ask(format!("Really delete {label}?"), confirm_schema(), None)
        .await?;
    Ok(vec![first["confirm"] == true, second["confirm"] == true])
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
    let worker = RedisTaskBackend::worker(config("output")).expect("worker");
    worker.start().await.expect("redis answers");
    let b = replica("output");

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_question_a_worker_asks_is_answered_on_replica_b() {
    let worker = RedisTaskBackend::worker(config("input")).expect("worker");
    worker.start().await.expect("redis answers");
    let b = replica("input");

    let label = format!("records-{}", std::process::id());
    let first = confirm(label.clone()).await.expect("the call");
    let ref_id = first.ref_id().to_string();
    until("the question on replica B", async || {
        let r = b.get_cached_result(&ref_id).await.expect("poll on B");
        r.status() == TaskStatus::InputRequired && r.message().contains(&format!("Delete {label}?"))
    })
    .await;

    // An answer that fails the schema is refused, naming the field, and the task keeps waiting.
    let refused = b
        .respond(&ref_id, serde_json::json!({"confirm": "yes"}))
        .await
        .expect_err("a string is not a boolean");
    assert!(refused.to_string().contains("confirm"), "{refused}");
    let polled = b.get_cached_result(&ref_id).await.expect("poll on B");
    assert_eq!(polled.status(), TaskStatus::InputRequired, "{polled:?}");

    b.respond(&ref_id, serde_json::json!({"confirm": true}))
        .await
        .expect("B takes the answer");
    until("the second question", async || {
        let r = b.get_cached_result(&ref_id).await.expect("poll on B");
        r.status() == TaskStatus::InputRequired && r.message().contains("Really delete")
    })
    .await;

    // Two answers at once, on A and on B: exactly one is taken.
    let (on_a, on_b) = tokio::join!(
        A_INPUT.respond(&ref_id, serde_json::json!({"confirm": false})),
        b.respond(&ref_id, serde_json::json!({"confirm": true})),
    );
    assert!(
        on_a.is_ok() != on_b.is_ok(),
        "exactly one answer is taken: A {on_a:?}, B {on_b:?}"
    );
    until("the task complete on A", async || {
        A_INPUT
            .get_cached_result(&ref_id)
            .await
            .expect("poll on A")
            .is_complete()
    })
    .await;
    let done = b.get_cached_result(&ref_id).await.expect("poll on B");
    let answers: Vec<bool> = done.value_as().expect("a value").expect("complete");
    assert_eq!(answers, vec![true, on_b.is_ok()]);
    let late = b
        .respond(&ref_id, serde_json::json!({"confirm": true}))
        .await
        .expect_err("a finished task takes no answer");
    assert!(late.to_string().contains("complete"), "{late}");
}
