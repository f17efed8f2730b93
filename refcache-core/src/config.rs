//! `RefCacheConfig`: settings from a TOML file and `REFCACHE_*` environment variables.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::cache::RefCache;
use crate::memory::config::MemoryBackendConfig;
use crate::model::error::ConfigError;
use crate::model::preview::{PreviewStrategy, Previewer, SizeMeasure, TokenEncoding};

/// Settings of a [`RefCache`](crate::RefCache) and its backend.
///
/// Loaded by [`RefCacheConfig::load`]: defaults, then the TOML file named by `REFCACHE_CONFIG` (if set), then
/// `REFCACHE_*` environment variables. Every key has an environment variable of the same name in upper case with a
/// `REFCACHE_` prefix:
///
/// | key | env | default | meaning |
/// |---|---|---|---|
/// | `name` | `REFCACHE_NAME` | `refcache` | cache name, the prefix of every ref id |
/// | `backend` | `REFCACHE_BACKEND` | `memory` | `memory`, or a backend URL such as `redis://127.0.0.1:6379/0` |
/// | `default_ttl` | `REFCACHE_DEFAULT_TTL` | `3600` | seconds a value stays cached unless its function sets `ttl` |
/// | `task_ttl` | `REFCACHE_TASK_TTL` | `86400` | seconds a finished task record stays |
/// | `max_workers` | `REFCACHE_MAX_WORKERS` | `32` | tasks running at once |
/// | `max_queued` | `REFCACHE_MAX_QUEUED` | `10000` | tasks waiting; beyond it submissions fail with `QueueFull` |
/// | `max_task_records` | `REFCACHE_MAX_TASK_RECORDS` | `100000` | finished task records kept |
/// | `max_record_bytes` | `REFCACHE_MAX_RECORD_BYTES` | `67108864` | bytes of finished task records kept (a failed task's arguments, errors, retry history; 512 per record), oldest evicted first |
/// | `max_capacity_bytes` | `REFCACHE_MAX_CAPACITY_BYTES` | `268435456` | bytes of values kept |
/// | `cancel_grace` | `REFCACHE_CANCEL_GRACE` | `5.0` | seconds a cancelled task may run before it is aborted |
/// | `default_execution_timeout` | `REFCACHE_DEFAULT_EXECUTION_TIMEOUT` | none | seconds, for tasks that set no `execution_timeout` |
/// | `size_measure` | `REFCACHE_SIZE_MEASURE` | `tokens`; `characters` without the `tokens` feature | how values are measured for `max_size`: `tokens` (needs the `tokens` feature, one of `refcache`'s default features) or `characters` |
/// | `token_encoding` | `REFCACHE_TOKEN_ENCODING` | `cl100k_base` | the tiktoken encoding: `cl100k_base` or `o200k_base` (used only when measuring tokens) |
/// | `max_size` | `REFCACHE_MAX_SIZE` | `1000` | the largest value answered whole, in `size_measure` units; larger ones get a preview |
/// | `page_size` | `REFCACHE_PAGE_SIZE` | `20` | items per page when paging through a value |
/// | `preview_strategy` | `REFCACHE_PREVIEW_STRATEGY` | `sample` | `sample`, `paginate` or `truncate` |
/// | `max_argument_bytes` | `REFCACHE_MAX_ARGUMENT_BYTES` | `1048576` | bytes of canonical JSON one call's arguments may take; a call over it is refused at once |
/// | `max_tasks_per_owner` | `REFCACHE_MAX_TASKS_PER_OWNER` | none | tasks one owner (actor) may have in flight at once, in this process; over it a call fails with `TooManyTasks` |
///
/// An unknown key in the file or an unknown `REFCACHE_*` variable is an error, so a typo never goes unnoticed.
/// `size_measure = "tokens"` in a build without the `tokens` feature is an error too,
/// [`ConfigError::TokensNotCompiled`], never a silent switch to characters.
/// `REFCACHE_REDIS_SERVER` is the one other variable allowed: it is no cache setting, but the `redis-server` binary
/// that the Redis backend's `RedisServer` starts (in tests, benches and the distributed demo).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct RefCacheConfig {
    /// Cache name: the prefix of every ref id.
    pub name: String,
    /// `memory`, or a backend URL.
    pub backend: String,
    /// Seconds a value stays cached unless its function sets `ttl`.
    pub default_ttl: u64,
    /// Seconds a finished task record stays.
    pub task_ttl: u64,
    /// Tasks running at once.
    pub max_workers: usize,
    /// Tasks waiting at most.
    pub max_queued: usize,
    /// Finished task records kept at most.
    pub max_task_records: u64,
    /// Bytes of finished task records kept at most.
    pub max_record_bytes: u64,
    /// Bytes of values kept at most.
    pub max_capacity_bytes: u64,
    /// Seconds a cancelled async task may run on before it is aborted.
    pub cancel_grace: f64,
    /// Seconds of execution timeout for tasks that set none.
    pub default_execution_timeout: Option<f64>,
    /// `tokens` or `characters`. The default is `tokens` with the `tokens` feature, `characters` without it.
    pub size_measure: String,
    /// The tiktoken encoding when measuring tokens.
    pub token_encoding: TokenEncoding,
    /// The largest value answered whole.
    pub max_size: usize,
    /// Items per page.
    pub page_size: usize,
    /// How a large value is previewed.
    pub preview_strategy: PreviewStrategy,
    /// Bytes of canonical JSON one call's arguments may take.
    pub max_argument_bytes: usize,
    /// Tasks one owner may have in flight at once, in this process (`None`: no cap).
    pub max_tasks_per_owner: Option<usize>,
}

