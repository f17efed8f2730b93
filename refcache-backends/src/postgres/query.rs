//! Running a statement: the pool it goes to (durable or asynchronous commit), the command timeout, what a failure
//! tells the caller ([`Fail`] to [`BackendError`], with hints for a wrong setting), and the migrations at first use.

use std::sync::atomic::Ordering;
use std::time::Duration;

use refcache_core::BackendError;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

use super::inner::Inner;
use super::notify;
use super::pool::Pool;
use super::schema::{self, SchemaError};

/// A failure inside an operation, before it is told to the caller as a [`BackendError`].
pub(super) enum Fail {
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
    pub(super) fn code(&self) -> Option<&SqlState> {
        match self {
            Self::Pg(e) => e.code(),
            _ => None,
        }
    }
}

/// What to check, for the errors whose cause is likely a wrong setting rather than a passing outage.
pub(super) fn hint(err: &tokio_postgres::Error) -> &'static str {
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
    pub(super) fn url(&self) -> String {
        self.config.redacted_url()
    }

    /// The caller's view of a failure: the database is unavailable (with a hint), or something else went wrong.
    pub(super) fn failed(&self, fail: Fail) -> BackendError {
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

    pub(super) fn pg_failed(&self, e: &tokio_postgres::Error) -> BackendError {
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

    pub(super) fn corrupt(&self, what: &str, err: impl std::fmt::Display) -> BackendError {
        BackendError::Other(format!(
            "unreadable {what} in Postgres schema `{}`: {err}",
            self.config.schema
        ))
    }

    /// Runs `op` within the command timeout.
    pub(super) async fn bounded<T>(
        &self,
        op: impl std::future::Future<Output = Result<T, Fail>>,
    ) -> Result<T, Fail> {
        tokio::time::timeout(self.config.command_timeout + Duration::from_secs(1), op)
            .await
            .unwrap_or(Err(Fail::Timeout))
    }

    /// The connections for `sql`: the fast ones (asynchronous commit) for what the leases recover after a server
    /// crash (a lease renewal, a claim, counters, gauges, sweeping), the durable ones for everything else. (The
    /// batched starts and waiters' reads name the fast pool themselves: see `Inner::write_starts`.)
    pub(super) fn pool_for(&self, sql: &str) -> &Pool {
        let all = &self.sql;
        let recoverable = [
            &all.renew,
            &all.fetch,
            &all.reap,
            &all.count,
            &all.gauge,
            &all.sweep_values,
            &all.sweep_records,
            &all.forget_processes,
            &all.notify_many,
            // Output: a task's end is a durable commit, which flushes the output written before it.
            &all.output_append,
            // The record-byte check's turn (a counters row); the sum itself only reads.
            &all.record_bytes,
        ];
        if recoverable.iter().any(|s| std::ptr::eq(s.as_str(), sql)) {
            &self.fast
        } else {
            &self.pool
        }
    }

    pub(super) async fn try_query(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, Fail> {
        self.try_query_on(self.pool_for(sql), sql, params).await
    }

    pub(super) async fn try_query_on(
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
    pub(super) async fn ready(&self) -> Result<(), BackendError> {
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
    pub(super) async fn connect_listener(
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

    pub(super) fn check_accepting(&self) -> Result<(), BackendError> {
        if self.accepting.load(Ordering::Acquire) {
            Ok(())
        } else {
            Err(BackendError::ShuttingDown)
        }
    }
}
