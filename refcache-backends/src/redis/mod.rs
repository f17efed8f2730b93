//! The Redis task backend (feature `redis`): shared results across replicas, worker processes, crash recovery.
//!
//! [`RedisTaskBackend`] keeps task records, values and the key-to-ref index in Redis, so that a call, a poll, a
//! cancel or a list can land on any replica. Tasks run in one of two [`Mode`]s:
//! - `local`: in the process that took the call (its state in Redis);
//! - `workers`: on worker processes ([`worker::run`]) that take tasks off a Redis Stream with a consumer group and
//!   run them by their registered name.
//!
//! How it maps onto Redis (keys in `keys.rs`, atomic scripts in `scripts.rs`, events in `events.rs`, running tasks in
//! `runner.rs`, the stream consumer and crash recovery in `worker.rs`) is described in `docs/backends.md`.
//!
//! Switching a service from the in-process default is config alone: `REFCACHE_BACKEND=redis://127.0.0.1:6379/0`
//! (options in the query: `?mode=workers&key_prefix=myapp&lease=30&max_deliveries=3`).

mod config;
mod events;
mod keys;
mod runner;
mod scripts;
mod server;
pub mod worker;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use refcache_core::{
    BackendError, BackendFactory, BackendStats, CacheKey, CancelOutcome, ConfigError,
    RefCacheConfig, RefId, RetryOutcome, StoredValue, Submission, Submitted, TaskBackend,
    TaskFilter, TaskInfo, TaskPage, TaskSnapshot, TaskSpec, TaskStatus, Timestamp, ValueStore,
};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

pub use config::{Mode, RedisConfig, RedisConfigError};
pub use server::{RedisServer, RedisServerError, RedisServerOptions};

use events::{Event, Hub};
use keys::Keys;
use runner::RunState;
use scripts::Scripts;

/// At most this many records are read for a list or the per-status counts (newest first).
const LIST_SCAN: isize = 10_000;

/// A task backend on Redis. Cheap to clone; clones share one set of connections.
///
/// Build one with [`RedisTaskBackend::new`] (a replica: it submits, polls and cancels, and in `local` mode runs
/// what it submits), or [`RedisTaskBackend::worker`] (it also runs tasks off the stream, in `workers` mode). Both
/// connect lazily: while Redis is down, every call answers [`BackendError::Unavailable`], and work resumes when it
/// is back.
#[derive(Clone)]
pub struct RedisTaskBackend {
    inner: Arc<Inner>,
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
    config: RedisConfig,
    keys: Keys,
    client: redis::Client,
    /// The shared connection, made on first use on the runtime that uses it (a connection manager lives on the
    /// runtime that made it), and made again with the background loops if that runtime has gone.
    conn: Mutex<Option<ConnectionManager>>,
    scripts: Scripts,
    /// Finished values only: they never change, so a local copy cannot go stale.
    near: ValueStore,
    hub: Hub,
    /// This process's name as a stream consumer and task owner.
    consumer: String,
    /// Whether this instance takes tasks off the stream (`workers` mode).
    consumes: bool,
    run: Mutex<RunState>,
    /// Woken whenever a held task is released.
    released: Notify,
    accepting: AtomicBool,
    /// Stops the background loops (the backend is dropped).
    stop: CancellationToken,
    /// Stops taking tasks off the stream (shutdown; leases are still renewed while running tasks drain).
    consuming: CancellationToken,
    /// The background loops, restarted if the runtime they ran on has gone (a backend outliving a runtime).
    loops: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Jobs of tasks that failed here, so that `retry` can run a task that is not registered by name (a method).
    reruns: moka::sync::Cache<RefId, refcache_core::LocalJob>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The background loops hold only weak references; this ends them now rather than at their next wake-up.
        self.stop.cancel();
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn ms(d: Duration) -> u64 {
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

    fn build(config: RedisConfig, consumes: bool) -> Result<Self, RedisBackendError> {
        config.validate()?;
        let client_err = |e: redis::RedisError| RedisBackendError::Client {
            url: config.redacted_url(),
            message: e.to_string(),
        };
        let client = redis::Client::open(config.url.as_str()).map_err(client_err)?;
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
fn unavailable_hint(err: &redis::RedisError) -> &'static str {
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

fn manager_config(config: &RedisConfig) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(config.command_timeout))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_millis(500))
}

