//! MCP Tasks (SEP-2663, the `io.modelcontextprotocol/tasks` extension), answered from the RefCache.
//!
//! The task id is the ref id, so a task survives whatever the RefCache survives (a restart, another replica,
//! with a shared backend), unlike rmcp's in-memory `TaskManager`. The mapping:
//!
//! | refcache status          | MCP task status | payload                                                    |
//! |--------------------------|-----------------|------------------------------------------------------------|
//! | `pending`, `processing`  | `working`       | `statusMessage`: progress, %, ETA, latest output line      |
//! | `input_required`         | `input_required`| `inputRequests`: the question, as a form elicitation       |
//! | `complete`               | `completed`     | `result`: the tool result, as the call would have answered |
//! | `failed`                 | `failed`        | `error`: `{code: -32603, message, data: {ref_id, ...}}`    |
//! | `cancelled`              | `cancelled`     |                                                            |

use std::future::Future;

use rmcp::RoleServer;
use rmcp::model::{
    CancelTaskParams, CreateTaskResult, DetailedTask, GetTaskParams, GetTaskResult, JsonObject,
    Task, TaskPayload, TaskStatus as McpStatus,
};
use rmcp::service::RequestContext;
use serde_json::{Value, json};

use super::result::tool_result;
use super::server::{McpRefCache, RefCacheServer};
use super::status::status_line;
use crate::cache::RefCache;
use crate::contract::backend::CancelOutcome;
use crate::contract::registry;
use crate::model::error::RefCacheError;
use crate::model::record::TaskInfo;
use crate::model::task::{TaskStatus, Timestamp};

/// The JSON-RPC code of a failed task's error: internal error.
const TASK_FAILED: i64 = -32603;

/// The answer to a call that passed its `async_timeout`, for a client that declared the tasks extension.
pub(crate) fn created(mcp: &McpRefCache, cache: &RefCache, info: &TaskInfo) -> CreateTaskResult {
    CreateTaskResult::new(task_of(mcp, cache, info, McpStatus::Working))
}

/// The `tasks/get` handler: call it from your `ServerHandler::get_task`. An unknown id, an expired one and another
/// owner's all answer the same `-32602` error.
pub async fn get_task<S: RefCacheServer + ?Sized>(
    server: &S,
    request: GetTaskParams,
    context: RequestContext<RoleServer>,
) -> Result<GetTaskResult, rmcp::ErrorData> {
    let id = request.task_id;
    as_owner(server, &context, |mcp, cache| async move {
        let info = cache.task_info(&id).await.map_err(task_error)?;
        let payload = match info.status {
            TaskStatus::Pending | TaskStatus::Processing => TaskPayload::Working,
            TaskStatus::InputRequired => match &info.input_request {
                Some(request) => TaskPayload::InputRequired {
                    input_requests: input_requests(request)?,
                },
                None => TaskPayload::Working,
            },
            TaskStatus::Complete => {
                let response = cache.get_cached_result(&id).await.map_err(task_error)?;
                TaskPayload::Completed {
                    result: object(serde_json::to_value(tool_result(&response))),
                }
            }
            TaskStatus::Failed => TaskPayload::Failed {
                error: failure(&info),
            },
            TaskStatus::Cancelled => TaskPayload::Cancelled,
        };
        let task = task_of(mcp, cache, &info, payload.status());
        Ok(GetTaskResult::new(DetailedTask::new(task, payload)))
    })
    .await
}

/// The `tasks/update` handler: call it from your `ServerHandler::update_task`. Each `inputResponses` entry is an
/// elicitation result (`{"action": "accept", "content": {...}}`) for the question of that key; `content` is
/// checked against the question's schema (a bad one answers `-32602` naming the field, and the task keeps
/// waiting). As the spec asks, on a task that waits, a key that is not outstanding (an old question) is ignored and
/// acked; a task that no longer waits answers `-32602` naming its status, as `respond_task` does. `decline` or
/// `cancel` cancels the task. An unknown or foreign task answers `-32602`, the same for both.
pub async fn update_task<S: RefCacheServer + ?Sized>(
    server: &S,
    request: rmcp::model::UpdateTaskParams,
    context: RequestContext<RoleServer>,
) -> Result<(), rmcp::ErrorData> {
    let id = request.task_id;
    let responses = request.input_responses;
    as_owner(server, &context, |_, cache| async move {
        let info = cache.task_info(&id).await.map_err(task_error)?;
        let Some(question) = info
            .input_request
            .as_ref()
            .filter(|_| info.status == TaskStatus::InputRequired)
        else {
            return Err(not_waiting(&id, info.status));
        };
        let Some(response) = responses.get(&question.key) else {
            return Ok(());
        };
        let action = response.get("action").and_then(Value::as_str);
        match action {
            Some("accept") => {}
            Some("decline" | "cancel") => {
                cache.cancel_task(&id).await.map_err(task_error)?;
                return Ok(());
            }
            _ => {
                return Err(rmcp::ErrorData::invalid_params(
                    format!(
                        "inputResponses.{}: expected an elicitation result {{\"action\": \"accept\"|\"decline\"|\"cancel\", \"content\": {{...}}}}",
                        question.key
                    ),
                    None,
                ));
            }
        }
        let content = response.get("content").cloned().unwrap_or(Value::Null);
        match cache.respond(&id, content).await {
            Ok(()) => Ok(()),
            Err(RefCacheError::NotWaiting { status, .. }) => Err(not_waiting(&id, status)),
            Err(RefCacheError::InvalidAnswer { error, .. }) => Err(rmcp::ErrorData::invalid_params(
                format!("inputResponses.{}.content: {error}", question.key),
                None,
            )),
            Err(e) => Err(task_error(e)),
        }
    })
    .await
}

