//! A cached tool call over MCP: the code behind every `#[cached]` `#[tool]` method.

use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures::FutureExt;
use rmcp::RoleServer;
use rmcp::model::CallToolResponse;
use rmcp::service::RequestContext;

use super::format::FormatOverride;
use super::result::{error_result, error_text, tool_result};
use super::server::RefCacheServer;
use super::tasks;
use crate::cache::RefCache;
use crate::cache::call_options::CallOptions;
use crate::cache::response::CachedResponse;
use crate::model::error::RefCacheError;

/// Runs `call` (the cached call, as `#[cached]` generates it) as the request's owner, with the request's format
/// override, forwarding progress while the client waits, and answers:
/// - a task still in flight after `async_timeout`: an MCP task (`resultType: "task"`) when the client declared the
///   tasks extension on this request, the processing reference otherwise (the spec forbids a task to a client that
///   did not declare it);
/// - a finished task: its tool result ([`tool_result`]); failed and cancelled ones with `isError: true`;
/// - an error (bad format, access, backend down): a tool error with its text. Nothing is a protocol error.
///
/// A `notifications/cancelled` for the request ends its wait at once; the task itself goes on.
///
/// Public so that a plain `#[tool]` can answer a call of a `#[cached]` free function shared with other surfaces
/// (such as `refcache::command::run_command`, which a web form calls too) exactly as a cached tool does.
pub async fn tool_call<S, F>(
    server: &S,
    cache: &RefCache,
    format: FormatOverride,
    request: RequestContext<RoleServer>,
    call: F,
) -> Result<CallToolResponse, rmcp::ErrorData>
where
    S: RefCacheServer + ?Sized,
    F: Future<Output = Result<CachedResponse, RefCacheError>>,
{
    let format = match format.get() {
        Ok(format) => format,
        Err(error) => return Ok(error_result(&error).into()),
    };
    let mcp = server.refcache();
    let actor = mcp.caller(&request);
    // Only an override needs a scope: without one, the call already sees the options in effect.
    let call = match format {
        Some(format) => CallOptions::current()
            .format(format)
            .scope(call)
            .left_future(),
        None => call.right_future(),
    };
    let call = match request.meta.get_progress_token() {
        Some(token) => {
            let forwarder = super::progress::forwarder(
                cache.clone(),
                request.peer.clone(),
                token,
                request.ct.clone(),
            );
            crate::cache::observe::observe(forwarder, call).left_future()
        }
        None => call.right_future(),
    };
    // A client's `notifications/cancelled` for this request (or, on stateless HTTP, a closed stream) cancels
    // `request.ct`: the caller stopped waiting, so the wait ends at once. Only the wait: the task was submitted as
    // its own execution and goes on (its ref id stays valid; cancel it with `tasks/cancel` or `cancel_task`).
    // rmcp drops the answer to a cancelled request, so what is answered here is for the log only.
    let waiting = request.ct.clone();
    let outcome = tokio::select! {
        biased;
        outcome = AssertUnwindSafe(actor.scope(call)).catch_unwind() => outcome,
        () = waiting.cancelled() => {
            tracing::debug!("the client cancelled a cached tool call: its wait ends, its task goes on");
            return Ok(error_text(
                "the client cancelled this request: the wait ended, and the task goes on in the background",
            )
            .into());
        }
    };
    let response = match outcome {
        Ok(Ok(response)) => response,
        Ok(Err(error)) => return Ok(error_result(&error).into()),
        Err(panic) => {
            tracing::error!(
                panic = %crate::model::task::TaskError::panicked(panic.as_ref()),
                "a cached tool call panicked before its task started"
            );
            return Ok(error_text(
                "internal error: the cached call panicked before its task started; see the server's log",
            )
            .into());
        }
    };
    if !response.status().is_terminal()
        && supports_tasks(&request)
        && let Some(info) = response.info()
    {
        return Ok(CallToolResponse::Task(tasks::created(mcp, cache, info)));
    }
    Ok(tool_result(&response).into())
}

/// Whether the client declared the tasks extension for this request.
pub(crate) fn supports_tasks(request: &RequestContext<RoleServer>) -> bool {
    request
        .client_capabilities()
        .is_some_and(|c| c.supports_tasks())
}
