//! The in-process followers of tasks: one channel per ref id that somebody here waits on or watches, fed by the
//! event listener (`events.rs`) and followed by `wait`, `watch` and `follow_output`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use refcache_core::{RefId, TaskInfo, TaskSnapshot};
use tokio::sync::watch;

/// What a follower is told.
#[derive(Clone)]
pub(crate) enum Signal {
    /// A record an event carried: a hint (anyone who can write to the Redis can publish one).
    Event(TaskInfo),
    /// The task ended in this process, and this is what its terminal script wrote (it answered `ok`): not a
    /// hint. Once a channel holds it, it stays; later signals only wake the followers.
    Settled(TaskSnapshot),
}

type Channels = HashMap<RefId, watch::Sender<Option<Signal>>>;

/// The in-process followers of tasks: one channel per ref id somebody waits on or watches. `Some(signal)`: the
/// latest record from an event, or the end this process wrote; `None`: read the record again (after a reconnect,
/// a deletion, or when a task held here is released).
#[derive(Default)]
pub(crate) struct Hub {
    channels: Arc<Mutex<Channels>>,
}

/// A follower's end of a hub channel; the channel goes when its last follower does.
pub(crate) struct Follower {
    rx: Option<watch::Receiver<Option<Signal>>>,
    ref_id: RefId,
    channels: Weak<Mutex<Channels>>,
}

impl Follower {
    pub(crate) fn rx(&mut self) -> &mut watch::Receiver<Option<Signal>> {
        self.rx.as_mut().expect("present until drop")
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        drop(self.rx.take());
        if let Some(channels) = self.channels.upgrade() {
            let mut map = channels.lock().unwrap_or_else(PoisonError::into_inner);
            if map
                .get(&self.ref_id)
                .is_some_and(|tx| tx.receiver_count() == 0)
            {
                map.remove(&self.ref_id);
            }
        }
    }
}

impl Hub {
    /// Follows `ref_id` from now on. Subscribe first, then read the record: a change between the two arrives as
    /// an event.
    pub(crate) fn follow(&self, ref_id: &RefId) -> Follower {
        let mut map = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        let rx = map
            .entry(ref_id.clone())
            .or_insert_with(|| watch::channel(None).0)
            .subscribe();
        Follower {
            rx: Some(rx),
            ref_id: ref_id.clone(),
            channels: Arc::downgrade(&self.channels),
        }
    }

    /// Whether anybody here follows `ref_id`.
    pub(super) fn follows(&self, ref_id: &RefId) -> bool {
        self.channels
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(ref_id)
    }

    /// An event's record (`Some`), or "read it again" (`None`). Wakes the followers; a settled end stays.
    pub(super) fn deliver(&self, ref_id: &RefId, info: Option<TaskInfo>) {
        let map = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(tx) = map.get(ref_id) {
            replace_unless_settled(tx, info.map(Signal::Event));
        }
    }

    /// The task ended here with this snapshot (its terminal script answered `ok`).
    pub(super) fn settle(&self, ref_id: &RefId, snapshot: TaskSnapshot) {
        let map = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(tx) = map.get(ref_id) {
            tx.send_replace(Some(Signal::Settled(snapshot)));
        }
    }

    /// Every follower reads its record again.
    pub(super) fn resync(&self) {
        let map = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        for tx in map.values() {
            replace_unless_settled(tx, None);
        }
    }
}

/// Sets the channel's signal and wakes its followers, except that a settled end is kept (it is the fact; whatever
/// comes later is at most a hint about the same end).
fn replace_unless_settled(tx: &watch::Sender<Option<Signal>>, signal: Option<Signal>) {
    tx.send_modify(|cur| {
        if !matches!(cur, Some(Signal::Settled(_))) {
            *cur = signal;
        }
    });
}
