//! The cap on tasks in flight per owner ([`OwnerCap`]): the MCP tasks security guidance asks a server to bound
//! what one requester can start, so that one client cannot fill the workers and the queue for everyone.
//!
//! The front door counts, per owner (the calling actor), the tasks its calls started in this process and that have
//! not ended yet. A call that would start one more than the cap is refused before it is submitted, with
//! [`RefCacheError::TooManyTasks`]; a hit never counts. A started task's place is given back when the task ends
//! (followed through [`TaskBackend::wait`]), when it is deleted, or should following it fail.
//!
//! A place is taken before the submission and held through it ([`Submitting`]). A submission that answers an error,
//! or whose caller goes away before the answer, may have started its task all the same (a remote backend can start
//! it and then fail to confirm it, or the answer can be lost), so the place then follows the submission's own ref
//! id: given back at once when no such task exists, when it ends otherwise. Only a hit or a join gives it back at
//! once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::contract::backend::TaskBackend;
use crate::model::error::RefCacheError;
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

/// A place held through a submission of the task `ref_id`, until its answer says what became of it.
pub(crate) struct Submitting {
    place: Option<Place>,
    backend: Arc<dyn TaskBackend>,
    ref_id: RefId,
}

impl Place {
    /// Holds the place through the submission of the task `ref_id` (the spec's own id).
    pub(crate) fn submitting(self, backend: Arc<dyn TaskBackend>, ref_id: RefId) -> Submitting {
        Submitting {
            place: Some(self),
            backend,
            ref_id,
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

impl Submitting {
    /// The submission started the task `ref_id`: the place is held until it ends.
    pub(crate) fn started(mut self, ref_id: &RefId) {
        if let Some(place) = self.place.take() {
            place.hold_until_done(self.backend.clone(), ref_id.clone());
        }
    }

    /// The submission started nothing (a hit or a join): the place is given back.
    pub(crate) fn started_nothing(mut self) {
        self.place.take();
    }
}

impl Drop for Submitting {
    /// No answer (an error, or the caller went away): the task may have started, so the place follows its id.
    fn drop(&mut self) {
        if let Some(place) = self.place.take() {
            place.hold_until_done(self.backend.clone(), self.ref_id.clone());
        }
    }
}

impl std::fmt::Debug for Submitting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Submitting")
            .field("place", &self.place)
            .field("ref_id", &self.ref_id)
            .finish_non_exhaustive()
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

    /// What the submission does once the in-process backend has started the task.
    #[derive(Clone, Copy)]
    enum AfterStart {
        /// Answers an error, as a remote backend that started the task and then failed to confirm it.
        Fails,
        /// Never answers, so that its caller gives up (drops the call) mid-submission.
        Hangs,
    }

    /// The in-process backend, whose `submit` starts the task and then does as `after` says.
    struct StartsThenFails {
        inner: MemoryTaskBackend,
        after: AfterStart,
        submitted: Mutex<Vec<RefId>>,
    }

    impl TaskBackend for StartsThenFails {
        fn name(&self) -> &str {
            "starts-then-fails"
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
                let submitted = self.inner.submit(submission).await?;
                self.submitted
                    .lock()
                    .unwrap()
                    .push(submitted.ref_id().clone());
                match self.after {
                    AfterStart::Fails => {
                        Err(BackendError::Unavailable("the answer was lost".into()))
                    }
                    AfterStart::Hangs => std::future::pending().await,
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

    /// A submission that started its task and then failed to answer (an error, or its caller gone) keeps the
    /// owner's place until that task ends: the cap still counts the running task.
    #[tokio::test(start_paused = true)]
    async fn a_submission_that_started_its_task_but_did_not_answer_keeps_its_place_until_the_task_ends()
     {
        for after in [AfterStart::Fails, AfterStart::Hangs] {
            let backend = Arc::new(StartsThenFails {
                inner: MemoryTaskBackend::new(MemoryBackendConfig::default()),
                after,
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
            let started = backend.submitted.lock().unwrap()[0].clone();
            assert!(
                !backend
                    .inner
                    .get(&started)
                    .await
                    .unwrap()
                    .expect("the task")
                    .info
                    .status
                    .is_terminal(),
                "the first task runs on"
            );
            // The cap still counts the first task, which runs.
            match call(&cache, 2, &gate).await {
                Err(RefCacheError::TooManyTasks { limit: 1, .. }) => {}
                other => panic!("expected TooManyTasks while the first task runs, got {other:?}"),
            }
            assert_eq!(
                backend.submitted.lock().unwrap().len(),
                1,
                "nothing else was submitted"
            );
            // Once it ends, the place is given back: the next call is submitted.
            gate.notify_one();
            let ended = backend
                .inner
                .wait(&started, None)
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
