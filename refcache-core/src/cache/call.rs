//! The call path, the code behind every `#[cached]` function: [`RefCache::call`] (the hit path, read in the
//! caller's own future), then everything beyond the near cache (reference inputs, the remote lookup, submit, wait),
//! and what a call carries from its call site ([`CallScope`], [`Caller`]).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde_json::Value;

use crate::cache::RefCache;
use crate::cache::call_options::CallOptions;
use crate::cache::poll::{View, respond_pending};
use crate::cache::response::CachedResponse;
use crate::contract::backend::{Submission, Submitted};
use crate::contract::context::LocalJob;
use crate::contract::metrics::{self, Event};
use crate::contract::registry::TaskMeta;
use crate::contract::spec::TaskSpec;
use crate::contract::store::StoredValue;
use crate::model::access::Permissions;
use crate::model::actor::Actor;
use crate::model::error::RefCacheError;
use crate::model::format::AsyncResponseFormat;
use crate::model::key::{CacheKey, KeyBuilder, KeyPrefix};
use crate::model::ref_id::RefId;
use crate::model::session::Session;

impl RefCache {
    /// Runs one cached call: the code behind every `#[cached]` function.
    ///
    /// `prepare` builds the JSON arguments and the job; it runs only on a miss (or first, when the arguments may
    /// hold references to resolve).
    #[doc(hidden)]
    pub async fn call<'p, F>(
        &self,
        meta: &'static TaskMeta,
        key: CacheKey,
        scope: CallScope,
        prepare: F,
    ) -> Result<CachedResponse, RefCacheError>
    where
        F: FnOnce() -> Result<(Value, LocalJob), RefCacheError> + Send + 'p,
    {
        if !scope.access.can_see() {
            return Err(self.call_denied(meta, &scope));
        }
        // The hit path: the near cache, read in place (a moka `sync` read: no future to copy state through).
        if !scope.refs
            && let Some(near) = self.inner.backend.near_cache()
            && let Some(stored) = near.get_now(&key)
        {
            self.inner.hits.fetch_add(1, Ordering::Relaxed);
            metrics::count(Event::Hit, meta.name_arc(), self.inner.backend_label);
            return Ok(self.answer(stored, &scope));
        }
        // Everything else lives in its own boxed future, so that the hit path's future stays small.
        #[cfg(feature = "metrics")]
        let started = std::time::Instant::now();
        // `prepare` is boxed here, past the hit path, so that the miss flow below is compiled once, not once per
        // `#[cached]` function (each closure is a type of its own): a third of a test binary's functions were
        // copies of it.
        let prepare: Prepare<'p> = Box::new(prepare);
        let response = Box::pin(self.beyond_near_cache(meta, key, scope, prepare)).await;
        #[cfg(feature = "metrics")]
        metrics::seconds(
            metrics::CALL_RESPONSE_SECONDS,
            meta.name_arc(),
            self.inner.backend_label,
            started.elapsed(),
        );
        response
    }

    async fn beyond_near_cache(
        &self,
        meta: &'static TaskMeta,
        mut key: CacheKey,
        scope: CallScope,
        prepare: Prepare<'_>,
    ) -> Result<CachedResponse, RefCacheError> {
        let mut arguments = Arguments::Lazy(prepare);
        if scope.refs {
            // The arguments may hold references: resolve them, and key the call by the resolved arguments.
            let (args, job) = arguments.take()?;
            let (args, unreadable) = self.resolve_inputs(args, &scope.actor()).await?;
            if let Some(check) = scope.check {
                check(&args).map_err(|message| RefCacheError::ResolvedArgument {
                    task: meta.name().to_owned(),
                    // serde's text quotes the value it rejected: keep only the argument's name when the caller
                    // resolved a value it may not read.
                    message: if unreadable.is_empty() {
                        // serde's text may quote the whole offending value: a short prefix of it.
                        crate::model::excerpt::excerpt(&message, 300).into_owned()
                    } else {
                        message
                            .split_once(": ")
                            .map_or("an argument", |(name, _)| name)
                            .to_owned()
                            + ": a value you may execute but not read does not fit its type"
                    },
                })?;
            }
            // A value the caller may use but not read must not be confirmable by guessing: a call with it is keyed
            // apart from the same call with a literal value (and from other references to an equal value).
            let prefix = scope.key_prefix(meta).with_private_inputs(&unreadable);
            key = CacheKey::from_json_with_prefix(meta.name(), prefix, &args)?;
            if let Some(near) = self.inner.backend.near_cache()
                && let Some(stored) = near.get_now(&key)
            {
                self.inner.hits.fetch_add(1, Ordering::Relaxed);
                metrics::count(Event::Hit, meta.name_arc(), self.inner.backend_label);
                return Ok(self.answer(stored, &scope));
            }
            arguments = Arguments::Ready(args, job);
        }
        if let Some(stored) = self.inner.backend.lookup(&key).await? {
            self.inner.hits.fetch_add(1, Ordering::Relaxed);
            metrics::count(Event::Hit, meta.name_arc(), self.inner.backend_label);
            return Ok(self.answer(stored, &scope));
        }
        self.inner.misses.fetch_add(1, Ordering::Relaxed);
        let (args, job) = arguments.take()?;
        let backend = &self.inner.backend;
        let ref_id = RefId::generate(&self.inner.name);
        let policy = meta.policy().map_err(|e| e.clone())?.clone();
        let namespace = scope
            .caller
            .as_ref()
            .and_then(|c| c.namespace.clone())
            .unwrap_or_else(|| meta.namespace_arc().clone());
        // Fields set in place, not through the by-value builders: each of those moved the whole spec (360 bytes)
        // or options once more, on every miss.
        let mut spec = TaskSpec::new(ref_id, key, meta.name_arc().clone(), namespace, args);
        spec.options.clone_from(meta.options());
        spec.options.ttl = Some(meta.ttl().unwrap_or(self.inner.default_ttl));
        spec.options.output_limit = meta.options().output_limit.or(self.inner.output_limit);
        spec.options.session_id = scope.session().map(|s| s.id().to_owned());
        spec.policy = policy;
        spec.actor = scope.caller.as_ref().map(|c| c.actor.clone());
        // The deadline is taken before submitting, so a slow submit cannot stretch the wait past `async_timeout`.
        let deadline = scope
            .async_timeout
            .or(meta.async_timeout())
            .map(|t| tokio::time::Instant::now() + t);
        // Over the owner's cap, refused before anything is submitted; a place taken is held while the task runs.
        let place = match &self.inner.owner_cap {
            Some(cap) => Some(cap.take(&scope.actor().to_string())?),
            None => None,
        };
        let label = self.inner.backend_label;
        let submission = Submission::new(spec, Some(job));
        let submitted = match place {
            None => backend.submit(submission).await?,
            // The place decides on what the submission answers, even when this caller is gone by then. Boxed:
            // the cap's path must not grow every miss's future.
            Some(place) => Box::pin(place.submit(backend.clone(), submission)).await?,
        };
        let ref_id = match submitted {
            Submitted::Hit(stored) => {
                metrics::count(Event::Hit, meta.name_arc(), label);
                return Ok(self.answer(stored, &scope));
            }
            Submitted::Started(ref_id) => {
                metrics::count(Event::Submitted, meta.name_arc(), label);
                self.note_submission();
                ref_id
            }
            submitted @ Submitted::Joined(_) => {
                metrics::count(Event::Joined, meta.name_arc(), label);
                submitted.ref_id().clone()
            }
        };
        crate::cache::observe::submitted(&ref_id);
        let snapshot = backend
            .wait(&ref_id, deadline)
            .await?
            .ok_or(RefCacheError::NotFound)?;
        match snapshot.value {
            Some(stored) => Ok(self.answer(stored, &scope)),
            None => Ok(respond_pending(
                snapshot.info.redacted_for(scope.access),
                scope.format,
                Some(meta),
            )),
        }
    }

    /// Why a caller may not make this call: it could not even see what the call makes.
    #[cold]
    fn call_denied(&self, meta: &TaskMeta, scope: &CallScope) -> RefCacheError {
        RefCacheError::CallDenied {
            task: meta.name().to_owned(),
            actor: scope.actor().to_string(),
            namespace: scope.namespace().unwrap_or(meta.namespace()).to_owned(),
        }
    }

    /// A call's answer for a finished value: whole, previewed, or restricted when the caller may use but not read
    /// it. (The caller may see it: `call` refused the call otherwise.)
    fn answer(&self, stored: Arc<StoredValue>, scope: &CallScope) -> CachedResponse {
        if !stored.readable_by_all()
            && !stored
                .permissions_for(&scope.actor())
                .contains(Permissions::READ)
        {
            return CachedResponse::restricted(stored.ref_id.clone());
        }
        self.show(stored, View::Auto, scope.max_size)
    }
}

