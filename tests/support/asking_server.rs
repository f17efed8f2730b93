//! A server whose one tool asks mid-task: `delete_records {count}` asks "Delete N records?" with a boolean
//! `confirm`, then answers `{"deleted": N}` (or 0 when not confirmed). It answers `tasks/get`, `tasks/update` and
//! `tasks/cancel` from the RefCache.

use refcache::mcp::rmcp::handler::server::router::tool::ToolRouter;
use refcache::mcp::rmcp::handler::server::wrapper::Parameters;
use refcache::mcp::rmcp::model::{
    CancelTaskParams, GetTaskParams, GetTaskResult, ServerConfig, UpdateTaskParams,
};
use refcache::mcp::rmcp::service::RequestContext;
use refcache::mcp::rmcp::{
    self, ErrorData, RoleServer, ServerHandler, tool, tool_handler, tool_router,
};
use refcache::mcp::{McpRefCache, RefCacheServer};
use refcache::{TaskContext, TaskError, cached};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
struct Count {
    count: u32,
}

#[derive(Clone)]
pub(crate) struct Server {
    tool_router: ToolRouter<Self>,
    refcache: McpRefCache,
}

impl Server {
    /// A server on `refcache`, with the ready-made tools.
    pub(crate) fn new(refcache: McpRefCache) -> Self {
        Self {
            tool_router: Self::tool_router() + refcache::mcp::tool_router::<Self>(),
            refcache,
        }
    }
}

#[tool_router]
impl Server {
    /// Asks for a confirmation, then answers how many records it would delete.
    #[cached(async_timeout = 0.1)]
    #[tool]
    async fn delete_records(
        &self,
        Parameters(args): Parameters<Count>,
        ctx: TaskContext,
    ) -> Result<Value, TaskError> {
        let schema = json!({
            "type": "object",
            "properties": {"confirm": {"type": "boolean"}},
            "required": ["confirm"],
        });
        let answer = ctx
            .ask(format!("Delete {} records?", args.count), schema, None)
            .await?;
        let deleted = if answer["confirm"] == true {
            args.count
        } else {
            0
        };
        Ok(json!({ "deleted": deleted }))
    }
}

impl RefCacheServer for Server {
    fn refcache(&self) -> &McpRefCache {
        &self.refcache
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Server {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(refcache::mcp::server_capabilities())
    }
    async fn get_task(
        &self,
        request: GetTaskParams,
        context: RequestContext<RoleServer>,
    ) -> Result<GetTaskResult, ErrorData> {
        refcache::mcp::get_task(self, request, context).await
    }
    async fn cancel_task(
        &self,
        request: CancelTaskParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        refcache::mcp::cancel_task(self, request, context).await
    }
    async fn update_task(
        &self,
        request: UpdateTaskParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        refcache::mcp::update_task(self, request, context).await
    }
}
