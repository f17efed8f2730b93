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
//! exists, when it ends otherwise. A hit or a join gives it back at once, and so does an error that says the
//! submission started nothing ([`BackendError::QueueFull`], [`BackendError::ShuttingDown`]).
//!
//! A place that follows an error is a doubt, not a count: during an outage the backend may not answer the follow-up
//! at all, and the owner would see [`RefCacheError::TooManyTasks`] where the backend's own error is the truth. So
//! the follow-up has [`DOUBT_DEADLINE`]: a task found in flight by then holds the place until it ends; a task not
//! found, an error, or no answer by then gives it back.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::contract::backend::{Submission, Submitted, TaskBackend};
use crate::model::error::{BackendError, RefCacheError};
use crate::model::ref_id::RefId;

/// How long a place taken by a submission that answered an error waits to learn whether its task exists.
pub(crate) const DOUBT_DEADLINE: Duration = Duration::from_secs(10);

/// Whether `error` says the submission started nothing (the contract's promise for these variants), so that its
/// place can be given back without asking the backend.
fn started_nothing(error: &BackendError) -> bool {
    matches!(
        error,
        BackendError::QueueFull { .. } | BackendError::ShuttingDown
    )
}

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
                Err(error) if started_nothing(error) => drop(self),
                Err(_) => self.hold_while_in_doubt(backend, ref_id),
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

    /// Holds the place while the task `ref_id`, whose submission answered an error, may exist: until it ends if it
    /// is found in flight within [`DOUBT_DEADLINE`], else (not found, an error, no answer) given back then.
    fn hold_while_in_doubt(self, backend: Arc<dyn TaskBackend>, ref_id: RefId) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            let deadline = tokio::time::Instant::now() + DOUBT_DEADLINE;
            // The backend's own deadline, and ours around it for a backend that does not answer at all.
            let found =
                tokio::time::timeout_at(deadline, backend.wait(&ref_id, Some(deadline))).await;
            if let Ok(Ok(Some(snapshot))) = found
                && !snapshot.info.status.is_terminal()
            {
                let _ = backend.wait(&ref_id, None).await;
            }
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use futures::future::BoxFuture;
    use serde_json::json;

    use super::*;
    use crate::contract::backend::{CancelOutcome, RetryOutcome, TaskSnapshot};
    use crate::contract::list::{TaskFilter, TaskPage};
    use crate::contract::spec::TaskSpec;
    use crate::contract::store::StoredValue;
    use crate::model::key::CacheKey;
    use crate::model::output::OutputChunk;

    /// A backend whose `submit` answers `answer` and whose `wait` never answers; it counts the waits.
    struct Refuses {
        answer: BackendError,
        waits: AtomicUsize,
    }

    fn unused<'a, T: Send + 'a>() -> BoxFuture<'a, Result<T, BackendError>> {
        Box::pin(async { Err(BackendError::Other("not used by these tests".into())) })
    }

    impl TaskBackend for Refuses {
        fn name(&self) -> &str {
            "refuses"
        }
        fn lookup<'a>(
            &'a self,
            _: &'a CacheKey,
        ) -> BoxFuture<'a, Result<Option<Arc<StoredValue>>, BackendError>> {
            unused()
        }
        fn submit(&self, _: Submission) -> BoxFuture<'_, Result<Submitted, BackendError>> {
            let answer = self.answer.clone();
            Box::pin(async move { Err(answer) })
        }
        fn get<'a>(
            &'a self,
            _: &'a RefId,
        ) -> BoxFuture<'a, Result<Option<TaskSnapshot>, BackendError>> {
            unused()
        }
        fn wait<'a>(
            &'a self,
            _: &'a RefId,
            _: Option<tokio::time::Instant>,
        ) -> BoxFuture<'a, Result<Option<TaskSnapshot>, BackendError>> {
            self.waits.fetch_add(1, Ordering::SeqCst);
            // An outage: the backend never answers (and ignores the deadline).
            Box::pin(futures::future::pending())
        }
        fn read_output<'a>(
            &'a self,
            _: &'a RefId,
            _: u64,
            _: usize,
        ) -> BoxFuture<'a, Result<Option<OutputChunk>, BackendError>> {
            unused()
        }
        fn cancel<'a>(
            &'a self,
            _: &'a RefId,
        ) -> BoxFuture<'a, Result<CancelOutcome, BackendError>> {
            unused()
        }
        fn delete<'a>(&'a self, _: &'a RefId) -> BoxFuture<'a, Result<bool, BackendError>> {
            unused()
        }
        fn list(&self, _: TaskFilter) -> BoxFuture<'_, Result<TaskPage, BackendError>> {
            unused()
        }
        fn retry<'a>(&'a self, _: &'a RefId) -> BoxFuture<'a, Result<RetryOutcome, BackendError>> {
            unused()
        }
        fn end_session<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<usize, BackendError>> {
            unused()
        }
        fn cleanup(&self, _: Duration) -> BoxFuture<'_, Result<usize, BackendError>> {
            unused()
        }
        fn stats(
            &self,
        ) -> BoxFuture<'_, Result<crate::contract::backend::BackendStats, BackendError>> {
            unused()
        }
        fn shutdown(&self, _: Duration) -> BoxFuture<'_, Result<(), BackendError>> {
            unused()
        }
    }

    fn submission() -> Submission {
        let args = json!({"n": 1});
        let key = CacheKey::from_json("owner_cap", "public", &args).expect("a key");
        Submission::new(
            TaskSpec::new(RefId::generate("test"), key, "owner_cap", "public", args),
            None,
        )
    }

    /// Submits once under a cap of one for `answer`, and answers the backend.
    async fn refused(answer: BackendError) -> (OwnerCap, Arc<Refuses>) {
        let cap = OwnerCap::new(1);
        let backend = Arc::new(Refuses {
            answer,
            waits: AtomicUsize::new(0),
        });
        let place = cap.take("alice").expect("a first place");
        let answer = place.submit(backend.clone(), submission()).await;
        assert!(answer.is_err(), "the backend refused: {answer:?}");
        // Let the follow-up (if any) start.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        (cap, backend)
    }

    /// A refusal that says nothing started gives the place back at once, without asking the backend.
    #[tokio::test(start_paused = true)]
    async fn a_submission_that_started_nothing_gives_its_place_back_at_once() {
        for answer in [
            BackendError::QueueFull { max_queued: 1 },
            BackendError::ShuttingDown,
        ] {
            let (cap, backend) = refused(answer.clone()).await;
            assert!(
                cap.take("alice").is_ok(),
                "{answer}: the place was given back at once"
            );
            assert_eq!(
                backend.waits.load(Ordering::SeqCst),
                0,
                "{answer}: nothing to follow"
            );
        }
    }

    /// During an outage the follow-up of a failed submission gets no answer; the place is held for the doubt, then
    /// given back, so that the owner's next call meets the backend's own error rather than the cap.
    #[tokio::test(start_paused = true)]
    async fn a_place_in_doubt_is_given_back_when_the_backend_does_not_answer() {
        let (cap, backend) = refused(BackendError::Unavailable("down".into())).await;
        assert_eq!(
            backend.waits.load(Ordering::SeqCst),
            1,
            "the task is looked for"
        );
        assert!(
            matches!(
                cap.take("alice"),
                Err(RefCacheError::TooManyTasks { limit: 1, .. })
            ),
            "the place is held while the task may exist"
        );
        tokio::time::sleep(DOUBT_DEADLINE - Duration::from_millis(100)).await;
        assert!(
            cap.take("alice").is_err(),
            "still in doubt before the deadline"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(
            cap.take("alice").is_ok(),
            "given back once the doubt's deadline passed"
        );
    }
}
