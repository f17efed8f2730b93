//! [`RefCache::health`]: one round trip to the backend, timed, for a health endpoint or a readiness probe.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::cache::RefCache;

/// The answer of [`RefCache::health`].
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Health {
    /// The backend's name (`memory`, `redis`, `postgres`).
    pub backend: String,
    /// Whether the backend answered.
    pub ok: bool,
    /// How long the round trip took (until the error, when it failed).
    #[serde(rename = "round_trip_ms", serialize_with = "as_millis")]
    pub round_trip: Duration,
    /// Why the backend did not answer; its message names what to check.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn as_millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1000.0)
}

impl RefCache {
    /// Pings the backend once (Redis `PING`, Postgres `SELECT 1`; the in-process backend answers at once) and
    /// times the round trip. Never fails: a backend that does not answer is `ok: false` with the error's message.
    ///
    /// ```
    /// # #[tokio::main] async fn main() {
    /// let health = refcache_core::RefCache::new().health().await;
    /// assert!(health.ok);
    /// assert_eq!(health.backend, "memory");
    /// # }
    /// ```
    pub async fn health(&self) -> Health {
        let started = Instant::now();
        let answer = self.backend().ping().await;
        Health {
            backend: self.backend().name().to_owned(),
            ok: answer.is_ok(),
            round_trip: started.elapsed(),
            error: answer.err().map(|e| e.to_string()),
        }
    }
}
