//! Instruction counts of the five cases of issue 17 beside their in-run baselines (gungraun, under valgrind's
//! callgrind): the measure that holds still on a shared machine, and the one CI gates on.
//!
//! ```text
//! bash benches/instructions/check.sh             # run, print instructions per operation, compare to the baseline
//! cargo bench -p refcache-benches --bench instructions  # gungraun's own report (totals for OPS operations)
//! ```
//!
//! Each benchmark is one case of `instructions/cases.rs`: its setup (not counted) builds the case's current-thread
//! runtime and state and warms it up; the counted function runs `OPS` operations one after another (1,000, or
//! `REFCACHE_BENCH_OPS`); the teardown (not counted) checks that every operation was what the case claims. Divide
//! a count by `OPS` for instructions per operation; `empty` is the loop alone. Needs `gungraun-runner` of the same
//! version as the `gungraun` library on the `PATH` (`.ci/run` installs it).

// gungraun's macros generate public items (modules, constants, functions) without doc comments.
#![allow(missing_docs)]

use std::hint::black_box;

use gungraun::{
    Callgrind, EventKind, LibraryBenchmarkConfig, OutputFormat, library_benchmark,
    library_benchmark_group, main,
};

#[path = "instructions/cases.rs"]
mod cases;

/// Operations per counted run, unless `REFCACHE_BENCH_OPS` says otherwise.
const OPS: u64 = 1_000;

/// A case ready to count: its state, warmed up, and how many operations to run.
struct Prepared {
    case: Box<dyn cases::Case>,
    ops: u64,
}

/// The setup (not counted): builds and warms up the case named `name`.
fn prepare(name: &str) -> Prepared {
    let ops = match std::env::var("REFCACHE_BENCH_OPS") {
        Ok(text) => text
            .parse()
            .unwrap_or_else(|_| panic!("REFCACHE_BENCH_OPS={text:?} is not a count of operations")),
        Err(_) => OPS,
    };
    let make = cases::ALL
        .iter()
        .chain(cases::ALL_MT)
        .find_map(|(n, make)| (*n == name).then_some(make))
        .unwrap_or_else(|| panic!("no case named {name}"));
    Prepared { case: make(), ops }
}

/// The teardown (not counted): every operation must have been what the case claims.
fn finish(prepared: Prepared) {
    prepared.case.check();
}

// The counted part: `ops` operations of one case. The state is returned so that its drop is not counted. (The
// attribute takes no doc comment.)
#[library_benchmark(setup = prepare, teardown = finish)]
#[bench::empty("empty")]
#[bench::hit("hit")]
#[bench::hit_moka_get("hit_moka_get")]
#[bench::hit_json("hit_json")]
#[bench::hit_json_to_string("hit_json_to_string")]
#[bench::miss("miss")]
#[bench::miss_direct_call("miss_direct_call")]
#[bench::task("task")]
#[bench::task_spawn_oneshot("task_spawn_oneshot")]
#[bench::poll("poll")]
#[bench::poll_moka_get("poll_moka_get")]
fn ops(mut prepared: Prepared) -> Prepared {
    let ops = black_box(prepared.ops);
    prepared.case.run(ops);
    prepared
}

// The multi-threaded cases (`cases::ALL_MT`), reported and not gated: their work runs on the runtime's worker
// threads, whose instructions callgrind counts only inside the toggle below (a worker thread's whole life: the
// runtime is built in the setup and has done nothing before the counted run, see cases.rs). The results are under
// `ops_mt.<case>`, which gate.py does not read.
#[library_benchmark(
    setup = prepare,
    teardown = finish,
    config = LibraryBenchmarkConfig::default()
        .tool(Callgrind::with_args(["--toggle-collect=*blocking::pool::Inner::run*"]))
)]
#[bench::empty_mt("empty_mt")]
#[bench::miss_mt("miss_mt")]
#[bench::miss_mt_direct_call("miss_mt_direct_call")]
#[bench::task_mt("task_mt")]
#[bench::task_mt_spawn_oneshot("task_mt_spawn_oneshot")]
fn ops_mt(mut prepared: Prepared) -> Prepared {
    let ops = black_box(prepared.ops);
    prepared.case.run(ops);
    prepared
}

library_benchmark_group!(name = five_cases; benchmarks = ops, ops_mt);

main!(
    config = LibraryBenchmarkConfig::default()
        .pass_through_env("REFCACHE_BENCH_OPS")
        // Instructions are the measure; the cache simulation would only slow the setups down.
        .tool(Callgrind::with_args(["--cache-sim=no"]).format([EventKind::Ir]))
        .output_format(OutputFormat::default().show_intermediate(true));
    library_benchmark_groups = five_cases
);
