//! The event streams: one task's (`status`, `output`, `end`) and the caller's list (`task`). Both wait on the
//! cache's change events; a backend that cannot follow a task is read again every second. The streams of one
//! task share one read of each output chunk (`fanout.rs`).

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use futures::stream::{BoxStream, SelectAll};
use serde_json::Value;

use super::auth::Caller;
use super::error::WebError;
use super::fanout::SharedChunk;
use super::fields::Fields;
use super::state::WebRefCache;
use super::summary::summary;
use crate::model::actor::Actor;
use crate::model::error::RefCacheError;
use crate::model::output::OutputChunk;
use crate::model::record::TaskInfo;
use crate::model::ref_id::RefId;

/// How often a task that cannot be followed is read again.
const REREAD: Duration = Duration::from_secs(1);
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
/// output is all sent.
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
            // Watched before the output is read, so that no change in between is missed.
            let watch = web.cache.backend().watch(&info.ref_id).await.ok().flatten();
            // Listening before the own first read, so that no chunk in between is missed.
            let feed = web
                .fanout
                .listen(&web.cache, &actor, &info.ref_id, offset, &web.stop)
                .await;
            Ok::<_, WebError>((info, watch, offset, feed))
        })
        .await;
    let (info, watch, offset, feed) = match opened {
        Ok(opened) => opened,
        Err(e) => return e.into_response(),
    };
    let output = Output {
        web: web.clone(),
        actor: actor.clone(),
        ref_id: info.ref_id.clone(),
        offset,
        feed,
        own: None,
        pending: VecDeque::new(),
        caught_up: false,
        finished: false,
    };
    let output = futures::stream::unfold(output, Output::step).boxed();
    let status = Status {
        web: web.clone(),
        actor: actor.clone(),
        ref_id: info.ref_id.clone(),
        watch,
        last: None,
        first: Some(info),
    };
    let status = futures::stream::unfold(status, Status::step).boxed();
    let last = {
        let (web, actor) = (web.clone(), actor);
        futures::stream::once(async move {
            let info = actor.scope(web.cache.task_info(&ref_id)).await;
            let mut events = Vec::new();
            if let Ok(info) = info {
                events.push(json_event("status", &summary(&info)));
            }
            events.push(Event::default().event("end").data("{}"));
            futures::stream::iter(events)
        })
        .flatten()
    };
    let events = futures::stream::select(output, status).chain(last).boxed();
    sse(&web, events)
}

fn output_event(chunk: &OutputChunk, json: &str) -> Event {
    Event::default()
        .event("output")
        .id(chunk.next_offset.to_string())
        .data(json)
}

/// One stream's output events: the shared feed's chunks that continue where this stream is, and its own reads of
/// the log to catch up (when it opens, when it fell behind, when the feed ends early).
struct Output {
    web: WebRefCache,
    actor: Actor,
    ref_id: RefId,
    /// Where this stream is in the log.
    offset: u64,
    feed: Option<tokio::sync::broadcast::Receiver<Arc<SharedChunk>>>,
    /// Its own follower of the log, once the feed ended before the output did (or could not start).
    own: Option<BoxStream<'static, Result<OutputChunk, RefCacheError>>>,
    pending: VecDeque<Event>,
    caught_up: bool,
    finished: bool,
}

impl Output {
    async fn step(mut self) -> Option<(Event, Self)> {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some((event, self));
            }
            if self.finished {
                return None;
            }
            if !self.caught_up {
                self.caught_up = true;
                self.read().await;
                if self.feed.is_none() && !self.finished {
                    self.follow().await;
                }
                continue;
            }
            if let Some(own) = &mut self.own {
                match own.next().await {
                    Some(Ok(chunk)) => {
                        let json = serde_json::to_string(&chunk).unwrap_or_default();
                        self.push(&chunk, &json);
                    }
                    _ => self.finished = true,
                }
                continue;
            }
            let Some(feed) = &mut self.feed else {
                self.finished = true;
                continue;
            };
            match feed.recv().await {
                Ok(shared) => {
                    let chunk = &shared.chunk;
                    if chunk.next_offset <= self.offset && !chunk.done {
                        continue;
                    }
                    if chunk.offset == self.offset && chunk.dropped == 0 {
                        self.push(chunk, &shared.json);
                    } else {
                        // Behind the feed (or past a cut of the log): this stream's own reads, from where it is.
                        self.read().await;
                    }
                }
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => {
                    self.feed = None;
                    self.follow().await;
                }
            }
        }
    }

    fn push(&mut self, chunk: &OutputChunk, json: &str) {
        self.offset = chunk.next_offset;
        self.finished |= chunk.done;
        self.pending.push_back(output_event(chunk, json));
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
                    self.finished = true;
                    return;
                }
            };
            if chunk.text.is_empty() && chunk.dropped == 0 && !chunk.done {
                return;
            }
            let json = serde_json::to_string(&chunk).unwrap_or_default();
            self.push(&chunk, &json);
            if chunk.done {
                return;
            }
        }
    }

    /// Follows the log itself from here on (the feed ended before the output did).
    async fn follow(&mut self) {
        let follow = self
            .web
            .cache
            .follow_output(self.ref_id.as_str(), self.offset);
        match self.actor.clone().scope(follow).await {
            Ok(own) => self.own = Some(own),
            Err(_) => self.finished = true,
        }
    }
}

/// The task's status as it changes, until it is terminal.
struct Status {
    web: WebRefCache,
    actor: Actor,
    ref_id: RefId,
    watch: Option<tokio::sync::watch::Receiver<TaskInfo>>,
    last: Option<String>,
    first: Option<TaskInfo>,
}

impl Status {
    async fn step(mut self) -> Option<(Event, Self)> {
        loop {
            if self.last.as_deref() == Some("terminal") {
                return None;
            }
            let info = match self.first.take() {
                Some(info) => info,
                None => self.next().await?,
            };
            let summary = summary(&info);
            let text = summary.to_string();
            if self.last.as_deref() == Some(text.as_str()) {
                continue;
            }
            // The closing status is sent after the output, by the stream's end.
            if info.status.is_terminal() {
                self.last = Some("terminal".to_owned());
                return None;
            }
            self.last = Some(text);
            return Some((json_event("status", &summary), self));
        }
    }

    /// The record after its next change (or a second later, when it cannot be followed).
    async fn next(&mut self) -> Option<TaskInfo> {
        if let Some(watch) = &mut self.watch {
            if watch.changed().await.is_ok() {
                return Some(watch.borrow_and_update().clone());
            }
            self.watch = None;
        }
        tokio::time::sleep(REREAD).await;
        let read = self.web.cache.task_info(self.ref_id.as_str());
        self.actor.clone().scope(read).await.ok()
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
