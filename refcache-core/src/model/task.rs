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

/// Reads the text in place (no `String` per timestamp, #17 §3), accepting what `String` accepted (a string, or
/// UTF-8 bytes), parsed by `humantime::parse_rfc3339_weak` as before.
impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Text;

        // The parse's own error is made outside the visitor, as it was (serde_json adds no position to it).
        impl serde::de::Visitor<'_> for Text {
            type Value = Result<SystemTime, humantime::TimestampError>;

            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("a string")
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Self::Value, E> {
                Ok(humantime::parse_rfc3339_weak(text))
            }

            fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<Self::Value, E> {
                match std::str::from_utf8(bytes) {
                    Ok(text) => self.visit_str(text),
                    Err(_) => Err(E::invalid_value(serde::de::Unexpected::Bytes(bytes), &self)),
                }
            }
        }

        deserializer
            .deserialize_string(Text)?
            .map(Self)
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The deserializer before it read in place, the reference.
    fn as_before(json: &str) -> Result<Timestamp, String> {
        fn old<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Timestamp, D::Error> {
            let text = String::deserialize(deserializer)?;
            humantime::parse_rfc3339_weak(&text)
                .map(Timestamp)
                .map_err(serde::de::Error::custom)
        }
        let mut deserializer = serde_json::Deserializer::from_str(json);
        old(&mut deserializer)
            .and_then(|t| deserializer.end().map(|()| t))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn timestamps_write_the_same_text_and_read_every_form_they_read() {
        for (millis, text) in [
            (0, "1970-01-01T00:00:00.000Z"),
            (1_000_000_000_000, "2001-09-09T01:46:40.000Z"),
            (1_234_567_890_123, "2009-02-13T23:31:30.123Z"),
        ] {
            let at = Timestamp(SystemTime::UNIX_EPOCH + Duration::from_millis(millis));
            assert_eq!(serde_json::to_string(&at).unwrap(), format!("\"{text}\""));
            assert_eq!(
                serde_json::from_str::<Timestamp>(&format!("\"{text}\"")).unwrap(),
                at
            );
        }
        for json in [
            r#""2026-11-24T06:29:00.123Z""#,
            r#""2026-11-24T06:29:00Z""#,
            r#""2026-11-24 06:29:00Z""#,
            r#""2026-11-24T06:29:00.123456789Z""#,
            r#""2026-11-24T06:29:00""#,
            r#""2026-11-24T06:29:00.1Z""#,
            // Refused, with the same message:
            r#""""#,
            r#""yesterday""#,
            r#""2026-13-24T06:29:00Z""#,
            r#""2026-11-24T06:29:00+01:00""#,
            r#""2026-11-24T06:29:00.123Zjunk""#,
            r#"17"#,
            r#"null"#,
        ] {
            let ours = serde_json::from_str::<Timestamp>(json).map_err(|e| e.to_string());
            assert_eq!(ours, as_before(json), "{json}");
        }
        // Escaped text is read as its characters, as a `String` was.
        assert!(serde_json::from_str::<Timestamp>(r#""2026-11-24T06:29:00\u002e123Z""#).is_ok());
    }

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
