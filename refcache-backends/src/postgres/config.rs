//! `PostgresConfig`: where the database is, how tasks run (`local` or `workers`), which schema holds refcache's
//! tables, TLS, and the limits.
//!
//! Everything can be given in the backend URL, so that `REFCACHE_BACKEND` (or `backend` in the TOML file) alone
//! switches a service to Postgres:
//!
//! ```text
//! postgres://app@127.0.0.1:5432/appdb?mode=workers&schema=myapp&lease=30&max_deliveries=3&sslmode=require
//! ```
//!
//! refcache's own options are taken out of the query; the rest (`application_name`, `connect_timeout`,
//! `options`, `password`, ...) go to the driver as libpq-style connection parameters.

use std::path::PathBuf;
use std::time::Duration;

use refcache_core::RefCacheConfig;

/// Where tasks run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Mode {
    /// In the process that took the call; its state lives in Postgres, so any replica can poll or cancel it.
    #[default]
    Local,
    /// On worker processes ([`worker::run`](crate::postgres::worker::run)) that claim tasks from the `tasks` table
    /// (`FOR UPDATE SKIP LOCKED`) and run them by their registered name.
    Workers,
}

impl Mode {
    /// `local` or `workers`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Workers => "workers",
        }
    }
}

impl std::str::FromStr for Mode {
    type Err = PostgresConfigError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim() {
            "local" => Ok(Self::Local),
            "workers" => Ok(Self::Workers),
            other => Err(PostgresConfigError::InvalidOption {
                name: "mode".into(),
                value: other.into(),
                expected: "`local` or `workers`",
            }),
        }
    }
}

/// How the connection is encrypted (`sslmode`, as libpq names them).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SslMode {
    /// Plain TCP.
    Disable,
    /// TLS when the server offers it, plain otherwise; the certificate is not checked (libpq's default).
    #[default]
    Prefer,
    /// TLS or no connection; the certificate is not checked (encryption against eavesdropping, not against a
    /// server in the middle: use `verify-full` for that).
    Require,
    /// TLS, with the server's certificate checked against `sslrootcert` and its name against the host.
    VerifyFull,
}

impl SslMode {
    /// The libpq name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyFull => "verify-full",
        }
    }
}

/// Settings of a [`PostgresTaskBackend`](crate::postgres::PostgresTaskBackend).
#[derive(Clone, PartialEq)]
#[non_exhaustive]
pub struct PostgresConfig {
    /// The server, as `postgres://user@host:port/db` (refcache's options removed; driver parameters kept).
    pub url: String,
    /// Where tasks run.
    pub mode: Mode,
    /// The schema that holds refcache's tables (created if missing), so that several apps can share one database.
    pub schema: String,
    /// TLS.
    pub ssl_mode: SslMode,
    /// The CA certificate (PEM) that `verify-full` checks the server's certificate against.
    pub ssl_root_cert: Option<PathBuf>,
    /// How long a process's hold on a task lasts without renewal. A process renews it while it lives; one killed
    /// mid-task stops renewing, and after `lease` the fleet takes the task over (or, in `local` mode, fails it).
    pub lease: Duration,
    /// After this many deliveries (the first included) a task whose workers keep dying fails with `worker lost`
    /// and shows in the `dead_letters` view.
    pub max_deliveries: u32,
    /// How many waiting tasks a worker claims beyond those it runs (`workers` mode). Priority is exact among the
    /// tasks one worker holds.
    pub prefetch: usize,
    /// Shared connections of this process, each pipelining concurrent statements (the listening connection is one
    /// more).
    pub pool_size: usize,
    /// Tasks this process runs at once.
    pub max_workers: usize,
    /// Tasks waiting at most, cluster-wide; a submission beyond it is refused with `QueueFull`.
    pub max_queued: usize,
    /// How long a finished value stays when the task sets no TTL.
    pub default_ttl: Duration,
    /// How long a finished task record stays (a complete one stays as long as its value, if that is longer).
    pub task_ttl: Duration,
    /// How long a cancelled task may run on before it is dropped.
    pub cancel_grace: Duration,
    /// The execution timeout of tasks that set none.
    pub default_execution_timeout: Option<Duration>,
    /// Bytes of finished values kept in this process's near cache.
    pub near_cache_bytes: u64,
    /// How long a statement (or getting a connection) may take before it fails with `Unavailable`.
    pub command_timeout: Duration,
    /// Bytes of finished task records kept, cluster-wide, weighed as `512 + the record's JSON + its task's spec
    /// (with the arguments)`; past it, the upkeep (once per lease, cluster-wide) drops the records that would expire
    /// first (never the newest).
    pub max_record_bytes: u64,
    /// Finished task records kept, cluster-wide (as `max_task_records` on the in-process backend); past it, the
    /// upkeep (once per lease, cluster-wide) drops the records that would expire first, each with its value and
    /// output (never the newest).
    pub max_task_records: u64,
    /// How long a submission waits for its task's end to make its row durable before it is confirmed on its own
    /// (a durable statement of its own: one WAL flush more). A task that ends within it costs one flush in all, its
    /// end's; a longer one costs a flush more, and its `submit` answers only after the whole grace and that flush:
    /// a call that waits `async_timeout` before it hands out a reference hands it out up to this much later.
    /// `0`: every submission is confirmed at once (two flushes per task; `submit` answers after one). Whole
    /// milliseconds, at most 1 s (`durable_grace_ms` in the URL: 0 to 1000).
    pub durable_grace: Duration,
}

