#!/usr/bin/env bash
# Checks that the instruction counts hold still: three runs of every case, the third with the other core kept busy
# (`yes > /dev/null`), then the min, max and spread of each case's instructions per operation.
#
#   bash benches/instructions/spread.sh
#
# About 3 to 4 min. The figures of each run are kept in target/gungraun/spread-{1,2,3}.json (or GUNGRAUN_HOME).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
export REFCACHE_BENCH_OPS="${REFCACHE_BENCH_OPS:-1000}"
# Where gungraun writes its results (as gungraun and gate.py find it): GUNGRAUN_HOME, else $CARGO_TARGET_DIR/gungraun.
results="${GUNGRAUN_HOME:-${CARGO_TARGET_DIR:-target}/gungraun}"
runs=()
busy=""
trap '[ -n "$busy" ] && kill "$busy" 2>/dev/null || true' EXIT
for run in 1 2 3; do
    if [ "$run" = 3 ]; then
        yes >/dev/null &
        busy=$!
        echo "== run $run, with the other core busy (yes, pid $busy); load: $(cut -d' ' -f1-3 /proc/loadavg)"
    else
        echo "== run $run; load: $(cut -d' ' -f1-3 /proc/loadavg)"
    fi
    rm -f "$results"/refcache-benches/instructions/five_cases/*/summary.json
    cargo bench --quiet -p refcache-benches --bench instructions -- --save-summary=json >/dev/null
    python3 benches/instructions/gate.py report --json "$results/spread-$run.json" >/dev/null
    runs+=("$results/spread-$run.json")
done
if [ -n "$busy" ]; then
    kill "$busy"
    busy=""
fi
echo "load at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 benches/instructions/gate.py spread "${runs[@]}"
