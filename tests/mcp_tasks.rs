//! MCP tasks in depth (#19 §2, §3), over a real rmcp client/server pair on an in-process pipe:
//! - one cancel rule for the `cancel_task` tool and `tasks/cancel`, on a working, complete, failed and cancelled
//!   task, and on an unknown or foreign id;
//! - a client's `notifications/cancelled` ends a call's `async_timeout` wait at once, and the task goes on;
//! - progress the spec's way: `statusMessage` (and `get_cached_result`'s message) carries the progress message, the
//!   count and percentage, the ETA and the latest output line, and `lastUpdatedAt` moves with progress.
//!
//! Tasks wait on gates the test opens (events, never sleeps that hope); every wait is bounded by `PATIENCE`.

use std::sync::Arc;
use std::time::Duration;

use refcache::mcp::rmcp::handler::server::router::tool::ToolRouter;
use refcache::mcp::rmcp::handler::server::tool::ToolCallContext;
use refcache::mcp::rmcp::handler::server::wrapper::Parameters;
use refcache::mcp::rmcp::model::{
    CallToolRequestParams, CallToolResponse, CancelTaskParams, ClientRequest, GetTaskParams,
    GetTaskResult, Request, ServerConfig, TaskStatus as McpStatus,
};
use refcache::mcp::rmcp::service::{PeerRequestOptions, RequestContext};
use refcache::mcp::rmcp::{
    self, ErrorData, RoleServer, ServerHandler, tool, tool_handler, tool_router,
};
use refcache::mcp::{McpRefCache, RefCacheServer};
use refcache::{RefCache, TaskContext, TaskError, cached};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc};

#[path = "support/tool_results.rs"]
mod tool_results;
use tool_results::text;

#[path = "support/mcp_pipe.rs"]
mod mcp_pipe;
use mcp_pipe::{
    Client, PATIENCE, call, call_once, get_task, get_task_until, params, rpc_error, structured,
};

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
struct N {
    n: i64,
}

#[derive(Clone)]
struct Server {
    tool_router: ToolRouter<Self>,
    refcache: McpRefCache,
    /// Each permit lets one waiting task body take one step.
    gate: Arc<Semaphore>,
    /// The name of each tool call whose handler has returned.
    returned: mpsc::UnboundedSender<String>,
}

impl Server {
    /// Waits for a permit of the gate, or for the task's cancel.
    async fn pass(&self, ctx: &TaskContext) -> Result<(), TaskError> {
        tokio::select! {
            permit = self.gate.acquire() => {
                permit.expect("the gate stays open").forget();
                Ok(())
            }
            () = ctx.cancelled() => Err(TaskError::new("cancelled")),
        }
    }
}

#[tool_router]
impl Server {
    /// Reports step 1 of 4, passes the gate, writes a line and reports step 2, passes the gate again, answers n.
    #[cached(async_timeout = 0.1)]
    #[tool]
    async fn held(
        &self,
        Parameters(args): Parameters<N>,
        ctx: TaskContext,
    ) -> Result<i64, TaskError> {
        ctx.progress(1.0, Some(4.0), "step 1")?;
        self.pass(&ctx).await?;
        ctx.stdout("wrote part 1\n");
        ctx.progress(2.0, Some(4.0), "step 2")?;
        self.pass(&ctx).await?;
        Ok(args.n)
    }

    /// Passes the gate, then answers n; a caller waits up to five minutes for it.
    #[cached(async_timeout = 300.0)]
    #[tool]
    async fn patient(
        &self,
        Parameters(args): Parameters<N>,
        ctx: TaskContext,
    ) -> Result<i64, TaskError> {
        self.pass(&ctx).await?;
        Ok(args.n)
    }

    /// Answers n at once.
    #[cached(async_timeout = 5.0)]
    #[tool]
    async fn quick(&self, Parameters(args): Parameters<N>) -> Result<i64, String> {
        Ok(args.n)
    }