/// The longest [`PostgresConfig::durable_grace`]: the submission of every task that runs longer answers this much
/// later, which overshoots a short `async_timeout` by as much.
const MAX_DURABLE_GRACE: Duration = Duration::from_secs(1);

/// What `durable_grace_ms` must be.
const DURABLE_GRACE_EXPECTED: &str =
    "a whole number of milliseconds from 0 to 1000, such as 20 (the default)";

impl Default for PostgresConfig {
    fn default() -> Self {
        let memory = refcache_core::MemoryBackendConfig::default();
        Self {
            url: "postgres://postgres@127.0.0.1:5432/postgres".into(),
            mode: Mode::Local,
            schema: "refcache".into(),
            ssl_mode: SslMode::Prefer,
            ssl_root_cert: None,
            lease: Duration::from_secs(30),
            max_deliveries: 3,
            prefetch: 16,
            pool_size: 8,
            max_workers: memory.max_workers,
            max_queued: memory.max_queued,
            default_ttl: memory.default_ttl,
            task_ttl: memory.task_ttl,
            cancel_grace: memory.cancel_grace,
            default_execution_timeout: memory.default_execution_timeout,
            near_cache_bytes: 64 * 1024 * 1024,
            command_timeout: Duration::from_secs(5),
            max_record_bytes: memory.max_record_bytes,
            max_task_records: memory.max_task_records,
            durable_grace: Duration::from_millis(20),
        }
    }
}

/// The options a backend URL may carry besides the driver's own.
const OPTIONS: &str = "mode, schema, lease, max_deliveries, prefetch, pool_size, durable_grace_ms, sslmode, \
                       sslrootcert";

/// A Postgres backend setting that cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum PostgresConfigError {
    /// The URL is not a `postgres://` or `postgresql://` URL the driver can read.
    #[error(
        "invalid Postgres URL `{url}`: expected `postgres://user@host:port/database`, such as \
         `postgres://postgres@127.0.0.1:5432/postgres`{reason}"
    )]
    InvalidUrl {
        /// The URL, without its password.
        url: String,
        /// What the driver said, when it said something (`: ...`).
        reason: String,
    },
    /// An option with a value it cannot take.
    #[error(
        "invalid value `{value}` for `{name}`: expected {expected} (refcache's options: {OPTIONS})"
    )]
    InvalidOption {
        /// The option.
        name: String,
        /// The value.
        value: String,
        /// What it must be.
        expected: &'static str,
    },
}

impl PostgresConfig {
    /// The URL without its password (`postgres://user:***@host/db`, and no `password=` parameter), for errors and
    /// logs: errors reach MCP clients.
    pub fn redacted_url(&self) -> String {
        redact(&self.url)
    }

    /// Defaults, for the server at `url`, with any options in its query (`?mode=workers&schema=app`).
    pub fn from_url(url: &str) -> Result<Self, PostgresConfigError> {
        Self::default().with_url(url)
    }

    /// The settings of a [`RefCacheConfig`] whose `backend` is a Postgres URL: its limits, and the URL's options.
    pub fn from_refcache_config(config: &RefCacheConfig) -> Result<Self, PostgresConfigError> {
        let memory = config.memory_backend();
        let base = Self {
            max_workers: memory.max_workers,
            max_queued: memory.max_queued,
            default_ttl: memory.default_ttl,
            task_ttl: memory.task_ttl,
            cancel_grace: memory.cancel_grace,
            default_execution_timeout: memory.default_execution_timeout,
            near_cache_bytes: memory.max_capacity_bytes,
            max_record_bytes: memory.max_record_bytes,
            max_task_records: memory.max_task_records,
            ..Self::default()
        };
        base.with_url(config.backend.trim())
    }

