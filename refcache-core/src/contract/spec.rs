//! What runs and how: [`TaskSpec`] (the serializable half of a submission, all a remote worker needs) and its
//! [`TaskOptions`].

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::access::AccessPolicy;
use crate::model::actor::Actor;
use crate::model::key::CacheKey;
use crate::model::preview::PreviewStrategy;
use crate::model::ref_id::RefId;

/// What runs and what it is called: the serializable half of a submission.
///
/// A remote worker needs nothing more than this to run the task: it finds the function by `task_name` in the
/// registry of `#[cached]` functions and calls it with `args`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TaskSpec {
    /// Where the result lands.
    pub ref_id: RefId,
    /// The identity of the call, for single-flight and hits.
    pub key: CacheKey,
    /// The task's stable name (the `name` attribute argument).
    pub task_name: Arc<str>,
    /// The namespace its value belongs to.
    pub namespace: Arc<str>,
    /// The arguments, as a JSON object of parameter name to value.
    pub args: Value,
    /// How it runs.
    pub options: TaskOptions,
    /// Who may do what with its reference and value.
    #[serde(default = "AccessPolicy::shared_default")]
    pub policy: Arc<AccessPolicy>,
    /// The actor whose call started it (`None`: an anonymous user). The work runs as this actor, so that what it
    /// reads through the cache (references it resolves itself, nested calls) is what its caller may read.
    #[serde(default)]
    pub actor: Option<Actor>,
    /// When the call submitted it (wall clock, so that a worker on another machine can tell how long it waited).
    /// `None` in specs stored by an older version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submitted_at: Option<crate::model::task::Timestamp>,
}

impl TaskSpec {
    /// A spec with default options.
    pub fn new(
        ref_id: RefId,
        key: CacheKey,
        task_name: impl Into<Arc<str>>,
        namespace: impl Into<Arc<str>>,
        args: Value,
    ) -> Self {
        Self {
            ref_id,
            key,
            task_name: task_name.into(),
            namespace: namespace.into(),
            args,
            options: TaskOptions::default(),
            policy: AccessPolicy::shared_default(),
            actor: None,
            submitted_at: Some(crate::model::task::Timestamp::now()),
        }
    }

    /// The same spec, run as `actor`.
    pub fn with_actor(mut self, actor: Option<Actor>) -> Self {
        self.actor = actor;
        self
    }

    /// The same spec under another access policy.
    pub fn with_policy(mut self, policy: Arc<AccessPolicy>) -> Self {
        self.policy = policy;
        self
    }

    /// The same spec with other options.
    pub fn with_options(mut self, options: TaskOptions) -> Self {
        self.options = options;
        self
    }
}

/// How a task runs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TaskOptions {
    /// How long the finished value stays cached. `None`: the backend's default.
    #[serde(with = "opt_secs", default)]
    pub ttl: Option<Duration>,
    /// Higher starts first; FIFO within one priority.
    #[serde(default)]
    pub priority: i32,
    /// The session the task belongs to.
    #[serde(default)]
    pub session_id: Option<String>,
    /// Retries after a failed attempt (0: none). Only errors marked retryable are retried.
    #[serde(default)]
    pub max_retries: u32,
    /// The first retry's delay; attempt `n` waits `retry_backoff * 2^(n-1)`, with jitter, capped by
    /// `retry_backoff_max`. `None`: 1 s.
    #[serde(with = "opt_secs", default)]
    pub retry_backoff: Option<Duration>,
    /// The cap on a retry's delay. `None`: 60 s.
    #[serde(with = "opt_secs", default)]
    pub retry_backoff_max: Option<Duration>,
    /// The hard limit on the whole execution, retries included. `None`: the backend's default, if any.
    #[serde(with = "opt_secs", default)]
    pub execution_timeout: Option<Duration>,
    /// At most this many executions of this task name at a time. `None`: only `max_workers` limits it.
    #[serde(default)]
    pub max_concurrent: Option<u32>,
    /// The largest value answered whole (the function's `max_size`). `None`: the cache's default.
    #[serde(default)]
    pub max_size: Option<usize>,
    /// How a larger value is previewed (the function's `preview`). `None`: the cache's default.
    #[serde(default)]
    pub preview_strategy: Option<PreviewStrategy>,
    /// The byte cap of the task's output log (the function's `output_limit`). `None`: the cache's default, else
    /// [`DEFAULT_OUTPUT_LIMIT`](crate::DEFAULT_OUTPUT_LIMIT).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_limit: Option<usize>,
}

/// The first retry's delay when the task sets none.
pub const DEFAULT_RETRY_BACKOFF: Duration = Duration::from_secs(1);
/// The cap on a retry's delay when the task sets none.
pub const DEFAULT_RETRY_BACKOFF_MAX: Duration = Duration::from_secs(60);

impl TaskOptions {
    /// The delay before retry number `attempt` (1-based): `base * 2^(attempt-1)`, capped, with "equal jitter" (a
    /// uniformly random point in the upper half), so that many failing tasks do not retry in lockstep.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let base = self.retry_backoff.unwrap_or(DEFAULT_RETRY_BACKOFF);
        let cap = self.retry_backoff_max.unwrap_or(DEFAULT_RETRY_BACKOFF_MAX);
        let exp = base
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(30))
            .min(cap);
        exp.mul_f64(0.5 + fastrand::f64() * 0.5)
    }

    /// Sets the retries.
    pub fn max_retries(mut self, max_retries: u32) -> Self {
        self.max_retries = max_retries;
        self
    }

    /// Sets the retry backoff base and cap.
    pub fn retry_backoff(mut self, base: Option<Duration>, max: Option<Duration>) -> Self {
        self.retry_backoff = base;
        self.retry_backoff_max = max;
        self
    }

    /// Sets the execution timeout.
    pub fn execution_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.execution_timeout = timeout;
        self
    }

    /// Sets the per-task concurrency limit.
    pub fn max_concurrent(mut self, max: Option<u32>) -> Self {
        self.max_concurrent = max;
        self
    }

    /// Sets the preview settings: the largest value answered whole, and how a larger one is previewed.
    pub fn preview(mut self, max_size: Option<usize>, strategy: Option<PreviewStrategy>) -> Self {
        self.max_size = max_size;
        self.preview_strategy = strategy;
        self
    }

    /// Sets the byte cap of the task's output log.
    pub fn output_limit(mut self, bytes: Option<usize>) -> Self {
        self.output_limit = bytes;
        self
    }

    /// The byte cap of the task's output log: the function's, else [`DEFAULT_OUTPUT_LIMIT`](crate::DEFAULT_OUTPUT_LIMIT).
    pub fn output_cap(&self) -> usize {
        self.output_limit
            .unwrap_or(crate::model::output::DEFAULT_OUTPUT_LIMIT)
    }

    /// Sets the value's time to live.
    pub fn ttl(mut self, ttl: Option<Duration>) -> Self {
        self.ttl = ttl;
        self
    }

    /// Sets the priority.
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    /// Sets the session.
    pub fn session_id(mut self, session_id: Option<String>) -> Self {
        self.session_id = session_id;
        self
    }
}

mod opt_secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        value: &Option<Duration>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(d) => s.serialize_some(&d.as_secs_f64()),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        let secs = Option::<f64>::deserialize(d)?;
        secs.map(|s| Duration::try_from_secs_f64(s).map_err(serde::de::Error::custom))
            .transpose()
    }
}
