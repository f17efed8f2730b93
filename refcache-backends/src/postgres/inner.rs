//! [`Inner`]: the state one backend's clones share (settings, connections, statements, the near cache, the hubs,
//! the tasks held here, the background loops' tokens), and the small helpers every path uses.

use std::sync::atomic::{AtomicBool, AtomicI64};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use refcache_core::{RefId, ValueStore};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::batch::Batches;
use super::config::PostgresConfig;
use super::held::RunState;
use super::hub::Hub;
use super::pool::Pool;
use super::schema::Sql;

pub(crate) struct Inner {
    /// This, for the tasks it spawns (the hint sender).
    pub(super) me: Weak<Inner>,
    /// Ends and hints that concurrent tasks share a statement for.
    pub(super) batches: Batches,
    /// A lower bound of the oldest waiting task's sequence number (it never goes down: a retry takes a new one),
    /// so that a submission reads it only when the queue may be over `max_queued`.
    pub(super) oldest_pending: AtomicI64,
    pub(super) config: PostgresConfig,
    pub(super) pg_config: tokio_postgres::Config,
    pub(super) tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
    /// Durable statements (the server's `synchronous_commit`): ends and values, cancels, deletes, confirmations.
    pub(super) pool: Pool,
    /// Submissions' inserts, with `synchronous_commit=off`: a submission is made durable before its reference is
    /// returned, by its task's end or by a confirmation of its own (`Inner::made_durable`). Connections of their
    /// own, so that an insert waiting on a key's lock never holds up the fast pool's starts and reads behind it.
    pub(super) submits: Pool,
    /// The same settings with `synchronous_commit=off`, for what the leases recover after a server crash: starts,
    /// progress, lease renewals, claims, counters. (Any later durable commit flushes them too.)
    pub(super) fast: Pool,
    pub(super) sql: Sql,
    /// Whether the migrations have been applied (checked once per process, at first use).
    pub(super) migrated: AtomicBool,
    pub(super) migrating: tokio::sync::Mutex<()>,
    /// Finished values only: they never change, so a local copy cannot go stale.
    pub(super) near: ValueStore,
    pub(super) hub: Hub,
    /// The followers of tasks' output alone (`output` hints): a waiter for a task's end is not woken per batch.
    pub(super) output_hub: Hub,
    /// The followers of starts alone (`start` hints): a watcher sees a task start; a waiter for its end is not
    /// woken (and does not read the record) for it.
    pub(super) start_hub: Hub,
    /// This process's name as a task owner.
    pub(super) consumer: String,
    /// This process's counter shard (counters are sharded so that concurrent transactions do not queue on a row).
    pub(super) shard: i32,
    /// Whether this instance claims tasks from the table (`workers` mode).
    pub(super) consumes: bool,
    pub(super) run: Mutex<RunState>,
    /// Woken whenever a held task is released.
    pub(super) released: Notify,
    /// Wakes the claiming loop: a task was queued, a slot came free, a reconnect, or the upkeep period passed.
    pub(super) work: Arc<Notify>,
    pub(super) accepting: AtomicBool,
    /// Stops the background loops (the backend is dropped).
    pub(super) stop: CancellationToken,
    /// Stops claiming tasks (shutdown; leases are still renewed while running tasks drain).
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

pub(super) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Whole milliseconds (at least 1) as a statement parameter.
pub(crate) fn ms_i64(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX).max(1)
}

/// A random byte from the ref id generator's source (a fresh uuid), without another dependency.
pub(super) fn random_byte() -> u8 {
    uuid::Uuid::new_v4().as_bytes()[0]
}
