//! The JSON API: list, get, output, cancel, retry, run a command. Each handler acts as the request's caller.

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::auth::Caller;
use super::error::WebError;
use super::fields::{Fields, MAX_FIELD_BYTES, within_limit};
use super::state::WebRefCache;
use super::summary::summary;
use crate::cache::poll::GetOptions;
use crate::cache::response::CachedResponse;
use crate::contract::backend::CancelOutcome;
use crate::contract::list::TaskFilter;
use crate::model::error::RefCacheError;
use crate::model::format::AsyncResponseFormat;
use crate::model::task::TaskStatus;

/// The most tasks one list answers.
pub(super) const MAX_LIST_LIMIT: usize = 100;
const DEFAULT_LIST_LIMIT: usize = 50;
/// The most arguments a command from the page may have.
const MAX_COMMAND_ARGS: usize = 64;

fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn answer(result: Result<Value, WebError>) -> Response {
    match result {
        Ok(body) => json_response(StatusCode::OK, &body),
        Err(e) => e.into_response(),
    }
}

/// The filter of a list request: `status`, `limit`, `cursor`.
pub(super) fn list_filter(fields: &Fields) -> Result<TaskFilter, WebError> {
    let limit = fields
        .number::<usize>("limit")?
        .unwrap_or(DEFAULT_LIST_LIMIT);
    if !(1..=MAX_LIST_LIMIT).contains(&limit) {
        return Err(WebError::bad(
            "limit",
            format!("{limit}: expected 1 to {MAX_LIST_LIMIT}"),
        ));
    }
    let mut filter = TaskFilter::all().limit(limit);
    if let Some(status) = fields.text("status") {
        let status = TaskStatus::from_name(status).ok_or_else(|| {
            WebError::bad(
                "status",
                format!(
                    "`{}`: expected pending, processing, input_required, complete, failed or cancelled",
                    crate::model::excerpt::excerpt(status, 40)
                ),
            )
        })?;
        filter = filter.status(status);
    }
    if let Some(cursor) = fields.text("cursor") {
        filter = filter.cursor(cursor);
    }
    Ok(filter)
}

/// `GET /api/tasks`.
pub(super) async fn list(
    State(web): State<WebRefCache>,
    Extension(Caller(actor)): Extension<Caller>,
    RawQuery(query): RawQuery,
) -> Response {
    answer(
        actor
            .scope(async {
                let filter = list_filter(&Fields::parse(query.as_deref())?)?;
                let page = web.cache.list_tasks(filter).await?;
                Ok(json!({
                    "tasks": page.tasks.iter().map(summary).collect::<Vec<_>>(),
                    "next_cursor": page.next_cursor,
                }))
            })
            .await,
    )
}

/// The options of a get: `page`, `page_size`, `max_size`, `full`, `output_offset`, `format`.
pub(super) fn get_options(fields: &Fields) -> Result<GetOptions, WebError> {
    let format = match fields.text("format") {
        Some(text) => text.parse::<AsyncResponseFormat>()?,
        None => AsyncResponseFormat::Full,
    };
    let mut options = GetOptions::default().format(format);
    if let Some(page) = fields.number("page")? {
        options = options.page(page);
    }
    if let Some(page_size) = fields.number("page_size")? {
        options = options.page_size(page_size);
    }
    if let Some(max_size) = fields.number("max_size")? {
        options = options.max_size(max_size);
    }
    if let Some(full) = fields.flag("full")? {
        options = options.full(full);
    }
    if let Some(offset) = fields.number("output_offset")? {
        options = options.output_offset(offset);
    }
    Ok(options)
}

/// What a get answers: `get_cached_result`'s wire shape, plus the task's summary while it has no value.
pub(super) fn response_json(response: &CachedResponse) -> Value {
    let mut json = response.to_json();
    if let (Some(info), Some(map)) = (response.info(), json.as_object_mut()) {
        map.insert("task".into(), summary(info));
    }
    json
}

