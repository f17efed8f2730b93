//! The poll path: [`RefCache::get_cached_result`] and its options ([`GetOptions`]), the task record of a reference,
//! and what every path asks first: may this actor see this reference ([`RefCache::visible`]), and do this to it
//! ([`RefCache::permitted`])? Also how a readable value is shown (whole, previewed, one page) and the answer for a
//! task that has no value yet, which the call path shares.

use std::sync::Arc;

use crate::cache::RefCache;
use crate::cache::response::CachedResponse;
use crate::contract::backend::TaskSnapshot;
use crate::contract::registry::{self, TaskMeta};
use crate::contract::store::StoredValue;
use crate::model::access::Permissions;
use crate::model::actor::Actor;
use crate::model::error::RefCacheError;
use crate::model::format::AsyncResponseFormat;
use crate::model::output::DEFAULT_OUTPUT_READ;
use crate::model::preview::{PageFit, Preview, PreviewStrategy, Previewer};
use crate::model::record::TaskInfo;
use crate::model::ref_id::RefId;
use crate::model::task::TaskStatus;

/// Options of [`RefCache::get_cached_result_with`].
///
/// - neither `page`, `page_size` nor `full`: the whole value when it is within `max_size`, else a preview;
/// - `page` and/or `page_size`: one page of the value's items (1-indexed; `page_size` defaults to the cache's),
///   trimmed to `max_size`. A page beyond the last is empty, with the true totals;
/// - `full`: the whole value, whatever its size (it still needs `READ`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct GetOptions {
    /// The response format for a task that is not complete (default: `standard`).
    pub format: Option<AsyncResponseFormat>,
    /// The page to answer, from 1.
    pub page: Option<usize>,
    /// Items per page.
    pub page_size: Option<usize>,
    /// The largest value answered whole, and the largest preview or page (default: the function's `max_size`,
    /// else the cache's).
    pub max_size: Option<usize>,
    /// Answer the whole value, whatever its size.
    pub full: bool,
    /// Also answer the task's output from this byte offset (the response's `output`, an
    /// [`OutputChunk`](crate::OutputChunk) of at most 64 KiB). Left out for a caller without `READ`.
    pub output_offset: Option<u64>,
}

impl GetOptions {
    /// Answer in `format`.
    pub fn format(mut self, format: AsyncResponseFormat) -> Self {
        self.format = Some(format);
        self
    }

    /// Answer page `page` (from 1).
    pub fn page(mut self, page: usize) -> Self {
        self.page = Some(page);
        self
    }

    /// Pages of `page_size` items.
    pub fn page_size(mut self, page_size: usize) -> Self {
        self.page_size = Some(page_size);
        self
    }

    /// Answer whole only values within `max_size`; previews and pages within it too.
    pub fn max_size(mut self, max_size: usize) -> Self {
        self.max_size = Some(max_size);
        self
    }

    /// Answer the whole value, whatever its size.
    pub fn full(mut self, full: bool) -> Self {
        self.full = full;
        self
    }

    /// Answer the task's output from byte `offset` too.
    pub fn output_offset(mut self, offset: u64) -> Self {
        self.output_offset = Some(offset);
        self
    }

    fn validate(&self) -> Result<(), RefCacheError> {
        let positive =
            |option: &'static str, value: Option<usize>, expected: &'static str| match value {
                Some(0) => Err(RefCacheError::InvalidOption {
                    option,
                    value: "0".into(),
                    expected,
                }),
                _ => Ok(()),
            };
        positive(
            "page",
            self.page,
            "a whole number from 1 (pages count from 1)",
        )?;
        positive(
            "page_size",
            self.page_size,
            "a whole number of items from 1",
        )?;
        positive(
            "max_size",
            self.max_size,
            "a whole number from 1, in the cache's measure (tokens or characters)",
        )?;
        if self.full && (self.page.is_some() || self.page_size.is_some()) {
            return Err(RefCacheError::InvalidOption {
                option: "full",
                value: "true".into(),
                expected: "`full` alone: it answers the whole value, so `page` and `page_size` cannot go with it",
            });
        }
        Ok(())
    }
}

