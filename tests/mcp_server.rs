//! The example MCP server (the `mcp_server` package, `examples/mcp_server/src/main.rs`), driven by a real rmcp
//! client over stdio (the server as a child process) and over streamable HTTP.
//!
//! Timing: the tools' own timeouts (0.5 to 2 s) are part of the demo, so these tests run on the wall clock. Every
//! wait is for an event (a status, a notification), bounded by a wide deadline ([`PATIENCE`]), never a sleep that
//! hopes something has happened.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, CancelTaskParams, ClientCapabilities,
    ClientConfig, GetTaskParams, Implementation, ProgressNotificationParam, TaskPayload,
    TaskStatus as McpStatus,
};
use rmcp::service::{NotificationContext, RunningService};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{ConfigureCommandExt, StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{ClientHandler, RoleClient, ServiceExt};
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;

#[path = "support/tool_results.rs"]
mod tool_results;

#[path = "support/examples.rs"]
mod examples;

/// The longest any awaited event may take, on a loaded 2-core machine.
const PATIENCE: Duration = Duration::from_secs(60);

/// The example server's binary.
fn server_binary() -> std::path::PathBuf {
    examples::binary("mcp_server")
}

/// A client that records progress notifications and can declare the tasks extension.
#[derive(Clone, Default)]
struct Recorder {
    progress: Arc<Mutex<Vec<ProgressNotificationParam>>>,
    tasks: bool,
}

impl Recorder {
    fn with_tasks() -> Self {
        Self {
            tasks: true,
            ..Self::default()
        }
    }
}

impl ClientHandler for Recorder {
    fn get_info(&self) -> ClientConfig {
        let caps = if self.tasks {
            ClientCapabilities::builder().enable_tasks().build()
        } else {
            ClientCapabilities::default()
        };
        ClientConfig::new(caps, Implementation::new("refcache-tests", "0"))
    }

    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        self.progress.lock().unwrap().push(params);
    }
}

type Client = RunningService<RoleClient, Recorder>;

async fn stdio_client(recorder: Recorder, args: &[&str]) -> Client {
    let transport = TokioChildProcess::builder(
        tokio::process::Command::new(server_binary()).configure(|cmd| {
            cmd.args(args);
            cmd.env_remove("REFCACHE_BACKEND");
            cmd.env_remove("MCP_SERVER_ALLOW_COMMANDS");
            cmd.env_remove("MCP_SERVER_COMMAND_WAIT");
        }),
    )
    .stderr(Stdio::inherit())
    .spawn()
    .expect("start the example server")
    .0;
    recorder
        .serve(transport)
        .await
        .expect("initialize over stdio")
}

/// The example server over HTTP on a free port: the child, and its URL.
struct HttpServer {
    child: tokio::process::Child,
    url: String,
}

impl HttpServer {
    async fn start(extra: &[&str]) -> Self {
        Self::start_on(None, extra).await
    }

    /// The server on `backend` (`REFCACHE_BACKEND`), or on the default (in-process) backend.
    async fn start_on(backend: Option<&str>, extra: &[&str]) -> Self {
        let mut command = tokio::process::Command::new(server_binary());
        match backend {
            Some(backend) => command.env("REFCACHE_BACKEND", backend),
            None => command.env_remove("REFCACHE_BACKEND"),
        };
        let mut child = command
            .args(["--http", "127.0.0.1:0"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start the example server");
        let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let url = tokio::time::timeout(PATIENCE, async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some(url) = line.strip_prefix("mcp_server: serving ") {
                    return url.to_owned();
                }
            }
            panic!("the server exited before serving");
        })
        .await
        .expect("the server announces its address");
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self { child, url }
    }

    async fn client(&self, token: Option<&str>) -> Result<Client, String> {
        self.client_with(Recorder::default(), token).await
    }

