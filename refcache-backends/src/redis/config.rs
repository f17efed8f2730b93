//! `RedisConfig`: where the Redis is, how tasks run (`local` or `workers`), and the limits.
//!
//! Everything can be given in the backend URL, so that `REFCACHE_BACKEND` (or `backend` in the TOML file) alone
//! switches a service to Redis:
//!
//! ```text
//! redis://127.0.0.1:6379/0?mode=workers&key_prefix=myapp&lease=30&max_deliveries=3&prefetch=16
//! ```

use std::time::Duration;

use refcache_core::RefCacheConfig;

use super::tls::RedisTls;

/// Where tasks run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Mode {
    /// In the process that took the call; its state lives in Redis, so any replica can poll or cancel it.
    #[default]
    Local,
    /// On worker processes ([`worker::run`](crate::redis::worker::run)) that read tasks off a Redis Stream and run
    /// them by their registered name.
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
    type Err = RedisConfigError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim() {
            "local" => Ok(Self::Local),
            "workers" => Ok(Self::Workers),
            other => Err(RedisConfigError::InvalidOption {
                name: "mode".into(),
                value: other.into(),
                expected: "`local` or `workers`",
            }),
        }
    }
}

/// Settings of a [`RedisTaskBackend`](crate::redis::RedisTaskBackend).
#[derive(Clone, PartialEq)]
#[non_exhaustive]
pub struct RedisConfig {
    /// The server, as `redis://host:port/db`, or `rediss://host:port/db` for TLS (feature `redis-tls`).
    pub url: String,
    /// The certificates of a `rediss://` connection (feature `redis-tls`); none: the system's roots.
    pub tls: RedisTls,
    /// Where tasks run.
    pub mode: Mode,
    /// The prefix of every key and channel, so that several apps can share one Redis.
    pub key_prefix: String,
    /// How long a worker's hold on a task lasts without renewal. A worker renews it while it lives; one killed
    /// mid-task stops renewing, and after `lease` another worker takes the task over.
    pub lease: Duration,
    /// After this many deliveries (the first included) a task whose workers keep dying fails with `worker lost`
    /// and its ref id goes to the dead-letter list.
    pub max_deliveries: u32,
    /// How many waiting tasks a worker takes off the stream beyond those it runs (`workers` mode). Priority is
    /// exact among the tasks one worker holds.
    pub prefetch: usize,
    /// Tasks this process runs at once.
    pub max_workers: usize,
    /// Tasks waiting at most, cluster-wide; a submission beyond it is refused with `QueueFull`.
    pub max_queued: usize,
    /// How long a finished value stays when the task sets no TTL.
    pub default_ttl: Duration,
    /// How long a finished task record stays.
    pub task_ttl: Duration,
    /// How long a cancelled task may run on before it is dropped.
    pub cancel_grace: Duration,
    /// The execution timeout of tasks that set none.
    pub default_execution_timeout: Option<Duration>,
    /// Bytes of finished values kept in this process's near cache.
    pub near_cache_bytes: u64,
    /// How long a Redis command may take before it fails with `Unavailable`.
    pub command_timeout: Duration,
    /// Bytes the finished task records may hold, weighed as `stats()`' `record_bytes` (their arguments with them):
    /// past it the oldest are dropped with their values (one lifetime), within a lease period.
    pub max_record_bytes: u64,
    /// `workers` mode: a task's end event carries its record and value (up to 4 KiB) for the submitter's waiter,
    /// which then needs no read (one round trip per task). Whoever may subscribe to `<prefix>:events` reads them:
    /// turn it off where channel permissions are broader than key permissions on the prefix.
    pub end_in_event: bool,
}

impl Default for RedisConfig {
    fn default() -> Self {
        let memory = refcache_core::MemoryBackendConfig::default();
        Self {
            url: "redis://127.0.0.1:6379/0".into(),
            tls: RedisTls::default(),
            mode: Mode::Local,
            key_prefix: "refcache".into(),
            lease: Duration::from_secs(30),
            max_deliveries: 3,
            prefetch: 16,
            max_workers: memory.max_workers,
            max_queued: memory.max_queued,
            default_ttl: memory.default_ttl,
            task_ttl: memory.task_ttl,
            cancel_grace: memory.cancel_grace,
            default_execution_timeout: memory.default_execution_timeout,
            near_cache_bytes: 64 * 1024 * 1024,
            command_timeout: Duration::from_secs(5),
            max_record_bytes: memory.max_record_bytes,
            end_in_event: true,
        }
    }
}

/// The options a backend URL may carry.
const OPTIONS: &str = "mode, key_prefix, lease, max_deliveries, prefetch, end_in_event, tls_ca_file, tls_cert_file, tls_key_file";