/// Runs `body` as the owner of the request, with the server's refcache.
async fn as_owner<'a, S, F, T>(
    server: &'a S,
    context: &RequestContext<RoleServer>,
    body: impl FnOnce(&'a McpRefCache, &'a RefCache) -> F,
) -> T
where
    S: RefCacheServer + ?Sized,
    F: Future<Output = T>,
{
    let mcp = server.refcache();
    mcp.caller(context).scope(body(mcp, mcp.cache())).await
}

/// The `tasks/cancel` handler: call it from your `ServerHandler::cancel_task`. One rule with the `cancel_task`
/// tool: a task the caller can see is acknowledged whatever its status (a working one is cancelled; a finished one
/// is left as it is, and `tasks/get` shows what it is), as the spec, rmcp's `TaskManager` and FastMCP do; an
/// unknown, expired or foreign id answers `-32602`.
pub async fn cancel_task<S: RefCacheServer + ?Sized>(
    server: &S,
    request: CancelTaskParams,
    context: RequestContext<RoleServer>,
) -> Result<(), rmcp::ErrorData> {
    let id = request.task_id;
    as_owner(server, &context, |_, cache| async move {
        match cache.cancel_task(&id).await.map_err(task_error)? {
            CancelOutcome::Cancelled | CancelOutcome::AlreadyFinished(_) => Ok(()),
            _ => Err(not_found()),
        }
    })
    .await
}

fn task_of(mcp: &McpRefCache, cache: &RefCache, info: &TaskInfo, status: McpStatus) -> Task {
    // The record's own clock: it moves with every status, progress, output line and question.
    let updated = info.updated_at.max(info.created_at);
    // `ttlMs` counts from creation; the value's TTL counts from the end: add the time until the last update.
    let ttl = registry::meta(&info.task_name)
        .and_then(|m| m.ttl())
        .unwrap_or(cache.default_ttl())
        + updated
            .0
            .duration_since(info.created_at.0)
            .unwrap_or_default();
    let mut task = Task::new(
        info.ref_id.to_string(),
        status,
        stamp(info.created_at),
        stamp(updated),
    )
    .with_ttl_ms(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX))
    .with_poll_interval_ms(u64::try_from(mcp.poll_interval().as_millis()).unwrap_or(u64::MAX));
    if !info.status.is_terminal() || info.status == TaskStatus::Failed {
        task = task.with_status_message(status_line(info));
    }
    task
}

/// The question as SEP-2663 carries it: one form elicitation under the question's key.
fn input_requests(
    request: &crate::model::input::InputRequest,
) -> Result<rmcp::model::InputRequests, rmcp::ErrorData> {
    let elicitation = json!({
        "method": "elicitation/create",
        "params": {"mode": "form", "message": request.message, "requestedSchema": request.schema},
    });
    let parsed: rmcp::model::InputRequest = serde_json::from_value(elicitation).map_err(|e| {
        rmcp::ErrorData::internal_error(
            format!("the task's question cannot be carried as an MCP elicitation: {e}"),
            None,
        )
    })?;
    Ok([(request.key.clone(), parsed)].into_iter().collect())
}

fn stamp(at: Timestamp) -> String {
    at.to_string()
}

fn failure(info: &TaskInfo) -> JsonObject {
    let error = info.error.as_ref();
    object(Ok(json!({
        "code": TASK_FAILED,
        "message": info.message(),
        "data": {
            "ref_id": info.ref_id,
            "error": error.map(|e| e.message.as_str()),
            "error_code": error.and_then(|e| e.code.as_deref()),
            "retry_count": info.retry_count,
            "can_retry": info.can_retry(),
        },
    })))
}

fn object(value: Result<Value, serde_json::Error>) -> JsonObject {
    match value {
        Ok(Value::Object(map)) => map,
        _ => JsonObject::new(),
    }
}

fn not_waiting(id: &str, status: TaskStatus) -> rmcp::ErrorData {
    rmcp::ErrorData::invalid_params(
        format!("task {id} is {status}, not waiting for input: there is no question to answer"),
        None,
    )
}

fn not_found() -> rmcp::ErrorData {
    rmcp::ErrorData::invalid_params(
        "unknown task: no task with this id is visible to you (it may never have existed, have expired, or \
         belong to someone else)",
        None,
    )
}

fn task_error(error: RefCacheError) -> rmcp::ErrorData {
    match error {
        RefCacheError::NotFound | RefCacheError::MalformedRefId { .. } => not_found(),
        other => rmcp::ErrorData::internal_error(other.to_string(), None),
    }
}
