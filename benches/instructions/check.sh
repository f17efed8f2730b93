#!/usr/bin/env bash
# The instruction counts of benches/instructions.rs and their regression gate (CI runs this).
#
#   bash benches/instructions/check.sh            # every case, then the gate against baseline.json
#   bash benches/instructions/check.sh '*::miss'  # one case (a gungraun filter); the gate then fails, as a gated
#                                                 # case is missing: use gate.py report to read it
#
# Runs every case under callgrind (about 1 min; the poll's 100,000-task setup takes most of it), prints the
# instructions per operation beside each in-run baseline, and exits 1 when the hit or the miss takes more than 10%
# more instructions per operation than benches/instructions/baseline.json. Needs valgrind, python3 and
# gungraun-runner of the same version as the gungraun library (.ci/run installs it). REFCACHE_BENCH_OPS sets the
# operations per case (default 1,000, the baseline's).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
export REFCACHE_BENCH_OPS="${REFCACHE_BENCH_OPS:-1000}"
# Where gungraun writes its results (as gungraun and gate.py find it): GUNGRAUN_HOME, else $CARGO_TARGET_DIR/gungraun.
results="${GUNGRAUN_HOME:-${CARGO_TARGET_DIR:-target}/gungraun}"
# Stale summaries must not stand in for a case that did not run this time.
rm -f "$results"/refcache-benches/instructions/five_cases/*/summary.json
cargo bench -p refcache-benches --bench instructions -- --save-summary=json "$@"
python3 benches/instructions/gate.py check
