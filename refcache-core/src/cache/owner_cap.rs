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

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex, OnceLock};
    use std::time::Duration;

    use futures::future::BoxFuture;
    use futures::stream::BoxStream;
    use serde_json::{Value, json};
    use tokio::sync::Notify;

    use crate::cache::RefCache;
    use crate::cache::call::CallScope;
    use crate::contract::backend::{
        BackendStats, CancelOutcome, RespondOutcome, RetryOutcome, Submission, Submitted,
        TaskBackend, TaskSnapshot,
    };
    use crate::contract::context::LocalJob;
    use crate::contract::list::{TaskFilter, TaskPage};
    use crate::contract::registry::TaskMeta;
    use crate::contract::spec::TaskOptions;
    use crate::contract::store::{StoredValue, ValueStore};
    use crate::memory::backend::MemoryTaskBackend;
    use crate::memory::config::MemoryBackendConfig;
    use crate::model::error::{BackendError, RefCacheError};
    use crate::model::format::AsyncResponseFormat;
    use crate::model::json_text::JsonText;
    use crate::model::key::CacheKey;
    use crate::model::output::OutputChunk;
    use crate::model::record::TaskInfo;
    use crate::model::ref_id::RefId;

    /// How the submission answers.
    #[derive(Clone, Copy)]
    enum Answer {
        /// Starts the task (in the in-process backend) and then answers an error, as a remote backend that started
        /// it and then failed to confirm it.
        FailsAfterStarting,
        /// Starts the task only when `late` is notified, and then answers that it started: a remote backend still
        /// mid-write when its caller gave up.
        StartsLate,
    }

    /// The in-process backend, whose `submit` answers as `answer` says.
    struct Submits {
        inner: MemoryTaskBackend,
        answer: Answer,
        late: Notify,
        submitted: Mutex<Vec<RefId>>,
    }

    impl TaskBackend for Submits {
        fn name(&self) -> &str {
            "submits"
        }
        fn near_cache(&self) -> Option<&ValueStore> {
            self.inner.near_cache()
        }
        fn lookup<'a>(
            &'a self,
            key: &'a CacheKey,
        ) -> BoxFuture<'a, Result<Option<Arc<StoredValue>>, BackendError>> {
            self.inner.lookup(key)
        }
        fn submit(&self, submission: Submission) -> BoxFuture<'_, Result<Submitted, BackendError>> {
            Box::pin(async move {
                if let Answer::StartsLate = self.answer {
                    self.late.notified().await;
                }
                let submitted = self.inner.submit(submission).await?;
                self.submitted
                    .lock()
                    .unwrap()
                    .push(submitted.ref_id().clone());
                match self.answer {
                    Answer::FailsAfterStarting => {
                        Err(BackendError::Unavailable("the answer was lost".into()))
                    }
                    Answer::StartsLate => Ok(submitted),
                }
            })
        }
        fn get<'a>(
            &'a self,
            ref_id: &'a RefId,
        ) -> BoxFuture<'a, Result<Option<TaskSnapshot>, BackendError>> {
            self.inner.get(ref_id)
        }
        fn wait<'a>(
            &'a self,
            ref_id: &'a RefId,
            deadline: Option<tokio::time::Instant>,
        ) -> BoxFuture<'a, Result<Option<TaskSnapshot>, BackendError>> {
            self.inner.wait(ref_id, deadline)
        }
        fn watch<'a>(
            &'a self,
            ref_id: &'a RefId,
        ) -> BoxFuture<'a, Result<Option<tokio::sync::watch::Receiver<TaskInfo>>, BackendError>>
        {
            self.inner.watch(ref_id)
        }
        fn read_output<'a>(
            &'a self,
            ref_id: &'a RefId,
            offset: u64,
            max_bytes: usize,
        ) -> BoxFuture<'a, Result<Option<OutputChunk>, BackendError>> {
            self.inner.read_output(ref_id, offset, max_bytes)
        }
        fn follow_output<'a>(
            &'a self,
            ref_id: &'a RefId,
        ) -> BoxFuture<'a, Result<Option<BoxStream<'static, ()>>, BackendError>> {
            self.inner.follow_output(ref_id)
        }
        fn cancel<'a>(
            &'a self,
            ref_id: &'a RefId,
        ) -> BoxFuture<'a, Result<CancelOutcome, BackendError>> {
            self.inner.cancel(ref_id)
        }
        fn respond<'a>(
            &'a self,
            ref_id: &'a RefId,
            key: &'a str,
            answer: Value,
        ) -> BoxFuture<'a, Result<RespondOutcome, BackendError>> {
            self.inner.respond(ref_id, key, answer)
        }
        fn delete<'a>(&'a self, ref_id: &'a RefId) -> BoxFuture<'a, Result<bool, BackendError>> {
            self.inner.delete(ref_id)
        }
        fn list(&self, filter: TaskFilter) -> BoxFuture<'_, Result<TaskPage, BackendError>> {
            self.inner.list(filter)
        }
        fn retry<'a>(
            &'a self,
            ref_id: &'a RefId,
        ) -> BoxFuture<'a, Result<RetryOutcome, BackendError>> {
            self.inner.retry(ref_id)
        }
        fn end_session<'a>(
            &'a self,
            session_id: &'a str,
        ) -> BoxFuture<'a, Result<usize, BackendError>> {
            self.inner.end_session(session_id)
        }
        fn cleanup(&self, max_age: Duration) -> BoxFuture<'_, Result<usize, BackendError>> {
            self.inner.cleanup(max_age)
        }
        fn stats(&self) -> BoxFuture<'_, Result<BackendStats, BackendError>> {
            self.inner.stats()
        }
        fn shutdown(&self, deadline: Duration) -> BoxFuture<'_, Result<(), BackendError>> {
            self.inner.shutdown(deadline)
        }
    }

    fn meta() -> &'static TaskMeta {
        static META: OnceLock<TaskMeta> = OnceLock::new();
        META.get_or_init(|| {
            TaskMeta::new(
                "tests::owner_cap".to_owned(),
                "public",
                TaskOptions::default(),
                Some(Duration::from_secs(30)),
                AsyncResponseFormat::default(),
                "serde_json::Value",
                None,
                || None,
            )
        })
    }

    /// A job that runs until `gate` is notified.
    fn gated(gate: Arc<Notify>) -> LocalJob {
        Arc::new(move |args: Value, _ctx| {
            let gate = gate.clone();
            Box::pin(async move {
                gate.notified().await;
                Ok(JsonText::from(args))
            })
        })
    }

    /// One call of `n` through `cache`, given up after a minute of the (paused) clock.
    async fn call(cache: &RefCache, n: u32, gate: &Arc<Notify>) -> Result<(), RefCacheError> {
        let args = json!({ "n": n });
        let key = CacheKey::from_json(meta().name(), "public", &args).expect("a key");
        let job = gated(gate.clone());
        let scope = CallScope::capture(meta()).expect("a scope");
        match tokio::time::timeout(
            Duration::from_secs(60),
            cache.call(meta(), key, scope, move || Ok((args, job))),
        )
        .await
        {
            Ok(answer) => answer.map(drop),
            Err(_) => Err(RefCacheError::NotFound),
        }
    }

    /// A call whose submission starts its task but answers an error, or whose caller gives up before the
    /// submission has even started the task, keeps the owner's place until that task ends: the cap still counts
    /// the running task.
    #[tokio::test(start_paused = true)]
    async fn a_submission_that_started_its_task_but_did_not_answer_keeps_its_place_until_the_task_ends()
     {
        for answer in [Answer::FailsAfterStarting, Answer::StartsLate] {
            let backend = Arc::new(Submits {
                inner: MemoryTaskBackend::new(MemoryBackendConfig::default()),
                answer,
                late: Notify::new(),
                submitted: Mutex::default(),
            });
            let cache = RefCache::builder()
                .max_tasks_per_owner(Some(1))
                .backend(backend.clone())
                .expect("a cache");
            let gate = Arc::new(Notify::new());
            let first = call(&cache, 1, &gate).await;
            assert!(
                matches!(
                    first,
                    Err(RefCacheError::Backend(BackendError::Unavailable(_))
                        | RefCacheError::NotFound)
                ),
                "the submission did not answer: {first:?}"
            );
            // The cap counts the first call's task: started, or about to be.
            match call(&cache, 2, &gate).await {
                Err(RefCacheError::TooManyTasks { limit: 1, .. }) => {}
                other => panic!("expected TooManyTasks while the first task runs, got {other:?}"),
            }
            if let Answer::StartsLate = answer {
                // The caller is long gone when the submission starts the task.
                backend.late.notify_one();
                for _ in 0..1_000 {
                    if !backend.submitted.lock().unwrap().is_empty() {
                        break;
                    }
                    tokio::task::yield_now().await;
                }
                match call(&cache, 2, &gate).await {
                    Err(RefCacheError::TooManyTasks { limit: 1, .. }) => {}
                    other => panic!("expected TooManyTasks once the late task runs, got {other:?}"),
                }
            }
            let started = backend.submitted.lock().unwrap().clone();
            assert_eq!(started.len(), 1, "one task was started: {started:?}");
            let snapshot = backend
                .inner
                .get(&started[0])
                .await
                .unwrap()
                .expect("the task");
            assert!(
                !snapshot.info.status.is_terminal(),
                "the first task runs on"
            );
            // Once it ends, the place is given back: the next call is submitted.
            gate.notify_one();
            let ended = backend
                .inner
                .wait(&started[0], None)
                .await
                .unwrap()
                .expect("the task");
            assert!(ended.info.status.is_terminal());
            let mut submitted = false;
            for _ in 0..1_000 {
                tokio::task::yield_now().await;
                if !matches!(
                    call(&cache, 3, &gate).await,
                    Err(RefCacheError::TooManyTasks { .. })
                ) {
                    submitted = true;
                    break;
                }
            }
            assert!(submitted, "the place was given back once the task ended");
        }
    }
}
