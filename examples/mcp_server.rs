//! An MCP server with long-running cached tools, over stdio or streamable HTTP.
//!
//! ```text
//! cargo run --example mcp_server                                   # stdio
//! cargo run --example mcp_server -- --http 127.0.0.1:8765          # http://127.0.0.1:8765/mcp, page at /
//! cargo run --example mcp_server -- --http 127.0.0.1:8765 --auth-tokens alice:token-a,bob:token-b
//! cargo run --example mcp_server -- --allow-command echo,sleep,seq,ls
//! ```
//!
//! The backend comes from the environment or `refcache.toml`, as for every refcache program (`REFCACHE_BACKEND`,
//! `REFCACHE_MAX_SIZE`, ...; see the crate docs). `MCP_SERVER_ALLOW_COMMANDS` is the allowlist of `run_command`
//! when no `--allow-command` is given; the default list is `echo,sleep,seq`. (It is not a `REFCACHE_*` variable:
//! refcache rejects the ones it does not know, so that a typo in its settings never goes unnoticed.)
//!
//! `--auth-tokens` turns on a demo bearer-token check for HTTP: `Authorization: Bearer token-a` is user `alice`,
//! and a missing or unknown token gets HTTP 401. It shows per-user ownership of tasks. A real deployment puts its
//! own auth layer in its place: anything that inserts a `refcache::Actor` into the HTTP request's extensions.
//!
//! Over HTTP, the live task page is served at `/` beside `/mcp` (`refcache::web`): each user's tasks, their output as
//! it arrives, cancel and retry. With `--auth-tokens`, a browser signs in at `/login` with its token.
//!
//! Tools: `slow_square`, `delete_records` (asks for a confirmation mid-task), `count_to`, `flaky`, `always_fails`,
//! `big_list`, `run_command`, and the ready-made `get_cached_result`, `cancel_task`, `list_tasks`, `retry_task` and
//! `respond_task`. See `docs/mcp.md`.

use std::collections::{BTreeSet, HashMap};
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use refcache::mcp::rmcp::handler::server::router::tool::ToolRouter;
use refcache::mcp::rmcp::handler::server::wrapper::Parameters;
use refcache::mcp::rmcp::model::{
    CancelTaskParams, GetTaskParams, GetTaskResult, Implementation, ServerConfig, UpdateTaskParams,
};
use refcache::mcp::rmcp::service::RequestContext;
use refcache::mcp::rmcp::{ErrorData, RoleServer, ServerHandler, tool, tool_handler, tool_router};
use refcache::mcp::{McpRefCache, RefCacheServer};
use refcache::{Actor, RefCache, TaskContext, TaskError, cached};
use rmcp::ServiceExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncRead;

