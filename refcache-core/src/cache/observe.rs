//! Observing calls: a scope that learns the ref id of each call made inside it the moment the call is submitted,
//! before the caller starts waiting. The MCP layer uses it to forward a task's progress to a client while that
//! client still waits on the call.

use std::future::Future;
use std::sync::Arc;

use crate::model::ref_id::RefId;

/// Told the ref id of each call submitted (made or joined) inside an [`observe`] scope.
pub(crate) type OnSubmit = Arc<dyn Fn(&RefId) + Send + Sync>;

tokio::task_local! {
    static ON_SUBMIT: OnSubmit;
}

/// Runs `fut`; `on_submit` is told the ref id of every call that `fut` submits to a backend (a hit submits
/// nothing).
#[cfg_attr(not(feature = "mcp"), allow(dead_code))]
pub(crate) async fn observe<F: Future>(on_submit: OnSubmit, fut: F) -> F::Output {
    // A scope like the others: the in-process backend then runs no first poll of a task in a caller inside it (a
    // call the task makes would be told to this observer, before the caller's own).
    let _active = crate::model::scope::ScopeGuard::enter();
    ON_SUBMIT
        .scope(on_submit, crate::model::scope::marked(fut))
        .await
}

/// Tells the observer in scope, if any, that the call was submitted under `ref_id`.
pub(crate) fn submitted(ref_id: &RefId) {
    let _ = ON_SUBMIT.try_with(|on_submit| on_submit(ref_id));
}