impl RefCache {
    /// Polls a reference: its value when complete (a preview when larger than `max_size`); otherwise its status,
    /// progress, error or cancellation, in the `standard` format.
    ///
    /// An unknown or expired id, and one the actor in effect may not see, answer [`RefCacheError::NotFound`]
    /// (`Invalid or inaccessible reference`); text that is not a ref id at all answers
    /// [`RefCacheError::MalformedRefId`]. A complete value the actor may execute but not read answers
    /// [`CachedResponse::Restricted`].
    pub async fn get_cached_result(&self, ref_id: &str) -> Result<CachedResponse, RefCacheError> {
        self.get_cached_result_with(ref_id, &GetOptions::default())
            .await
    }

    /// [`get_cached_result`](Self::get_cached_result) with options: format, page, page size, `max_size`, full.
    pub async fn get_cached_result_with(
        &self,
        ref_id: &str,
        options: &GetOptions,
    ) -> Result<CachedResponse, RefCacheError> {
        options.validate()?;
        let ref_id = self.own_ref(ref_id)?;
        let actor = Actor::current();
        let (snapshot, permissions) = self.visible(&ref_id, &actor).await?;
        let output = match options.output_offset {
            Some(offset) if permissions.contains(Permissions::READ) => Some(
                self.read_checked(&ref_id, offset, DEFAULT_OUTPUT_READ)
                    .await?,
            ),
            _ => None,
        };
        let Some(stored) = snapshot.value else {
            return Ok(respond_pending(
                snapshot.info.redacted_for(permissions),
                options.format.unwrap_or_default(),
                None,
            )
            .with_output(output));
        };
        if !permissions.contains(Permissions::READ) {
            return Ok(CachedResponse::restricted(stored.ref_id.clone()));
        }
        let view = if options.full {
            View::Full
        } else if options.page.is_some() || options.page_size.is_some() {
            View::Page {
                page: options.page.unwrap_or(1),
                page_size: options.page_size,
            }
        } else {
            View::Auto
        };
        Ok(self
            .show(stored, view, options.max_size)
            .with_output(output))
    }

    /// The task's record and value, and what `actor` may do with it, if it may see it at all
    /// ([`Permissions::can_see`]). Anything else is `NotFound`, with the same text as an unknown id.
    pub(crate) async fn visible(
        &self,
        ref_id: &RefId,
        actor: &Actor,
    ) -> Result<(TaskSnapshot, Permissions), RefCacheError> {
        // Access is decided on the record alone; the value is read only for an actor who may see it, so that a
        // foreign id answers as fast as an unknown one (#15 §4).
        let backend = &self.inner.backend;
        let record = backend
            .get_record(ref_id)
            .await?
            .ok_or(RefCacheError::NotFound)?;
        let permissions = record.info.permissions_for(actor);
        if !permissions.can_see() {
            return Err(RefCacheError::NotFound);
        }
        // The in-process backend hands the value out with the record (one lookup); a remote one is asked for it
        // now that access is decided.
        let snapshot = if record.info.status == TaskStatus::Complete && record.value.is_none() {
            backend.get(ref_id).await?.ok_or(RefCacheError::NotFound)?
        } else {
            record
        };
        Ok((snapshot, permissions))
    }

    /// [`visible`](Self::visible), and `needed` on top: a visible reference without it is
    /// [`RefCacheError::PermissionDenied`].
    pub(crate) async fn permitted(
        &self,
        ref_id: &RefId,
        actor: &Actor,
        operation: &'static str,
        needed: Permissions,
    ) -> Result<TaskSnapshot, RefCacheError> {
        let (snapshot, permissions) = self.visible(ref_id, actor).await?;
        if !permissions.contains(needed) {
            return Err(RefCacheError::PermissionDenied {
                ref_id: ref_id.to_string(),
                operation,
                needed,
            });
        }
        Ok(snapshot)
    }

