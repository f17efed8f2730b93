//! The Postgres task backend (feature `postgres`): shared results across replicas, worker processes, crash
//! recovery, for teams that already run Postgres and want no second piece of infrastructure.
//!
//! [`PostgresTaskBackend`] keeps task records and values in tables of one schema, so that a call, a poll, a cancel
//! or a list can land on any replica. Tasks run in one of two [`Mode`]s:
//! - `local`: in the process that took the call (its state in Postgres);
//! - `workers`: on worker processes ([`worker::run`]) that claim tasks with `FOR UPDATE SKIP LOCKED` under leases
//!   and run them by their registered name.
//!
//! How it maps onto Postgres (tables in `migrations/`, statements in `schema.rs`, notifications in `notify.rs`,
//! running tasks in `runner.rs`, claiming, leases and recovery in `worker.rs`) is described in `docs/backends.md`.
//!
//! Switching a service from the in-process default is config alone:
//! `REFCACHE_BACKEND=postgres://app@127.0.0.1:5432/app` (options in the query:
//! `?mode=workers&schema=myapp&lease=30&max_deliveries=3&sslmode=require`).

mod config;
mod notify;
mod pool;
mod runner;
mod schema;
mod server;
mod tls;
pub mod worker;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use refcache_core::{
    BackendError, BackendFactory, BackendStats, CacheKey, CancelOutcome, ConfigError, InputRequest,
    OutputChunk, RefCacheConfig, RefId, RespondOutcome, RetryOutcome, StoredValue, Submission,
    Submitted, TaskBackend, TaskError, TaskFilter, TaskInfo, TaskPage, TaskSnapshot, TaskSpec,
    TaskStatus, Timestamp, ValueStore,
};
use tokio::sync::{Notify, watch};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

use pool::Pool;
use tokio_util::sync::CancellationToken;

pub use config::{Mode, PostgresConfig, PostgresConfigError, SslMode};
pub use schema::{SCHEMA_VERSION, SchemaError};
pub use server::{PostgresServer, PostgresServerError, PostgresServerOptions};

use notify::Hub;
use runner::RunState;
use schema::Sql;

/// At most this many records are read for a list (newest first, from the cursor on).
const LIST_SCAN: i64 = 10_000;

/// A task backend on Postgres. Cheap to clone; clones share one set of connections.
///
/// Build one with [`PostgresTaskBackend::new`] (a replica: it submits, polls and cancels, and in `local` mode runs
/// what it submits), or [`PostgresTaskBackend::worker`] (it also claims and runs tasks, in `workers` mode). Both
/// connect lazily and apply the schema's migrations at first use: while Postgres is down, every call answers
/// [`BackendError::Unavailable`], and work resumes when it is back.
#[derive(Clone)]
pub struct PostgresTaskBackend {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for PostgresTaskBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresTaskBackend")
            .field("url", &self.inner.config.redacted_url())
            .field("mode", &self.inner.config.mode)
            .field("schema", &self.inner.config.schema)
            .field("consumer", &self.inner.consumer)
            .finish_non_exhaustive()
    }
}

pub(crate) struct Inner {
    config: PostgresConfig,
    pg_config: tokio_postgres::Config,
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
    /// Durable statements (the server's `synchronous_commit`): submissions, ends and values, cancels, deletes.
    pool: Pool,
    /// The same settings with `synchronous_commit=off`, for what the leases recover after a server crash: starts,
    /// progress, lease renewals, claims, counters. (Any later durable commit flushes them too.)
    fast: Pool,
    sql: Sql,
    /// Whether the migrations have been applied (checked once per process, at first use).
    migrated: AtomicBool,
    migrating: tokio::sync::Mutex<()>,
    /// Finished values only: they never change, so a local copy cannot go stale.
    near: ValueStore,
    hub: Hub,
    /// The followers of tasks' output alone (`output` hints): a waiter for a task's end is not woken per batch.
    output_hub: Hub,
    /// This process's name as a task owner.
    consumer: String,
    /// This process's counter shard (counters are sharded so that concurrent transactions do not queue on a row).
    shard: i32,
    /// Whether this instance claims tasks from the table (`workers` mode).
    consumes: bool,
    run: Mutex<RunState>,
    /// Woken whenever a held task is released.
    released: Notify,
    /// Wakes the claiming loop: a task was queued, a slot came free, a reconnect, or the upkeep period passed.
    work: Arc<Notify>,
    accepting: AtomicBool,
    /// Stops the background loops (the backend is dropped).
    stop: CancellationToken,
    /// Stops claiming tasks (shutdown; leases are still renewed while running tasks drain).
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

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Whole milliseconds (at least 1) as a statement parameter.
pub(crate) fn ms_i64(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX).max(1)
}

/// A finished value as its two columns: the value's exact JSON text, and the rest of the stored value (with the
/// value itself left out), plus its TTL.
pub(crate) fn encode_value(stored: &mut StoredValue) -> (String, String, Duration) {
    let value = serde_json::to_string(&stored.value).expect("a JSON value serializes");
    let taken = std::mem::take(&mut stored.value);
    let meta = serde_json::to_string(&*stored).expect("a StoredValue serializes");
    stored.value = taken;
    (value, meta, stored.ttl)
}

fn decode_value(value: &str, meta: &str) -> Result<StoredValue, serde_json::Error> {
    let mut stored: StoredValue = serde_json::from_str(meta)?;
    stored.value = serde_json::from_str(value)?;
    Ok(stored)
}

/// A record as the `info` column holds it: without its question, which has a column of its own.
pub(crate) fn info_text(info: &TaskInfo) -> String {
    if info.input_request.is_some() {
        let mut info = info.clone();
        info.input_request = None;
        serde_json::to_string(&info).expect("a TaskInfo serializes")
    } else {
        serde_json::to_string(info).expect("a TaskInfo serializes")
    }
}

fn parse_status(s: &str) -> Option<TaskStatus> {
    TaskStatus::from_name(s)
}

/// The question on a record, from its own column: shown only while the task waits on it (the record's JSON never
/// holds it, so that the answer, taken by an UPDATE of the columns alone, leaves no stale question behind).
fn with_question(info: &mut TaskInfo, question: Option<&str>) {
    info.input_request = None;
    if info.status == TaskStatus::InputRequired
        && let Some(question) = question
    {
        match serde_json::from_str(question) {
            Ok(request) => info.input_request = Some(request),
            Err(err) => {
                tracing::warn!(ref_id = %info.ref_id, %err, "refcache: an unreadable question was left out");
            }
        }
    }
}

