#!/usr/bin/env bash
# Side-by-side comparison of refcache against the Python mcp-refcache 0.2.1: the same scenarios, the same
# parameters, one table.
#
#   bash benches/compare/run.sh
#
# 1. creates a throwaway virtualenv in a temporary directory (removed on exit) and installs mcp-refcache==0.2.1
#    from PyPI into it (a failed install stops the run);
# 2. builds the Rust side (`cargo bench -p refcache-benches --bench compare`, release profile) before anything is timed;
# 3. runs the Python scenarios (mcp_refcache_scenarios.py), then the Rust ones (refcache_scenarios.rs), one after
#    the other, each printing one JSON line per scenario;
# 4. merges the two into one table (format_table.py, run with the system python3).
#
# PYTHON selects the interpreter used for the virtualenv and the table (default: python3).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
python="${PYTHON:-python3}"
start=$SECONDS
COMPARE_LOADAVG_START="$(cut -d' ' -f1-3 /proc/loadavg)"
export COMPARE_LOADAVG_START

work="$(mktemp -d "${TMPDIR:-/tmp}/refcache-compare.XXXXXX")"
trap 'rm -rf "$work"' EXIT

echo "== virtualenv with mcp-refcache==0.2.1 ($work/venv)" >&2
"$python" -m venv "$work/venv"
if ! "$work/venv/bin/python" -m pip install --quiet --disable-pip-version-check "mcp-refcache==0.2.1"; then
    echo "run.sh: could not install mcp-refcache==0.2.1 into the virtualenv" >&2
    exit 1
fi

echo "== building the Rust side (release)" >&2
(cd "$root" && cargo bench -p refcache-benches --bench compare --no-run)

echo "== mcp-refcache scenarios" >&2
"$work/venv/bin/python" "$here/mcp_refcache_scenarios.py" >"$work/mcp-refcache.jsonl"

echo "== refcache scenarios" >&2
(cd "$root" && cargo bench -p refcache-benches --bench compare) >"$work/refcache.jsonl"

"$python" "$here/format_table.py" "$work/mcp-refcache.jsonl" "$work/refcache.jsonl"
echo "run.sh wall time: $((SECONDS - start)) s"
