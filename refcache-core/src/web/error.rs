//! What the page and the API answer when a request cannot be served, with the HTTP status of each.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::model::error::{BackendError, RefCacheError};

/// Why a request to the page or the API failed. Its text is what the client is shown.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebError {
    /// No principal, and tokens are configured (`401`).
    #[error(
        "missing or unknown token: send `Authorization: Bearer <token>`, or sign in at /login (the page sets a \
         cookie)"
    )]
    Unauthorized,
    /// A request that changes something came from another site's page, or cannot show it came from this
    /// server's (`403`): it carries no bearer token, so the browser may have added the cookie by itself.
    #[error(
        "cross-site request refused: a request that changes something and is signed in by a cookie must come \
         from this server's own page (the browser sends `Sec-Fetch-Site: same-origin`, or an `Origin` naming this \
         server); {why}. A script sends `Authorization: Bearer <token>` instead"
    )]
    CrossSite {
        /// What the request lacks, or what it says instead.
        why: String,
    },
    /// A field of the request is malformed or too large (`400`).
    #[error("invalid `{field}`: {message}")]
    BadRequest {
        /// The field.
        field: &'static str,
        /// What is wrong, and what is expected.
        message: String,
    },
    /// The server does not run commands (`404`).
    #[error(
        "this server runs no commands from the page: the server enables them with `WebRefCache::with_commands`"
    )]
    NoCommands,
    /// What the cache answered: `404` for an unknown or foreign id, `400` for a bad option or an answer that does
    /// not fit the question (naming the field), `409` for a task that cannot be retried or is not waiting for an
    /// answer (with its status), `503` when the backend is unavailable.
    #[error(transparent)]
    Cache(#[from] RefCacheError),
}

impl WebError {
    /// A `400` for `field`.
    pub(super) fn bad(field: &'static str, message: impl Into<String>) -> Self {
        Self::BadRequest {
            field,
            message: message.into(),
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::CrossSite { .. } => StatusCode::FORBIDDEN,
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::NoCommands => StatusCode::NOT_FOUND,
            Self::Cache(e) => match e {
                RefCacheError::NotFound | RefCacheError::MalformedRefId { .. } => {
                    StatusCode::NOT_FOUND
                }
                RefCacheError::InvalidOption { .. }
                | RefCacheError::InvalidFormat { .. }
                | RefCacheError::ArgumentsTooLarge { .. }
                | RefCacheError::Argument { .. }
                | RefCacheError::Namespace(_)
                | RefCacheError::UnresolvedReference { .. }
                | RefCacheError::ResolvedArgument { .. }
                | RefCacheError::ReferenceCycle { .. }
                | RefCacheError::TooManyReferences { .. }
                | RefCacheError::ResolvedTooLarge { .. }
                | RefCacheError::InvalidAnswer { .. } => StatusCode::BAD_REQUEST,
                RefCacheError::PermissionDenied { .. } | RefCacheError::CallDenied { .. } => {
                    StatusCode::FORBIDDEN
                }
                RefCacheError::NotRetryable { .. }
                | RefCacheError::AlreadyRunning { .. }
                | RefCacheError::NotWaiting { .. } => StatusCode::CONFLICT,
                RefCacheError::TooManyTasks { .. } => StatusCode::TOO_MANY_REQUESTS,
                RefCacheError::Backend(BackendError::InvalidCursor(_)) => StatusCode::BAD_REQUEST,
                RefCacheError::Backend(_) => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            },
        }
    }

    /// The text shown: a malformed id reads as an unknown one, so that ids cannot be probed.
    pub(super) fn text(&self) -> String {
        match self {
            Self::Cache(RefCacheError::MalformedRefId { .. }) => {
                RefCacheError::NotFound.to_string()
            }
            other => other.to_string(),
        }
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.text() }).to_string();
        let mut response = (
            self.status(),
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response();
        if matches!(self, Self::Unauthorized) {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}
