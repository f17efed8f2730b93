//! Sessions: the ambient session a call or poll is made in.
//!
//! A task created in a session belongs to it: calls in other sessions never join it or hit its value (the session is
//! part of the key), and polls, cancels, retries and lists from other sessions answer as if it did not exist. A
//! task made outside any session is visible to everyone. An MCP server sets the session per request (#5); a Rust
//! caller scopes it explicitly.

use std::cell::RefCell;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};

/// A session id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Session(Arc<str>);

tokio::task_local! {
    static SESSION: Session;
}

thread_local! {
    static SYNC_SESSION: RefCell<Option<Session>> = const { RefCell::new(None) };
}

impl Session {
    /// The session `id`.
    pub fn new(id: impl Into<Arc<str>>) -> Self {
        Self(id.into())
    }

    /// The id.
    pub fn id(&self) -> &str {
        &self.0
    }

    /// Runs `fut` in this session: every `#[cached]` call and every poll inside it belongs to it. Task-local: it
    /// follows `fut` across threads and does not leak to other tasks.
    pub async fn scope<F: Future>(self, fut: F) -> F::Output {
        let _active = ScopeGuard::enter();
        SESSION.scope(self, fut).await
    }

    /// The synchronous twin of [`scope`](Self::scope), for this thread.
    pub fn sync_scope<R>(self, f: impl FnOnce() -> R) -> R {
        struct Restore(Option<Session>);
        impl Drop for Restore {
            fn drop(&mut self) {
                SYNC_SESSION.with(|cell| *cell.borrow_mut() = self.0.take());
            }
        }
        let _active = ScopeGuard::enter();
        let _restore = Restore(SYNC_SESSION.with(|cell| cell.borrow_mut().replace(self)));
        f()
    }

    /// The session in effect, if any: the innermost `Session` scope's, else the scoped [`Actor`](crate::Actor)'s.
    pub fn current() -> Option<Session> {
        if !any_scope() {
            return None;
        }
        SESSION
            .try_with(Clone::clone)
            .ok()
            .or_else(|| SYNC_SESSION.with(|cell| cell.borrow().clone()))
            .or_else(|| {
                crate::actor::Actor::scoped()
                    .and_then(|actor| actor.session_id)
                    .map(Session::from)
            })
    }
}

impl fmt::Display for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for Session {
    fn from(id: &str) -> Self {
        Self::new(id)
    }
}

impl From<String> for Session {
    fn from(id: String) -> Self {
        Self::new(id)
    }
}

/// How many scopes (session or format, async or sync) are active in the process. While none is, a call skips the
/// four thread-local lookups that finding its scope would take: one relaxed load instead, on every hit.
static ACTIVE_SCOPES: AtomicUsize = AtomicUsize::new(0);

/// Counts one active scope while it lives.
pub(crate) struct ScopeGuard(());

impl ScopeGuard {
    pub(crate) fn enter() -> Self {
        ACTIVE_SCOPES.fetch_add(1, AtomicOrdering::Relaxed);
        Self(())
    }
}

impl Drop for ScopeGuard {
    fn drop(&mut self) {
        ACTIVE_SCOPES.fetch_sub(1, AtomicOrdering::Relaxed);
    }
}

/// Whether any scope may be active (a scope entered on this thread, or carried here by its future, is always seen).
pub(crate) fn any_scope() -> bool {
    ACTIVE_SCOPES.load(AtomicOrdering::Relaxed) > 0
}
