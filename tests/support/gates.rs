//! Gates by label: a gated task waits until the test opens its gate. Opening first is fine: the permit is kept.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use tokio::sync::Notify;

static GATES: LazyLock<Mutex<HashMap<String, Arc<Notify>>>> = LazyLock::new(Default::default);

/// The gate called `label`.
pub(crate) fn gate(label: &str) -> Arc<Notify> {
    GATES
        .lock()
        .unwrap()
        .entry(label.to_owned())
        .or_default()
        .clone()
}

/// Opens the gate called `label` (for one waiter).
pub(crate) fn open(label: &str) {
    gate(label).notify_one();
}
