//! The [`Hub`]: this process's followers of tasks (`wait`, `watch`, output followers), woken by a poke when a
//! record may have changed. What pokes it (the notifications) is `notify.rs`.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use refcache_core::{RefId, TaskSnapshot};
use tokio::sync::watch;

/// What a follower is told. Every send wakes it; unless `settled` holds the task's end, a wake means "read the
/// record again".
#[derive(Default)]
pub(crate) struct Signal {
    /// The task's end as this process wrote it (its end statement applied and committed durably here): not a
    /// hint, a fact, the record and value a read of the row would answer now (see [`Hub::settle`]). Once set it
    /// stays; later pokes only wake the followers.
    pub(crate) settled: Option<Arc<TaskSnapshot>>,
    /// How many times the task's kept end was forgotten ([`Hub::forget_settled`]), counted without waking the
    /// followers: an end taken before a forget is not kept after it ([`Hub::keep_settled`]).
    pub(crate) forgets: u64,
}

type Channels = HashMap<RefId, watch::Sender<Signal>>;

/// The in-process followers of tasks: one channel per ref id somebody waits on or watches, and the ends settled
/// here that a `wait` may still ask for ([`Hub::keep_settled`]).
#[derive(Default)]
pub(crate) struct Hub {
    channels: Arc<Mutex<Channels>>,
    kept: Mutex<Kept>,
}

/// Ends settled here for the `wait` that usually follows a submission, newest last.
#[derive(Default)]
struct Kept {
    ends: HashMap<RefId, (tokio::time::Instant, Arc<TaskSnapshot>)>,
    /// Oldest first; may name ends taken or forgotten since.
    order: VecDeque<RefId>,
}

impl Kept {
    /// Drops the ends kept `fresh` or longer ago (never answered any more), oldest first, up to the first younger
    /// one; names in `order` of ends already taken or forgotten go on the way.
    fn drop_older_than(&mut self, fresh: Duration) {
        while let Some(oldest) = self.order.front() {
            match self.ends.get(oldest) {
                Some((at, _)) if at.elapsed() < fresh => break,
                _ => {
                    let oldest = self.order.pop_front().expect("a front");
                    self.ends.remove(&oldest);
                }
            }
        }
    }
}

/// At most this many kept ends: past it the oldest goes (its `wait`, if one comes, reads the record).
const KEPT: usize = 1_024;

/// A follower's end of a hub channel; the channel goes when its last follower does.
pub(crate) struct Follower {
    rx: Option<watch::Receiver<Signal>>,
    ref_id: RefId,
    channels: Weak<Mutex<Channels>>,
}

