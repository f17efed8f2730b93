//! Per-call options: what one call (or every call in a scope) asks for, above its function's attribute.

use std::cell::Cell;
use std::future::Future;
use std::time::Duration;

use crate::model::format::AsyncResponseFormat;
use crate::model::scope::ScopeGuard;

/// Options for the `#[cached]` calls made inside a scope. Each one set here wins over the function's attribute,
/// which wins over the cache's default.
///
/// ```
/// # use refcache_core::{AsyncResponseFormat, CallOptions};
/// # async fn demo() {
/// let small = CallOptions::new().max_size(200).format(AsyncResponseFormat::Full);
/// small.scope(async { /* calls here answer previews above 200 tokens */ }).await;
/// # }
/// ```
///
/// Scopes nest: an inner scope keeps the options it does not set from the outer one. They are task-local (they
/// follow the future across threads, and do not leak to other tasks); [`sync_scope`](Self::sync_scope) is the
/// twin for synchronous code on one thread.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CallOptions {
    /// The response format of a task that is not complete.
    pub format: Option<AsyncResponseFormat>,
    /// The largest value answered whole; a larger one is answered with a preview of at most this size.
    pub max_size: Option<usize>,
    /// How long a call waits for its value before it answers a processing reference (the function's
    /// `async_timeout` for these calls; `Duration::ZERO`: a reference at once unless the value is there).
    pub async_timeout: Option<Duration>,
}

tokio::task_local! {
    static OPTIONS: CallOptions;
}

thread_local! {
    static SYNC_OPTIONS: Cell<Option<CallOptions>> = const { Cell::new(None) };
}

impl CallOptions {
    /// No options: every call answers as its attribute says.
    pub fn new() -> Self {
        Self::default()
    }

    /// Answer in `format`.
    pub fn format(mut self, format: AsyncResponseFormat) -> Self {
        self.format = Some(format);
        self
    }

    /// Answer values larger than `max_size` with a preview of at most `max_size`.
    pub fn max_size(mut self, max_size: usize) -> Self {
        self.max_size = Some(max_size);
        self
    }

    /// Wait up to `wait` for the value before answering a processing reference, whatever the function's
    /// `async_timeout` says. The execution is the same either way: only how long this caller waits changes.
    pub fn async_timeout(mut self, wait: Duration) -> Self {
        self.async_timeout = Some(wait);
        self
    }

    /// These options, with the ones they leave unset taken from `outer`.
    fn over(self, outer: Self) -> Self {
        Self {
            format: self.format.or(outer.format),
            max_size: self.max_size.or(outer.max_size),
            async_timeout: self.async_timeout.or(outer.async_timeout),
        }
    }

    /// Runs `fut` with these options for every `#[cached]` call inside it.
    pub async fn scope<F: Future>(self, fut: F) -> F::Output {
        let merged = self.over(Self::current());
        let _active = ScopeGuard::enter();
        OPTIONS
            .scope(merged, crate::model::scope::marked(fut))
            .await
    }

    /// The synchronous twin of [`scope`](Self::scope), for this thread.
    pub fn sync_scope<R>(self, f: impl FnOnce() -> R) -> R {
        struct Restore(Option<CallOptions>);
        impl Drop for Restore {
            fn drop(&mut self) {
                SYNC_OPTIONS.with(|cell| cell.set(self.0));
            }
        }
        let merged = self.over(Self::current());
        let _active = ScopeGuard::enter_sync();
        let _restore = Restore(SYNC_OPTIONS.with(|cell| cell.replace(Some(merged))));
        f()
    }

    /// The options in effect here.
    pub fn current() -> Self {
        if !crate::model::scope::any_scope() {
            return Self::default();
        }
        OPTIONS
            .try_with(|o| *o)
            .ok()
            .or_else(|| SYNC_OPTIONS.with(Cell::get))
            .unwrap_or_default()
    }
}

/// The per-call format override: [`CallOptions`] with only the format set.
impl AsyncResponseFormat {
    /// Runs `fut` with every `#[cached]` call inside it answering in `format`, whatever its attribute says.
    /// Shorthand for [`CallOptions::new().format(format).scope(fut)`](CallOptions::scope).
    pub async fn scope<F: Future>(self, fut: F) -> F::Output {
        CallOptions::new().format(self).scope(fut).await
    }

    /// The synchronous twin of [`scope`](Self::scope), for this thread.
    pub fn sync_scope<R>(self, f: impl FnOnce() -> R) -> R {
        CallOptions::new().format(self).sync_scope(f)
    }

    /// The override in effect for the current call, if any.
    pub fn current_override() -> Option<Self> {
        CallOptions::current().format
    }
}
