//! Acting on references and on the whole cache: cancel, retry, end a session, stats, clean up, shut down.

use std::sync::PoisonError;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::cache::RefCache;
use crate::contract::backend::{BackendStats, CancelOutcome, RespondOutcome, RetryOutcome};
use crate::model::access::Permissions;
use crate::model::actor::Actor;
use crate::model::error::{BackendError, RefCacheError};
use crate::model::ref_id::RefId;
use crate::model::task::TaskStatus;

impl RefCache {
    /// Cancels a task (needs `EXECUTE`). An unknown (or invisible) id answers [`CancelOutcome::NotFound`]; a
    /// finished one [`CancelOutcome::AlreadyFinished`]. Cancelling twice answers `Cancelled` twice.
    pub async fn cancel_task(&self, ref_id: &str) -> Result<CancelOutcome, RefCacheError> {
        let ref_id = match self.own_ref(ref_id) {
            Ok(r) => r,
            Err(RefCacheError::NotFound) => return Ok(CancelOutcome::NotFound),
            Err(e) => return Err(e),
        };
        match self
            .permitted(&ref_id, &Actor::current(), "cancel", Permissions::EXECUTE)
            .await
        {
            Ok(_) => Ok(self.inner.backend.cancel(&ref_id).await?),
            Err(RefCacheError::NotFound) => Ok(CancelOutcome::NotFound),
            Err(e) => Err(e),
        }
    }

    /// Answers the question a waiting task asked ([`TaskContext::ask`](crate::TaskContext::ask)), as the current
    /// actor. `answer` is the JSON object the question's schema describes, such as `{"confirm": true}`.
    ///
    /// Only the task's owner may answer: the actor whose call started it (any caller with `EXECUTE`, when an
    /// anonymous call started it). Errors: [`RefCacheError::NotFound`] for an unknown id and for anyone else;
    /// [`RefCacheError::NotWaiting`] (with the status) when the task is not `input_required`;
    /// [`RefCacheError::InvalidAnswer`] (naming the field) when the answer does not fit, and the task keeps waiting.
    ///
    /// ```
    /// # async fn demo(cache: &refcache_core::RefCache, ref_id: &str) -> Result<(), refcache_core::RefCacheError> {
    /// cache.respond(ref_id, serde_json::json!({"confirm": true})).await?;
    /// # Ok(()) }
    /// ```
    pub async fn respond(
        &self,
        ref_id: &str,
        answer: serde_json::Value,
    ) -> Result<(), RefCacheError> {
        let ref_id = self.own_ref(ref_id)?;
        let actor = Actor::current();
        let snapshot = self
            .permitted(&ref_id, &actor, "respond", Permissions::EXECUTE)
            .await
            .map_err(|e| match e {
                RefCacheError::PermissionDenied { .. } => RefCacheError::NotFound,
                e => e,
            })?;
        let info = snapshot.info;
        if let Some(owner) = info.input_request.as_ref().and_then(|r| r.owner.as_ref())
            && !answers_for(owner, &actor, info.session_id.as_deref())
        {
            return Err(RefCacheError::NotFound);
        }
        let request = match (&info.status, &info.input_request) {
            (TaskStatus::InputRequired, Some(request)) => request,
            (status, _) => {
                return Err(RefCacheError::NotWaiting {
                    ref_id: ref_id.to_string(),
                    status: *status,
                });
            }
        };
        request
            .check(&answer)
            .map_err(|error| RefCacheError::InvalidAnswer {
                ref_id: ref_id.to_string(),
                error,
            })?;
        match self
            .inner
            .backend
            .respond(&ref_id, &request.key, answer)
            .await?
        {
            RespondOutcome::Accepted => Ok(()),
            RespondOutcome::NotWaiting(status) => Err(RefCacheError::NotWaiting {
                ref_id: ref_id.to_string(),
                status,
            }),
            _ => Err(RefCacheError::NotFound),
        }
    }

