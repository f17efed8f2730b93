//! The HTML frame of every page, and the error and sign-in pages.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::error::WebError;

/// Escapes text for HTML content and attribute values.
pub(super) fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

pub(super) fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · refcache</title><link rel=\"stylesheet\" href=\"/assets/style.css\"></head>\
         <body><header><a href=\"/\" class=\"brand\">refcache</a> <span class=\"title\">{title}</span></header>\
         <main>{body}</main><script src=\"/assets/app.js\"></script></body></html>\n",
        title = esc(title),
    );
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        html,
    )
        .into_response()
}

/// The error page: the same for an unknown id and another owner's.
pub(super) fn error_page(error: &WebError) -> Response {
    let body = format!(
        "<section class=\"error-page\"><h1>{}</h1><p id=\"error\">{}</p><p><a href=\"/\">Your tasks</a></p></section>",
        error.status().as_u16(),
        esc(&error.text())
    );
    page(error.status(), "error", &body)
}

/// `401`, with the way to sign in.
pub(super) fn unauthorized(error: &WebError) -> Response {
    let body = format!(
        "<section class=\"error-page\"><h1>401</h1><p id=\"error\">{}</p>{}</section>",
        esc(&error.text()),
        login_box("")
    );
    page(StatusCode::UNAUTHORIZED, "sign in", &body)
}

pub(super) fn login_box(note: &str) -> String {
    format!(
        "<form method=\"post\" action=\"/login\" class=\"login\"><label>Token <input type=\"password\" \
         name=\"token\" id=\"token\" autocomplete=\"current-password\"></label> <button id=\"sign-in\">Sign \
         in</button>{note}</form>"
    )
}
