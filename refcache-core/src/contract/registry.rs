//! The tasks this process knows: each `#[cached]` function's metadata, and the link-time registry that lets a
//! worker run a task by name.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::Value;

use crate::contract::context::{LocalJob, TaskContext};
use crate::contract::spec::TaskOptions;
use crate::model::access::{AccessPolicy, Permissions, PolicyError};
use crate::model::format::AsyncResponseFormat;
use crate::model::json_text::JsonText;
use crate::model::key::KeyPrefix;
use crate::model::namespace::{NamespaceError, NamespaceTemplate};
use crate::model::schema::ExpectedSchema;
use crate::model::task::TaskError;

/// What the `#[cached]` attribute says about one function. Built once per function, on its first call.
#[derive(Debug)]
pub struct TaskMeta {
    name: Arc<str>,
    namespace: Arc<str>,
    key_prefix: KeyPrefix,
    options: TaskOptions,
    async_timeout: Option<Duration>,
    format: AsyncResponseFormat,
    return_type: &'static str,
    description: Option<&'static str>,
    schema: fn() -> Option<Value>,
    expected: OnceLock<Arc<ExpectedSchema>>,
    /// The namespace, when it has `{variable}` placeholders to fill per call.
    template: Result<Option<NamespaceTemplate>, NamespaceError>,
    policy: Result<Arc<AccessPolicy>, PolicyError>,
    resolve_refs: bool,
    /// Its own limit on a call's arguments, in bytes (`None`: the cache's).
    max_argument_bytes: Option<usize>,
    /// What an anonymous user outside any session may do with its references, computed once.
    anonymous: OnceLock<Permissions>,
}

impl TaskMeta {
    #[doc(hidden)]
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: String,
        namespace: &'static str,
        options: TaskOptions,
        async_timeout: Option<Duration>,
        format: AsyncResponseFormat,
        return_type: &'static str,
        description: Option<&'static str>,
        schema: fn() -> Option<Value>,
    ) -> Self {
        let key_prefix = KeyPrefix::new(&name, namespace);
        // `#[cached]` has validated the namespace at compile time; a hand-built meta with a bad one fails each call.
        let template =
            NamespaceTemplate::parse(namespace).map(|t| if t.is_fixed() { None } else { Some(t) });
        Self {
            name: name.into(),
            namespace: namespace.into(),
            key_prefix,
            options,
            async_timeout,
            format,
            return_type,
            description,
            schema,
            expected: OnceLock::new(),
            template,
            policy: Ok(AccessPolicy::shared_default()),
            resolve_refs: true,
            max_argument_bytes: None,
            anonymous: OnceLock::new(),
        }
    }

    /// The same meta under `policy` (validated; an invalid policy fails every call with its error).
    pub fn with_policy(mut self, policy: AccessPolicy) -> Self {
        self.policy = policy.validate().map(|()| Arc::new(policy));
        self
    }

    /// The same meta with reference inputs resolved (`true`, the default) or passed as they are.
    pub fn with_resolve_refs(mut self, resolve: bool) -> Self {
        self.resolve_refs = resolve;
        self
    }

    /// The same meta with its own limit on a call's arguments, in bytes (`None`: the cache's).
    pub fn with_max_argument_bytes(mut self, limit: Option<usize>) -> Self {
        self.max_argument_bytes = limit;
        self
    }

    /// Its own limit on a call's arguments, in bytes (`None`: the cache's,
    /// [`RefCache::max_argument_bytes`](crate::RefCache::max_argument_bytes)).
    pub fn max_argument_bytes(&self) -> Option<usize> {
        self.max_argument_bytes
    }

    /// The namespace template, when the namespace has placeholders (an error for an invalid namespace).
    pub fn namespace_template(&self) -> Result<Option<&NamespaceTemplate>, &NamespaceError> {
        self.template.as_ref().map(Option::as_ref)
    }

    /// The access policy of its references.
    pub fn policy(&self) -> Result<&Arc<AccessPolicy>, &PolicyError> {
        self.policy.as_ref()
    }

    /// What an anonymous user outside any session may do with the references of a fixed namespace (nothing when
    /// the policy is invalid; calls fail on that first).
    pub fn anonymous_access(&self) -> Permissions {
        *self.anonymous.get_or_init(|| match &self.policy {
            Ok(policy) => policy.permissions_for(
                &crate::model::actor::Actor::anonymous_user(),
                &self.namespace,
                None,
            ),
            Err(_) => Permissions::empty(),
        })
    }

    /// Whether string arguments in the ref id form are replaced by the referenced values before the call.
    pub fn resolve_refs(&self) -> bool {
        self.resolve_refs
    }

    /// The task's stable name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace its values belong to.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The name, shared.
    pub fn name_arc(&self) -> &Arc<str> {
        &self.name
    }

    /// The namespace, shared.
    pub fn namespace_arc(&self) -> &Arc<str> {
        &self.namespace
    }

    /// The hash key of this task's cache keys.
    pub fn key_prefix(&self) -> KeyPrefix {
        self.key_prefix
    }

    /// The value TTL it sets (`None`: the cache's default).
    pub fn ttl(&self) -> Option<Duration> {
        self.options.ttl
    }

    /// The options its tasks run with (retries, timeouts, concurrency, priority).
    pub fn options(&self) -> &TaskOptions {
        &self.options
    }

    /// How long a caller waits before getting a reference (`None`: until done).
    pub fn async_timeout(&self) -> Option<Duration> {
        self.async_timeout
    }

    /// The default response format.
    pub fn format(&self) -> AsyncResponseFormat {
        self.format
    }

    /// The expected schema of the success value (computed once).
    pub fn expected_schema(&self) -> Arc<ExpectedSchema> {
        self.expected
            .get_or_init(|| {
                Arc::new(ExpectedSchema {
                    return_type: self.return_type.to_owned(),
                    schema: (self.schema)(),
                    description: self.description.map(str::to_owned),
                })
            })
            .clone()
    }
}

