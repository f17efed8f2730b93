//! The event streams: one task's (`status`, `output`, `end`) and the caller's list (`task`). Both wait on the
//! cache's change events; a backend that cannot follow a task is read again every second. The streams of one
//! task share one writer, which reads and frames each event once (`fanout.rs`).

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use futures::stream::{BoxStream, SelectAll};
use serde_json::Value;

use super::auth::Caller;
use super::error::WebError;
use super::fanout::{Frame, FrameKind, REREAD};
use super::fields::Fields;
use super::state::WebRefCache;
use super::summary::summary;
use crate::model::actor::Actor;
use crate::model::error::RefCacheError;
use crate::model::output::OutputChunk;
use crate::model::record::TaskInfo;
use crate::model::ref_id::RefId;

/// How often the list is read again when every task in it is followed (for work started on other replicas).
const RELIST: Duration = Duration::from_secs(5);

fn sse(web: &WebRefCache, events: BoxStream<'static, Event>) -> Response {
    let events = events
        .map(Ok::<_, Infallible>)
        .take_until(web.stop.clone().cancelled_owned());
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}

fn json_event(kind: &'static str, data: &Value) -> Event {
    Event::default().event(kind).data(data.to_string())
}

/// The offset a stream starts at: the `Last-Event-ID` a reconnecting browser sends, else `?offset=`, else 0.
fn start_offset(headers: &HeaderMap, fields: &Fields) -> Result<u64, WebError> {
    if let Some(id) = headers.get("last-event-id").and_then(|v| v.to_str().ok()) {
        return id
            .trim()
            .parse()
            .map_err(|_| WebError::bad("Last-Event-ID", "expected an output offset"));
    }
    Ok(fields.number("offset")?.unwrap_or(0))
}

/// `GET /api/tasks/{ref_id}/events`: the task's summary as `status` (now, and on each change), its output from
/// the start offset as `output` (each event's id the offset after it), then `end` once it is terminal and its
/// output is all sent. The events after the stream's own first read come framed from the task's writer
/// (`fanout.rs`), shared by every stream of the task.
pub(super) async fn task(
    State(web): State<WebRefCache>,
    Extension(Caller(actor)): Extension<Caller>,
    Path(ref_id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let opened = actor
        .clone()
        .scope(async {
            let fields = Fields::parse(query.as_deref())?;
            let offset = start_offset(&headers, &fields)?;
            let info = web.cache.task_info(&ref_id).await?;
            // Listening before the own first read, so that no frame in between is missed.
            let feed = web
                .fanout
                .listen(&web.cache, &actor, &info.ref_id, offset, &web.stop)
                .await;
            Ok::<_, WebError>((info, offset, feed))
        })
        .await;
    let (info, offset, feed) = match opened {
        Ok(opened) => opened,
        Err(e) => return e.into_response(),
    };
    let first = Frame::status(&info);
    let mut stream = Stream {
        web: web.clone(),
        actor,
        ref_id: info.ref_id.clone(),
        offset,
        feed,
        own: None,
        watch: None,
        last_status: None,
        pending: VecDeque::new(),
        caught_up: false,
        output_done: false,
        terminal: info.status.is_terminal(),
        ended: false,
    };
    if !info.status.is_terminal() {
        stream.last_status = Some(first.bytes.clone());
        stream.pending.push_back(first.bytes);
    }
    // No `take_until(stop)` here: polling one shared token on every event of every stream takes its lock. The
    // writer ends at shutdown, and a stream whose writer ended checks the token (its own follower selects on it).
    let body = futures::stream::unfold(stream, Stream::step).map(Ok::<_, Infallible>);
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(body),
    )
        .into_response()
}

