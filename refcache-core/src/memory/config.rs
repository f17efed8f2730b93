//! The in-process backend's settings: [`MemoryBackendConfig`].

use std::time::Duration;

/// The default bound on the bytes of finished task records: 64 MiB, a quarter of the value store's default, and 64
/// failed calls at the default argument limit (1 MiB).
pub const DEFAULT_MAX_RECORD_BYTES: u64 = 64 * 1024 * 1024;

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
    /// At most this many bytes of finished task records are kept (oldest evicted first, as for the count): what a
    /// record holds that grows with input (a failed task's arguments, kept to re-run it; its error and retry
    /// history) plus 512 bytes each. A record heavier than the bound alone is kept until the next one comes.
    pub max_record_bytes: u64,
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
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
            max_capacity_bytes: 256 * 1024 * 1024,
            cancel_grace: Duration::from_secs(5),
            default_execution_timeout: None,
        }
    }
}
