//! The ambient scopes' shared machinery: a process-wide count of the scopes in effect (actor, session, call
//! options, an observer of submissions), so that a call outside every scope skips the task-local lookups, and a
//! mark of its own that says whether a scope is in effect *here* ([`scope_here`]). `actor.rs`, `session.rs` and
//! the cache's `call_options.rs` and `observe.rs` use it; it uses none of them.

use std::cell::Cell;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};

/// How many scopes (session or format, async or sync) are active in the process. While none is, a call skips the
/// four thread-local lookups that finding its scope would take: one relaxed load instead, on every hit.
static ACTIVE_SCOPES: AtomicUsize = AtomicUsize::new(0);

tokio::task_local! {
    /// Set inside every async scope ([`scoped`]): the task polling a future under a scope sees it.
    static IN_SCOPE: ();
}

thread_local! {
    /// How many sync scopes are active on this thread.
    static SYNC_SCOPES: Cell<usize> = const { Cell::new(0) };
}

/// Counts one active scope while it lives.
pub(crate) struct ScopeGuard {
    sync: bool,
}

impl ScopeGuard {
    /// One async scope, while the guard lives: the future it runs goes through [`marked`].
    pub(crate) fn enter() -> Self {
        ACTIVE_SCOPES.fetch_add(1, AtomicOrdering::Relaxed);
        Self { sync: false }
    }

    /// One sync scope, on this thread, while the guard lives.
    pub(crate) fn enter_sync() -> Self {
        ACTIVE_SCOPES.fetch_add(1, AtomicOrdering::Relaxed);
        SYNC_SCOPES.with(|n| n.set(n.get() + 1));
        Self { sync: true }
    }
}

impl Drop for ScopeGuard {
    fn drop(&mut self) {
        if self.sync {
            SYNC_SCOPES.with(|n| n.set(n.get().saturating_sub(1)));
        }
        ACTIVE_SCOPES.fetch_sub(1, AtomicOrdering::Relaxed);
    }
}

/// `fut`, marked as running under a scope for [`scope_here`]: every async scope runs its future through this,
/// inside its own task-local scope, while it holds a [`ScopeGuard`].
pub(crate) fn marked<F: Future>(fut: F) -> tokio::task::futures::TaskLocalFuture<(), F> {
    IN_SCOPE.scope((), fut)
}

/// Whether any scope may be active (a scope entered on this thread, or carried here by its future, is always seen).
pub(crate) fn any_scope() -> bool {
    ACTIVE_SCOPES.load(AtomicOrdering::Relaxed) > 0
}

/// Whether a scope is in effect here: in the task being polled (an async scope), or on this thread (a sync one).
/// Scopes elsewhere in the process do not count. Cheap while no scope is active anywhere (one relaxed load).
pub(crate) fn scope_here() -> bool {
    any_scope() && (IN_SCOPE.try_with(|()| ()).is_ok() || SYNC_SCOPES.with(Cell::get) > 0)
}
