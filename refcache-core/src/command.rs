//! Commands (feature `command`): a ready job that runs an allowlisted program and streams its output.
//!
//! A [`CommandSpec`] (program, arguments, working directory, environment, stdin, time limit) is the key of
//! [`run_command`], so identical commands are single-flight like any cached call, wherever they come from: an MCP
//! tool and a web form that both call [`run_command`] with the same spec join one execution.
//!
//! - The program must be on the allowlist of the [`Commands`] installed in the process
//!   ([`Commands::install`]); shells and launchers (`sh`, `bash`, `env`, `xargs`, ...) are refused unless the
//!   server calls [`Commands::enable_shell`]. There is no shell in between: the arguments go to the program as
//!   they are.
//! - The child's environment is cleared: it gets `PATH`, `HOME`, `LANG`, `LC_ALL` and `TZ` from the server (when
//!   set), and the spec's variables that [`Commands::allow_env`] names.
//! - stdout and stderr stream into the task's output log ([`TaskContext::output`]) as the child writes them.
//! - The result ([`CommandOutcome`]) holds the exit, the duration and the output's tail; a non-zero exit or a
//!   signal fails the task with the code and the tail ([`CommandError`]).
//! - A cancel, an `execution_timeout`, the spec's own time limit, a session's end or a shutdown sends SIGTERM to
//!   the whole process group, waits [`Commands::grace`], then sends SIGKILL. When the command ends on its own,
//!   whatever it left running in its group is stopped the same way.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use refcache_core::command::{CommandSpec, Commands, run_command};
//!
//! Commands::new().allow(["echo", "seq"]).install()?;
//! let response = run_command(CommandSpec::new("seq", ["1", "3"])).await?;
//! # Ok(()) }
//! ```

mod commands;
mod error;
mod process;
mod spec;

pub use commands::{Commands, DEFAULT_GRACE, DEFAULT_TAIL_BYTES, DEFAULT_WAIT, SHELLS};
pub use error::CommandError;
pub use spec::{CommandOutcome, CommandSpec, Exit};

use crate::contract::context::TaskContext;
use crate::model::task::TaskError;

/// The name [`run_command`]'s tasks carry: workers that install the same [`Commands`] run them by it.
pub const TASK_NAME: &str = "refcache.command";

/// Runs `spec` with the [`Commands`] installed in this process, on the process-wide default cache: the one
/// cached function that every surface (an MCP tool, a web form, a script) calls, so that the same spec is one
/// execution. It waits up to [`Commands::wait`] (2 s unless the server sets it; a
/// [`CallOptions::async_timeout`](crate::CallOptions::async_timeout) scope around the call wins) for the result,
/// then answers a processing reference; poll it, or follow its output with
/// [`RefCache::follow_output`](crate::RefCache::follow_output).
///
/// The task fails (never an `Err` of the call) when commands are not installed, the program is not allowed, not
/// found or not executable, or the command exits with a non-zero code or a signal.
pub async fn run_command(
    spec: CommandSpec,
) -> Result<crate::cache::response::CachedResponse, crate::model::error::RefCacheError> {
    let options = crate::cache::call_options::CallOptions::current();
    match Commands::installed() {
        Ok(commands) if options.async_timeout.is_none() => {
            crate::cache::call_options::CallOptions::new()
                .async_timeout(commands.wait_for())
                .scope(command_task(spec))
                .await
        }
        _ => command_task(spec).await,
    }
}

/// The cached function behind [`run_command`]: its `async_timeout` is the wait when no [`Commands`] are
/// installed (the task then fails, saying so).
#[crate::cached(crate = "crate", name = "refcache.command", async_timeout = 2.0)]
async fn command_task(spec: CommandSpec, ctx: TaskContext) -> Result<CommandOutcome, TaskError> {
    let commands = Commands::installed().map_err(TaskError::from)?;
    commands.run(&spec, &ctx).await.map_err(TaskError::from)
}

/// The installed [`Commands`] as the web page's command runner (features `web` and `command`): its form and
/// `POST /api/commands` call [`run_command`], the function an MCP tool calls too, so that a browser run and an MCP
/// call of the same command are one execution.
///
/// ```
/// # use std::sync::Arc;
/// use refcache_core::command::{Commands, PageRunner};
/// use refcache_core::web::WebRefCache;
///
/// Commands::new().allow(["seq"]).install()?;
/// let page = WebRefCache::new(refcache_core::RefCache::new()).with_commands(Arc::new(PageRunner));
/// # let _ = page;
/// # Ok::<(), refcache_core::command::CommandError>(())
/// ```
#[cfg(feature = "web")]
#[derive(Debug, Clone, Copy, Default)]
pub struct PageRunner;

#[cfg(feature = "web")]
impl crate::web::CommandRunner for PageRunner {
    fn allowed(&self) -> Vec<String> {
        Commands::installed()
            .map(|c| c.allowed().map(str::to_owned).collect())
            .unwrap_or_default()
    }

    fn run(
        &self,
        command: String,
        args: Vec<String>,
    ) -> futures::future::BoxFuture<
        'static,
        Result<crate::cache::response::CachedResponse, crate::model::error::RefCacheError>,
    > {
        Box::pin(run_command(CommandSpec::new(command, args)))
    }
}
