//! The backend conformance suite: the behaviour every [`TaskBackend`](crate::TaskBackend) must show, as tests any backend runs
//! against itself. Feature `test-utils`.
//!
//! The suite drives a backend with tasks registered by name in this module (so that a backend whose workers run
//! in another task or process finds them too) and controlled through in-process gates, never sleeps. Run it with
//! [`backend_conformance!`](crate::backend_conformance):
//!
//! ```text
//! fn make(settings: refcache_core::conformance::Settings) -> BoxFuture<'static, Fixture> { ... }
//! refcache_core::backend_conformance!(make);
//! ```
//!
//! One file per group of behaviours: `lifecycle.rs`, `lifetime.rs`, `failures.rs`, `progress.rs`, `cancel.rs`, `queue.rs`,
//! `records.rs`, `input.rs` and `output.rs`; `fixture.rs` is how a backend enters the suite, `tasks.rs` the suite's registered tasks and their
//! gates, `support.rs` what the tests share. An edge (feature `test-utils`): it drives a backend through the
//! contract alone.

mod cancel;
mod failures;
mod fixture;
mod input;
mod lifecycle;
mod lifetime;
mod output;
mod progress;
mod queue;
mod records;
mod support;
mod tasks;

pub use cancel::{cancel_semantics, late_result_is_discarded};
pub use failures::{
    execution_timeout_fails_the_task, failure_is_not_cached, panic_becomes_failure,
    permanent_errors_are_not_retried, retries_until_success, retry_reruns_a_failed_task,
};
pub use fixture::{Factory, Fixture, Settings};
pub use input::{input_cancel_while_waiting, input_round_trip, input_time_limit_and_bad_schema};
pub use lifecycle::{
    runs_by_name, single_flight, submit_wait_complete, unknown_ids, wait_respects_deadline,
};
pub use lifetime::{
    a_complete_record_lives_as_long_as_its_value, an_expired_value_takes_its_record,
    cleanup_drops_the_value_with_its_record,
};
pub use output::{
    output_cap_drops_the_oldest, output_goes_with_its_record, output_streams_while_running,
};
pub use progress::{progress_is_visible, watch_follows_progress};
pub use queue::{
    max_concurrent_per_task, priority_orders_the_queue, queue_and_pending, shutdown_refuses_work,
};
pub use records::{
    access_travels_with_the_task, cleanup_removes_old_records, delete_drops_record_and_value,
    end_session_drops_the_session, list_and_page,
};

/// Generates one `#[tokio::test]` per conformance test, each with a fresh backend from `$make` (a
/// [`Factory`](crate::conformance::Factory)).
#[macro_export]
macro_rules! backend_conformance {
    ($make:path) => {
        $crate::backend_conformance!(@tests $make;
            submit_wait_complete, single_flight, wait_respects_deadline, failure_is_not_cached,
            panic_becomes_failure, progress_is_visible, cancel_semantics, late_result_is_discarded,
                        queue_and_pending, runs_by_name, unknown_ids, list_and_page, shutdown_refuses_work,
            retries_until_success, permanent_errors_are_not_retried, execution_timeout_fails_the_task,
            priority_orders_the_queue, max_concurrent_per_task, retry_reruns_a_failed_task,
            end_session_drops_the_session, cleanup_removes_old_records, delete_drops_record_and_value,
            access_travels_with_the_task, watch_follows_progress,
            cleanup_drops_the_value_with_its_record, a_complete_record_lives_as_long_as_its_value,
            an_expired_value_takes_its_record);
    };
    // The input group (`input.rs`): for a backend that takes answers (`TaskBackend::respond`). Every backend in
    // this workspace runs it (memory, Redis and Postgres, in both modes).
    (input: $make:path) => {
        $crate::backend_conformance!(@tests $make;
            input_round_trip, input_cancel_while_waiting, input_time_limit_and_bad_schema);
    };
    // The output group (`output.rs`): for a backend that keeps task output (`TaskBackend::read_output`). The memory
    // backend, Redis and Postgres (both modes) run it.
    (output: $make:path) => {
        $crate::backend_conformance!(@tests $make;
            output_streams_while_running, output_cap_drops_the_oldest, output_goes_with_its_record);
    };
    (@tests $make:path; $($name:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                $crate::conformance::$name($make).await;
            }
        )*
    };
}
