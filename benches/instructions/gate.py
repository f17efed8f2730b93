#!/usr/bin/env python3
"""Instructions per operation from a gungraun run of benches/instructions.rs, and the regression gate.

    python3 benches/instructions/gate.py report  [--json FILE]   # the table of the last run (and its figures)
    python3 benches/instructions/gate.py check                   # the table, then the gate against baseline.json
    python3 benches/instructions/gate.py update                  # write the last run into baseline.json
    python3 benches/instructions/gate.py spread FILE FILE ...    # min, max and spread of several `report --json`s

Run the benchmark first (check.sh and update-baseline.sh do both steps). Each benchmark runs OPS operations
(REFCACHE_BENCH_OPS, default 1,000) after its warm-up; callgrind counts the instructions of those operations (on the
one thread the current-thread runtime runs them on), and this script divides by OPS.

The gate fails (exit 1) when a gated case (baseline.json's "gated": the hit and the miss) takes more than
"limit_percent" more instructions per operation than the committed baseline, when a gated case or the baseline is
missing, or when the run used another OPS than the baseline. Only the standard library is used.
"""

import argparse
import datetime
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
BASELINE = os.path.join(HERE, "baseline.json")
DEFAULT_OPS = 1000

# (case, its in-run baseline, how the pair is judged), in the order of the table.
PAIRS = [
    ("hit", "hit_moka_get"),
    ("hit_json", "hit_json_to_string"),
    ("miss", "miss_direct_call"),
    ("task", "task_spawn_oneshot"),
    ("poll", "poll_moka_get"),
]
CASES = ["empty"] + [name for pair in PAIRS for name in pair]


def results_dir():
    # As gungraun finds its home: GUNGRAUN_HOME, else $CARGO_TARGET_DIR/gungraun, else target/gungraun. The package
    # is refcache-benches (benches/Cargo.toml).
    home = os.environ.get("GUNGRAUN_HOME")
    if not home:
        home = os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "gungraun")
    return os.path.join(home, "refcache-benches", "instructions", "five_cases")


def ops_of_run():
    text = os.environ.get("REFCACHE_BENCH_OPS", str(DEFAULT_OPS))
    try:
        ops = int(text)
    except ValueError:
        sys.exit(f"gate.py: REFCACHE_BENCH_OPS={text!r} is not a count of operations")
    if ops <= 0:
        sys.exit("gate.py: REFCACHE_BENCH_OPS must be at least 1")
    return ops


def read_run(ops):
    """Instructions per operation of every case of the last run, from gungraun's summary.json files."""
    per_op = {}
    for case in CASES:
        path = os.path.join(results_dir(), f"ops.{case}", "summary.json")
        if not os.path.exists(path):
            continue
        profile = os.path.join(results_dir(), f"ops.{case}", f"callgrind.ops.{case}.out")
        if os.path.exists(profile) and os.path.getmtime(profile) > os.path.getmtime(path) + 5:
            sys.exit(
                f"gate.py: {os.path.relpath(path, ROOT)} is older than the last run of `{case}` (a run without "
                "--save-summary): run bash benches/instructions/check.sh"
            )
        with open(path) as f:
            summary = json.load(f)
        total = 0
        for profile in summary["profiles"]:
            if profile["tool"] != "Callgrind":
                continue
            total += int(profile["data"]["total"]["metrics"]["Ir"]["values"]["new"])
        per_op[case] = total / ops
    if not per_op:
        sys.exit(
            f"gate.py: no summary.json under {results_dir()}: run the benchmark with --save-summary first "
            "(bash benches/instructions/check.sh does both)"
        )
    return per_op


def fmt(n):
    return f"{n:,.0f}"


def targets(per_op):
    """The issue's instruction targets, each as (what, figure, target, met)."""
    rows = []
    if "hit" in per_op and "hit_moka_get" in per_op:
        ratio = per_op["hit"] / per_op["hit_moka_get"]
        rows.append(("hit, × a moka get", f"{ratio:.2f}×", "≤ 2×", ratio <= 2.0))
    if "miss" in per_op and "miss_direct_call" in per_op:
        over = per_op["miss"] - per_op["miss_direct_call"]
        rows.append(("miss overhead over a direct call", fmt(over), "≤ 10,000", over <= 10_000))
    if "task" in per_op and "task_spawn_oneshot" in per_op:
        over = per_op["task"] - per_op["task_spawn_oneshot"]
        rows.append(("one no-op task beyond spawn + oneshot", fmt(over), "≤ 8,000", over <= 8_000))
        ratio = per_op["task_spawn_oneshot"] / per_op["task"]
        rows.append(("tasks per instruction, × spawn + oneshot", f"{ratio:.3f}×", "≥ 0.3×", ratio >= 0.3))
    return rows


def print_table(per_op, ops):
    print(f"instructions per operation ({ops:,} operations per case, after a warm-up; callgrind)")
    print()
    print("| case | instructions/op | in-run baseline | instructions/op | case ÷ baseline | case − baseline |")
    print("|---|---:|---|---:|---:|---:|")
    for case, base in PAIRS:
        if case not in per_op or base not in per_op:
            continue
        c, b = per_op[case], per_op[base]
        print(f"| `{case}` | {fmt(c)} | `{base}` | {fmt(b)} | {c / b:.2f}× | {fmt(c - b)} |")
    if "empty" in per_op:
        print(f"| `empty` (the loop alone) | {per_op['empty']:,.1f} | | | | |")
    print()
    print("| target (issue 17) | now | target | met? |")
    print("|---|---:|---:|---|")
    for what, now, target, met in targets(per_op):
        print(f"| {what} | {now} | {target} | {'yes' if met else '**no**'} |")
    print()


