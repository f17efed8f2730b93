//! Admin operations on references: list, info, delete, clear a namespace, stats. Each obeys access, as the actor in
//! effect ([`Actor::current`]); the system actor may do everything.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::cache::RefCache;
use crate::contract::list::{TaskFilter, TaskPage};
use crate::model::access::Permissions;
use crate::model::actor::Actor;
use crate::model::error::RefCacheError;
use crate::model::record::TaskInfo;
use crate::model::session::Session;
use crate::model::task::{TaskStatus, Timestamp};

/// How many backend pages one list call reads at most while it skips references the actor may not see.
const MAX_SCANNED_PAGES: usize = 20;

/// What is known about a reference, without its value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ReferenceInfo {
    /// The task record.
    #[serde(flatten)]
    pub task: TaskInfo,
    /// What the asking actor may do with it.
    pub permissions: Permissions,
    /// The value's JSON length in bytes, when it is stored.
    pub size: Option<usize>,
    /// The value's items, when it is a stored array or object.
    pub total_items: Option<usize>,
    /// When the value was stored.
    pub stored_at: Option<Timestamp>,
    /// How long the value stays, from `stored_at`.
    pub ttl_seconds: Option<f64>,
}

/// Counts of the references an actor may see.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ReferenceStats {
    /// References by status.
    pub by_status: BTreeMap<TaskStatus, u64>,
    /// All of them.
    pub total: u64,
}

impl RefCache {
    /// Lists task records (references), newest first: only those the actor in effect may see (`READ` or
    /// `EXECUTE`), and filtered by `filter` (status, namespace, task name, limit, cursor).
    ///
    /// Within a [`Session`], only that session's tasks are listed; outside any session, only tasks outside any
    /// session; the system actor sees all. A page skips what the actor may not see, so it can hold fewer than
    /// `limit` records while more follow: continue while `next_cursor` is set.
    pub async fn list_tasks(&self, mut filter: TaskFilter) -> Result<TaskPage, RefCacheError> {
        if filter.limit == Some(0) {
            return Err(RefCacheError::InvalidOption {
                option: "limit",
                value: "0".into(),
                expected: "a whole number from 1 to 1000 (larger ones are capped)",
            });
        }
        let actor = Actor::current();
        scope_to_session(&mut filter, &actor);
        let limit = filter.limit.unwrap_or(50).clamp(1, 1000);
        let mut tasks = Vec::new();
        let mut cursor = filter.cursor.take();
        for _ in 0..MAX_SCANNED_PAGES {
            let mut page_filter = filter.clone();
            page_filter.limit = Some(limit - tasks.len());
            page_filter.cursor = cursor.take();
            let page = self.backend().list(page_filter).await?;
            tasks.extend(page.tasks.into_iter().filter_map(|info| {
                let permissions = info.permissions_for(&actor);
                permissions
                    .can_see()
                    .then(|| info.redacted_for(permissions))
            }));
            cursor = page.next_cursor;
            if tasks.len() >= limit || cursor.is_none() {
                break;
            }
        }
        Ok(TaskPage::new(tasks, cursor))
    }

    /// What is known about a reference, without its value (needs `READ` or `EXECUTE`).
    pub async fn reference_info(&self, ref_id: &str) -> Result<ReferenceInfo, RefCacheError> {
        let ref_id = self.own_ref(ref_id)?;
        let (snapshot, permissions) = self.visible(&ref_id, &Actor::current()).await?;
        let value = snapshot.value.as_ref();
        Ok(ReferenceInfo {
            permissions,
            size: value.map(|v| v.size),
            total_items: value.and_then(|v| v.total_items),
            stored_at: value.map(|v| v.created_at),
            ttl_seconds: value.map(|v| v.ttl.as_secs_f64()),
            task: snapshot.info.redacted_for(permissions),
        })
    }

    /// Deletes a reference (needs `DELETE`): cancels its task if it is in flight, and drops its record and value.
    /// An unknown or invisible id is `NotFound`; a visible one without `DELETE` is
    /// [`RefCacheError::PermissionDenied`].
    pub async fn delete(&self, ref_id: &str) -> Result<(), RefCacheError> {
        let ref_id = self.own_ref(ref_id)?;
        self.permitted(&ref_id, &Actor::current(), "delete", Permissions::DELETE)
            .await?;
        if self.backend().delete(&ref_id).await? {
            Ok(())
        } else {
            Err(RefCacheError::NotFound)
        }
    }

    /// Deletes every reference in `namespace` that the actor in effect may delete; answers how many it deleted.
    /// References it may not delete stay, and are not counted.
    pub async fn clear_namespace(&self, namespace: &str) -> Result<usize, RefCacheError> {
        crate::model::namespace::Namespace::parse(namespace)?;
        let actor = Actor::current();
        // Gather first, then delete: deleting while paging would shift the pages.
        let doomed: Vec<_> = self
            .list_every(TaskFilter::all().namespace(namespace))
            .await?
            .into_iter()
            .filter(|info| info.permissions_for(&actor).contains(Permissions::DELETE))
            .map(|info| info.ref_id)
            .collect();
        let mut deleted = 0;
        for ref_id in doomed {
            if self.backend().delete(&ref_id).await? {
                deleted += 1;
            }
        }
        tracing::debug!(namespace, deleted, actor = %actor, "namespace cleared");
        Ok(deleted)
    }

    /// Counts the references the actor in effect may see, by status, in `namespace` (or all namespaces): the ones
    /// [`list_tasks`](Self::list_tasks) would list.
    pub async fn reference_stats(
        &self,
        namespace: Option<&str>,
    ) -> Result<ReferenceStats, RefCacheError> {
        let actor = Actor::current();
        let mut filter = TaskFilter::all();
        filter.namespace = namespace.map(str::to_owned);
        scope_to_session(&mut filter, &actor);
        let mut stats = ReferenceStats::default();
        for info in self.list_every(filter).await? {
            if info.permissions_for(&actor).can_see() {
                *stats.by_status.entry(info.status).or_default() += 1;
                stats.total += 1;
            }
        }
        Ok(stats)
    }

    /// Every record the backend lists for `filter`, all pages (1000 at a time), with no access check.
    async fn list_every(&self, mut filter: TaskFilter) -> Result<Vec<TaskInfo>, RefCacheError> {
        let mut infos = Vec::new();
        filter.limit = Some(1000);
        loop {
            let page = self.backend().list(filter.clone()).await?;
            infos.extend(page.tasks);
            match page.next_cursor {
                Some(cursor) => filter.cursor = Some(cursor),
                None => return Ok(infos),
            }
        }
    }
}

/// Within a session, only that session's tasks; outside any, only tasks outside any session. The system sees all.
fn scope_to_session(filter: &mut TaskFilter, actor: &Actor) {
    if actor.is_system() {
        return;
    }
    match Session::current() {
        Some(session) => filter.session_id = Some(session.id().to_owned()),
        None => filter.sessionless = true,
    }
}