/// Task metadata by name, for answering full-format polls with the expected schema.
fn metas() -> &'static Mutex<HashMap<String, &'static TaskMeta>> {
    static METAS: OnceLock<Mutex<HashMap<String, &'static TaskMeta>>> = OnceLock::new();
    METAS.get_or_init(Default::default)
}

/// Records `meta` under its name (the macro does this on a function's first call).
#[doc(hidden)]
pub fn remember(meta: &'static TaskMeta) -> &'static TaskMeta {
    metas()
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(meta.name.to_string(), meta);
    meta
}

/// The metadata of a task this process has called, by name.
pub fn meta(name: &str) -> Option<&'static TaskMeta> {
    metas()
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(name)
        .copied()
}

/// The signature of a registered task: JSON arguments in, the value's JSON text out.
pub type TaskFn = fn(Value, TaskContext) -> BoxFuture<'static, Result<JsonText, TaskError>>;

/// A task registered at link time, so that a worker process that links the crate can run it by name.
///
/// The `#[cached]` attribute registers every free function whose parameters are all part of the key (plus an
/// optional [`TaskContext`]). Methods and functions with skipped parameters need state that only the calling
/// process has, and run in-process only.
#[derive(Debug)]
pub struct TaskRegistration {
    name: fn() -> &'static str,
    run: TaskFn,
}

impl TaskRegistration {
    #[doc(hidden)]
    pub const fn new(name: fn() -> &'static str, run: TaskFn) -> Self {
        Self { name, run }
    }

    /// The task's name.
    pub fn name(&self) -> &'static str {
        (self.name)()
    }

    /// The task as a job.
    pub fn job(&self) -> LocalJob {
        Arc::new(self.run)
    }
}

inventory::collect!(TaskRegistration);

/// The registered task called `name`, if this binary links one.
pub fn find(name: &str) -> Option<&'static TaskRegistration> {
    inventory::iter::<TaskRegistration>
        .into_iter()
        .find(|t| t.name() == name)
}

/// The names of all registered tasks.
pub fn names() -> Vec<&'static str> {
    inventory::iter::<TaskRegistration>
        .into_iter()
        .map(TaskRegistration::name)
        .collect()
}