/// A call's JSON arguments and job: prepared on first need (a miss, or arguments that may hold references).
/// What builds a call's JSON arguments and its job: the `prepare` closure of a `#[cached]` function, boxed.
pub(crate) type Prepare<'a> =
    Box<dyn FnOnce() -> Result<(Value, LocalJob), RefCacheError> + Send + 'a>;

enum Arguments<'a> {
    Lazy(Prepare<'a>),
    Ready(Value, LocalJob),
}

impl Arguments<'_> {
    fn take(self) -> Result<(Value, LocalJob), RefCacheError> {
        match self {
            Self::Lazy(prepare) => prepare(),
            Self::Ready(args, job) => Ok((args, job)),
        }
    }
}

/// What a call carries from its call site: the response options, the caller's access, and (only when some scope
/// is in effect or the namespace is a template) the actor, session and namespace, captured where the call is made
/// (task-locals do not cross to the cache's own runtime). Kept small: it travels inside every call's future.
#[doc(hidden)]
#[derive(Debug, Clone)]
pub struct CallScope {
    /// The response format of this call.
    pub format: AsyncResponseFormat,
    /// What the caller may do with the references this call makes or joins.
    pub access: Permissions,
    /// Whether the arguments may hold references to resolve.
    pub refs: bool,
    /// The caller's `max_size`.
    pub max_size: Option<usize>,
    /// Checks resolved arguments against the parameter types.
    pub check: Option<ArgCheck>,
    /// How long this call waits, when a [`CallOptions`] scope says (else the function's `async_timeout`).
    pub async_timeout: Option<std::time::Duration>,
    /// Who calls, in which session and namespace. `None`: no scope is in effect and the namespace is fixed, so
    /// the caller is an anonymous user outside any session.
    pub caller: Option<Box<Caller>>,
}

