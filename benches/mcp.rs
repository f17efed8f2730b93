//! The MCP layer's cost: a cached tool's hit against a plain rmcp tool, both called by an rmcp client over the same
//! in-process pipe in the same run, so the transport and JSON-RPC costs are common to both.
//!
//! ```text
//! cargo bench -p refcache-benches --bench mcp
//! ```
//!
//! - `mcp/plain_tool`: a `#[tool]` that builds a small JSON object (the baseline);
//! - `mcp/cached_tool_hit`: the same tool with `#[cached]` above `#[tool]`, its value already cached: the owner
//!   lookup, the actor and format scopes, the key, the hit and the tool result on top of the baseline.

use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use refcache::mcp::rmcp::handler::server::router::tool::ToolRouter;
use refcache::mcp::rmcp::handler::server::wrapper::Parameters;
use refcache::mcp::rmcp::model::{CallToolRequestParams, CallToolResult, ServerConfig};
use refcache::mcp::rmcp::{self, ServerHandler, tool, tool_handler, tool_router};
use refcache::mcp::{McpRefCache, RefCacheServer};
use refcache::{MemoryBackendConfig, MemoryTaskBackend, RefCache, cached};
use rmcp::ServiceExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
struct UserArgs {
    id: u64,
}

fn user(id: u64) -> Value {
    json!({"id": id, "name": "Ada", "roles": ["admin", "dev"]})
}

#[derive(Clone)]
struct Server {
    tool_router: ToolRouter<Self>,
    refcache: McpRefCache,
}

#[tool_router]
impl Server {
    /// A plain tool.
    #[tool]
    async fn plain_user(&self, Parameters(args): Parameters<UserArgs>) -> rmcp::Json<Value> {
        rmcp::Json(user(args.id))
    }

    /// The same, cached.
    #[cached(async_timeout = 5.0)]
    #[tool]
    async fn cached_user(&self, Parameters(args): Parameters<UserArgs>) -> Value {
        user(args.id)
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
}

fn call(tool: &str) -> CallToolRequestParams {
    CallToolRequestParams::new(tool.to_owned())
        .with_arguments(json!({"id": 7}).as_object().unwrap().clone())
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let client = rt.block_on(async {
        let cache = RefCache::builder()
            .backend(Arc::new(MemoryTaskBackend::new(
                MemoryBackendConfig::default(),
            )))
            .unwrap();
        let server = Server {
            tool_router: Server::tool_router(),
            refcache: McpRefCache::new(cache),
        };
        let (server_io, client_io) = tokio::io::duplex(1 << 20);
        tokio::spawn(async move {
            let running = server.serve(server_io).await.unwrap();
            let _ = running.waiting().await;
        });
        let client = ().serve(client_io).await.unwrap();
        // Warm the cache: every later call of `cached_user` is a hit.
        let first: CallToolResult = client.call_tool(call("cached_user")).await.unwrap();
        assert_eq!(first.structured_content.unwrap()["value"]["name"], "Ada");
        client
    });
    let mut group = c.benchmark_group("mcp");
    group.bench_function("plain_tool", |b| {
        b.to_async(&rt)
            .iter(|| async { client.call_tool(call("plain_user")).await.unwrap() })
    });
    group.bench_function("cached_tool_hit", |b| {
        b.to_async(&rt)
            .iter(|| async { client.call_tool(call("cached_user")).await.unwrap() })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
