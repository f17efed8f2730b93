//! The ready-made tools: `get_cached_result`, `cancel_task`, `list_tasks`, `retry_task` and `respond_task`.

use std::panic::AssertUnwindSafe;

use futures::FutureExt;
use futures::future::BoxFuture;
use rmcp::handler::server::common::schema_for_input;
use rmcp::handler::server::router::tool::{ToolRoute, ToolRouter};
use rmcp::handler::server::tool::ToolCallContext;
use rmcp::model::{CallToolResponse, CallToolResult, Tool, ToolAnnotations};
use schemars::JsonSchema;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::format::FormatOverride;
use super::result::{error_result, error_text, json_result, tool_result};
use super::server::RefCacheServer;
use crate::cache::poll::GetOptions;
use crate::contract::backend::CancelOutcome;
use crate::contract::list::TaskFilter;
use crate::model::error::RefCacheError;
use crate::model::record::TaskInfo;
use crate::model::task::TaskStatus;

/// The description of `get_cached_result`: it teaches an agent the polling workflow.
pub const GET_CACHED_RESULT_DESCRIPTION: &str = "\
Poll a long-running tool call, or page through a large result, by its ref_id.

Some tools answer at once with {\"ref_id\", \"status\": \"processing\", \"is_async\": true} instead of their \
result: the work goes on in the background. Call get_cached_result with that ref_id every few seconds. While \
the task runs it answers its status, progress and message; when it is done it answers the value \
(\"is_complete\": true), or, for a large value, a preview with a message that says how to see the rest: pass \
page (from 1) and page_size to page through it, or full=true for the whole value. A failed task answers its \
error (retry it with retry_task); a cancelled one says so. Pass _async_response_format=\"full\" for ETA, retry \
history and error details. A task that prints output (such as a command) answers it from output_offset (start at 0): {\"output\": {\"offset\", \"next_offset\", \"dropped\", \"text\", \"done\"}}; pass next_offset back as output_offset to read on. Do not call the original tool again to check on it.";

/// The description of `cancel_task`.
pub const CANCEL_TASK_DESCRIPTION: &str = "\
Cancel a running or queued task by its ref_id (from a tool that answered \"status\": \"processing\"). The work \
stops, and polling the ref_id answers \"cancelled\". A task that already finished is left as it is.";

/// The description of `list_tasks`.
pub const LIST_TASKS_DESCRIPTION: &str = "\
List your tasks, newest first: ref_id, tool, status, progress and message. Filter by status (pending, \
processing, input_required, complete, failed, cancelled); limit is the page size (1 to 100, default 20); pass \
next_cursor back as cursor for the next page. Poll a task's result with get_cached_result. A server that cannot \
tell callers apart lists none, and its message says why.";

/// What `list_tasks` answers, beside an empty list, to a caller it cannot tell from others.
const ANONYMOUS_LIST: &str = "No tasks are listed: this server cannot tell callers apart (stateless HTTP without \
authentication), so it lists nobody's tasks rather than show you someone else's. Your tasks still run: keep the \
ref_id each tool answered and poll it with get_cached_result. To list your tasks, connect with the server's \
authentication (a bearer token) or over stdio.";

/// The description of `retry_task`.
pub const RETRY_TASK_DESCRIPTION: &str = "\
Run a failed task again, under the same ref_id, with the same arguments. Then poll the ref_id with \
get_cached_result. Only a failed task can be retried.";

/// Arguments of `get_cached_result`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GetCachedResultArgs {
    /// The reference a tool answered, such as `refcache:0f8e2c1d9a7b4c3e8f6a5b4c3d2e1f0a`.
    pub ref_id: String,
    /// The page of a large value to answer, from 1.
    #[serde(default, deserialize_with = "page")]
    #[schemars(with = "Option<usize>")]
    pub page: Option<usize>,
    /// Items per page (default 20).
    #[serde(default, deserialize_with = "page_size")]
    #[schemars(with = "Option<usize>")]
    pub page_size: Option<usize>,
    /// The largest answer to accept whole, in the server's size measure (tokens by default).
    #[serde(default, deserialize_with = "max_size")]
    #[schemars(with = "Option<usize>")]
    pub max_size: Option<usize>,
    /// Answer the whole value, however large.
    pub full: Option<bool>,
    /// Also answer the task's output from this byte offset (0: from the start; then the `next_offset` of the last
    /// answer).
    #[serde(default, deserialize_with = "output_offset")]
    #[schemars(with = "Option<u64>")]
    pub output_offset: Option<u64>,
}