/// The calling actor, its session and the filled namespace of one call.
#[doc(hidden)]
#[derive(Debug, Clone)]
pub struct Caller {
    /// The actor.
    pub actor: Actor,
    /// The session in effect.
    pub session: Option<Session>,
    /// The namespace, when the function's is a template (filled for this actor).
    pub namespace: Option<Arc<str>>,
}

/// Checks a call's resolved JSON arguments against its parameter types (generated by `#[cached]`).
#[doc(hidden)]
pub type ArgCheck = fn(&Value) -> Result<(), String>;

impl CallScope {
    /// The scope of a call to `meta` made here and now. Fails when the function's namespace template needs a
    /// variable the actor lacks, or its policy is invalid.
    pub fn capture(meta: &TaskMeta) -> Result<Self, RefCacheError> {
        let policy = meta.policy().map_err(Clone::clone)?;
        let template = meta.namespace_template().map_err(Clone::clone)?;
        if template.is_none() && !crate::model::scope::any_scope() {
            // No scope anywhere in the process: nothing to look up; the anonymous user's access is the task's own.
            return Ok(Self {
                format: meta.format(),
                access: meta.anonymous_access(),
                refs: false,
                max_size: None,
                check: None,
                async_timeout: None,
                caller: None,
            });
        }
        let options = CallOptions::current();
        if options.max_size == Some(0) {
            return Err(RefCacheError::InvalidOption {
                option: "max_size",
                value: "0".into(),
                expected: "a whole number from 1, in the cache's measure (tokens or characters)",
            });
        }
        let actor = Actor::current();
        let namespace = template
            .map(|t| t.fill(&actor).map(Arc::from))
            .transpose()?;
        let session = Session::current();
        let access = policy.permissions_for(
            &actor,
            namespace.as_deref().unwrap_or(meta.namespace()),
            session.as_ref().map(Session::id),
        );
        Ok(Self {
            format: options.format.unwrap_or(meta.format()),
            access,
            refs: false,
            max_size: options.max_size,
            check: None,
            async_timeout: options.async_timeout,
            caller: Some(Box::new(Caller {
                actor,
                session,
                namespace,
            })),
        })
    }

    /// Notes whether the key arguments so far may hold references to resolve, and how to check the resolved
    /// arguments against the parameter types.
    pub fn note_refs(&mut self, meta: &TaskMeta, key: &KeyBuilder<'_>, check: ArgCheck) {
        self.refs = meta.resolve_refs() && key.mentions_ref_id();
        if self.refs {
            self.check = Some(check);
        }
    }

