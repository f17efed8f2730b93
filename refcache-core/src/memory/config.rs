//! The in-process backend's settings: [`MemoryBackendConfig`].

use std::time::Duration;

/// Settings of a [`MemoryTaskBackend`](crate::MemoryTaskBackend).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct MemoryBackendConfig {
    /// Tasks that may run at once; more wait as `pending`.
    pub max_workers: usize,
    /// Tasks that may wait; a submission beyond this is refused with `QueueFull`.
    pub max_queued: usize,
    /// How long a finished value stays when the task sets no TTL.
    pub default_ttl: Duration,
    /// How long a finished task record stays.
    pub task_ttl: Duration,
    /// At most this many finished task records are kept (oldest evicted first).
    pub max_task_records: u64,
    /// Capacity of the value store in bytes.
    pub max_capacity_bytes: u64,
    /// How long a cancelled async task may run on before it is aborted.
    pub cancel_grace: Duration,
    /// The execution timeout of tasks that set none (`None`: no limit).
    pub default_execution_timeout: Option<Duration>,
}

impl Default for MemoryBackendConfig {
    fn default() -> Self {
        Self {
            max_workers: 32,
            max_queued: 10_000,
            default_ttl: Duration::from_secs(3600),
            task_ttl: Duration::from_secs(24 * 3600),
            max_task_records: 100_000,
            max_capacity_bytes: 256 * 1024 * 1024,
            cancel_grace: Duration::from_secs(5),
            default_execution_timeout: None,
        }
    }
}
