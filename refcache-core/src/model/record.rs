//! The task record that every backend keeps: [`TaskInfo`].

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::model::access::{AccessPolicy, Permissions};
use crate::model::actor::Actor;
use crate::model::input::InputRequest;
use crate::model::ref_id::RefId;
use crate::model::task::{RetryInfo, TaskError, TaskProgress, TaskStatus, Timestamp};

/// Everything a backend knows about one task, minus its value.
///
/// This is the task record: backends keep it while the task runs and for `task_ttl` after it ends. Polls, lists and
/// MCP `tasks/get` are all answered from it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TaskInfo {
    /// The reference the result lands under.
    pub ref_id: RefId,
    /// The task's stable name.
    pub task_name: Arc<str>,
    /// The namespace the task's value belongs to.
    pub namespace: Arc<str>,
    /// Where the task is.
    pub status: TaskStatus,
    /// The latest progress report.
    pub progress: Option<TaskProgress>,
    /// A status note from the backend, such as which retry comes next. Shown instead of the default message.
    pub status_message: Option<String>,
    /// When the task was accepted.
    pub created_at: Timestamp,
    /// When the record last changed (status, progress, output line, question): MCP's `lastUpdatedAt`.
    #[serde(default = "Timestamp::now")]
    pub updated_at: Timestamp,
    /// When the work started (first attempt).
    pub started_at: Option<Timestamp>,
    /// When the task reached a terminal status.
    pub finished_at: Option<Timestamp>,
    /// Why it failed, when it did.
    pub error: Option<TaskError>,
    /// How many retries have run.
    pub retry_count: u32,
    /// How many retries are allowed.
    pub max_retries: u32,
    /// One entry per failed attempt.
    pub retry_history: Vec<RetryInfo>,
    /// The session the task belongs to, when it has one.
    pub session_id: Option<String>,
    /// 1-based place in the queue while pending.
    pub queue_position: Option<usize>,
    /// Who may do what with the reference.
    #[serde(default = "AccessPolicy::shared_default")]
    pub policy: Arc<AccessPolicy>,
    /// The latest line the task wrote to its output log: its status message while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_line: Option<String>,
    /// The question the task waits on while its status is `input_required`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_request: Option<InputRequest>,
}

impl TaskInfo {
    /// A new record for a task that has just been accepted.
    pub fn new(
        ref_id: RefId,
        task_name: impl Into<Arc<str>>,
        namespace: impl Into<Arc<str>>,
    ) -> Self {
        let now = Timestamp::now();
        Self {
            ref_id,
            task_name: task_name.into(),
            namespace: namespace.into(),
            status: TaskStatus::Pending,
            progress: None,
            status_message: None,
            created_at: now,
            updated_at: now,
            started_at: None,
            finished_at: None,
            error: None,
            retry_count: 0,
            max_retries: 0,
            retry_history: Vec::new(),
            session_id: None,
            queue_position: None,
            policy: AccessPolicy::shared_default(),
            output_line: None,
            input_request: None,
        }
    }

    /// The message shown to a poller, by status.
    ///
    /// - processing: a backend note (such as the next retry), else the latest line of its output, else the latest
    ///   progress message, else `Task is processing (ref_id=<id>)`;
    /// - input_required: `Input required: <the question>`;
    /// - pending: `Task is queued and will start shortly`;
    /// - failed: `Task failed: <error>`;
    /// - cancelled: `Task was cancelled`;
    /// - complete: `Task completed successfully`.
    pub fn message(&self) -> String {
        match self.status {
            TaskStatus::Processing => {
                if let Some(note) = &self.status_message {
                    note.clone()
                } else if let Some(line) = &self.output_line {
                    line.clone()
                } else if let Some(msg) = self.progress.as_ref().and_then(|p| p.message.clone()) {
                    msg
                } else {
                    format!("Task is processing (ref_id={})", self.ref_id)
                }
            }
            TaskStatus::InputRequired => match &self.input_request {
                Some(request) => format!("Input required: {}", request.message),
                None => "Input required".to_owned(),
            },
            TaskStatus::Pending => "Task is queued and will start shortly".to_owned(),
            TaskStatus::Failed => {
                let error = self
                    .error
                    .as_ref()
                    .map_or("unknown error", |e| e.message.as_str());
                format!("Task failed: {error}")
            }
            TaskStatus::Cancelled => "Task was cancelled".to_owned(),
            TaskStatus::Complete => "Task completed successfully".to_owned(),
        }
    }

    /// Seconds left, from the observed rate: `(total - current) / (current / elapsed)`.
    ///
    /// `None` with no progress, no total, `current == 0`, or before the task has started.
    pub fn eta_seconds(&self) -> Option<f64> {
        let progress = self.progress.as_ref()?;
        let total = progress.total?;
        if progress.current <= 0.0 || self.status != TaskStatus::Processing {
            return None;
        }
        let elapsed = self.started_at?.elapsed().as_secs_f64();
        let rate = progress.current / elapsed.max(1e-9);
        Some(((total - progress.current).max(0.0)) / rate)
    }

    /// What `actor` may do with this task's reference.
    pub fn permissions_for(&self, actor: &Actor) -> Permissions {
        self.policy
            .permissions_for(actor, &self.namespace, self.session_id.as_deref())
    }

    /// The record as an actor with `permissions` may see it: without `READ`, the error's structured details (where a
    /// timed-out task's partial result lives) are left out, for they may hold the value.
    pub fn redacted_for(mut self, permissions: Permissions) -> Self {
        if !permissions.contains(Permissions::READ)
            && let Some(error) = &mut self.error
        {
            error.details = None;
        }
        self
    }

    /// Whether `retry_task` can re-run this task: it has failed.
    pub fn can_retry(&self) -> bool {
        self.status == TaskStatus::Failed
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn eta_needs_progress_a_total_and_a_start() {
        let mut info = TaskInfo::new(RefId::generate("t"), "t", "public");
        info.status = TaskStatus::Processing;
        info.started_at = Some(Timestamp(
            std::time::SystemTime::now() - Duration::from_secs(10),
        ));
        assert_eq!(info.eta_seconds(), None, "no progress");
        info.progress = Some(TaskProgress::new(0.0, Some(100.0), None));
        assert_eq!(info.eta_seconds(), None, "current == 0");
        info.progress = Some(TaskProgress::new(50.0, None, None));
        assert_eq!(info.eta_seconds(), None, "no total");
        info.progress = Some(TaskProgress::new(25.0, Some(100.0), None));
        let eta = info.eta_seconds().unwrap();
        assert!(
            (29.0..=31.5).contains(&eta),
            "25 done in 10 s, 75 to go: about 30 s, got {eta}"
        );
        info.status = TaskStatus::Complete;
        assert_eq!(info.eta_seconds(), None, "only while processing");
    }
}