    /// The actor making the call.
    pub fn actor(&self) -> std::borrow::Cow<'_, Actor> {
        match &self.caller {
            Some(caller) => std::borrow::Cow::Borrowed(&caller.actor),
            None => std::borrow::Cow::Owned(Actor::anonymous_user()),
        }
    }

    /// The session of the call.
    pub fn session(&self) -> Option<&Session> {
        self.caller.as_ref().and_then(|c| c.session.as_ref())
    }

    /// The filled namespace, when the function's is a template.
    pub fn namespace(&self) -> Option<&str> {
        self.caller.as_ref().and_then(|c| c.namespace.as_deref())
    }

    /// The key prefix of the call: the task's own, or one derived with the filled namespace and the session.
    pub fn key_prefix(&self, meta: &TaskMeta) -> KeyPrefix {
        let namespace = self.namespace().unwrap_or(meta.namespace());
        match (self.namespace(), self.session()) {
            (None, None) => meta.key_prefix(),
            (_, Some(session)) => KeyPrefix::with_session(meta.name(), namespace, session.id()),
            (Some(_), None) => KeyPrefix::new(meta.name(), namespace),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex, OnceLock};
    use std::time::Duration;

    use serde_json::{Value, json};

    use crate::cache::RefCache;
    use crate::cache::call::CallScope;
    use crate::contract::backend::TaskBackend;
    use crate::contract::context::LocalJob;
    use crate::contract::registry::TaskMeta;
    use crate::contract::spec::TaskOptions;
    use crate::memory::backend::MemoryTaskBackend;
    use crate::memory::config::MemoryBackendConfig;
    use crate::model::format::AsyncResponseFormat;
    use crate::model::json_text::JsonText;
    use crate::model::key::CacheKey;
    use crate::model::task::TaskError;

    /// A registered task's metadata for the tests here (the owner cap's too).
    pub(super) fn meta() -> &'static TaskMeta {
        static META: OnceLock<TaskMeta> = OnceLock::new();
        META.get_or_init(|| {
            TaskMeta::new(
                "tests::first_poll".to_owned(),
                "public",
                TaskOptions::default(),
                Some(Duration::from_secs(30)),
                AsyncResponseFormat::default(),
                "serde_json::Value",
                None,
                || None,
            )
        })
    }

    /// The kinds of call [`observe`] makes, each with its own task (so its own options: see [`meta_of`]).
    const KINDS: [&str; 5] = ["at once", "yields", "fails", "retries", "times out"];

    /// The metadata of the task of each of [`KINDS`]: `retries` may retry once (after 1 ms), `times out` has an
    /// execution timeout of 100 ms; the others are [`meta`]'s.
    fn meta_of(how: &str) -> &'static TaskMeta {
        static METAS: OnceLock<Vec<TaskMeta>> = OnceLock::new();
        let metas = METAS.get_or_init(|| {
            KINDS
                .iter()
                .map(|how| {
                    let options = match *how {
                        "retries" => TaskOptions::default().max_retries(1).retry_backoff(
                            Some(Duration::from_millis(1)),
                            Some(Duration::from_millis(1)),
                        ),
                        "times out" => TaskOptions::default()
                            .execution_timeout(Some(Duration::from_millis(100))),
                        _ => TaskOptions::default(),
                    };
                    TaskMeta::new(
                        format!("tests::observe::{how}"),
                        "public",
                        options,
                        Some(Duration::from_secs(30)),
                        AsyncResponseFormat::default(),
                        "serde_json::Value",
                        None,
                        || None,
                    )
                })
                .collect()
        });
        let at = KINDS.iter().position(|k| *k == how).expect("a kind");
        &metas[at]
    }

    /// Which tokio task each job ran in: the caller's own (its first poll ran in the caller) or another.
    type Ran = Arc<Mutex<Vec<(&'static str, Option<tokio::task::Id>)>>>;

    /// A job that reports progress, writes a line and then, as `how` says, returns at once, yields once first,
    /// fails for good, fails its first attempt with a retryable error (and returns in its second), or waits for
    /// its cancel (which its execution timeout sends).
    fn job(how: &'static str, ran: Ran) -> LocalJob {
        let attempts = Arc::new(std::sync::atomic::AtomicU32::new(0));
        Arc::new(move |args: Value, ctx| {
            let ran = ran.clone();
            let attempt = attempts.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Box::pin(async move {
                ran.lock().unwrap().push((how, tokio::task::try_id()));
                let _ = ctx.progress(1.0, Some(2.0), "half way");
                ctx.stdout("one line\n");
                match how {
                    "yields" => tokio::task::yield_now().await,
                    "fails" => return Err(TaskError::new("it fails").permanent()),
                    "retries" if attempt == 0 => return Err(TaskError::new("not yet")),
                    "times out" => {
                        ctx.cancelled().await;
                        return Err(TaskError::new("stopped by its cancel"));
                    }
                    _ => {}
                }
                Ok(JsonText::from(json!({"args": args, "how": how})))
            })
        })
    }

    /// Everything a caller and a poller can see of each kind of call, made twice, with the ref ids and clock
    /// readings taken out; and in which task each job ran. Per call: the response, the record, a poll, the output,
    /// a cancel (of a task that is over), whether the task can still be watched, and whether a follower of
    /// submissions was told; then the list of records, the stats, and, after more calls than the history keeps,
    /// which of the calls' references still answer and how many values the store holds (the eviction).
    async fn observe(inline: bool) -> (Value, Vec<(&'static str, bool)>) {
        use futures::{FutureExt, StreamExt};
        let config = MemoryBackendConfig {
            max_task_records: RECORDS,
            ..MemoryBackendConfig::default()
        };
        let backend = Arc::new(MemoryTaskBackend::with_first_poll_inline(config, inline));
        let cache = RefCache::builder()
            .backend(backend.clone())
            .expect("a cache");
        let mut followed = cache.follow_submissions();
        let ran: Ran = Arc::default();
        let mut seen = Vec::new();
        let mut refs = Vec::new();
        for how in KINDS {
            let meta = meta_of(how);
            let args = json!({ "how": how });
            let key = CacheKey::from_json(meta.name(), "public", &args).expect("a key");
            let mut calls = Vec::new();
            for _ in 0..2 {
                let (args, job) = (args.clone(), job(how, ran.clone()));
                let scope = CallScope::capture(meta).expect("a scope");
                let response = cache
                    .call(meta, key, scope, move || Ok((args, job)))
                    .await
                    .expect("a call");
                let ref_id = response.ref_id().clone();
                let told = followed.next().now_or_never().is_some();
                let info = cache.task_info(ref_id.as_str()).await.expect("a record");
                let polled = cache
                    .get_cached_result(ref_id.as_str())
                    .await
                    .expect("a poll");
                let output = backend
                    .read_output(&ref_id, 0, 1 << 20)
                    .await
                    .expect("output");
                let cancelled = cache.cancel_task(ref_id.as_str()).await.expect("a cancel");
                let watched = backend.watch(&ref_id).await.expect("a watch").is_some();
                let seen = json!({
                    "response": response.to_json(),
                    "info": serde_json::to_value(&info).expect("JSON"),
                    "polled": polled.to_json(),
                    "output": serde_json::to_value(&output).expect("JSON"),
                    "cancelled": format!("{cancelled:?}"),
                    "watched": watched,
                    "told": told,
                });
                calls.push(without(seen, ref_id.as_str()));
                refs.push(ref_id);
            }
            seen.push(json!({ how: calls }));
        }
        let listed = cache
            .list_tasks(crate::contract::list::TaskFilter::all())
            .await
            .expect("a list");
        let mut listed: Vec<Value> = listed
            .tasks
            .iter()
            .map(|info| {
                let info = serde_json::to_value(info).expect("JSON");
                refs.iter()
                    .fold(info, |info, ref_id| without(info, ref_id.as_str()))
            })
            .collect();
        listed.sort_by_key(Value::to_string);
        seen.push(Value::Array(listed));
        let mut stats = cache.stats().await.expect("stats");
        // The store weighs values with a hasher seeded per process; the bytes are compared apart.
        stats.value_bytes = 0;
        seen.push(serde_json::to_value(&stats).expect("JSON"));
        // More calls than the history keeps records: the oldest go, with their values.
        for n in 0..RECORDS {
            let args = json!({ "n": n });
            let key = CacheKey::from_json(meta().name(), "public", &args).expect("a key");
            let job = job("at once", ran.clone());
            let scope = CallScope::capture(meta()).expect("a scope");
            let response = cache
                .call(meta(), key, scope, move || Ok((args, job)))
                .await
                .expect("a call");
            refs.push(response.ref_id().clone());
        }
        let mut answered = Vec::new();
        for ref_id in &refs {
            answered.push(cache.task_info(ref_id.as_str()).await.is_ok());
        }
        let (values, _) = backend.store().usage().await;
        seen.push(json!({ "answered": answered, "values": values }));
        let caller = tokio::task::try_id();
        let ran = ran
            .lock()
            .unwrap()
            .iter()
            .map(|(how, task)| (*how, *task == caller))
            .collect();
        (Value::Array(seen), ran)
    }

    /// The records the backend of [`observe`] keeps.
    const RECORDS: u64 = 4;

    /// `value` with `ref_id` replaced and every clock reading (`*_at`, retry timestamps) nulled.
    fn without(value: Value, ref_id: &str) -> Value {
        match value {
            Value::String(s) => Value::String(s.replace(ref_id, "<ref>")),
            Value::Array(items) => items.into_iter().map(|v| without(v, ref_id)).collect(),
            Value::Object(map) => map
                .into_iter()
                .map(|(k, v)| {
                    if k.ends_with("_at") || k == "timestamp" {
                        (k, Value::Null)
                    } else {
                        (k, without(v, ref_id))
                    }
                })
                .collect(),
            other => other,
        }
    }

    /// Makes one call of a job that notes the task it ran in and the call options it saw (a task-local the task's
    /// spec does not carry, unlike the actor); answers whether it ran in the caller's task, and those options'
    /// `async_timeout`.
    async fn call_noting_where(cache: &RefCache, n: u64) -> (bool, Option<Duration>) {
        /// The task a job ran in and the `async_timeout` of the options it saw.
        type Seen = Arc<Mutex<Option<(Option<tokio::task::Id>, Option<Duration>)>>>;
        let seen: Seen = Arc::default();
        let noted = seen.clone();
        let job: LocalJob = Arc::new(move |_args: Value, _ctx| {
            let noted = noted.clone();
            Box::pin(async move {
                *noted.lock().unwrap() = Some((
                    tokio::task::try_id(),
                    crate::cache::call_options::CallOptions::current().async_timeout,
                ));
                Ok(JsonText::from(json!("done")))
            })
        });
        let args = json!({ "n": n });
        let key = CacheKey::from_json(meta().name(), "public", &args).expect("a key");
        let scope = CallScope::capture(meta()).expect("a scope");
        let response = cache
            .call(meta(), key, scope, move || Ok((args, job)))
            .await
            .expect("a call");
        assert!(response.is_complete(), "{}", response.to_json());
        let (task, options) = seen.lock().unwrap().take().expect("the job ran");
        (task == tokio::task::try_id(), options)
    }

    #[tokio::test]
    async fn a_scope_in_another_task_leaves_the_first_poll_in_the_caller_one_in_the_caller_does_not()
     {
        use crate::model::actor::Actor;
        use crate::model::scope::{any_scope, scope_here};
        // Another request's scope, open for the whole test (as an MCP server scopes each request).
        let (entered, is_entered) = tokio::sync::oneshot::channel();
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let elsewhere = tokio::spawn(Actor::user("elsewhere").scope(async move {
            let _ = entered.send(scope_here());
            let _ = released.await;
        }));
        assert!(is_entered.await.expect("entered"), "inside its own scope");
        assert!(any_scope() && !scope_here());
        // The default backend: it decides by itself where the first poll runs.
        let cache = RefCache::builder()
            .backend(Arc::new(MemoryTaskBackend::new(
                MemoryBackendConfig::default(),
            )))
            .expect("a cache");
        // Outside any scope here: in the caller, as with no scope anywhere.
        assert_eq!(
            tokio::spawn(async move {
                let outside = call_noting_where(&cache, 1).await;
                // Inside a scope of the caller's: spawned, so the body does not see the caller's options.
                let scoped = crate::cache::call_options::CallOptions::new()
                    .async_timeout(Duration::from_secs(30))
                    .scope(async {
                        assert!(scope_here());
                        call_noting_where(&cache, 2).await
                    })
                    .await;
                (outside, scoped)
            })
            .await
            .expect("the calls"),
            ((true, None), (false, None))
        );
        // A sync scope counts on its own thread only.
        Actor::user("bob").sync_scope(|| assert!(scope_here()));
        std::thread::scope(|threads| {
            threads.spawn(|| Actor::user("carol").sync_scope(|| assert!(scope_here())));
        });
        assert!(!scope_here());
        let _ = release.send(());
        elsewhere.await.expect("the other request");
    }

    /// What the metrics saw of one run of [`observe`]: each counter's total, each gauge's last value and each
    /// histogram's number of samples, by name and labels (a recorder local to the thread that runs it).
    #[cfg(feature = "metrics")]
    mod recorded {
        use std::collections::BTreeMap;
        use std::sync::{Arc, Mutex};

        use metrics::{
            Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata,
            Recorder, SharedString, Unit,
        };

        /// Every metric's reading so far, by `name{labels}`.
        #[derive(Clone, Default)]
        pub(super) struct Readings(Arc<Mutex<BTreeMap<String, f64>>>);

        impl Readings {
            pub(super) fn take(&self) -> BTreeMap<String, f64> {
                std::mem::take(&mut *self.0.lock().unwrap())
            }

            fn cell(&self, kind: &str, key: &Key) -> Arc<Cell> {
                let mut labels: Vec<String> = key
                    .labels()
                    .map(|l| format!("{}={}", l.key(), l.value()))
                    .collect();
                labels.sort();
                Arc::new(Cell {
                    name: format!("{kind} {}{{{}}}", key.name(), labels.join(",")),
                    readings: self.clone(),
                })
            }
        }

        struct Cell {
            name: String,
            readings: Readings,
        }

        impl Cell {
            fn update(&self, f: impl FnOnce(&mut f64)) {
                f(self
                    .readings
                    .0
                    .lock()
                    .unwrap()
                    .entry(self.name.clone())
                    .or_default());
            }
        }

        impl CounterFn for Cell {
            #[allow(clippy::cast_precision_loss)]
            fn increment(&self, value: u64) {
                self.update(|n| *n += value as f64);
            }
            #[allow(clippy::cast_precision_loss)]
            fn absolute(&self, value: u64) {
                self.update(|n| *n = value as f64);
            }
        }

        impl GaugeFn for Cell {
            fn increment(&self, value: f64) {
                self.update(|n| *n += value);
            }
            fn decrement(&self, value: f64) {
                self.update(|n| *n -= value);
            }
            fn set(&self, value: f64) {
                self.update(|n| *n = value);
            }
        }

        impl HistogramFn for Cell {
            fn record(&self, _value: f64) {
                self.update(|n| *n += 1.0);
            }
        }

        impl Recorder for Readings {
            fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
            fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
            fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
            fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
                Counter::from_arc(self.cell("counter", key))
            }
            fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
                Gauge::from_arc(self.cell("gauge", key))
            }
            fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
                Histogram::from_arc(self.cell("histogram", key))
            }
        }
    }

    /// One run of [`observe`] on a runtime of its own (current-thread, its clock paused: the retry's backoff and
    /// the execution timeout pass at once), in a task of its own, so that a job run in the caller's task is told
    /// apart from a spawned one; with the `metrics` feature, also what the metrics saw of it.
    fn observe_on_own_runtime(inline: bool) -> (Value, Vec<(&'static str, bool)>, Value) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("a runtime");
        let run = || {
            runtime
                .block_on(async { tokio::spawn(observe(inline)).await })
                .expect("the run")
        };
        #[cfg(feature = "metrics")]
        {
            let readings = recorded::Readings::default();
            let (seen, ran) = metrics::with_local_recorder(&readings, run);
            (seen, ran, json!(readings.take()))
        }
        #[cfg(not(feature = "metrics"))]
        {
            let (seen, ran) = run();
            (seen, ran, Value::Null)
        }
    }

    #[test]
    fn a_first_poll_in_the_caller_answers_as_a_spawned_driver() {
        let (fast, fast_ran, fast_metrics) = observe_on_own_runtime(true);
        let (slow, slow_ran, slow_metrics) = observe_on_own_runtime(false);
        assert_eq!(fast, slow, "the two paths answer differently");
        assert_eq!(
            fast_metrics, slow_metrics,
            "the two paths count differently"
        );
        #[cfg(feature = "metrics")]
        {
            // The metrics saw the runs: every kind of event, not an empty map on both sides.
            let counted = |name: &str| {
                fast_metrics
                    .as_object()
                    .expect("readings")
                    .iter()
                    .filter(|(k, _)| k.starts_with(&format!("counter {name}{{")))
                    .map(|(_, v)| v.as_f64().expect("a number"))
                    .sum::<f64>()
            };
            use crate::contract::metrics as m;
            // Per kind two calls: `at once`, `yields` and `retries` hit the second time; `fails` and `times out`
            // run twice; then the calls past the history.
            let executions = 3.0 + 2.0 * 2.0 + RECORDS as f64;
            assert_eq!(counted(m::TASKS_STARTED), executions, "{fast_metrics:#}");
            assert_eq!(counted(m::TASKS_COMPLETED), 3.0 + RECORDS as f64);
            assert_eq!(counted(m::TASKS_FAILED), 2.0);
            assert_eq!(counted(m::TASKS_TIMED_OUT), 2.0);
            assert_eq!(counted(m::TASKS_RETRIED), 1.0);
            assert_eq!(counted(m::CALLS_SUBMITTED), executions);
        }
        // Both ran each job once per execution (a hit runs nothing; a failed call runs again), and `retries` twice
        // in its one execution.
        let mut order = vec![
            "at once",
            "yields",
            "fails",
            "fails",
            "retries",
            "retries",
            "times out",
            "times out",
        ];
        order.extend(["at once"; RECORDS as usize]);
        assert_eq!(
            fast_ran.iter().map(|(how, _)| *how).collect::<Vec<_>>(),
            order
        );
        assert_eq!(
            slow_ran.iter().map(|(how, _)| *how).collect::<Vec<_>>(),
            order
        );
        // The fast path ran every first poll in the caller's task (a retry, after its backoff, in a driver); the
        // slow path none.
        let retry = 5;
        let fast_where: Vec<bool> = fast_ran.iter().map(|(_, in_caller)| *in_caller).collect();
        let mut want = vec![true; order.len()];
        want[retry] = false;
        assert_eq!(fast_where, want, "{fast_ran:?}");
        assert!(
            slow_ran.iter().all(|(_, in_caller)| !in_caller),
            "{slow_ran:?}"
        );
    }
}

