//! Which pending task starts next: `max_workers` slots, priority (highest first, FIFO within a priority), and the
//! per-task-name `max_concurrent` limit.
//!
//! A plain data structure, with no clock, I/O or locking of its own: the in-process backend keeps one under its
//! state lock, and a Redis worker keeps one for the tasks it has taken off the stream. Both start tasks in the same
//! order, so the conformance suite's queue tests hold for both.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::contract::metrics;
use crate::model::key::{KeyHasher, KeyMap};
use crate::model::ref_id::RefId;

type QueueKey = (Reverse<i32>, u64);

/// Task names whose running count stays in the map at zero ([`Scheduler::finished`]).
const IDLE_NAMES_KEPT: usize = 64;

struct Entry {
    ref_id: RefId,
    name: Arc<str>,
    max_concurrent: Option<u32>,
}

/// A priority queue of pending tasks in front of a fixed number of slots.
pub struct Scheduler {
    max_workers: usize,
    queue: BTreeMap<QueueKey, Entry>,
    queued: KeyMap<RefId, QueueKey>,
    running: usize,
    /// Running tasks by name, hashed with the seeded [`KeyHasher`] rather than SipHash: every start and end of a
    /// task counts here (three hashes of its name per task), and the names are the process's own task names.
    running_by_name: HashMap<Arc<str>, u32, KeyHasher>,
    seq: u64,
    /// The `backend` label of the `refcache_tasks_queued` gauge.
    backend: &'static str,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("max_workers", &self.max_workers)
            .field("queued", &self.queue.len())
            .field("running", &self.running)
            .finish()
    }
}

/// Tasks still queued when the scheduler goes leave the gauge.
impl Drop for Scheduler {
    fn drop(&mut self) {
        for entry in self.queue.values() {
            metrics::gauge(metrics::TASKS_QUEUED, &entry.name, self.backend, -1.0);
        }
    }
}

impl Scheduler {
    /// A scheduler with `max_workers` slots (at least 1).
    pub fn new(max_workers: usize) -> Self {
        Self {
            max_workers: max_workers.max(1),
            queue: BTreeMap::new(),
            queued: KeyMap::default(),
            running: 0,
            running_by_name: HashMap::default(),
            seq: 0,
            backend: "memory",
        }
    }

    /// The same scheduler, labelled `backend` in metrics (`memory` unless set).
    pub fn with_backend(mut self, backend: &'static str) -> Self {
        self.backend = backend;
        self
    }

    /// Queues a task: highest priority first, FIFO within a priority. `max_concurrent` limits how many tasks of
    /// its `name` run at once.
    pub fn enqueue(
        &mut self,
        ref_id: RefId,
        name: Arc<str>,
        priority: i32,
        max_concurrent: Option<u32>,
    ) {
        self.remove(&ref_id);
        self.seq += 1;
        let qkey = (Reverse(priority), self.seq);
        self.queued.insert(ref_id.clone(), qkey);
        metrics::gauge(metrics::TASKS_QUEUED, &name, self.backend, 1.0);
        self.queue.insert(
            qkey,
            Entry {
                ref_id,
                name,
                max_concurrent,
            },
        );
    }

    /// Takes a queued task out of the queue (cancelled, deleted). Answers whether it was queued.
    pub fn remove(&mut self, ref_id: &RefId) -> bool {
        match self.queued.remove(ref_id) {
            Some(qkey) => {
                if let Some(entry) = self.queue.remove(&qkey) {
                    metrics::gauge(metrics::TASKS_QUEUED, &entry.name, self.backend, -1.0);
                }
                true
            }
            None => false,
        }
    }

    /// The task's 1-based place in the queue, while it is queued.
    pub fn position(&self, ref_id: &RefId) -> Option<usize> {
        let qkey = self.queued.get(ref_id)?;
        Some(self.queue.range(..qkey).count() + 1)
    }

    /// Tasks waiting.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Slots taken.
    pub fn running(&self) -> usize {
        self.running
    }

    /// The number of slots.
    pub fn capacity(&self) -> usize {
        self.max_workers
    }

    /// Whether every slot is taken.
    pub fn is_full(&self) -> bool {
        self.running >= self.max_workers
    }

    /// Counts a new task of `name` as running at once, without queueing it, when it would start first anyway:
    /// a slot is free, nothing waits in the queue, and the task has no `max_concurrent` (so no limit of its name
    /// can hold it back). Answers whether it did; if not, the caller [`enqueue`](Self::enqueue)s it as usual. The
    /// caller must call [`finished`](Self::finished) with `name` when it ends, as for
    /// [`start_next`](Self::start_next).
    ///
    /// The order is the queue's: a task started here is one that `enqueue` then `start_next` would have handed
    /// out at once, with the same count of running tasks by name.
    pub fn start_now(&mut self, name: &Arc<str>, max_concurrent: Option<u32>) -> bool {
        if self.is_full() || !self.queue.is_empty() || max_concurrent.is_some() {
            return false;
        }
        self.running += 1;
        self.count_running(name);
        true
    }

