//! A task as the list, the task page and their event streams show it.

use serde_json::{Value, json};

use crate::model::record::TaskInfo;

/// `{ref_id, name, task_name, status, message, progress, percentage, eta_seconds, created_at, started_at,
/// finished_at, error, error_code, remediation, can_retry, input}`; `input` is the question of an `input_required`
/// task (`{key, message, schema, deadline}`), else null.
pub(super) fn summary(info: &TaskInfo) -> Value {
    let percentage = info.progress.as_ref().and_then(|p| p.percentage());
    json!({
        "ref_id": info.ref_id,
        "name": short_name(&info.task_name),
        "task_name": info.task_name,
        "status": info.status,
        "message": info.message(),
        "progress": info.progress.as_ref().map(|p| json!({
            "current": p.current, "total": p.total, "message": p.message,
        })),
        "percentage": percentage,
        "eta_seconds": info.eta_seconds(),
        "created_at": info.created_at,
        "started_at": info.started_at,
        "finished_at": info.finished_at,
        "error": info.error.as_ref().map(|e| e.message.as_str()),
        "error_code": info.error.as_ref().and_then(|e| e.code.as_deref()),
        "remediation": info.error.as_ref().and_then(|e| e.remediation.as_deref()),
        "can_retry": info.can_retry(),
        "input": info.input_request.as_ref().map(|r| json!({
            "key": r.key, "message": r.message, "schema": r.schema, "deadline": r.deadline,
        })),
    })
}

/// The function's name from a task name (`my_server::Server::slow_square` → `slow_square`).
pub(super) fn short_name(task_name: &str) -> &str {
    task_name.rsplit("::").next().unwrap_or(task_name)
}