/// One task's event stream, as bytes: its own first status and catch-up reads, then the writer's frames that
/// continue where it is; its own follower of the log and the record once the writer ends early (or could not
/// start).
struct Stream {
    web: WebRefCache,
    actor: Actor,
    ref_id: RefId,
    /// Where this stream is in the log.
    offset: u64,
    feed: Option<tokio::sync::broadcast::Receiver<Arc<Frame>>>,
    /// Its own follower of the log, once the writer ended before the output did (or could not start).
    own: Option<BoxStream<'static, Result<OutputChunk, RefCacheError>>>,
    /// Its own watch of the record, with `own`.
    watch: Option<tokio::sync::watch::Receiver<TaskInfo>>,
    /// The last summary sent (the writer's frames are compared by their bytes).
    last_status: Option<Bytes>,
    pending: VecDeque<Bytes>,
    caught_up: bool,
    /// The output is all sent (or cannot be read by this caller).
    output_done: bool,
    /// The task is terminal.
    terminal: bool,
    ended: bool,
}

impl Stream {
    async fn step(mut self) -> Option<(Bytes, Self)> {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            if let Some(bytes) = self.pending.pop_front() {
                return Some((bytes, self));
            }
            if self.ended {
                return None;
            }
            if !self.caught_up {
                self.caught_up = true;
                self.read().await;
                if self.feed.is_none() {
                    self.go_own().await;
                }
                continue;
            }
            if self.output_done && self.terminal {
                // The closing status, after the output.
                let info = self
                    .actor
                    .clone()
                    .scope(self.web.cache.task_info(self.ref_id.as_str()))
                    .await;
                if let Ok(info) = info {
                    self.pending.push_back(Frame::status(&info).bytes);
                }
                self.pending.push_back(Frame::end());
                self.ended = true;
                continue;
            }
            let Some(feed) = &mut self.feed else {
                self.own_step().await;
                continue;
            };
            match feed.recv().await {
                Ok(frame) => self.take(&frame).await,
                // Frames were lost to this stream: its own read, from where it is.
                Err(RecvError::Lagged(_)) => self.read().await,
                Err(RecvError::Closed) => {
                    if self.web.stop.is_cancelled() {
                        return None;
                    }
                    self.feed = None;
                    self.go_own().await;
                }
            }
        }
    }

    /// A frame of the writer: sent as it is when it continues this stream, else what it says is read.
    async fn take(&mut self, frame: &Frame) {
        match frame.kind {
            FrameKind::Comment => self.pending.push_back(frame.bytes.clone()),
            FrameKind::Status { terminal: true } => self.terminal = true,
            FrameKind::Status { terminal: false } => self.status(&frame.bytes),
            FrameKind::Output {
                offset,
                next_offset,
                dropped,
                done,
            } => {
                if self.output_done || (next_offset <= self.offset && !done) {
                    if let Some(status) = &frame.status {
                        self.status(status);
                    }
                    return;
                }
                if offset == self.offset && dropped == 0 {
                    // The output and the status it carries, as one write.
                    self.offset = next_offset;
                    self.output_done |= done;
                    self.pending.push_back(frame.bytes.clone());
                    if let Some(status) = &frame.status {
                        self.last_status = Some(status.clone());
                    }
                } else {
                    // Behind the writer (or past a cut of the log): this stream's own reads, from where it is.
                    self.read().await;
                    if let Some(status) = &frame.status {
                        self.status(status);
                    }
                }
            }
        }
    }

    /// A status event, unless it is the last one sent.
    fn status(&mut self, bytes: &Bytes) {
        if self.last_status.as_ref() != Some(bytes) {
            self.last_status = Some(bytes.clone());
            self.pending.push_back(bytes.clone());
        }
    }

    /// Without the writer: the next chunk of its own follower, or the record's next change.
    async fn own_step(&mut self) {
        enum Next {
            Chunk(Option<OutputChunk>),
            Record(Option<Box<TaskInfo>>),
            Idle,
            Stop,
        }
        let output = !self.output_done;
        let status = !self.terminal;
        let next = tokio::select! {
            chunk = own_chunk(&mut self.own), if output => Next::Chunk(chunk),
            info = super::fanout::record(&self.web.cache, &self.actor, &self.ref_id, &mut self.watch), if status => {
                Next::Record(info.map(Box::new))
            }
            () = tokio::time::sleep(super::fanout::KEEP_ALIVE) => Next::Idle,
            () = self.web.stop.cancelled() => Next::Stop,
        };
        match next {
            Next::Chunk(Some(chunk)) => self.push(&chunk),
            Next::Chunk(None) => self.output_done = true,
            Next::Record(None) => self.terminal = true,
            Next::Record(Some(info)) => {
                let frame = Frame::status(&info);
                self.take(&frame).await;
            }
            Next::Idle => self
                .pending
                .push_back(Bytes::from_static(super::fanout::COMMENT)),
            Next::Stop => self.ended = true,
        }
    }

    fn push(&mut self, chunk: &OutputChunk) {
        self.offset = chunk.next_offset;
        self.output_done |= chunk.done;
        self.pending.push_back(Frame::output(chunk).bytes);
    }

    /// Reads the log from this stream's offset up to its end now.
    async fn read(&mut self) {
        loop {
            let read = self
                .web
                .cache
                .read_output(self.ref_id.as_str(), self.offset, None);
            let chunk = match self.actor.clone().scope(read).await {
                Ok(chunk) => chunk,
                Err(_) => {
                    // Not readable by this caller (or gone): no output, the status goes on.
                    self.output_done = true;
                    return;
                }
            };
            if chunk.text.is_empty() && chunk.dropped == 0 && !chunk.done {
                return;
            }
            self.push(&chunk);
            if chunk.done {
                return;
            }
        }
    }

    /// Follows the log and the record itself from here on (the writer ended early, or could not start).
    async fn go_own(&mut self) {
        self.watch = self
            .web
            .cache
            .backend()
            .watch(&self.ref_id)
            .await
            .ok()
            .flatten();
        // A watch tells changes to come: a task that is terminal already is seen here.
        if let Some(watch) = &self.watch {
            self.terminal |= watch.borrow().status.is_terminal();
        }
        if self.output_done {
            return;
        }
        let follow = self
            .web
            .cache
            .follow_output(self.ref_id.as_str(), self.offset);
        match self.actor.clone().scope(follow).await {
            Ok(own) => self.own = Some(own),
            Err(_) => self.output_done = true,
        }
    }
}