impl Inner {
    pub(crate) fn unavailable(&self, err: &redis::RedisError) -> BackendError {
        BackendError::Unavailable(format!(
            "Redis at {}: {err}{}",
            self.config.redacted_url(),
            unavailable_hint(err)
        ))
    }

    fn corrupt(&self, what: &str, err: impl std::fmt::Display) -> BackendError {
        BackendError::Other(format!(
            "unreadable {what} in Redis under prefix `{}`: {err}",
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
    fn ensure_started(self: &Arc<Self>) {
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

    fn check_accepting(&self) -> Result<(), BackendError> {
        if self.accepting.load(Ordering::Acquire) {
            Ok(())
        } else {
            Err(BackendError::ShuttingDown)
        }
    }

    /// The task's record, from Redis. (Every script writes the `status` field and the record's status together,
    /// so the record's status is the one to compare against.)
    async fn read(&self, ref_id: &RefId) -> Result<Option<TaskInfo>, BackendError> {
        let mut conn = self.conn();
        let info: Option<String> = conn
            .hget(self.keys.task(ref_id), "info")
            .await
            .map_err(|e| self.unavailable(&e))?;
        info.map(|info| serde_json::from_str(&info).map_err(|e| self.corrupt("task record", e)))
            .transpose()
    }

    /// Runs the `transition` script. `owner`: only if the task is still this consumer's.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn transition(
        &self,
        ref_id: &RefId,
        from: &[TaskStatus],
        info: &TaskInfo,
        counter: &str,
        owner: bool,
        value: Option<&StoredValue>,
    ) -> Result<String, BackendError> {
        let from = from.iter().fold(",".to_owned(), |mut s, st| {
            s.push_str(st.as_str());
            s.push(',');
            s
        });
        let info_json = serde_json::to_string(info).expect("a TaskInfo serializes");
        let (value_json, value_ttl) = match value {
            Some(v) => (
                serde_json::to_string(v).expect("a StoredValue serializes"),
                ms(v.ttl),
            ),
            None => (String::new(), 0),
        };
        let mut conn = self.conn();
        self.scripts
            .transition
            .arg(self.keys.prefix())
            .arg(ref_id.as_str())
            .arg(from)
            .arg(info.status.as_str())
            .arg(&info_json)
            .arg(Event::info(info, &info_json))
            .arg(ms(self.config.task_ttl))
            .arg(now_ms())
            .arg(counter)
            .arg(if owner { self.consumer.as_str() } else { "" })
            .arg(value_json)
            .arg(value_ttl)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.unavailable(&e))
    }

    /// Cancels a pending or processing task (compare-and-set against concurrent changes).
    async fn cancel_with(
        &self,
        ref_id: &RefId,
        note: Option<&str>,
    ) -> Result<CancelOutcome, BackendError> {
        for _ in 0..16 {
            let Some(mut info) = self.read(ref_id).await? else {
                return Ok(CancelOutcome::NotFound);
            };
            match info.status {
                TaskStatus::Cancelled => return Ok(CancelOutcome::Cancelled),
                TaskStatus::Complete | TaskStatus::Failed => {
                    return Ok(CancelOutcome::AlreadyFinished(info.status));
                }
                _ => {}
            }
            let from = info.status;
            info.status = TaskStatus::Cancelled;
            info.finished_at = Some(Timestamp::now());
            info.queue_position = None;
            if let Some(note) = note {
                info.status_message = Some(note.to_owned());
            }
            if self
                .transition(ref_id, &[from], &info, "cancellations", false, None)
                .await?
                == "ok"
            {
                tracing::debug!(%ref_id, "task cancelled");
                return Ok(CancelOutcome::Cancelled);
            }
        }
        Err(BackendError::Other(format!(
            "could not cancel {ref_id}: its record kept changing"
        )))
    }

    async fn get(&self, ref_id: &RefId) -> Result<Option<TaskSnapshot>, BackendError> {
        let mut conn = self.conn();
        let found: Option<(String, Option<String>, Option<usize>)> = self
            .scripts
            .get
            .arg(self.keys.prefix())
            .arg(ref_id.as_str())
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.unavailable(&e))?;
        let Some((info, value, rank)) = found else {
            return Ok(None);
        };
        let mut info: TaskInfo =
            serde_json::from_str(&info).map_err(|e| self.corrupt("task record", e))?;
        info.queue_position = rank.map(|r| r + 1);
        let value = match value {
            Some(v) => Some(self.stored(&v).await?),
            None => None,
        };
        Ok(Some(TaskSnapshot::new(info, value)))
    }

    /// A value read from Redis, through the near cache.
    async fn stored(&self, json: &str) -> Result<Arc<StoredValue>, BackendError> {
        let value: StoredValue =
            serde_json::from_str(json).map_err(|e| self.corrupt("value", e))?;
        if let Some(near) = self.near.get(&value.key).await
            && near.ref_id == value.ref_id
        {
            return Ok(near);
        }
        let value = Arc::new(value);
        if value.is_live() && self.near.fits(&value) {
            self.near.insert(value.clone()).await;
        }
        Ok(value)
    }

    /// Records (with queue positions) of `refs`, skipping those that are gone.
    async fn infos(&self, refs: &[String]) -> Result<Vec<TaskInfo>, BackendError> {
        let mut infos = Vec::with_capacity(refs.len());
        for chunk in refs.chunks(500) {
            let mut pipe = redis::pipe();
            for r in chunk {
                pipe.hmget(
                    format!("{}:task:{r}", self.keys.prefix()),
                    &["status", "info", "qm"],
                );
            }
            let mut conn = self.conn();
            let rows: Vec<(Option<String>, Option<String>, Option<String>)> = pipe
                .query_async(&mut conn)
                .await
                .map_err(|e| self.unavailable(&e))?;
            let mut pending = redis::pipe();
            let mut pending_at = Vec::new();
            for (status, info, qm) in rows {
                let (Some(status), Some(info)) = (status, info) else {
                    continue;
                };
                let Ok(info) = serde_json::from_str::<TaskInfo>(&info) else {
                    continue;
                };
                if status == "pending"
                    && let Some(qm) = qm
                {
                    pending.zrank(self.keys.pending(), qm);
                    pending_at.push(infos.len());
                }
                infos.push(info);
            }
            if !pending_at.is_empty() {
                let ranks: Vec<Option<usize>> = pending
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| self.unavailable(&e))?;
                for (at, rank) in pending_at.into_iter().zip(ranks) {
                    infos[at].queue_position = rank.map(|r| r + 1);
                }
            }
        }
        Ok(infos)
    }
}

