//! A task's output log (issue 18 §1) on the in-process backend: written as it goes (from a blocking thread too),
//! read from an offset while the task runs, bounded with the oldest bytes dropped and counted, followed without
//! polling, the latest line as the status message, and gone with the record.

use std::sync::LazyLock;
use std::time::Duration;

use futures::StreamExt;
use refcache::{
    Actor, AsyncResponseFormat, GetOptions, OutputStream, RefCache, RefCacheError, TaskContext,
    TaskStatus, cached,
};

#[path = "support/gates.rs"]
mod gates;
use gates::{gate, open};

static CACHE: LazyLock<RefCache> = LazyLock::new(RefCache::new);
static SMALL: LazyLock<RefCache> =
    LazyLock::new(|| RefCache::builder().output_limit(64).build().unwrap());

/// Prints `lines` lines, then waits at its gate before it prints the last one and ends.
#[deny(clippy::all, unused_braces)]
#[cached(async_timeout = 0.05, cache = CACHE)]
async fn printer(label: String, lines: u32, ctx: TaskContext) -> Result<u32, String> {
    for i in 0..lines {
        ctx.stdout(&format!("line {i}\n"));
    }
    ctx.stderr("waiting\n");
    gate(&label).notified().await;
    ctx.output(OutputStream::from("summary"), "all done\n");
    Ok(lines)
}

/// A sync function: it writes from the blocking thread it runs on.
#[deny(clippy::all, unused_braces)]
#[cached(async_timeout = 30.0, cache = CACHE)]
fn blocking_printer(lines: u32, ctx: &TaskContext) -> u32 {
    for i in 0..lines {
        ctx.stdout(&format!("blocking {i}\n"));
    }
    lines
}

/// Writes nothing.
#[deny(clippy::all, unused_braces)]
#[cached(async_timeout = 30.0, cache = CACHE)]
async fn silent(n: u32) -> u32 {
    n
}

/// Prints 10 lines of 10 bytes into a log capped at 32 bytes by its attribute.
#[deny(clippy::all, unused_braces)]
#[cached(async_timeout = 30.0, cache = CACHE, output_limit = 32)]
async fn capped(label: String, ctx: TaskContext) -> String {
    for i in 0..10 {
        ctx.stdout(&format!("{label}{i:04}\n"));
    }
    label
}

/// Prints 100 bytes into a cache whose default cap is 64 bytes.
#[deny(clippy::all, unused_braces)]
#[cached(async_timeout = 30.0, cache = SMALL)]
async fn cache_capped(ctx: TaskContext) -> u32 {
    ctx.stdout(&"x".repeat(100));
    1
}

