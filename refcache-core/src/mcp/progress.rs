//! Forwarding a task's progress as MCP progress notifications while the caller still waits on the call.

use std::sync::Arc;

use rmcp::RoleServer;
use rmcp::model::{ProgressNotificationParam, ProgressToken};
use rmcp::service::Peer;
use tokio_util::sync::CancellationToken;

use crate::cache::RefCache;
use crate::cache::observe::OnSubmit;
use crate::model::ref_id::RefId;

/// An observer that, once a call is submitted, follows its task and sends each new progress report to `peer`
/// under `token`, until the task ends or `waiting` is cancelled (rmcp cancels a request's token when its response
/// is sent: after that the client no longer listens for the token).
///
/// A report is sent only when `current` has grown since the last one sent, as MCP requires progress to increase.
/// Its message is the task's latest output line, else the report's own. A task that writes output and reports no
/// progress sends one step (1, 2, 3, ...) per new line.
/// A backend that cannot follow tasks ([`TaskBackend::watch`](crate::TaskBackend::watch) answers `None`) sends
/// none; polls still show the progress.
pub(crate) fn forwarder(
    cache: RefCache,
    peer: Peer<RoleServer>,
    token: ProgressToken,
    waiting: CancellationToken,
) -> OnSubmit {
    Arc::new(move |ref_id: &RefId| {
        let (cache, peer, token, waiting, ref_id) = (
            cache.clone(),
            peer.clone(),
            token.clone(),
            waiting.clone(),
            ref_id.clone(),
        );
        tokio::spawn(async move {
            let Ok(Some(mut rx)) = cache.backend().watch(&ref_id).await else {
                return;
            };
            let mut sent: Option<f64> = None;
            let mut sent_line: Option<String> = None;
            loop {
                let (progress, line, done) = {
                    let info = rx.borrow_and_update();
                    (
                        info.progress.clone(),
                        info.output_line.clone(),
                        info.status.is_terminal(),
                    )
                };
                let new_line = line.is_some() && line != sent_line;
                // A progress report is sent when `current` grew; a new output line with no progress reported is
                // sent as one more step, so that a command's latest line shows too. (A non-finite report cannot
                // be sent as a number: it is skipped.)
                let step = match &progress {
                    Some(p)
                        if p.current.is_finite() && sent.is_none_or(|last| p.current > last) =>
                    {
                        Some((p.current, p.total.filter(|t| t.is_finite())))
                    }
                    Some(_) => None,
                    None if new_line => Some((sent.map_or(1.0, |last| last + 1.0), None)),
                    None => None,
                };
                if let Some((current, total)) = step
                    && !waiting.is_cancelled()
                {
                    let mut param = ProgressNotificationParam::new(token.clone(), current);
                    if let Some(total) = total {
                        param = param.with_total(total);
                    }
                    let message = line.clone().or_else(|| progress.and_then(|p| p.message));
                    if let Some(message) = message {
                        param = param.with_message(message);
                    }
                    if peer.notify_progress(param).await.is_err() {
                        return;
                    }
                    sent = Some(current);
                    sent_line = line;
                }
                if done {
                    return;
                }
                tokio::select! {
                    biased;
                    _ = waiting.cancelled() => return,
                    changed = rx.changed() => if changed.is_err() { return },
                }
            }
        });
    })
}
