//! Task states and what a task reports: status, progress, retries, errors, timestamps. The record that holds them
//! is `record.rs`.

use std::fmt;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Where a task is in its life.
///
/// `pending → processing → complete | failed | cancelled`. The last three are terminal and sticky: once a task is in
/// one of them it never leaves it under the same execution. A processing task that asks for input
/// ([`TaskContext::ask`](crate::TaskContext::ask)) is `input_required` until the answer comes, then processing
/// again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskStatus {
    /// Accepted but waiting for a free worker (queued behind a concurrency limit).
    Pending,
    /// The work has started.
    Processing,
    /// The work waits for an answer to the question on its record ([`TaskInfo::input_request`](crate::TaskInfo)).
    #[serde(rename = "input_required")]
    InputRequired,
    /// The work finished and its value is stored.
    Complete,
    /// The work returned an error or panicked.
    Failed,
    /// The task was cancelled; any late result is discarded.
    Cancelled,
}

impl TaskStatus {
    /// Whether the status is terminal (complete, failed or cancelled).
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Complete | Self::Failed | Self::Cancelled)
    }

    /// The wire name: `pending`, `processing`, `input_required`, `complete`, `failed` or `cancelled`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Processing => "processing",
            Self::InputRequired => "input_required",
            Self::Complete => "complete",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// The status whose wire name ([`as_str`](Self::as_str)) is `name`, or `None`.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "pending" => Self::Pending,
            "processing" => Self::Processing,
            "input_required" => Self::InputRequired,
            "complete" => Self::Complete,
            "failed" => Self::Failed,
            "cancelled" => Self::Cancelled,
            _ => return None,
        })
    }
}

impl fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A progress report: `current` out of `total`, with an optional message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskProgress {
    /// Work done so far.
    pub current: f64,
    /// Total work, when known.
    pub total: Option<f64>,
    /// A human-readable note, such as `counted 3 of 10`.
    pub message: Option<String>,
}

impl TaskProgress {
    /// A report of `current` out of `total`.
    pub fn new(current: f64, total: Option<f64>, message: Option<String>) -> Self {
        Self {
            current,
            total,
            message,
        }
    }

    /// `current / total * 100`, when `total > 0`.
    pub fn percentage(&self) -> Option<f64> {
        match self.total {
            Some(total) if total > 0.0 => Some(self.current / total * 100.0),
            _ => None,
        }
    }
}

/// One failed attempt, kept in a task's retry history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetryInfo {
    /// The attempt that failed, counting from 1.
    pub attempt: u32,
    /// The error text of that attempt.
    pub error: String,
    /// When it failed.
    pub timestamp: Timestamp,
}

/// Why a task failed: the error text plus optional machine-readable parts.
///
/// A user error becomes a `TaskError` whose `message` is the error's `Display` text. A panic becomes
/// `panicked: <message>` with code `PANIC`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskError {
    /// The error text.
    pub message: String,
    /// A stable code, such as `PANIC` or `TIMEOUT`, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// Structured details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
    /// What the caller can do about it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remediation: Option<String>,
    /// Whether a retry may help. Errors are retryable unless marked otherwise (see [`Retryable`]).
    #[serde(default = "yes")]
    pub retryable: bool,
}

fn yes() -> bool {
    true
}

/// Lets a `#[cached]` function's error type say whether a retry may help.
///
/// Errors whose type does not implement it are retried (when `max_retries` allows). Implement it to fail at once
/// on errors a retry cannot fix, or return a [`TaskError`] marked [`permanent`](TaskError::permanent):
///
/// ```
/// #[derive(Debug, thiserror::Error)]
/// enum FetchError {
///     #[error("upstream busy")]
///     Busy,
///     #[error("no such document")]
///     NotFound,
/// }
///
/// impl refcache_core::Retryable for FetchError {
///     fn is_retryable(&self) -> bool {
///         matches!(self, FetchError::Busy)
///     }
/// }
/// ```
pub trait Retryable {
    /// Whether a retry may help.
    fn is_retryable(&self) -> bool;
}

impl Retryable for TaskError {
    fn is_retryable(&self) -> bool {
        self.retryable
    }
}

impl TaskError {
    /// An error with only a message.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            code: None,
            details: None,
            remediation: None,
            retryable: true,
        }
    }

    /// The same error, marked so that it is never retried.
    pub fn permanent(mut self) -> Self {
        self.retryable = false;
        self
    }

    /// The same error with structured details.
    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    /// The same error with a remediation hint.
    pub fn with_remediation(mut self, remediation: impl Into<String>) -> Self {
        self.remediation = Some(remediation.into());
        self
    }

    /// The same error with a code.
    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.code = Some(code.into());
        self
    }

    /// The failure of a function that panicked, from the panic payload.
    pub fn panicked(payload: &(dyn std::any::Any + Send)) -> Self {
        let message = if let Some(s) = payload.downcast_ref::<&'static str>() {
            (*s).to_owned()
        } else if let Some(s) = payload.downcast_ref::<String>() {
            s.clone()
        } else {
            "<non-string panic payload>".to_owned()
        };
        Self::new(format!("panicked: {message}"))
            .with_code("PANIC")
            .permanent()
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for TaskError {}

/// A wall-clock instant, serialized as RFC 3339 UTC (`2026-11-24T06:29:00.123Z`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub SystemTime);

impl Timestamp {
    /// Now, by the wall clock.
    pub fn now() -> Self {
        Self(SystemTime::now())
    }

    /// How long ago this was, or zero if it is in the future.
    pub fn elapsed(&self) -> Duration {
        self.0.elapsed().unwrap_or_default()
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_rfc3339_millis(self.0))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_rfc3339_weak(&text)
            .map(Self)
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentage_needs_a_positive_total() {
        assert_eq!(
            TaskProgress::new(1.0, Some(4.0), None).percentage(),
            Some(25.0)
        );
        assert_eq!(TaskProgress::new(1.0, Some(0.0), None).percentage(), None);
        assert_eq!(TaskProgress::new(1.0, None, None).percentage(), None);
    }
}
