//! How a record, a status, a question and a value are written into and read from their columns.

use std::time::Duration;

use refcache_core::{StoredValue, TaskInfo, TaskStatus};

/// A finished value as its two columns: the value's exact JSON text, and the rest of the stored value (with the
/// value itself left out), plus its TTL.
pub(crate) fn encode_value(stored: &mut StoredValue) -> (String, String, Duration) {
    let value = serde_json::to_string(&stored.value).expect("a JSON value serializes");
    let taken = std::mem::take(&mut stored.value);
    let meta = serde_json::to_string(&*stored).expect("a StoredValue serializes");
    stored.value = taken;
    (value, meta, stored.ttl)
}

pub(super) fn decode_value(value: &str, meta: &str) -> Result<StoredValue, serde_json::Error> {
    let mut stored: StoredValue = serde_json::from_str(meta)?;
    stored.value = serde_json::from_str(value)?;
    Ok(stored)
}

/// A record as the `info` column holds it: without its question, which has a column of its own.
pub(crate) fn info_text(info: &TaskInfo) -> String {
    if info.input_request.is_some() {
        let mut info = info.clone();
        info.input_request = None;
        serde_json::to_string(&info).expect("a TaskInfo serializes")
    } else {
        serde_json::to_string(info).expect("a TaskInfo serializes")
    }
}

pub(super) fn parse_status(s: &str) -> Option<TaskStatus> {
    TaskStatus::from_name(s)
}

/// The question on a record, from its own column: shown only while the task waits on it (the record's JSON never
/// holds it, so that the answer, taken by an UPDATE of the columns alone, leaves no stale question behind).
pub(super) fn with_question(info: &mut TaskInfo, question: Option<&str>) {
    info.input_request = None;
    if info.status == TaskStatus::InputRequired
        && let Some(question) = question
    {
        match serde_json::from_str(question) {
            Ok(request) => info.input_request = Some(request),
            Err(err) => {
                tracing::warn!(ref_id = %info.ref_id, %err, "refcache: an unreadable question was left out");
            }
        }
    }
}
