//! MCP integration with [rmcp](https://docs.rs/rmcp) 3.x (feature `mcp`).
//!
//! - **Cached tools.** Put `#[cached]` **above** `#[tool]` on a method of a `#[tool_router]` impl. The tool keeps
//!   its name, description and input schema (the method's `Parameters<T>`); it answers the shapes of
//!   [`CachedResponse`](crate::CachedResponse) as structured content, a processing reference when the work passes
//!   `async_timeout`, or an MCP task when the client declared the tasks extension. A failed or cancelled task is a
//!   tool result with `isError: true`, never a protocol error. Every cached tool also accepts
//!   `_async_response_format` (`minimal`, `standard` or `full`).
//! - **Ready-made tools.** [`tool_router`] gives `get_cached_result`, `cancel_task`, `list_tasks`, `respond_task` and
//!   `retry_task`, for any server: `Self::tool_router() + refcache_core::mcp::tool_router::<Self>()`.
//! - **MCP Tasks** (SEP-2663): [`get_task`], [`cancel_task`] and [`update_task`] answer `tasks/get`, `tasks/cancel`
//!   and `tasks/update` (an answer to a task's question) from the
//!   RefCache; [`server_capabilities`] declares tools and tasks.
//! - **Owners.** Every request acts as its [`Owner`]'s actor: the authenticated principal, else the MCP session,
//!   else the connection. One owner never sees another's tasks. Callers are agents by default, so
//!   `execute_only` values stay private from the model.
//! - **Progress.** While a client waits on a call that sent a `progressToken`, the task's progress reports are also
//!   sent as MCP progress notifications.
//!
//! (With the `refcache` facade, the paths are `refcache::mcp::...`.)
//!
//! An edge: it sits on the front door ([`RefCache`](crate::RefCache)), and nothing below it imports it.
//!
//! ```
//! use refcache_core::mcp::{McpRefCache, RefCacheServer};
//! use refcache_core::mcp::rmcp::handler::server::router::tool::ToolRouter;
//! use refcache_core::mcp::rmcp::handler::server::wrapper::Parameters;
//! use refcache_core::mcp::rmcp::model::{
//!     CancelTaskParams, GetTaskParams, GetTaskResult, Implementation, ServerConfig,
//! };
//! use refcache_core::mcp::rmcp::service::RequestContext;
//! use refcache_core::mcp::rmcp::{self, ErrorData, RoleServer, ServerHandler, tool, tool_handler, tool_router};
//! use refcache_core::cached;
//!
//! #[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
//! struct SquareArgs {
//!     n: i64,
//! }
//!
//! #[derive(Clone)]
//! struct Server {
//!     tool_router: ToolRouter<Self>,
//!     refcache: McpRefCache,
//! }
//!
//! #[tool_router]
//! impl Server {
//!     /// Squares a number, slowly.
//!     #[cached(async_timeout = 1.0)]
//!     #[tool]
//!     async fn square(&self, Parameters(args): Parameters<SquareArgs>) -> Result<i64, String> {
//!         Ok(args.n * args.n)
//!     }
//! }
//!
//! impl RefCacheServer for Server {
//!     fn refcache(&self) -> &McpRefCache {
//!         &self.refcache
//!     }
//! }
//!
//! #[tool_handler(router = self.tool_router)]
//! impl ServerHandler for Server {
//!     fn get_info(&self) -> ServerConfig {
//!         ServerConfig::new(refcache_core::mcp::server_capabilities())
//!             .with_server_info(Implementation::new("demo", "0.1.0"))
//!     }
//!     async fn get_task(
//!         &self,
//!         request: GetTaskParams,
//!         context: RequestContext<RoleServer>,
//!     ) -> Result<GetTaskResult, ErrorData> {
//!         refcache_core::mcp::get_task(self, request, context).await
//!     }
//!     async fn cancel_task(
//!         &self,
//!         request: CancelTaskParams,
//!         context: RequestContext<RoleServer>,
//!     ) -> Result<(), ErrorData> {
//!         refcache_core::mcp::cancel_task(self, request, context).await
//!     }
//! }
//!
//! impl Server {
//!     fn new(refcache: McpRefCache) -> Self {
//!         Self {
//!             tool_router: Self::tool_router() + refcache_core::mcp::tool_router::<Self>(),
//!             refcache,
//!         }
//!     }
//! }
//! # let _ = Server::new(McpRefCache::new(refcache_core::RefCache::new()));
//! ```
//!
//! See `docs/mcp.md` for the polling workflow, the SEP-2663 mapping and a runnable example server.

mod call;
mod format;
mod owner;
mod progress;
mod result;
mod server;
mod status;
mod tasks;
mod tools;

pub use rmcp;

pub use call::tool_call;
pub use format::{FORMAT_ARGUMENT, FormatOverride};
pub use owner::Owner;
pub use result::{error_result, tool_result};
pub use server::{DEFAULT_POLL_INTERVAL, McpRefCache, RefCacheServer, server_capabilities};
pub use tasks::{cancel_task, get_task, update_task};
pub use tools::{
    CANCEL_TASK_DESCRIPTION, GET_CACHED_RESULT_DESCRIPTION, GetCachedResultArgs,
    LIST_TASKS_DESCRIPTION, ListTasksArgs, RESPOND_TASK_DESCRIPTION, RETRY_TASK_DESCRIPTION,
    RefIdArgs, RespondTaskArgs, tool_router,
};

#[doc(hidden)]
pub mod __private {
    pub use super::call::tool_call;
}