impl TaskBackend for RedisTaskBackend {
    fn name(&self) -> &str {
        "redis"
    }

    fn near_cache(&self) -> Option<&ValueStore> {
        Some(&self.inner.near)
    }

    fn lookup<'a>(
        &'a self,
        key: &'a CacheKey,
    ) -> BoxFuture<'a, Result<Option<Arc<StoredValue>>, BackendError>> {
        Box::pin(async move {
            self.inner.ensure_started();
            let inner = &self.inner;
            let mut conn = inner.conn();
            let json: Option<String> = conn
                .hget(inner.keys.value(key), "v")
                .await
                .map_err(|e| inner.unavailable(&e))?;
            match json {
                Some(json) => Ok(Some(inner.stored(&json).await?).filter(|v| v.is_live())),
                None => Ok(None),
            }
        })
    }

    fn submit(&self, submission: Submission) -> BoxFuture<'_, Result<Submitted, BackendError>> {
        Box::pin(async move {
            let inner = &self.inner;
            inner.ensure_started();
            inner.check_accepting()?;
            let Submission { spec, job, .. } = submission;
            let created = now_ms();
            let mut info = TaskInfo::new(
                spec.ref_id.clone(),
                spec.task_name.clone(),
                spec.namespace.clone(),
            );
            // Whole milliseconds, as the record stores them: lists order by this.
            info.created_at = Timestamp(UNIX_EPOCH + Duration::from_millis(created));
            info.session_id = spec.options.session_id.clone();
            info.policy = spec.policy.clone();
            info.max_retries = spec.options.max_retries;
            // In `workers` mode a task goes onto the stream, unless no worker could run it: a method or a function
            // with skipped parameters is not registered by name, so it runs here, as in `local` mode.
            let workers = inner.config.mode == Mode::Workers
                && (job.is_none() || refcache_core::registry::find(&spec.task_name).is_some());
            let lease_expiry = if workers {
                String::new()
            } else {
                (created + ms(inner.config.lease)).to_string()
            };
            let mut conn = inner.conn();
            let reply: Vec<String> = inner
                .scripts
                .submit
                .arg(inner.keys.prefix())
                .arg(spec.ref_id.as_str())
                .arg(spec.key.to_hex())
                .arg(serde_json::to_string(&info).expect("a TaskInfo serializes"))
                .arg(serde_json::to_string(&spec).expect("a TaskSpec serializes"))
                .arg(created)
                .arg(priority_hex(spec.options.priority))
                .arg(spec.options.session_id.as_deref().unwrap_or(""))
                .arg(if workers { "1" } else { "0" })
                .arg(inner.config.max_queued)
                .arg(lease_expiry)
                .invoke_async(&mut conn)
                .await
                .map_err(|e| inner.unavailable(&e))?;
            match reply.first().map(String::as_str) {
                Some("hit") => Ok(Submitted::Hit(inner.stored(&reply[1]).await?)),
                Some("joined") => RefId::parse(&reply[1])
                    .map(Submitted::Joined)
                    .map_err(|e| inner.corrupt("in-flight entry", e)),
                Some("full") => Err(BackendError::QueueFull {
                    max_queued: inner.config.max_queued,
                }),
                Some("started") => {
                    let ref_id = spec.ref_id.clone();
                    if !workers {
                        self.inner.hold(Arc::new(spec), job, None, false);
                    }
                    Ok(Submitted::Started(ref_id))
                }
                other => Err(BackendError::Other(format!(
                    "unexpected answer from the submit script: {other:?}"
                ))),
            }
        })
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

    fn wait<'a>(
        &'a self,
        ref_id: &'a RefId,
        deadline: Option<tokio::time::Instant>,
    ) -> BoxFuture<'a, Result<Option<TaskSnapshot>, BackendError>> {
        Box::pin(async move {
            let inner = &self.inner;
            inner.ensure_started();
            // Follow first, then read: a change in between arrives as an event.
            let mut follower = inner.hub.follow(ref_id);
            loop {
                let snapshot = inner.get(ref_id).await?;
                match &snapshot {
                    Some(s) if !s.info.status.is_terminal() => {}
                    _ => return Ok(snapshot),
                }
                loop {
                    let changed = follower.rx().changed();
                    let woke = match deadline {
                        Some(deadline) => tokio::time::timeout_at(deadline, changed).await,
                        None => Ok(changed.await),
                    };
                    match woke {
                        Ok(Ok(())) => {
                            let latest = follower.rx().borrow_and_update().clone();
                            match latest {
                                Some(info) if !info.status.is_terminal() => {}
                                // Terminal, deleted, or a resync: read the record.
                                _ => break,
                            }
                        }
                        // The deadline passed (or the hub went away): answer with what is there now.
                        _ => return inner.get(ref_id).await,
                    }
                }
            }
        })
    }

    fn watch<'a>(
        &'a self,
        ref_id: &'a RefId,
    ) -> BoxFuture<'a, Result<Option<watch::Receiver<TaskInfo>>, BackendError>> {
        Box::pin(async move {
            let inner = self.inner.clone();
            inner.ensure_started();
            let mut follower = inner.hub.follow(ref_id);
            let Some(snapshot) = inner.get(ref_id).await? else {
                return Ok(None);
            };
            if snapshot.info.status.is_terminal() {
                return Ok(None);
            }
            let (tx, rx) = watch::channel(snapshot.info);
            let ref_id = ref_id.clone();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        () = tx.closed() => return,
                        changed = follower.rx().changed() => {
                            if changed.is_err() {
                                return;
                            }
                        }
                    }
                    let latest = follower.rx().borrow_and_update().clone();
                    let info = match latest {
                        Some(info) => info,
                        None => match inner.get(&ref_id).await {
                            Ok(Some(s)) => s.info,
                            Ok(None) => return,
                            Err(_) => continue,
                        },
                    };
                    let done = info.status.is_terminal();
                    tx.send_replace(info);
                    if done {
                        return;
                    }
                }
            });
            Ok(Some(rx))
        })
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
        Box::pin(async move {
            let inner = &self.inner;
            inner.ensure_started();
            if let Some(cursor) = filter.cursor.as_deref() {
                refcache_core::ListCursor::parse(cursor)?;
            }
            let mut conn = inner.conn();
            let refs: Vec<String> = match filter.session_id.as_deref() {
                Some(session) => conn.smembers(inner.keys.session(session)).await,
                None => conn.zrevrange(inner.keys.index(), 0, LIST_SCAN - 1).await,
            }
            .map_err(|e| inner.unavailable(&e))?;
            let infos = inner.infos(&refs).await?;
            TaskPage::paginate(
                infos.into_iter().filter(|i| filter.matches(i)).collect(),
                &filter,
            )
        })
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
        Box::pin(async move {
            let inner = &self.inner;
            inner.ensure_started();
            let mut conn = inner.conn();
            let key = inner.keys.session(session_id);
            let refs: Vec<String> = conn
                .smembers(&key)
                .await
                .map_err(|e| inner.unavailable(&e))?;
            let mut n = 0;
            for r in refs.iter().filter_map(|r| RefId::parse(r).ok()) {
                if inner.delete(&r).await? {
                    n += 1;
                }
            }
            let _: () = conn.del(&key).await.map_err(|e| inner.unavailable(&e))?;
            tracing::debug!(session = session_id, tasks = n, "session ended");
            Ok(n)
        })
    }

    fn cleanup(&self, max_age: Duration) -> BoxFuture<'_, Result<usize, BackendError>> {
        Box::pin(async move {
            self.inner.ensure_started();
            let inner = &self.inner;
            let cutoff = now_ms().saturating_sub(ms(max_age));
            let mut conn = inner.conn();
            inner
                .scripts
                .cleanup
                .arg(inner.keys.prefix())
                .arg(cutoff)
                .invoke_async(&mut conn)
                .await
                .map_err(|e| inner.unavailable(&e))
        })
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

