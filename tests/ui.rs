//! Misuse of `#[cached]` is a compile error at the offending token; each diagnostic is pinned here.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
