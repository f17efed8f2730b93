#!/usr/bin/env bash
# Records the committed instruction baseline (benches/instructions/baseline.json) from a fresh run of every case.
#
#   bash benches/instructions/update-baseline.sh
#
# A deliberate step: run it when a change is meant to move the counts (an optimisation, or a cost accepted for a
# reason), then commit baseline.json with a message that says why. The gate in CI compares against this file.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
export REFCACHE_BENCH_OPS="${REFCACHE_BENCH_OPS:-1000}"
# Where gungraun writes its results (as gungraun and gate.py find it): GUNGRAUN_HOME, else $CARGO_TARGET_DIR/gungraun.
results="${GUNGRAUN_HOME:-${CARGO_TARGET_DIR:-target}/gungraun}"
rm -f "$results"/refcache-benches/instructions/five_cases/*/summary.json
cargo bench -p refcache-benches --bench instructions -- --save-summary=json
python3 benches/instructions/gate.py update
git --no-pager diff --stat -- benches/instructions/baseline.json || true
