//! The [`Hub`]: this process's followers of tasks (`wait`, `watch`, output followers), woken by a poke when a
//! record may have changed. What pokes it (the notifications) is `notify.rs`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use refcache_core::RefId;
use tokio::sync::watch;

type Channels = HashMap<RefId, watch::Sender<u64>>;

/// The in-process followers of tasks: one channel per ref id somebody waits on or watches. A bump of its counter
/// means "read the record again".
#[derive(Default)]
pub(crate) struct Hub {
    channels: Arc<Mutex<Channels>>,
}

/// A follower's end of a hub channel; the channel goes when its last follower does.
pub(crate) struct Follower {
    rx: Option<watch::Receiver<u64>>,
    ref_id: RefId,
    channels: Weak<Mutex<Channels>>,
}

impl Follower {
    pub(crate) fn rx(&mut self) -> &mut watch::Receiver<u64> {
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
            .or_insert_with(|| watch::channel(0).0)
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
            tx.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// Wakes every follower.
    pub(crate) fn resync(&self) {
        let map = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        for tx in map.values() {
            tx.send_modify(|n| *n = n.wrapping_add(1));
        }
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
