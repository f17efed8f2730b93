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

use crate::model::scope::{ScopeGuard, marked};

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
        SESSION.scope(self, marked(fut)).await
    }

    /// The synchronous twin of [`scope`](Self::scope), for this thread.
    pub fn sync_scope<R>(self, f: impl FnOnce() -> R) -> R {
        struct Restore(Option<Session>);
        impl Drop for Restore {
            fn drop(&mut self) {
                SYNC_SESSION.with(|cell| *cell.borrow_mut() = self.0.take());
            }
        }
        let _active = ScopeGuard::enter_sync();
        let _restore = Restore(SYNC_SESSION.with(|cell| cell.borrow_mut().replace(self)));
        f()
    }

    /// The session of the innermost `Session` scope, if any, without the session of a scoped actor
    /// ([`Session::current`], in `actor.rs`, adds that). Callers check `any_scope` first.
    pub(crate) fn scoped() -> Option<Session> {
        SESSION
            .try_with(Clone::clone)
            .ok()
            .or_else(|| SYNC_SESSION.with(|cell| cell.borrow().clone()))
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
