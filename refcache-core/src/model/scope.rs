//! The ambient scopes' shared machinery: a process-wide count of the scopes in effect (actor, session, call
//! options), so that a call outside every scope skips the task-local lookups. Both `actor.rs` and `session.rs` use
//! it; it uses neither.

use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};

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
