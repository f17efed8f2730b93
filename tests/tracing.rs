//! Every task runs inside a `tracing` span carrying its name and ref id.
//!
//! Alone in its binary: tracing caches each callsite's interest globally, so a test running beside it without a
//! subscriber could make the span invisible to this one's.

use std::sync::{Arc, LazyLock, Mutex};

use refcache::{RefCache, cached};
use tracing::Subscriber;
use tracing::span::{Attributes, Id};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

/// Records the name and fields of every span opened.
#[derive(Clone, Default)]
struct Spans(Arc<Mutex<Vec<(String, String)>>>);

impl<S: Subscriber> Layer<S> for Spans {
    fn on_new_span(&self, attrs: &Attributes<'_>, _: &Id, _: Context<'_, S>) {
        struct Fields(String);
        impl tracing::field::Visit for Fields {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                self.0.push_str(&format!("{}={:?};", field.name(), value));
            }
        }
        let mut fields = Fields(String::new());
        attrs.record(&mut fields);
        self.0
            .lock()
            .unwrap()
            .push((attrs.metadata().name().to_owned(), fields.0));
    }
}

static TRACED: LazyLock<RefCache> = LazyLock::new(RefCache::new);

#[cached(cache = TRACED, name = "tracing_test::traced")]
async fn traced(n: u32) -> u32 {
    n
}

#[test]
fn every_task_runs_in_a_span_with_its_name_and_ref_id() {
    let spans = Spans::default();
    let subscriber = tracing_subscriber::registry().with(spans.clone());
    let response = tracing::subscriber::with_default(subscriber, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(traced(7)).unwrap()
    });
    let recorded = spans.0.lock().unwrap().clone();
    let task_span = recorded
        .iter()
        .find(|(name, _)| name == "refcache.task")
        .expect("a refcache.task span");
    assert!(
        task_span.1.contains("task=tracing_test::traced;"),
        "{task_span:?}"
    );
    assert!(
        task_span
            .1
            .contains(&format!("ref_id={};", response.ref_id())),
        "{task_span:?}"
    );
}