    /// Fails at once.
    #[cached(async_timeout = 5.0)]
    #[tool]
    async fn fails(&self, Parameters(args): Parameters<N>) -> Result<i64, TaskError> {
        Err(TaskError::new(format!("boom {}", args.n)).permanent())
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
    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let name = request.name.to_string();
        let answer = self
            .tool_router
            .call(ToolCallContext::new(self, request, context))
            .await;
        let _ = self.returned.send(name);
        answer
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
}

/// A cache, its gate, and a way to see handlers return.
struct Harness {
    cache: RefCache,
    gate: Arc<Semaphore>,
    returned_tx: mpsc::UnboundedSender<String>,
    returned: mpsc::UnboundedReceiver<String>,
}

impl Harness {
    fn new() -> Self {
        let (returned_tx, returned) = mpsc::unbounded_channel();
        Self {
            cache: RefCache::builder().build().unwrap(),
            gate: Arc::new(Semaphore::new(0)),
            returned_tx,
            returned,
        }
    }

    /// A new connection (a new owner) to the harness's cache.
    async fn connect(&self, tasks: bool) -> Client {
        let server = Server {
            tool_router: Server::tool_router() + refcache::mcp::tool_router::<Server>(),
            refcache: McpRefCache::new(self.cache.clone()),
            gate: self.gate.clone(),
            returned: self.returned_tx.clone(),
        };
        mcp_pipe::connect(server, tasks).await
    }

