//! Notifications: how a change made by any process reaches the processes that care, so that waiting is
//! event-driven (`LISTEN`/`NOTIFY`, never a sleep loop).
//!
//! Every state change sends `pg_notify('refcache.<schema>', '<ref_id> <kind>')` in the statement (or transaction)
//! that makes it, so a notification is delivered only once the change is committed. Kinds: `change` (progress, a
//! question asked, answered or closed), `start` (a delivery started: only watchers follow it, not waiters for the
//! end), `output` (a task's output log grew), `end` (a terminal status),
//! `drop <key>` (deleted), `queued` (a task waits for a worker). A payload carries the id and the kind alone, far
//! under the 8 kB limit of `NOTIFY`: whoever cares reads the rest from the tables.
//!
//! A notification is a **hint**: anyone who can connect to the database can `NOTIFY`. On one, this process reads
//! the row it names and acts on what the row says:
//! - the hub (`hub.rs`) wakes the local followers of that ref id (`wait`, `watch`), which read the record again;
//! - the runner stops a task it holds when its row says it is finished, cancelled or gone;
//! - the near cache drops a value whose row is gone;
//! - `queued` wakes the worker loop, which claims with `FOR UPDATE SKIP LOCKED` (the row decides).
//!
//! Each backend keeps one dedicated listening connection with its own reconnect loop. Notifications sent while it
//! was disconnected are lost, so after every (re)connect every follower reads its record again, the runner
//! re-checks the tasks it holds, and the worker loop looks for work.

use std::sync::{Arc, Weak};
use std::time::Duration;

use futures::StreamExt;
use refcache_core::{CacheKey, RefId};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::inner::Inner;

/// A notification, split but not yet acted on.
struct Hint<'a> {
    ref_id: RefId,
    kind: &'a str,
    key: Option<CacheKey>,
}

impl<'a> Hint<'a> {
    fn parse(payload: &'a str) -> Option<Self> {
        let mut parts = payload.split(' ');
        let ref_id = RefId::parse(parts.next()?).ok()?;
        let kind = parts.next()?;
        let key = parts.next().and_then(CacheKey::from_hex);
        Some(Self { ref_id, kind, key })
    }
}

/// The listener: connects, `LISTEN`s, hands notifications on; on any loss, reconnects with backoff and resyncs.
/// Ends when the backend is dropped or `stop` fires.
pub(crate) async fn listen(inner: Weak<Inner>, stop: CancellationToken) {
    tokio::select! {
        () = listen_until_dropped(inner) => {}
        () = stop.cancelled() => {}
    }
}

async fn listen_until_dropped(weak: Weak<Inner>) {
    let mut backoff = Duration::from_millis(50);
    loop {
        let connected = {
            let Some(inner) = weak.upgrade() else { return };
            tokio::time::timeout(Duration::from_secs(5), inner.connect_listener()).await
        };
        match connected {
            Ok(Ok((client, mut notes))) => {
                backoff = Duration::from_millis(50);
                {
                    let Some(inner) = weak.upgrade() else { return };
                    inner.hub.resync();
                    inner.output_hub.resync();
                    inner.start_hub.resync();
                    inner.resync_held();
                    inner.work.notify_one();
                }
                while let Some(payload) = notes.recv().await {
                    let Some(inner) = weak.upgrade() else { return };
                    match Hint::parse(&payload) {
                        Some(hint) => inner.on_hint(hint),
                        None => tracing::debug!("refcache: an unreadable notification was ignored"),
                    }
                }
                drop(client);
                tracing::warn!(
                    "refcache: the Postgres listening connection was lost; reconnecting"
                );
            }
            Ok(Err(err)) => tracing::debug!(%err, "refcache: cannot listen on Postgres yet"),
            Err(_) => tracing::debug!("refcache: connecting the Postgres listener timed out"),
        }
        if weak.strong_count() == 0 {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

/// Drives a listening connection: its notifications go to the returned receiver, which ends with the connection.
pub(crate) fn drive<S, T>(
    mut connection: tokio_postgres::Connection<S, T>,
) -> mpsc::UnboundedReceiver<String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(tokio_postgres::AsyncMessage::Notification(note)) => {
                    if tx.send(note.payload().to_owned()).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(err) => {
                    tracing::debug!(%err, "refcache: the Postgres listening connection failed");
                    return;
                }
            }
        }
    });
    rx
}

impl Inner {
    /// One hint: followers first, then (after reading the row) the runner and the near cache.
    fn on_hint(self: &Arc<Self>, hint: Hint<'_>) {
        match hint.kind {
            "queued" => {
                // A failed task retried elsewhere says `queued` or `change`: its end kept here is no longer so.
                // (Its followers are not woken: a submission's own `queued` hint would cost its wait a read.)
                self.hub.forget_settled(&hint.ref_id);
                self.work.notify_one();
            }
            "change" => {
                self.hub.poke(&hint.ref_id);
                self.hub.forget_settled(&hint.ref_id);
            }
            "start" => self.start_hub.poke(&hint.ref_id),
            "output" => self.output_hub.poke(&hint.ref_id),
            "end" | "drop" => {
                self.hub.poke(&hint.ref_id);
                if hint.kind == "drop" {
                    // Deleted (or so the hint says): a `wait` reads the row, not the end kept here.
                    self.hub.forget_settled(&hint.ref_id);
                }
                let held = self.holds(&hint.ref_id);
                let near = hint.kind == "drop" && hint.key.is_some();
                if held || near {
                    let inner = self.clone();
                    let ref_id = hint.ref_id;
                    let key = hint.key;
                    tokio::spawn(async move { inner.check_row(&ref_id, key.as_ref()).await });
                }
            }
            _ => {}
        }
    }
}
