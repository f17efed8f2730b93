//! What an MCP server holds of refcache: [`McpRefCache`] (the cache, the connection, how tasks are answered), the
//! [`RefCacheServer`] trait a server implements by naming it, and the capabilities it declares.

use std::sync::Arc;
use std::time::Duration;

use rmcp::RoleServer;
use rmcp::model::ServerCapabilities;
use rmcp::service::RequestContext;

use super::owner::Owner;
use crate::cache::RefCache;
use crate::model::actor::{Actor, ActorKind};

/// The default `pollIntervalMs` of MCP tasks.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// What an MCP server needs of refcache: the cache its tools use, the connection it serves, and how tasks are
/// answered. Keep one in the server struct, and construct one per connection (over stdio, the connection owns the
/// tasks; clones share it). Cheap to clone.
#[derive(Debug, Clone)]
pub struct McpRefCache {
    cache: RefCache,
    connection: Arc<str>,
    poll_interval: Duration,
    caller_kind: ActorKind,
}

impl McpRefCache {
    /// Serves `cache` (for the process-wide default, `refcache::default_cache()?.clone()`).
    pub fn new(cache: RefCache) -> Self {
        Self {
            cache,
            connection: uuid::Uuid::new_v4().simple().to_string().into(),
            poll_interval: DEFAULT_POLL_INTERVAL,
            caller_kind: ActorKind::Agent,
        }
    }

    /// What kind of actor MCP callers are (default [`ActorKind::Agent`]: the model calls the tools, so a tool with
    /// `policy = "execute_only"` hands the model a reference it can pass on but not read, and `agent_permissions`
    /// apply). [`ActorKind::User`] makes callers users, for servers whose clients are people's own programs. An
    /// authenticated principal keeps its id and attributes either way (a system principal stays the system).
    pub fn with_caller_kind(mut self, kind: ActorKind) -> Self {
        self.caller_kind = kind;
        self
    }

    /// The `pollIntervalMs` MCP tasks suggest to clients (default one second).
    pub fn with_poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// The cache.
    pub fn cache(&self) -> &RefCache {
        &self.cache
    }

    /// The connection this value serves (random, one per [`McpRefCache::new`]).
    pub fn connection_id(&self) -> &str {
        &self.connection
    }

    /// The suggested poll interval.
    pub fn poll_interval(&self) -> Duration {
        self.poll_interval
    }

    /// The owner of a request ([`Owner::of`]).
    pub fn owner(&self, request: &RequestContext<RoleServer>) -> Owner {
        Owner::of(request, &self.connection)
    }

    /// The actor a request acts as: its owner's, as the caller kind.
    pub fn caller(&self, request: &RequestContext<RoleServer>) -> Actor {
        self.owner(request).actor(self.caller_kind)
    }
}

/// An rmcp server that serves refcache: implemented by naming its [`McpRefCache`].
pub trait RefCacheServer: Send + Sync + 'static {
    /// The server's refcache.
    fn refcache(&self) -> &McpRefCache;
}

/// The capabilities of a server with cached tools: tools, and the tasks extension.
pub fn server_capabilities() -> ServerCapabilities {
    ServerCapabilities::builder()
        .enable_tools()
        .enable_tasks()
        .build()
}