    /// The same settings for the server at `url`, with the options in its query applied.
    pub fn with_url(mut self, url: &str) -> Result<Self, PostgresConfigError> {
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        if !(base.starts_with("postgres://") || base.starts_with("postgresql://")) {
            return Err(PostgresConfigError::InvalidUrl {
                url: redact(url),
                reason: String::new(),
            });
        }
        let mut driver = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let invalid = |expected: &'static str| PostgresConfigError::InvalidOption {
                name: name.into(),
                value: value.into(),
                expected,
            };
            match name {
                "mode" => self.mode = value.parse()?,
                "schema" => self.schema = value.to_owned(),
                "lease" => {
                    self.lease = value
                        .parse::<f64>()
                        .ok()
                        .filter(|s| s.is_finite() && *s >= 1.0)
                        .map(Duration::from_secs_f64)
                        .ok_or_else(|| invalid("a number of seconds, at least 1"))?;
                }
                "max_deliveries" => {
                    self.max_deliveries = value
                        .parse()
                        .ok()
                        .filter(|n| *n >= 1)
                        .ok_or_else(|| invalid("a positive whole number"))?;
                }
                "prefetch" => {
                    self.prefetch = value.parse().map_err(|_| invalid("a whole number"))?;
                }
                "pool_size" => {
                    self.pool_size = value
                        .parse()
                        .ok()
                        .filter(|n| (1..=256).contains(n))
                        .ok_or_else(|| invalid("a whole number from 1 to 256"))?;
                }
                "durable_grace_ms" => {
                    // Digits only: `parse` would also take `+20`.
                    self.durable_grace = Some(value)
                        .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                        .and_then(|v| v.parse::<u64>().ok())
                        .map(Duration::from_millis)
                        .filter(|d| *d <= MAX_DURABLE_GRACE)
                        .ok_or_else(|| invalid(DURABLE_GRACE_EXPECTED))?;
                }
                "sslmode" => {
                    self.ssl_mode = match value {
                        "disable" => SslMode::Disable,
                        "prefer" => SslMode::Prefer,
                        "require" => SslMode::Require,
                        "verify-full" => SslMode::VerifyFull,
                        _ => {
                            return Err(invalid(
                                "`disable`, `prefer`, `require` or `verify-full` (verify-ca is not supported: \
                                 use verify-full)",
                            ));
                        }
                    };
                }
                "sslrootcert" => self.ssl_root_cert = Some(PathBuf::from(value)),
                _ => driver.push(pair),
            }
        }
        self.url = if driver.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", driver.join("&"))
        };
        self.driver_config()?;
        self.validate()?;
        Ok(self)
    }

    /// The driver's connection settings (TLS aside, which refcache sets up itself).
    pub(crate) fn driver_config(&self) -> Result<tokio_postgres::Config, PostgresConfigError> {
        let mut config: tokio_postgres::Config =
            self.url.parse().map_err(|e: tokio_postgres::Error| {
                PostgresConfigError::InvalidUrl {
                    url: self.redacted_url(),
                    reason: format!(": {e}"),
                }
            })?;
        config.ssl_mode(match self.ssl_mode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyFull => tokio_postgres::config::SslMode::Require,
        });
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(2));
        }
        if config.get_application_name().is_none() {
            config.application_name("refcache");
        }
        Ok(config)
    }

    /// Checks every value; the error names the option.
    pub fn validate(&self) -> Result<(), PostgresConfigError> {
        let schema_ok = !self.schema.is_empty()
            && self.schema.len() <= 40
            && self
                .schema
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
            && self
                .schema
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            && !self.schema.starts_with("pg_");
        if !schema_ok {
            return Err(PostgresConfigError::InvalidOption {
                name: "schema".into(),
                value: self.schema.clone(),
                expected: "1 to 40 of a-z 0-9 _, starting with a letter or _, and not pg_",
            });
        }
        if self.max_workers == 0 {
            return Err(PostgresConfigError::InvalidOption {
                name: "max_workers".into(),
                value: "0".into(),
                expected: "a positive whole number",
            });
        }
        if self.max_task_records == 0 {
            return Err(PostgresConfigError::InvalidOption {
                name: "max_task_records".into(),
                value: "0".into(),
                expected: "a positive whole number",
            });
        }
        if self.lease < Duration::from_secs(1) {
            return Err(PostgresConfigError::InvalidOption {
                name: "lease".into(),
                value: format!("{}", self.lease.as_secs_f64()),
                expected: "a number of seconds, at least 1",
            });
        }
        if self.durable_grace > MAX_DURABLE_GRACE
            || !self.durable_grace.subsec_nanos().is_multiple_of(1_000_000)
        {
            return Err(PostgresConfigError::InvalidOption {
                name: "durable_grace_ms".into(),
                value: format!("{:?}", self.durable_grace),
                expected: DURABLE_GRACE_EXPECTED,
            });
        }
        if self.ssl_mode == SslMode::VerifyFull && self.ssl_root_cert.is_none() {
            return Err(PostgresConfigError::InvalidOption {
                name: "sslrootcert".into(),
                value: String::new(),
                expected: "the path of the CA certificate (PEM) that sslmode=verify-full checks the server against",
            });
        }
        Ok(())
    }

    /// Sets the mode.
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// Sets the schema.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// Sets the lease.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// Sets the deliveries after which a task fails with `worker lost`.
    pub fn max_deliveries(mut self, n: u32) -> Self {
        self.max_deliveries = n;
        self
    }

    /// Sets how many tasks run at once in this process.
    pub fn max_workers(mut self, n: usize) -> Self {
        self.max_workers = n;
        self
    }

    /// Sets how many tasks may wait, cluster-wide.
    pub fn max_queued(mut self, n: usize) -> Self {
        self.max_queued = n;
        self
    }

    /// Sets the grace period of a cancelled task.
    pub fn cancel_grace(mut self, grace: Duration) -> Self {
        self.cancel_grace = grace;
        self
    }

    /// Sets how long a finished task record stays.
    pub fn task_ttl(mut self, ttl: Duration) -> Self {
        self.task_ttl = ttl;
        self
    }

    /// Sets how long a finished value stays when its task sets no TTL.
    pub fn default_ttl(mut self, ttl: Duration) -> Self {
        self.default_ttl = ttl;
        self
    }

    /// Sets the statement timeout.
    pub fn command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = timeout;
        self
    }

    /// Sets the bound on the bytes of finished task records (see [`PostgresConfig::max_record_bytes`]).
    pub fn max_record_bytes(mut self, bytes: u64) -> Self {
        self.max_record_bytes = bytes;
        self
    }

    /// Sets the bound on the number of finished task records (see [`PostgresConfig::max_task_records`]).
    pub fn max_task_records(mut self, records: u64) -> Self {
        self.max_task_records = records;
        self
    }

    /// Sets how long a submission waits for its task's end before it is confirmed on its own (see
    /// [`PostgresConfig::durable_grace`]).
    pub fn durable_grace(mut self, grace: Duration) -> Self {
        self.durable_grace = grace;
        self
    }
}

