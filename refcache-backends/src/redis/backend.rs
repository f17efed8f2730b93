//! [`RedisTaskBackend`]'s construction, the background loops (started on first use), and its [`TaskBackend`]
//! implementation, each method a call into the file of its path (`submit.rs`, `poll.rs`, `list.rs`,
//! `control.rs`). The struct and its shared state ([`Inner`]) are in `state.rs`, below every path.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use redis::AsyncCommands;
use refcache_core::{
    BackendError, BackendStats, CacheKey, CancelOutcome, RefId, RetryOutcome, StoredValue,
    Submission, Submitted, TaskBackend, TaskFilter, TaskInfo, TaskPage, TaskSnapshot, ValueStore,
};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use super::config::{Mode, RedisConfig};
use super::held::RunState;
use super::hub::Hub;
use super::keys::Keys;
use super::scripts::Scripts;
use super::state::{Inner, RedisBackendError, RedisTaskBackend, lock};
use super::{events, worker};

impl RedisTaskBackend {
    /// A replica: submits, polls, cancels, lists; in `local` mode it also runs what it submits. Connects lazily.
    pub fn new(config: RedisConfig) -> Result<Self, RedisBackendError> {
        Self::build(config, false)
    }

    /// A worker (`workers` mode, whatever `config.mode` says): a replica that also takes tasks off the stream and
    /// runs them by name. [`worker::run`] runs one until a signal.
    pub fn worker(config: RedisConfig) -> Result<Self, RedisBackendError> {
        Self::build(config.mode(Mode::Workers), true)
    }

    pub(super) fn build(config: RedisConfig, consumes: bool) -> Result<Self, RedisBackendError> {
        config.validate()?;
        let client_err = |e: redis::RedisError| RedisBackendError::Client {
            url: config.redacted_url(),
            message: e.to_string(),
        };
        let client = super::tls::client(&config.url, &config.tls).map_err(client_err)?;
        let consumer = format!(
            "{}-{}",
            std::process::id(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let inner = Inner {
            keys: Keys::new(&config.key_prefix),
            near: ValueStore::new(config.near_cache_bytes.max(1)),
            run: Mutex::new(RunState::new(config.max_workers)),
            reruns: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(config.task_ttl)
                .build(),
            client,
            conn: Mutex::new(None),
            scripts: Scripts::new(),
            hub: Hub::default(),
            output_hub: Hub::default(),
            consumer,
            consumes,
            released: Notify::new(),
            queued: Arc::new(Notify::new()),
            accepting: AtomicBool::new(true),
            stop: CancellationToken::new(),
            consuming: CancellationToken::new(),
            loops: Mutex::new(Vec::new()),
            config,
        };
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// The settings.
    pub fn config(&self) -> &RedisConfig {
        &self.inner.config
    }

    /// This process's consumer name (the owner of the tasks it runs).
    pub fn consumer(&self) -> &str {
        &self.inner.consumer
    }

    /// Round trip to Redis (`PING`), as a readiness check.
    pub async fn ping(&self) -> Result<(), BackendError> {
        self.inner.ensure_started();
        let mut conn = self.inner.conn();
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map(drop)
            .map_err(|e| self.inner.unavailable(&e))
    }

    /// The dead-letter list: ref ids of tasks that failed `worker lost` after `max_deliveries`, newest first.
    pub async fn dead_letters(&self, limit: usize) -> Result<Vec<RefId>, BackendError> {
        self.inner.ensure_started();
        let mut conn = self.inner.conn();
        let end = isize::try_from(limit)
            .unwrap_or(isize::MAX)
            .saturating_sub(1);
        let ids: Vec<String> = conn
            .lrange(self.inner.keys.dead(), 0, end)
            .await
            .map_err(|e| self.inner.unavailable(&e))?;
        Ok(ids.iter().filter_map(|s| RefId::parse(s).ok()).collect())
    }
}

impl Inner {
    /// Starts the background loops (and the connection) on the caller's runtime: on first use, and again if the
    /// runtime they ran on has shut down. Every operation calls it first; it is a lock and three flag reads.
    pub(super) fn ensure_started(self: &Arc<Self>) {
        let mut loops = lock(&self.loops);
        // [listen, maintain, consume?]: the first two end only on `stop` or with their runtime; the consumer also
        // ends at shutdown, when it must not come back.
        let alive = |i: usize| loops.get(i).is_some_and(|h| !h.is_finished());
        let consumer_ok = !self.consumes || self.consuming.is_cancelled() || alive(2);
        if self.stop.is_cancelled() || (alive(0) && alive(1) && consumer_ok) {
            return;
        }
        // First use, or the runtime the loops ran on shut down (they end only then, or on `stop`): start them on
        // the caller's runtime.
        for handle in loops.drain(..) {
            handle.abort();
        }
        *lock(&self.conn) = None;
        let weak = Arc::downgrade(self);
        loops.push(tokio::spawn(events::listen(
            weak.clone(),
            self.client.clone(),
            self.keys.events(),
            self.stop.clone(),
        )));
        loops.push(tokio::spawn(worker::maintain(
            weak.clone(),
            self.stop.clone(),
        )));
        if self.consumes && !self.consuming.is_cancelled() {
            loops.push(tokio::spawn(worker::consume(weak, self.consuming.clone())));
        }
    }
}

impl TaskBackend for RedisTaskBackend {
    fn name(&self) -> &str {
        "redis"
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), BackendError>> {
        Box::pin(RedisTaskBackend::ping(self))
    }

    fn near_cache(&self) -> Option<&ValueStore> {
        Some(&self.inner.near)
    }

    fn lookup<'a>(
        &'a self,
        key: &'a CacheKey,
    ) -> BoxFuture<'a, Result<Option<Arc<StoredValue>>, BackendError>> {
        Box::pin(self.lookup_value(key))
    }

    fn submit(&self, submission: Submission) -> BoxFuture<'_, Result<Submitted, BackendError>> {
        Box::pin(self.submit_task(submission))
    }