    /// Runs a failed task again, under the same ref id (needs `EXECUTE`). Errors: `NotFound` for an unknown (or
    /// invisible) id, [`RefCacheError::NotRetryable`] for a task that is not failed,
    /// [`RefCacheError::AlreadyRunning`] when the same call already runs again under another id.
    pub async fn retry_task(&self, ref_id: &str) -> Result<RefId, RefCacheError> {
        let ref_id = self.own_ref(ref_id)?;
        self.permitted(&ref_id, &Actor::current(), "retry", Permissions::EXECUTE)
            .await?;
        match self.inner.backend.retry(&ref_id).await? {
            RetryOutcome::Restarted => {
                self.note_submission();
                Ok(ref_id)
            }
            RetryOutcome::NotFailed(status) => Err(RefCacheError::NotRetryable {
                ref_id: ref_id.to_string(),
                status,
            }),
            RetryOutcome::AlreadyRunning(other) => Err(RefCacheError::AlreadyRunning {
                ref_id: other.to_string(),
            }),
            _ => Err(RefCacheError::NotFound),
        }
    }

    /// Ends a session: cancels its running and queued tasks and drops its task records. Returns how many tasks it
    /// touched.
    pub async fn end_session(&self, session_id: &str) -> Result<usize, RefCacheError> {
        Ok(self.inner.backend.end_session(session_id).await?)
    }

    /// The backend's counters, with this cache's hits and misses.
    pub async fn stats(&self) -> Result<BackendStats, RefCacheError> {
        let mut stats = self.inner.backend.stats().await?;
        stats.hits = self.inner.hits.load(Ordering::Relaxed);
        stats.misses = self.inner.misses.load(Ordering::Relaxed);
        Ok(stats)
    }

    /// Removes finished task records older than `max_age`.
    pub async fn cleanup(&self, max_age: Duration) -> Result<usize, RefCacheError> {
        Ok(self.inner.backend.cleanup(max_age).await?)
    }

    /// Stops taking work, lets running tasks finish until `deadline`, then cancels the rest.
    ///
    /// Then the cache's own runtime (the one sync callers use) is shut down and its threads joined: afterwards no
    /// tokio task or thread of refcache's is left running. (A blocking sync tool that never returns keeps its
    /// thread: it cannot be aborted.)
    pub async fn shutdown(&self, deadline: Duration) -> Result<(), RefCacheError> {
        let start = tokio::time::Instant::now();
        self.inner.backend.shutdown(deadline).await?;
        self.inner.shut_down.store(true, Ordering::Release);
        let runtime = self
            .inner
            .runtime
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(runtime) = runtime {
            // Joining a runtime's threads blocks, and must not happen on a runtime thread: do it on a plain thread.
            let remaining = deadline
                .saturating_sub(start.elapsed())
                .max(Duration::from_millis(100));
            let (done, joined) = tokio::sync::oneshot::channel();
            std::thread::Builder::new()
                .name("refcache-shutdown".into())
                .spawn(move || {
                    runtime.shutdown_timeout(remaining);
                    let _ = done.send(());
                })
                .map_err(|e| {
                    BackendError::Runtime(format!("cannot start the shutdown thread: {e}"))
                })?;
            let _ = joined.await;
        }
        tracing::debug!(cache = %self.inner.name, "refcache shut down");
        Ok(())
    }
}

/// `actor` may answer for `owner` (the pattern name of the actor whose call asked): the same actor, or the same
/// principal on another surface. One principal acts as its agent over MCP and as its user on the page
/// ([`Actor::as_principal`]), in one session of its own: an actor in the task's session with the owner's id is
/// that principal.
fn answers_for(owner: &str, actor: &Actor, task_session: Option<&str>) -> bool {
    if *owner == actor.pattern_name() {
        return true;
    }
    let owner_id = owner.split_once(':').map(|(_, id)| id);
    task_session.is_some()
        && actor.session_id.as_deref() == task_session
        && owner_id.is_some_and(|id| !id.is_empty() && actor.id.as_deref() == Some(id))
}
