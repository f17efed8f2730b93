//! An rmcp server served over an in-process pipe (one connection: one owner), and a real rmcp client of it, with
//! or without the tasks extension.

use std::time::Duration;

use refcache::mcp::rmcp;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ClientCapabilities, ClientConfig,
    GetTaskParams, GetTaskResult, Implementation,
};
use rmcp::service::RunningService;
use rmcp::{RoleClient, ServerHandler, ServiceExt};
use serde_json::Value;

/// The longest any awaited event may take, on a loaded 2-core machine.
pub(crate) const PATIENCE: Duration = Duration::from_secs(60);

pub(crate) type Client = RunningService<RoleClient, ClientConfig>;

/// Serves `server` over a duplex pipe and connects a client that declares the tasks extension when `tasks`.
pub(crate) async fn connect<S: ServerHandler>(server: S, tasks: bool) -> Client {
    let (server_io, client_io) = tokio::io::duplex(1 << 20);
    tokio::spawn(async move {
        let running = server.serve(server_io).await.expect("serve");
        let _ = running.waiting().await;
    });
    let caps = if tasks {
        ClientCapabilities::builder().enable_tasks().build()
    } else {
        ClientCapabilities::default()
    };
    ClientConfig::new(caps, Implementation::new("refcache-tests", "0"))
        .serve(client_io)
        .await
        .expect("initialize")
}

pub(crate) fn params(tool: &str, args: Value) -> CallToolRequestParams {
    CallToolRequestParams::new(tool.to_owned()).with_arguments(args.as_object().unwrap().clone())
}

/// A tool call that must answer a tool result (not a task).
pub(crate) async fn call(client: &Client, tool: &str, args: Value) -> CallToolResult {
    tokio::time::timeout(PATIENCE, client.call_tool(params(tool, args)))
        .await
        .unwrap_or_else(|_| panic!("{tool}: no answer within {PATIENCE:?}"))
        .unwrap_or_else(|e| panic!("{tool}: protocol error {e}"))
}

/// A tool call as it answers: a result or, for a tasks client, a task.
pub(crate) async fn call_once(client: &Client, tool: &str, args: Value) -> CallToolResponse {
    tokio::time::timeout(PATIENCE, client.call_tool_once(params(tool, args)))
        .await
        .unwrap_or_else(|_| panic!("{tool}: no answer within {PATIENCE:?}"))
        .unwrap_or_else(|e| panic!("{tool}: protocol error {e}"))
}

/// The structured content of a tool result.
pub(crate) fn structured(result: &CallToolResult) -> Value {
    result
        .structured_content
        .clone()
        .unwrap_or_else(|| panic!("no structured content: {result:?}"))
}

/// `tasks/get`, which must answer.
pub(crate) async fn get_task(client: &Client, id: &str) -> GetTaskResult {
    tokio::time::timeout(
        PATIENCE,
        client.peer().get_task(GetTaskParams::new(id.to_owned())),
    )
    .await
    .expect("tasks/get answers")
    .unwrap_or_else(|e| panic!("tasks/get {id}: {e}"))
}

/// Polls `tasks/get` until `done` holds of it, for at most [`PATIENCE`].
pub(crate) async fn get_task_until(
    client: &Client,
    id: &str,
    what: &str,
    done: impl Fn(&GetTaskResult) -> bool,
) -> GetTaskResult {
    let give_up = tokio::time::Instant::now() + PATIENCE;
    loop {
        let got = get_task(client, id).await;
        if done(&got) {
            return got;
        }
        assert!(
            tokio::time::Instant::now() < give_up,
            "{what}: never, last {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The JSON-RPC error code and message of a failed request.
pub(crate) fn rpc_error<T: std::fmt::Debug>(
    result: Result<T, rmcp::ServiceError>,
) -> (i32, String) {
    match result {
        Err(rmcp::ServiceError::McpError(e)) => (e.code.0, e.message.to_string()),
        other => panic!("expected a JSON-RPC error, got {other:?}"),
    }
}
