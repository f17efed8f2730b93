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
rm -f target/gungraun/refcache/instructions/five_cases/*/summary.json
cargo bench --bench instructions -- --save-summary=json
python3 benches/instructions/gate.py update
git --no-pager diff --stat -- benches/instructions/baseline.json || true
