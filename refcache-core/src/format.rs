//! Response formats, and the per-call override.

use std::cell::Cell;
use std::fmt;
use std::future::Future;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::RefCacheError;

/// How much an async (not yet complete) response says.
///
/// - `minimal`: `{ref_id, status, is_complete, is_async}`;
/// - `standard`: minimal plus `started_at`, `progress` and `message`;
/// - `full`: standard plus `eta_seconds`, `error`, `retry_count`, `can_retry` and `expected_schema`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AsyncResponseFormat {
    /// Status only.
    Minimal,
    /// Status, start time, progress and a message. The default.
    #[default]
    Standard,
    /// Everything, including the error, retries and the expected schema.
    Full,
}

impl AsyncResponseFormat {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Minimal => "minimal",
            Self::Standard => "standard",
            Self::Full => "full",
        }
    }

    /// Runs `fut` with every `#[cached]` call inside it answering in `format`, whatever its attribute says.
    ///
    /// The override is task-local: it follows `fut` across threads and does not leak to other tasks.
    pub async fn scope<F: Future>(self, fut: F) -> F::Output {
        let _active = crate::session::ScopeGuard::enter();
        FORMAT_OVERRIDE.scope(self, fut).await
    }

    /// The synchronous twin of [`scope`](Self::scope): every `#[cached]` call made by `f` on this thread answers in
    /// `format`.
    pub fn sync_scope<R>(self, f: impl FnOnce() -> R) -> R {
        struct Restore(Option<AsyncResponseFormat>);
        impl Drop for Restore {
            fn drop(&mut self) {
                SYNC_OVERRIDE.with(|cell| cell.set(self.0));
            }
        }
        let _active = crate::session::ScopeGuard::enter();
        let _restore = Restore(SYNC_OVERRIDE.with(|cell| cell.replace(Some(self))));
        f()
    }

    /// The override in effect for the current call, if any.
    pub fn current_override() -> Option<Self> {
        if !crate::session::any_scope() {
            return None;
        }
        FORMAT_OVERRIDE
            .try_with(|f| *f)
            .ok()
            .or_else(|| SYNC_OVERRIDE.with(Cell::get))
    }
}

tokio::task_local! {
    static FORMAT_OVERRIDE: AsyncResponseFormat;
}

thread_local! {
    static SYNC_OVERRIDE: Cell<Option<AsyncResponseFormat>> = const { Cell::new(None) };
}

impl fmt::Display for AsyncResponseFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AsyncResponseFormat {
    type Err = RefCacheError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "minimal" => Ok(Self::Minimal),
            "standard" => Ok(Self::Standard),
            "full" => Ok(Self::Full),
            other => Err(RefCacheError::InvalidFormat {
                value: other.chars().take(100).collect(),
            }),
        }
    }
}