async fn own_chunk(
    own: &mut Option<BoxStream<'static, Result<OutputChunk, RefCacheError>>>,
) -> Option<OutputChunk> {
    match own {
        Some(own) => own.next().await?.ok(),
        None => None,
    }
}

/// `GET /api/events`: a `task` event (the task's summary) for each of the caller's tasks now, then one for each
/// task that appears or changes.
pub(super) async fn list(
    State(web): State<WebRefCache>,
    Extension(Caller(actor)): Extension<Caller>,
    RawQuery(query): RawQuery,
) -> Response {
    let filter = Fields::parse(query.as_deref()).and_then(|f| super::api::list_filter(&f));
    let filter = match filter {
        Ok(filter) => filter,
        Err(e) => return e.into_response(),
    };
    let state = List {
        submissions: web.cache.follow_submissions(),
        web: web.clone(),
        actor,
        filter,
        known: HashMap::new(),
        queue: VecDeque::new(),
        watches: SelectAll::new(),
        unfollowed: false,
        listed: false,
    };
    sse(&web, futures::stream::unfold(state, List::step).boxed())
}

struct List {
    web: WebRefCache,
    actor: Actor,
    filter: crate::contract::list::TaskFilter,
    submissions: BoxStream<'static, ()>,
    /// The last summary sent per task.
    known: HashMap<String, String>,
    queue: VecDeque<Value>,
    watches: SelectAll<BoxStream<'static, TaskInfo>>,
    /// Some task in flight could not be followed: list again every second.
    unfollowed: bool,
    listed: bool,
}

