//! The responses a cached call or a poll answers with, and their exact wire shapes.

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::Value;

use crate::contract::store::StoredValue;
use crate::model::error::RefCacheError;
use crate::model::format::AsyncResponseFormat;
use crate::model::json_text::JsonText;
use crate::model::output::OutputChunk;
use crate::model::preview::Preview;
use crate::model::record::TaskInfo;
use crate::model::ref_id::RefId;
use crate::model::schema::ExpectedSchema;
use crate::model::task::{TaskError, TaskStatus};

/// What a `#[cached]` call or `get_cached_result` answers.
///
/// Serializes to the wire shapes of mcp-refcache, so agents written for it work unchanged:
/// - complete: `{ref_id, value, is_complete: true, is_async: false, size, total_items}`;
/// - preview, for a complete value larger than `max_size`: `{ref_id, preview, is_complete: false, is_async: false,
///   preview_strategy, total_items, original_size, preview_size, page?, total_pages?, message}`;
/// - restricted, for a complete value the caller may use but not read (`EXECUTE` without `READ`):
///   `{ref_id, status: "complete", is_complete: true, is_async: false, message}`;
/// - async (pending, processing, failed, cancelled), by format:
///   - minimal: `{ref_id, status, is_complete: false, is_async: true}`;
///   - standard: minimal plus `started_at`, `progress`, `message` (and, while `input_required`, `input_request`:
///     `{key, message, schema, deadline}`, the question and the schema its answer must fit);
///   - full: standard plus `eta_seconds`, `error`, `retry_count`, `can_retry`, `retry_history`,
///     `expected_schema`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum CachedResponse {
    /// The task is complete; here is its value.
    Complete(CompleteResponse),
    /// The task is pending, processing, failed or cancelled.
    Async(Box<AsyncResponse>),
    /// The task is complete, but its value is larger than `max_size`: here is a preview, or one page.
    Preview(Box<PreviewResponse>),
    /// The task is complete, and the caller may pass the reference on but not read the value.
    Restricted(RestrictedResponse),
}

/// A preview (or one page) of a value too large to answer whole.
#[derive(Debug, Clone)]
pub struct PreviewResponse {
    stored: Arc<StoredValue>,
    preview: Preview,
    message: String,
    output: Option<Box<OutputChunk>>,
}

/// A complete value that the caller may not read.
#[derive(Debug, Clone)]
pub struct RestrictedResponse {
    ref_id: RefId,
}

/// A complete value.
#[derive(Debug, Clone)]
pub struct CompleteResponse {
    stored: Arc<StoredValue>,
    output: Option<Box<OutputChunk>>,
}

/// A task that has not produced a value (yet).
#[derive(Debug, Clone)]
pub struct AsyncResponse {
    info: TaskInfo,
    format: AsyncResponseFormat,
    expected_schema: Option<Arc<ExpectedSchema>>,
    output: Option<Box<OutputChunk>>,
}

impl CachedResponse {
    /// A complete response for a stored value.
    pub fn complete(stored: Arc<StoredValue>) -> Self {
        Self::Complete(CompleteResponse {
            stored,
            output: None,
        })
    }

    /// An async response for a task record.
    pub fn pending(
        info: TaskInfo,
        format: AsyncResponseFormat,
        expected_schema: Option<Arc<ExpectedSchema>>,
    ) -> Self {
        Self::Async(Box::new(AsyncResponse {
            info,
            format,
            expected_schema,
            output: None,
        }))
    }

    /// A preview response.
    pub fn preview(stored: Arc<StoredValue>, preview: Preview, message: String) -> Self {
        Self::Preview(Box::new(PreviewResponse {
            stored,
            preview,
            message,
            output: None,
        }))
    }

    /// A restricted response.
    pub fn restricted(ref_id: RefId) -> Self {
        Self::Restricted(RestrictedResponse { ref_id })
    }

    /// The same response carrying a chunk of the task's output (serialized as `output`). A restricted response
    /// carries none: output needs `READ`.
    pub fn with_output(mut self, chunk: Option<OutputChunk>) -> Self {
        let Some(chunk) = chunk else {
            return self;
        };
        let chunk = Some(Box::new(chunk));
        match &mut self {
            Self::Complete(c) => c.output = chunk,
            Self::Async(a) => a.output = chunk,
            Self::Preview(p) => p.output = chunk,
            Self::Restricted(_) => {}
        }
        self
    }

