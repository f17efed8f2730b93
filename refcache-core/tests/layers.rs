//! The crate's layers, enforced: no import cycle between the files or the folders of `refcache-core/src`, no
//! import from a lower layer to a higher one, and no `mod.rs`. Run by name in `.ci/run` (step `layers`):
//! `cargo test -p refcache-core --test layers`. The checker itself is `layers/check.rs`; its own tests, on small
//! synthetic trees, are below.
//!
//! The layers, lowest first (`lib.rs` says the same):
//! 1. `model`: the vocabulary (ids, keys, task states and records, errors, formats, actors, access, ...);
//! 2. `contract`: what every backend implements and shares (`TaskBackend`, `TaskSpec`, `run_task`, the registry);
//! 3. `memory`: the in-process backend;
//! 4. `cache`: the front door, `RefCache`;
//! 5. the edges: `config`, `global`, `mcp`, `__private` (`private.rs`), `conformance`, `ops`, `web`,
//!    `command`.

#[path = "layers/check.rs"]
mod check;

use std::collections::BTreeMap;
use std::path::Path;

use check::{Problem, check, read_tree};

/// Each top-level module of `refcache-core/src`, its layer, and the layer's name. A new module must be added here.
const LAYERS: &[(&str, u32, &str)] = &[
    ("model", 1, "the model"),
    ("contract", 2, "the contract"),
    ("memory", 3, "the in-process backend"),
    ("cache", 4, "the front door"),
    ("config", 5, "the edges"),
    ("global", 5, "the edges"),
    ("mcp", 5, "the edges"),
    ("__private", 5, "the edges"),
    ("conformance", 5, "the edges"),
    ("ops", 5, "the edges"),
    ("command", 5, "the edges"),
    ("web", 5, "the edges"),
];

fn fail_on(problems: &[Problem]) {
    if !problems.is_empty() {
        let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
        panic!(
            "{} layering problem(s):\n\n{}\n",
            problems.len(),
            text.join("\n\n")
        );
    }
}

#[test]
fn refcache_core_imports_only_downward_and_in_no_circle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = read_tree(&src);
    assert!(
        files.len() > 40,
        "read only {} files under {}",
        files.len(),
        src.display()
    );
    let report = check(
        &files,
        Some(LAYERS),
        "refcache-core/src/",
        &["refcache_core"],
    );
    eprintln!(
        "refcache-core/src: {} files, {} file-to-file arrows",
        report.files, report.arrows
    );
    assert!(
        report.arrows > 100,
        "only {} arrows: the checker reads too little",
        report.arrows
    );
    fail_on(&report.problems);
}

// ---------------------------------------------------------------------------------------------------------------
// The checker's own tests, on synthetic trees.

const TOY_LAYERS: &[(&str, u32, &str)] =
    &[("low", 1, "low"), ("high", 2, "high"), ("edge", 3, "edge")];

fn tree(files: &[(&str, &str)]) -> BTreeMap<String, String> {
    files
        .iter()
        .map(|(p, s)| ((*p).to_owned(), (*s).to_owned()))
        .collect()
}

fn run(files: &[(&str, &str)]) -> check::Report {
    check(&tree(files), Some(TOY_LAYERS), "src/", &["toy"])
}