impl Default for RefCacheConfig {
    fn default() -> Self {
        let m = MemoryBackendConfig::default();
        Self {
            name: "refcache".to_owned(),
            backend: "memory".to_owned(),
            default_ttl: m.default_ttl.as_secs(),
            task_ttl: m.task_ttl.as_secs(),
            max_workers: m.max_workers,
            max_queued: m.max_queued,
            max_task_records: m.max_task_records,
            max_record_bytes: m.max_record_bytes,
            max_capacity_bytes: m.max_capacity_bytes,
            cancel_grace: m.cancel_grace.as_secs_f64(),
            default_execution_timeout: None,
            size_measure: SizeMeasure::default().unit().to_owned(),
            token_encoding: TokenEncoding::default(),
            max_size: 1000,
            page_size: 20,
            preview_strategy: PreviewStrategy::default(),
            max_argument_bytes: crate::model::key::DEFAULT_MAX_ARGUMENT_BYTES,
            max_tasks_per_owner: None,
        }
    }
}

const VARS: &[&str] = &[
    "REFCACHE_CONFIG",
    "REFCACHE_NAME",
    "REFCACHE_BACKEND",
    "REFCACHE_DEFAULT_TTL",
    "REFCACHE_TASK_TTL",
    "REFCACHE_MAX_WORKERS",
    "REFCACHE_MAX_QUEUED",
    "REFCACHE_MAX_TASK_RECORDS",
    "REFCACHE_MAX_RECORD_BYTES",
    "REFCACHE_MAX_CAPACITY_BYTES",
    "REFCACHE_CANCEL_GRACE",
    "REFCACHE_DEFAULT_EXECUTION_TIMEOUT",
    "REFCACHE_SIZE_MEASURE",
    "REFCACHE_TOKEN_ENCODING",
    "REFCACHE_MAX_SIZE",
    "REFCACHE_PAGE_SIZE",
    "REFCACHE_PREVIEW_STRATEGY",
    "REFCACHE_MAX_ARGUMENT_BYTES",
    "REFCACHE_MAX_TASKS_PER_OWNER",
    // Read by `refcache_backends::redis::RedisServer` (the redis-server binary for tests and demos), not here.
    "REFCACHE_REDIS_SERVER",
];

fn parse_num<T: std::str::FromStr>(
    key: &str,
    value: &str,
    expected: &str,
) -> Result<T, ConfigError> {
    value.trim().parse().map_err(|_| ConfigError::InvalidValue {
        key: key.to_owned(),
        value: value.to_owned(),
        expected: expected.to_owned(),
    })
}

impl RefCacheConfig {
    /// Defaults, then the file named by `REFCACHE_CONFIG`, then `REFCACHE_*` variables, validated.
    pub fn load() -> Result<Self, ConfigError> {
        Self::load_from_vars(std::env::vars())
    }