/// `url` without a password: in the user info (through [`refcache_core::redact_url`]) or as a `password=`
/// parameter.
pub(crate) fn redact(url: &str) -> String {
    let url = refcache_core::redact_url(url);
    let Some((base, query)) = url.split_once('?') else {
        return url;
    };
    let query: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if name.eq_ignore_ascii_case("password") => format!("{name}=***"),
            _ => pair.to_owned(),
        })
        .collect();
    format!("{base}?{}", query.join("&"))
}

/// `Debug` without the URL's password: configs end up in logs.
impl std::fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self {
            url: _,
            mode,
            schema,
            ssl_mode,
            ssl_root_cert,
            lease,
            max_deliveries,
            prefetch,
            pool_size,
            max_workers,
            max_queued,
            default_ttl,
            task_ttl,
            cancel_grace,
            default_execution_timeout,
            near_cache_bytes,
            command_timeout,
            max_record_bytes,
            max_task_records,
            durable_grace,
        } = self;
        f.debug_struct("PostgresConfig")
            .field("url", &self.redacted_url())
            .field("mode", mode)
            .field("schema", schema)
            .field("ssl_mode", ssl_mode)
            .field("ssl_root_cert", ssl_root_cert)
            .field("lease", lease)
            .field("max_deliveries", max_deliveries)
            .field("prefetch", prefetch)
            .field("pool_size", pool_size)
            .field("max_workers", max_workers)
            .field("max_queued", max_queued)
            .field("default_ttl", default_ttl)
            .field("task_ttl", task_ttl)
            .field("cancel_grace", cancel_grace)
            .field("default_execution_timeout", default_execution_timeout)
            .field("near_cache_bytes", near_cache_bytes)
            .field("command_timeout", command_timeout)
            .field("max_record_bytes", max_record_bytes)
            .field("max_task_records", max_task_records)
            .field("durable_grace", durable_grace)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_options_are_taken_out_and_driver_parameters_kept() {
        let c = PostgresConfig::from_url(
            "postgres://app@127.0.0.1:7000/db?mode=workers&schema=app1&lease=10&max_deliveries=5&prefetch=4\
             &application_name=svc&sslmode=require&pool_size=3&durable_grace_ms=5",
        )
        .unwrap();
        assert_eq!(
            c.url,
            "postgres://app@127.0.0.1:7000/db?application_name=svc"
        );
        assert_eq!(c.mode, Mode::Workers);
        assert_eq!(c.schema, "app1");
        assert_eq!(c.lease, Duration::from_secs(10));
        assert_eq!((c.max_deliveries, c.prefetch, c.pool_size), (5, 4, 3));
        assert_eq!(c.ssl_mode, SslMode::Require);
        assert_eq!(c.durable_grace, Duration::from_millis(5));
        let d = PostgresConfig::from_url("postgresql://h/db").unwrap();
        assert_eq!((d.mode, d.schema.as_str()), (Mode::Local, "refcache"));
        assert_eq!(d.durable_grace, Duration::from_millis(20));
        let e = PostgresConfig::from_url("postgresql://h/db?durable_grace_ms=0").unwrap();
        assert_eq!(e.durable_grace, Duration::ZERO);
    }

    #[test]
    fn bad_urls_name_the_fix() {
        let e = PostgresConfig::from_url("postgres://h/db?mode=fleet").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("invalid value `fleet` for `mode`: expected `local` or `workers`"),
            "{e}"
        );
        assert!(PostgresConfig::from_url("redis://h").is_err());
        assert!(PostgresConfig::from_url("postgres://h/db?schema=My-App").is_err());
        assert!(PostgresConfig::from_url("postgres://h/db?schema=pg_catalog").is_err());
        assert!(PostgresConfig::from_url("postgres://h/db?lease=0.5").is_err());
        assert!(PostgresConfig::from_url("postgres://h/db?max_deliveries=0").is_err());
        assert!(PostgresConfig::from_url("postgres://h/db?sslmode=verify-ca").is_err());
        for bad in ["-1", "+20", "0.5", "1001", "20ms", ""] {
            let e = PostgresConfig::from_url(&format!("postgres://h/db?durable_grace_ms={bad}"))
                .unwrap_err();
            assert!(
                e.to_string().starts_with(&format!(
                    "invalid value `{bad}` for `durable_grace_ms`: expected a whole number of milliseconds from 0 \
                     to 1000"
                )),
                "{e}"
            );
        }
        for (bad, shown) in [
            (Duration::from_millis(1001), "`1.001s`"),
            (Duration::from_micros(500), "`500µs`"),
        ] {
            let e = PostgresConfig::default()
                .durable_grace(bad)
                .validate()
                .unwrap_err();
            assert!(
                e.to_string()
                    .starts_with(&format!("invalid value {shown} for `durable_grace_ms`")),
                "{e}"
            );
        }
        PostgresConfig::default()
            .durable_grace(Duration::from_secs(1))
            .validate()
            .unwrap();
        assert!(PostgresConfig::from_url("postgres://h/db?sslmode=verify-full").is_err());
        let e = PostgresConfig::from_url("postgres://h/db?frobnicate=1").unwrap_err();
        assert!(e.to_string().contains("invalid Postgres URL"), "{e}");
    }

    #[test]
    fn passwords_never_reach_errors_or_debug() {
        let c =
            PostgresConfig::from_url("postgres://app:s3cret@h:5432/db?password=s3cret2").unwrap();
        assert_eq!(
            c.redacted_url(),
            "postgres://app:***@h:5432/db?password=***"
        );
        let debug = format!("{c:?}");
        assert!(!debug.contains("s3cret"), "{debug}");
        let e = PostgresConfig::from_url("postgres://app:s3cret@h:5432/db?password=s3cret2&x=1")
            .unwrap_err();
        assert!(!e.to_string().contains("s3cret"), "{e}");
    }
}