/// A whole number of 0 or more for argument `name`, or a message that names the argument, what it takes, and
/// (briefly) what came: serde's own message names neither the argument nor its meaning.
fn whole<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
    name: &str,
    meaning: &str,
) -> Result<Option<u64>, D::Error> {
    let value = Option::<Value>::deserialize(deserializer)?;
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) if n.as_u64().is_some() => Ok(n.as_u64()),
        Some(other) => {
            let shown = crate::model::excerpt::excerpt(&other.to_string(), 40).into_owned();
            Err(serde::de::Error::custom(format!(
                "invalid {name} {shown}: expected {meaning}"
            )))
        }
    }
}

fn usize_arg<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
    name: &str,
    meaning: &str,
) -> Result<Option<usize>, D::Error> {
    whole(deserializer, name, meaning)?
        .map(|n| {
            usize::try_from(n).map_err(|_| {
                serde::de::Error::custom(format!("invalid {name} {n}: expected {meaning}"))
            })
        })
        .transpose()
}

fn page<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    usize_arg(d, "page", "a page number, from 1")
}

fn page_size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    usize_arg(d, "page_size", "a whole number of items per page")
}

fn max_size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    usize_arg(
        d,
        "max_size",
        "a whole number, in the server's size measure",
    )
}

fn output_offset<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    whole(
        d,
        "output_offset",
        "a byte offset of 0 or more (0 for the start, then the next_offset of the last answer)",
    )
}

/// Arguments of `cancel_task` and `retry_task`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RefIdArgs {
    /// The task's reference.
    pub ref_id: String,
}

/// The description of `respond_task`.
pub const RESPOND_TASK_DESCRIPTION: &str = "\
Answer the question of a task that waits for input (get_cached_result answers \"status\": \"input_required\" and \
\"input_request\": {\"key\", \"message\", \"schema\"}). response is a JSON object that fits the question's schema, such as \
{\"confirm\": true}. An answer that does not fit is refused naming the field, and the task keeps waiting. Then \
poll the ref_id with get_cached_result.";

/// Arguments of `respond_task`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RespondTaskArgs {
    /// The waiting task's reference.
    pub ref_id: String,
    /// The answer: a JSON object that fits the question's schema.
    pub response: Value,
}

/// Arguments of `list_tasks`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListTasksArgs {
    /// Only tasks with this status: `pending`, `processing`, `input_required`, `complete`, `failed` or
    /// `cancelled`.
    pub status: Option<String>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// How many tasks per page, 1 to 100 (default 20).
    pub limit: Option<usize>,
}

/// The most `list_tasks` answers per page.
const MAX_LIST_LIMIT: usize = 100;
/// What `list_tasks` answers per page when not told.
const DEFAULT_LIST_LIMIT: usize = 20;

/// The ready-made tools, for any server `S`. Merge them into the server's router:
/// `Self::tool_router() + refcache::mcp::tool_router::<Self>()`.
pub fn tool_router<S: RefCacheServer>() -> ToolRouter<S> {
    ToolRouter::new()
        .with_route(ToolRoute::new_dyn(
            tool::<GetCachedResultArgs>("get_cached_result", GET_CACHED_RESULT_DESCRIPTION, true),
            get_cached_result::<S>,
        ))
        .with_route(ToolRoute::new_dyn(
            tool::<RespondTaskArgs>("respond_task", RESPOND_TASK_DESCRIPTION, false),
            respond_task::<S>,
        ))
        .with_route(ToolRoute::new_dyn(
            tool::<RefIdArgs>("cancel_task", CANCEL_TASK_DESCRIPTION, false),
            cancel_task::<S>,
        ))
        .with_route(ToolRoute::new_dyn(
            tool::<ListTasksArgs>("list_tasks", LIST_TASKS_DESCRIPTION, true),
            list_tasks::<S>,
        ))
        .with_route(ToolRoute::new_dyn(
            tool::<RefIdArgs>("retry_task", RETRY_TASK_DESCRIPTION, false),
            retry_task::<S>,
        ))
}