    /// The chunk of output this response carries, when it was asked for.
    pub fn output(&self) -> Option<&OutputChunk> {
        match self {
            Self::Complete(c) => c.output.as_deref(),
            Self::Async(a) => a.output.as_deref(),
            Self::Preview(p) => p.output.as_deref(),
            Self::Restricted(_) => None,
        }
    }

    /// The reference.
    pub fn ref_id(&self) -> &RefId {
        match self {
            Self::Complete(c) => &c.stored.ref_id,
            Self::Async(a) => &a.info.ref_id,
            Self::Preview(p) => &p.stored.ref_id,
            Self::Restricted(r) => &r.ref_id,
        }
    }

    /// The task's status (`complete` for a preview and a restricted answer too).
    pub fn status(&self) -> TaskStatus {
        match self {
            Self::Async(a) => a.info.status,
            _ => TaskStatus::Complete,
        }
    }

    /// Whether the whole value is here. `false` for a preview and for a restricted answer, although their task is
    /// complete ([`status`](Self::status) says so; the restricted wire shape says `"is_complete": true`, as the task
    /// is).
    pub fn is_complete(&self) -> bool {
        matches!(self, Self::Complete(_))
    }

    /// The whole value as its JSON text, when it is here. [`JsonText::to_value`] builds a tree of it,
    /// [`value_as`](Self::value_as) a typed value.
    pub fn value(&self) -> Option<&JsonText> {
        match self {
            Self::Complete(c) => Some(&c.stored.value),
            _ => None,
        }
    }

    /// The preview, when the value was too large to answer whole.
    pub fn preview_of(&self) -> Option<&Preview> {
        match self {
            Self::Preview(p) => Some(&p.preview),
            _ => None,
        }
    }

    /// The stored value and its metadata, when the whole value is here.
    pub fn stored(&self) -> Option<&Arc<StoredValue>> {
        match self {
            Self::Complete(c) => Some(&c.stored),
            _ => None,
        }
    }

    /// The value deserialized into `T`: `Ok(None)` while the task is not complete.
    pub fn value_as<T: DeserializeOwned>(&self) -> Result<Option<T>, RefCacheError> {
        self.value()
            .map(|v| {
                v.value_as::<T>().map_err(|e| RefCacheError::ValueType {
                    ref_id: self.ref_id().to_string(),
                    message: e.to_string(),
                })
            })
            .transpose()
    }

    /// The task record, when not complete.
    pub fn info(&self) -> Option<&TaskInfo> {
        match self {
            Self::Async(a) => Some(&a.info),
            _ => None,
        }
    }

    /// The failure, when the task failed.
    pub fn error(&self) -> Option<&TaskError> {
        self.info().and_then(|i| i.error.as_ref())
    }

    /// The message a poller sees.
    pub fn message(&self) -> String {
        match self {
            Self::Complete(_) => "Task completed successfully".to_owned(),
            Self::Async(a) => a.info.message(),
            Self::Preview(p) => p.message.clone(),
            Self::Restricted(r) => restricted_message(&r.ref_id),
        }
    }

    /// The format an async response answers in.
    pub fn format(&self) -> Option<AsyncResponseFormat> {
        match self {
            Self::Async(a) => Some(a.format),
            _ => None,
        }
    }

    /// The wire JSON as a tree. A complete value's text is parsed into it: for wire text, prefer
    /// [`to_json_string`](Self::to_json_string), which splices the text in as it is.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).expect("a response always serializes")
    }

    /// The wire JSON as compact text, the value's stored text spliced in unchanged (no tree is built).
    pub fn to_json_string(&self) -> String {
        serde_json::to_string(self).expect("a response always serializes")
    }
}

