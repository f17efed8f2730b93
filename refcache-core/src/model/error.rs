//! The errors of refcache's public API. This file imports nothing above the model: every error a layer above raises
//! is declared here (or beside its own concern in the model), so that the lowest types never depend on the highest.

use std::path::PathBuf;
use std::sync::Arc;

/// The text every unknown, expired or inaccessible reference gets, so that nobody can probe which ids exist.
pub const INACCESSIBLE_REFERENCE: &str = "Invalid or inaccessible reference";

/// What can go wrong when calling a cached function or polling a reference.
///
/// A task that fails is **not** an error here: it is a response with status `failed`. These errors mean the call or
/// poll itself could not be served.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum RefCacheError {
    /// The reference is unknown, expired, or not visible to the caller. The text is deliberately the same in all
    /// three cases.
    #[error("Invalid or inaccessible reference")]
    NotFound,
    /// The text is not a ref id at all.
    #[error(
        "malformed ref_id `{ref_id}`: expected `<cache-name>:<32 lowercase hex digits>`, \
         such as `refcache:0f8e2c1d9a7b4c3e8f6a5b4c3d2e1f0a`"
    )]
    MalformedRefId {
        /// The offending text (cut to 100 characters).
        ref_id: String,
    },
    /// An argument could not be turned into JSON for the key.
    #[error("argument `{name}` of `{task}` cannot be serialized to JSON: {message}")]
    Argument {
        /// The task.
        task: String,
        /// The parameter.
        name: String,
        /// What serde said.
        message: String,
    },
    /// A call's arguments are larger than the limit: refused at once, while the key is built, before any work.
    #[error(
        "the arguments of `{task}` are more than {limit} bytes of JSON, the limit for one call: pass a large input \
         as a ref id (a reference input) instead of its value, or raise `max_argument_bytes` (on the function, or \
         on the cache)"
    )]
    ArgumentsTooLarge {
        /// The task.
        task: String,
        /// The limit, in bytes of canonical JSON.
        limit: usize,
    },
    /// The calling owner already has `limit` tasks in flight (`max_tasks_per_owner`): refused before it is
    /// submitted.
    #[error(
        "too many tasks: {owner} already has {limit} tasks in flight, the cap per owner (`max_tasks_per_owner`); \
         wait for one to finish (poll its ref id) or cancel one, then call again"
    )]
    TooManyTasks {
        /// The owner (the calling actor), cut to a short prefix.
        owner: String,
        /// The cap.
        limit: usize,
    },
    /// A response format name that is not one of the three.
    #[error("invalid response format `{value}`: expected one of `minimal`, `standard`, `full`")]
    InvalidFormat {
        /// The offending text.
        value: String,
    },
    /// A complete value could not be deserialized into the requested type.
    #[error("the value of {ref_id} does not deserialize into the requested type: {message}")]
    ValueType {
        /// The reference.
        ref_id: String,
        /// What serde said.
        message: String,
    },
    /// Only a failed task can be retried.
    #[error("task {ref_id} is {status}, not failed: only a failed task can be retried")]
    NotRetryable {
        /// The reference.
        ref_id: String,
        /// Its status.
        status: crate::model::task::TaskStatus,
    },
    /// An answer to a task that is not waiting for input.
    #[error(
        "task {ref_id} is {status}, not waiting for input: only an input_required task takes an answer"
    )]
    NotWaiting {
        /// The reference.
        ref_id: String,
        /// Its status.
        status: crate::model::task::TaskStatus,
    },
    /// An answer that does not fit the question's schema; the task keeps waiting.
    #[error("answer to task {ref_id} refused, the task keeps waiting: {error}")]
    InvalidAnswer {
        /// The reference.
        ref_id: String,
        /// The field at fault and why.
        error: crate::model::input::InputAnswerError,
    },
    /// The same call already runs again under another reference.
    #[error("this call is already running again as {ref_id}; poll that reference instead")]
    AlreadyRunning {
        /// The reference of the running execution.
        ref_id: String,
    },
    /// A namespace (or a template filled for this call) is not valid, or the caller lacks a template variable.
    #[error(transparent)]
    Namespace(#[from] crate::model::namespace::NamespaceError),
    /// The function's access policy is not valid.
    #[error(transparent)]
    Policy(#[from] crate::model::access::PolicyError),
    /// An option of `get_cached_result` (or of a call) has a value it cannot take.
    #[error("invalid option `{option}` = {value}: expected {expected}")]
    InvalidOption {
        /// The option.
        option: &'static str,
        /// The offending value.
        value: String,
        /// What it must be.
        expected: &'static str,
    },
    /// An argument is a reference that cannot be resolved to a value.
    #[error(
        "argument `{argument}` is the reference {ref_id}, which cannot be resolved: {reason}{}",
        if reason == INACCESSIBLE_REFERENCE {
            "; pass the value itself, or a reference to a complete value you may read or execute"
        } else {
            ""
        }
    )]
    UnresolvedReference {
        /// Where in the arguments (such as `docs[2].source`).
        argument: String,
        /// The reference.
        ref_id: String,
        /// Why: the text of an unknown and of an inaccessible reference is the same.
        reason: String,
    },
    /// A resolved reference's value does not fit its parameter's type.
    #[error(
        "after resolving references, {message} (in `{task}`): the referenced value does not fit the parameter's \
         type; pass a reference to a value of that type, or declare the function with `resolve_refs = false` to \
         receive ref ids as they are"
    )]
    ResolvedArgument {
        /// The task.
        task: String,
        /// Which argument, and what serde said.
        message: String,
    },
    /// References resolve to each other in a cycle.
    #[error("references form a cycle: {}; break it by passing a value instead of one of them", chain.join(" -> "))]
    ReferenceCycle {
        /// The chain, ending with the reference that closes the cycle.
        chain: Vec<String>,
    },
    /// A call's arguments resolve more references (nested ones included) than allowed.
    #[error("the arguments resolve more than {limit} references; pass fewer, or values instead")]
    TooManyReferences {
        /// The bound.
        limit: usize,
    },
    /// The caller could not see what the call makes: the function's namespace or policy gives it no access.
    #[error(
        "{actor} may not call `{task}`: its results live in namespace `{namespace}` under an access policy that \
         gives {actor} no access; call it as an actor that the namespace and the policy admit"
    )]
    CallDenied {
        /// The task.
        task: String,
        /// The calling actor (`user`, `agent:claude`, ...).
        actor: String,
        /// The namespace of its results.
        namespace: String,
    },
    /// The actor may see the reference but not do this to it.
    #[error("permission denied: to {operation} {ref_id} you need {needed} on it")]
    PermissionDenied {
        /// The reference.
        ref_id: String,
        /// What was attempted (`cancel`, `retry`, `delete`).
        operation: &'static str,
        /// The permission it needs.
        needed: crate::model::access::Permissions,
    },
    /// A call's arguments would grow past the bound through resolved references.
    #[error(
        "the resolved arguments would hold more than {limit} bytes of referenced values; pass fewer or smaller \
         references"
    )]
    ResolvedTooLarge {
        /// The bound, in bytes of JSON.
        limit: usize,
    },
    /// The backend could not serve the request.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] Arc<ConfigError>),
}