fn tool<T: JsonSchema + 'static>(
    name: &'static str,
    description: &'static str,
    read_only: bool,
) -> Tool {
    let schema = schema_for_input::<T>().expect("the argument types are JSON objects");
    Tool::new(name, description, schema).with_annotations(
        ToolAnnotations::new()
            .read_only(read_only)
            .destructive(false),
    )
}

type ToolFuture<'a> = BoxFuture<'a, Result<CallToolResponse, rmcp::ErrorData>>;

/// Runs `body` with the tool's arguments, as the request's owner; bad arguments are a tool error naming the tool.
fn serve<'a, S, A, F>(
    name: &'static str,
    mut ctx: ToolCallContext<'a, S>,
    body: F,
) -> ToolFuture<'a>
where
    S: RefCacheServer,
    A: DeserializeOwned + Send + 'a,
    F: FnOnce(&'a S, A, FormatOverride) -> BoxFuture<'a, CallToolResult> + Send + 'a,
{
    Box::pin(async move {
        let format = FormatOverride::take(&mut ctx.arguments);
        let args = Value::Object(ctx.arguments.take().unwrap_or_default());
        let args = match A::deserialize(args) {
            Ok(args) => args,
            Err(e) => {
                // serde's text may quote the whole offending value: a short prefix of it.
                let e = e.to_string();
                let e = crate::model::excerpt::excerpt(&e, 300);
                return Ok(error_text(format!("invalid arguments for {name}: {e}")).into());
            }
        };
        let server = ctx.service;
        let actor = server.refcache().caller(&ctx.request_context);
        // rmcp does not catch panics: an uncaught one would leave the request unanswered.
        match AssertUnwindSafe(actor.scope(body(server, args, format)))
            .catch_unwind()
            .await
        {
            Ok(result) => Ok(result.into()),
            Err(panic) => {
                tracing::error!(panic = %crate::model::task::TaskError::panicked(panic.as_ref()), "{name} panicked");
                Ok(error_text(format!(
                    "internal error: {name} failed; see the server's log"
                ))
                .into())
            }
        }
    })
}

fn get_cached_result<S: RefCacheServer>(ctx: ToolCallContext<'_, S>) -> ToolFuture<'_> {
    serve(
        "get_cached_result",
        ctx,
        |server, args: GetCachedResultArgs, format| {
            Box::pin(async move {
                let mut options = GetOptions::default();
                match format.get() {
                    Ok(Some(f)) => options = options.format(f),
                    Ok(None) => {}
                    Err(e) => return error_result(&e),
                }
                if let Some(page) = args.page {
                    options = options.page(page);
                }
                if let Some(page_size) = args.page_size {
                    options = options.page_size(page_size);
                }
                if let Some(max_size) = args.max_size {
                    options = options.max_size(max_size);
                }
                if let Some(full) = args.full {
                    options = options.full(full);
                }
                if let Some(offset) = args.output_offset {
                    options = options.output_offset(offset);
                }
                match server
                    .refcache()
                    .cache()
                    .get_cached_result_with(&args.ref_id, &options)
                    .await
                {
                    Ok(response) => tool_result(&response),
                    Err(e) => error_result(&e),
                }
            })
        },
    )
}

fn cancel_task<S: RefCacheServer>(ctx: ToolCallContext<'_, S>) -> ToolFuture<'_> {
    serve("cancel_task", ctx, |server, args: RefIdArgs, _| {
        Box::pin(async move {
            let outcome = match server.refcache().cache().cancel_task(&args.ref_id).await {
                Ok(outcome) => outcome,
                Err(e) => return error_result(&e),
            };
            let (status, message) = match outcome {
                CancelOutcome::Cancelled => ("cancelled", "The task was cancelled".to_owned()),
                CancelOutcome::AlreadyFinished(status) => (
                    status.as_str(),
                    format!("The task had already finished ({status}); nothing was cancelled"),
                ),
                _ => return error_result(&RefCacheError::NotFound),
            };
            json_result(json!({"ref_id": args.ref_id, "status": status, "message": message}))
        })
    })
}

fn respond_task<S: RefCacheServer>(ctx: ToolCallContext<'_, S>) -> ToolFuture<'_> {
    serve("respond_task", ctx, |server, args: RespondTaskArgs, _| {
        Box::pin(async move {
            let cache = server.refcache().cache();
            if let Err(e) = cache.respond(&args.ref_id, args.response).await {
                return error_result(&e);
            }
            match cache.get_cached_result(&args.ref_id).await {
                Ok(response) => tool_result(&response),
                Err(e) => error_result(&e),
            }
        })
    })
}

fn retry_task<S: RefCacheServer>(ctx: ToolCallContext<'_, S>) -> ToolFuture<'_> {
    serve("retry_task", ctx, |server, args: RefIdArgs, _| {
        Box::pin(async move {
            let cache = server.refcache().cache();
            if let Err(e) = cache.retry_task(&args.ref_id).await {
                return error_result(&e);
            }
            match cache.get_cached_result(&args.ref_id).await {
                Ok(response) => tool_result(&response),
                Err(e) => error_result(&e),
            }
        })
    })
}

fn list_tasks<S: RefCacheServer>(ctx: ToolCallContext<'_, S>) -> ToolFuture<'_> {
    let owner = ctx.service.refcache().owner(&ctx.request_context);
    serve("list_tasks", ctx, move |server, args: ListTasksArgs, _| {
        Box::pin(async move {
            let limit = args.limit.unwrap_or(DEFAULT_LIST_LIMIT);
            if !(1..=MAX_LIST_LIMIT).contains(&limit) {
                return error_text(format!(
                    "invalid limit {limit}: list_tasks answers 1 to {MAX_LIST_LIMIT} tasks per page"
                ));
            }
            let mut filter = TaskFilter::all().limit(limit);
            if let Some(status) = &args.status {
                match TaskStatus::from_name(status) {
                    Some(status) => filter = filter.status(status),
                    None => {
                        return error_text(format!(
                            "invalid status `{status}`: expected pending, processing, input_required, complete, failed or cancelled"
                        ));
                    }
                }
            }
            if !owner.is_identified() {
                // Not an error: the first look of a new user must not fail. An empty list, and why.
                return json_result(json!({
                    "tasks": [],
                    "next_cursor": null,
                    "message": ANONYMOUS_LIST,
                }));
            }
            if let Some(cursor) = args.cursor {
                filter = filter.cursor(cursor);
            }
            match server.refcache().cache().list_tasks(filter).await {
                Ok(page) => json_result(json!({
                    "tasks": page.tasks.iter().map(summary).collect::<Vec<_>>(),
                    "next_cursor": page.next_cursor,
                })),
                Err(e) => error_result(&e),
            }
        })
    })
}

fn summary(info: &TaskInfo) -> Value {
    json!({
        "ref_id": info.ref_id,
        "tool": tool_name(&info.task_name),
        "status": info.status,
        "message": info.message(),
        "progress": info.progress.as_ref().map(|p| json!({
            "current": p.current, "total": p.total, "message": p.message, "percentage": p.percentage(),
        })),
        "created_at": info.created_at,
        "finished_at": info.finished_at,
    })
}

/// The tool's name from a task name (`my_server::Server::slow_square` → `slow_square`).
fn tool_name(task_name: &str) -> &str {
    task_name.rsplit("::").next().unwrap_or(task_name)
}