async fn wait_done(cache: &RefCache, ref_id: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !cache
        .get_cached_result(ref_id)
        .await
        .unwrap()
        .status()
        .is_terminal()
    {
        assert!(tokio::time::Instant::now() < deadline, "never finished");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn output_is_read_while_the_task_runs_and_after_it_ends() {
    let response = printer("read".into(), 3).await.unwrap();
    assert_eq!(response.status(), TaskStatus::Processing);
    let ref_id = response.ref_id().to_string();
    // The task waits at its gate after "waiting": poll until that has been written.
    let expected = "line 0\nline 1\nline 2\nwaiting\n";
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let chunk = loop {
        let chunk = CACHE.read_output(&ref_id, 0, None).await.unwrap();
        if chunk.text.len() >= expected.len() {
            break chunk;
        }
        assert!(tokio::time::Instant::now() < deadline, "output never came");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert_eq!(
        chunk.text, expected,
        "stdout and stderr, in the order written"
    );
    assert_eq!((chunk.offset, chunk.dropped), (0, 0));
    assert_eq!(chunk.next_offset, expected.len() as u64);
    assert!(!chunk.done, "the task still runs");

    // The poll carries the output when asked, and its message is the latest line.
    let polled = CACHE
        .get_cached_result_with(&ref_id, &GetOptions::default().output_offset(7))
        .await
        .unwrap();
    assert_eq!(polled.message(), "waiting");
    let json = polled.to_json();
    assert_eq!(json["message"], "waiting");
    assert_eq!(json["output"]["offset"], 7);
    assert_eq!(json["output"]["text"], "line 1\nline 2\nwaiting\n");
    assert_eq!(json["output"]["done"], false);
    let minimal = CACHE
        .get_cached_result_with(
            &ref_id,
            &GetOptions::default().format(AsyncResponseFormat::Minimal),
        )
        .await
        .unwrap()
        .to_json();
    assert!(minimal.get("output").is_none(), "only when asked");

    // A read with a small limit answers part, and next_offset goes on from there.
    let part = CACHE.read_output(&ref_id, 0, Some(5)).await.unwrap();
    assert_eq!((part.text.as_str(), part.next_offset), ("line ", 5));

    open("read");
    wait_done(&CACHE, &ref_id).await;
    let rest = CACHE
        .read_output(&ref_id, chunk.next_offset, None)
        .await
        .unwrap();
    assert_eq!(rest.text, "all done\n");
    assert!(rest.done, "terminal and at the end");
    let complete = CACHE
        .get_cached_result_with(&ref_id, &GetOptions::default().output_offset(0))
        .await
        .unwrap();
    assert_eq!(complete.value_as::<u32>().unwrap(), Some(3));
    assert_eq!(
        complete.output().unwrap().text,
        format!("{expected}all done\n")
    );
    assert!(complete.output().unwrap().done);

    // Past the end: an empty chunk at the end, never an offset moved back past what was read.
    let past = CACHE.read_output(&ref_id, 10_000, None).await.unwrap();
    assert_eq!((past.text.as_str(), past.done), ("", true));
}

#[tokio::test]
async fn a_blocking_body_writes_output_too() {
    let ref_id = tokio::task::spawn_blocking(|| blocking_printer(3).unwrap().ref_id().to_string())
        .await
        .unwrap();
    let chunk = CACHE.read_output(&ref_id, 0, None).await.unwrap();
    assert_eq!(chunk.text, "blocking 0\nblocking 1\nblocking 2\n");
    assert!(chunk.done);
}

#[tokio::test]
async fn the_oldest_bytes_go_first_and_readers_are_told_how_many() {
    let response = capped("cap".into()).await.unwrap();
    let ref_id = response.ref_id().to_string();
    // 10 lines of 8 bytes ("cap0000\n"), 80 bytes in all, 32 kept: the last 4 lines.
    let chunk = CACHE.read_output(&ref_id, 0, None).await.unwrap();
    assert_eq!(chunk.text, "cap0006\ncap0007\ncap0008\ncap0009\n");
    assert_eq!(
        (chunk.offset, chunk.dropped, chunk.next_offset),
        (48, 48, 80)
    );
    assert!(chunk.done);
    // From an offset still held, nothing is dropped.
    let chunk = CACHE.read_output(&ref_id, 72, None).await.unwrap();
    assert_eq!((chunk.text.as_str(), chunk.dropped), ("cap0009\n", 0));

    // The cache's own default applies to functions that set none.
    let response = cache_capped().await.unwrap();
    let chunk = SMALL
        .read_output(response.ref_id().as_ref(), 0, None)
        .await
        .unwrap();
    assert_eq!(
        (chunk.text.len(), chunk.dropped, chunk.next_offset),
        (64, 36, 100)
    );
}

#[tokio::test]
async fn a_task_that_writes_nothing_answers_an_empty_done_chunk() {
    let response = silent(7).await.unwrap();
    let chunk = CACHE
        .read_output(response.ref_id().as_ref(), 0, None)
        .await
        .unwrap();
    assert_eq!(chunk, refcache::OutputChunk::empty(0, true));
}

#[tokio::test]
async fn a_follower_gets_every_chunk_as_it_comes_and_then_done() {
    let response = printer("follow".into(), 2).await.unwrap();
    let ref_id = response.ref_id().to_string();
    let mut follow = CACHE.follow_output(&ref_id, 0).await.unwrap();
    let mut text = String::new();
    while !text.ends_with("waiting\n") {
        let chunk = tokio::time::timeout(Duration::from_secs(30), follow.next())
            .await
            .expect("a chunk comes without polling")
            .unwrap()
            .unwrap();
        text.push_str(&chunk.text);
    }
    assert_eq!(text, "line 0\nline 1\nwaiting\n");
    open("follow");
    let mut last = None;
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(30), follow.next())
        .await
        .expect("the end comes")
    {
        let chunk = chunk.unwrap();
        text.push_str(&chunk.text);
        last = Some(chunk);
    }
    assert!(last.unwrap().done, "the stream ends after the done chunk");
    assert_eq!(text, "line 0\nline 1\nwaiting\nall done\n");
}

#[tokio::test]
async fn output_goes_with_its_record_and_stays_with_its_owner() {
    let response = printer("gone".into(), 1).await.unwrap();
    let ref_id = response.ref_id().to_string();
    open("gone");
    wait_done(&CACHE, &ref_id).await;
    assert!(
        !CACHE
            .read_output(&ref_id, 0, None)
            .await
            .unwrap()
            .text
            .is_empty()
    );

    let unknown = format!("{}:{}", CACHE.name(), "0".repeat(32));
    assert!(matches!(
        CACHE.read_output(&unknown, 0, None).await,
        Err(RefCacheError::NotFound)
    ));
    assert!(matches!(
        CACHE.read_output(&ref_id, 0, Some(0)).await,
        Err(RefCacheError::InvalidOption {
            option: "output_max_bytes",
            ..
        })
    ));

    CACHE.delete(&ref_id).await.unwrap();
    assert!(matches!(
        CACHE.read_output(&ref_id, 0, None).await,
        Err(RefCacheError::NotFound)
    ));
}

/// A user-only task that prints.
#[deny(clippy::all, unused_braces)]
#[cached(async_timeout = 30.0, cache = CACHE, policy = "user_only")]
async fn private_printer(label: String, ctx: TaskContext) -> String {
    ctx.stdout(&format!("secret {label}\n"));
    label
}

#[tokio::test]
async fn another_owner_reads_no_output_and_learns_nothing() {
    let made = Actor::user("alice")
        .scope(private_printer("p".into()))
        .await
        .unwrap();
    let ref_id = made.ref_id().to_string();
    let owner = Actor::user("alice")
        .scope(CACHE.read_output(&ref_id, 0, None))
        .await
        .unwrap();
    assert_eq!(owner.text, "secret p\n");
    let unknown = format!("{}:{}", CACHE.name(), "0".repeat(32));
    let agent = Actor::agent("claude");
    let denied = agent
        .clone()
        .scope(CACHE.read_output(&ref_id, 0, None))
        .await
        .unwrap_err();
    let missing = agent
        .clone()
        .scope(CACHE.read_output(&unknown, 0, None))
        .await
        .unwrap_err();
    assert!(matches!(denied, RefCacheError::NotFound), "{denied:?}");
    assert_eq!(denied.to_string(), missing.to_string());
    assert!(agent.scope(CACHE.follow_output(&ref_id, 0)).await.is_err());
}
