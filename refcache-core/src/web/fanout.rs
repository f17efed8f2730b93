//! One writer per followed task ([`Fanout`]): it reads each output chunk and each status change once, frames it
//! once as the server-sent event's bytes, and hands the same bytes to every event stream of that task.
//!
//! The first stream that follows a task starts its writer: one follower of the task's output log and one watch of
//! its record (a read every second on a backend that cannot watch). Each chunk and each changed summary is
//! encoded once into a [`Frame`] (one `Bytes`), broadcast as an `Arc`. So what one more subscriber costs per event
//! is a refcount, an offset compared, and the socket write; no JSON encode, no read of the log, no lock of its
//! own. Every stream takes the output frames that continue exactly where it is, and reads the log itself only to
//! catch up: when it opens (from its own offset), after it fell behind the broadcast or past a cut of the log, and
//! when the writer ends before the output does. A writer ends once the output is done and the task is terminal,
//! when nobody listens any more, or at shutdown. Every 15 s it sends a comment, the streams' keep-alive.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::summary::summary;
use crate::cache::RefCache;
use crate::model::actor::Actor;
use crate::model::error::RefCacheError;
use crate::model::output::OutputChunk;
use crate::model::record::TaskInfo;
use crate::model::ref_id::RefId;

/// How many frames a writer keeps for streams that are behind: a stream further behind reads the log itself. It
/// bounds what a writer holds to this many frames (each at most one read of the log, or one summary).
pub(super) const FEED_FRAMES: usize = 64;

/// How often a task whose record cannot be watched is read again.
pub(super) const REREAD: Duration = Duration::from_secs(1);

/// How often an idle stream gets a comment, so that proxies and browsers keep it open.
pub(super) const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The keep-alive comment.
pub(super) const COMMENT: &[u8] = b":\n\n";

/// What a frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FrameKind {
    /// An `output` event: the chunk's offsets.
    Output {
        offset: u64,
        next_offset: u64,
        dropped: u64,
        done: bool,
    },
    /// A `status` event. A terminal one is never sent by the streams (they close with their own read of the
    /// record, after the output): it tells them the task ended.
    Status { terminal: bool },
    /// A keep-alive comment.
    Comment,
}

/// One server-sent event, framed once for every stream.
#[derive(Debug)]
pub(super) struct Frame {
    pub(super) kind: FrameKind,
    /// The event as it goes on the wire (`event: ...\ndata: ...\n\n`).
    pub(super) bytes: Bytes,
    /// An output frame's status event, carried in `bytes` after the output (the chunk's line changed the
    /// record): one write per chunk instead of two. A slice of `bytes`.
    pub(super) status: Option<Bytes>,
}

impl Frame {
    /// An `output` event; its id is the offset after the chunk, so that a reconnect goes on from there.
    pub(super) fn output(chunk: &OutputChunk) -> Self {
        let json = serde_json::to_string(chunk).unwrap_or_default();
        let text = format!("event: output\nid: {}\ndata: {json}\n\n", chunk.next_offset);
        Self {
            kind: FrameKind::Output {
                offset: chunk.offset,
                next_offset: chunk.next_offset,
                dropped: chunk.dropped,
                done: chunk.done,
            },
            bytes: Bytes::from(text),
            status: None,
        }
    }

    /// This output frame with `status` (a non-terminal status frame) after it, in one buffer.
    fn with_status(self, status: &Frame) -> Self {
        let mut both = Vec::with_capacity(self.bytes.len() + status.bytes.len());
        both.extend_from_slice(&self.bytes);
        both.extend_from_slice(&status.bytes);
        let both = Bytes::from(both);
        Self {
            kind: self.kind,
            status: Some(both.slice(self.bytes.len()..)),
            bytes: both,
        }
    }

    /// A `status` event: the task's summary.
    pub(super) fn status(info: &TaskInfo) -> Self {
        Self {
            kind: FrameKind::Status {
                terminal: info.status.is_terminal(),
            },
            bytes: Bytes::from(format!("event: status\ndata: {}\n\n", summary(info))),
            status: None,
        }
    }

    /// The closing `end` event.
    pub(super) fn end() -> Bytes {
        Bytes::from_static(b"event: end\ndata: {}\n\n")
    }
}

type Feed = broadcast::Sender<Arc<Frame>>;

/// The writers of the tasks being followed, by ref id.
#[derive(Debug, Default)]
pub(crate) struct Fanout {
    feeds: Mutex<HashMap<RefId, Feed>>,
}