    /// [`load`](Self::load), with the environment given as name/value pairs (for tests and embedding).
    pub fn load_from_vars<I, K, V>(vars: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let vars: Vec<(String, String)> = vars
            .into_iter()
            .map(|(k, v)| (k.as_ref().to_owned(), v.as_ref().to_owned()))
            .collect();
        let get = |name: &str| {
            vars.iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let mut config = match get("REFCACHE_CONFIG") {
            Some(path) => Self::from_toml_file(path)?,
            None => Self::default(),
        };
        for (name, value) in &vars {
            if !name.starts_with("REFCACHE_") {
                continue;
            }
            let key = name.as_str();
            match key {
                "REFCACHE_CONFIG" | "REFCACHE_REDIS_SERVER" => {}
                "REFCACHE_NAME" => config.name = value.clone(),
                "REFCACHE_BACKEND" => config.backend = value.clone(),
                "REFCACHE_DEFAULT_TTL" => {
                    config.default_ttl = parse_num(key, value, "a whole number of seconds")?
                }
                "REFCACHE_TASK_TTL" => {
                    config.task_ttl = parse_num(key, value, "a whole number of seconds")?
                }
                "REFCACHE_MAX_WORKERS" => {
                    config.max_workers = parse_num(key, value, "a positive whole number")?
                }
                "REFCACHE_MAX_QUEUED" => {
                    config.max_queued = parse_num(key, value, "a whole number")?
                }
                "REFCACHE_MAX_ARGUMENT_BYTES" => {
                    config.max_argument_bytes =
                        parse_num(key, value, "a positive whole number of bytes")?;
                }
                "REFCACHE_MAX_TASKS_PER_OWNER" => {
                    config.max_tasks_per_owner =
                        Some(parse_num(key, value, "a positive whole number")?);
                }
                "REFCACHE_MAX_TASK_RECORDS" => {
                    config.max_task_records = parse_num(key, value, "a positive whole number")?;
                }
                "REFCACHE_MAX_RECORD_BYTES" => {
                    config.max_record_bytes =
                        parse_num(key, value, "a positive whole number of bytes")?;
                }
                "REFCACHE_MAX_CAPACITY_BYTES" => {
                    config.max_capacity_bytes =
                        parse_num(key, value, "a positive whole number of bytes")?;
                }
                "REFCACHE_CANCEL_GRACE" => {
                    config.cancel_grace = parse_num(key, value, "a number of seconds")?
                }
                "REFCACHE_DEFAULT_EXECUTION_TIMEOUT" => {
                    config.default_execution_timeout =
                        Some(parse_num(key, value, "a positive number of seconds")?);
                }
                "REFCACHE_SIZE_MEASURE" => config.size_measure = value.trim().to_owned(),
                "REFCACHE_TOKEN_ENCODING" => {
                    config.token_encoding = match value.trim() {
                        "cl100k_base" => TokenEncoding::Cl100kBase,
                        "o200k_base" => TokenEncoding::O200kBase,
                        _ => {
                            return Err(ConfigError::InvalidValue {
                                key: key.to_owned(),
                                value: value.clone(),
                                expected: "`cl100k_base` or `o200k_base`".into(),
                            });
                        }
                    }
                }
                "REFCACHE_MAX_SIZE" => {
                    config.max_size = parse_num(key, value, "a positive whole number")?
                }
                "REFCACHE_PAGE_SIZE" => {
                    config.page_size = parse_num(key, value, "a positive whole number")?
                }
                "REFCACHE_PREVIEW_STRATEGY" => {
                    config.preview_strategy =
                        value
                            .trim()
                            .parse()
                            .map_err(|_| ConfigError::InvalidValue {
                                key: key.to_owned(),
                                value: value.clone(),
                                expected: "`sample`, `paginate` or `truncate`".into(),
                            })?;
                }
                _ => {
                    return Err(ConfigError::UnknownVariable {
                        name: name.clone(),
                        known: VARS.join(", "),
                    });
                }
            }
        }
        config.validate()?;
        Ok(config)
    }

    /// Reads a TOML file (flat keys, as in the table above). Not validated; [`load`](Self::load) validates.
    pub fn from_toml_file(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml_str(&text).map_err(|message| ConfigError::Toml {
            path: path.to_owned(),
            message: message.to_string(),
        })
    }

    /// Parses TOML text. Not validated.
    pub fn from_toml_str(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }

    /// Checks every value; the error names the key and the value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, value: String, expected: &str| ConfigError::InvalidValue {
            key: key.to_owned(),
            value,
            expected: expected.to_owned(),
        };
        if !crate::model::ref_id::is_cache_name(&self.name) {
            return Err(invalid(
                "name",
                self.name.clone(),
                "1 to 64 of the characters A-Z a-z 0-9 _ - .",
            ));
        }
        if self.default_ttl == 0 {
            return Err(invalid(
                "default_ttl",
                "0".into(),
                "a positive number of seconds",
            ));
        }
        if self.task_ttl == 0 {
            return Err(invalid(
                "task_ttl",
                "0".into(),
                "a positive number of seconds",
            ));
        }
        if self.max_workers == 0 {
            return Err(invalid(
                "max_workers",
                "0".into(),
                "a positive whole number",
            ));
        }
        if self.max_argument_bytes == 0 {
            return Err(invalid(
                "max_argument_bytes",
                "0".into(),
                "a positive whole number of bytes",
            ));
        }
        if self.max_tasks_per_owner == Some(0) {
            return Err(invalid(
                "max_tasks_per_owner",
                "0".into(),
                "a positive whole number (or no setting, for no cap)",
            ));
        }
        if self.max_task_records == 0 {
            return Err(invalid(
                "max_task_records",
                "0".into(),
                "a positive whole number",
            ));
        }
        if self.max_record_bytes == 0 {
            return Err(invalid(
                "max_record_bytes",
                "0".into(),
                "a positive whole number of bytes",
            ));
        }
        if self.max_capacity_bytes == 0 {
            return Err(invalid(
                "max_capacity_bytes",
                "0".into(),
                "a positive whole number of bytes",
            ));
        }
        if let Some(t) = self.default_execution_timeout
            && !(t.is_finite() && t > 0.0)
        {
            return Err(invalid(
                "default_execution_timeout",
                t.to_string(),
                "a positive number of seconds",
            ));
        }
        self.previewer()?;
        if !(self.cancel_grace.is_finite() && self.cancel_grace >= 0.0) {
            return Err(invalid(
                "cancel_grace",
                self.cancel_grace.to_string(),
                "a non-negative number of seconds",
            ));
        }
        Ok(())
    }

    /// The preview settings: `size_measure`, `token_encoding`, `max_size`, `page_size` and `preview_strategy`.
    pub fn previewer(&self) -> Result<Previewer, ConfigError> {
        let invalid = |key: &str, value: String, expected: &str| ConfigError::InvalidValue {
            key: key.to_owned(),
            value,
            expected: expected.to_owned(),
        };
        let measure = match self.size_measure.as_str() {
            #[cfg(feature = "tokens")]
            "tokens" => SizeMeasure::Tokens(self.token_encoding),
            #[cfg(not(feature = "tokens"))]
            "tokens" => return Err(ConfigError::TokensNotCompiled),
            "characters" => SizeMeasure::Characters,
            other => {
                return Err(invalid(
                    "size_measure",
                    other.to_owned(),
                    "`tokens` or `characters`",
                ));
            }
        };
        if self.max_size == 0 {
            return Err(invalid("max_size", "0".into(), "a positive whole number"));
        }
        if self.page_size == 0 {
            return Err(invalid("page_size", "0".into(), "a positive whole number"));
        }
        Ok(Previewer::new(measure, self.max_size)
            .page_size(self.page_size)
            .strategy(self.preview_strategy))
    }

    /// The in-process backend's settings.
    pub fn memory_backend(&self) -> MemoryBackendConfig {
        MemoryBackendConfig {
            max_workers: self.max_workers,
            max_queued: self.max_queued,
            default_ttl: Duration::from_secs(self.default_ttl),
            task_ttl: Duration::from_secs(self.task_ttl),
            max_task_records: self.max_task_records,
            max_record_bytes: self.max_record_bytes,
            max_capacity_bytes: self.max_capacity_bytes,
            cancel_grace: Duration::from_secs_f64(self.cancel_grace),
            default_execution_timeout: self.default_execution_timeout.map(Duration::from_secs_f64),
        }
    }
}