fn messages(report: &check::Report) -> String {
    report
        .problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

const LIB: &str = "mod low;\nmod high;\nmod edge;\npub use low::a::Thing;\n";

#[test]
fn a_clean_tree_passes() {
    let report = run(&[
        ("lib.rs", LIB),
        ("low.rs", "pub(crate) mod a;\npub(crate) mod b;\n"),
        ("low/a.rs", "pub struct Thing;\n"),
        (
            "low/b.rs",
            "use crate::low::a::Thing;\npub fn f(_: Thing) {}\n",
        ),
        (
            "high.rs",
            "use crate::low::{a::Thing, b};\npub fn g(t: Thing) { b::f(t) }\n",
        ),
        ("edge.rs", "pub fn h() { crate::high::g(crate::Thing) }\n"),
    ]);
    assert_eq!(messages(&report), "");
    // high -> low/a, high -> low/b, low/b -> low/a, edge -> high, edge -> low/a (through lib.rs's re-export).
    assert_eq!(report.arrows, 5);
}

#[test]
fn a_cycle_between_files_is_found_and_printed_with_what_ties_it() {
    let report = run(&[
        ("lib.rs", "mod low;\n"),
        ("low.rs", "mod a;\nmod b;\n"),
        ("low/a.rs", "use crate::low::b::Spec;\npub struct Job;\n"),
        (
            "low/b.rs",
            "// a comment naming crate::low::c::Nothing is no import\npub struct Spec;\n\
             pub fn run(_: crate::low::a::Job) {}\n",
        ),
    ]);
    let text = messages(&report);
    assert_eq!(report.problems.len(), 1, "{text}");
    assert!(
        text.contains("import cycle between files: src/low/a.rs -> src/low/b.rs -> src/low/a.rs"),
        "{text}"
    );
    assert!(
        text.contains("src/low/a.rs -> src/low/b.rs: Spec (src/low/a.rs:1)"),
        "{text}"
    );
    assert!(
        text.contains("src/low/b.rs -> src/low/a.rs: Job (src/low/b.rs:3)"),
        "{text}"
    );
}

#[test]
fn an_upward_import_is_named_with_its_file_and_line() {
    let report = run(&[
        ("lib.rs", LIB),
        ("low.rs", "pub(crate) mod a;\n"),
        (
            "low/a.rs",
            "pub struct Thing;\n\nfn up() -> crate::high::Config {\n    todo!()\n}\n",
        ),
        ("high.rs", "pub struct Config;\n"),
        ("edge.rs", ""),
    ]);
    let text = messages(&report);
    assert_eq!(report.problems.len(), 1, "{text}");
    assert!(
        text.contains(
            "upward import at src/low/a.rs:3: `Config` from src/high.rs; layer 1 (low: low)"
        ),
        "{text}"
    );
}

#[test]
fn multi_line_use_trees_and_root_re_exports_resolve_to_the_defining_file() {
    let report = run(&[
        (
            "lib.rs",
            "mod low;\nmod high;\nmod edge;\npub use high::Front;\npub use low::{a::Thing as Renamed};\n",
        ),
        ("low.rs", "pub(crate) mod a;\n"),
        ("low/a.rs", "pub struct Thing;\n"),
        ("high.rs", "pub struct Front;\n"),
        (
            "edge.rs",
            "use crate::{\n    Front,\n    low::{\n        a::{self, Thing},\n    },\n};\n",
        ),
        // An upward import through a root re-export, in a nested tree, is still upward.
        ("low/b.rs", ""),
    ]);
    assert_eq!(messages(&report), "");
    assert_eq!(
        report.arrows, 2,
        "edge -> high (Front), edge -> low/a (a, Thing)"
    );

    let report = run(&[
        ("lib.rs", "mod low;\nmod high;\npub use high::Front;\n"),
        ("low.rs", "use crate::{\n    Front,\n};\n"),
        ("high.rs", "pub struct Front;\n"),
    ]);
    let text = messages(&report);
    assert!(
        text.contains("upward import at src/low.rs:2: `Front` from src/high.rs"),
        "{text}"
    );
}

#[test]
fn a_face_re_exporting_its_own_files_is_no_arrow() {
    // `high.rs` re-exports its children, and they import `high.rs`'s own items: no circle.
    let report = run(&[
        ("lib.rs", "mod high;\n"),
        (
            "high.rs",
            "mod call;\nmod poll;\npub use call::Call;\npub use poll::Poll;\npub struct Cache;\n",
        ),
        (
            "high/call.rs",
            "use crate::high::Cache;\nuse super::poll::Poll;\npub struct Call;\n",
        ),
        ("high/poll.rs", "use super::Cache;\npub struct Poll;\n"),
    ]);
    assert_eq!(messages(&report), "");
    assert_eq!(report.arrows, 3);
    // But a face that uses a child's item in its own code does import it.
    let report = run(&[
        ("lib.rs", "mod high;\n"),
        ("high.rs", "mod call;\npub struct Cache(call::Call);\n"),
        (
            "high/call.rs",
            "use crate::high::Cache;\npub struct Call;\n",
        ),
    ]);
    assert!(
        messages(&report).contains("import cycle between files"),
        "{}",
        messages(&report)
    );
}

#[test]
fn a_cycle_between_folders_is_found_even_when_no_files_form_one() {
    let report = run(&[
        ("lib.rs", "mod low;\nmod high;\n"),
        ("low.rs", "mod a;\nmod b;\n"),
        ("low/a.rs", "use crate::high::c::C;\npub struct A;\n"),
        ("low/b.rs", "pub struct B;\n"),
        ("high.rs", "mod c;\nmod d;\n"),
        ("high/c.rs", "pub struct C;\n"),
        ("high/d.rs", "use crate::low::b::B;\n"),
    ]);
    let text = messages(&report);
    assert!(
        text.contains("import cycle between folders: src/high/ -> src/low/ -> src/high/"),
        "{text}"
    );
    assert!(!text.contains("between files"), "{text}");
}

#[test]
fn strings_comments_path_attributes_and_mod_rs() {
    let report = run(&[
        (
            "lib.rs",
            "mod low;\n#[doc(hidden)]\n#[path = \"private.rs\"]\npub mod __private;\n",
        ),
        ("low.rs", "pub struct A;\n"),
        (
            "private.rs",
            "pub use crate::low::A;\nconst S: &str = \"crate::high::X\";\nconst R: &str = r#\"crate::high::Y\"#;\n\
             /* crate::high::Z */ const C: char = '\\'';\nfn f<'a>(_: &'a str) {}\n",
        ),
        ("low/mod.rs", ""),
    ]);
    let text = messages(&report);
    assert!(text.contains("src/low/mod.rs: a mod.rs"), "{text}");
    assert!(
        text.contains("src/private.rs: module `__private` has no layer"),
        "{text}"
    );
    assert_eq!(report.arrows, 1, "private.rs -> low.rs only: {text}");
}
