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
            loop {
                let (progress, done) = {
                    let info = rx.borrow_and_update();
                    (info.progress.clone(), info.status.is_terminal())
                };
                // (A non-finite report cannot be sent as a number: it is skipped.)
                if let Some(p) = progress
                    && p.current.is_finite()
                    && sent.is_none_or(|last| p.current > last)
                    && !waiting.is_cancelled()
                {
                    let mut param = ProgressNotificationParam::new(token.clone(), p.current);
                    if let Some(total) = p.total.filter(|t| t.is_finite()) {
                        param = param.with_total(total);
                    }
                    if let Some(message) = p.message {
                        param = param.with_message(message);
                    }
                    if peer.notify_progress(param).await.is_err() {
                        return;
                    }
                    sent = Some(p.current);
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
