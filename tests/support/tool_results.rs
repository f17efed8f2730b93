//! Reading MCP tool results in tests.

use rmcp::model::CallToolResult;

/// The text blocks of a tool result, joined by newlines.
pub(crate) fn text(result: &CallToolResult) -> String {
    result
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect::<Vec<_>>()
        .join("\n")
}
