//! Misuse of `#[cached]` is a compile error at the offending token; each diagnostic is pinned here.
//!
//! The cases (`tests/ui/*.rs`, each beside its `.stderr`) are checked by trybuild in a project made of this small
//! package's dependencies (refcache with `mcp`, serde), not the facade's dev-dependencies: with the facade's, the
//! check rebuilt reqwest, criterion, gungraun, redis, tokio-postgres and rustls for this one test (363 s of CPU).
//! Paths in the `.stderr` files are relative to this package (`tests/ui/`), so a case shows as `x.rs`.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("*.rs");
}
