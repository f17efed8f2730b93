//! Hints of new work: [`RefCache::follow_submissions`], for live task lists (the web page's) that should show a
//! task the moment anyone starts it through this cache, without polling.

use futures::StreamExt;
use futures::stream::BoxStream;

use crate::cache::RefCache;

impl RefCache {
    /// A stream that yields each time a call through this `RefCache` starts a new execution, or a task is retried
    /// through it (several may come as one item). An item is a hint, never data: a follower lists the tasks it may
    /// see (`list_tasks`, as its own actor) and shows what changed, so it never learns of another owner's task.
    ///
    /// Only submissions made in this process are seen: a list that must show work started on other replicas also
    /// re-lists now and then. The stream ends when the cache is dropped. Dropping it changes nothing.
    pub fn follow_submissions(&self) -> BoxStream<'static, ()> {
        let receiver = self.inner.submissions.subscribe();
        futures::stream::unfold(receiver, |mut receiver| async move {
            receiver.changed().await.ok()?;
            receiver.borrow_and_update();
            Some(((), receiver))
        })
        .boxed()
    }

    /// Wakes every follower of [`follow_submissions`](Self::follow_submissions). Costs one atomic load when
    /// nobody follows: a follower that subscribes later waits for the submissions after it, so there is nothing
    /// to count (and tokio's `send_modify` would lock its eight `Notify` lists all the same).
    pub(crate) fn note_submission(&self) {
        if self.inner.submissions.receiver_count() > 0 {
            self.inner
                .submissions
                .send_modify(|n| *n = n.wrapping_add(1));
        }
    }
}
