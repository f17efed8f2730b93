//! The live task page and its JSON API (feature `web`): an axum router to mount beside `/mcp`, or on a port of its
//! own.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use refcache_core::{Actor, RefCache};
//! use refcache_core::web::WebRefCache;
//!
//! let cache = RefCache::new();
//! let web = WebRefCache::new(cache).with_token("token-a", Actor::user("alice"));
//! let app = axum::Router::new() // `/mcp` and your other routes
//!     .merge(refcache_core::web::router(web));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8765").await?;
//! axum::serve(listener, app).await?;
//! # Ok(()) }
//! ```
//!
//! # Who is asking
//! The page serves the same owners as MCP ([`Actor::as_principal`](crate::Actor::as_principal)), so a person sees on the page the tasks their
//! agent started over MCP, and the two share executions. The caller is, in this order:
//! 1. the principal an auth layer put into the request's extensions (an [`Actor`](crate::Actor) with an id), as MCP reads it;
//! 2. with tokens configured ([`WebRefCache::with_token`]): the user of the bearer token (`Authorization: Bearer`),
//!    or of the `refcache_token` cookie that `POST /login` sets. Neither: `401`;
//! 3. with no tokens: a browser session of its own (a random `refcache_session` cookie), so that two browsers
//!    never see each other's tasks.
//!
//! Cookies are `HttpOnly` and `SameSite=Strict`. On top of that, a request that changes something (every `POST`)
//! and is not signed with a bearer token must come from this server's own page: its `Sec-Fetch-Site` is
//! `same-origin`, or (for a browser that does not send it) its `Origin` names this server's `Host` or an origin
//! given to [`WebRefCache::with_origin`]. Anything else, a request with neither header included, gets `403`
//! naming what it lacks, so another site cannot cancel, retry, answer or start anything in the user's name, even
//! in a browser that sends the cookie (an old browser, a same-site subdomain). A bearer token is never added by a
//! browser on its own, so scripts that send one need neither header.
//!
//! # Routes
//! - `GET /`: the task list; `GET /tasks/{ref_id}`: a task page; `GET /login`, `POST /login` (with tokens).
//! - `GET /api/tasks?status=&limit=&cursor=`: the caller's tasks, newest first.
//! - `GET /api/tasks/{ref_id}?page=&page_size=&max_size=&full=&output_offset=`: what `get_cached_result` answers.
//! - `GET /api/tasks/{ref_id}/output?offset=&max_bytes=`: an [`OutputChunk`](crate::OutputChunk).
//! - `GET /api/tasks/{ref_id}/events`: server-sent events: `status` (the task's summary, on each change),
//!   `output` (a chunk, its `id` the offset after it: a reconnect with `Last-Event-ID` goes on from there) and
//!   `end`.
//! - `GET /api/events`: server-sent `task` events, one per task that appeared or changed.
//! - `POST /api/tasks/{ref_id}/cancel`, `POST /api/tasks/{ref_id}/retry`.
//! - `POST /api/tasks/{ref_id}/respond`: `{"response": {"confirm": true}}` answers an `input_required` task's
//!   question, as the MCP `respond_task` tool does (the task page shows a form built from the question's schema).
//! - `POST /api/commands` (with a [`CommandRunner`]): `{"command": "seq", "args": ["3"]}` starts a command.
//!
//! Errors mirror the MCP tools': an unknown id and another owner's answer the same `404`; a bad field `400`, with
//! its name (an answer that does not fit the question names the field); a task that cannot be retried, or that is not
//! waiting for an answer, `409` with its status. Bodies are `{"error": "..."}`.

mod api;
mod auth;
mod error;
mod events;
mod fanout;
mod fields;
mod html;
mod pages;
mod state;
mod summary;

use axum::Router;
use axum::routing::{get, post};

pub use error::WebError;
pub use state::{CommandRunner, WebRefCache};

/// The page and the JSON API, as a router to merge into a server's.
pub fn router<S: Clone + Send + Sync + 'static>(web: WebRefCache) -> Router<S> {
    Router::new()
        .route("/", get(pages::list))
        .route("/tasks/{ref_id}", get(pages::task))
        .route("/login", get(pages::login_form).post(pages::login))
        .route("/assets/app.js", get(pages::script))
        .route("/assets/style.css", get(pages::style))
        .route("/api/tasks", get(api::list))
        .route("/api/tasks/{ref_id}", get(api::get))
        .route("/api/tasks/{ref_id}/output", get(api::output))
        .route("/api/tasks/{ref_id}/events", get(events::task))
        .route("/api/tasks/{ref_id}/cancel", post(api::cancel))
        .route("/api/tasks/{ref_id}/retry", post(api::retry))
        .route("/api/tasks/{ref_id}/respond", post(api::respond))
        .route("/api/events", get(events::list))
        .route("/api/commands", post(api::command))
        .layer(axum::middleware::from_fn_with_state(
            web.clone(),
            auth::identify,
        ))
        .with_state(web)
}
