//! Output streams: a task's output log is readable from an offset while it runs (from any replica), its last line
//! is the status message, the byte cap drops the oldest bytes and says how many, offsets never move backwards, a
//! blocking thread may write, and the log goes with its record.

use std::time::Duration;

use serde_json::json;

use super::fixture::Factory;
use super::support::{PATIENCE, settings, submission_with, wait_terminal, wait_until};
use super::tasks::{OUTPUT, new_gate, open};
use crate::contract::backend::TaskBackend;
use crate::contract::spec::TaskOptions;
use crate::model::output::OutputChunk;
use crate::model::ref_id::RefId;
use crate::model::task::TaskStatus;

/// Reads from `offset` until the log holds `want` (bounded by [`PATIENCE`]).
async fn read_until(b: &dyn TaskBackend, ref_id: &RefId, offset: u64, want: &str) -> OutputChunk {
    let give_up = tokio::time::Instant::now() + PATIENCE;
    loop {
        let chunk = b
            .read_output(ref_id, offset, 1 << 20)
            .await
            .expect("read_output")
            .expect("task known");
        if chunk.text.contains(want) {
            return chunk;
        }
        assert!(
            tokio::time::Instant::now() < give_up,
            "gave up waiting for {want:?} in the output: {chunk:?}"
        );
        let _ = b
            .wait(
                ref_id,
                Some(tokio::time::Instant::now() + Duration::from_millis(20)),
            )
            .await;
    }
}

/// Output written before the task ends is readable while it runs (stdout and a blocking thread's stderr), its
/// last line is the status message, a read from `next_offset` gets only what came after, and the read that
/// reaches the end of a finished task is `done`.
pub async fn output_streams_while_running(make: Factory) {
    let fx = make(settings()).await;
    let b = &*fx.backend;
    let gate = new_gate();
    let (sub, ref_id, _) = submission_with(
        OUTPUT,
        json!({"gate": gate, "lines": 3}),
        TaskOptions::default(),
    );
    b.submit(sub).await.expect("submit");
    let first = read_until(b, &ref_id, 0, "from a blocking thread").await;
    assert_eq!(first.offset, 0);
    assert_eq!(first.dropped, 0);
    assert!(!first.done, "the task still runs: {first:?}");
    assert!(
        first.text.starts_with("line 1\nline 2\nline 3\n"),
        "{first:?}"
    );
    assert_eq!(first.next_offset, first.text.len() as u64);
    wait_until(b, &ref_id, "the last line as the status message", |s| {
        s.info.message().contains("from a blocking thread")
    })
    .await;
    let running = b.get(&ref_id).await.unwrap().unwrap();
    assert_eq!(running.info.status, TaskStatus::Processing);

    open(&gate);
    let done = wait_terminal(b, &ref_id).await;
    assert_eq!(done.info.status, TaskStatus::Complete, "{:?}", done.info);
    let rest = b
        .read_output(&ref_id, first.next_offset, 1 << 20)
        .await
        .unwrap()
        .expect("task known");
    assert_eq!(rest.offset, first.next_offset);
    assert_eq!(rest.text, "after the gate\n");
    assert!(rest.done, "{rest:?}");
    let end = b
        .read_output(&ref_id, rest.next_offset + 1000, 1 << 20)
        .await
        .unwrap()
        .expect("task known");
    assert_eq!(end.text, "", "an offset past the end reads nothing");
    assert_eq!(end.next_offset, rest.next_offset, "{end:?}");
    assert!(end.done);
    let small = b.read_output(&ref_id, 0, 5).await.unwrap().unwrap();
    assert!(small.text.len() <= 5 && !small.text.is_empty(), "{small:?}");
    assert!(!small.done, "a partial read is not the end");
}

/// A log over its cap drops the oldest bytes, tells a reader from an earlier offset how many, and never moves an
/// offset backwards; a task that wrote nothing answers an empty chunk.
pub async fn output_cap_drops_the_oldest(make: Factory) {
    let fx = make(settings()).await;
    let b = &*fx.backend;
    let gate = new_gate();
    let (sub, ref_id, _) = submission_with(
        OUTPUT,
        json!({"gate": gate, "lines": 400}),
        TaskOptions::default().output_limit(Some(1024)),
    );
    b.submit(sub).await.expect("submit");
    open(&gate);
    let done = wait_terminal(b, &ref_id).await;
    assert_eq!(done.info.status, TaskStatus::Complete, "{:?}", done.info);
    let chunk = b
        .read_output(&ref_id, 0, 1 << 20)
        .await
        .unwrap()
        .expect("task known");
    let total: u64 = (1..=400u64)
        .map(|i| format!("line {i}\n").len() as u64)
        .sum::<u64>()
        + "from a blocking thread\n".len() as u64
        + "after the gate\n".len() as u64;
    assert_eq!(chunk.next_offset, total, "{chunk:?}");
    assert!(chunk.text.len() <= 1024, "cap 1024: {}", chunk.text.len());
    assert!(
        chunk.text.len() >= 512,
        "the newest bytes stay: {}",
        chunk.text.len()
    );
    assert_eq!(chunk.dropped, chunk.offset, "{chunk:?}");
    assert_eq!(chunk.offset + chunk.text.len() as u64, total);
    assert!(chunk.text.ends_with("after the gate\n"));
    assert!(chunk.done);
    let later = b
        .read_output(&ref_id, chunk.offset + 10, 1 << 20)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(later.dropped, 0);
    assert!(later.offset >= chunk.offset + 10, "{later:?}");
    assert_eq!(later.next_offset, total);

    let silent_gate = new_gate();
    let (sub, silent, _) = submission_with(
        OUTPUT,
        json!({"gate": silent_gate, "lines": 0, "quiet": true}),
        TaskOptions::default(),
    );
    b.submit(sub).await.expect("submit");
    open(&silent_gate);
    wait_terminal(b, &silent).await;
    let empty = b.read_output(&silent, 0, 1024).await.unwrap().unwrap();
    assert_eq!(
        (
            empty.offset,
            empty.next_offset,
            empty.dropped,
            empty.text.as_str(),
            empty.done
        ),
        (0, 0, 0, "", true),
        "a task that wrote nothing"
    );
    assert_eq!(
        b.read_output(&RefId::generate("conformance"), 0, 1024)
            .await
            .unwrap(),
        None,
        "an unknown id"
    );
}

/// The output lives as long as the record: deleting the reference drops it.
pub async fn output_goes_with_its_record(make: Factory) {
    let fx = make(settings()).await;
    let b = &*fx.backend;
    let gate = new_gate();
    let (sub, ref_id, _) = submission_with(
        OUTPUT,
        json!({"gate": gate, "lines": 2}),
        TaskOptions::default(),
    );
    b.submit(sub).await.expect("submit");
    open(&gate);
    wait_terminal(b, &ref_id).await;
    assert!(b.read_output(&ref_id, 0, 1024).await.unwrap().is_some());
    assert!(b.delete(&ref_id).await.unwrap());
    assert_eq!(b.read_output(&ref_id, 0, 1024).await.unwrap(), None);
}