    fn get<'a>(
        &'a self,
        ref_id: &'a RefId,
    ) -> BoxFuture<'a, Result<Option<TaskSnapshot>, BackendError>> {
        Box::pin(async move {
            self.inner.ensure_started();
            self.inner.get(ref_id).await
        })
    }

    fn get_record<'a>(
        &'a self,
        ref_id: &'a RefId,
    ) -> BoxFuture<'a, Result<Option<TaskSnapshot>, BackendError>> {
        Box::pin(async move {
            self.inner.ensure_started();
            // The record alone: the value is read only once access is decided (#15 §4).
            Ok(self
                .inner
                .record(ref_id)
                .await?
                .map(|info| TaskSnapshot::new(info, None)))
        })
    }

    fn wait<'a>(
        &'a self,
        ref_id: &'a RefId,
        deadline: Option<tokio::time::Instant>,
    ) -> BoxFuture<'a, Result<Option<TaskSnapshot>, BackendError>> {
        Box::pin(self.wait_for(ref_id, deadline))
    }

    fn watch<'a>(
        &'a self,
        ref_id: &'a RefId,
    ) -> BoxFuture<'a, Result<Option<watch::Receiver<TaskInfo>>, BackendError>> {
        Box::pin(self.follow(ref_id))
    }

    fn read_output<'a>(
        &'a self,
        ref_id: &'a RefId,
        offset: u64,
        max_bytes: usize,
    ) -> BoxFuture<'a, Result<Option<refcache_core::OutputChunk>, BackendError>> {
        Box::pin(async move {
            self.inner.ensure_started();
            self.inner.read_output(ref_id, offset, max_bytes).await
        })
    }

    fn follow_output<'a>(
        &'a self,
        ref_id: &'a RefId,
    ) -> BoxFuture<'a, Result<Option<futures::stream::BoxStream<'static, ()>>, BackendError>> {
        Box::pin(self.follow_output_of(ref_id))
    }

    fn respond<'a>(
        &'a self,
        ref_id: &'a RefId,
        key: &'a str,
        answer: serde_json::Value,
    ) -> BoxFuture<'a, Result<refcache_core::RespondOutcome, BackendError>> {
        Box::pin(async move { self.respond_to(ref_id, key, &answer).await })
    }

    fn cancel<'a>(
        &'a self,
        ref_id: &'a RefId,
    ) -> BoxFuture<'a, Result<CancelOutcome, BackendError>> {
        Box::pin(async move {
            self.inner.ensure_started();
            self.inner.cancel_with(ref_id, None).await
        })
    }

    fn delete<'a>(&'a self, ref_id: &'a RefId) -> BoxFuture<'a, Result<bool, BackendError>> {
        Box::pin(async move {
            let inner = &self.inner;
            inner.ensure_started();
            inner.delete(ref_id).await
        })
    }

    fn list(&self, filter: TaskFilter) -> BoxFuture<'_, Result<TaskPage, BackendError>> {
        Box::pin(self.list_page(filter))
    }

    fn retry<'a>(&'a self, ref_id: &'a RefId) -> BoxFuture<'a, Result<RetryOutcome, BackendError>> {
        Box::pin(async move {
            let inner = &self.inner;
            inner.ensure_started();
            inner.check_accepting()?;
            inner.retry(ref_id).await
        })
    }

    fn end_session<'a>(
        &'a self,
        session_id: &'a str,
    ) -> BoxFuture<'a, Result<usize, BackendError>> {
        Box::pin(self.end_session_now(session_id))
    }

    fn cleanup(&self, max_age: Duration) -> BoxFuture<'_, Result<usize, BackendError>> {
        Box::pin(self.cleanup_now(max_age))
    }

    fn stats(&self) -> BoxFuture<'_, Result<BackendStats, BackendError>> {
        Box::pin(async move {
            self.inner.ensure_started();
            self.inner.stats().await
        })
    }

    fn shutdown(&self, deadline: Duration) -> BoxFuture<'_, Result<(), BackendError>> {
        Box::pin(async move {
            self.inner.shutdown(deadline).await;
            Ok(())
        })
    }
}
