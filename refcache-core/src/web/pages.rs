//! The HTML pages: the task list, a task page, the login form, and the script and style they load. Rendered here,
//! with the assets compiled in: no CDN, no build step, and the page works offline.

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::auth::{Caller, TOKEN_COOKIE, known_token};
use super::error::WebError;
use super::fields::{Fields, MAX_FIELDS_BYTES};
use super::html::{error_page, esc, login_box, page};
use super::state::WebRefCache;
use super::summary::{short_name, summary};
use crate::contract::list::TaskFilter;
use crate::model::record::TaskInfo;

const SCRIPT: &str = include_str!("assets/app.js");
const STYLE: &str = include_str!("assets/style.css");

/// `GET /login`.
pub(super) async fn login_form() -> Response {
    page(StatusCode::OK, "sign in", &login_box(""))
}

/// `POST /login`: a known token sets the cookie and goes to the list; another gets the form again, `401`.
pub(super) async fn login(State(web): State<WebRefCache>, body: Bytes) -> Response {
    if body.len() > MAX_FIELDS_BYTES {
        return error_page(&WebError::bad("token", "too long"));
    }
    let fields = match Fields::parse(std::str::from_utf8(&body).ok()) {
        Ok(fields) => fields,
        Err(e) => return error_page(&e),
    };
    let token = fields.text("token").unwrap_or("");
    if !known_token(&web, token) || token.contains([';', ',', ' ', '\r', '\n']) {
        return page(
            StatusCode::UNAUTHORIZED,
            "sign in",
            &login_box("<p class=\"bad\">Unknown token.</p>"),
        );
    }
    let cookie = format!("{TOKEN_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict");
    let mut response = (StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

/// `GET /assets/app.js`.
pub(super) async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        SCRIPT,
    )
        .into_response()
}

/// `GET /assets/style.css`.
pub(super) async fn style() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE).into_response()
}

fn row(info: &TaskInfo) -> String {
    let json = summary(info).to_string();
    format!(
        "<tr class=\"task\" data-ref=\"{id}\" data-status=\"{status}\" data-task=\"{json}\"><td><a href=\"/tasks/{id}\">{name}</a></td>\
         <td class=\"status\">{status}</td><td class=\"progress\"></td><td class=\"pct\"></td><td class=\"eta\"></td>\
         <td class=\"age\"></td><td class=\"message\">{message}</td><td class=\"actions\"></td></tr>",
        id = esc(info.ref_id.as_str()),
        status = info.status.as_str(),
        json = esc(&json),
        name = esc(short_name(&info.task_name)),
        message = esc(&info.message()),
    )
}

/// `GET /`: the caller's tasks, live.
pub(super) async fn list(
    State(web): State<WebRefCache>,
    Extension(Caller(actor)): Extension<Caller>,
    RawQuery(query): RawQuery,
) -> Response {
    let fields = match Fields::parse(query.as_deref()) {
        Ok(fields) => fields,
        Err(e) => return error_page(&e),
    };
    let status = fields.text("status").unwrap_or("");
    let page_ = actor
        .scope(
            web.cache
                .list_tasks(TaskFilter::all().limit(super::api::MAX_LIST_LIMIT)),
        )
        .await;
    let tasks = match page_ {
        Ok(page) => page.tasks,
        Err(e) => return error_page(&e.into()),
    };
    let rows: String = tasks.iter().map(row).collect();
    let options: String = [
        "",
        "pending",
        "processing",
        "input_required",
        "complete",
        "failed",
        "cancelled",
    ]
    .iter()
    .map(|s| {
        let label = if s.is_empty() { "all" } else { s };
        let selected = if *s == status { " selected" } else { "" };
        format!("<option value=\"{s}\"{selected}>{label}</option>")
    })
    .collect();
    let form = match &web.commands {
        Some(runner) => format!(
            "<form id=\"run\" class=\"run\"><h2>Run a command</h2><label>Program <select name=\"command\" \
             id=\"command\">{}</select></label> <label>Arguments, one per line <textarea name=\"args\" \
             id=\"args\" rows=\"2\"></textarea></label> <button id=\"run-button\">Run</button> <span \
             id=\"run-error\" class=\"bad\"></span></form>",
            runner
                .allowed()
                .iter()
                .map(|p| format!("<option>{}</option>", esc(p)))
                .collect::<String>()
        ),
        None => String::new(),
    };
    let body = format!(
        "<section id=\"list\" data-live=\"closed\">{form}<div class=\"bar\"><h1>Your tasks</h1> <label>Status \
         <select id=\"filter\">{options}</select></label> <span id=\"live\" class=\"live\">connecting</span></div>\
         <table id=\"tasks\"><thead><tr><th>Task</th><th>Status</th><th>Progress</th><th>%</th><th>ETA</th>\
         <th>Age</th><th>Message</th><th></th></tr></thead><tbody>{rows}</tbody></table>\
         <p id=\"empty\" class=\"empty\">No tasks yet.</p></section>"
    );
    page(StatusCode::OK, "tasks", &body)
}