/// The owner cap through a call (here, not in `owner_cap.rs`, which `cache.rs` imports: a test there naming
/// `RefCache` would make a circle).
#[cfg(test)]
mod owner_cap_tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use futures::future::BoxFuture;
    use futures::stream::BoxStream;
    use serde_json::{Value, json};
    use tokio::sync::Notify;

    use crate::cache::RefCache;
    use crate::cache::call::CallScope;
    use crate::cache::call::tests::meta;
    use crate::contract::backend::{
        BackendStats, CancelOutcome, RespondOutcome, RetryOutcome, Submission, Submitted,
        TaskBackend, TaskSnapshot,
    };
    use crate::contract::context::LocalJob;
    use crate::contract::list::{TaskFilter, TaskPage};
    use crate::contract::store::{StoredValue, ValueStore};
    use crate::memory::backend::MemoryTaskBackend;
    use crate::memory::config::MemoryBackendConfig;
    use crate::model::error::{BackendError, RefCacheError};
    use crate::model::json_text::JsonText;
    use crate::model::key::CacheKey;
    use crate::model::output::OutputChunk;
    use crate::model::record::TaskInfo;
    use crate::model::ref_id::RefId;

    /// How the submission answers.
    #[derive(Clone, Copy)]
    enum Answer {
        /// Starts the task (in the in-process backend) and then answers an error, as a remote backend that started
        /// it and then failed to confirm it.
        FailsAfterStarting,
        /// Starts the task only when `late` is notified, and then answers that it started: a remote backend still
        /// mid-write when its caller gave up.
        StartsLate,
    }

    /// The in-process backend, whose `submit` answers as `answer` says.
    struct Submits {
        inner: MemoryTaskBackend,
        answer: Answer,
        late: Notify,
        submitted: Mutex<Vec<RefId>>,
    }

    impl TaskBackend for Submits {
        fn name(&self) -> &str {
            "submits"
        }
        fn near_cache(&self) -> Option<&ValueStore> {
            self.inner.near_cache()
        }
        fn lookup<'a>(
            &'a self,
            key: &'a CacheKey,
        ) -> BoxFuture<'a, Result<Option<Arc<StoredValue>>, BackendError>> {
            self.inner.lookup(key)
        }
        fn submit(&self, submission: Submission) -> BoxFuture<'_, Result<Submitted, BackendError>> {
            Box::pin(async move {
                if let Answer::StartsLate = self.answer {
                    self.late.notified().await;
                }
                let submitted = self.inner.submit(submission).await?;
                self.submitted
                    .lock()
                    .unwrap()
                    .push(submitted.ref_id().clone());
                match self.answer {
                    Answer::FailsAfterStarting => {
                        Err(BackendError::Unavailable("the answer was lost".into()))
                    }
                    Answer::StartsLate => Ok(submitted),
                }
            })
        }
        fn get<'a>(
            &'a self,
            ref_id: &'a RefId,
        ) -> BoxFuture<'a, Result<Option<TaskSnapshot>, BackendError>> {
            self.inner.get(ref_id)
        }
        fn wait<'a>(
            &'a self,
            ref_id: &'a RefId,
            deadline: Option<tokio::time::Instant>,
        ) -> BoxFuture<'a, Result<Option<TaskSnapshot>, BackendError>> {
            self.inner.wait(ref_id, deadline)
        }
        fn watch<'a>(
            &'a self,
            ref_id: &'a RefId,
        ) -> BoxFuture<'a, Result<Option<tokio::sync::watch::Receiver<TaskInfo>>, BackendError>>
        {
            self.inner.watch(ref_id)
        }
        fn read_output<'a>(
            &'a self,
            ref_id: &'a RefId,
            offset: u64,
            max_bytes: usize,
        ) -> BoxFuture<'a, Result<Option<OutputChunk>, BackendError>> {
            self.inner.read_output(ref_id, offset, max_bytes)
        }
        fn follow_output<'a>(
            &'a self,
            ref_id: &'a RefId,
        ) -> BoxFuture<'a, Result<Option<BoxStream<'static, ()>>, BackendError>> {
            self.inner.follow_output(ref_id)
        }
        fn cancel<'a>(
            &'a self,
            ref_id: &'a RefId,
        ) -> BoxFuture<'a, Result<CancelOutcome, BackendError>> {
            self.inner.cancel(ref_id)
        }
        fn respond<'a>(
            &'a self,
            ref_id: &'a RefId,
            key: &'a str,
            answer: Value,
        ) -> BoxFuture<'a, Result<RespondOutcome, BackendError>> {
            self.inner.respond(ref_id, key, answer)
        }
        fn delete<'a>(&'a self, ref_id: &'a RefId) -> BoxFuture<'a, Result<bool, BackendError>> {
            self.inner.delete(ref_id)
        }
        fn list(&self, filter: TaskFilter) -> BoxFuture<'_, Result<TaskPage, BackendError>> {
            self.inner.list(filter)
        }
        fn retry<'a>(
            &'a self,
            ref_id: &'a RefId,
        ) -> BoxFuture<'a, Result<RetryOutcome, BackendError>> {
            self.inner.retry(ref_id)
        }
        fn end_session<'a>(
            &'a self,
            session_id: &'a str,
        ) -> BoxFuture<'a, Result<usize, BackendError>> {
            self.inner.end_session(session_id)
        }
        fn cleanup(&self, max_age: Duration) -> BoxFuture<'_, Result<usize, BackendError>> {
            self.inner.cleanup(max_age)
        }
        fn stats(&self) -> BoxFuture<'_, Result<BackendStats, BackendError>> {
            self.inner.stats()
        }
        fn shutdown(&self, deadline: Duration) -> BoxFuture<'_, Result<(), BackendError>> {
            self.inner.shutdown(deadline)
        }
    }

    /// A job that runs until `gate` is notified.
    fn gated(gate: Arc<Notify>) -> LocalJob {
        Arc::new(move |args: Value, _ctx| {
            let gate = gate.clone();
            Box::pin(async move {
                gate.notified().await;
                Ok(JsonText::from(args))
            })
        })
    }

    /// One call of `n` through `cache`, given up after a minute of the (paused) clock.
    async fn call(cache: &RefCache, n: u32, gate: &Arc<Notify>) -> Result<(), RefCacheError> {
        let args = json!({ "n": n });
        let key = CacheKey::from_json(meta().name(), "public", &args).expect("a key");
        let job = gated(gate.clone());
        let scope = CallScope::capture(meta()).expect("a scope");
        match tokio::time::timeout(
            Duration::from_secs(60),
            cache.call(meta(), key, scope, move || Ok((args, job))),
        )
        .await
        {
            Ok(answer) => answer.map(drop),
            Err(_) => Err(RefCacheError::NotFound),
        }
    }

    /// A call whose submission starts its task but answers an error, or whose caller gives up before the
    /// submission has even started the task, keeps the owner's place until that task ends: the cap still counts
    /// the running task.
    #[tokio::test(start_paused = true)]
    async fn a_submission_that_started_its_task_but_did_not_answer_keeps_its_place_until_the_task_ends()
     {
        for answer in [Answer::FailsAfterStarting, Answer::StartsLate] {
            let backend = Arc::new(Submits {
                inner: MemoryTaskBackend::new(MemoryBackendConfig::default()),
                answer,
                late: Notify::new(),
                submitted: Mutex::default(),
            });
            let cache = RefCache::builder()
                .max_tasks_per_owner(Some(1))
                .backend(backend.clone())
                .expect("a cache");
            let gate = Arc::new(Notify::new());
            let first = call(&cache, 1, &gate).await;
            assert!(
                matches!(
                    first,
                    Err(RefCacheError::Backend(BackendError::Unavailable(_))
                        | RefCacheError::NotFound)
                ),
                "the submission did not answer: {first:?}"
            );
            // The cap counts the first call's task: started, or about to be.
            match call(&cache, 2, &gate).await {
                Err(RefCacheError::TooManyTasks { limit: 1, .. }) => {}
                other => panic!("expected TooManyTasks while the first task runs, got {other:?}"),
            }
            if let Answer::StartsLate = answer {
                // The caller is long gone when the submission starts the task.
                backend.late.notify_one();
                for _ in 0..1_000 {
                    if !backend.submitted.lock().unwrap().is_empty() {
                        break;
                    }
                    tokio::task::yield_now().await;
                }
                match call(&cache, 2, &gate).await {
                    Err(RefCacheError::TooManyTasks { limit: 1, .. }) => {}
                    other => panic!("expected TooManyTasks once the late task runs, got {other:?}"),
                }
            }
            let started = backend.submitted.lock().unwrap().clone();
            assert_eq!(started.len(), 1, "one task was started: {started:?}");
            let snapshot = backend
                .inner
                .get(&started[0])
                .await
                .unwrap()
                .expect("the task");
            assert!(
                !snapshot.info.status.is_terminal(),
                "the first task runs on"
            );
            // Once it ends, the place is given back: the next call is submitted.
            gate.notify_one();
            let ended = backend
                .inner
                .wait(&started[0], None)
                .await
                .unwrap()
                .expect("the task");
            assert!(ended.info.status.is_terminal());
            let mut submitted = false;
            for _ in 0..1_000 {
                tokio::task::yield_now().await;
                if !matches!(
                    call(&cache, 3, &gate).await,
                    Err(RefCacheError::TooManyTasks { .. })
                ) {
                    submitted = true;
                    break;
                }
            }
            assert!(submitted, "the place was given back once the task ended");
        }
    }
}