/// Only the edge knows the backends, so the constructor that picks one from settings lives here.
impl RefCache {
    /// A cache built from settings: the backend named by `config.backend`, with its limits.
    pub fn from_config(config: &RefCacheConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let backend = build_backend(config)?;
        Self::builder()
            .name(&config.name)
            .default_ttl(Duration::from_secs(config.default_ttl))
            .previewer(config.previewer()?)
            .max_argument_bytes(config.max_argument_bytes)
            .max_tasks_per_owner(config.max_tasks_per_owner)
            .backend(backend)
    }
}

/// How a remote backend plugs into [`RefCache::from_config`](crate::RefCache::from_config): a backend crate
/// registers a factory for its URL scheme at link time, so switching backends changes no code.
#[derive(Debug)]
pub struct BackendFactory {
    scheme: &'static str,
    build: fn(
        &RefCacheConfig,
    )
        -> Result<std::sync::Arc<dyn crate::contract::backend::TaskBackend>, ConfigError>,
}

impl BackendFactory {
    /// A factory for URLs starting with `scheme://`.
    pub const fn new(
        scheme: &'static str,
        build: fn(
            &RefCacheConfig,
        )
            -> Result<std::sync::Arc<dyn crate::contract::backend::TaskBackend>, ConfigError>,
    ) -> Self {
        Self { scheme, build }
    }
}