impl List {
    async fn step(mut self) -> Option<(Event, Self)> {
        loop {
            if let Some(task) = self.queue.pop_front() {
                return Some((json_event("task", &task), self));
            }
            if !self.listed {
                self.listed = true;
                self.relist().await;
                continue;
            }
            let every = if self.unfollowed { REREAD } else { RELIST };
            tokio::select! {
                hint = self.submissions.next() => {
                    hint?;
                    self.relist().await;
                }
                Some(info) = self.watches.next(), if !self.watches.is_empty() => {
                    self.note(&info);
                }
                () = tokio::time::sleep(every) => self.relist().await,
            }
        }
    }

    /// Queues the task's summary if it changed.
    fn note(&mut self, info: &TaskInfo) -> bool {
        let summary = summary(info);
        let text = summary.to_string();
        let id = info.ref_id.to_string();
        if self.known.get(&id) == Some(&text) {
            return false;
        }
        let new = self.known.insert(id, text).is_none();
        self.queue.push_back(summary);
        new
    }

    async fn relist(&mut self) {
        let page = self
            .actor
            .clone()
            .scope(self.web.cache.list_tasks(self.filter.clone()))
            .await;
        let Ok(page) = page else { return };
        let mut unfollowed = false;
        // Oldest first, so that the page inserts them in order.
        for info in page.tasks.iter().rev() {
            let new = self.note(info);
            if new && !info.status.is_terminal() {
                match self.web.cache.backend().watch(&info.ref_id).await {
                    Ok(Some(receiver)) => self.watches.push(follow(receiver)),
                    _ => unfollowed = true,
                }
            } else if !info.status.is_terminal() && !new {
                unfollowed |= self.unfollowed;
            }
        }
        self.unfollowed = unfollowed;
    }
}

