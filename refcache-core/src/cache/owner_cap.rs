//! The cap on tasks in flight per owner ([`OwnerCap`]): the MCP tasks security guidance asks a server to bound
//! what one requester can start, so that one client cannot fill the workers and the queue for everyone.
//!
//! The front door counts, per owner (the calling actor), the tasks its calls started in this process and that have
//! not ended yet. A call that would start one more than the cap is refused before it is submitted, with
//! [`RefCacheError::TooManyTasks`]; a hit never counts. A started task's place is given back when the task ends
//! (followed through [`TaskBackend::wait`]), when it is deleted, or should following it fail.
//!
//! A place is taken before the submission, which then runs on a task of its own so that the place is decided by
//! what the submission answers even when its caller has gone away meanwhile (a remote backend may be mid-write). An
//! error may come from a submission that started its task all the same (a remote backend can start it and then fail
//! to confirm it), so the place then follows the submission's own ref id: given back at once when no such task
//! exists, when it ends otherwise. A hit or a join gives it back at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::contract::backend::{Submission, Submitted, TaskBackend};
use crate::model::error::{BackendError, RefCacheError};
use crate::model::ref_id::RefId;

/// Tasks in flight by owner, at most `max` each.
#[derive(Debug)]
pub(crate) struct OwnerCap {
    max: usize,
    counts: Arc<Mutex<HashMap<String, usize>>>,
}

/// One owner's place under the cap, given back when dropped.
#[derive(Debug)]
pub(crate) struct Place {
    owner: String,
    counts: Arc<Mutex<HashMap<String, usize>>>,
}

impl OwnerCap {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            max,
            counts: Arc::default(),
        }
    }

    /// The cap.
    pub(crate) fn max(&self) -> usize {
        self.max
    }

    /// A place for one more task of `owner`, or the error that names the cap.
    pub(crate) fn take(&self, owner: &str) -> Result<Place, RefCacheError> {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let count = counts.entry(owner.to_owned()).or_default();
        if *count >= self.max {
            return Err(RefCacheError::TooManyTasks {
                owner: crate::model::excerpt::excerpt(owner, 100).into_owned(),
                limit: self.max,
            });
        }
        *count += 1;
        Ok(Place {
            owner: owner.to_owned(),
            counts: self.counts.clone(),
        })
    }
}

impl Place {
    /// Submits `submission` from a task of its own, which keeps the place for what the submission answers, even
    /// when the caller is gone by then (a remote backend may be mid-write): a start holds it until the task ends, a
    /// hit or a join gives it back, and an error follows the spec's own ref id, since a backend can start a task and
    /// then fail to answer (given back at once when no such task exists).
    pub(crate) async fn submit(
        self,
        backend: Arc<dyn TaskBackend>,
        submission: Submission,
    ) -> Result<Submitted, BackendError> {
        let ref_id = submission.spec.ref_id.clone();
        let submit = async move {
            let answer = backend.submit(submission).await;
            match &answer {
                Ok(Submitted::Started(started)) => self.hold_until_done(backend, started.clone()),
                Ok(_) => drop(self),
                Err(_) => self.hold_until_done(backend, ref_id),
            }
            answer
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return submit.await;
        };
        match runtime.spawn(submit).await {
            Ok(answer) => answer,
            Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            Err(error) => Err(BackendError::Runtime(format!(
                "the submission's task was stopped before it answered ({error}); is the runtime shutting down?"
            ))),
        }
    }

    /// Holds the place until the task `ref_id` ends, from a task of its own (given back at once outside a
    /// runtime, where nothing can follow it).
    fn hold_until_done(self, backend: Arc<dyn TaskBackend>, ref_id: RefId) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            // Terminal, gone, or the backend failed to answer: the place is given back in every case.
            let _ = backend.wait(&ref_id, None).await;
            drop(self);
        });
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = counts.get_mut(&self.owner) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&self.owner);
            }
        }
    }
}