/// The queue member's priority part: higher priority sorts first.
fn priority_hex(priority: i32) -> String {
    let inverted = i64::from(i32::MAX) - i64::from(priority);
    format!("{inverted:08x}")
}

impl Inner {
    async fn delete(self: &Arc<Self>, ref_id: &RefId) -> Result<bool, BackendError> {
        let mut conn = self.conn();
        let key: Option<String> = conn
            .hget(self.keys.task(ref_id), "key")
            .await
            .map_err(|e| self.unavailable(&e))?;
        let Some(key) = key.and_then(|k| CacheKey::from_hex(&k)) else {
            return Ok(false);
        };
        let deleted: i64 = self
            .scripts
            .delete
            .arg(self.keys.prefix())
            .arg(ref_id.as_str())
            .arg(Event::drop(ref_id, &key))
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.unavailable(&e))?;
        self.near.invalidate_if_ref(&key, ref_id).await;
        self.stop_held(ref_id);
        Ok(deleted == 1)
    }

    async fn retry(self: &Arc<Self>, ref_id: &RefId) -> Result<RetryOutcome, BackendError> {
        let mut conn = self.conn();
        let (spec, info): (Option<String>, Option<String>) = conn
            .hmget(self.keys.task(ref_id), &["spec", "info"])
            .await
            .map_err(|e| self.unavailable(&e))?;
        let (Some(spec), Some(info)) = (spec, info) else {
            return Ok(RetryOutcome::NotFound);
        };
        let spec: TaskSpec =
            serde_json::from_str(&spec).map_err(|e| self.corrupt("task spec", e))?;
        let mut info: TaskInfo =
            serde_json::from_str(&info).map_err(|e| self.corrupt("task record", e))?;
        if info.status != TaskStatus::Failed {
            return Ok(RetryOutcome::NotFailed(info.status));
        }
        let registered = refcache_core::registry::find(&spec.task_name).is_some();
        // Onto the stream when a worker can run it by name; else here, as it ran the first time.
        let workers = self.config.mode == Mode::Workers && registered;
        let job = self.reruns.get(ref_id);
        if !workers && job.is_none() && !registered {
            return Err(BackendError::Other(format!(
                "cannot retry {ref_id} in this process: task `{}` did not fail here and is not registered by name \
                 (a method, or a function with skipped parameters); retry it on the replica that ran it, or call it \
                 again",
                spec.task_name
            )));
        }
        info.status = TaskStatus::Pending;
        info.error = None;
        info.finished_at = None;
        info.status_message = None;
        info.progress = None;
        info.retry_count += 1;
        let info_json = serde_json::to_string(&info).expect("a TaskInfo serializes");
        let reply: Vec<String> = self
            .scripts
            .retry
            .arg(self.keys.prefix())
            .arg(ref_id.as_str())
            .arg(&info_json)
            .arg(Event::info(&info, &info_json))
            .arg(if workers { "1" } else { "0" })
            .arg(priority_hex(spec.options.priority))
            .arg(serde_json::to_string(&spec).expect("a TaskSpec serializes"))
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.unavailable(&e))?;
        match reply.first().map(String::as_str) {
            Some("ok") => {
                tracing::debug!(%ref_id, task = %spec.task_name, "failed task retried");
                if !workers {
                    self.hold(Arc::new(spec), job, None, false);
                }
                Ok(RetryOutcome::Restarted)
            }
            Some("missing") => Ok(RetryOutcome::NotFound),
            Some("not") => Ok(RetryOutcome::NotFailed(parse_status(
                reply.get(1).map_or("", String::as_str),
            ))),
            Some("running") => RefId::parse(reply.get(1).map_or("", String::as_str))
                .map(RetryOutcome::AlreadyRunning)
                .map_err(|e| self.corrupt("in-flight entry", e)),
            other => Err(BackendError::Other(format!(
                "unexpected answer from the retry script: {other:?}"
            ))),
        }
    }

    async fn stats(&self) -> Result<BackendStats, BackendError> {
        let mut conn = self.conn();
        let counters: HashMap<String, u64> = conn
            .hgetall(self.keys.stats())
            .await
            .map_err(|e| self.unavailable(&e))?;
        let gauges: HashMap<String, String> = conn
            .hgetall(self.keys.workers())
            .await
            .map_err(|e| self.unavailable(&e))?;
        let queued: u64 = conn
            .zcard(self.keys.pending())
            .await
            .map_err(|e| self.unavailable(&e))?;
        let refs: Vec<String> = conn
            .zrevrange(self.keys.index(), 0, LIST_SCAN - 1)
            .await
            .map_err(|e| self.unavailable(&e))?;
        let mut stats = BackendStats::default();
        for info in self.infos(&refs).await? {
            *stats.by_status.entry(info.status).or_default() += 1;
        }
        let (running, capacity) = {
            let st = lock(&self.run);
            (st.running() as u64, st.capacity() as u64)
        };
        stats.running = running;
        stats.capacity = capacity;
        let live_after = now_ms().saturating_sub(ms(self.config.lease));
        for (consumer, gauge) in gauges {
            if consumer == self.consumer {
                continue;
            }
            if let Ok(g) = serde_json::from_str::<worker::Gauge>(&gauge)
                && g.at >= live_after
            {
                stats.running += g.running;
                stats.capacity += g.capacity;
            }
        }
        stats.queued = queued;
        let c = |name: &str| counters.get(name).copied().unwrap_or(0);
        stats.executions = c("executions");
        stats.coalesced = c("coalesced");
        stats.retries = c("retries");
        stats.cancellations = c("cancellations");
        stats.timeouts = c("timeouts");
        Ok(stats)
    }

    async fn shutdown(self: &Arc<Self>, deadline: Duration) {
        self.accepting.store(false, Ordering::Release);
        self.consuming.cancel();
        tracing::debug!(consumer = %self.consumer, "redis backend shutting down");
        let until = tokio::time::Instant::now() + deadline;
        if self.wait_idle(until).await {
            return;
        }
        for ref_id in self.held_refs() {
            if let Err(err) = self.cancel_with(&ref_id, Some("shutdown")).await {
                tracing::warn!(%ref_id, %err, "could not record the cancel of a task at shutdown");
            }
            self.stop_held(&ref_id);
        }
        self.wait_idle(
            tokio::time::Instant::now() + self.config.cancel_grace + Duration::from_secs(1),
        )
        .await;
    }
}

pub(crate) fn parse_status(s: &str) -> TaskStatus {
    match s {
        "pending" => TaskStatus::Pending,
        "processing" => TaskStatus::Processing,
        "complete" => TaskStatus::Complete,
        "cancelled" => TaskStatus::Cancelled,
        _ => TaskStatus::Failed,
    }
}

/// `REFCACHE_BACKEND=redis://...` (and `rediss://`) builds a [`RedisTaskBackend`]: switching from `memory` is
/// config alone.
fn from_config(config: &RefCacheConfig) -> Result<Arc<dyn TaskBackend>, ConfigError> {
    let redis = RedisConfig::from_refcache_config(config).map_err(|e| ConfigError::Backend {
        backend: refcache_core::redact_url(&config.backend),
        message: e.to_string(),
    })?;
    let backend = RedisTaskBackend::new(redis).map_err(|e| ConfigError::Backend {
        backend: refcache_core::redact_url(&config.backend),
        message: e.to_string(),
    })?;
    Ok(Arc::new(backend))
}

inventory::submit!(BackendFactory::new("redis", from_config));
inventory::submit!(BackendFactory::new("rediss", from_config));