/// Why a Postgres backend could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PostgresBackendError {
    /// A setting is invalid.
    #[error(transparent)]
    Config(#[from] PostgresConfigError),
    /// TLS could not be set up (`sslmode`, `sslrootcert`).
    #[error("cannot set up TLS for `{url}`: {message}")]
    Tls {
        /// The URL, without its password.
        url: String,
        /// Why.
        message: String,
    },
    /// The backend stopped with an error (a worker could not run).
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// A failure inside an operation, before it is told to the caller as a [`BackendError`].
enum Fail {
    Pg(tokio_postgres::Error),
    Timeout,
    Backend(BackendError),
}

impl From<tokio_postgres::Error> for Fail {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Pg(e)
    }
}

impl From<BackendError> for Fail {
    fn from(e: BackendError) -> Self {
        Self::Backend(e)
    }
}

impl Fail {
    fn code(&self) -> Option<&SqlState> {
        match self {
            Self::Pg(e) => e.code(),
            _ => None,
        }
    }
}

/// What to check, for the errors whose cause is likely a wrong setting rather than a passing outage.
fn hint(err: &tokio_postgres::Error) -> &'static str {
    if let Some(code) = err.code() {
        let class = &code.code()[..2];
        return match class {
            "28" => {
                " (the server refused the login: check the user and password in the backend URL, \
                 postgres://user:password@host/db, and the server's pg_hba.conf)"
            }
            "3D" => " (no such database: create it, or name another in the backend URL)",
            "53" => {
                " (the server is out of connections or resources: lower pool_size, or raise max_connections)"
            }
            _ => "",
        };
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(err);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::ConnectionRefused
        {
            return " (nothing listens there: is PostgreSQL running, and does the backend URL (REFCACHE_BACKEND) \
                    name its host and port?)";
        }
        source = e.source();
    }
    ""
}

impl Inner {
    fn url(&self) -> String {
        self.config.redacted_url()
    }

    /// The caller's view of a failure: the database is unavailable (with a hint), or something else went wrong.
    fn failed(&self, fail: Fail) -> BackendError {
        match fail {
            Fail::Backend(e) => e,
            Fail::Timeout => BackendError::Unavailable(format!(
                "Postgres at {} did not answer within {:?} (is it down, overloaded, or out of reach?)",
                self.url(),
                self.config.command_timeout
            )),
            Fail::Pg(e) => self.pg_failed(&e),
        }
    }

    fn pg_failed(&self, e: &tokio_postgres::Error) -> BackendError {
        let Some(db) = e.as_db_error() else {
            let cause = std::error::Error::source(e)
                .map(|s| format!(": {s}"))
                .unwrap_or_default();
            let io = e.is_closed()
                || e.to_string().starts_with("error connecting")
                || std::iter::successors(std::error::Error::source(e), |s| s.source())
                    .any(|s| s.is::<std::io::Error>());
            let message = format!("Postgres at {}: {e}{cause}{}", self.url(), hint(e));
            return if io {
                BackendError::Unavailable(message)
            } else {
                BackendError::Other(message)
            };
        };
        let code = db.code();
        let class = &code.code()[..2];
        if matches!(class, "08" | "28" | "3D" | "53" | "57" | "58") {
            return BackendError::Unavailable(format!(
                "Postgres at {}: {}{}",
                self.url(),
                db.message(),
                hint(e)
            ));
        }
        if *code == SqlState::UNDEFINED_TABLE || *code == SqlState::INVALID_SCHEMA_NAME {
            self.migrated.store(false, Ordering::Release);
            return BackendError::Other(format!(
                "refcache's tables are missing in schema `{}` of {} ({}): they were dropped while this process \
                 ran; the next call creates them again",
                self.config.schema,
                self.url(),
                db.message()
            ));
        }
        BackendError::Other(format!(
            "Postgres at {} (schema `{}`): {}",
            self.url(),
            self.config.schema,
            db.message()
        ))
    }

    fn corrupt(&self, what: &str, err: impl std::fmt::Display) -> BackendError {
        BackendError::Other(format!(
            "unreadable {what} in Postgres schema `{}`: {err}",
            self.config.schema
        ))
    }

    /// Runs `op` within the command timeout.
    async fn bounded<T>(
        &self,
        op: impl std::future::Future<Output = Result<T, Fail>>,
    ) -> Result<T, Fail> {
        tokio::time::timeout(self.config.command_timeout + Duration::from_secs(1), op)
            .await
            .unwrap_or(Err(Fail::Timeout))
    }

    /// The connections for `sql`: the fast ones (asynchronous commit) for what the leases recover after a server
    /// crash (a start, a lease renewal, a claim, counters, gauges, sweeping), the durable ones for everything else.
    fn pool_for(&self, sql: &str) -> &Pool {
        let all = &self.sql;
        let recoverable = [
            &all.start,
            &all.renew,
            &all.fetch,
            &all.reap,
            &all.count,
            &all.gauge,
            &all.sweep_values,
            &all.sweep_records,
            &all.forget_processes,
            &all.notify,
            // Output: a task's end is a durable commit, which flushes the output written before it.
            &all.output_append,
        ];
        if recoverable.iter().any(|s| std::ptr::eq(s.as_str(), sql)) {
            &self.fast
        } else {
            &self.pool
        }
    }

