#!/usr/bin/env python3
"""Every criterion benchmark's median and MAD from the last run, and the spread over several saved runs.

    python3 benches/criterion_medians.py                       # the table of target/criterion (the last run)
    python3 benches/criterion_medians.py --save run1.json      # the same, saved for `--spread`
    python3 benches/criterion_medians.py --spread run1.json run2.json run3.json

Reads target/criterion/<group>/<bench>/new/estimates.json (nanoseconds per iteration; a benchmark with a
throughput of N elements per iteration is per N). Only the standard library is used.
"""

import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read_last_run():
    base = os.path.join(ROOT, "target", "criterion")
    out = {}
    for dirpath, _dirs, files in os.walk(base):
        if os.path.basename(dirpath) != "new" or "estimates.json" not in files:
            continue
        with open(os.path.join(dirpath, "estimates.json")) as f:
            est = json.load(f)
        with open(os.path.join(dirpath, "benchmark.json")) as f:
            name = json.load(f)["full_id"]
        out[name] = {"median_ns": est["median"]["point_estimate"], "mad_ns": est["median_abs_dev"]["point_estimate"]}
    if not out:
        sys.exit(f"criterion_medians.py: no estimates under {base}: run cargo bench first")
    return out


def human(ns):
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if ns >= scale:
            return f"{ns / scale:.3g} {unit}"
    return f"{ns:.3g} ns"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--save", help="also write the last run's figures to this file")
    parser.add_argument("--spread", nargs="+", metavar="RUN", help="saved runs to compare")
    args = parser.parse_args()
    if args.spread:
        runs = []
        for path in args.spread:
            with open(path) as f:
                runs.append(json.load(f))
        names = sorted(set().union(*runs))
        print(f"criterion medians over {len(runs)} runs")
        print()
        print("| benchmark | " + " | ".join(f"run {i + 1}" for i in range(len(runs))) + " | spread (max − min) ÷ min |")
        print("|---|" + "---:|" * (len(runs) + 1))
        for name in names:
            values = [run[name]["median_ns"] for run in runs if name in run]
            cells = [human(run[name]["median_ns"]) if name in run else "" for run in runs]
            spread = (max(values) - min(values)) / min(values) * 100
            print(f"| `{name}` | " + " | ".join(cells) + f" | {spread:.0f}% |")
        return 0
    run = read_last_run()
    print("| benchmark | median | MAD |")
    print("|---|---:|---:|")
    for name in sorted(run):
        print(f"| `{name}` | {human(run[name]['median_ns'])} | {human(run[name]['mad_ns'])} |")
    if args.save:
        with open(args.save, "w") as f:
            json.dump(run, f, indent=2)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
