//! [`RedisTaskBackend`]: the struct, its shared state ([`Inner`]), construction, the connection and the background
//! loops, and its [`TaskBackend`] implementation, each method a call into the file of its path (`submit.rs`,
//! `poll.rs`, `list.rs`, `control.rs`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use refcache_core::{
    BackendError, BackendStats, CacheKey, CancelOutcome, RefId, RetryOutcome, StoredValue,
    Submission, Submitted, TaskBackend, TaskFilter, TaskInfo, TaskPage, TaskSnapshot, TaskStatus,
    ValueStore,
};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use super::config::{Mode, RedisConfig, RedisConfigError};
use super::events::Hub;
use super::keys::Keys;
use super::runner::RunState;
use super::scripts::Scripts;
use super::{events, worker};

/// A task backend on Redis. Cheap to clone; clones share one set of connections.
///
/// Build one with [`RedisTaskBackend::new`] (a replica: it submits, polls and cancels, and in `local` mode runs
/// what it submits), or [`RedisTaskBackend::worker`] (it also runs tasks off the stream, in `workers` mode). Both
/// connect lazily: while Redis is down, every call answers [`BackendError::Unavailable`], and work resumes when it
/// is back.
#[derive(Clone)]
pub struct RedisTaskBackend {
    pub(super) inner: Arc<Inner>,
}

impl std::fmt::Debug for RedisTaskBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTaskBackend")
            .field("url", &self.inner.config.redacted_url())
            .field("mode", &self.inner.config.mode)
            .field("key_prefix", &self.inner.config.key_prefix)
            .field("consumer", &self.inner.consumer)
            .finish_non_exhaustive()
    }
}

pub(crate) struct Inner {
    pub(super) config: RedisConfig,
    pub(super) keys: Keys,
    pub(super) client: redis::Client,
    /// The shared connection, made on first use on the runtime that uses it (a connection manager lives on the
    /// runtime that made it), and made again with the background loops if that runtime has gone.
    pub(super) conn: Mutex<Option<ConnectionManager>>,
    pub(super) scripts: Scripts,
    /// Finished values only: they never change, so a local copy cannot go stale.
    pub(super) near: ValueStore,
    pub(super) hub: Hub,
    /// Followers of tasks' output (`output` events), apart from `hub` so that a waiter for the end is not woken
    /// by every batch of output.
    pub(super) output_hub: Hub,
    /// This process's name as a stream consumer and task owner.
    pub(super) consumer: String,
    /// Whether this instance takes tasks off the stream (`workers` mode).
    pub(super) consumes: bool,
    pub(super) run: Mutex<RunState>,
    /// Woken whenever a held task is released.
    pub(super) released: Notify,
    pub(super) accepting: AtomicBool,
    /// Stops the background loops (the backend is dropped).
    pub(super) stop: CancellationToken,
    /// Stops taking tasks off the stream (shutdown; leases are still renewed while running tasks drain).
    pub(super) consuming: CancellationToken,
    /// The background loops, restarted if the runtime they ran on has gone (a backend outliving a runtime).
    pub(super) loops: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Jobs of tasks that failed here, so that `retry` can run a task that is not registered by name (a method).
    pub(super) reruns: moka::sync::Cache<RefId, refcache_core::LocalJob>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The background loops hold only weak references; this ends them now rather than at their next wake-up.
        self.stop.cancel();
    }
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

pub(super) fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// Why a Redis backend could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisBackendError {
    /// A setting is invalid.
    #[error(transparent)]
    Config(#[from] RedisConfigError),
    /// The Redis client could not be created.
    #[error("cannot create a Redis client for `{url}`: {message}")]
    Client {
        /// The URL.
        url: String,
        /// Why.
        message: String,
    },
    /// The backend stopped with an error (a worker could not run).
    #[error(transparent)]
    Backend(#[from] BackendError),
}

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

/// What to check, for the errors whose cause is likely a wrong setting rather than a passing outage.
pub(super) fn unavailable_hint(err: &redis::RedisError) -> &'static str {
    if err.is_connection_refusal() {
        " (nothing listens there: is redis-server running, and does the backend URL (REFCACHE_BACKEND) name its \
         host and port?)"
    } else if err.kind() == redis::ErrorKind::Parse {
        " (the server there does not speak the Redis protocol: is the backend URL's port a Redis port?)"
    } else if err.kind() == redis::ErrorKind::AuthenticationFailed || err.code() == Some("NOAUTH") {
        " (the server wants a login: check the user and password in the backend URL, redis://user:password@host)"
    } else {
        ""
    }
}

pub(super) fn manager_config(config: &RedisConfig) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(config.command_timeout))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_millis(500))
}

impl Inner {
    /// A Redis error as a backend error: `WRONGTYPE` (a key under the prefix is not refcache's, also as the
    /// scripts' own checks report it) is [`BackendError::ForeignData`], anything else `Unavailable`.
    pub(crate) fn unavailable(&self, err: &redis::RedisError) -> BackendError {
        if err.code() == Some("WRONGTYPE") {
            return BackendError::ForeignData(format!(
                "Redis at {}, prefix `{}`: {err}",
                self.config.redacted_url(),
                self.config.key_prefix
            ));
        }
        BackendError::Unavailable(format!(
            "Redis at {}: {err}{}",
            self.config.redacted_url(),
            unavailable_hint(err)
        ))
    }

    pub(super) fn corrupt(&self, what: &str, err: impl std::fmt::Display) -> BackendError {
        BackendError::ForeignData(format!(
            "an unreadable {what} in Redis under prefix `{}` ({err})",
            self.config.key_prefix
        ))
    }

    /// Starts the background loops on first use (inside the caller's runtime).
    /// The shared connection (a cheap clone). Call inside a runtime, after [`ensure_started`](Self::ensure_started).
    pub(crate) fn conn(&self) -> ConnectionManager {
        let mut slot = lock(&self.conn);
        if let Some(conn) = &*slot {
            return conn.clone();
        }
        let conn = ConnectionManager::new_lazy_with_config(self.client.clone(), manager_config(&self.config))
            .expect("a lazy connection manager fails only for resubscription without a push sender, never set here");
        *slot = Some(conn.clone());
        conn
    }

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

    pub(super) fn check_accepting(&self) -> Result<(), BackendError> {
        if self.accepting.load(Ordering::Acquire) {
            Ok(())
        } else {
            Err(BackendError::ShuttingDown)
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

pub(crate) fn parse_status(s: &str) -> TaskStatus {
    match s {
        "pending" => TaskStatus::Pending,
        "processing" => TaskStatus::Processing,
        "input_required" => TaskStatus::InputRequired,
        "complete" => TaskStatus::Complete,
        "cancelled" => TaskStatus::Cancelled,
        _ => TaskStatus::Failed,
    }
}

#[cfg(test)]
mod hint_tests {
    use super::unavailable_hint;

    #[test]
    fn setting_errors_say_what_to_check_and_outages_say_nothing_more() {
        let refused: redis::RedisError =
            std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into();
        assert!(unavailable_hint(&refused).contains("is redis-server running"));
        let garbage: redis::RedisError = (redis::ErrorKind::Parse, "Unexpected `60`").into();
        assert!(unavailable_hint(&garbage).contains("does not speak the Redis protocol"));
        let login: redis::RedisError = (redis::ErrorKind::AuthenticationFailed, "WRONGPASS").into();
        assert!(unavailable_hint(&login).contains("password"));
        let dropped: redis::RedisError =
            std::io::Error::from(std::io::ErrorKind::ConnectionReset).into();
        assert_eq!(unavailable_hint(&dropped), "");
    }
}
