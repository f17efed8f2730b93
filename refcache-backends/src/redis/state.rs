//! The backend's shared state: [`RedisTaskBackend`] and its [`Inner`] (settings, keys, the connection, the scripts,
//! the near cache, the event hubs, the tasks held here), the errors, and the small helpers every path uses. Every
//! other file of the backend builds on this one; it imports none of them but the leaves (`config`, `keys`,
//! `scripts`, `hub`, `held`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use refcache_core::{BackendError, RefId, TaskStatus, ValueStore};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::config::{RedisConfig, RedisConfigError};
use super::held::RunState;
use super::hub::Hub;
use super::keys::Keys;
use super::scripts::Scripts;

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
    /// Woken by `P:queued` (a stream entry was added): the consumer takes (`workers` mode).
    pub(super) queued: Arc<Notify>,
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

    pub(super) fn check_accepting(&self) -> Result<(), BackendError> {
        if self.accepting.load(Ordering::Acquire) {
            Ok(())
        } else {
            Err(BackendError::ShuttingDown)
        }
    }
}

pub(crate) fn parse_status(s: &str) -> TaskStatus {
    TaskStatus::from_name(s).unwrap_or(TaskStatus::Failed)
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
