//! The in-process followers of tasks: one channel per ref id that somebody here waits on or watches, fed by the
//! event listener (`events.rs`) and followed by `wait`, `watch` and `follow_output`.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use refcache_core::{CacheKey, RefId, TaskSnapshot, TaskStatus};
use tokio::sync::watch;

/// What a follower is told.
#[derive(Clone)]
pub(crate) enum Signal {
    /// The status an event named: a hint (anyone who can write to the Redis can publish one).
    Event(TaskStatus),
    /// The task ended, and this is what its terminal script wrote: not a hint. Either the script ran from this
    /// process (it answered `ok`), or its event carried the token that only the task's record holds (beside the
    /// record and value it wrote; see [`Hub::expect`]). Once a channel holds it, it stays; later signals only
    /// wake the followers.
    Settled(Box<TaskSnapshot>),
}

/// A ref's channel, and the token its end's event must carry to be taken as a fact (see [`Hub::expect`]).
struct Channel {
    tx: watch::Sender<Option<Signal>>,
    /// The token the end's event must carry, and the task's cache key (the key its value must name).
    token: Option<(Box<str>, CacheKey)>,
}

type Channels = HashMap<RefId, Channel>;

/// The in-process followers of tasks: one channel per ref id somebody waits on or watches. `Some(signal)`: the
/// latest record from an event, or the end this process wrote; `None`: read the record again (after a reconnect,
/// a deletion, or when a task held here is released).
#[derive(Default)]
pub(crate) struct Hub {
    channels: Arc<Mutex<Channels>>,
    kept: Mutex<Kept>,
}

/// Followers made before their task was submitted here, kept for the caller's `wait` (see [`Hub::keep`]).
#[derive(Default)]
struct Kept {
    followers: HashMap<RefId, Follower>,
    /// Oldest first; may name followers taken since.
    order: VecDeque<RefId>,
}

/// At most this many kept followers: past it the oldest goes (its `wait`, if one comes, reads the record).
const KEPT: usize = 10_000;

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

    /// For a follower made before its task existed ([`Hub::keep`]): nothing it was told calls for a read of the
    /// record. Either it was told nothing (no event, no resync, no deletion), or the latest event names a status
    /// that is not terminal (a hint, but a hint that a read could only confirm: a `wait` goes on waiting either
    /// way). A terminal event, a settled end, or "read again" (a resync, a deletion) is not quiet.
    pub(crate) fn quiet(&mut self) -> bool {
        let rx = self.rx();
        let changed = rx.has_changed().unwrap_or(true);
        match &*rx.borrow() {
            None => !changed,
            Some(Signal::Event(status)) => !status.is_terminal(),
            Some(Signal::Settled(_)) => false,
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        drop(self.rx.take());
        if let Some(channels) = self.channels.upgrade() {
            let mut map = channels.lock().unwrap_or_else(PoisonError::into_inner);
            if map
                .get(&self.ref_id)
                .is_some_and(|c| c.tx.receiver_count() == 0)
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
            .or_insert_with(|| Channel {
                tx: watch::channel(None).0,
                token: None,
            })
            .tx
            .subscribe();
        Follower {
            rx: Some(rx),
            ref_id: ref_id.clone(),
            channels: Arc::downgrade(&self.channels),
        }
    }

    /// An event's status (`Some`), or "read it again" (`None`). Wakes the followers; a settled end stays.
    pub(super) fn deliver(&self, ref_id: &RefId, status: Option<TaskStatus>) {
        let map = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(c) = map.get(ref_id) {
            replace_unless_settled(&c.tx, status.map(Signal::Event));
        }
    }

    /// The task's end may come as a fact in its event: its submission (from here) gave its record this token,
    /// which the terminal script puts in the event beside the record and value it wrote; `key` is the task's
    /// cache key. Set on the channel that the follower made before the submission keeps open; it goes with the
    /// channel, or with its first use ([`Hub::take_token`]).
    pub(crate) fn expect(&self, ref_id: &RefId, token: &str, key: CacheKey) {
        let mut map = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(c) = map.get_mut(ref_id) {
            c.token = Some((token.into(), key));
        }
    }

    /// When somebody here follows `ref_id`, its channel is not settled, and it expects its end's event to carry
    /// `token`: the token is used up (an event is taken as the end once: the same token replayed, with whatever
    /// record and value, is a hint) and the task's cache key is answered.
    pub(super) fn take_token(&self, ref_id: &RefId, token: &str) -> Option<CacheKey> {
        let mut map = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        let c = map.get_mut(ref_id)?;
        if matches!(&*c.tx.borrow(), Some(Signal::Settled(_))) {
            return None;
        }
        match &c.token {
            Some((expected, key)) if **expected == *token => {
                let key = *key;
                c.token = None;
                Some(key)
            }
            _ => None,
        }
    }

    /// [`settle`](Self::settle), unless the channel is settled already (its end is known: a later one is not).
    pub(super) fn settle_once(&self, ref_id: &RefId, snapshot: TaskSnapshot) {
        let map = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(c) = map.get(ref_id) {
            c.tx.send_if_modified(|cur| {
                if matches!(cur, Some(Signal::Settled(_))) {
                    return false;
                }
                *cur = Some(Signal::Settled(Box::new(snapshot)));
                true
            });
        }
    }

    /// The task ended with this snapshot: here (its terminal script answered `ok`), or elsewhere, as its event
    /// carrying the expected token says ([`Hub::expect`]).
    pub(super) fn settle(&self, ref_id: &RefId, snapshot: TaskSnapshot) {
        let map = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(c) = map.get(ref_id) {
            c.tx.send_replace(Some(Signal::Settled(Box::new(snapshot))));
        }
    }

    /// Keeps `follower`, made before its task was submitted here, for the `wait` that usually follows: having
    /// followed since before the task existed, it has every event about it, so that `wait` need not read a record
    /// that nothing has changed (see [`Follower::quiet`]).
    pub(crate) fn keep(&self, ref_id: RefId, follower: Follower) {
        let evicted = {
            let mut kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
            let mut evicted = Vec::new();
            while kept.followers.len() >= KEPT {
                let Some(old) = kept.order.pop_front() else {
                    break;
                };
                evicted.extend(kept.followers.remove(&old));
            }
            if kept.order.len() > 2 * KEPT {
                let Kept { followers, order } = &mut *kept;
                order.retain(|r| followers.contains_key(r));
            }
            kept.order.push_back(ref_id.clone());
            evicted.extend(kept.followers.insert(ref_id, follower));
            evicted
        };
        // Dropped outside the lock: a follower's drop takes the channels' lock.
        drop(evicted);
    }

    /// The kept follower of `ref_id`, if any (it is no longer kept).
    pub(crate) fn take_kept(&self, ref_id: &RefId) -> Option<Follower> {
        self.kept
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .followers
            .remove(ref_id)
    }

    /// Every follower reads its record again.
    pub(super) fn resync(&self) {
        let map = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        for c in map.values() {
            replace_unless_settled(&c.tx, None);
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
