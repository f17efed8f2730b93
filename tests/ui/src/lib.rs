//! Nothing: this package exists for its test, `tests/ui.rs` (the trybuild cases beside this folder's `Cargo.toml`).
