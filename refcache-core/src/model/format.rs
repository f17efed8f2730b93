//! Response formats. The per-call override (`AsyncResponseFormat::scope`) is in `cache/call_options.rs`, with the
//! other per-call options.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::model::error::RefCacheError;

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