inventory::collect!(BackendFactory);

/// Known URL schemes and the facade feature that provides each.
const KNOWN_SCHEMES: &[(&str, &str)] = &[
    ("redis", "redis"),
    ("rediss", "redis"),
    ("postgres", "postgres"),
    ("postgresql", "postgres"),
];

pub(crate) fn build_backend(
    config: &RefCacheConfig,
) -> Result<std::sync::Arc<dyn crate::contract::backend::TaskBackend>, ConfigError> {
    let backend = config.backend.trim();
    if backend.eq_ignore_ascii_case("memory") {
        return Ok(std::sync::Arc::new(
            crate::memory::backend::MemoryTaskBackend::new(config.memory_backend()),
        ));
    }
    let Some((scheme, _)) = backend.split_once("://") else {
        return Err(ConfigError::InvalidValue {
            key: "backend".into(),
            value: redact_url(backend),
            expected: "`memory` or a URL such as `redis://127.0.0.1:6379/0`".into(),
        });
    };
    if let Some(factory) = inventory::iter::<BackendFactory>
        .into_iter()
        .find(|f| f.scheme == scheme)
    {
        return (factory.build)(config);
    }
    match KNOWN_SCHEMES.iter().find(|(s, _)| *s == scheme) {
        Some((_, feature)) => Err(ConfigError::BackendNotCompiled {
            backend: redact_url(backend),
            feature: (*feature).into(),
        }),
        None => Err(ConfigError::InvalidValue {
            key: "backend".into(),
            value: redact_url(backend),
            expected:
                "`memory` or a URL with a supported scheme (redis://, rediss://, postgres://, postgresql://)"
                    .into(),
        }),
    }
}

/// `Debug` without the backend URL's password: configs end up in logs.
impl std::fmt::Debug for RefCacheConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self {
            name,
            backend,
            default_ttl,
            task_ttl,
            max_workers,
            max_queued,
            max_task_records,
            max_record_bytes,
            max_capacity_bytes,
            cancel_grace,
            default_execution_timeout,
            size_measure,
            token_encoding,
            max_size,
            page_size,
            preview_strategy,
            max_argument_bytes,
            max_tasks_per_owner,
        } = self;
        f.debug_struct("RefCacheConfig")
            .field("name", name)
            .field("backend", &redact_url(backend))
            .field("default_ttl", default_ttl)
            .field("task_ttl", task_ttl)
            .field("max_workers", max_workers)
            .field("max_queued", max_queued)
            .field("max_task_records", max_task_records)
            .field("max_record_bytes", max_record_bytes)
            .field("max_capacity_bytes", max_capacity_bytes)
            .field("cancel_grace", cancel_grace)
            .field("default_execution_timeout", default_execution_timeout)
            .field("size_measure", size_measure)
            .field("token_encoding", token_encoding)
            .field("max_size", max_size)
            .field("page_size", page_size)
            .field("preview_strategy", preview_strategy)
            .field("max_argument_bytes", max_argument_bytes)
            .field("max_tasks_per_owner", max_tasks_per_owner)
            .finish()
    }
}

/// A backend URL with the password of its user info replaced by `***` (`redis://app:***@host:6379/0`), for errors
/// and logs. Errors reach MCP clients, so every error that names a backend URL names it through this. Anything
/// that is not a URL with user info comes back unchanged.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    // The user info ends at the last `@` before the query: a password may hold an unencoded `/`, `@` or `#`.
    let query = rest.find('?').unwrap_or(rest.len());
    let Some(at) = rest[..query].rfind('@') else {
        return url.to_owned();
    };
    let host = &rest[at + 1..];
    match rest[..at].split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        // `redis://secret@host` is read as a user name by some clients and a password by others: hide it.
        None => format!("{scheme}://***@{host}"),
    }
}

#[cfg(test)]
mod redact_tests {
    use super::*;