impl From<ConfigError> for RefCacheError {
    fn from(err: ConfigError) -> Self {
        Self::Config(Arc::new(err))
    }
}

/// Why a backend could not serve a request.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// The backend's server cannot be reached. Calls and polls fail with this until it returns.
    #[error("task backend unavailable: {0}")]
    Unavailable(String),
    /// The queue is at `max_queued`; the submission was refused rather than grow memory. A backend answers it only
    /// when the submission started nothing (the owner cap relies on it).
    #[error("task queue is full ({max_queued} tasks waiting); retry later or raise `max_queued`")]
    QueueFull {
        /// The configured bound.
        max_queued: usize,
    },
    /// The backend is shutting down and takes no new work. A submission answered this started nothing.
    #[error("task backend is shutting down and accepts no new work")]
    ShuttingDown,
    /// A list cursor that this backend did not hand out.
    #[error(
        "invalid cursor `{0}`: pass back the `next_cursor` of an earlier page unchanged, or no cursor to start over"
    )]
    InvalidCursor(String),
    /// This backend does not offer the capability asked for.
    #[error("the `{backend}` backend does not support {capability}: {hint}")]
    Unsupported {
        /// The backend's name.
        backend: &'static str,
        /// What was asked for, such as `task output`.
        capability: &'static str,
        /// What to do instead.
        hint: &'static str,
    },
    /// No runtime could be started to run the work.
    #[error("could not start the refcache runtime: {0}")]
    Runtime(String),
    /// The data the backend found where its own should be is not refcache's (Redis: a key under the prefix of
    /// another type, `WRONGTYPE`; a task record without its fields). Not an outage: it does not pass by itself.
    #[error(
        "the data under the task backend's key prefix is not refcache's: {0}; give each app its own key prefix \
         (Redis: `key_prefix`), or remove the keys that another program wrote under it"
    )]
    ForeignData(String),
    /// Anything else a backend reports.
    #[error("task backend error: {0}")]
    Other(String),
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A key has a value it cannot take.
    #[error("invalid value `{value}` for `{key}`: expected {expected}")]
    InvalidValue {
        /// The key or environment variable.
        key: String,
        /// The offending value.
        value: String,
        /// What it must be.
        expected: String,
    },
    /// An environment variable with the `REFCACHE_` prefix that refcache does not know.
    #[error("unknown environment variable `{name}`; refcache reads: {known}")]
    UnknownVariable {
        /// The variable.
        name: String,
        /// The known ones.
        known: String,
    },
    /// The TOML file cannot be read.
    #[error("cannot read refcache config file `{path}`: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML file does not parse or has unknown keys or wrong types.
    #[error("invalid refcache config file `{path}`: {message}")]
    Toml {
        /// The file.
        path: PathBuf,
        /// What the parser said (it names the key).
        message: String,
    },
    /// The backend URL names a backend this build does not include.
    #[error(
        "backend `{backend}` is not available in this build: enable the `{feature}` feature of the `refcache` \
         crate, or set REFCACHE_BACKEND=memory"
    )]
    BackendNotCompiled {
        /// The configured backend.
        backend: String,
        /// The feature that provides it.
        feature: String,
    },
    /// `size_measure` is `tokens`, but this build has no token counter (the `tokens` feature is off).
    #[error(
        "size_measure `tokens` is not available in this build: enable the `tokens` feature of the `refcache` crate \
         (one of its default features), or set size_measure = \"characters\" (REFCACHE_SIZE_MEASURE=characters)"
    )]
    TokensNotCompiled,
    /// A backend could not be built from its settings.
    #[error("cannot start backend `{backend}`: {message}")]
    Backend {
        /// The configured backend.
        backend: String,
        /// Why.
        message: String,
    },
}