/// `GET /api/tasks/{ref_id}`.
pub(super) async fn get(
    State(web): State<WebRefCache>,
    Extension(Caller(actor)): Extension<Caller>,
    Path(ref_id): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    answer(
        actor
            .scope(async {
                let options = get_options(&Fields::parse(query.as_deref())?)?;
                let response = web.cache.get_cached_result_with(&ref_id, &options).await?;
                Ok(response_json(&response))
            })
            .await,
    )
}

/// `GET /api/tasks/{ref_id}/output`.
pub(super) async fn output(
    State(web): State<WebRefCache>,
    Extension(Caller(actor)): Extension<Caller>,
    Path(ref_id): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    answer(
        actor
            .scope(async {
                let fields = Fields::parse(query.as_deref())?;
                let offset = fields.number::<u64>("offset")?.unwrap_or(0);
                let max = fields.number::<usize>("max_bytes")?;
                let chunk = web.cache.read_output(&ref_id, offset, max).await?;
                Ok(serde_json::to_value(chunk).unwrap_or_default())
            })
            .await,
    )
}

/// `POST /api/tasks/{ref_id}/cancel`: `{ref_id, status, message}`, as the MCP tool answers.
pub(super) async fn cancel(
    State(web): State<WebRefCache>,
    Extension(Caller(actor)): Extension<Caller>,
    Path(ref_id): Path<String>,
) -> Response {
    answer(
        actor
            .scope(async {
                let (status, message) = match web.cache.cancel_task(&ref_id).await? {
                    CancelOutcome::Cancelled => ("cancelled", "The task was cancelled".to_owned()),
                    CancelOutcome::AlreadyFinished(status) => (
                        status.as_str(),
                        format!("The task had already finished ({status}); nothing was cancelled"),
                    ),
                    _ => return Err(RefCacheError::NotFound.into()),
                };
                Ok(json!({"ref_id": ref_id, "status": status, "message": message}))
            })
            .await,
    )
}

/// The task as `GET /api/tasks/{ref_id}` answers it (full format), after a retry or an answer changed it.
async fn task_as_got(web: &WebRefCache, ref_id: &str) -> Result<Value, WebError> {
    let options = GetOptions::default().format(AsyncResponseFormat::Full);
    let response = web.cache.get_cached_result_with(ref_id, &options).await?;
    Ok(response_json(&response))
}

/// `POST /api/tasks/{ref_id}/retry`: the task as a get answers it after the restart.
pub(super) async fn retry(
    State(web): State<WebRefCache>,
    Extension(Caller(actor)): Extension<Caller>,
    Path(ref_id): Path<String>,
) -> Response {
    answer(
        actor
            .scope(async {
                web.cache.retry_task(&ref_id).await?;
                task_as_got(&web, &ref_id).await
            })
            .await,
    )
}

/// The body of an answer: JSON `{"response": {...}}`, as the MCP `respond_task` tool takes it.
pub(super) fn answer_field(body: &[u8]) -> Result<Value, WebError> {
    within_limit("body", body.len())?;
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        response: Value,
    }
    let parsed: Body = serde_json::from_slice(body).map_err(|e| {
        WebError::bad(
            "body",
            format!(
                "{}: expected {{\"response\": {{...}}}}, the answer as the question's schema describes it",
                crate::model::excerpt::excerpt(&e.to_string(), 200)
            ),
        )
    })?;
    Ok(parsed.response)
}

/// `POST /api/tasks/{ref_id}/respond`: answers the task's question, as the MCP `respond_task` tool does; the task
/// as a get answers it after the answer. An answer that does not fit the schema is `400` naming the field (the
/// task keeps waiting), a task that is not waiting `409` with its status, an unknown or foreign id `404`.
pub(super) async fn respond(
    State(web): State<WebRefCache>,
    Extension(Caller(actor)): Extension<Caller>,
    Path(ref_id): Path<String>,
    body: Bytes,
) -> Response {
    answer(
        actor
            .scope(async {
                let response = answer_field(&body)?;
                web.cache.respond(&ref_id, response).await?;
                task_as_got(&web, &ref_id).await
            })
            .await,
    )
}

