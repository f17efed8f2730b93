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

/// Chained setters, for the settings people set: `MemoryBackendConfig::default().max_workers(8)`. (The struct is
/// `#[non_exhaustive]`, so a literal cannot build it outside this crate; its fields stay public to read and set.)
impl MemoryBackendConfig {
    /// Tasks that may run at once (default 32); more wait as `pending`.
    pub fn max_workers(mut self, n: usize) -> Self {
        self.max_workers = n;
        self
    }

    /// Tasks that may wait (default 10,000); a submission beyond this is refused with `QueueFull`.
    pub fn max_queued(mut self, n: usize) -> Self {
        self.max_queued = n;
        self
    }

    /// How long a finished value stays when the task sets no TTL (default 1 h).
    pub fn default_ttl(mut self, ttl: Duration) -> Self {
        self.default_ttl = ttl;
        self
    }

    /// How long a finished task record stays (default 24 h).
    pub fn task_ttl(mut self, ttl: Duration) -> Self {
        self.task_ttl = ttl;
        self
    }

    /// At most this many finished task records are kept, oldest evicted first (default 100,000).
    pub fn max_task_records(mut self, n: u64) -> Self {
        self.max_task_records = n;
        self
    }

    /// The bound on finished task records in bytes (default 64 MiB; see the field).
    pub fn max_record_bytes(mut self, bytes: u64) -> Self {
        self.max_record_bytes = bytes;
        self
    }

    /// Capacity of the value store in bytes (default 256 MiB).
    pub fn max_capacity_bytes(mut self, bytes: u64) -> Self {
        self.max_capacity_bytes = bytes;
        self
    }

    /// How long a cancelled async task may run on before it is aborted (default 5 s).
    pub fn cancel_grace(mut self, grace: Duration) -> Self {
        self.cancel_grace = grace;
        self
    }

    /// The execution timeout of tasks that set none (default `None`: no limit).
    pub fn default_execution_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.default_execution_timeout = timeout;
        self
    }
}