impl Fanout {
    /// Listens to `ref_id`'s writer, started (following the log from `from` and the record, as `actor`) if there
    /// is none. `None` when the log cannot be followed: the caller reads it itself.
    pub(super) async fn listen(
        self: &Arc<Self>,
        cache: &RefCache,
        actor: &Actor,
        ref_id: &RefId,
        from: u64,
        stop: &CancellationToken,
    ) -> Option<broadcast::Receiver<Arc<Frame>>> {
        if let Some(feed) = self.lock().get(ref_id) {
            return Some(feed.subscribe());
        }
        let output = actor
            .clone()
            .scope(cache.follow_output(ref_id.as_str(), from))
            .await
            .ok()?;
        // Watched after the log is followed: a change in between is read by the streams at their open.
        let watch = cache.backend().watch(ref_id).await.ok().flatten();
        let mut feeds = self.lock();
        if let Some(feed) = feeds.get(ref_id) {
            // Another stream started it meanwhile.
            return Some(feed.subscribe());
        }
        let (feed, receiver) = broadcast::channel(FEED_FRAMES);
        feeds.insert(ref_id.clone(), feed.clone());
        // A watch tells changes to come: a task that is terminal already says so first.
        let initial = watch
            .as_ref()
            .map(|w| w.borrow().clone())
            .filter(|info| info.status.is_terminal())
            .map(|info| Frame::status(&info));
        let writer = Writer {
            initial,
            cache: cache.clone(),
            actor: actor.clone(),
            ref_id: ref_id.clone(),
            output: Some(output),
            watch,
            last_status: None,
            terminal: false,
        };
        tokio::spawn(self.clone().run(writer, feed, stop.clone()));
        Some(receiver)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<RefId, Feed>> {
        self.feeds.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Broadcasts the task's frames until its output is done and it is terminal, nobody listens, or the page
    /// stops; then forgets the writer.
    async fn run(self: Arc<Self>, mut writer: Writer, feed: Feed, stop: CancellationToken) {
        let mut keep_alive =
            tokio::time::interval_at(tokio::time::Instant::now() + KEEP_ALIVE, KEEP_ALIVE);
        loop {
            let frame = tokio::select! {
                frame = writer.next() => frame,
                _ = keep_alive.tick() => Some(Frame {
                    kind: FrameKind::Comment,
                    bytes: Bytes::from_static(COMMENT),
                    status: None,
                }),
                () = stop.cancelled() => None,
            };
            let Some(frame) = frame else { break };
            if feed.send(Arc::new(frame)).is_err() {
                break;
            }
        }
        let ref_id = writer.ref_id;
        let mut feeds = self.lock();
        if feeds.get(&ref_id).is_some_and(|f| f.same_channel(&feed)) {
            feeds.remove(&ref_id);
        }
    }
}

/// A task's sources: its output log and its record.
struct Writer {
    /// The terminal status the record had when it was first watched.
    initial: Option<Frame>,
    cache: RefCache,
    actor: Actor,
    ref_id: RefId,
    /// `None` once the output is done (or cannot be read any more).
    output: Option<BoxStream<'static, Result<OutputChunk, RefCacheError>>>,
    /// `None` when the record cannot be watched: read every [`REREAD`].
    watch: Option<tokio::sync::watch::Receiver<TaskInfo>>,
    /// The last summary framed, so that an unchanged one is not sent again.
    last_status: Option<Bytes>,
    terminal: bool,
}

impl Writer {
    /// The next frame: an output chunk or a changed summary. `None` once both sources are over.
    async fn next(&mut self) -> Option<Frame> {
        if let Some(frame) = self.initial.take() {
            self.terminal = true;
            return Some(frame);
        }
        loop {
            if self.output.is_none() && self.terminal {
                return None;
            }
            let status = !self.terminal;
            let next = tokio::select! {
                chunk = next_chunk(&mut self.output), if self.output.is_some() => Next::Chunk(chunk),
                info = record(&self.cache, &self.actor, &self.ref_id, &mut self.watch), if status => {
                    Next::Record(info.map(Box::new))
                }
            };
            match next {
                Next::Chunk(Some(chunk)) => {
                    if chunk.done {
                        self.output = None;
                    }
                    return Some(self.with_changed_status(Frame::output(&chunk)));
                }
                Next::Chunk(None) => self.output = None,
                Next::Record(None) => self.terminal = true,
                Next::Record(Some(info)) => {
                    let frame = Frame::status(&info);
                    self.terminal = info.status.is_terminal();
                    if self.last_status.as_ref() != Some(&frame.bytes) || self.terminal {
                        self.last_status = Some(frame.bytes.clone());
                        return Some(frame);
                    }
                }
            }
        }
    }
}

impl Writer {
    /// `frame` with the record's status after it, when the record changed (and is not terminal: that one goes
    /// alone). A task's output line changes its record just after the log, so most chunks carry their status.
    fn with_changed_status(&mut self, frame: Frame) -> Frame {
        let Some(watch) = &mut self.watch else {
            return frame;
        };
        if self.terminal
            || !watch.has_changed().unwrap_or(false)
            || watch.borrow().status.is_terminal()
        {
            return frame;
        }
        let status = Frame::status(&watch.borrow_and_update());
        if self.last_status.as_ref() == Some(&status.bytes) {
            return frame;
        }
        self.last_status = Some(status.bytes.clone());
        frame.with_status(&status)
    }
}

enum Next {
    Chunk(Option<OutputChunk>),
    Record(Option<Box<TaskInfo>>),
}

async fn next_chunk(
    output: &mut Option<BoxStream<'static, Result<OutputChunk, RefCacheError>>>,
) -> Option<OutputChunk> {
    match output {
        Some(output) => output.next().await?.ok(),
        None => std::future::pending().await,
    }
}

/// The record after its next change (or [`REREAD`] later, when it cannot be watched); `None` when it cannot be
/// read any more.
pub(super) async fn record(
    cache: &RefCache,
    actor: &Actor,
    ref_id: &RefId,
    watch: &mut Option<tokio::sync::watch::Receiver<TaskInfo>>,
) -> Option<TaskInfo> {
    if let Some(receiver) = watch {
        if receiver.changed().await.is_ok() {
            return Some(receiver.borrow_and_update().clone());
        }
        *watch = None;
    }
    tokio::time::sleep(REREAD).await;
    actor
        .clone()
        .scope(cache.task_info(ref_id.as_str()))
        .await
        .ok()
}
