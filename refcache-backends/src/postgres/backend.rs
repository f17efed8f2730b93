//! [`PostgresTaskBackend`]: the struct, its construction, its public methods and its [`TaskBackend`] implementation,
//! each method a call into the file of its path (`submit.rs`, `poll.rs`, `list.rs`, `control.rs`, `output.rs`,
//! `input.rs`, `stats.rs`); [`PostgresBackendError`]; the start of the background loops.

use std::sync::atomic::{AtomicBool, AtomicI64};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use refcache_core::{
    BackendError, BackendStats, CacheKey, CancelOutcome, OutputChunk, RefId, RespondOutcome,
    RetryOutcome, StoredValue, Submission, Submitted, TaskBackend, TaskFilter, TaskInfo, TaskPage,
    TaskSnapshot, ValueStore,
};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use super::batch::Batches;
use super::config::{Mode, PostgresConfig, PostgresConfigError};
use super::held::RunState;
use super::hub::Hub;
use super::inner::{Inner, ms_i64, random_byte};
use super::pool::Pool;
use super::schema::Sql;
use super::tls;

/// A task backend on Postgres. Cheap to clone; clones share one set of connections.
///
/// Build one with [`PostgresTaskBackend::new`] (a replica: it submits, polls and cancels, and in `local` mode runs
/// what it submits), or [`PostgresTaskBackend::worker`] (it also claims and runs tasks, in `workers` mode). Both
/// connect lazily and apply the schema's migrations at first use: while Postgres is down, every call answers
/// [`BackendError::Unavailable`], and work resumes when it is back.
#[derive(Clone)]
pub struct PostgresTaskBackend {
    pub(super) inner: Arc<Inner>,
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

impl PostgresTaskBackend {
    /// A replica: submits, polls, cancels, lists; in `local` mode it also runs what it submits. Connects lazily.
    pub fn new(config: PostgresConfig) -> Result<Self, PostgresBackendError> {
        Self::build(config, false)
    }

    /// A worker (`workers` mode, whatever `config.mode` says): a replica that also claims tasks and runs them by
    /// name. [`worker::run`](super::worker::run) runs one until a signal.
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
        let fast_size = config.pool_size.div_ceil(2);
        let submits = Pool::new(fast_config.clone(), tls.clone(), fast_size);
        let fast = Pool::new(fast_config, tls.clone(), fast_size);
        let consumer = format!(
            "{}-{}",
            std::process::id(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let durable_size = config.pool_size;
        let inner = Arc::new_cyclic(|me| Inner {
            me: me.clone(),
            batches: Batches::new(durable_size, fast_size),
            oldest_pending: AtomicI64::new(0),
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
            submits,
            fast,
            migrated: AtomicBool::new(false),
            migrating: tokio::sync::Mutex::new(()),
            hub: Hub::default(),
            output_hub: Hub::default(),
            start_hub: Hub::default(),
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
        });
        Ok(Self { inner })
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
        self.inner.begin().await?;
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
            self.inner.begin().await?;
            self.inner.lookup(key).await
        })
    }

    fn submit(&self, submission: Submission) -> BoxFuture<'_, Result<Submitted, BackendError>> {
        Box::pin(async move {
            self.inner.check_accepting()?;
            self.inner.begin().await?;
            self.inner.submit(submission).await
        })
    }

    fn get<'a>(
        &'a self,
        ref_id: &'a RefId,
    ) -> BoxFuture<'a, Result<Option<TaskSnapshot>, BackendError>> {
        Box::pin(async move {
            self.inner.begin().await?;
            self.inner.get(ref_id).await
        })
    }

    fn get_record<'a>(
        &'a self,
        ref_id: &'a RefId,
    ) -> BoxFuture<'a, Result<Option<TaskSnapshot>, BackendError>> {
        Box::pin(async move {
            self.inner.begin().await?;
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
            self.inner.begin().await?;
            self.inner.wait(ref_id, deadline).await
        })
    }

    fn watch<'a>(
        &'a self,
        ref_id: &'a RefId,
    ) -> BoxFuture<'a, Result<Option<watch::Receiver<TaskInfo>>, BackendError>> {
        Box::pin(async move {
            self.inner.begin().await?;
            self.inner.watch(ref_id).await
        })
    }

    fn read_output<'a>(
        &'a self,
        ref_id: &'a RefId,
        offset: u64,
        max_bytes: usize,
    ) -> BoxFuture<'a, Result<Option<OutputChunk>, BackendError>> {
        Box::pin(async move {
            self.inner.begin().await?;
            self.inner.read_output(ref_id, offset, max_bytes).await
        })
    }

    fn follow_output<'a>(
        &'a self,
        ref_id: &'a RefId,
    ) -> BoxFuture<'a, Result<Option<BoxStream<'static, ()>>, BackendError>> {
        Box::pin(async move {
            self.inner.begin().await?;
            self.inner.follow_output(ref_id).await
        })
    }

    fn respond<'a>(
        &'a self,
        ref_id: &'a RefId,
        key: &'a str,
        answer: serde_json::Value,
    ) -> BoxFuture<'a, Result<RespondOutcome, BackendError>> {
        Box::pin(async move {
            self.inner.begin().await?;
            self.inner.respond(ref_id, key, &answer).await
        })
    }

    fn cancel<'a>(
        &'a self,
        ref_id: &'a RefId,
    ) -> BoxFuture<'a, Result<CancelOutcome, BackendError>> {
        Box::pin(async move {
            self.inner.begin().await?;
            self.inner.cancel_with(ref_id, None).await
        })
    }

    fn delete<'a>(&'a self, ref_id: &'a RefId) -> BoxFuture<'a, Result<bool, BackendError>> {
        Box::pin(async move {
            self.inner.begin().await?;
            self.inner.delete(ref_id).await
        })
    }

    fn list(&self, filter: TaskFilter) -> BoxFuture<'_, Result<TaskPage, BackendError>> {
        Box::pin(async move {
            self.inner.begin().await?;
            self.inner.list(filter).await
        })
    }

    fn retry<'a>(&'a self, ref_id: &'a RefId) -> BoxFuture<'a, Result<RetryOutcome, BackendError>> {
        Box::pin(async move {
            self.inner.check_accepting()?;
            self.inner.begin().await?;
            self.inner.retry(ref_id).await
        })
    }

    fn end_session<'a>(
        &'a self,
        session_id: &'a str,
    ) -> BoxFuture<'a, Result<usize, BackendError>> {
        Box::pin(async move {
            let inner = &self.inner;
            inner.begin().await?;
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
            inner.begin().await?;
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
            self.inner.begin().await?;
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
