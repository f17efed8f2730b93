//! Heavy JSON work off the runtime threads (#15 §3): serializing, measuring, previewing or parsing a big value is
//! CPU work, and done on a runtime thread it stalls every other request that thread serves (with 4 big calls in
//! flight, a 1.5 ms call took up to 18.4 s).
//!
//! Past [`OFFLOAD_BYTES`] of JSON, such a step runs through [`off_runtime`]: on a multi-threaded tokio runtime,
//! `block_in_place` hands this worker's other tasks to another thread for the step's duration, so they keep being
//! served; elsewhere (a blocking thread, no runtime) the step just runs. A current-thread runtime cannot hand its
//! tasks anywhere: there the step runs inline, as before.

use serde::Serialize;
use tokio::runtime::{Handle, RuntimeFlavor};

use crate::model::json_text::JsonText;

/// Values whose JSON text is longer than this (64 KiB) are serialized, measured, previewed and parsed off the
/// runtime threads. Below it the step takes well under a millisecond, less than moving it would cost.
pub(crate) const OFFLOAD_BYTES: usize = 64 * 1024;

/// Runs `step` where it stalls no other request: see the module's text.
pub(crate) fn off_runtime<R>(step: impl FnOnce() -> R) -> R {
    let multi_thread =
        Handle::try_current().is_ok_and(|h| h.runtime_flavor() == RuntimeFlavor::MultiThread);
    if multi_thread {
        tokio::task::block_in_place(step)
    } else {
        step()
    }
}

/// `value`'s compact JSON text, serialized once; a value longer than [`OFFLOAD_BYTES`] off the runtime, where it
/// is dropped too (freeing a big tree is work as well). A first pass counts up to [`OFFLOAD_BYTES`] without
/// allocating, and stops there: a small value is then serialized in place, a big one whole in [`off_runtime`].
pub(crate) fn serialize<T: Serialize>(value: T) -> Result<JsonText, serde_json::Error> {
    let mut probe = Capped { len: 0 };
    match serde_json::to_writer(&mut probe, &value) {
        Ok(()) => JsonText::of(&value),
        Err(e) if e.is_io() && probe.len > OFFLOAD_BYTES => off_runtime(move || {
            let text = JsonText::of(&value);
            drop(value);
            text
        }),
        Err(e) => Err(e),
    }
}

/// The number of items of an array or object `text` holds, counted off the runtime when it is big.
pub(crate) fn total_items(text: &JsonText) -> Option<usize> {
    if text.len() > OFFLOAD_BYTES {
        off_runtime(|| text.total_items())
    } else {
        text.total_items()
    }
}

/// Parses `text` into a tree, off the runtime when it is big.
pub(crate) fn to_value(text: &JsonText) -> serde_json::Value {
    if text.len() > OFFLOAD_BYTES {
        off_runtime(|| text.to_value())
    } else {
        text.to_value()
    }
}

/// A writer that counts bytes and fails once past [`OFFLOAD_BYTES`].
struct Capped {
    len: usize,
}

impl std::io::Write for Capped {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.len += buf.len();
        if self.len > OFFLOAD_BYTES {
            return Err(std::io::Error::other("past the offload threshold"));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_and_big_values_serialize_to_the_same_text_as_in_place() {
        let small = vec![1u32, 2, 3];
        assert_eq!(serialize(&small).unwrap().as_str(), "[1,2,3]");
        let big: Vec<String> = (0..20_000).map(|i| format!("item-{i}")).collect();
        let text = serialize(&big).unwrap();
        assert!(text.len() > OFFLOAD_BYTES);
        assert_eq!(text, JsonText::of(&big).unwrap());
        assert_eq!(to_value(&text), serde_json::to_value(&big).unwrap());
        assert_eq!(total_items(&text), Some(20_000));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_big_value_is_serialized_on_a_multi_threaded_runtime_too() {
        let big: Vec<u64> = (0..50_000).collect();
        let text = serialize(&big).unwrap();
        assert_eq!(text.total_items(), Some(50_000));
    }

    #[tokio::test]
    async fn a_current_thread_runtime_runs_the_step_inline() {
        let big: Vec<u64> = (0..50_000).collect();
        assert_eq!(serialize(&big).unwrap().total_items(), Some(50_000));
    }

    #[test]
    fn an_error_that_is_not_the_cap_is_an_error() {
        let mut map = std::collections::HashMap::new();
        map.insert(vec![1u8], 1);
        assert!(serialize(&map).is_err(), "keys that are not strings");
    }
}