def load_baseline():
    if not os.path.exists(BASELINE):
        sys.exit(
            f"gate.py: no committed baseline at {os.path.relpath(BASELINE, ROOT)}: record one deliberately with "
            "`bash benches/instructions/update-baseline.sh` and commit it"
        )
    with open(BASELINE) as f:
        return json.load(f)


def check(per_op, ops):
    baseline = load_baseline()
    limit = float(baseline["limit_percent"])
    if baseline["ops"] != ops:
        sys.exit(
            f"gate.py: this run did {ops:,} operations per case and the baseline {baseline['ops']:,}: "
            f"run with REFCACHE_BENCH_OPS={baseline['ops']} (or record a new baseline)"
        )
    recorded = baseline.get("recorded", {})
    rustc = rustc_version()
    if recorded.get("rustc") and recorded["rustc"] != rustc:
        print(f"note: the baseline was recorded with {recorded['rustc']}, this run used {rustc}")
    print(f"against the committed baseline ({recorded.get('date', '?')}), gate at +{limit:g}% on "
          f"{', '.join(baseline['gated'])}:")
    print()
    print("| case | baseline | now | change | gated |")
    print("|---|---:|---:|---:|---|")
    failed = []
    for case in CASES:
        old = baseline["instructions_per_op"].get(case)
        new = per_op.get(case)
        gated = case in baseline["gated"]
        if new is None:
            if gated:
                failed.append(f"{case}: not in this run")
            continue
        if old is None:
            print(f"| `{case}` | (none) | {fmt(new)} | | {'yes' if gated else ''} |")
            if gated:
                failed.append(f"{case}: not in the baseline")
            continue
        change = (new - old) / old * 100
        print(f"| `{case}` | {fmt(old)} | {fmt(new)} | {change:+.1f}% | {'yes' if gated else ''} |")
        if gated and change > limit:
            failed.append(f"{case}: {fmt(new)} instructions/op, {change:+.1f}% over the baseline's {fmt(old)}")
        elif gated and change < -limit:
            print(f"note: {case} improved by {-change:.1f}%: record the new level with "
                  "`bash benches/instructions/update-baseline.sh` so that a later regression is caught")
    print()
    gated = len(baseline["gated"])
    # The plain closing line CI's log reader understands: one check per gated case.
    print(f"instructions: {gated - len(failed)} passed, {len(failed)} failed")
    if failed:
        print("instruction-count regression:")
        for line in failed:
            print(f"  - {line}")
        print("If the change is intended, record the new counts with `bash benches/instructions/update-baseline.sh` "
              "and commit benches/instructions/baseline.json with a message that says why.")
        return 1
    print(f"instruction gate: passed ({', '.join(baseline['gated'])} within +{limit:g}% of the baseline)")
    return 0


def rustc_version():
    try:
        return subprocess.run(["rustc", "--version"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def update(per_op, ops):
    missing = [case for case in CASES if case not in per_op]
    if missing:
        sys.exit(f"gate.py: the last run lacks {', '.join(missing)}: run every case before recording a baseline")
    old = {}
    if os.path.exists(BASELINE):
        with open(BASELINE) as f:
            old = json.load(f)
    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    baseline = {
        "about": "Instructions per operation of benches/instructions.rs, the reference of the CI gate "
                 "(benches/instructions/gate.py). Record with bash benches/instructions/update-baseline.sh.",
        "ops": ops,
        "limit_percent": old.get("limit_percent", 10),
        "gated": old.get("gated", ["hit", "miss"]),
        "recorded": {
            "date": datetime.date.today().isoformat(),
            "rustc": rustc_version(),
            "load_average": load,
        },
        "instructions_per_op": {case: round(per_op[case], 1) for case in CASES},
    }
    with open(BASELINE, "w") as f:
        json.dump(baseline, f, indent=2, ensure_ascii=False)
        f.write("\n")
    print(f"wrote {os.path.relpath(BASELINE, ROOT)}: commit it, with a message that says why the counts moved")


def spread(files):
    runs = []
    for path in files:
        with open(path) as f:
            runs.append(json.load(f))
    print(f"instructions per operation over {len(runs)} runs")
    print()
    print("| case | min | max | spread (max − min) ÷ min |")
    print("|---|---:|---:|---:|")
    for case in CASES:
        values = [run["instructions_per_op"][case] for run in runs if case in run["instructions_per_op"]]
        if not values:
            continue
        lo, hi = min(values), max(values)
        print(f"| `{case}` | {lo:,.1f} | {hi:,.1f} | {(hi - lo) / lo * 100:.2f}% |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    report_p = sub.add_parser("report", help="print the last run's instructions per operation")
    report_p.add_argument("--json", help="also write the figures to this file (for `spread`)")
    sub.add_parser("check", help="print the last run, then fail on a regression against baseline.json")
    sub.add_parser("update", help="write the last run into baseline.json")
    spread_p = sub.add_parser("spread", help="min, max and spread over several `report --json` files")
    spread_p.add_argument("files", nargs="+")
    args = parser.parse_args()

    if args.command == "spread":
        spread(args.files)
        return 0
    ops = ops_of_run()
    per_op = read_run(ops)
    print_table(per_op, ops)
    if args.command == "report" and args.json:
        with open(args.json, "w") as f:
            json.dump({"ops": ops, "instructions_per_op": per_op}, f, indent=2)
            f.write("\n")
    if args.command == "check":
        return check(per_op, ops)
    if args.command == "update":
        update(per_op, ops)
    return 0


if __name__ == "__main__":
    sys.exit(main())
