//! The tasks this process holds, as a table beside the shared [`Scheduler`] that starts them. What a held task
//! goes through (the start, the run, the end) is `runner.rs`.

use std::collections::HashMap;
use std::sync::Arc;

use refcache_core::{LocalJob, RefId, Scheduler, TaskInfo, TaskSpec};
use tokio_util::sync::CancellationToken;

/// The tasks this process holds.
pub(crate) struct RunState {
    pub(super) sched: Scheduler,
    pub(super) held: HashMap<RefId, Held>,
}

pub(super) struct Held {
    pub(super) spec: Arc<TaskSpec>,
    pub(super) job: Option<LocalJob>,
    /// Its record as the row held it when this process took the task (submitted or claimed), so that the start
    /// need not read it again; `None`: read it at the start.
    pub(super) info: Option<TaskInfo>,
    pub(super) cancel: CancellationToken,
    pub(super) running: bool,
}

impl RunState {
    pub(crate) fn new(max_workers: usize) -> Self {
        Self {
            sched: Scheduler::new(max_workers).with_backend("postgres"),
            held: HashMap::new(),
        }
    }

    pub(crate) fn running(&self) -> usize {
        self.sched.running()
    }

    pub(crate) fn capacity(&self) -> usize {
        self.sched.capacity()
    }

    pub(crate) fn len(&self) -> usize {
        self.held.len()
    }
}