    /// The task record of a reference (needs `READ` or `EXECUTE`).
    pub async fn task_info(&self, ref_id: &str) -> Result<TaskInfo, RefCacheError> {
        let ref_id = self.own_ref(ref_id)?;
        let (snapshot, permissions) = self.visible(&ref_id, &Actor::current()).await?;
        Ok(snapshot.info.redacted_for(permissions))
    }

    /// A readable value as `view` asks: whole, previewed, or one page. `max_size` is the caller's; without it, the
    /// value's function's; without that, the cache's.
    ///
    /// Measuring and previewing a big value is CPU work: past `OFFLOAD_BYTES` of JSON, when the value does not
    /// fit by its length alone, it runs off the runtime threads (`contract/offload.rs`).
    pub(super) fn show(
        &self,
        stored: Arc<StoredValue>,
        view: View,
        max_size: Option<usize>,
    ) -> CachedResponse {
        let limit = max_size
            .or(stored.max_size)
            .unwrap_or(self.inner.previewer.max_size);
        // What `show_here` answers first for a value whose JSON is within the limit (it is then within it in every
        // measure), without building a previewer: the hit's usual case.
        if matches!(view, View::Auto | View::Full) && stored.size <= limit {
            return CachedResponse::complete(stored);
        }
        let heavy = stored.size > crate::contract::offload::OFFLOAD_BYTES
            && stored.size > limit
            && !matches!(view, View::Full);
        if heavy {
            crate::contract::offload::off_runtime(|| self.show_here(stored, view, max_size))
        } else {
            self.show_here(stored, view, max_size)
        }
    }

    /// [`show`](Self::show), on this thread.
    fn show_here(
        &self,
        stored: Arc<StoredValue>,
        view: View,
        max_size: Option<usize>,
    ) -> CachedResponse {
        let defaults = &self.inner.previewer;
        let previewer =
            defaults.max_size(max_size.or(stored.max_size).unwrap_or(defaults.max_size));
        let (strategy, page, previewer) = match view {
            View::Full => return CachedResponse::complete(stored),
            View::Auto if stored.fits(previewer.measure, previewer.max_size) => {
                return CachedResponse::complete(stored);
            }
            View::Auto => {
                let strategy = stored.preview_strategy.unwrap_or(previewer.strategy);
                let page = (strategy == PreviewStrategy::Paginate).then_some(1);
                (strategy, page, previewer)
            }
            View::Page { page, page_size } => (
                PreviewStrategy::Paginate,
                Some(page),
                previewer.page_size(page_size.unwrap_or(previewer.page_size)),
            ),
        };
        let preview = stored.preview(&previewer, strategy, page);
        let message = preview_message(&stored.ref_id, &preview, &previewer);
        CachedResponse::preview(stored, preview, message)
    }
}

/// How a readable value is answered.
#[derive(Debug, Clone, Copy)]
pub(super) enum View {
    /// Whole when it fits `max_size`, else a preview.
    Auto,
    /// One page.
    Page {
        page: usize,
        page_size: Option<usize>,
    },
    /// Whole, whatever its size.
    Full,
}

