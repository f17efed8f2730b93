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
//! The page serves the same owners as MCP ([`Actor::as_principal`]), so a person sees on the page the tasks their
//! agent started over MCP, and the two share executions. The caller is, in this order:
//! 1. the principal an auth layer put into the request's extensions (an [`Actor`] with an id), as MCP reads it;
//! 2. with tokens configured ([`WebRefCache::with_token`]): the user of the bearer token (`Authorization: Bearer`),
//!    or of the `refcache_token` cookie that `POST /login` sets. Neither: `401`;
//! 3. with no tokens: a browser session of its own (a random `refcache_session` cookie), so that two browsers
//!    never see each other's tasks.
//!
//! Cookies are `HttpOnly` and `SameSite=Strict`: another site cannot make the browser send them, so it cannot
//! cancel or start anything in the user's name.
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
//! - `POST /api/commands` (with a [`CommandRunner`]): `{"command": "seq", "args": ["3"]}` starts a command.
//!
//! Errors mirror the MCP tools': an unknown id and another owner's answer the same `404`; a bad field `400`, with
//! its name; a task that cannot be retried `409`. Bodies are `{"error": "..."}`.

mod api;
mod auth;
mod error;
mod events;
mod fields;
mod pages;
mod summary;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use crate::cache::RefCache;
use crate::cache::response::CachedResponse;
use crate::model::actor::Actor;
use crate::model::error::RefCacheError;

pub use error::WebError;

/// Runs a command for the page's "Run a command" form: the server's own cached function, the one its MCP tool
/// calls, so that the page and MCP share executions. It is called as the page's caller (in that actor's scope)
/// and must refuse any program that is not on its allowlist.
pub trait CommandRunner: Send + Sync + 'static {
    /// The programs it runs, shown on the form.
    fn allowed(&self) -> Vec<String>;

    /// Runs `command` with `args`: the cached call's answer (usually a processing reference).
    fn run(
        &self,
        command: String,
        args: Vec<String>,
    ) -> BoxFuture<'static, Result<CachedResponse, RefCacheError>>;
}

/// What the page serves: the cache, who may ask, and the commands it may start. Cheap to clone.
#[derive(Clone)]
pub struct WebRefCache {
    cache: RefCache,
    tokens: Option<Arc<HashMap<String, Actor>>>,
    commands: Option<Arc<dyn CommandRunner>>,
    stop: CancellationToken,
}

impl std::fmt::Debug for WebRefCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebRefCache")
            .field("cache", &self.cache)
            .field("tokens", &self.tokens.as_ref().map(|t| t.len()))
            .field("commands", &self.commands.is_some())
            .finish_non_exhaustive()
    }
}

impl WebRefCache {
    /// Serves `cache`, with no tokens (each browser a session of its own, unless an auth layer names the
    /// principal) and no commands.
    pub fn new(cache: RefCache) -> Self {
        Self {
            cache,
            tokens: None,
            commands: None,
            stop: CancellationToken::new(),
        }
    }

    /// Accepts `token` (as a bearer token, or through the login form's cookie) for `principal`. Once a token is
    /// set, a request without a known token (and without a principal from an auth layer) gets `401`.
    pub fn with_token(mut self, token: impl Into<String>, principal: Actor) -> Self {
        let mut tokens = self.tokens.take().map(|t| (*t).clone()).unwrap_or_default();
        tokens.insert(token.into(), principal);
        self.tokens = Some(Arc::new(tokens));
        self
    }

    /// Enables the "Run a command" form and `POST /api/commands`, through `runner`.
    pub fn with_commands(mut self, runner: Arc<dyn CommandRunner>) -> Self {
        self.commands = Some(runner);
        self
    }

    /// Ends the page's event streams when `stop` is cancelled, so that a graceful shutdown does not wait on open
    /// browsers (axum's waits for every open response).
    pub fn with_shutdown(mut self, stop: CancellationToken) -> Self {
        self.stop = stop;
        self
    }

    /// The cache.
    pub fn cache(&self) -> &RefCache {
        &self.cache
    }
}

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
        .route("/api/events", get(events::list))
        .route("/api/commands", post(api::command))
        .layer(axum::middleware::from_fn_with_state(
            web.clone(),
            auth::identify,
        ))
        .with_state(web)
}