    #[test]
    fn passwords_never_reach_errors_or_logs() {
        for (url, shown) in [
            ("memory", "memory"),
            ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
            ("redis://:s3cret@h:6379/0", "redis://:***@h:6379/0"),
            (
                "redis://app:s3cret@h:6379/0?mode=workers",
                "redis://app:***@h:6379/0?mode=workers",
            ),
            ("rediss://app:p@ss@h/0", "rediss://app:***@h/0"),
            ("redis://app:pa/ss#x@h/0", "redis://app:***@h/0"),
            ("redis://token@h/0", "redis://***@h/0"),
            ("redis://h/0?key_prefix=a@b", "redis://h/0?key_prefix=a@b"),
            ("redis://@h/0", "redis://***@h/0"),
            ("redis://ü:ß@h/0", "redis://ü:***@h/0"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }

    #[test]
    fn config_errors_and_debug_hide_the_password() {
        let mut config = RefCacheConfig {
            backend: "nats://app:s3cret@h:4222".into(),
            ..RefCacheConfig::default()
        };
        let err = build_backend(&config).err().expect("nats is not a backend");
        assert!(!err.to_string().contains("s3cret"), "{err}");
        config.backend = "redis://app:s3cret@h:6379/0".into();
        assert!(!format!("{config:?}").contains("s3cret"));
        // Without the redis feature compiled in, this is BackendNotCompiled; with it, the backend is built.
        if let Err(err) = build_backend(&config) {
            assert!(!err.to_string().contains("s3cret"), "{err}");
        }
    }
}

/// `size_measure` with and without the `tokens` feature: tokens by default with it; without it, characters by
/// default and `tokens` refused by name (from a variable, a file, or a config set in code), never read as characters.
/// `cargo test -p refcache-core --lib` runs the side without the feature (the core's default features leave it off),
/// `--all-features` the side with it.
#[cfg(test)]
mod size_measure_tests {
    use super::*;

    fn from_var(value: &str) -> Result<Previewer, ConfigError> {
        RefCacheConfig::load_from_vars([("REFCACHE_SIZE_MEASURE", value)])?.previewer()
    }

    fn from_file(value: &str) -> Result<Previewer, ConfigError> {
        RefCacheConfig::from_toml_str(&format!("size_measure = \"{value}\"\n"))
            .expect("a valid file")
            .previewer()
    }

    #[test]
    fn characters_are_always_available() {
        for previewer in [from_var("characters"), from_file("characters")] {
            assert_eq!(previewer.unwrap().measure, SizeMeasure::Characters);
        }
    }

    #[cfg(feature = "tokens")]
    #[test]
    fn with_the_feature_tokens_are_the_default() {
        let config = RefCacheConfig::default();
        assert_eq!(config.size_measure, "tokens");
        let tokens = SizeMeasure::Tokens(TokenEncoding::Cl100kBase);
        assert_eq!(config.previewer().unwrap().measure, tokens);
        for previewer in [from_var("tokens"), from_file("tokens")] {
            assert_eq!(previewer.unwrap().measure, tokens);
        }
        let o200k = RefCacheConfig::load_from_vars([
            ("REFCACHE_SIZE_MEASURE", "tokens"),
            ("REFCACHE_TOKEN_ENCODING", "o200k_base"),
        ])
        .unwrap();
        assert_eq!(
            o200k.previewer().unwrap().measure,
            SizeMeasure::Tokens(TokenEncoding::O200kBase)
        );
    }

    #[cfg(not(feature = "tokens"))]
    #[test]
    fn without_the_feature_characters_are_the_default_and_tokens_are_refused() {
        let config = RefCacheConfig::default();
        assert_eq!(config.size_measure, "characters");
        assert_eq!(config.previewer().unwrap().measure, SizeMeasure::Characters);
        let in_code = RefCacheConfig {
            size_measure: "tokens".into(),
            ..RefCacheConfig::default()
        };
        for err in [
            from_var("tokens").unwrap_err(),
            from_file("tokens").unwrap_err(),
            in_code.validate().unwrap_err(),
            RefCache::from_config(&in_code).expect_err("tokens refused"),
        ] {
            assert!(matches!(err, ConfigError::TokensNotCompiled), "{err:?}");
            let message = err.to_string();
            assert!(
                message.contains("enable the `tokens` feature of the `refcache` crate"),
                "{message}"
            );
            assert!(
                message.contains("REFCACHE_SIZE_MEASURE=characters"),
                "{message}"
            );
        }
    }
}
