//! The five cases of `benches/instructions.rs` timed with criterion: the same code, the same current-thread runtime
//! and warm-up, each case in the same run as its in-run baseline, so `docs/benchmarks.md` can put the time of an
//! operation beside its instruction count.
//!
//! ```text
//! cargo bench -p refcache-benches --bench timed_cases
//! cargo bench -p refcache-benches --bench timed_cases -- miss     # one case and its baseline
//! ```
//!
//! Every benchmark is named `cases/<case>` (`cases/hit`, `cases/hit_moka_get`, ...; the table is in
//! `benches/instructions/cases.rs`; the multi-threaded ones, `cases/miss_mt` and the rest, come after them). After
//! the timing, each case checks that every operation it ran was what it claims (every hit a hit, every miss a miss,
//! every task complete). On a shared machine these times move with the load; the instruction counts do not.

use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};

#[path = "instructions/cases.rs"]
mod cases;

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("cases");
    for (name, make) in cases::ALL.iter().chain(cases::ALL_MT) {
        if name.starts_with("empty") {
            continue;
        }
        let mut case = make();
        group.bench_function(*name, |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                case.run(iters);
                start.elapsed()
            })
        });
        case.check();
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