/// `GET /tasks/{ref_id}`: one task, live. An unknown id and another owner's get the same `404`. A task waiting
/// for input shows its question with a form built (by the script) from the question's schema, and a raw-JSON
/// answer box for anything the form does not cover.
pub(super) async fn task(
    State(web): State<WebRefCache>,
    Extension(Caller(actor)): Extension<Caller>,
    Path(ref_id): Path<String>,
) -> Response {
    let info = actor.scope(web.cache.task_info(&ref_id)).await;
    let info = match info {
        Ok(info) => info,
        Err(e) => return error_page(&e.into()),
    };
    let json = summary(&info).to_string();
    let body = format!(
        "<section id=\"task\" data-ref=\"{id}\" data-task=\"{json}\" data-live=\"closed\">\
         <div class=\"bar\"><h1 id=\"name\">{name}</h1> <span id=\"status\" class=\"status\">{status}</span> \
         <span id=\"live\" class=\"live\">connecting</span> <button id=\"cancel\">Cancel</button> \
         <button id=\"retry\">Retry</button></div>\
         <p class=\"ref\"><code>{id}</code></p>\
         <div class=\"meter\"><div id=\"bar\" class=\"fill\"></div></div> <span id=\"pct\"></span> <span id=\"eta\"></span>\
         <p id=\"message\" class=\"message\">{message}</p>\
         <section id=\"answer\" class=\"answer\" hidden><h2>Input required</h2><p id=\"question\"></p>\
         <form id=\"answer-form\"><div id=\"answer-fields\" class=\"fields\"></div>\
         <details id=\"raw\"><summary>Answer as JSON</summary><textarea id=\"answer-json\" rows=\"4\" \
         spellcheck=\"false\"></textarea></details>\
         <button id=\"answer-button\">Send the answer</button> <span id=\"answer-error\" class=\"bad\"></span>\
         </form></section>\
         <section id=\"failure\" class=\"failure\" hidden><h2>Error</h2><p id=\"error\"></p><p id=\"hint\" class=\"hint\"></p></section>\
         <h2>Output</h2><pre id=\"output\" class=\"terminal\" tabindex=\"0\"></pre>\
         <p id=\"dropped\" class=\"note\"></p>\
         <section id=\"result\" hidden><h2>Result</h2><p id=\"result-note\" class=\"note\"></p>\
         <nav id=\"pages\" class=\"pages\"></nav><pre id=\"value\" class=\"value\"></pre></section></section>",
        id = esc(info.ref_id.as_str()),
        json = esc(&json),
        name = esc(short_name(&info.task_name)),
        status = info.status.as_str(),
        message = esc(&info.message()),
    );
    page(StatusCode::OK, short_name(&info.task_name), &body)
}