/// A watched record's changes, until it is terminal.
fn follow(receiver: tokio::sync::watch::Receiver<TaskInfo>) -> BoxStream<'static, TaskInfo> {
    futures::stream::unfold(Some(receiver), |receiver| async move {
        let mut receiver = receiver?;
        receiver.changed().await.ok()?;
        let info = receiver.borrow_and_update().clone();
        let next = (!info.status.is_terminal()).then_some(receiver);
        Some((info, next))
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    //! A stream that falls behind its task's writer by more than the writer keeps (`FEED_FRAMES`) must still send
    //! every byte once, in order: the broadcast tells it it lagged, and it reads the log itself from where it is.

    use std::sync::LazyLock;
    use std::time::Duration;

    use axum::body::Body;
    use axum::extract::{Path, RawQuery, State};
    use axum::http::HeaderMap;
    use axum::{Extension, body::Bytes};
    use futures::StreamExt;
    use futures::stream::BoxStream;
    use tokio::sync::Semaphore;

    use super::task;
    use crate::cache::RefCache;
    use crate::contract::context::TaskContext;
    use crate::model::actor::Actor;
    use crate::web::auth::Caller;
    use crate::web::state::WebRefCache;

    static CACHE: LazyLock<RefCache> = LazyLock::new(RefCache::new);
    /// One permit per line the ticker may write.
    static LINES: Semaphore = Semaphore::const_new(0);

    /// More lines than the writer keeps frames for.
    const LINES_WRITTEN: u32 = 3 * super::super::fanout::FEED_FRAMES as u32;

    #[crate::cached(crate = "crate", async_timeout = 0.01, cache = CACHE)]
    async fn ticker(lines: u32, ctx: TaskContext) -> u32 {
        for i in 0..lines {
            LINES.acquire().await.expect("never closed").forget();
            ctx.stdout(&format!("tick {i:04}\n"));
        }
        lines
    }

    /// An event stream's body, read as server-sent events.
    struct Events {
        body: BoxStream<'static, Result<Bytes, axum::Error>>,
        buffer: String,
    }

    impl Events {
        async fn open(web: &WebRefCache, actor: &Actor, ref_id: &str) -> Self {
            let response = task(
                State(web.clone()),
                Extension(Caller(actor.clone())),
                Path(ref_id.to_owned()),
                RawQuery(None),
                HeaderMap::new(),
            )
            .await;
            assert_eq!(response.status(), 200);
            let body: Body = response.into_body();
            Self {
                body: body.into_data_stream().boxed(),
                buffer: String::new(),
            }
        }

        /// The next event as (kind, data), comments skipped; `None` once the body ends.
        async fn next(&mut self) -> Option<(String, String)> {
            let next = async {
                loop {
                    if let Some(end) = self.buffer.find("\n\n") {
                        let block: String = self.buffer.drain(..end + 2).collect();
                        let (mut kind, mut data) = (String::new(), String::new());
                        for line in block.lines() {
                            if let Some(v) = line.strip_prefix("event: ") {
                                kind = v.to_owned();
                            } else if let Some(v) = line.strip_prefix("data: ") {
                                data.push_str(v);
                            }
                        }
                        if !kind.is_empty() {
                            return Some((kind, data));
                        }
                        continue;
                    }
                    let bytes = self.body.next().await?.expect("the body reads");
                    self.buffer
                        .push_str(std::str::from_utf8(&bytes).expect("UTF-8 events"));
                }
            };
            tokio::time::timeout(Duration::from_secs(30), next)
                .await
                .expect("an event within 30 s")
        }

        /// The output text until `text` has arrived (or, with `None`, until `end`), each chunk checked to
        /// continue exactly where the last ended.
        async fn output(&mut self, at: &mut u64, text: &mut String, until: Option<&str>) {
            loop {
                if until.is_some_and(|line| text.ends_with(line)) {
                    return;
                }
                let (kind, data) = self.next().await.expect("the stream ended early");
                match kind.as_str() {
                    "output" => {
                        let chunk: serde_json::Value = serde_json::from_str(&data).unwrap();
                        assert_eq!(
                            chunk["offset"], *at,
                            "a chunk continues where the last ended"
                        );
                        assert_eq!(chunk["dropped"], 0, "nothing was cut from a small log");
                        *at = chunk["next_offset"].as_u64().unwrap();
                        text.push_str(chunk["text"].as_str().unwrap());
                    }
                    "end" => {
                        assert!(until.is_none(), "the stream ended before {until:?}");
                        return;
                    }
                    _ => {}
                }
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stream_far_behind_the_writer_still_gets_every_byte_once_in_order() {
        let actor = Actor::user("alice");
        let reference = actor.clone().scope(ticker(LINES_WRITTEN)).await.unwrap();
        let ref_id = reference.ref_id().to_string();
        let web = WebRefCache::new(CACHE.clone());
        let mut fast = Events::open(&web, &actor, &ref_id).await;
        // Subscribed to the writer at its open, then never read while every line is written.
        let mut slow = Events::open(&web, &actor, &ref_id).await;
        let (mut at, mut text) = (0, String::new());
        for i in 0..LINES_WRITTEN {
            LINES.add_permits(1);
            // The fast stream has each line before the next is written: the writer frames every line on its own,
            // so the slow stream's receiver misses three times as many frames as the writer keeps.
            fast.output(&mut at, &mut text, Some(&format!("tick {i:04}\n")))
                .await;
        }
        let all: String = (0..LINES_WRITTEN)
            .map(|i| format!("tick {i:04}\n"))
            .collect();
        assert_eq!(text, all);
        fast.output(&mut at, &mut text, None).await;
        assert_eq!(text, all, "the fast stream ends with nothing more");

        let (mut slow_at, mut slow_text) = (0, String::new());
        slow.output(&mut slow_at, &mut slow_text, None).await;
        assert_eq!(
            slow_text, all,
            "the lagging stream read what it missed, once and in order"
        );
        assert_eq!(slow_at, at);
        assert!(slow.next().await.is_none(), "the stream ends after `end`");
    }
}
