//! Operations (feature `prometheus`): the Prometheus exporter, and the `/metrics` and `/health` routes for an
//! axum router.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use refcache_core::RefCache;
//!
//! let metrics = refcache_core::ops::install_prometheus()?; // once, at startup
//! let cache = RefCache::new();
//! let app = axum::Router::new() // your routes
//!     .merge(refcache_core::ops::routes(cache, Some(metrics)));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:9000").await?;
//! axum::serve(listener, app).await?;
//! # Ok(()) }
//! ```
//!
//! `GET /metrics` answers the Prometheus text format (the names are in `docs/operations.md`). `GET /health` answers
//! [`RefCache::health`] as JSON, `200` when the backend answered and `503` when it did not:
//! `{"backend":"redis","ok":true,"round_trip_ms":0.41}`. Neither route checks who asks: mount them on an address
//! only your monitoring reaches, or behind your own auth layer (`Router::route_layer`).

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusBuilder;
pub use metrics_exporter_prometheus::PrometheusHandle;

use crate::cache::RefCache;

/// How often the exporter's upkeep runs (it drains histogram buckets; without it they grow).
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Why the exporter could not be installed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpsError {
    /// The process already has a `metrics` recorder.
    #[error(
        "cannot install the Prometheus recorder: {0}; a process has one global metrics recorder, so call \
         `install_prometheus` once, at startup, and share its handle"
    )]
    Install(String),
}

/// Installs a Prometheus recorder as the process's `metrics` recorder and returns its handle, which renders the
/// text format. Inside a tokio runtime it also starts the exporter's upkeep (every 5 s); outside one, call
/// `handle.run_upkeep()` now and then yourself.
///
/// Install it before the first metric is emitted, or the events before it are not seen.
pub fn install_prometheus() -> Result<PrometheusHandle, OpsError> {
    let handle = PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| OpsError::Install(e.to_string()))?;
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        let upkeep = handle.clone();
        runtime.spawn(async move {
            let mut every = tokio::time::interval(UPKEEP_EVERY);
            loop {
                every.tick().await;
                upkeep.run_upkeep();
            }
        });
    }
    Ok(handle)
}

#[derive(Clone)]
struct Ops {
    cache: RefCache,
    metrics: Option<PrometheusHandle>,
}

/// `GET /health` (always) and `GET /metrics` (when given the exporter's handle), to merge into an axum router.
pub fn routes<S: Clone + Send + Sync + 'static>(
    cache: RefCache,
    metrics: Option<PrometheusHandle>,
) -> Router<S> {
    let with_metrics = metrics.is_some();
    let router = Router::new().route("/health", get(health));
    let router = if with_metrics {
        router.route("/metrics", get(render))
    } else {
        router
    };
    router.with_state(Ops { cache, metrics })
}

async fn health(State(ops): State<Ops>) -> Response {
    let health = ops.cache.health().await;
    let status = if health.ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::to_string(&health).unwrap_or_else(|_| r#"{"ok":false}"#.to_owned());
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn render(State(ops): State<Ops>) -> Response {
    let text = ops
        .metrics
        .as_ref()
        .map(PrometheusHandle::render)
        .unwrap_or_default();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}