impl Follower {
    pub(crate) fn rx(&mut self) -> &mut watch::Receiver<Signal> {
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
    /// Follows `ref_id` from now on. Follow first, then read the record: a change between the two wakes the
    /// follower.
    pub(crate) fn follow(&self, ref_id: &RefId) -> Follower {
        let mut map = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        let rx = map
            .entry(ref_id.clone())
            .or_insert_with(|| watch::channel(Signal::default()).0)
            .subscribe();
        Follower {
            rx: Some(rx),
            ref_id: ref_id.clone(),
            channels: Arc::downgrade(&self.channels),
        }
    }

    /// Wakes the followers of `ref_id`.
    pub(crate) fn poke(&self, ref_id: &RefId) {
        let map = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(tx) = map.get(ref_id) {
            tx.send_modify(|_| {});
        }
    }

    /// The task ended here with `snapshot`: this process's end statement applied to its row and committed
    /// durably, and `snapshot` is what a read of the row answers from then on (the record as its JSON column
    /// reads back, the value this process's near cache holds). Wakes the followers with it, so that a follower in
    /// this process (a submission's `made_durable`) need not read the row back. Answers whether anybody here
    /// follows the task.
    pub(crate) fn settle(&self, ref_id: &RefId, snapshot: Arc<TaskSnapshot>) -> bool {
        let map = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(tx) = map.get(ref_id) else {
            return false;
        };
        tx.send_modify(|s| s.settled = Some(snapshot));
        true
    }

    /// Wakes every follower, and forgets every kept end (hints may have been lost meanwhile).
    pub(crate) fn resync(&self) {
        {
            let map = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
            for tx in map.values() {
                tx.send_modify(|_| {});
            }
        }
        let mut kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
        kept.ends.clear();
        kept.order.clear();
    }

    /// Whether anybody here follows `ref_id`.
    pub(crate) fn follows(&self, ref_id: &RefId) -> bool {
        self.channels
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(ref_id)
    }

    /// Keeps the end of `ref_id` settled here (see [`Hub::settle`]) for the `wait` that usually follows its
    /// submission ([`Hub::take_settled`]), if `unchanged()` holds under the kept ends' lock: no forget of the
    /// task since the caller took the end (its follower's `forgets` as then). A [`Hub::forget_settled`] counts
    /// itself on the follower before it takes the kept ends' lock, so a forget between the take and this is seen
    /// by `unchanged`, and a later one finds the end kept. A forget counted before the end was taken (a `drop`
    /// hint heard between the end's commit and its settle) is not seen: that end is kept, and answers a `wait`
    /// for at most `fresh` (notes/postgres.md, "Not done"). Ends older than `fresh` (never answered any more) go
    /// first.
    pub(crate) fn keep_settled(
        &self,
        ref_id: RefId,
        snapshot: Arc<TaskSnapshot>,
        fresh: Duration,
        unchanged: impl FnOnce() -> bool,
    ) {
        let mut kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
        if !unchanged() {
            return;
        }
        kept.drop_older_than(fresh);
        while kept.ends.len() >= KEPT {
            let Some(old) = kept.order.pop_front() else {
                break;
            };
            kept.ends.remove(&old);
        }
        if kept.order.len() > 2 * KEPT {
            let Kept { ends, order } = &mut *kept;
            order.retain(|r| ends.contains_key(r));
        }
        kept.order.push_back(ref_id.clone());
        kept.ends
            .insert(ref_id, (tokio::time::Instant::now(), snapshot));
    }

    /// The kept end of `ref_id`, if it was kept less than `fresh` ago (it is no longer kept either way).
    pub(crate) fn take_settled(
        &self,
        ref_id: &RefId,
        fresh: Duration,
    ) -> Option<Arc<TaskSnapshot>> {
        let mut kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
        let taken = kept.ends.remove(ref_id);
        // The ends too old to be answered go now too, so that a process that stops keeping holds none long.
        kept.drop_older_than(fresh);
        let (at, snapshot) = taken?;
        (at.elapsed() < fresh).then_some(snapshot)
    }

    /// Forgets the kept end of `ref_id` (its record was deleted or retried, here or elsewhere), and counts the
    /// forget on its followers, without waking them (see [`Hub::keep_settled`]).
    pub(crate) fn forget_settled(&self, ref_id: &RefId) {
        if let Some(tx) = self
            .channels
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(ref_id)
        {
            tx.send_if_modified(|s| {
                s.forgets += 1;
                false
            });
        }
        self.kept
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .ends
            .remove(ref_id);
    }
}

/// A follower as a stream of hints: an item each time the task's record or output may have changed (several
/// changes may come as one), and once per `recheck` without one (a hint can be lost). Ends with the hub.
pub(crate) fn changes(follower: Follower, recheck: Duration) -> BoxStream<'static, ()> {
    futures::stream::unfold(follower, move |mut follower| async move {
        match tokio::time::timeout(recheck, follower.rx().changed()).await {
            Ok(Ok(())) => {
                follower.rx().borrow_and_update();
                Some(((), follower))
            }
            Ok(Err(_)) => None,
            Err(_) => Some(((), follower)),
        }
    })
    .boxed()
}
