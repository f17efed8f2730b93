//! `#[cached]` on rmcp tools, served in-process over a duplex pipe: the tool list, connections as owners, panics,
//! sync tools and progress, with tokio's paused clock where the test controls time.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use refcache::mcp::rmcp::handler::server::router::tool::ToolRouter;
use refcache::mcp::rmcp::handler::server::wrapper::Parameters;
use refcache::mcp::rmcp::model::{CallToolRequestParams, CallToolResult, ServerConfig};
use refcache::mcp::rmcp::{self, ServerHandler, tool, tool_handler, tool_router};
use refcache::mcp::{McpRefCache, RefCacheServer};
use refcache::{RefCache, TaskContext, cached};
use rmcp::ServiceExt;
use rmcp::service::RunningService;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

#[path = "support/tool_results.rs"]
mod tool_results;
use tool_results::text;

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Numbers {
    /// The number.
    n: i64,
}

#[derive(Clone)]
struct Server {
    tool_router: ToolRouter<Self>,
    refcache: McpRefCache,
    runs: Arc<AtomicU32>,
}

#[tool_router]
impl Server {
    fn new(refcache: McpRefCache) -> Self {
        Self {
            tool_router: Self::tool_router() + refcache::mcp::tool_router::<Self>(),
            refcache,
            runs: Arc::default(),
        }
    }

    /// Doubles n, after a minute.
    #[cached(async_timeout = 1.0)]
    #[tool]
    async fn slow_double(&self, Parameters(args): Parameters<Numbers>) -> Result<i64, String> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(60)).await;
        Ok(args.n * 2)
    }

    /// Panics.
    #[cached(async_timeout = 5.0)]
    #[tool]
    async fn explodes(&self, Parameters(args): Parameters<Numbers>) -> i64 {
        panic!("exploded on {}", args.n)
    }

    /// A sync tool: negates n on a blocking thread.
    #[cached(async_timeout = 5.0)]
    #[tool(name = "negate", description = "Negates n.")]
    fn negate(&self, Parameters(args): Parameters<Numbers>) -> i64 {
        -args.n
    }

    /// A value the model may pass on but not read.
    #[cached(async_timeout = 5.0, policy = "execute_only")]
    #[tool]
    async fn secret(&self, Parameters(args): Parameters<Numbers>) -> String {
        format!("secret-{}", args.n)
    }

    /// Reports a progress that is not a number, then 1 of 1.
    #[cached(async_timeout = 10.0)]
    #[tool]
    async fn odd_progress(
        &self,
        Parameters(args): Parameters<Numbers>,
        ctx: TaskContext,
    ) -> Result<i64, TaskError> {
        tokio::time::sleep(Duration::from_secs(1)).await;
        ctx.progress(f64::NAN, Some(f64::INFINITY), "not a number")?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        ctx.progress(1.0, Some(1.0), "one")?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        Ok(args.n)
    }

    /// Reports progress 1..=3, a second apart.
    #[cached(async_timeout = 10.0)]
    #[tool]
    async fn steps(
        &self,
        Parameters(args): Parameters<Numbers>,
        ctx: TaskContext,
    ) -> Result<i64, TaskError> {
        for i in 1..=3 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            ctx.progress(f64::from(i), Some(3.0), format!("step {i}"))?;
        }
        Ok(args.n)
    }
}

use refcache::TaskError;

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

