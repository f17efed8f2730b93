//! How a backend enters the suite: the [`Settings`] it is built with, the [`Fixture`] that holds it, and the
//! [`Factory`] that makes one.

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use crate::contract::backend::TaskBackend;

/// Limits the suite asks a backend to be built with.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Settings {
    /// Tasks running at once.
    pub max_workers: usize,
    /// Tasks waiting at most.
    pub max_queued: usize,
    /// Grace period of a cancelled task.
    pub cancel_grace: Duration,
    /// How long a finished task record stays (`task_ttl`); a complete one stays at least as long as its value.
    pub task_ttl: Duration,
}

/// A backend under test, plus whatever must live as long as it (a server process, a temp dir).
pub struct Fixture {
    /// The backend.
    pub backend: Arc<dyn TaskBackend>,
    _guard: Option<Box<dyn Any + Send + Sync>>,
}

impl Fixture {
    /// A fixture of `backend` alone.
    pub fn new(backend: Arc<dyn TaskBackend>) -> Self {
        Self {
            backend,
            _guard: None,
        }
    }

    /// A fixture that keeps `guard` alive as long as the backend.
    pub fn with_guard(backend: Arc<dyn TaskBackend>, guard: impl Any + Send + Sync) -> Self {
        Self {
            backend,
            _guard: Some(Box::new(guard)),
        }
    }
}

/// How the suite builds a backend.
pub type Factory = fn(Settings) -> BoxFuture<'static, Fixture>;