/// A command as the page or a script sends it: JSON `{"command": "seq", "args": ["3"]}`, or a form with
/// `command` and one `args` field per line (the page's textarea).
pub(super) fn command_fields(
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(String, Vec<String>), WebError> {
    within_limit("body", body.len())?;
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let (command, args) = if is_json {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Body {
            command: String,
            #[serde(default)]
            args: Vec<String>,
        }
        let parsed: Body = serde_json::from_slice(body).map_err(|e| {
            WebError::bad(
                "body",
                format!(
                    "{}: expected {{\"command\": \"...\", \"args\": [\"...\"]}}",
                    crate::model::excerpt::excerpt(&e.to_string(), 200)
                ),
            )
        })?;
        (parsed.command, parsed.args)
    } else {
        let text =
            std::str::from_utf8(body).map_err(|_| WebError::bad("body", "not UTF-8 text"))?;
        let fields = Fields::parse(Some(text))?;
        let command = fields.text("command").unwrap_or("").trim().to_owned();
        let mut args: Vec<String> = Vec::new();
        for value in fields.all("args") {
            args.extend(
                value
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(str::to_owned),
            );
        }
        (command, args)
    };
    if command.is_empty() {
        return Err(WebError::bad(
            "command",
            "empty: name a program on the allowlist",
        ));
    }
    if command.len() > MAX_FIELD_BYTES || args.iter().any(|a| a.len() > MAX_FIELD_BYTES) {
        return Err(WebError::bad(
            "args",
            format!("a value is longer than the limit of {MAX_FIELD_BYTES} bytes"),
        ));
    }
    if args.len() > MAX_COMMAND_ARGS {
        return Err(WebError::bad(
            "args",
            format!(
                "{} arguments, more than the limit of {MAX_COMMAND_ARGS}",
                args.len()
            ),
        ));
    }
    Ok((command, args))
}

/// Starts a command through the server's runner, as the caller: the ref id of its task as soon as it is
/// submitted (the call itself goes on in the background, and the task with it).
pub(super) async fn start_command(
    web: &WebRefCache,
    actor: crate::model::actor::Actor,
    command: String,
    args: Vec<String>,
) -> Result<Value, WebError> {
    let runner = web.commands.clone().ok_or(WebError::NoCommands)?;
    if !runner.allowed().contains(&command) {
        return Err(WebError::bad(
            "command",
            format!(
                "`{}` is not allowed: this server runs only {}",
                crate::model::excerpt::excerpt(&command, 100),
                runner.allowed().join(", ")
            ),
        ));
    }
    let (tell, told) = tokio::sync::oneshot::channel::<crate::model::ref_id::RefId>();
    let tell = std::sync::Mutex::new(Some(tell));
    let on_submit: crate::cache::observe::OnSubmit = std::sync::Arc::new(move |ref_id| {
        if let Some(tell) = tell
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
        {
            let _ = tell.send(ref_id.clone());
        }
    });
    let call = runner.run(command, args);
    let (done, finished) = tokio::sync::oneshot::channel();
    tokio::spawn(
        actor.scope(crate::cache::observe::observe(on_submit, async move {
            let _ = done.send(call.await);
        })),
    );
    // Submitted (a new task, or one joined): its id. Answered without a submission (a hit, or an error): that.
    tokio::select! {
        biased;
        Ok(ref_id) = told => Ok(json!({"ref_id": ref_id, "url": format!("/tasks/{ref_id}")})),
        result = finished => match result {
            Ok(Ok(response)) => {
                let ref_id = response.ref_id().clone();
                Ok(json!({"ref_id": ref_id, "url": format!("/tasks/{ref_id}")}))
            }
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(RefCacheError::NotFound.into()),
        },
    }
}

/// `POST /api/commands`.
pub(super) async fn command(
    State(web): State<WebRefCache>,
    Extension(Caller(actor)): Extension<Caller>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let started = async {
        let (command, args) = command_fields(&headers, &body)?;
        start_command(&web, actor, command, args).await
    }
    .await;
    match started {
        Ok(body) => json_response(StatusCode::ACCEPTED, &body),
        Err(e) => e.into_response(),
    }
}