/// A server over a duplex pipe (one connection), and a plain client of it.
async fn connect(server: Server) -> RunningService<rmcp::RoleClient, ()> {
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

fn cache() -> RefCache {
    RefCache::builder().build().unwrap()
}

#[tokio::test]
async fn tools_keep_their_schema_and_the_ready_made_ones_are_listed() {
    let client = connect(Server::new(McpRefCache::new(cache()))).await;
    let tools = client.list_all_tools().await.unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    for name in [
        "slow_double",
        "explodes",
        "negate",
        "steps",
        "secret",
        "odd_progress",
        "get_cached_result",
        "cancel_task",
        "list_tasks",
        "retry_task",
        "respond_task",
    ] {
        assert!(names.contains(&name), "{name} missing from {names:?}");
    }
    let double = tools.iter().find(|t| t.name == "slow_double").unwrap();
    assert_eq!(
        double.description.as_deref(),
        Some("Doubles n, after a minute.")
    );
    let properties = double.input_schema["properties"].as_object().unwrap();
    assert_eq!(
        properties.keys().collect::<Vec<_>>(),
        ["n"],
        "the user's parameter type"
    );
    assert!(
        double.output_schema.is_none(),
        "a cached tool declares no output schema"
    );
    let get = tools
        .iter()
        .find(|t| t.name == "get_cached_result")
        .unwrap();
    assert!(get.description.as_deref().unwrap().contains("ref_id"));
    assert!(
        get.input_schema["required"]
            .as_array()
            .unwrap()
            .contains(&json!("ref_id"))
    );
    client.cancel().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_timed_out_call_runs_once_and_each_connection_owns_its_tasks() {
    let shared = cache();
    let server = Server::new(McpRefCache::new(shared.clone()));
    let runs = server.runs.clone();
    let a = connect(server).await;
    let b = connect(Server::new(McpRefCache::new(shared))).await;

    let first = call(&a, "slow_double", json!({"n": 21})).await;
    let first = first.structured_content.unwrap();
    assert_eq!(first["status"], "processing");
    let id = first["ref_id"].as_str().unwrap().to_owned();
    // The same call again on the same connection joins the execution: the same reference, one run.
    let again = call(&a, "slow_double", json!({"n": 21}))
        .await
        .structured_content
        .unwrap();
    assert_eq!(again["ref_id"], id.as_str());
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    // The other connection does not see it.
    let other = call(&b, "get_cached_result", json!({"ref_id": id})).await;
    assert_eq!(other.is_error, Some(true));
    assert!(text(&other).contains("Invalid or inaccessible reference"));
    let listed = call(&b, "list_tasks", json!({}))
        .await
        .structured_content
        .unwrap();
    assert_eq!(listed["tasks"], json!([]));
    // Time passes: the one execution finishes, and its owner reads the value.
    tokio::time::sleep(Duration::from_secs(61)).await;
    let done = call(&a, "get_cached_result", json!({"ref_id": id}))
        .await
        .structured_content
        .unwrap();
    assert_eq!(done["value"], 42, "{done}");
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    a.cancel().await.unwrap();
    b.cancel().await.unwrap();
}

#[tokio::test]
async fn a_panicking_tool_is_a_failed_task_not_a_hung_request() {
    let client = connect(Server::new(McpRefCache::new(cache()))).await;
    let result = call(&client, "explodes", json!({"n": 7})).await;
    assert_eq!(result.is_error, Some(true));
    assert!(text(&result).contains("exploded on 7"), "{}", text(&result));
    assert_eq!(result.structured_content.unwrap()["status"], "failed");
    // The server is fine.
    let negated = call(&client, "negate", json!({"n": 7})).await;
    assert_eq!(negated.structured_content.unwrap()["value"], -7);
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn unknown_fields_and_the_format_override() {
    let client = connect(Server::new(McpRefCache::new(cache()))).await;
    // `deny_unknown_fields` still accepts the override: it is stripped first.
    let full = call(
        &client,
        "negate",
        json!({"n": 1, "_async_response_format": "full"}),
    )
    .await;
    assert_eq!(full.structured_content.unwrap()["value"], -1);
    let unknown = call(&client, "negate", json!({"n": 1, "m": 2})).await;
    assert_eq!(unknown.is_error, Some(true));
    assert!(
        text(&unknown).contains("unknown field `m`"),
        "{}",
        text(&unknown)
    );
    client.cancel().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn progress_is_forwarded_while_the_client_waits() {
    use refcache::mcp::rmcp::model::ProgressNotificationParam;
    use refcache::mcp::rmcp::service::NotificationContext;
    use std::sync::Mutex;

    #[derive(Clone, Default)]
    struct Seen(Arc<Mutex<Vec<ProgressNotificationParam>>>);
    impl rmcp::ClientHandler for Seen {
        async fn on_progress(
            &self,
            params: ProgressNotificationParam,
            _: NotificationContext<rmcp::RoleClient>,
        ) {
            self.0.lock().unwrap().push(params);
        }
    }

    let (server_io, client_io) = tokio::io::duplex(1 << 20);
    tokio::spawn(async move {
        let running = Server::new(McpRefCache::new(cache()))
            .serve(server_io)
            .await
            .unwrap();
        let _ = running.waiting().await;
    });
    let seen = Seen::default();
    let client = seen.clone().serve(client_io).await.unwrap();
    let odd = client
        .call_tool(
            CallToolRequestParams::new("odd_progress")
                .with_arguments(json!({"n": 2}).as_object().unwrap().clone()),
        )
        .await
        .unwrap();
    assert_eq!(odd.structured_content.unwrap()["value"], 2);
    for _ in 0..100 {
        if !seen.0.lock().unwrap().is_empty() {
            break;
        }
        tokio::task::yield_now().await;
    }
    let odd: Vec<(f64, Option<String>)> = seen
        .0
        .lock()
        .unwrap()
        .drain(..)
        .map(|p| (p.progress, p.message))
        .collect();
    assert_eq!(
        odd,
        [(1.0, Some("one".to_owned()))],
        "a non-finite report is not sent"
    );
    let result = client
        .call_tool(
            CallToolRequestParams::new("steps")
                .with_arguments(json!({"n": 5}).as_object().unwrap().clone()),
        )
        .await
        .unwrap();
    assert_eq!(result.structured_content.unwrap()["value"], 5);
    // Notifications are handled on the client's own task: let it run.
    for _ in 0..100 {
        if seen.0.lock().unwrap().len() >= 3 {
            break;
        }
        tokio::task::yield_now().await;
    }
    let seen = seen.0.lock().unwrap().clone();
    let steps: Vec<(f64, Option<String>)> = seen
        .iter()
        .map(|p| (p.progress, p.message.clone()))
        .collect();
    assert_eq!(
        steps,
        [
            (1.0, Some("step 1".to_owned())),
            (2.0, Some("step 2".to_owned())),
            (3.0, Some("step 3".to_owned()))
        ]
    );
    assert!(seen.iter().all(|p| p.total == Some(3.0)));
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn callers_are_agents_so_execute_only_values_stay_private() {
    let client = connect(Server::new(McpRefCache::new(cache()))).await;
    let made = call(&client, "secret", json!({"n": 1})).await;
    let made = made.structured_content.unwrap();
    assert_eq!(made["status"], "complete", "{made}");
    assert!(
        made.get("value").is_none(),
        "the model never sees it: {made}"
    );
    assert!(!made.to_string().contains("secret-1"));
    let polled = call(
        &client,
        "get_cached_result",
        json!({"ref_id": made["ref_id"], "full": true}),
    )
    .await;
    assert!(!format!("{polled:?}").contains("secret-1"), "{polled:?}");
    client.cancel().await.unwrap();

    // A server whose callers are people's programs says so.
    let users = McpRefCache::new(cache()).with_caller_kind(refcache::ActorKind::User);
    let client = connect(Server::new(users)).await;
    let made = call(&client, "secret", json!({"n": 1})).await;
    assert_eq!(made.structured_content.unwrap()["value"], "secret-1");
    client.cancel().await.unwrap();
}