/// How much of each output stream `run_command` keeps.
const OUTPUT_LIMIT: usize = 1024 * 1024;
/// How long a terminated command may take to exit before it is killed.
const KILL_AFTER: Duration = Duration::from_secs(5);
/// The most items `big_list` makes.
const BIG_LIST_MAX: u64 = 1_000_000;
/// The longest `slow_square` and `always_fails` sleep.
const MAX_SECONDS: f64 = 3600.0;

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
struct SlowSquareArgs {
    /// The number to square.
    n: i64,
    /// How long to take, in seconds.
    seconds: f64,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
struct DeleteRecordsArgs {
    /// How many records to delete (1 to 1000); the tool asks for a confirmation first.
    count: u32,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
struct CountToArgs {
    /// Count from 1 to this.
    to: u64,
    /// Pause between steps, in milliseconds.
    delay_ms: u64,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
struct FlakyArgs {
    /// How many attempts fail before one succeeds.
    fail_times: u32,
    /// Attempts are counted per key.
    key: String,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
struct AlwaysFailsArgs {
    /// How long to take before failing, in seconds.
    seconds: f64,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
struct BigListArgs {
    /// How many items.
    n: u64,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
struct RunCommandArgs {
    /// The program: its name must be on the server's allowlist. It runs without a shell.
    command: String,
    /// Its arguments.
    #[serde(default)]
    args: Vec<String>,
    /// Stop it after this many seconds.
    timeout_seconds: Option<f64>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
struct Square {
    n: i64,
    square: i64,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
struct Item {
    id: u64,
    name: String,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
struct CommandOutput {
    exit_code: Option<i32>,
    stdout: String,
    stderr: String,
    duration_ms: u64,
}

/// State shared by every connection and session.
#[derive(Debug, Default)]
struct Shared {
    allowed: BTreeSet<String>,
    attempts: Mutex<HashMap<String, u32>>,
}

#[derive(Clone)]
struct Demo {
    tool_router: ToolRouter<Self>,
    refcache: McpRefCache,
    shared: Arc<Shared>,
}

fn sleep_for(seconds: f64) -> Result<Duration, String> {
    if !(0.0..=MAX_SECONDS).contains(&seconds) {
        return Err(format!(
            "seconds must be from 0 to {MAX_SECONDS}, got {seconds}"
        ));
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[tool_router]
impl Demo {
    fn new(refcache: McpRefCache, shared: Arc<Shared>) -> Self {
        Self {
            tool_router: Self::tool_router() + refcache::mcp::tool_router::<Self>(),
            refcache,
            shared,
        }
    }

    /// Squares n after sleeping `seconds`. Longer than 1 s answers a ref_id to poll with get_cached_result.
    #[cached(async_timeout = 1.0)]
    #[tool]
    async fn slow_square(
        &self,
        Parameters(args): Parameters<SlowSquareArgs>,
    ) -> Result<Square, String> {
        tokio::time::sleep(sleep_for(args.seconds)?).await;
        let square = args
            .n
            .checked_mul(args.n)
            .ok_or_else(|| format!("{} squared does not fit in 64 bits", args.n))?;
        Ok(Square { n: args.n, square })
    }

    /// Asks for a confirmation mid-task, then "deletes" `count` records (nothing is really deleted). Answer the
    /// question with respond_task (or MCP `tasks/update`); it waits up to 10 minutes.
    #[cached(async_timeout = 1.0)]
    #[tool]
    async fn delete_records(
        &self,
        Parameters(args): Parameters<DeleteRecordsArgs>,
        ctx: TaskContext,
    ) -> Result<serde_json::Value, TaskError> {
        if !(1..=1000).contains(&args.count) {
            return Err(TaskError::new(format!(
                "invalid count {}: delete_records deletes 1 to 1000 records",
                args.count
            ))
            .permanent());
        }
        let schema = serde_json::json!({
            "type": "object",
            "properties": {"confirm": {"type": "boolean", "description": "true to delete"}},
            "required": ["confirm"],
        });
        let answer = ctx
            .ask(
                format!("Delete {} records?", args.count),
                schema,
                Some(Duration::from_secs(600)),
            )
            .await?;
        let deleted = if answer["confirm"] == true {
            args.count
        } else {
            0
        };
        Ok(serde_json::json!({"deleted": deleted}))
    }

    /// Counts from 1 to `to`, pausing `delay_ms` between steps and reporting each step as progress. Can be
    /// cancelled with cancel_task.
    #[cached(async_timeout = 1.0)]
    #[tool]
    async fn count_to(
        &self,
        Parameters(args): Parameters<CountToArgs>,
        ctx: TaskContext,
    ) -> Result<serde_json::Value, TaskError> {
        for i in 1..=args.to {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(args.delay_ms)) => {}
                () = ctx.cancelled() => return Err(TaskError::new("cancelled").permanent()),
            }
            ctx.progress(
                i as f64,
                Some(args.to as f64),
                format!("counted {i} of {}", args.to),
            )?;
        }
        Ok(serde_json::json!({ "counted": args.to }))
    }

    /// Fails its first `fail_times` attempts for `key`, then succeeds. Retries up to 3 times by itself.
    #[cached(async_timeout = 1.0, max_retries = 3, retry_backoff = 0.1)]
    #[tool]
    async fn flaky(
        &self,
        Parameters(args): Parameters<FlakyArgs>,
    ) -> Result<serde_json::Value, String> {
        let attempt = {
            let mut attempts = self
                .shared
                .attempts
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let count = attempts.entry(args.key.clone()).or_default();
            *count += 1;
            *count
        };
        if attempt <= args.fail_times {
            return Err(format!("transient failure {attempt}"));
        }
        Ok(serde_json::json!({ "key": args.key, "attempts": args.fail_times + 1 }))
    }

    /// Fails with `boom` after `seconds`.
    #[cached(async_timeout = 0.5)]
    #[tool]
    async fn always_fails(
        &self,
        Parameters(args): Parameters<AlwaysFailsArgs>,
    ) -> Result<serde_json::Value, TaskError> {
        tokio::time::sleep(sleep_for(args.seconds).map_err(|e| TaskError::new(e).permanent())?)
            .await;
        Err(TaskError::new("boom").permanent())
    }

    /// Returns `n` items `{id, name}`. A large list answers a preview; page through it with get_cached_result.
    #[cached(async_timeout = 1.0)]
    #[tool]
    async fn big_list(
        &self,
        Parameters(args): Parameters<BigListArgs>,
    ) -> Result<Vec<Item>, String> {
        if args.n > BIG_LIST_MAX {
            return Err(format!("n must be at most {BIG_LIST_MAX}, got {}", args.n));
        }
        Ok((0..args.n)
            .map(|i| Item {
                id: i,
                name: format!("item-{i}"),
            })
            .collect())
    }

    /// Runs an allowlisted program (no shell) and returns its exit code, stdout, stderr and duration. Each output
    /// line is reported as progress. Cancel it with cancel_task.
    #[cached(async_timeout = 2.0)]
    #[tool]
    async fn run_command(
        &self,
        Parameters(args): Parameters<RunCommandArgs>,
        ctx: TaskContext,
    ) -> Result<CommandOutput, TaskError> {
        run_command(&self.shared.allowed, args, &ctx).await
    }
}

impl RefCacheServer for Demo {
    fn refcache(&self) -> &McpRefCache {
        &self.refcache
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Demo {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(refcache::mcp::server_capabilities())
            .with_server_info(Implementation::new(
                "refcache-demo",
                env!("CARGO_PKG_VERSION"),
            ))
            .with_instructions(
                "Long tools answer a ref_id when they take longer than their timeout: poll it with \
                 get_cached_result until it is complete; cancel it with cancel_task.",
            )
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

/// `run_command`'s body.
async fn run_command(
    allowed: &BTreeSet<String>,
    args: RunCommandArgs,
    ctx: &TaskContext,
) -> Result<CommandOutput, TaskError> {
    if !allowed.contains(&args.command) {
        return Err(TaskError::new(format!(
            "command `{}` is not allowed: this server runs only {} (start it with --allow-command or \
             MCP_SERVER_ALLOW_COMMANDS to change the list)",
            // At most a short prefix of what the caller sent.
            refcache::excerpt(&args.command, 100),
            allowed.iter().cloned().collect::<Vec<_>>().join(", ")
        ))
        .with_code("NOT_ALLOWED")
        .permanent());
    }
    let timeout = args
        .timeout_seconds
        .map(|s| sleep_for(s).map_err(|e| TaskError::new(e).permanent()))
        .transpose()?;
    let start = Instant::now();
    // Its own process group, so that stopping it stops whatever it started too.
    let mut child = tokio::process::Command::new(&args.command)
        .args(&args.args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0)
        .spawn()
        .map_err(|e| TaskError::new(format!("cannot start `{}`: {e}", args.command)).permanent())?;
    // Whatever ends this future (the command's exit, a cancel, a timeout, the task being aborted after its cancel
    // grace, a shutdown) kills what is left of the group.
    let group = ProcessGroup(child.id().and_then(|p| i32::try_from(p).ok()));
    let lines = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let stdout = tokio::spawn(collect(child.stdout.take(), ctx.clone(), lines.clone()));
    let stderr = tokio::spawn(collect(child.stderr.take(), ctx.clone(), lines));
    let deadline = async {
        match timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    let stopped = tokio::select! {
        status = child.wait() => Ok(status),
        () = ctx.cancelled() => Err(None),
        () = deadline => Err(timeout),
    };
    let status = match stopped {
        Ok(status) => {
            status.map_err(|e| TaskError::new(format!("waiting for the command: {e}")))?
        }
        Err(timed_out) => {
            group.stop(&mut child).await;
            let error = match timed_out {
                Some(t) => format!(
                    "`{}` timed out after {} s and was stopped",
                    args.command,
                    t.as_secs_f64()
                ),
                None => format!("`{}` was cancelled and stopped", args.command),
            };
            return Err(TaskError::new(error).permanent());
        }
    };
    // The command is done; something it started may still hold its output open: stop it, then read what is left.
    group.kill();
    let read = |reader: tokio::task::JoinHandle<String>| async move {
        tokio::time::timeout(KILL_AFTER, reader)
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default()
    };
    let (stdout, stderr) = (read(stdout).await, read(stderr).await);
    Ok(CommandOutput {
        exit_code: status.code(),
        stdout,
        stderr,
        duration_ms: u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX),
    })
}

/// A command's process group: SIGKILLed when dropped.
struct ProcessGroup(Option<i32>);

impl ProcessGroup {
    fn signal(&self, signal: nix::sys::signal::Signal) {
        if let Some(pgid) = self.0 {
            let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), signal);
        }
    }

    fn kill(&self) {
        self.signal(nix::sys::signal::Signal::SIGKILL);
    }

    /// SIGTERM, then SIGKILL after [`KILL_AFTER`] if the command has not exited.
    async fn stop(&self, child: &mut tokio::process::Child) {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        if tokio::time::timeout(KILL_AFTER, child.wait())
            .await
            .is_err()
        {
            self.kill();
            let _ = child.wait().await;
        }
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Reads a stream, reporting each line as progress (its first 200 characters), and keeps the first
/// [`OUTPUT_LIMIT`] bytes; the rest is counted and dropped. Memory stays bounded whatever the command writes,
/// long lines included.
async fn collect(
    stream: Option<impl AsyncRead + Unpin>,
    ctx: TaskContext,
    lines: Arc<std::sync::atomic::AtomicU64>,
) -> String {
    use tokio::io::AsyncReadExt;
    const LINE_SHOWN: usize = 800;
    let Some(mut stream) = stream else {
        return String::new();
    };
    let mut kept: Vec<u8> = Vec::new();
    let mut dropped = 0usize;
    let mut line: Vec<u8> = Vec::new();
    let report = |line: &mut Vec<u8>| {
        let text = String::from_utf8_lossy(line);
        let n = lines.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let shown: String = text.trim_end().chars().take(200).collect();
        let _ = ctx.progress(n as f64, None, shown);
        line.clear();
    };
    let mut chunk = vec![0u8; 8192];
    loop {
        let n = match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let bytes = &chunk[..n];
        let room = OUTPUT_LIMIT.saturating_sub(kept.len());
        if dropped == 0 && bytes.len() <= room {
            kept.extend_from_slice(bytes);
        } else {
            kept.extend_from_slice(&bytes[..room.min(bytes.len())]);
            dropped += bytes.len() - room.min(bytes.len());
        }
        for &b in bytes {
            if b == b'\n' {
                report(&mut line);
            } else if line.len() < LINE_SHOWN {
                line.push(b);
            }
        }
    }
    if !line.is_empty() {
        report(&mut line);
    }
    let mut text = String::from_utf8_lossy(&kept).into_owned();
    if dropped > 0 {
        text.push_str(&format!("\n[... {dropped} more bytes truncated]\n"));
    }
    text
}

/// Command-line options.
struct Options {
    http: Option<String>,
    tokens: HashMap<String, String>,
    allowed: BTreeSet<String>,
}

fn parse_options() -> Result<Options, String> {
    let mut http = None;
    let mut tokens = HashMap::new();
    let mut allowed: Option<BTreeSet<String>> = None;
    let mut args = std::env::args().skip(1);
    let list = |text: &str| -> BTreeSet<String> {
        text.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    };
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--http" => http = Some(value("--http")?),
            "--auth-tokens" => {
                for pair in value("--auth-tokens")?.split(',').filter(|p| !p.is_empty()) {
                    let (user, token) = pair
                        .split_once(':')
                        .ok_or_else(|| format!("--auth-tokens: `{pair}` is not `user:token`"))?;
                    tokens.insert(token.to_owned(), user.to_owned());
                }
            }
            "--allow-command" => allowed
                .get_or_insert_with(BTreeSet::new)
                .extend(list(&value("--allow-command")?)),
            "--help" | "-h" => {
                return Err(
                    "usage: mcp_server [--http ADDR] [--auth-tokens user:token,...] \
                            [--allow-command cmd,...]"
                        .into(),
                );
            }
            other => return Err(format!("unknown option `{other}` (try --help)")),
        }
    }
    let allowed = match allowed {
        Some(list) => list,
        None => match std::env::var("MCP_SERVER_ALLOW_COMMANDS") {
            Ok(text) => list(&text),
            Err(_) => list("echo,sleep,seq"),
        },
    };
    if !tokens.is_empty() && http.is_none() {
        return Err("--auth-tokens needs --http: stdio has no requests to authenticate".into());
    }
    Ok(Options {
        http,
        tokens,
        allowed,
    })
}

#[tokio::main]
async fn main() {
    let options = match parse_options() {
        Ok(options) => options,
        Err(e) => {
            eprintln!("mcp_server: {e}");
            std::process::exit(2);
        }
    };
    // Errors are printed with their message (a bad REFCACHE_* setting names the key and the fix), not as Debug.
    if let Err(e) = serve(options).await {
        eprintln!("mcp_server: {e}");
        std::process::exit(1);
    }
}

async fn serve(options: Options) -> Result<(), Box<dyn std::error::Error>> {
    let cache: RefCache = refcache::default_cache()?.clone();
    // One line on stderr (stdout is the protocol over stdio): which transport and backend, so that a backend set in
    // a shell but not in a desktop client's `env` is seen at once.
    let transport = match &options.http {
        None => "stdio".to_owned(),
        Some(addr) => format!("streamable HTTP on {addr}"),
    };
    eprintln!(
        "mcp_server: MCP over {transport}, backend {}, commands allowed: {}",
        cache.backend().name(),
        options
            .allowed
            .iter()
            .cloned()
            .collect::<Vec<_>>()
            .join(",")
    );
    let shared = Arc::new(Shared {
        allowed: options.allowed,
        attempts: Mutex::default(),
    });
    match options.http {
        None => {
            // stdout is the protocol: anything else goes to stderr.
            let server = Demo::new(McpRefCache::new(cache.clone()), shared);
            let running = server.serve(rmcp::transport::stdio()).await?;
            let stop = running.cancellation_token();
            tokio::spawn(async move {
                terminated().await;
                stop.cancel();
            });
            running.waiting().await?;
        }
        Some(addr) => serve_http(&addr, cache.clone(), shared, options.tokens).await?,
    }
    cache.shutdown(KILL_AFTER + Duration::from_secs(1)).await?;
    Ok(())
}

async fn serve_http(
    addr: &str,
    cache: RefCache,
    shared: Arc<Shared>,
    tokens: HashMap<String, String>,
) -> Result<(), Box<dyn std::error::Error>> {
    use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
    use rmcp::transport::streamable_http_server::{
        StreamableHttpServerConfig, StreamableHttpService,
    };
    // Every session (and every stateless request) gets a server; they share the cache and the state.
    let stop = tokio_util::sync::CancellationToken::new();
    let page_cache = cache.clone();
    let service = StreamableHttpService::new(
        move || Ok(Demo::new(McpRefCache::new(cache.clone()), shared.clone())),
        LocalSessionManager::default().into(),
        // Cancelled at shutdown, so that open SSE streams end and the server can stop.
        StreamableHttpServerConfig::default().with_cancellation_token(stop.clone()),
    );
    // The live task page at `/` (feature `web`): the same cache and the same owners as `/mcp`. With tokens, a
    // browser signs in at `/login` (a cookie), a script sends the bearer token; `/mcp` checks the header below.
    let mut web = refcache::web::WebRefCache::new(page_cache).with_shutdown(stop.clone());
    for (token, user) in &tokens {
        web = web.with_token(token.clone(), Actor::user(user.clone()));
    }
    let mut mcp = axum::Router::new().nest_service("/mcp", service);
    if !tokens.is_empty() {
        let tokens = Arc::new(tokens);
        mcp = mcp.layer(axum::middleware::from_fn(
            move |mut request: axum::extract::Request, next: axum::middleware::Next| {
                let tokens = tokens.clone();
                async move {
                    let user = request
                        .headers()
                        .get(http::header::AUTHORIZATION)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.strip_prefix("Bearer "))
                        .and_then(|token| tokens.get(token))
                        .cloned();
                    match user {
                        // What a real auth layer does: the authenticated principal, as an actor.
                        Some(user) => {
                            request.extensions_mut().insert(Actor::user(user));
                            next.run(request).await
                        }
                        None => axum::response::IntoResponse::into_response((
                            http::StatusCode::UNAUTHORIZED,
                            [(http::header::WWW_AUTHENTICATE, "Bearer")],
                            "missing or unknown bearer token\n",
                        )),
                    }
                }
            },
        ));
    }
    let app = mcp.merge(refcache::web::router(web));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    eprintln!("mcp_server: serving http://{local}/mcp");
    eprintln!("mcp_server: the task page is at http://{local}/");
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            terminated().await;
            stop.cancel();
        })
        .await?;
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM. Then the server stops taking requests, and `main` shuts the cache down: running
/// tasks get their cancel grace, and `run_command` stops its commands.
async fn terminated() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