    async fn try_query(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, Fail> {
        self.try_query_on(self.pool_for(sql), sql, params).await
    }

    async fn try_query_on(
        &self,
        pool: &Pool,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, Fail> {
        self.bounded(async { Ok(pool.get().await?.query(sql, params).await?) })
            .await
    }

    pub(crate) async fn query(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, BackendError> {
        self.try_query(sql, params)
            .await
            .map_err(|f| self.failed(f))
    }

    pub(crate) async fn execute(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, BackendError> {
        let pool = self.pool_for(sql);
        self.bounded(async { Ok(pool.get().await?.execute(sql, params).await?) })
            .await
            .map_err(|f| self.failed(f))
    }

    /// Applies the migrations, once per process (again after the tables went missing).
    async fn ready(&self) -> Result<(), BackendError> {
        if self.migrated.load(Ordering::Acquire) {
            return Ok(());
        }
        let _guard = self.migrating.lock().await;
        if self.migrated.load(Ordering::Acquire) {
            return Ok(());
        }
        self.bounded(async {
            // A connection of its own: the migration is a transaction.
            let mut client = self.pool.connect().await?;
            match schema::migrate(&mut client, &self.config.schema).await {
                Ok(_) => Ok(()),
                Err(SchemaError::Db(e)) => Err(Fail::Pg(e)),
                Err(too_new) => Err(Fail::Backend(BackendError::Other(format!(
                    "Postgres at {}: {too_new}",
                    self.url()
                )))),
            }
        })
        .await
        .map_err(|f| self.failed(f))?;
        self.migrated.store(true, Ordering::Release);
        Ok(())
    }

    /// A dedicated connection that listens on the schema's channel.
    async fn connect_listener(
        &self,
    ) -> Result<
        (
            tokio_postgres::Client,
            tokio::sync::mpsc::UnboundedReceiver<String>,
        ),
        tokio_postgres::Error,
    > {
        let (client, notes) = match &self.tls {
            None => {
                let (client, connection) = self.pg_config.connect(NoTls).await?;
                (client, notify::drive(connection))
            }
            Some(tls) => {
                let (client, connection) = self.pg_config.connect(tls.clone()).await?;
                (client, notify::drive(connection))
            }
        };
        client.batch_execute(&self.sql.listen).await?;
        Ok((client, notes))
    }

    /// Starts the background loops on the caller's runtime: on first use, and again if the runtime they ran on
    /// has shut down. Every operation calls it first; it is a lock and three flag reads.
    fn ensure_started(self: &Arc<Self>) {
        let mut loops = lock(&self.loops);
        let alive = |i: usize| loops.get(i).is_some_and(|h| !h.is_finished());
        let consumer_ok = !self.consumes || self.consuming.is_cancelled() || alive(2);
        if self.stop.is_cancelled() || (alive(0) && alive(1) && consumer_ok) {
            return;
        }
        for handle in loops.drain(..) {
            handle.abort();
        }
        let weak = Arc::downgrade(self);
        loops.push(tokio::spawn(notify::listen(
            weak.clone(),
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

    /// The task's status and record (however old), without its value.
    async fn read(&self, ref_id: &RefId) -> Result<Option<(TaskStatus, TaskInfo)>, BackendError> {
        let rows = self.query(&self.sql.info_only, &[&ref_id.as_str()]).await?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let status = parse_status(row.get(0))
            .ok_or_else(|| self.corrupt("task status", row.get::<_, &str>(0)))?;
        let mut info: TaskInfo =
            serde_json::from_str(row.get(1)).map_err(|e| self.corrupt("task record", e))?;
        info.status = status;
        with_question(&mut info, row.get(4));
        Ok(Some((status, info)))
    }

    /// A change of a task's status and record, compared and set in one statement: it applies only while the status
    /// is one of `from` (and, with `owner`, while this process owns the task). A value is inserted by the same
    /// statement. Answers whether it applied.
    async fn transition(
        &self,
        ref_id: &RefId,
        info: &TaskInfo,
        change: Transition<'_>,
    ) -> Result<bool, BackendError> {
        let terminal = info.status.is_terminal();
        let record_ttl = match change.value {
            // One lifetime: a complete record stays at least as long as its value.
            Some((_, _, value_ttl)) => self.config.task_ttl.max(*value_ttl),
            None => self.config.task_ttl,
        };
        let record_ttl = ms_i64(record_ttl);
        let info_json = info_text(info);
        let from: Vec<&str> = change.from.iter().map(|s| s.as_str()).collect();
        let owner: Option<&str> = change.owner.then_some(self.consumer.as_str());
        let kind = if terminal { "end" } else { "change" };
        let status = info.status.as_str();
        let (value, meta, value_ttl) = match change.value {
            Some((value, meta, ttl)) => (Some(value.as_str()), Some(meta.as_str()), ms_i64(*ttl)),
            None => (None, None, 0),
        };
        let params: [&(dyn ToSql + Sync); 16] = [
            &ref_id.as_str(),
            &status,
            &info_json,
            &terminal,
            &record_ttl,
            &from,
            &owner,
            &change.dead,
            &change.counter,
            &self.shard,
            &self.sql.channel,
            &kind,
            &value,
            &meta,
            &value_ttl,
            &!terminal,
        ];
        // A progress note is recovered by the lease after a server crash; an end (and its value) must be durable.
        let pool = if terminal { &self.pool } else { &self.fast };
        let applied = !self
            .try_query_on(pool, &self.sql.transition, &params)
            .await
            .map_err(|f| self.failed(f))?
            .is_empty();
        if applied {
            // The notification reaches this process too; waking local followers now saves its round trip.
            self.hub.poke(ref_id);
            if terminal {
                self.notify_after(ref_id, "end").await;
            }
        }
        Ok(applied)
    }

    /// pending → processing for a held task, counting a delivery. Answers the deliveries so far, or `None` when
    /// the row refuses (not this process's any more, finished, gone, or out of deliveries).
    async fn claim(&self, ref_id: &RefId, info: &TaskInfo) -> Result<Option<i32>, BackendError> {
        let info_json = serde_json::to_string(info).expect("a TaskInfo serializes");
        let max = i32::try_from(self.config.max_deliveries).unwrap_or(i32::MAX);
        let rows = self
            .query(
                &self.sql.start,
                &[
                    &ref_id.as_str(),
                    &self.consumer,
                    &info_json,
                    &ms_i64(self.config.lease),
                    &max,
                    &self.shard,
                    &self.sql.channel,
                ],
            )
            .await?;
        if rows.is_empty() {
            return Ok(None);
        }
        self.hub.poke(ref_id);
        Ok(Some(rows[0].get(0)))
    }

    /// When a held task could not start because it was delivered `max_deliveries` times already: how many.
    async fn dead_on_arrival(&self, ref_id: &RefId) -> Result<Option<i32>, BackendError> {
        let rows = self
            .query(&self.sql.start_refused, &[&ref_id.as_str()])
            .await?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let status = parse_status(row.get(0));
        let owner: Option<&str> = row.get(1);
        let deliveries: i32 = row.get(2);
        let max = i64::from(self.config.max_deliveries);
        Ok((status.is_some_and(|s| !s.is_terminal())
            && owner == Some(self.consumer.as_str())
            && i64::from(deliveries) >= max)
            .then_some(deliveries))
    }

    /// Adds one to a cluster-wide counter.
    async fn count(&self, counter: &str) -> Result<(), BackendError> {
        self.execute(&self.sql.count, &[&counter, &self.shard])
            .await
            .map(drop)
    }

    /// Sends a hint after the change it announces has committed, on a connection with asynchronous commit.
    ///
    /// A durable commit that carries a `NOTIFY` holds PostgreSQL's notification lock (one per database) until its
    /// WAL is flushed, so notifying transactions are serialized, flush by flush: with hints inside the durable
    /// statements of the hot path (a submission, a task's end), throughput was one task per disk flush. Sent after
    /// the commit, a hint can be lost if this process dies in between; waiters re-read their record once per lease
    /// in any case (see `wait`), and workers look for work once per upkeep period.
    async fn notify_after(&self, ref_id: &RefId, kind: &str) {
        let payload = format!("{ref_id} {kind}");
        if let Err(err) = self
            .execute(&self.sql.notify, &[&self.sql.channel, &payload])
            .await
        {
            tracing::debug!(%ref_id, %err, "refcache: a hint could not be sent");
        }
    }

    /// The task's status alone (`None`: unknown or expired).
    async fn status(&self, ref_id: &RefId) -> Result<Option<TaskStatus>, BackendError> {
        let rows = self.query(&self.sql.status, &[&ref_id.as_str()]).await?;
        Ok(rows.first().and_then(|r| parse_status(r.get(0))))
    }

    /// A window of the task's output log from `offset` (see [`OutputChunk`]); `None`: no such record.
    async fn read_output(
        &self,
        ref_id: &RefId,
        offset: u64,
        max_bytes: usize,
    ) -> Result<Option<OutputChunk>, BackendError> {
        let from = i64::try_from(offset).unwrap_or(i64::MAX);
        // At least one character, as the in-process log answers.
        let max = max_bytes.max(4);
        let want = i64::try_from(max).unwrap_or(i64::MAX);
        let rows = self
            .query(&self.sql.output_read, &[&ref_id.as_str(), &from, &want])
            .await?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let status = parse_status(row.get(0))
            .ok_or_else(|| self.corrupt("task status", row.get::<_, &str>(0)))?;
        let (end, at): (i64, i64) = (row.get(2), row.get(3));
        let (end, at) = (
            u64::try_from(end).unwrap_or(0),
            u64::try_from(at).unwrap_or(0),
        );
        let bytes: Option<&[u8]> = row.get(4);
        let bytes = bytes.unwrap_or_default();
        let bytes = &bytes[..bytes.len().min(max)];
        Ok(Some(OutputChunk::from_bytes(
            at,
            at.saturating_sub(offset),
            bytes,
            end,
            status.is_terminal(),
        )))
    }

    /// Ships a batch of a running task's output (see `output_append`). Answers whether it landed.
    pub(crate) async fn append_output(
        &self,
        ref_id: &RefId,
        skipped: u64,
        bytes: &[u8],
        cap: usize,
    ) -> Result<bool, BackendError> {
        let skipped = i64::try_from(skipped).unwrap_or(i64::MAX);
        let cap = i64::try_from(cap).unwrap_or(i64::MAX);
        let rows = self
            .query(
                &self.sql.output_append,
                &[&ref_id.as_str(), &skipped, &bytes, &cap, &self.sql.channel],
            )
            .await?;
        if rows.is_empty() {
            return Ok(false);
        }
        self.output_hub.poke(ref_id);
        Ok(true)
    }

    /// A running task held here asks: its record goes `input_required` with the question. Answers whether it did
    /// (not: the task is no longer this process's, or no longer running).
    pub(crate) async fn ask(
        &self,
        ref_id: &RefId,
        request: &InputRequest,
        info: &TaskInfo,
    ) -> Result<bool, BackendError> {
        let question = serde_json::to_string(request).expect("an InputRequest serializes");
        let rows = self
            .query(
                &self.sql.ask,
                &[
                    &ref_id.as_str(),
                    &self.consumer,
                    &request.key,
                    &question,
                    &info_text(info),
                    &self.sql.channel,
                ],
            )
            .await?;
        if rows.is_empty() {
            return Ok(false);
        }
        self.hub.poke(ref_id);
        Ok(true)
    }

    /// Where the task's question `key` stands.
    pub(crate) async fn input_answer(
        &self,
        ref_id: &RefId,
        key: &str,
    ) -> Result<Answer, BackendError> {
        let rows = self
            .query(&self.sql.input_answer, &[&ref_id.as_str()])
            .await?;
        let Some(row) = rows.first() else {
            return Ok(Answer::Gone(None));
        };
        let status = parse_status(row.get(0));
        let asked: Option<&str> = row.get(1);
        let response: Option<&str> = row.get(2);
        Ok(match (status, asked == Some(key), response) {
            (Some(TaskStatus::InputRequired), true, _) => Answer::Waiting,
            (Some(TaskStatus::Processing), true, Some(text)) => match serde_json::from_str(text) {
                Ok(value) => Answer::Given(value),
                Err(e) => return Err(self.corrupt("answer", e)),
            },
            (status, _, _) => Answer::Gone(status),
        })
    }

    /// The wait for question `key` ended without an answer: the record leaves `input_required` if it is still
    /// there.
    pub(crate) async fn input_close(&self, ref_id: &RefId, key: &str) -> Result<(), BackendError> {
        let rows = self
            .query(
                &self.sql.input_close,
                &[&ref_id.as_str(), &key, &self.sql.channel],
            )
            .await?;
        if !rows.is_empty() {
            self.hub.poke(ref_id);
        }
        Ok(())
    }

    /// Hands `answer` to the task waiting on question `key`: one UPDATE guarded by the status and the key, so that
    /// of several replicas answering at once, one takes it.
    async fn respond(
        &self,
        ref_id: &RefId,
        key: &str,
        answer: &serde_json::Value,
    ) -> Result<RespondOutcome, BackendError> {
        let text = serde_json::to_string(answer).expect("a JSON value serializes");
        let rows = self
            .query(
                &self.sql.respond,
                &[&ref_id.as_str(), &key, &text, &self.sql.channel],
            )
            .await?;
        if !rows.is_empty() {
            self.hub.poke(ref_id);
            return Ok(RespondOutcome::Accepted);
        }
        Ok(match self.status(ref_id).await? {
            Some(status) => RespondOutcome::NotWaiting(status),
            None => RespondOutcome::NotFound,
        })
    }

    /// Which of `refs` are still in flight.
    async fn live_statuses(&self, refs: &[RefId]) -> Result<HashSet<RefId>, BackendError> {
        let ids: Vec<&str> = refs.iter().map(RefId::as_str).collect();
        let rows = self.query(&self.sql.statuses, &[&ids]).await?;
        Ok(rows
            .iter()
            .filter(|r| parse_status(r.get(1)).is_some_and(|s| !s.is_terminal()))
            .filter_map(|r| RefId::parse(r.get::<_, &str>(0)).ok())
            .collect())
    }

    /// After an `end` or `drop` hint: reads the row, and stops the task held here (and drops its near-cache
    /// value) only if the row says it is finished or gone.
    pub(crate) async fn check_row(self: &Arc<Self>, ref_id: &RefId, key: Option<&CacheKey>) {
        let ids = vec![ref_id.as_str()];
        let Ok(rows) = self.query(&self.sql.statuses, &[&ids]).await else {
            return;
        };
        match rows.first().and_then(|r| parse_status(r.get(1))) {
            None => {
                if let Some(key) = key {
                    self.near.invalidate_if_ref(key, ref_id).await;
                }
                self.stop_held(ref_id);
            }
            Some(status) if status.is_terminal() => self.stop_held(ref_id),
            Some(_) => {}
        }
    }

    /// Fails a task whose spec cannot be read, so that it costs only itself.
    async fn fail_unreadable(&self, ref_id: &RefId) {
        let (status, mut info) = match self.read(ref_id).await {
            Ok(Some(found)) => found,
            Ok(None) => return,
            Err(_) => (
                TaskStatus::Pending,
                TaskInfo::new(ref_id.clone(), "unknown", "unknown"),
            ),
        };
        info.status = TaskStatus::Failed;
        info.finished_at = Some(Timestamp::now());
        info.error = Some(
            TaskError::new("the task's spec in Postgres is unreadable (written by something other than refcache?)")
                .with_code("CORRUPT_TASK")
                .permanent(),
        );
        let change = Transition {
            from: &[status, TaskStatus::Pending, TaskStatus::Processing],
            owner: false,
            counter: "",
            dead: false,
            value: None,
        };
        let _ = self.transition(ref_id, &info, change).await;
    }

    /// Cancels a pending or processing task (compare-and-set against concurrent changes).
    async fn cancel_with(
        self: &Arc<Self>,
        ref_id: &RefId,
        note: Option<&str>,
    ) -> Result<CancelOutcome, BackendError> {
        for _ in 0..16 {
            let Some((status, mut info)) = self.read(ref_id).await? else {
                return Ok(CancelOutcome::NotFound);
            };
            match status {
                TaskStatus::Cancelled => return Ok(CancelOutcome::Cancelled),
                TaskStatus::Complete | TaskStatus::Failed => {
                    return Ok(CancelOutcome::AlreadyFinished(status));
                }
                _ => {}
            }
            info.status = TaskStatus::Cancelled;
            info.finished_at = Some(Timestamp::now());
            info.queue_position = None;
            if let Some(note) = note {
                info.status_message = Some(note.to_owned());
            }
            let change = Transition {
                from: &[status],
                owner: false,
                counter: "cancellations",
                dead: false,
                value: None,
            };
            if self.transition(ref_id, &info, change).await? {
                tracing::debug!(%ref_id, "task cancelled");
                self.stop_held(ref_id);
                return Ok(CancelOutcome::Cancelled);
            }
        }
        Err(BackendError::Other(format!(
            "could not cancel {ref_id}: its record kept changing"
        )))
    }

    async fn get(&self, ref_id: &RefId) -> Result<Option<TaskSnapshot>, BackendError> {
        self.get_with(ref_id, true).await
    }

    /// The record, and with `value` the value of a complete task; without it, a complete record is checked for a
    /// live value (one lifetime) without reading the value.
    async fn get_with(
        &self,
        ref_id: &RefId,
        value: bool,
    ) -> Result<Option<TaskSnapshot>, BackendError> {
        let rows = self.query(&self.sql.record, &[&ref_id.as_str()]).await?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let status = parse_status(row.get(0))
            .ok_or_else(|| self.corrupt("task status", row.get::<_, &str>(0)))?;
        let mut info: TaskInfo =
            serde_json::from_str(row.get(1)).map_err(|e| self.corrupt("task record", e))?;
        info.status = status;
        with_question(&mut info, row.get(4));
        let position: Option<i64> = row.get(3);
        info.queue_position = position.and_then(|p| usize::try_from(p).ok());
        if status != TaskStatus::Complete {
            return Ok(Some(TaskSnapshot::new(info, None)));
        }
        if !value {
            let live = self
                .query(&self.sql.value_exists, &[&ref_id.as_str()])
                .await?;
            return Ok((!live.is_empty()).then(|| TaskSnapshot::new(info, None)));
        }
        let key = CacheKey::from_hex(row.get(2));
        // The value by a query of its own, after the record: a complete record whose value has gone is gone.
        match self.value_of(ref_id, key.as_ref()).await? {
            Some(value) => Ok(Some(TaskSnapshot::new(info, Some(value)))),
            None => Ok(None),
        }
    }

    /// A complete task's value: the near cache's copy, or a read of its row.
    async fn value_of(
        &self,
        ref_id: &RefId,
        key: Option<&CacheKey>,
    ) -> Result<Option<Arc<StoredValue>>, BackendError> {
        if let Some(key) = key
            && let Some(near) = self.near.get(key).await
            && near.ref_id == *ref_id
            && near.is_live()
        {
            return Ok(Some(near));
        }
        let rows = self
            .query(&self.sql.value_by_ref, &[&ref_id.as_str()])
            .await?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let stored = decode_value(row.get(0), row.get(1)).map_err(|e| self.corrupt("value", e))?;
        Ok(Some(self.keep_near(stored).await))
    }

    async fn keep_near(&self, stored: StoredValue) -> Arc<StoredValue> {
        let stored = Arc::new(stored);
        if stored.is_live() && self.near.fits(&stored) {
            self.near.insert(stored.clone()).await;
        }
        stored
    }

    async fn delete(self: &Arc<Self>, ref_id: &RefId) -> Result<bool, BackendError> {
        let rows = self
            .query(&self.sql.delete, &[&ref_id.as_str(), &self.sql.channel])
            .await?;
        let Some(row) = rows.first() else {
            return Ok(false);
        };
        if let Some(key) = CacheKey::from_hex(row.get(0)) {
            self.near.invalidate_if_ref(&key, ref_id).await;
        }
        self.stop_held(ref_id);
        self.hub.poke(ref_id);
        Ok(true)
    }

    /// Rows of deleted records (`ref_id`, `cache_key`): their near-cache values go, their tasks held here stop.
    async fn dropped(self: &Arc<Self>, rows: &[Row]) {
        for row in rows {
            let Ok(ref_id) = RefId::parse(row.get::<_, &str>(0)) else {
                continue;
            };
            if let Some(key) = CacheKey::from_hex(row.get(1)) {
                self.near.invalidate_if_ref(&key, &ref_id).await;
            }
            self.stop_held(&ref_id);
            self.hub.poke(&ref_id);
        }
    }

    async fn retry(self: &Arc<Self>, ref_id: &RefId) -> Result<RetryOutcome, BackendError> {
        let rows = self.query(&self.sql.spec_info, &[&ref_id.as_str()]).await?;
        let Some(row) = rows.first() else {
            return Ok(RetryOutcome::NotFound);
        };
        let status = parse_status(row.get(0))
            .ok_or_else(|| self.corrupt("task status", row.get::<_, &str>(0)))?;
        if status != TaskStatus::Failed {
            return Ok(RetryOutcome::NotFailed(status));
        }
        let spec: TaskSpec =
            serde_json::from_str(row.get(1)).map_err(|e| self.corrupt("task spec", e))?;
        let mut info: TaskInfo =
            serde_json::from_str(row.get(2)).map_err(|e| self.corrupt("task record", e))?;
        let registered = refcache_core::registry::find(&spec.task_name).is_some();
        // To the workers when one can run it by name; else here, as it ran the first time.
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
        let owner: Option<&str> = (!workers).then_some(self.consumer.as_str());
        let answer = self
            .try_query(
                &self.sql.retry,
                &[
                    &ref_id.as_str(),
                    &info_json,
                    &workers,
                    &owner,
                    &ms_i64(self.config.lease),
                    &self.shard,
                    &self.sql.channel,
                ],
            )
            .await;
        match answer {
            Ok(rows) if !rows.is_empty() => {
                tracing::debug!(%ref_id, task = %spec.task_name, "failed task retried");
                self.hub.poke(ref_id);
                if !workers {
                    self.hold(Arc::new(spec), job, Some(info));
                }
                Ok(RetryOutcome::Restarted)
            }
            // Changed meanwhile: say what it is now.
            Ok(_) => Ok(match self.read(ref_id).await? {
                Some((status, _)) => RetryOutcome::NotFailed(status),
                None => RetryOutcome::NotFound,
            }),
            // The same call is in flight under another ref id (the in-flight index refused a second one).
            Err(fail) if fail.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                let rows = self
                    .query(&self.sql.in_flight, &[&spec.key.to_hex()])
                    .await?;
                match rows.first() {
                    Some(row) => RefId::parse(row.get::<_, &str>(0))
                        .map(RetryOutcome::AlreadyRunning)
                        .map_err(|e| self.corrupt("in-flight task", e)),
                    None => Err(BackendError::Other(format!(
                        "could not retry {ref_id}: the same call was in flight and has just ended; retry again"
                    ))),
                }
            }
            Err(fail) => Err(self.failed(fail)),
        }
    }

    async fn stats(&self) -> Result<BackendStats, BackendError> {
        let mut stats = BackendStats::default();
        for row in self.query(&self.sql.by_status, &[]).await? {
            if let Some(status) = parse_status(row.get(0)) {
                let (n, bytes): (i64, i64) = (row.get(1), row.get(2));
                stats
                    .by_status
                    .insert(status, u64::try_from(n).unwrap_or(0));
                stats.record_bytes += u64::try_from(bytes).unwrap_or(0);
            }
        }
        stats.value_bytes = self
            .query(&self.sql.value_bytes, &[])
            .await?
            .first()
            .map_or(0, |r| u64::try_from(r.get::<_, i64>(0)).unwrap_or(0));
        let counters: HashMap<String, i64> = self
            .query(&self.sql.counters, &[])
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let (running, capacity) = {
            let st = lock(&self.run);
            (st.running() as u64, st.capacity() as u64)
        };
        stats.running = running;
        stats.capacity = capacity;
        for row in self
            .query(&self.sql.gauges, &[&ms_i64(self.config.lease)])
            .await?
        {
            let consumer: &str = row.get(0);
            if consumer == self.consumer {
                continue;
            }
            let (r, c): (i64, i64) = (row.get(1), row.get(2));
            stats.running += u64::try_from(r).unwrap_or(0);
            stats.capacity += u64::try_from(c).unwrap_or(0);
        }
        stats.queued = stats
            .by_status
            .get(&TaskStatus::Pending)
            .copied()
            .unwrap_or(0);
        let c = |name: &str| {
            counters
                .get(name)
                .copied()
                .and_then(|n| u64::try_from(n).ok())
                .unwrap_or(0)
        };
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
        self.admit_now();
        tracing::debug!(consumer = %self.consumer, "postgres backend shutting down");
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

    async fn submit(self: &Arc<Self>, submission: Submission) -> Result<Submitted, BackendError> {
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
        // In `workers` mode a task goes to the workers, unless no worker could run it: a method or a function with
        // skipped parameters is not registered by name, so it runs here, as in `local` mode.
        let workers = self.config.mode == Mode::Workers
            && (job.is_none() || refcache_core::registry::find(&spec.task_name).is_some());
        let owner: Option<&str> = (!workers).then_some(self.consumer.as_str());
        let info_json = serde_json::to_string(&info).expect("a TaskInfo serializes");
        let spec_json = serde_json::to_string(&spec).expect("a TaskSpec serializes");
        let key = spec.key.to_hex();
        let created = i64::try_from(created).unwrap_or(i64::MAX);
        let max_queued = i64::try_from(self.config.max_queued).unwrap_or(i64::MAX);
        let lease = ms_i64(self.config.lease);
        for _ in 0..8 {
            // Single-flight: the in-flight index admits one row per key; a refused insert joins the row there.
            let inserted = self
                .query(
                    &self.sql.insert,
                    &[
                        &spec.ref_id.as_str(),
                        &key,
                        &info_json,
                        &spec_json,
                        &&*spec.task_name,
                        &&*spec.namespace,
                        &spec.options.session_id,
                        &spec.options.priority,
                        &created,
                        &workers,
                        &owner,
                        &lease,
                    ],
                )
                .await?;
            let Some(row) = inserted.first() else {
                let current = self.query(&self.sql.join, &[&key, &self.shard]).await?;
                match current.first() {
                    Some(row) => {
                        return RefId::parse(row.get::<_, &str>(0))
                            .map(Submitted::Joined)
                            .map_err(|e| self.corrupt("in-flight task", e));
                    }
                    // It ended between the insert and this read: start over.
                    None => continue,
                }
            };
            let seq: i64 = row.get(1);
            // A value that landed while the insert waited on the finishing task's row, and the queue's length
            // (bounded above by the sequence numbers; counted exactly only when that bound is over the limit).
            let check = self
                .query(&self.sql.after_insert, &[&key, &spec.ref_id.as_str()])
                .await?;
            let landed = check.first().and_then(|r| r.get::<_, Option<String>>(0));
            let oldest: Option<i64> = check.first().and_then(|r| r.get(1));
            let full = match oldest {
                Some(oldest) if seq - oldest + 1 > max_queued => {
                    let waiting: i64 = self
                        .query(&self.sql.count_pending, &[&max_queued])
                        .await?
                        .first()
                        .map_or(0, |r| r.get(0));
                    waiting > max_queued
                }
                _ => false,
            };
            if landed.is_some() || full {
                let withdrawn = !self
                    .query(
                        &self.sql.withdraw,
                        &[&spec.ref_id.as_str(), &self.sql.channel],
                    )
                    .await?
                    .is_empty();
                if withdrawn && full {
                    return Err(BackendError::QueueFull {
                        max_queued: self.config.max_queued,
                    });
                }
                if withdrawn {
                    if let Some(value) = self.lookup(&spec.key).await? {
                        return Ok(Submitted::Hit(value));
                    }
                    continue;
                }
                // A worker started it already: it runs, once, as a fresh execution of the call.
            }
            let ref_id = spec.ref_id.clone();
            if workers {
                self.notify_after(&ref_id, "queued").await;
            } else {
                self.hold(Arc::new(spec), job, Some(info));
            }
            return Ok(Submitted::Started(ref_id));
        }
        Err(BackendError::Other(format!(
            "could not submit {}: the call's state kept changing",
            spec.ref_id
        )))
    }

    async fn lookup(&self, key: &CacheKey) -> Result<Option<Arc<StoredValue>>, BackendError> {
        let rows = self.query(&self.sql.value_by_key, &[&key.to_hex()]).await?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let stored = decode_value(row.get(1), row.get(2)).map_err(|e| self.corrupt("value", e))?;
        Ok(Some(self.keep_near(stored).await).filter(|v| v.is_live()))
    }

    async fn list(&self, filter: TaskFilter) -> Result<TaskPage, BackendError> {
        // Records created after the cursor cannot be on the page: the scan starts at the cursor.
        let before_ms: Option<i64> = match filter.cursor.as_deref() {
            Some(cursor) => {
                refcache_core::ListCursor::parse(cursor)?;
                cursor
                    .split_once('-')
                    .and_then(|(nanos, _)| nanos.parse::<u64>().ok())
                    .map(|nanos| i64::try_from(nanos.div_ceil(1_000_000)).unwrap_or(i64::MAX))
            }
            None => None,
        };
        let status = filter.status.map(|s| s.as_str());
        let rows = self
            .query(
                &self.sql.list,
                &[
                    &status,
                    &filter.session_id,
                    &filter.sessionless,
                    &filter.task_name,
                    &filter.namespace,
                    &before_ms,
                    &LIST_SCAN,
                ],
            )
            .await?;
        let mut infos = Vec::with_capacity(rows.len());
        for row in &rows {
            // Bad data costs only itself: an unreadable record is left out of the list.
            let Ok(mut info) = serde_json::from_str::<TaskInfo>(row.get(1)) else {
                tracing::warn!(
                    ref_id = row.get::<_, &str>(0),
                    "refcache: an unreadable task record was left out of a list"
                );
                continue;
            };
            if let Some(status) = parse_status(row.get(4)) {
                info.status = status;
            }
            with_question(&mut info, row.get(3));
            let position: Option<i64> = row.get(2);
            info.queue_position = position.and_then(|p| usize::try_from(p).ok());
            infos.push(info);
        }
        TaskPage::paginate(
            infos.into_iter().filter(|i| filter.matches(i)).collect(),
            &filter,
        )
    }
}

/// Where a question stands, for the task that asked it.
pub(crate) enum Answer {
    /// Still asked.
    Waiting,
    /// Answered with this.
    Given(serde_json::Value),
    /// Not asked any more (closed, another question, the task finished or gone): its status, if it is there.
    Gone(Option<TaskStatus>),
}

/// What [`Inner::transition`] changes and when.
pub(crate) struct Transition<'a> {
    /// Applies only from one of these statuses.
    pub(crate) from: &'a [TaskStatus],
    /// Applies only while this process owns the task.
    pub(crate) owner: bool,
    /// A counter to add one to, or `""`.
    pub(crate) counter: &'static str,
    /// Files the task in the dead-letter view.
    pub(crate) dead: bool,
    /// The value (JSON text, the rest, TTL), inserted in the same transaction.
    pub(crate) value: Option<&'a (String, String, Duration)>,
}

impl PostgresTaskBackend {
    /// A replica: submits, polls, cancels, lists; in `local` mode it also runs what it submits. Connects lazily.
    pub fn new(config: PostgresConfig) -> Result<Self, PostgresBackendError> {
        Self::build(config, false)
    }

    /// A worker (`workers` mode, whatever `config.mode` says): a replica that also claims tasks and runs them by
    /// name. [`worker::run`] runs one until a signal.
    pub fn worker(config: PostgresConfig) -> Result<Self, PostgresBackendError> {
        Self::build(config.mode(Mode::Workers), true)
    }

    fn build(config: PostgresConfig, consumes: bool) -> Result<Self, PostgresBackendError> {
        config.validate()?;
        let mut pg_config = config.driver_config()?;
        // The server ends a statement that runs longer than the command timeout (the client gives up then too).
        let mut options = pg_config.get_options().unwrap_or_default().to_owned();
        options.push_str(&format!(
            " -c statement_timeout={}",
            ms_i64(config.command_timeout)
        ));
        pg_config.options(options.trim());
        let tls = tls::connector(&config).map_err(|message| PostgresBackendError::Tls {
            url: config.redacted_url(),
            message,
        })?;
        let pool = Pool::new(pg_config.clone(), tls.clone(), config.pool_size);
        let mut fast_config = pg_config.clone();
        fast_config.options(format!("{} -c synchronous_commit=off", options.trim()));
        let fast = Pool::new(fast_config, tls.clone(), config.pool_size.div_ceil(2));
        let consumer = format!(
            "{}-{}",
            std::process::id(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let inner = Inner {
            sql: Sql::new(&config.schema),
            near: ValueStore::new(config.near_cache_bytes.max(1)),
            run: Mutex::new(RunState::new(config.max_workers)),
            reruns: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(config.task_ttl)
                .build(),
            pg_config,
            tls,
            pool,
            fast,
            migrated: AtomicBool::new(false),
            migrating: tokio::sync::Mutex::new(()),
            hub: Hub::default(),
            output_hub: Hub::default(),
            shard: i32::from(random_byte() % 16),
            consumer,
            consumes,
            released: Notify::new(),
            work: Arc::new(Notify::new()),
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
    pub fn config(&self) -> &PostgresConfig {
        &self.inner.config
    }

    /// This process's name as a task owner (the `owner` column of the tasks it holds).
    pub fn consumer(&self) -> &str {
        &self.inner.consumer
    }

    /// Round trip to Postgres (`SELECT 1`), as a readiness check.
    pub async fn ping(&self) -> Result<(), BackendError> {
        self.inner.ensure_started();
        self.inner.query("SELECT 1", &[]).await.map(drop)
    }

    /// Applies the schema's migrations now (they are otherwise applied at first use). Fails with a clear error,
    /// changing nothing, when the schema is newer than this binary.
    pub async fn migrate(&self) -> Result<(), BackendError> {
        self.inner.ready().await
    }

    /// The dead-letter view: ref ids of tasks that failed `worker lost`, newest first. (The view
    /// `<schema>.dead_letters` shows the same with the task name, deliveries and time, for SQL users.)
    pub async fn dead_letters(&self, limit: usize) -> Result<Vec<RefId>, BackendError> {
        self.inner.ensure_started();
        self.inner.ready().await?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .inner
            .query(&self.inner.sql.dead_letters, &[&limit])
            .await?;
        Ok(rows
            .iter()
            .filter_map(|r| RefId::parse(r.get::<_, &str>(0)).ok())
            .collect())
    }
}

/// A random byte from the ref id generator's source (a fresh uuid), without another dependency.
fn random_byte() -> u8 {
    uuid::Uuid::new_v4().as_bytes()[0]
}

impl TaskBackend for PostgresTaskBackend {
    fn name(&self) -> &str {
        "postgres"
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), BackendError>> {
        Box::pin(PostgresTaskBackend::ping(self))
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
            self.inner.ready().await?;
            self.inner.lookup(key).await
        })
    }

    fn submit(&self, submission: Submission) -> BoxFuture<'_, Result<Submitted, BackendError>> {
        Box::pin(async move {
            self.inner.ensure_started();
            self.inner.check_accepting()?;
            self.inner.ready().await?;
            self.inner.submit(submission).await
        })
    }

    fn get<'a>(
        &'a self,
        ref_id: &'a RefId,
    ) -> BoxFuture<'a, Result<Option<TaskSnapshot>, BackendError>> {
        Box::pin(async move {
            self.inner.ensure_started();
            self.inner.ready().await?;
            self.inner.get(ref_id).await
        })
    }

    fn get_record<'a>(
        &'a self,
        ref_id: &'a RefId,
    ) -> BoxFuture<'a, Result<Option<TaskSnapshot>, BackendError>> {
        Box::pin(async move {
            self.inner.ensure_started();
            self.inner.ready().await?;
            // The record alone (`false`: the value is not read): access is decided before any value is.
            Ok(self
                .inner
                .get_with(ref_id, false)
                .await?
                .map(|s| TaskSnapshot::new(s.info, None)))
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
            inner.ready().await?;
            // Follow first, then read: a change in between wakes the follower. Each wake reads only the status
            // (not the record with its queue position, which costs a count of the tasks ahead); the whole
            // snapshot is read once, at the end.
            let mut follower = inner.hub.follow(ref_id);
            loop {
                match inner.status(ref_id).await? {
                    Some(status) if !status.is_terminal() => {}
                    _ => return inner.get(ref_id).await,
                }
                // A hint can be lost (a process killed between its commit and its hint): the record is read again
                // once per lease even without one.
                let recheck = tokio::time::Instant::now() + inner.config.lease;
                let until = deadline.map_or(recheck, |d| d.min(recheck));
                match tokio::time::timeout_at(until, follower.rx().changed()).await {
                    Ok(Ok(())) => {
                        follower.rx().borrow_and_update();
                    }
                    Err(_) if deadline.is_none_or(|d| tokio::time::Instant::now() < d) => {}
                    // The deadline passed (or the hub went away): answer with what is there now.
                    _ => return inner.get(ref_id).await,
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
            inner.ready().await?;
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
                        // A hint can be lost: read again once per lease even without one.
                        () = tokio::time::sleep(inner.config.lease) => {}
                    }
                    follower.rx().borrow_and_update();
                    let info = match inner.get(&ref_id).await {
                        Ok(Some(s)) => s.info,
                        Ok(None) => return,
                        Err(_) => continue,
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

    fn read_output<'a>(
        &'a self,
        ref_id: &'a RefId,
        offset: u64,
        max_bytes: usize,
    ) -> BoxFuture<'a, Result<Option<OutputChunk>, BackendError>> {
        Box::pin(async move {
            self.inner.ensure_started();
            self.inner.ready().await?;
            self.inner.read_output(ref_id, offset, max_bytes).await
        })
    }

    fn follow_output<'a>(
        &'a self,
        ref_id: &'a RefId,
    ) -> BoxFuture<'a, Result<Option<BoxStream<'static, ()>>, BackendError>> {
        Box::pin(async move {
            let inner = &self.inner;
            inner.ensure_started();
            inner.ready().await?;
            // Follow first, then check: a write in between wakes the follower.
            let output = inner.output_hub.follow(ref_id);
            let status = inner.hub.follow(ref_id);
            if inner.status(ref_id).await?.is_none() {
                return Ok(None);
            }
            Ok(Some(
                futures::stream::select(
                    notify::changes(output, inner.config.lease),
                    notify::changes(status, inner.config.lease),
                )
                .boxed(),
            ))
        })
    }

    fn respond<'a>(
        &'a self,
        ref_id: &'a RefId,
        key: &'a str,
        answer: serde_json::Value,
    ) -> BoxFuture<'a, Result<RespondOutcome, BackendError>> {
        Box::pin(async move {
            self.inner.ensure_started();
            self.inner.ready().await?;
            self.inner.respond(ref_id, key, &answer).await
        })
    }

    fn cancel<'a>(
        &'a self,
        ref_id: &'a RefId,
    ) -> BoxFuture<'a, Result<CancelOutcome, BackendError>> {
        Box::pin(async move {
            self.inner.ensure_started();
            self.inner.ready().await?;
            self.inner.cancel_with(ref_id, None).await
        })
    }

    fn delete<'a>(&'a self, ref_id: &'a RefId) -> BoxFuture<'a, Result<bool, BackendError>> {
        Box::pin(async move {
            self.inner.ensure_started();
            self.inner.ready().await?;
            self.inner.delete(ref_id).await
        })
    }

    fn list(&self, filter: TaskFilter) -> BoxFuture<'_, Result<TaskPage, BackendError>> {
        Box::pin(async move {
            self.inner.ensure_started();
            self.inner.ready().await?;
            self.inner.list(filter).await
        })
    }

    fn retry<'a>(&'a self, ref_id: &'a RefId) -> BoxFuture<'a, Result<RetryOutcome, BackendError>> {
        Box::pin(async move {
            self.inner.ensure_started();
            self.inner.check_accepting()?;
            self.inner.ready().await?;
            self.inner.retry(ref_id).await
        })
    }

    fn end_session<'a>(
        &'a self,
        session_id: &'a str,
    ) -> BoxFuture<'a, Result<usize, BackendError>> {
        Box::pin(async move {
            let inner = &self.inner;
            inner.ensure_started();
            inner.ready().await?;
            let rows = inner
                .query(&inner.sql.end_session, &[&session_id, &inner.sql.channel])
                .await?;
            inner.dropped(&rows).await;
            tracing::debug!(session = session_id, tasks = rows.len(), "session ended");
            Ok(rows.len())
        })
    }

    fn cleanup(&self, max_age: Duration) -> BoxFuture<'_, Result<usize, BackendError>> {
        Box::pin(async move {
            let inner = &self.inner;
            inner.ensure_started();
            inner.ready().await?;
            let age = i64::try_from(max_age.as_millis()).unwrap_or(i64::MAX);
            let rows = inner
                .query(&inner.sql.cleanup, &[&age, &inner.sql.channel])
                .await?;
            inner.dropped(&rows).await;
            Ok(rows.len())
        })
    }

    fn stats(&self) -> BoxFuture<'_, Result<BackendStats, BackendError>> {
        Box::pin(async move {
            self.inner.ensure_started();
            self.inner.ready().await?;
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

/// `REFCACHE_BACKEND=postgres://...` (and `postgresql://`) builds a [`PostgresTaskBackend`]: switching from
/// `memory` is config alone.
fn from_config(config: &RefCacheConfig) -> Result<Arc<dyn TaskBackend>, ConfigError> {
    let failed = |message: String| ConfigError::Backend {
        backend: config::redact(&config.backend),
        message,
    };
    let postgres =
        PostgresConfig::from_refcache_config(config).map_err(|e| failed(e.to_string()))?;
    let backend = PostgresTaskBackend::new(postgres).map_err(|e| failed(e.to_string()))?;
    Ok(Arc::new(backend))
}

inventory::submit!(BackendFactory::new("postgres", from_config));
inventory::submit!(BackendFactory::new("postgresql", from_config));
