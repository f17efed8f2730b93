//! An MCP server with long-running cached tools, over stdio or streamable HTTP.
//!
//! ```text
//! cargo run -p mcp_server                                   # stdio
//! cargo run -p mcp_server -- --http 127.0.0.1:8765          # http://127.0.0.1:8765/mcp, page at /
//! cargo run -p mcp_server -- --http 127.0.0.1:8765 --auth-tokens alice:token-a,bob:token-b
//! cargo run -p mcp_server -- --allow-command echo,sleep,seq,ls
//! cargo run -p mcp_server -- --allow-command sh --enable-shell       # a shell only when asked for
//! cargo run -p mcp_server -- --command-wait 30                        # run_command waits up to 30 s
//! ```
//!
//! The backend comes from the environment or `refcache.toml`, as for every refcache program (`REFCACHE_BACKEND`,
//! `REFCACHE_MAX_SIZE`, ...; see the crate docs). `MCP_SERVER_ALLOW_COMMANDS` is the allowlist of `run_command`
//! when no `--allow-command` is given; the default list is `echo,sleep,seq`. (It is not a `REFCACHE_*` variable:
//! refcache rejects the ones it does not know, so that a typo in its settings never goes unnoticed.)
//! `--command-wait SECONDS` (else `MCP_SERVER_COMMAND_WAIT`, else 2) is how long a `run_command` call waits for the
//! command's result before it answers a reference to poll (`Commands::wait`). `run_command`
//! is refcache's command job (`refcache::command`, `docs/commands.md`): a shell or launcher on the list is refused
//! unless `--enable-shell` is given.
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
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use refcache::command::{CommandSpec, Commands, run_command};
use refcache::mcp::rmcp::handler::server::router::tool::ToolRouter;
use refcache::mcp::rmcp::handler::server::wrapper::Parameters;
use refcache::mcp::rmcp::model::{
    CallToolResponse, CancelTaskParams, GetTaskParams, GetTaskResult, Implementation, ServerConfig,
    UpdateTaskParams,
};
use refcache::mcp::rmcp::service::RequestContext;
use refcache::mcp::rmcp::{ErrorData, RoleServer, ServerHandler, tool, tool_handler, tool_router};
use refcache::mcp::{FormatOverride, McpRefCache, RefCacheServer};
use refcache::{Actor, RefCache, TaskContext, TaskError, cached};
use rmcp::ServiceExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How long a stopped command may take to exit before it is killed.
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
struct Square {
    n: i64,
    square: i64,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
struct Item {
    id: u64,
    name: String,
}

/// State shared by every connection and session.
#[derive(Debug, Default)]
struct Shared {
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

    /// Runs an allowlisted program (no shell) and returns its exit, duration and output tail; its output streams
    /// into the task's log as it runs (read it with get_cached_result's output_offset). Cancel it with
    /// cancel_task. It waits up to the server's --command-wait (2 s unless set) before answering a ref_id. The
    /// same cached function as the web page's form: equal commands are one execution.
    #[tool(name = "run_command")]
    async fn run_command(
        &self,
        format: FormatOverride,
        Parameters(spec): Parameters<CommandSpec>,
        request: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let cache = self.refcache.cache().clone();
        refcache::mcp::tool_call(self, &cache, format, request, run_command(spec)).await
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

/// Command-line options.
struct Options {
    http: Option<String>,
    tokens: HashMap<String, String>,
    allowed: BTreeSet<String>,
    shell: bool,
    /// How long a `run_command` call waits before it answers a reference.
    command_wait: Duration,
}

/// `--command-wait`'s value as a duration: seconds from 0 to an hour.
fn command_wait(name: &str, text: &str) -> Result<Duration, String> {
    match text.trim().parse::<f64>() {
        Ok(seconds) if (0.0..=MAX_SECONDS).contains(&seconds) => {
            Ok(Duration::from_secs_f64(seconds))
        }
        _ => Err(format!(
            "{name}: expected a number of seconds from 0 to {MAX_SECONDS}, got `{text}`"
        )),
    }
}

fn parse_options() -> Result<Options, String> {
    let mut http = None;
    let mut tokens = HashMap::new();
    let mut allowed: Option<BTreeSet<String>> = None;
    let mut shell = false;
    let mut wait = None;
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
            "--enable-shell" => shell = true,
            "--command-wait" => {
                wait = Some(command_wait("--command-wait", &value("--command-wait")?)?);
            }
            "--help" | "-h" => {
                return Err(
                    "usage: mcp_server [--http ADDR] [--auth-tokens user:token,...] \
                            [--allow-command cmd,...] [--enable-shell] [--command-wait SECONDS]"
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
    let command_wait = match wait {
        Some(wait) => wait,
        None => match std::env::var("MCP_SERVER_COMMAND_WAIT") {
            Ok(text) => command_wait("MCP_SERVER_COMMAND_WAIT", &text)?,
            Err(_) => refcache::command::DEFAULT_WAIT,
        },
    };
    if !tokens.is_empty() && http.is_none() {
        return Err("--auth-tokens needs --http: stdio has no requests to authenticate".into());
    }
    Ok(Options {
        http,
        tokens,
        allowed,
        shell,
        command_wait,
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
    // The settings of `run_command` (refcache's command job), for every connection and the web page alike.
    let mut commands = Commands::new()
        .allow(options.allowed)
        .grace(KILL_AFTER)
        .wait(options.command_wait)
        .allowlist_hint(
            "start the server with --allow-command or MCP_SERVER_ALLOW_COMMANDS to change the list",
        );
    if options.shell {
        commands = commands.enable_shell();
    }
    commands.install()?;
    let shared = Arc::new(Shared {
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
    // Its "Run a command" form calls the same `run_command` as the MCP tool: equal commands are one execution.
    let mut web = refcache::web::WebRefCache::new(page_cache)
        .with_shutdown(stop.clone())
        .with_commands(Arc::new(refcache::command::PageRunner));
    for (token, user) in &tokens {
        web = web.with_token(token.clone(), Actor::user(user.clone()));
    }
    let mut mcp = axum::Router::new().nest_service("/mcp", service);
    let anonymous = tokens.is_empty();
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
    if anonymous {
        // The first look must not puzzle: say who owns what before a client asks.
        eprintln!(
            "mcp_server: no --auth-tokens, so HTTP callers are anonymous (MCP 2026-07-28 clients) or one owner per \
             MCP session (older clients). Anonymous callers poll their ref_ids with get_cached_result; list_tasks \
             lists nothing for them and says why. To see tasks per user, restart with \
             --auth-tokens alice:token-a,bob:token-b and send `Authorization: Bearer token-a`."
        );
    }
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