    /// Waits until the handler of a call to `tool` has returned.
    async fn returned(&mut self, tool: &str) {
        tokio::time::timeout(PATIENCE, async {
            while let Some(name) = self.returned.recv().await {
                if name == tool {
                    return;
                }
            }
            panic!("the server went away");
        })
        .await
        .unwrap_or_else(|_| panic!("the {tool} handler did not return within {PATIENCE:?}"));
    }
}

fn status(got: &GetTaskResult) -> McpStatus {
    got.task.task.status
}

/// Starts `held {n}` as a task (a tasks client): its id.
async fn start_held(client: &Client, n: i64) -> String {
    match call_once(client, "held", json!({"n": n})).await {
        CallToolResponse::Task(created) => created.task.task_id,
        other => panic!("expected a task, got {other:?}"),
    }
}

/// A finished call's ref id (a result, not a task).
async fn finished(client: &Client, tool: &str, n: i64) -> String {
    match call_once(client, tool, json!({"n": n})).await {
        CallToolResponse::Complete(result) => structured(&result)["ref_id"]
            .as_str()
            .expect("a ref_id")
            .to_owned(),
        other => panic!("expected a finished call, got {other:?}"),
    }
}

/// `cancel_task` (the tool), which must answer success: its structured answer.
async fn cancel_tool(client: &Client, id: &str) -> Value {
    let answer = call(client, "cancel_task", json!({"ref_id": id})).await;
    assert_ne!(answer.is_error, Some(true), "{answer:?}");
    structured(&answer)
}

const UNKNOWN: &str = "refcache:0123456789abcdef0123456789abcdef";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_cancel_rule_on_both_paths_for_all_four_cases() {
    let harness = Harness::new();
    let client = harness.connect(true).await;

    // Working: both paths cancel it and answer success.
    let by_tool = start_held(&client, 1).await;
    let by_rpc = start_held(&client, 2).await;
    let answer = cancel_tool(&client, &by_tool).await;
    assert_eq!(answer["status"], "cancelled", "{answer}");
    assert_eq!(answer["message"], "The task was cancelled");
    client
        .peer()
        .cancel_task(CancelTaskParams::new(by_rpc.clone()))
        .await
        .expect("tasks/cancel acks a working task");
    for id in [&by_tool, &by_rpc] {
        assert_eq!(status(&get_task(&client, id).await), McpStatus::Cancelled);
    }

    // Cancelled already: success again, and it stays cancelled.
    for id in [&by_tool, &by_rpc] {
        let answer = cancel_tool(&client, id).await;
        assert_eq!(answer["status"], "cancelled", "{answer}");
        client
            .peer()
            .cancel_task(CancelTaskParams::new(id.clone()))
            .await
            .expect("tasks/cancel acks a cancelled task");
        assert_eq!(status(&get_task(&client, id).await), McpStatus::Cancelled);
    }

    // Complete and failed: success that says nothing was cancelled, and the task keeps its status.
    for (tool, wire, mcp) in [
        ("quick", "complete", McpStatus::Completed),
        ("fails", "failed", McpStatus::Failed),
    ] {
        let id = finished(&client, tool, 3).await;
        let answer = cancel_tool(&client, &id).await;
        assert_eq!(answer["status"], wire, "{answer}");
        assert_eq!(
            answer["message"],
            format!("The task had already finished ({wire}); nothing was cancelled")
        );
        client
            .peer()
            .cancel_task(CancelTaskParams::new(id.clone()))
            .await
            .unwrap_or_else(|e| panic!("tasks/cancel acks a {wire} task: {e}"));
        assert_eq!(status(&get_task(&client, &id).await), mcp, "{tool}");
    }

    // Unknown, and another owner's: not found, the same answer for both, on both paths.
    let mine = start_held(&client, 4).await;
    let stranger = harness.connect(true).await;
    let unknown_tool = call(&stranger, "cancel_task", json!({"ref_id": UNKNOWN})).await;
    let foreign_tool = call(&stranger, "cancel_task", json!({"ref_id": mine})).await;
    assert_eq!(unknown_tool.is_error, Some(true), "{unknown_tool:?}");
    assert!(text(&unknown_tool).contains("Invalid or inaccessible reference"));
    assert_eq!(text(&foreign_tool), text(&unknown_tool));
    let unknown_rpc = rpc_error(
        stranger
            .peer()
            .cancel_task(CancelTaskParams::new(UNKNOWN.to_owned()))
            .await,
    );
    let foreign_rpc = rpc_error(
        stranger
            .peer()
            .cancel_task(CancelTaskParams::new(mine.clone()))
            .await,
    );
    assert_eq!(unknown_rpc.0, -32602);
    assert_eq!(foreign_rpc, unknown_rpc);
    assert_eq!(
        status(&get_task(&client, &mine).await),
        McpStatus::Working,
        "the stranger cancelled nothing"
    );
    client
        .peer()
        .cancel_task(CancelTaskParams::new(mine))
        .await
        .unwrap();
    stranger.cancel().await.unwrap();
    client.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_request_ends_its_wait_and_the_task_goes_on() {
    let mut harness = Harness::new();
    let client = harness.connect(false).await;
    // The call would wait up to five minutes for its task.
    let handle = client
        .send_cancellable_request(
            ClientRequest::CallToolRequest(Request::new(params("patient", json!({"n": 7})))),
            PeerRequestOptions::no_options(),
        )
        .await
        .unwrap();
    // Its task exists (the connection owns it, so list_tasks sees it) and waits on the gate.
    let give_up = tokio::time::Instant::now() + PATIENCE;
    let ref_id = loop {
        let listed = structured(&call(&client, "list_tasks", json!({})).await);
        if let Some(task) = listed["tasks"].as_array().and_then(|t| t.first()) {
            assert_eq!(task["tool"], "patient", "{listed}");
            assert_eq!(task["status"], "processing", "{listed}");
            break task["ref_id"].as_str().unwrap().to_owned();
        }
        assert!(tokio::time::Instant::now() < give_up, "no task: {listed}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // The client gives up on the call: notifications/cancelled for its request id.
    handle
        .cancel(Some("the user moved on".into()))
        .await
        .unwrap();
    // The handler returns at once (well within PATIENCE, against a five-minute async_timeout) ...
    harness.returned("patient").await;
    // ... while the task still runs: the wait ended, not the work.
    let polled = structured(&call(&client, "get_cached_result", json!({"ref_id": ref_id})).await);
    assert_eq!(polled["status"], "processing", "{polled}");
    // The work goes on and completes when let through.
    harness.gate.add_permits(1);
    let give_up = tokio::time::Instant::now() + PATIENCE;
    let done = loop {
        let polled =
            structured(&call(&client, "get_cached_result", json!({"ref_id": ref_id})).await);
        if polled["is_complete"] == true {
            break polled;
        }
        assert_eq!(polled["status"], "processing", "never cancelled: {polled}");
        assert!(
            tokio::time::Instant::now() < give_up,
            "never complete: {polled}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(done["value"], 7, "{done}");
    // A call that is not cancelled still waits for its value: the same arguments are now a hit.
    let again = structured(&call(&client, "patient", json!({"n": 7})).await);
    assert_eq!(again["value"], 7, "{again}");
    client.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_message_carries_progress_eta_and_output_and_last_updated_moves() {
    let harness = Harness::new();
    let client = harness.connect(true).await;
    let id = start_held(&client, 5).await;
    let first = get_task_until(&client, &id, "step 1 reported", |got| {
        got.task
            .task
            .status_message
            .as_deref()
            .is_some_and(|m| m.starts_with("step 1"))
    })
    .await;
    let message = first.task.task.status_message.clone().unwrap();
    assert!(
        message.starts_with("step 1 (1/4, 25%"),
        "the message, the count and the percentage: {message}"
    );
    assert!(
        message.contains(" left)"),
        "an ETA (the task has started and reported a total): {message}"
    );
    // The same line in get_cached_result's message.
    let polled = structured(&call(&client, "get_cached_result", json!({"ref_id": id})).await);
    let polled_message = polled["message"].as_str().unwrap();
    assert!(
        polled_message.starts_with("step 1 (1/4, 25%"),
        "{polled_message}"
    );
    assert_eq!(
        polled["progress"]["message"], "step 1",
        "the report itself is unchanged"
    );

    // Step 2, with an output line: the message moves, and so does lastUpdatedAt.
    let before = first.task.task.last_updated_at.clone();
    harness.gate.add_permits(1);
    let second = get_task_until(&client, &id, "step 2 reported", |got| {
        got.task
            .task
            .status_message
            .as_deref()
            .is_some_and(|m| m.starts_with("step 2"))
    })
    .await;
    let message = second.task.task.status_message.clone().unwrap();
    assert!(
        message.starts_with("step 2 (2/4, 50%")
            && message.ends_with(" · latest output: wrote part 1"),
        "{message}"
    );
    let after = &second.task.task.last_updated_at;
    let parse = |t: &str| humantime::parse_rfc3339(t).unwrap_or_else(|e| panic!("{t}: {e}"));
    assert!(
        parse(after) > parse(&before),
        "lastUpdatedAt moves with progress: {before} then {after}"
    );
    let polled = structured(&call(&client, "get_cached_result", json!({"ref_id": id})).await);
    assert_eq!(polled["message"].as_str(), Some(message.as_str()));
    // A finished task carries no status line of progress.
    harness.gate.add_permits(1);
    let done = get_task_until(&client, &id, "completed", |got| {
        status(got) == McpStatus::Completed
    })
    .await;
    assert!(done.task.task.status_message.is_none(), "{done:?}");
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn bad_polling_arguments_are_tool_errors_that_name_them() {
    let harness = Harness::new();
    let client = harness.connect(false).await;
    let id = finished(&client, "quick", 9).await;
    for (args, named) in [
        (
            json!({"ref_id": id, "output_offset": -1}),
            "invalid output_offset -1: expected a byte offset",
        ),
        (
            json!({"ref_id": id, "output_offset": "start"}),
            "invalid output_offset \"start\"",
        ),
        (
            json!({"ref_id": id, "output_offset": 1.5}),
            "invalid output_offset 1.5",
        ),
        (
            json!({"ref_id": id, "page": -2}),
            "invalid page -2: expected a page number",
        ),
        (
            json!({"ref_id": id, "page_size": "ten"}),
            "invalid page_size \"ten\"",
        ),
        (
            json!({"ref_id": id, "max_size": true}),
            "invalid max_size true",
        ),
    ] {
        let answer = call(&client, "get_cached_result", args.clone()).await;
        assert_eq!(answer.is_error, Some(true), "{args}: {answer:?}");
        assert!(text(&answer).contains(named), "{args}: {}", text(&answer));
    }
    // A good offset still answers the value (and the output it has: none).
    let good = call(
        &client,
        "get_cached_result",
        json!({"ref_id": id, "output_offset": 0}),
    )
    .await;
    assert_eq!(structured(&good)["value"], 9, "{good:?}");
    // The schema still says what the arguments are.
    let tools = client.list_all_tools().await.unwrap();
    let get = tools
        .iter()
        .find(|t| t.name == "get_cached_result")
        .unwrap();
    let offset = &get.input_schema["properties"]["output_offset"];
    assert!(offset.to_string().contains("integer"), "{offset}");
    client.cancel().await.unwrap();
}