    async fn client_with(&self, recorder: Recorder, token: Option<&str>) -> Result<Client, String> {
        let mut config = StreamableHttpClientTransportConfig::with_uri(self.url.clone());
        if let Some(token) = token {
            config = config.auth_header(token.to_owned());
        }
        recorder
            .serve(StreamableHttpClientTransport::from_config(config))
            .await
            .map_err(|e| e.to_string())
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

fn params(tool: &str, args: Value) -> CallToolRequestParams {
    CallToolRequestParams::new(tool.to_owned()).with_arguments(args.as_object().unwrap().clone())
}

async fn call(client: &Client, tool: &str, args: Value) -> CallToolResult {
    tokio::time::timeout(PATIENCE, client.call_tool(params(tool, args)))
        .await
        .unwrap_or_else(|_| panic!("{tool}: no answer within {PATIENCE:?}"))
        .unwrap_or_else(|e| panic!("{tool}: protocol error {e}"))
}

/// The structured content of a successful result.
fn ok(result: &CallToolResult) -> Value {
    assert_ne!(
        result.is_error,
        Some(true),
        "unexpected tool error: {result:?}"
    );
    result
        .structured_content
        .clone()
        .unwrap_or_else(|| panic!("no structured content: {result:?}"))
}

/// The text of a tool error.
fn error_text(result: &CallToolResult) -> String {
    assert_eq!(
        result.is_error,
        Some(true),
        "expected a tool error: {result:?}"
    );
    tool_results::text(result)
}

/// Polls `get_cached_result` until the task is no longer pending or processing; answers the last result.
async fn poll_until_done(client: &Client, ref_id: &str) -> CallToolResult {
    let start = Instant::now();
    loop {
        let result = call(client, "get_cached_result", json!({"ref_id": ref_id})).await;
        let status = result
            .structured_content
            .as_ref()
            .and_then(|v| v.get("status"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        if !matches!(status.as_deref(), Some("pending" | "processing")) {
            return result;
        }
        assert!(start.elapsed() < PATIENCE, "{ref_id} did not finish");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls `tasks/get` until the task is no longer working; answers its payload.
async fn task_until_done(client: &Client, task_id: &str) -> TaskPayload {
    let start = Instant::now();
    loop {
        let got = client
            .peer()
            .get_task(GetTaskParams::new(task_id.to_owned()))
            .await
            .unwrap();
        if got.task.payload != TaskPayload::Working {
            return got.task.payload;
        }
        assert!(start.elapsed() < PATIENCE, "{task_id} did not finish");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn ref_id(v: &Value) -> String {
    v["ref_id"].as_str().expect("a ref_id").to_owned()
}

#[tokio::test]
async fn poll_cycle_with_progress_then_a_cache_hit() {
    let recorder = Recorder::default();
    let client = stdio_client(recorder.clone(), &[]).await;
    let args = json!({"to": 6, "delay_ms": 400});

    let first = ok(&call(&client, "count_to", args.clone()).await);
    assert_eq!(first["status"], "processing", "{first}");
    assert_eq!(first["is_async"], true);
    let id = ref_id(&first);
    // While the client waited (1 s), the steps done so far came as progress notifications.
    // (The client handles notifications on its own task: give it a moment to record them.)
    let start = Instant::now();
    let sent = loop {
        let sent = recorder.progress.lock().unwrap().clone();
        if !sent.is_empty() || start.elapsed() > Duration::from_secs(5) {
            break sent;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(!sent.is_empty(), "no progress notification during the wait");
    // (Step 1 comes at 400 ms; a loaded machine may start following a step later.)
    let first_step = sent[0].progress;
    assert_eq!(
        sent[0].message.as_deref(),
        Some(format!("counted {first_step} of 6").as_str())
    );
    assert_eq!(sent[0].total, Some(6.0));
    assert!(
        sent.windows(2).all(|w| w[0].progress < w[1].progress),
        "progress grows"
    );

    // Polling shows the progress, then the value.
    let mut saw_progress = false;
    let done = loop {
        let poll = ok(&call(&client, "get_cached_result", json!({"ref_id": id})).await);
        if poll["status"] == "processing" {
            let message = poll["progress"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            saw_progress |= message.starts_with("counted ");
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        break poll;
    };
    assert!(saw_progress, "a poll showed the progress message");
    assert_eq!(done["is_complete"], true, "{done}");
    assert_eq!(done["value"], json!({"counted": 6}));

    // The second identical call is a hit: complete at once, same reference.
    let again = ok(&call(&client, "count_to", args).await);
    assert_eq!(
        again["is_complete"], true,
        "a hit, not a new execution: {again}"
    );
    assert_eq!(ref_id(&again), id);
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn cancel_count_to() {
    let client = stdio_client(Recorder::default(), &[]).await;
    let started = ok(&call(&client, "count_to", json!({"to": 100000, "delay_ms": 20})).await);
    let id = ref_id(&started);
    let cancelled = ok(&call(&client, "cancel_task", json!({"ref_id": id})).await);
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    let poll = poll_until_done(&client, &id).await;
    let text = error_text(&poll);
    assert!(text.contains("cancelled"), "{text}");
    assert_eq!(poll.structured_content.unwrap()["status"], "cancelled");
    // Cancelling again: already finished, not an error.
    let again = ok(&call(&client, "cancel_task", json!({"ref_id": id})).await);
    assert_eq!(again["status"], "cancelled");
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn flaky_succeeds_after_retries_and_always_fails_reports_boom() {
    let client = stdio_client(Recorder::default(), &[]).await;
    let first = call(&client, "flaky", json!({"fail_times": 2, "key": "k"})).await;
    let id = ref_id(first.structured_content.as_ref().unwrap());
    let done = ok(&poll_until_done(&client, &id).await);
    assert_eq!(done["value"], json!({"key": "k", "attempts": 3}), "{done}");

    // Fails within its 0.5 s timeout: the call itself answers the error (on a machine too loaded for that, the
    // poll does).
    let mut quick = call(&client, "always_fails", json!({"seconds": 0.0})).await;
    if let Some(processing) = quick
        .structured_content
        .clone()
        .filter(|v| v["status"] == "processing")
    {
        quick = poll_until_done(&client, &ref_id(&processing)).await;
    }
    assert!(error_text(&quick).contains("boom"));
    // Fails after its timeout: the poll answers it.
    let slow = ok(&call(&client, "always_fails", json!({"seconds": 1.0})).await);
    assert_eq!(slow["status"], "processing");
    let failed = poll_until_done(&client, &ref_id(&slow)).await;
    let text = error_text(&failed);
    assert!(text.starts_with("Task failed: boom"), "{text}");
    assert_eq!(failed.structured_content.unwrap()["status"], "failed");
    // retry_task runs it again, under the same reference.
    let retried = call(&client, "retry_task", json!({"ref_id": ref_id(&slow)})).await;
    assert_eq!(
        ref_id(retried.structured_content.as_ref().unwrap()),
        ref_id(&slow)
    );
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn big_list_previews_and_pages() {
    let client = stdio_client(Recorder::default(), &[]).await;
    let tools = client.list_all_tools().await.unwrap();
    let big_list = tools.iter().find(|t| t.name == "big_list").unwrap();
    assert!(
        big_list
            .description
            .as_deref()
            .unwrap()
            .starts_with("Returns `n` items")
    );
    assert_eq!(tools.len(), 12, "seven demo tools and five ready-made ones");
    let first = ok(&call(&client, "big_list", json!({"n": 500})).await);
    assert_eq!(first["is_complete"], false, "a preview: {first}");
    assert_eq!(first["total_items"], 500);
    assert!(first["message"].as_str().unwrap().contains("page"));
    let id = ref_id(&first);
    let page = ok(&call(
        &client,
        "get_cached_result",
        json!({"ref_id": id, "page": 2, "page_size": 10}),
    )
    .await);
    assert_eq!(page["page"], 2);
    assert_eq!(page["total_pages"], 50);
    assert_eq!(page["preview"][0], json!({"id": 10, "name": "item-10"}));
    let beyond = ok(&call(
        &client,
        "get_cached_result",
        json!({"ref_id": id, "page": 1_000_000_000_u64, "page_size": 10}),
    )
    .await);
    assert_eq!(beyond["preview"], json!([]));
    assert_eq!(beyond["total_items"], 500);
    let whole = ok(&call(
        &client,
        "get_cached_result",
        json!({"ref_id": id, "full": true}),
    )
    .await);
    assert_eq!(whole["value"].as_array().unwrap().len(), 500);
    client.cancel().await.unwrap();
}

/// A `sleep` duration no other process runs (tests and test runs go in parallel), as its argument text.
fn unique_seconds() -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!(
        "{}.{}{n}",
        900 + std::process::id() % 97,
        std::process::id()
    )
}

/// Whether a process with exactly this command line is alive.
fn running(cmdline: &[&str]) -> bool {
    let wanted: Vec<u8> = cmdline.iter().flat_map(|a| a.bytes().chain([0])).collect();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .any(|entry| std::fs::read(entry.path().join("cmdline")).is_ok_and(|c| c == wanted))
}

#[tokio::test]
async fn run_command_echo_cancelled_sleep_and_the_allowlist() {
    let client = stdio_client(Recorder::default(), &[]).await;
    let echo = ok(&call(
        &client,
        "run_command",
        json!({"command": "echo", "args": ["hello", "mcp"]}),
    )
    .await);
    assert_eq!(echo["value"]["exit"]["code"], 0, "{echo}");
    assert_eq!(echo["value"]["tail"], "hello mcp\n");
    assert_eq!(echo["value"]["output_bytes"], 10);
    assert!(echo["value"]["duration_ms"].is_u64());

    // A sleep that nobody else runs: cancelled, it is stopped, and no process is left behind.
    let seconds = unique_seconds();
    let sleep = ["sleep", seconds.as_str()];
    let started = ok(&call(
        &client,
        "run_command",
        json!({"command": "sleep", "args": [seconds]}),
    )
    .await);
    assert_eq!(started["status"], "processing");
    assert!(running(&sleep), "the command runs");
    ok(&call(&client, "cancel_task", json!({"ref_id": ref_id(&started)})).await);
    let start = Instant::now();
    while running(&sleep) {
        assert!(
            start.elapsed() < PATIENCE,
            "the cancelled command is still running"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let polled = poll_until_done(&client, &ref_id(&started)).await;
    assert!(error_text(&polled).contains("cancelled"));

    // Off the allowlist: a clear error, naming the list and how to change it.
    let denied = call(
        &client,
        "run_command",
        json!({"command": "rm", "args": ["-rf", "/tmp/x"]}),
    )
    .await;
    let text = error_text(&denied);
    assert!(
        text.contains("`rm` is not allowed") && text.contains("echo, seq, sleep"),
        "{text}"
    );
    assert!(text.contains("--allow-command"), "{text}");
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn run_command_timeout_stops_the_command() {
    let client = stdio_client(Recorder::default(), &[]).await;
    let seconds = unique_seconds();
    let args = json!({"command": "sleep", "args": [seconds], "timeout_seconds": 0.2});
    let result = call(&client, "run_command", args).await;
    let text = error_text(&result);
    assert!(text.contains("within its 0.2 s time limit"), "{text}");
    let sleep = ["sleep", seconds.as_str()];
    assert!(!running(&sleep), "stopped before the error is answered");
    client.cancel().await.unwrap();
}

/// `--command-wait` sets how long `run_command` waits before it answers a reference: a long wait answers a
/// 3 s command's value (the default 2 s would answer a reference), a short one answers a reference long before a
/// 5 s command ends. `MCP_SERVER_COMMAND_WAIT` is the same setting; a bad value stops the server, naming it.
#[tokio::test]
async fn run_command_waits_as_long_as_the_server_says() {
    let long = stdio_client(Recorder::default(), &["--command-wait", "60"]).await;
    let seconds = unique_seconds();
    let three = format!(
        "3{}",
        &seconds[seconds.find('.').unwrap_or(seconds.len())..]
    );
    let done = ok(&call(
        &long,
        "run_command",
        json!({"command": "sleep", "args": [three]}),
    )
    .await);
    assert_eq!(
        done["value"]["exit"]["code"], 0,
        "the value, not a reference: {done}"
    );
    long.cancel().await.unwrap();

    let short = stdio_client(Recorder::default(), &["--command-wait", "0.1"]).await;
    let five = format!(
        "5{}",
        &seconds[seconds.find('.').unwrap_or(seconds.len())..]
    );
    let asked = Instant::now();
    let started = ok(&call(
        &short,
        "run_command",
        json!({"command": "sleep", "args": [five]}),
    )
    .await);
    assert_eq!(started["status"], "processing", "{started}");
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "answered before the command ended"
    );
    ok(&call(&short, "cancel_task", json!({"ref_id": ref_id(&started)})).await);
    short.cancel().await.unwrap();

    for (args, env, named) in [
        (&["--command-wait", "soon"][..], None, "--command-wait"),
        (&[][..], Some("-1"), "MCP_SERVER_COMMAND_WAIT"),
    ] {
        let mut command = std::process::Command::new(server_binary());
        command.args(args).env_remove("MCP_SERVER_COMMAND_WAIT");
        if let Some(value) = env {
            command.env("MCP_SERVER_COMMAND_WAIT", value);
        }
        let out = command
            .stdin(Stdio::null())
            .output()
            .expect("run the example server");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains(named) && stderr.contains("expected a number of seconds"),
            "{stderr}"
        );
    }
}

#[tokio::test]
async fn format_override_and_bad_input_are_tool_errors() {
    let client = stdio_client(Recorder::default(), &[]).await;
    let minimal = ok(&call(
        &client,
        "slow_square",
        json!({"n": 3, "seconds": 3.0, "_async_response_format": "minimal"}),
    )
    .await);
    let keys: Vec<&str> = minimal
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys.len(), 4, "minimal: {minimal}");
    let full = ok(&call(
        &client,
        "get_cached_result",
        json!({"ref_id": ref_id(&minimal), "_async_response_format": "full"}),
    )
    .await);
    assert!(
        full.get("retry_history").is_some() && full.get("expected_schema").is_some(),
        "{full}"
    );

    let bad = call(
        &client,
        "slow_square",
        json!({"n": 3, "seconds": 0.0, "_async_response_format": "verbose"}),
    )
    .await;
    let text = error_text(&bad);
    assert!(
        text.contains("verbose") && text.contains("`minimal`, `standard` or `full`"),
        "{text}"
    );
    let missing = call(&client, "slow_square", json!({"n": 3})).await;
    assert!(error_text(&missing).contains("seconds"));
    let wrong = call(
        &client,
        "slow_square",
        json!({"n": "three", "seconds": 0.0}),
    )
    .await;
    assert!(error_text(&wrong).contains("invalid type"));
    let unknown = call(
        &client,
        "get_cached_result",
        json!({"ref_id": "refcache:0123456789abcdef0123456789abcdef"}),
    )
    .await;
    assert!(error_text(&unknown).contains("Invalid or inaccessible reference"));
    let malformed = call(&client, "get_cached_result", json!({"ref_id": "not-a-ref"})).await;
    assert!(error_text(&malformed).contains("malformed ref_id"));
    let huge = call(
        &client,
        "get_cached_result",
        json!({"ref_id": ref_id(&minimal), "page": 1e300}),
    )
    .await;
    assert!(error_text(&huge).contains("invalid arguments for get_cached_result"));
    let no_args = call(&client, "cancel_task", json!({})).await;
    assert!(error_text(&no_args).contains("missing field `ref_id`"));
    // The server is still up and answers.
    let square = ok(&call(&client, "slow_square", json!({"n": 12, "seconds": 0.0})).await);
    assert_eq!(square["value"], json!({"n": 12, "square": 144}));
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn tasks_extension_get_until_completed_and_cancel() {
    let client = stdio_client(Recorder::with_tasks(), &[]).await;
    let response = client
        .call_tool_once(params("count_to", json!({"to": 4, "delay_ms": 400})))
        .await
        .unwrap();
    let CallToolResponse::Task(created) = response else {
        panic!("expected a task, got {response:?}");
    };
    assert_eq!(created.task.status, McpStatus::Working);
    assert!(created.task.ttl_ms.is_some() && created.task.poll_interval_ms == Some(1000));
    let TaskPayload::Completed { result } = task_until_done(&client, &created.task.task_id).await
    else {
        panic!("expected completed");
    };
    assert_eq!(result["structuredContent"]["value"], json!({"counted": 4}));

    // tasks/cancel.
    let response = client
        .call_tool_once(params("count_to", json!({"to": 100000, "delay_ms": 20})))
        .await
        .unwrap();
    let CallToolResponse::Task(created) = response else {
        panic!("expected a task");
    };
    let id = created.task.task_id.clone();
    client
        .peer()
        .cancel_task(CancelTaskParams::new(id.clone()))
        .await
        .unwrap();
    let got = client
        .peer()
        .get_task(GetTaskParams::new(id.clone()))
        .await
        .unwrap();
    assert_eq!(got.task.task.status, McpStatus::Cancelled);
    // A failed task: `failed`, with the error.
    let response = client
        .call_tool_once(params("always_fails", json!({"seconds": 1.0})))
        .await
        .unwrap();
    let CallToolResponse::Task(created) = response else {
        panic!("expected a task");
    };
    let TaskPayload::Failed { error } = task_until_done(&client, &created.task.task_id).await
    else {
        panic!("expected failed");
    };
    assert_eq!(error["code"], -32603);
    assert_eq!(error["message"], "Task failed: boom");
    assert_eq!(error["data"]["ref_id"], created.task.task_id.as_str());
    // Unknown ids are a -32602 error.
    let unknown = client
        .peer()
        .get_task(GetTaskParams::new(
            "refcache:0123456789abcdef0123456789abcdef".to_owned(),
        ))
        .await;
    assert!(unknown.is_err());
    // A finished call answers its result, not a task.
    let done = client
        .call_tool_once(params("slow_square", json!({"n": 2, "seconds": 0.0})))
        .await
        .unwrap();
    assert!(matches!(done, CallToolResponse::Complete(_)), "{done:?}");
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn two_users_over_http_never_see_each_others_tasks() {
    let server = HttpServer::start(&["--auth-tokens", "alice:token-a,bob:token-b"]).await;
    assert!(server.client(None).await.is_err(), "no token: 401");
    assert!(
        server.client(Some("token-x")).await.is_err(),
        "unknown token: 401"
    );
    let alice = server.client(Some("token-a")).await.unwrap();
    let bob = server
        .client_with(Recorder::with_tasks(), Some("token-b"))
        .await
        .unwrap();

    let args = json!({"to": 100000, "delay_ms": 20});
    let mine = ok(&call(&alice, "count_to", args.clone()).await);
    let id = ref_id(&mine);
    // Bob: as if the task did not exist.
    let get = call(&bob, "get_cached_result", json!({"ref_id": id})).await;
    assert!(error_text(&get).contains("Invalid or inaccessible reference"));
    let cancel = call(&bob, "cancel_task", json!({"ref_id": id})).await;
    assert!(error_text(&cancel).contains("Invalid or inaccessible reference"));
    let retry = call(&bob, "retry_task", json!({"ref_id": id})).await;
    assert!(error_text(&retry).contains("Invalid or inaccessible reference"));
    let listed = ok(&call(&bob, "list_tasks", json!({})).await);
    assert_eq!(listed["tasks"], json!([]));
    assert!(
        bob.peer()
            .get_task(GetTaskParams::new(id.clone()))
            .await
            .is_err(),
        "tasks/get"
    );
    assert!(
        bob.peer()
            .cancel_task(CancelTaskParams::new(id.clone()))
            .await
            .is_err(),
        "tasks/cancel"
    );
    // Alice from another connection (another MCP session) is still Alice: the principal owns the task.
    let alice_again = server.client(Some("token-a")).await.unwrap();
    let seen = ok(&call(&alice_again, "get_cached_result", json!({"ref_id": id})).await);
    assert_eq!(seen["status"], "processing");
    // The same arguments from Bob are his own task, not a join of Alice's.
    // (Bob's client declared the tasks extension: his slow call answers a task.)
    let his = bob.call_tool_once(params("count_to", args)).await.unwrap();
    let CallToolResponse::Task(his) = his else {
        panic!("expected a task, got {his:?}");
    };
    assert_ne!(his.task.task_id, id);
    // Alice still sees and controls hers.
    let listed = ok(&call(&alice, "list_tasks", json!({})).await);
    assert_eq!(listed["tasks"].as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed["tasks"][0]["ref_id"], id.as_str());
    assert_eq!(listed["tasks"][0]["tool"], "count_to");
    let cancelled = ok(&call(&alice, "cancel_task", json!({"ref_id": id})).await);
    assert_eq!(cancelled["status"], "cancelled");
    bob.peer()
        .cancel_task(CancelTaskParams::new(his.task.task_id.clone()))
        .await
        .unwrap();
    alice.cancel().await.unwrap();
    alice_again.cancel().await.unwrap();
    bob.cancel().await.unwrap();
}

#[tokio::test]
async fn anonymous_stateless_http_lists_nothing_and_says_why_but_can_poll_its_reference() {
    use rmcp::model::ProtocolVersion;
    use rmcp::service::{ClientLifecycleMode, serve_client_with_lifecycle};
    let server = HttpServer::start(&[]).await;
    // A 2026-07-28 client: no protocol session, no auth, so no owner.
    let transport = StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(server.url.clone()),
    );
    let client = serve_client_with_lifecycle(
        Recorder::default(),
        transport,
        ClientLifecycleMode::Discover {
            preferred_versions: vec![ProtocolVersion::V_2026_07_28],
        },
    )
    .await
    .unwrap();
    // The first look does not fail: an empty list, and a message that says why and what to do instead.
    let listed = ok(&call(&client, "list_tasks", json!({})).await);
    assert_eq!(listed["tasks"], json!([]), "{listed}");
    let message = listed["message"].as_str().unwrap();
    assert!(
        message.contains("cannot tell callers apart") && message.contains("get_cached_result"),
        "{message}"
    );
    // Bad arguments are still refused, naming them.
    let bad = call(&client, "list_tasks", json!({"limit": 0})).await;
    assert!(error_text(&bad).contains("invalid limit 0"));
    let started = ok(&call(&client, "slow_square", json!({"n": 4, "seconds": 1.5})).await);
    // Even with a task running, the anonymous list stays empty: nobody's tasks are shown.
    let listed = ok(&call(&client, "list_tasks", json!({})).await);
    assert_eq!(listed["tasks"], json!([]), "{listed}");
    let done = ok(&poll_until_done(&client, &ref_id(&started)).await);
    assert_eq!(done["value"], json!({"n": 4, "square": 16}));
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn http_poll_cycle_and_legacy_session_ownership() {
    let server = HttpServer::start(&[]).await;
    let one = server.client(None).await.unwrap();
    let other = server.client(None).await.unwrap();
    let started = ok(&call(&one, "slow_square", json!({"n": 9, "seconds": 1.5})).await);
    assert_eq!(started["status"], "processing");
    let id = ref_id(&started);
    // Another session does not see it.
    let get = call(&other, "get_cached_result", json!({"ref_id": id})).await;
    assert!(error_text(&get).contains("Invalid or inaccessible reference"));
    let done = ok(&poll_until_done(&one, &id).await);
    assert_eq!(done["value"], json!({"n": 9, "square": 81}));
    let listed = ok(&call(&one, "list_tasks", json!({"status": "complete"})).await);
    assert_eq!(listed["tasks"].as_array().unwrap().len(), 1);
    let too_many = call(&one, "list_tasks", json!({"limit": 101})).await;
    assert!(error_text(&too_many).contains("invalid limit 101: list_tasks answers 1 to 100"));
    let bad = call(&one, "list_tasks", json!({"status": "done"})).await;
    assert!(
        error_text(&bad).contains(
            "expected pending, processing, input_required, complete, failed or cancelled"
        )
    );
    one.cancel().await.unwrap();
    other.cancel().await.unwrap();
}

#[tokio::test]
async fn a_command_that_ignores_sigterm_is_killed_with_its_whole_group() {
    let client = stdio_client(
        Recorder::default(),
        &["--allow-command", "sh", "--enable-shell"],
    )
    .await;
    // The shell ignores SIGTERM and keeps starting children: only SIGKILL to the group stops it.
    let script = format!(
        "trap '' TERM; while :; do sleep 0.05; done # {}",
        unique_seconds()
    );
    let started = ok(&call(
        &client,
        "run_command",
        json!({"command": "sh", "args": ["-c", script]}),
    )
    .await);
    assert_eq!(started["status"], "processing");
    let shell = ["sh", "-c", script.as_str()];
    assert!(running(&shell));
    ok(&call(&client, "cancel_task", json!({"ref_id": ref_id(&started)})).await);
    let start = Instant::now();
    while running(&shell) {
        assert!(start.elapsed() < PATIENCE, "the shell survived its cancel");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // It took SIGKILL: SIGTERM alone would not have stopped it.
    assert!(
        start.elapsed() >= Duration::from_secs(3),
        "stopped after {:?}",
        start.elapsed()
    );
    client.cancel().await.unwrap();
}

/// Switching to Redis by configuration alone: two replicas of the unchanged example server, started with
/// `REFCACHE_BACKEND=redis://...`, share one task. A call on replica A is polled to completion on replica B and is a
/// hit there; the principal owns it on both, and another user sees it on neither.
#[cfg(feature = "redis")]
#[tokio::test]
async fn two_replicas_on_redis_share_a_task_by_config_alone() {
    let redis =
        refcache::redis::RedisServer::start().expect("start redis-server (is it installed?)");
    let backend = format!("{}?key_prefix=mcp-test", redis.url());
    let tokens = ["--auth-tokens", "alice:token-a,bob:token-b"];
    let a = HttpServer::start_on(Some(&backend), &tokens).await;
    let b = HttpServer::start_on(Some(&backend), &tokens).await;
    let alice_a = a.client(Some("token-a")).await.unwrap();
    let alice_b = b.client(Some("token-a")).await.unwrap();
    let bob_a = a.client(Some("token-b")).await.unwrap();
    let bob_b = b.client(Some("token-b")).await.unwrap();

    let args = json!({"n": 12, "seconds": 3.0});
    let first = ok(&call(&alice_a, "slow_square", args.clone()).await);
    assert_eq!(first["status"], "processing", "{first}");
    let id = ref_id(&first);

    // Bob, on either replica: as if the task did not exist.
    for bob in [&bob_a, &bob_b] {
        let denied = call(bob, "get_cached_result", json!({"ref_id": id})).await;
        assert!(error_text(&denied).contains("Invalid or inaccessible reference"));
    }

    let done = ok(&poll_until_done(&alice_b, &id).await);
    assert_eq!(done["value"]["square"], 144, "{done}");
    let hit = ok(&call(&alice_b, "slow_square", args).await);
    assert_eq!(hit["value"]["square"], 144, "{hit}");
    assert_eq!(
        ref_id(&hit),
        id,
        "a hit on the other replica, not a second execution"
    );
    for client in [alice_a, alice_b, bob_a, bob_b] {
        client.cancel().await.unwrap();
    }
}

/// Switching to Postgres by configuration alone: two replicas of the unchanged example server, started with
/// `REFCACHE_BACKEND=postgres://...`, share one task, as on Redis. A call on replica A is polled to completion on
/// replica B and is a hit there; the principal owns it on both, and another user sees it on neither.
#[cfg(feature = "postgres")]
#[tokio::test]
async fn two_replicas_on_postgres_share_a_task_by_config_alone() {
    let postgres = refcache::postgres::PostgresServer::start()
        .expect("start PostgreSQL (is the postgresql package installed?)");
    let backend = format!("{}?schema=mcp_test", postgres.url());
    let tokens = ["--auth-tokens", "alice:token-a,bob:token-b"];
    let a = HttpServer::start_on(Some(&backend), &tokens).await;
    let b = HttpServer::start_on(Some(&backend), &tokens).await;
    let alice_a = a.client(Some("token-a")).await.unwrap();
    let alice_b = b.client(Some("token-a")).await.unwrap();
    let bob_a = a.client(Some("token-b")).await.unwrap();
    let bob_b = b.client(Some("token-b")).await.unwrap();

    let args = json!({"n": 12, "seconds": 3.0});
    let first = ok(&call(&alice_a, "slow_square", args.clone()).await);
    assert_eq!(first["status"], "processing", "{first}");
    let id = ref_id(&first);

    // Bob, on either replica: as if the task did not exist.
    for bob in [&bob_a, &bob_b] {
        let denied = call(bob, "get_cached_result", json!({"ref_id": id})).await;
        assert!(error_text(&denied).contains("Invalid or inaccessible reference"));
    }

    let done = ok(&poll_until_done(&alice_b, &id).await);
    assert_eq!(done["value"]["square"], 144, "{done}");
    let hit = ok(&call(&alice_b, "slow_square", args).await);
    assert_eq!(hit["value"]["square"], 144, "{hit}");
    assert_eq!(
        ref_id(&hit),
        id,
        "a hit on the other replica, not a second execution"
    );
    for client in [alice_a, alice_b, bob_a, bob_b] {
        client.cancel().await.unwrap();
    }
}

/// The desktop-client JSON config that docs/mcp.md and docs/guide.md show, launched as a desktop client launches
/// it: its `command` (the documented path, pointed at the built binary), `args` and `env`, over stdio. It must
/// parse, name the example binary, and give a server whose `run_command` obeys the configured allowlist.
#[tokio::test]
async fn the_documented_desktop_client_config_launches_the_server() {
    const DOCUMENTED_PATH: &str = "/path/to/refcache/target/release/mcp_server";
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut configs = Vec::new();
    for doc in ["docs/mcp.md", "docs/guide.md"] {
        let text = std::fs::read_to_string(root.join(doc)).unwrap();
        let block = text
            .split("```json\n")
            .skip(1)
            .map(|rest| rest.split("```").next().unwrap())
            .find(|block| block.contains("\"mcpServers\""))
            .unwrap_or_else(|| panic!("{doc}: no mcpServers JSON block"));
        let config: Value =
            serde_json::from_str(block).unwrap_or_else(|e| panic!("{doc}: bad JSON: {e}"));
        configs.push(config);
    }
    assert_eq!(configs[0], configs[1], "the two docs show the same config");
    let server = &configs[0]["mcpServers"]["refcache-demo"];
    assert_eq!(server["command"], DOCUMENTED_PATH);
    let args: Vec<String> = serde_json::from_value(server["args"].clone()).unwrap();
    let env: std::collections::BTreeMap<String, String> =
        serde_json::from_value(server["env"].clone()).unwrap();

    let transport = TokioChildProcess::builder(
        tokio::process::Command::new(server_binary()).configure(|cmd| {
            cmd.args(&args);
            cmd.env_remove("REFCACHE_BACKEND");
            cmd.envs(&env);
        }),
    )
    .stderr(Stdio::inherit())
    .spawn()
    .expect("start the example server")
    .0;
    let client = Recorder::default()
        .serve(transport)
        .await
        .expect("initialize over stdio");
    let tools = client.peer().list_all_tools().await.unwrap();
    for name in [
        "slow_square",
        "get_cached_result",
        "cancel_task",
        "run_command",
    ] {
        assert!(tools.iter().any(|t| t.name == name), "no tool {name}");
    }
    // `ls` is allowed only by the config's MCP_SERVER_ALLOW_COMMANDS.
    let listed = ok(&call(
        &client,
        "run_command",
        json!({"command": "ls", "args": [root.join("docs").to_str().unwrap()]}),
    )
    .await);
    let listed = if listed["status"] == "processing" {
        ok(&poll_until_done(&client, &ref_id(&listed)).await)
    } else {
        listed
    };
    assert!(
        listed["value"]["tail"].as_str().unwrap().contains("mcp.md"),
        "{listed}"
    );
    client.cancel().await.unwrap();
}
