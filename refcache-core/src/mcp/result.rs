//! Responses and errors as MCP tool results.

use rmcp::model::{CallToolResult, ContentBlock};
use serde_json::Value;

use super::status::status_line;
use crate::cache::response::CachedResponse;
use crate::model::error::RefCacheError;
use crate::model::task::TaskStatus;

/// A cached call's or a poll's answer as a tool result: the wire shape of [`CachedResponse`] as structured
/// content (and as JSON text, for clients that read only text). A running task's `message` is its MCP status
/// line: the progress message with the count, percentage and ETA, and the latest output line.
///
/// A failed or cancelled task answers `isError: true`, with the error text first, so that a client which shows the
/// model only text still shows why; the structured content keeps the `ref_id` (to retry) and the details.
pub fn tool_result(response: &CachedResponse) -> CallToolResult {
    let (text, json) = match response.info() {
        // A task's record: over MCP a running task's message is its whole status line (progress, %, ETA, latest
        // output), the same as `tasks/get`'s `statusMessage`; the Rust response keeps mcp-refcache's plain
        // message. Small: the tree is made first and the text from it.
        Some(info) => {
            let mut json = response.to_json();
            if let Some(message) = json.get_mut("message") {
                *message = Value::String(status_line(info));
            }
            (json.to_string(), json)
        }
        // A value: the text content is the wire JSON with the value's stored text spliced in as it is (no tree
        // is serialized for it); the structured content is a tree, as rmcp's type asks, parsed once from that
        // text. Parsing a big value is CPU work: off the runtime.
        None => {
            let wire = || {
                let text = response.to_json_string();
                let json: Value =
                    serde_json::from_str(&text).expect("a response's wire text is JSON");
                (text, json)
            };
            match response.stored() {
                Some(stored) if stored.size > crate::contract::offload::OFFLOAD_BYTES => {
                    crate::contract::offload::off_runtime(wire)
                }
                _ => wire(),
            }
        }
    };
    let mut result = match response.status() {
        TaskStatus::Failed | TaskStatus::Cancelled => {
            let message = format!("{} (ref_id={})", response.message(), response.ref_id());
            CallToolResult::error(vec![ContentBlock::text(message), ContentBlock::text(text)])
        }
        _ => CallToolResult::success(vec![ContentBlock::text(text)]),
    };
    result.structured_content = Some(json);
    result
}

/// An error as a tool result (`isError: true`, its text), never a protocol error: clients hide protocol errors
/// from the model, which then cannot correct its call.
pub fn error_result(error: &RefCacheError) -> CallToolResult {
    error_text(error.to_string())
}

/// A message as a tool error.
pub(crate) fn error_text(text: impl Into<String>) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(text.into())])
}

/// A JSON object as a successful tool result.
pub(crate) fn json_result(json: Value) -> CallToolResult {
    CallToolResult::structured(json)
}