/// A Redis backend setting that cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum RedisConfigError {
    /// The URL is not a `redis://` or `rediss://` URL.
    #[error(
        "invalid Redis URL `{url}`: expected `redis://host:port/db`, such as `redis://127.0.0.1:6379/0`"
    )]
    InvalidUrl {
        /// The URL.
        url: String,
    },
    /// A query option refcache does not know.
    #[error("unknown option `{name}` in the Redis backend URL; known: {OPTIONS}")]
    UnknownOption {
        /// The option.
        name: String,
    },
    /// An option with a value it cannot take.
    #[error("invalid value `{value}` for `{name}`: expected {expected}")]
    InvalidOption {
        /// The option.
        name: String,
        /// The value.
        value: String,
        /// What it must be.
        expected: &'static str,
    },
    /// A `rediss://` URL in a build without TLS.
    #[error(
        "`rediss://` needs TLS, which this build of refcache lacks: enable the `redis-tls` feature \
         (`refcache = {{ version = \"0.1\", features = [\"redis-tls\"] }}`)"
    )]
    TlsNotCompiled,
    /// TLS settings on a `redis://` URL, or a client certificate without its key.
    #[error("{0}")]
    Tls(&'static str),
    /// A certificate or key file that cannot be read.
    #[error("cannot read `{name}` file `{path}`: {message}")]
    TlsFile {
        /// The option.
        name: String,
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
}

impl RedisConfig {
    /// The URL without its password (`redis://user:***@host:port/db`), for errors and logs: errors reach MCP clients.
    pub fn redacted_url(&self) -> String {
        refcache_core::redact_url(&self.url)
    }

    /// Defaults, for the server at `url`, with any options in its query (`?mode=workers&key_prefix=app`).
    pub fn from_url(url: &str) -> Result<Self, RedisConfigError> {
        Self::default().with_url(url)
    }

    /// The settings of a [`RefCacheConfig`] whose `backend` is a Redis URL: its limits, and the URL's options.
    pub fn from_refcache_config(config: &RefCacheConfig) -> Result<Self, RedisConfigError> {
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
            ..Self::default()
        };
        base.with_url(config.backend.trim())
    }

    /// The same settings for the server at `url`, with the options in its query applied.
    pub fn with_url(mut self, url: &str) -> Result<Self, RedisConfigError> {
        let invalid_url = || RedisConfigError::InvalidUrl {
            url: refcache_core::redact_url(url),
        };
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        if !(base.starts_with("redis://") || base.starts_with("rediss://")) {
            return Err(invalid_url());
        }
        if base.starts_with("rediss://") && !cfg!(feature = "redis-tls") {
            return Err(RedisConfigError::TlsNotCompiled);
        }
        redis::Client::open(base).map_err(|_| invalid_url())?;
        self.url = base.to_owned();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let invalid = |expected: &'static str| RedisConfigError::InvalidOption {
                name: name.into(),
                value: value.into(),
                expected,
            };
            match name {
                "mode" => self.mode = value.parse()?,
                "key_prefix" => self.key_prefix = value.to_owned(),
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
                "end_in_event" => {
                    self.end_in_event = match value {
                        "true" => true,
                        "false" => false,
                        _ => return Err(invalid("true or false")),
                    };
                }
                "tls_ca_file" => self.tls.root_cert = Some(read_pem(name, value)?),
                "tls_cert_file" => self.tls.client_cert = Some(read_pem(name, value)?),
                "tls_key_file" => self.tls.client_key = Some(read_pem(name, value)?),
                _ => return Err(RedisConfigError::UnknownOption { name: name.into() }),
            }
        }
        self.validate()?;
        Ok(self)
    }

    /// Checks every value; the error names the option.
    pub fn validate(&self) -> Result<(), RedisConfigError> {
        let tls_url = self.url.starts_with("rediss://");
        if tls_url && !cfg!(feature = "redis-tls") {
            return Err(RedisConfigError::TlsNotCompiled);
        }
        if self.tls.is_set() && !tls_url {
            return Err(RedisConfigError::Tls(
                "TLS certificates are set, but the URL is `redis://`: use `rediss://` for TLS",
            ));
        }
        if self.tls.client_cert.is_some() != self.tls.client_key.is_some() {
            return Err(RedisConfigError::Tls(
                "a client certificate needs its key, and a key its certificate: set both \
                 (`tls_cert_file` and `tls_key_file`)",
            ));
        }
        let prefix_ok = !self.key_prefix.is_empty()
            && self.key_prefix.len() <= 64
            && self
                .key_prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.:".contains(c));
        if !prefix_ok {
            return Err(RedisConfigError::InvalidOption {
                name: "key_prefix".into(),
                value: self.key_prefix.clone(),
                expected: "1 to 64 of the characters A-Z a-z 0-9 _ - . :",
            });
        }
        if self.max_workers == 0 {
            return Err(RedisConfigError::InvalidOption {
                name: "max_workers".into(),
                value: "0".into(),
                expected: "a positive whole number",
            });
        }
        if self.max_record_bytes == 0 {
            return Err(RedisConfigError::InvalidOption {
                name: "max_record_bytes".into(),
                value: "0".into(),
                expected: "a positive number of bytes",
            });
        }
        if self.lease < Duration::from_secs(1) {
            return Err(RedisConfigError::InvalidOption {
                name: "lease".into(),
                value: format!("{}", self.lease.as_secs_f64()),
                expected: "a number of seconds, at least 1",
            });
        }
        Ok(())
    }

    /// Sets the TLS certificates of a `rediss://` URL.
    pub fn tls(mut self, tls: RedisTls) -> Self {
        self.tls = tls;
        self
    }

    /// Sets the mode.
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// Sets the key prefix.
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = prefix.into();
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

    /// Sets how long a finished task record stays (a complete one stays at least as long as its value).
    pub fn task_ttl(mut self, ttl: Duration) -> Self {
        self.task_ttl = ttl;
        self
    }

    /// With the end's record and value in its event (`workers` mode), or not.
    pub fn end_in_event(mut self, on: bool) -> Self {
        self.end_in_event = on;
        self
    }

    /// Sets the bytes the finished task records may hold (their oldest go first).
    pub fn max_record_bytes(mut self, bytes: u64) -> Self {
        self.max_record_bytes = bytes;
        self
    }
}

