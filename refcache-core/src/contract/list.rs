//! Listing task records: which to list ([`TaskFilter`]), one page of them ([`TaskPage`]), and where a page ends
//! ([`ListCursor`]). Every backend pages through [`TaskPage::paginate`], so cursors mean the same everywhere.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::error::BackendError;
use crate::model::record::TaskInfo;
use crate::model::task::TaskStatus;

/// Which tasks to list.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TaskFilter {
    /// Only this status.
    pub status: Option<TaskStatus>,
    /// Only this session.
    pub session_id: Option<String>,
    /// Only tasks outside any session.
    #[serde(default)]
    pub sessionless: bool,
    /// Only this task name.
    pub task_name: Option<String>,
    /// Only this namespace.
    #[serde(default)]
    pub namespace: Option<String>,
    /// At most this many (the backend caps it).
    pub limit: Option<usize>,
    /// Continue after this cursor (from an earlier page).
    pub cursor: Option<String>,
}

impl TaskFilter {
    /// Every task.
    pub fn all() -> Self {
        Self::default()
    }

    /// Only tasks in `status`.
    pub fn status(mut self, status: TaskStatus) -> Self {
        self.status = Some(status);
        self
    }

    /// Only tasks of `session_id`.
    pub fn session(mut self, session_id: impl Into<String>) -> Self {
        self.session_id = Some(session_id.into());
        self
    }

    /// Only tasks named `task_name`.
    pub fn task_name(mut self, task_name: impl Into<String>) -> Self {
        self.task_name = Some(task_name.into());
        self
    }

    /// Only tasks in `namespace`.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// At most `limit` tasks per page.
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = Some(limit);
        self
    }

    /// The page after `cursor`.
    pub fn cursor(mut self, cursor: impl Into<String>) -> Self {
        self.cursor = Some(cursor.into());
        self
    }

    /// Whether `info` passes the filter (cursor aside).
    pub fn matches(&self, info: &TaskInfo) -> bool {
        self.status.is_none_or(|s| s == info.status)
            && (!self.sessionless || info.session_id.is_none())
            && self
                .session_id
                .as_deref()
                .is_none_or(|s| info.session_id.as_deref() == Some(s))
            && self
                .task_name
                .as_deref()
                .is_none_or(|n| n == &*info.task_name)
            && self
                .namespace
                .as_deref()
                .is_none_or(|n| n == &*info.namespace)
    }
}

/// One page of tasks, newest first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TaskPage {
    /// The tasks.
    pub tasks: Vec<TaskInfo>,
    /// Pass this as `cursor` for the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

impl TaskPage {
    /// A page.
    pub fn new(tasks: Vec<TaskInfo>, next_cursor: Option<String>) -> Self {
        Self { tasks, next_cursor }
    }
}

impl TaskPage {
    /// The default page size of a list.
    pub const DEFAULT_LIMIT: usize = 50;
    /// The largest page size of a list.
    pub const MAX_LIMIT: usize = 1000;

    /// One page of `infos` (the records that pass `filter`, in any order): newest first, after `filter.cursor`, at
    /// most `filter.limit` of them. Every backend pages through this one function, so cursors mean the same
    /// everywhere.
    pub fn paginate(infos: Vec<TaskInfo>, filter: &TaskFilter) -> Result<Self, BackendError> {
        let after = filter
            .cursor
            .as_deref()
            .map(ListCursor::parse)
            .transpose()?;
        let limit = filter
            .limit
            .unwrap_or(Self::DEFAULT_LIMIT)
            .clamp(1, Self::MAX_LIMIT);
        let mut infos: Vec<(ListCursor, TaskInfo)> =
            infos.into_iter().map(|i| (ListCursor::of(&i), i)).collect();
        infos.sort_by_key(|(key, _)| std::cmp::Reverse(*key));
        let start = match after {
            Some(cursor) => infos
                .iter()
                .position(|(key, _)| *key < cursor)
                .unwrap_or(infos.len()),
            None => 0,
        };
        let more = infos.len() > start + limit;
        let page: Vec<(ListCursor, TaskInfo)> = infos.into_iter().skip(start).take(limit).collect();
        let next_cursor = if more {
            page.last().map(|(key, _)| key.to_string())
        } else {
            None
        };
        Ok(Self::new(
            page.into_iter().map(|(_, i)| i).collect(),
            next_cursor,
        ))
    }
}

/// Where a list page ends: a record's creation time, with ties broken by a hash of its ref id. Lists are newest
/// first by this key, and the cursor is this key, so it names no ref id: a page that ends on a record the caller
/// may not see must not give its id away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ListCursor {
    at: std::time::SystemTime,
    tie: u64,
}

impl ListCursor {
    /// The sort key of `info`.
    pub fn of(info: &TaskInfo) -> Self {
        let hash = blake3::hash(info.ref_id.as_str().as_bytes());
        let mut tie = [0u8; 8];
        tie.copy_from_slice(&hash.as_bytes()[..8]);
        Self {
            at: info.created_at.0,
            tie: u64::from_le_bytes(tie),
        }
    }

    /// Reads a cursor handed out with an earlier page.
    pub fn parse(text: &str) -> Result<Self, BackendError> {
        let invalid = || BackendError::InvalidCursor(text.chars().take(100).collect());
        let (nanos, tie) = text.split_once('-').ok_or_else(invalid)?;
        let nanos: u64 = nanos.parse().map_err(|_| invalid())?;
        let tie = u64::from_str_radix(tie, 16).map_err(|_| invalid())?;
        Ok(Self {
            at: std::time::UNIX_EPOCH + Duration::from_nanos(nanos),
            tie,
        })
    }
}

impl std::fmt::Display for ListCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let nanos = self
            .at
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        write!(f, "{nanos}-{:016x}", self.tie)
    }
}