    /// The next task that may start now, taken out of the queue and counted as running; `None` when every slot is
    /// taken or every queued task's name is at its `max_concurrent`. Tasks start in queue order, except that a task
    /// whose name is at its limit waits and the tasks behind it may pass it.
    ///
    /// The caller must call [`finished`](Self::finished) with the returned name when the task ends, or at once if
    /// it does not start after all.
    pub fn start_next(&mut self) -> Option<(RefId, Arc<str>)> {
        if self.is_full() {
            return None;
        }
        let qkey = self
            .queue
            .iter()
            .find(|(_, e)| {
                e.max_concurrent.is_none_or(|limit| {
                    self.running_by_name.get(&e.name).copied().unwrap_or(0) < limit
                })
            })
            .map(|(k, _)| *k)?;
        let entry = self.queue.remove(&qkey).expect("found above");
        self.queued.remove(&entry.ref_id);
        metrics::gauge(metrics::TASKS_QUEUED, &entry.name, self.backend, -1.0);
        self.running += 1;
        self.count_running(&entry.name);
        Some((entry.ref_id, entry.name))
    }

    /// A task of `name` that [`start_next`](Self::start_next) handed out has ended: its slot is free.
    pub fn finished(&mut self, name: &str) {
        self.running = self.running.saturating_sub(1);
        if let Some(n) = self.running_by_name.get_mut(name) {
            *n = n.saturating_sub(1);
            // A name that ran nothing for now keeps its entry, at zero, while there are few names: the next task of
            // the same name (most often the next one) then counts itself in place, with no removal and insertion
            // (a rehash of the table's slots) per task. Past that many names, the idle ones go.
            if *n == 0 && self.running_by_name.len() > IDLE_NAMES_KEPT {
                self.running_by_name.remove(name);
            }
        }
    }

    /// One more task of `name` running.
    fn count_running(&mut self, name: &Arc<str>) {
        match self.running_by_name.get_mut(&**name) {
            Some(n) => *n += 1,
            None => {
                self.running_by_name.insert(name.clone(), 1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> RefId {
        RefId::generate("t")
    }

    #[test]
    fn priority_then_fifo_within_slots() {
        let mut s = Scheduler::new(1);
        let (a, b, c) = (id(), id(), id());
        s.enqueue(a.clone(), "x".into(), 0, None);
        s.enqueue(b.clone(), "x".into(), 0, None);
        s.enqueue(c.clone(), "x".into(), 5, None);
        assert_eq!(s.position(&b), Some(3));
        assert_eq!(s.start_next().unwrap().0, c);
        assert!(s.start_next().is_none(), "one slot");
        s.finished("x");
        assert_eq!(s.start_next().unwrap().0, a);
        assert!(s.remove(&b));
        assert_eq!(s.queued(), 0);
    }

    #[test]
    fn a_name_at_zero_keeps_its_entry_only_while_names_are_few_and_limits_still_hold() {
        let mut s = Scheduler::new(1000);
        let x: Arc<str> = "x".into();
        for _ in 0..3 {
            assert!(s.start_now(&x, None));
            s.finished("x");
        }
        assert_eq!(s.running_by_name.get("x"), Some(&0), "kept at zero");
        // At zero, it counts as nothing running: a limit of one lets one start, and only one.
        s.enqueue(id(), x.clone(), 0, Some(1));
        s.enqueue(id(), x.clone(), 0, Some(1));
        assert!(s.start_next().is_some());
        assert!(s.start_next().is_none());
        s.finished("x");
        assert!(s.start_next().is_some());
        s.finished("x");
        // Many names: the idle ones go.
        for i in 0..200 {
            let name: Arc<str> = format!("n{i}").into();
            assert!(s.start_now(&name, None));
            s.finished(&name);
        }
        assert!(s.running_by_name.len() <= IDLE_NAMES_KEPT + 1);
        assert_eq!(s.running(), 0);
    }

    #[test]
    fn start_now_only_when_enqueue_then_start_next_would_start_it() {
        // Free slot, empty queue, no limit: started, and counted as start_next counts.
        let mut s = Scheduler::new(2);
        let name: Arc<str> = "x".into();
        assert!(s.start_now(&name, None));
        assert_eq!((s.running(), s.queued()), (1, 0));
        // A limit of its name: queued as usual, even with a slot free.
        assert!(!s.start_now(&name, Some(5)));
        let a = id();
        s.enqueue(a.clone(), name.clone(), 0, Some(5));
        // Something queued: a new task goes behind it.
        assert!(!s.start_now(&name, None));
        assert_eq!(s.start_next().unwrap().0, a);
        // Every slot taken.
        assert!(s.is_full());
        assert!(!s.start_now(&name, None));
        // A task started at once is counted by name: the limit of its name sees it.
        s.finished("x");
        s.finished("x");
        let mut s = Scheduler::new(4);
        assert!(s.start_now(&name, None));
        let b = id();
        s.enqueue(b.clone(), name.clone(), 0, Some(1));
        assert!(
            s.start_next().is_none(),
            "one of `x` runs, and b allows one"
        );
        s.finished("x");
        assert_eq!(s.start_next().unwrap().0, b);
    }

    #[test]
    fn max_concurrent_lets_others_pass() {
        let mut s = Scheduler::new(4);
        let (a, b, c) = (id(), id(), id());
        s.enqueue(a.clone(), "limited".into(), 0, Some(1));
        s.enqueue(b.clone(), "limited".into(), 0, Some(1));
        s.enqueue(c.clone(), "free".into(), 0, None);
        assert_eq!(s.start_next().unwrap().0, a);
        assert_eq!(s.start_next().unwrap().0, c, "b waits for a; c passes it");
        assert!(s.start_next().is_none());
        s.finished("limited");
        assert_eq!(s.start_next().unwrap().0, b);
    }
}
