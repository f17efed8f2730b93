//! Layer 1, the model: refcache's vocabulary. Ref ids, keys, task states and records, errors, formats, schemas,
//! previews, and who asks (actors, sessions, namespaces, access). No I/O and no backend: every layer above uses
//! these types, and nothing here imports from above.
//!
//! `output.rs` holds a task's output streams and chunks; `input.rs` the input requests a task asks of its caller.

pub(crate) mod access;
pub(crate) mod actor;
pub(crate) mod error;
pub(crate) mod excerpt;
pub(crate) mod format;
pub(crate) mod input;
pub(crate) mod json_text;
pub(crate) mod key;
pub(crate) mod namespace;
pub(crate) mod output;
pub(crate) mod preview;
pub(crate) mod record;
pub(crate) mod ref_id;
pub(crate) mod schema;
pub(crate) mod scope;
pub(crate) mod session;
pub(crate) mod task;
