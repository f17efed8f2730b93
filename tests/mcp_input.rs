//! The MCP input path for clients without the tasks extension (#19 §1): a tool asks mid-task,
//! `get_cached_result` shows `input_required` and the question, and the ready-made `respond_task` answers it; a bad
//! answer names the field and the task keeps waiting; an answer to a finished task is refused with its status.

use std::time::Duration;

use refcache::mcp::rmcp::handler::server::router::tool::ToolRouter;
use refcache::mcp::rmcp::handler::server::wrapper::Parameters;
use refcache::mcp::rmcp::model::{CallToolRequestParams, CallToolResult, ServerConfig};
use refcache::mcp::rmcp::{self, ServerHandler, tool, tool_handler, tool_router};
use refcache::mcp::{McpRefCache, RefCacheServer};
use refcache::{RefCache, TaskContext, TaskError, cached};
use rmcp::ServiceExt;
use rmcp::service::RunningService;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

#[path = "support/tool_results.rs"]
mod tool_results;
use tool_results::text;

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
struct Count {
    count: u32,
}

#[derive(Clone)]
struct Server {
    tool_router: ToolRouter<Self>,
    refcache: McpRefCache,
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
}

async fn connect() -> RunningService<rmcp::RoleClient, ()> {
    let server = Server {
        tool_router: Server::tool_router() + refcache::mcp::tool_router::<Server>(),
        refcache: McpRefCache::new(RefCache::builder().build().unwrap()),
    };
    let (server_io, client_io) = tokio::io::duplex(1 << 20);
    tokio::spawn(async move {
        let running = server.serve(server_io).await.expect("serve");
        let _ = running.waiting().await;
    });
    ().serve(client_io).await.expect("initialize")
}

async fn call(
    client: &RunningService<rmcp::RoleClient, ()>,
    tool: &str,
    args: Value,
) -> CallToolResult {
    client
        .call_tool(
            CallToolRequestParams::new(tool.to_owned())
                .with_arguments(args.as_object().unwrap().clone()),
        )
        .await
        .expect("no protocol error")
}

fn structured(result: &CallToolResult) -> Value {
    result
        .structured_content
        .clone()
        .unwrap_or_else(|| serde_json::from_str(&text(result)).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn respond_task_answers_the_question_get_cached_result_shows() {
    let client = connect().await;
    let started = structured(&call(&client, "delete_records", json!({"count": 3})).await);
    let ref_id = started["ref_id"].as_str().expect("a ref_id").to_owned();

    let give_up = tokio::time::Instant::now() + Duration::from_secs(20);
    let polled = loop {
        let polled =
            structured(&call(&client, "get_cached_result", json!({"ref_id": ref_id})).await);
        if polled["status"] == "input_required" {
            break polled;
        }
        assert!(
            tokio::time::Instant::now() < give_up,
            "never input_required: {polled}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        polled.to_string().contains("Delete 3 records?"),
        "the poll shows the question: {polled}"
    );

    let bad = call(
        &client,
        "respond_task",
        json!({"ref_id": ref_id, "response": {"confirm": "yes"}}),
    )
    .await;
    assert_eq!(bad.is_error, Some(true), "{bad:?}");
    assert!(
        text(&bad).contains("`confirm`"),
        "names the field: {}",
        text(&bad)
    );
    let still = structured(&call(&client, "get_cached_result", json!({"ref_id": ref_id})).await);
    assert_eq!(still["status"], "input_required", "keeps waiting: {still}");

    let answered = call(
        &client,
        "respond_task",
        json!({"ref_id": ref_id, "response": {"confirm": true}}),
    )
    .await;
    assert_ne!(answered.is_error, Some(true), "{answered:?}");
    let done = loop {
        let done = structured(&call(&client, "get_cached_result", json!({"ref_id": ref_id})).await);
        if done["is_complete"] == true {
            break done;
        }
        assert!(
            tokio::time::Instant::now() < give_up,
            "never complete: {done}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(done.to_string().contains("\"deleted\":3"), "{done}");

    let late = call(
        &client,
        "respond_task",
        json!({"ref_id": ref_id, "response": {"confirm": true}}),
    )
    .await;
    assert_eq!(late.is_error, Some(true), "{late:?}");
    assert!(
        text(&late).contains("complete"),
        "names the status: {}",
        text(&late)
    );
    client.cancel().await.unwrap();
}