/// What a preview says about itself and how to get the rest.
fn preview_message(ref_id: &RefId, preview: &Preview, previewer: &Previewer) -> String {
    let unit = previewer.measure.unit();
    let items = preview
        .total_items
        .map(|n| format!(", {n} items in all"))
        .unwrap_or_default();
    let whole = format!(
        "get_cached_result(ref_id=\"{ref_id}\", full=true) returns the whole value ({} {unit})",
        preview.original_size
    );
    // What a page leaves out, if it did not fit `max_size` whole, and what to try to see all of it.
    let max = previewer.max_size;
    let fit = match (preview.page_fit, preview.page_items, preview.shown_items()) {
        (Some(PageFit::Sampled), Some(on_page), Some(shown)) if shown > 0 => format!(
            ": {shown} of its {on_page} items fit max_size {max} {unit}, sampled evenly. To see every item, try \
             page_size={shown} (the pages are then numbered anew) or a larger max_size"
        ),
        (Some(PageFit::Cut), Some(on_page), Some(shown)) if shown < on_page => format!(
            ": {shown} of its {on_page} items are shown, cut to fit max_size {max} {unit}. A larger max_size, or \
             full=true, shows them whole"
        ),
        (Some(PageFit::Sampled | PageFit::Cut), Some(_), _) => format!(
            ": its items are cut to fit max_size {max} {unit}. A larger max_size, or full=true, shows them whole"
        ),
        (Some(PageFit::Cut), None, _) => {
            format!(": it is cut to fit max_size {max} {unit}. full=true returns it whole")
        }
        _ => String::new(),
    };
    match (preview.page, preview.total_pages) {
        (Some(page), Some(pages)) if page > pages => format!(
            "Page {page} is beyond the last page, {pages}{items}. Ask for a page from 1 to {pages}; {whole}."
        ),
        (Some(page), Some(pages)) if page < pages => format!(
            "Page {page} of {pages}{items}{fit}. Next: get_cached_result(ref_id=\"{ref_id}\", page={}, \
             page_size={}); {whole}.",
            page + 1,
            previewer.page_size
        ),
        (Some(page), Some(pages)) => {
            format!("Page {page} of {pages}, the last{items}{fit}; {whole}.")
        }
        _ if preview.total_items.is_none() => format!(
            "The value is {} {unit}, more than max_size {}: this is a {} preview of {} {unit}; {whole}.",
            preview.original_size,
            previewer.max_size,
            preview.strategy.as_str(),
            preview.preview_size,
        ),
        _ => format!(
            "The value is {} {unit}, more than max_size {}: this is a {} preview of {} {unit}{items}. Page \
             through it with get_cached_result(ref_id=\"{ref_id}\", page=1, page_size={}); {whole}.",
            preview.original_size,
            previewer.max_size,
            preview.strategy.as_str(),
            preview.preview_size,
            previewer.page_size
        ),
    }
}

/// The answer for a task that has no value (yet).
pub(super) fn respond_pending(
    info: TaskInfo,
    format: AsyncResponseFormat,
    meta: Option<&'static TaskMeta>,
) -> CachedResponse {
    let schema = if format == AsyncResponseFormat::Full {
        meta.or_else(|| registry::meta(&info.task_name))
            .map(TaskMeta::expected_schema)
    } else {
        None
    };
    CachedResponse::pending(info, format, schema)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::View;
    use crate::cache::RefCache;
    use crate::contract::store::StoredValue;
    use crate::memory::backend::MemoryTaskBackend;
    use crate::memory::config::MemoryBackendConfig;
    use crate::model::json_text::JsonText;
    use crate::model::key::CacheKey;
    use crate::model::ref_id::RefId;

    /// `show` answers a value within the limit without `show_here`'s previewer: both must answer alike, at the
    /// limit, on either side of it, and in every view.
    #[tokio::test]
    async fn the_fast_path_of_show_answers_as_show_here() {
        let cache = RefCache::builder()
            .backend(Arc::new(MemoryTaskBackend::new(
                MemoryBackendConfig::default(),
            )))
            .expect("a cache");
        let text =
            JsonText::of(&serde_json::json!({"id": 7, "name": "Ada", "roles": ["admin", "dev"]}))
                .expect("JSON");
        let size = text.len();
        let key = CacheKey::from_json("t", "public", &serde_json::json!({"id": 7})).expect("a key");
        let stored = Arc::new(StoredValue::new(
            RefId::generate("test"),
            key,
            "t",
            "public",
            text,
            Duration::from_secs(60),
        ));
        let views = [
            View::Auto,
            View::Full,
            View::Page {
                page: 1,
                page_size: None,
            },
        ];
        for max_size in [None, Some(1), Some(size - 1), Some(size), Some(size + 1)] {
            for view in views {
                let fast = cache.show(stored.clone(), view, max_size);
                let slow = cache.show_here(stored.clone(), view, max_size);
                assert_eq!(
                    fast.to_json_string(),
                    slow.to_json_string(),
                    "max_size {max_size:?}, view {view:?}"
                );
                assert_eq!(fast.is_complete(), slow.is_complete());
            }
        }
    }
}
