//! Execution counters keyed by a label, so that tests running in parallel in one binary do not see each other's
//! executions.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

static RUNS: LazyLock<Mutex<HashMap<String, usize>>> = LazyLock::new(Default::default);

/// Counts one execution under `label`.
pub(crate) fn bump(label: impl ToString) {
    *RUNS.lock().unwrap().entry(label.to_string()).or_default() += 1;
}

/// Executions counted under `label`.
pub(crate) fn runs(label: impl ToString) -> usize {
    RUNS.lock()
        .unwrap()
        .get(&label.to_string())
        .copied()
        .unwrap_or(0)
}
