//! The tasks this process holds (submitted here in `local` mode, taken off the stream in `workers` mode) and the
//! scheduler that orders them; `runner.rs` starts, runs and releases them.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use refcache_core::{LocalJob, RefId, Scheduler, TaskInfo, TaskSpec};
use tokio_util::sync::CancellationToken;

/// The tasks this process holds.
pub(crate) struct RunState {
    pub(super) sched: Scheduler,
    pub(super) held: HashMap<RefId, Held>,
    /// Shutting down: no queued task starts here any more (it is handed back to the stream).
    pub(super) draining: bool,
    /// Tasks whose submission from here is claiming them (`local` mode, a slot [`reserve`]d), not held yet:
    /// `true` once an event said one ended or was deleted meanwhile (a cancel from another replica can land
    /// between the submit script and the hold), so that its record is read before it runs.
    ///
    /// [`reserve`]: super::state::Inner::reserve
    pub(super) arriving: HashMap<RefId, bool>,
    /// While a `take` (which may claim a task for this worker) is on its way: the tasks an event said ended or
    /// were deleted meanwhile (a cancel can land between the take and the hold), so that a task the take claimed
    /// reads its record before it runs.
    pub(super) taking: Option<HashSet<RefId>>,
}

pub(super) struct Held {
    pub(super) spec: Arc<TaskSpec>,
    pub(super) job: Option<LocalJob>,
    /// The stream entry it came in (`workers` mode).
    pub(super) msg: Option<String>,
    /// Taken over from a lost worker.
    pub(super) redelivered: bool,
    pub(super) cancel: CancellationToken,
    pub(super) running: bool,
    /// The record as submitted (by this process in `local` mode, or as a first delivery's stream entry carries it
    /// in `workers` mode): a pending record is written by nobody else until it is claimed (a cancel or a delete
    /// makes the claim fail), so the runner claims from it without reading it.
    pub(super) record: Option<TaskInfo>,
    /// Claimed already (`record` is the `processing` record the `take` script wrote): it runs without a claim.
    pub(super) claimed: bool,
    /// Claimed, and an event said it ended or was deleted before it was held here: its record is read first, and
    /// it runs only if still live.
    pub(super) recheck: bool,
    /// Its terminal script is on its way: a `complete` event for it is this process's own.
    pub(super) ending: bool,
}

impl RunState {
    pub(crate) fn new(max_workers: usize) -> Self {
        Self {
            sched: Scheduler::new(max_workers).with_backend("redis"),
            held: HashMap::new(),
            draining: false,
            arriving: HashMap::new(),
            taking: None,
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

    /// The tasks held that came off the stream: ref id, stream entry, and whether it runs here already.
    pub(crate) fn entries(&self) -> Vec<(RefId, String, bool)> {
        self.held
            .iter()
            .filter_map(|(r, h)| h.msg.clone().map(|m| (r.clone(), m, h.running)))
            .collect()
    }

    /// From now on no queued task starts here.
    pub(crate) fn drain(&mut self) {
        self.draining = true;
    }

    /// The stream entries held, with their ref ids (for lease renewal).
    pub(crate) fn messages(&self) -> Vec<(String, RefId)> {
        self.held
            .iter()
            .filter_map(|(r, h)| h.msg.clone().map(|m| (m, r.clone())))
            .collect()
    }
}