impl Serialize for CachedResponse {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Complete(c) => {
                let v = &c.stored;
                let mut map =
                    serializer.serialize_map(Some(6 + usize::from(c.output.is_some())))?;
                map.serialize_entry("ref_id", &v.ref_id)?;
                map.serialize_entry("value", &v.value)?;
                map.serialize_entry("is_complete", &true)?;
                map.serialize_entry("is_async", &false)?;
                map.serialize_entry("size", &v.size)?;
                map.serialize_entry("total_items", &v.total_items)?;
                if let Some(output) = &c.output {
                    map.serialize_entry("output", output)?;
                }
                map.end()
            }
            Self::Preview(p) => {
                let preview = &p.preview;
                let mut map = serializer.serialize_map(None)?;
                map.serialize_entry("ref_id", &p.stored.ref_id)?;
                map.serialize_entry("preview", &preview.value)?;
                map.serialize_entry("is_complete", &false)?;
                map.serialize_entry("is_async", &false)?;
                map.serialize_entry("preview_strategy", &preview.strategy)?;
                map.serialize_entry("total_items", &preview.total_items)?;
                map.serialize_entry("original_size", &preview.original_size)?;
                map.serialize_entry("preview_size", &preview.preview_size)?;
                if let (Some(page), Some(total_pages)) = (preview.page, preview.total_pages) {
                    map.serialize_entry("page", &page)?;
                    map.serialize_entry("total_pages", &total_pages)?;
                }
                map.serialize_entry("message", &p.message)?;
                if let Some(output) = &p.output {
                    map.serialize_entry("output", output)?;
                }
                map.end()
            }
            Self::Restricted(r) => {
                let mut map = serializer.serialize_map(Some(5))?;
                map.serialize_entry("ref_id", &r.ref_id)?;
                map.serialize_entry("status", &TaskStatus::Complete)?;
                map.serialize_entry("is_complete", &true)?;
                map.serialize_entry("is_async", &false)?;
                map.serialize_entry("message", &restricted_message(&r.ref_id))?;
                map.end()
            }
            Self::Async(a) => {
                let info = &a.info;
                let mut map = serializer.serialize_map(None)?;
                map.serialize_entry("ref_id", &info.ref_id)?;
                map.serialize_entry("status", &info.status)?;
                map.serialize_entry("is_complete", &false)?;
                map.serialize_entry("is_async", &true)?;
                if let Some(output) = &a.output {
                    map.serialize_entry("output", output)?;
                }
                if a.format == AsyncResponseFormat::Minimal {
                    return map.end();
                }
                map.serialize_entry("started_at", &info.started_at)?;
                map.serialize_entry("progress", &info.progress.as_ref().map(ProgressWire))?;
                map.serialize_entry("message", &info.message())?;
                if info.status == TaskStatus::InputRequired
                    && let Some(question) = &info.input_request
                {
                    map.serialize_entry("input_request", &QuestionWire(question))?;
                }
                if info.status == TaskStatus::Pending {
                    map.serialize_entry("queue_position", &info.queue_position)?;
                }
                if a.format == AsyncResponseFormat::Standard {
                    return map.end();
                }
                map.serialize_entry("eta_seconds", &info.eta_seconds())?;
                map.serialize_entry("error", &info.error.as_ref().map(|e| e.message.as_str()))?;
                if let Some(error) = &info.error {
                    if let Some(code) = &error.code {
                        map.serialize_entry("error_code", code)?;
                    }
                    if let Some(details) = &error.details {
                        map.serialize_entry("error_details", details)?;
                    }
                    if let Some(remediation) = &error.remediation {
                        map.serialize_entry("remediation", remediation)?;
                    }
                }
                map.serialize_entry("retry_count", &info.retry_count)?;
                map.serialize_entry("can_retry", &info.can_retry())?;
                map.serialize_entry("retry_history", &info.retry_history)?;
                map.serialize_entry("expected_schema", &a.expected_schema.as_deref())?;
                map.end()
            }
        }
    }
}

fn restricted_message(ref_id: &RefId) -> String {
    format!(
        "The task is complete, but its value is private to you (execute-only): pass \"{ref_id}\" as an argument \
         to a tool that takes it; the tool receives the value, you do not"
    )
}

/// `{key, message, schema, deadline}`: what a task asks, and the schema its answer must fit (not who may answer).
struct QuestionWire<'a>(&'a crate::model::input::InputRequest);

impl Serialize for QuestionWire<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let q = self.0;
        let mut map = serializer.serialize_map(Some(4))?;
        map.serialize_entry("key", &q.key)?;
        map.serialize_entry("message", &q.message)?;
        map.serialize_entry("schema", &q.schema)?;
        map.serialize_entry("deadline", &q.deadline)?;
        map.end()
    }
}

/// `{current, total, message, percentage}`.
struct ProgressWire<'a>(&'a crate::model::task::TaskProgress);

impl Serialize for ProgressWire<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let p = self.0;
        let mut map = serializer.serialize_map(Some(4))?;
        map.serialize_entry("current", &p.current)?;
        map.serialize_entry("total", &p.total)?;
        map.serialize_entry("message", &p.message)?;
        map.serialize_entry("percentage", &p.percentage())?;
        map.end()
    }
}
