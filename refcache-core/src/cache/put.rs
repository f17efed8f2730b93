//! Storing a value without a function: [`RefCache::put`] and [`RefCache::put_with_ttl`], what mcp-refcache's
//! `cache.set` does.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use crate::cache::RefCache;
use crate::cache::call::CallScope;
use crate::cache::poll::respond_pending;
use crate::cache::response::CachedResponse;
use crate::contract::backend::{Submission, Submitted};
use crate::contract::context::LocalJob;
use crate::contract::registry::TaskMeta;
use crate::contract::spec::{TaskOptions, TaskSpec};
use crate::model::error::RefCacheError;
use crate::model::format::AsyncResponseFormat;
use crate::model::json_text::JsonText;
use crate::model::key::KeyBuilder;
use crate::model::ref_id::RefId;

/// The task name a stored value's record carries (`list_tasks`, stats and metrics show it).
pub const PUT_TASK_NAME: &str = "refcache::put";

fn put_meta() -> &'static TaskMeta {
    static META: OnceLock<TaskMeta> = OnceLock::new();
    META.get_or_init(|| {
        TaskMeta::new(
            PUT_TASK_NAME.to_owned(),
            "public",
            TaskOptions::default(),
            None,
            AsyncResponseFormat::default(),
            "serde_json::Value",
            Some("A value stored with RefCache::put."),
            || None,
        )
        // The value is stored as given: a ref id inside it stays a string.
        .with_resolve_refs(false)
    })
}

impl RefCache {
    /// Stores `value` and answers its reference, without a `#[cached]` function (mcp-refcache's `cache.set`).
    ///
    /// The value stays for the cache's `default_ttl`. It is keyed by its canonical JSON, in the caller's session
    /// (as for every call), so putting an equal value again is a hit on the same reference, which keeps the TTL it
    /// was stored with. The reference polls, pages, previews and resolves as a tool argument like any other; its
    /// task is named [`PUT_TASK_NAME`] and has the `public` policy in the `public` namespace.
    ///
    /// Fails with [`RefCacheError::ArgumentsTooLarge`] when the value's JSON is over the cache's
    /// `max_argument_bytes`, and with the backend's errors (a full queue, a backend that is down).
    pub async fn put<T: Serialize + ?Sized>(
        &self,
        value: &T,
    ) -> Result<CachedResponse, RefCacheError> {
        self.put_inner(value, self.inner.default_ttl).await
    }

    /// [`put`](Self::put), with the value kept for `ttl` instead of the cache's `default_ttl`. A zero `ttl` is
    /// refused with [`RefCacheError::InvalidOption`].
    pub async fn put_with_ttl<T: Serialize + ?Sized>(
        &self,
        value: &T,
        ttl: Duration,
    ) -> Result<CachedResponse, RefCacheError> {
        if ttl.is_zero() {
            return Err(RefCacheError::InvalidOption {
                option: "ttl",
                value: "0".into(),
                expected: "a positive duration, such as Duration::from_secs(600)",
            });
        }
        self.put_inner(value, ttl).await
    }

    async fn put_inner<T: Serialize + ?Sized>(
        &self,
        value: &T,
        ttl: Duration,
    ) -> Result<CachedResponse, RefCacheError> {
        let meta = put_meta();
        let scope = CallScope::capture(meta)?;
        let key = {
            let mut kb = KeyBuilder::with_prefix(meta.name(), scope.key_prefix(meta))
                .limit(self.max_argument_bytes());
            kb.arg("value", value)?;
            kb.finish()
        };
        let backend = &self.inner.backend;
        if let Some(stored) = backend.lookup(&key).await? {
            return Ok(self.show_put(stored));
        }
        let json = serde_json::to_value(value).map_err(|e| RefCacheError::Argument {
            task: PUT_TASK_NAME.to_owned(),
            name: "value".to_owned(),
            message: e.to_string(),
        })?;
        let args = serde_json::json!({ "value": json });
        let job: LocalJob = Arc::new(|mut args: Value, _ctx| {
            Box::pin(async move {
                let value = args.get_mut("value").map_or(Value::Null, Value::take);
                Ok(JsonText::from(value))
            })
        });
        let options = TaskOptions::default()
            .ttl(Some(ttl))
            .session_id(scope.session().map(|s| s.id().to_owned()));
        let namespace = scope
            .namespace()
            .map_or_else(|| meta.namespace_arc().clone(), Arc::from);
        let spec = TaskSpec::new(
            RefId::generate(self.name()),
            key,
            meta.name_arc().clone(),
            namespace,
            args,
        )
        .with_options(options)
        .with_policy(meta.policy().map_err(Clone::clone)?.clone())
        .with_actor(scope.caller.as_ref().map(|c| c.actor.clone()));
        let ref_id = match backend.submit(Submission::new(spec, Some(job))).await? {
            Submitted::Hit(stored) => return Ok(self.show_put(stored)),
            submitted => submitted.ref_id().clone(),
        };
        let snapshot = backend
            .wait(&ref_id, None)
            .await?
            .ok_or(RefCacheError::NotFound)?;
        match snapshot.value {
            Some(stored) => Ok(self.show_put(stored)),
            // Only a cancel (a shutdown, `delete`) between the submit and the first instant of the job gets here.
            None => Ok(respond_pending(snapshot.info, scope.format, Some(meta))),
        }
    }

    fn show_put(&self, stored: Arc<crate::contract::store::StoredValue>) -> CachedResponse {
        self.show(stored, crate::cache::poll::View::Auto, None)
    }
}