/// `Debug` without the URL's password: configs end up in logs.
impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self {
            url: _,
            tls,
            mode,
            key_prefix,
            lease,
            max_deliveries,
            prefetch,
            max_workers,
            max_queued,
            default_ttl,
            task_ttl,
            cancel_grace,
            default_execution_timeout,
            near_cache_bytes,
            command_timeout,
            max_record_bytes,
            end_in_event,
        } = self;
        f.debug_struct("RedisConfig")
            .field("url", &self.redacted_url())
            .field("tls", tls)
            .field("mode", mode)
            .field("key_prefix", key_prefix)
            .field("lease", lease)
            .field("max_deliveries", max_deliveries)
            .field("prefetch", prefetch)
            .field("max_workers", max_workers)
            .field("max_queued", max_queued)
            .field("default_ttl", default_ttl)
            .field("task_ttl", task_ttl)
            .field("cancel_grace", cancel_grace)
            .field("default_execution_timeout", default_execution_timeout)
            .field("near_cache_bytes", near_cache_bytes)
            .field("command_timeout", command_timeout)
            .field("max_record_bytes", max_record_bytes)
            .field("end_in_event", end_in_event)
            .finish()
    }
}

/// The contents of the PEM file that option `name` names.
fn read_pem(name: &str, path: &str) -> Result<Vec<u8>, RedisConfigError> {
    let error = |message: String| RedisConfigError::TlsFile {
        name: name.into(),
        path: path.into(),
        message,
    };
    let pem = std::fs::read(path).map_err(|e| error(e.to_string()))?;
    if !pem.starts_with(b"-----BEGIN ") && !String::from_utf8_lossy(&pem).contains("-----BEGIN ") {
        return Err(error("not a PEM file (no `-----BEGIN` line)".into()));
    }
    Ok(pem)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_options() {
        let c = RedisConfig::from_url(
            "redis://127.0.0.1:7000/2?mode=workers&key_prefix=app1&lease=10&max_deliveries=5&prefetch=4",
        )
        .unwrap();
        assert_eq!(c.url, "redis://127.0.0.1:7000/2");
        assert_eq!(c.mode, Mode::Workers);
        assert_eq!(c.key_prefix, "app1");
        assert_eq!(c.lease, Duration::from_secs(10));
        assert_eq!((c.max_deliveries, c.prefetch), (5, 4));
        assert_eq!(
            RedisConfig::from_url("redis://h/0").unwrap().mode,
            Mode::Local
        );
    }

    #[test]
    fn bad_urls_name_the_fix() {
        let e = RedisConfig::from_url("redis://h/0?mode=fleet").unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid value `fleet` for `mode`: expected `local` or `workers`"
        );
        let e = RedisConfig::from_url("redis://h/0?leese=3").unwrap_err();
        assert!(e.to_string().contains("known: mode, key_prefix"), "{e}");
        assert!(RedisConfig::from_url("http://h").is_err());
        assert!(RedisConfig::from_url("redis://h/0?key_prefix=a b").is_err());
        assert!(RedisConfig::from_url("redis://h/0?lease=0.5").is_err());
        assert!(RedisConfig::from_url("redis://h/0?max_deliveries=0").is_err());
    }

    /// Without the `redis-tls` feature, `rediss://` is refused at once, naming the feature, instead of failing every
    /// call with `Unavailable` later.
    #[cfg(not(feature = "redis-tls"))]
    #[test]
    fn rediss_without_the_feature_names_it() {
        let e = RedisConfig::from_url("rediss://h:6380/0").unwrap_err();
        assert_eq!(e, RedisConfigError::TlsNotCompiled);
        assert!(e.to_string().contains("`redis-tls` feature"), "{e}");
    }
}
