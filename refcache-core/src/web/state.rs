//! What the page serves ([`WebRefCache`]) and the hook that runs its commands ([`CommandRunner`]).

use std::collections::HashMap;
use std::sync::Arc;

use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use crate::cache::RefCache;
use crate::cache::response::CachedResponse;
use crate::model::actor::Actor;
use crate::model::error::RefCacheError;

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
    pub(crate) cache: RefCache,
    pub(crate) tokens: Option<Arc<HashMap<String, Actor>>>,
    pub(crate) commands: Option<Arc<dyn CommandRunner>>,
    pub(crate) stop: CancellationToken,
    /// Origins besides the server's own whose pages may send cookie-signed requests that change something.
    pub(crate) origins: Arc<Vec<String>>,
    /// The shared reads of followed tasks' output.
    pub(crate) fanout: Arc<super::fanout::Fanout>,
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
            origins: Arc::default(),
            fanout: Arc::default(),
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

    /// Lets pages from `origin` (such as `https://tasks.example.com`, when a proxy in front changes the `Host`
    /// the server sees) send cookie-signed requests that change something. Without it, only this server's own
    /// page may (the CSRF defence: see the [module docs](super)).
    pub fn with_origin(mut self, origin: impl Into<String>) -> Self {
        let mut origins = (*self.origins).clone();
        origins.push(origin.into().trim_end_matches('/').to_owned());
        self.origins = Arc::new(origins);
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
