"""Merges the two sides' JSON lines into one table: scenario | mcp-refcache | refcache | ratio (difference).

Usage: python3 format_table.py MCP_REFCACHE.jsonl REFCACHE.jsonl (run by run.sh with the system python3; standard
library only). Each input line is one scenario's result: impl, version, scenario, unit, median, min, max, samples,
detail. A scenario missing on either side is an error.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

# The scenarios, in table order, with their labels.
SCENARIOS = [
    ("hit_us", "hit, per call (async tool, same args)"),
    ("miss_us", "miss, per call (async tool, new args)"),
    ("timed_out_return_ms", "timed-out call returns (work 2 s, async_timeout 0.1 s)"),
    ("timed_out_executions", "body executions, one timed-out call"),
    ("concurrent_in_time_executions", "body executions, 20 concurrent identical calls (work 0.5 s, timeout 5 s)"),
    ("concurrent_timed_out_executions", "body executions, 20 concurrent identical calls (work 0.5 s, timeout 0.1 s)"),
    ("sync_return_ms", "sync fn returns to its caller (work 1 s, async_timeout 0.05 s)"),
    ("sync_executions", "body executions per timed-out sync call"),
]

# How each unit is printed after a number.
UNITS = {"us": " µs", "ms": " ms", "count": ""}


def number(value: float, unit: str) -> str:
    """A value with three significant digits (whole numbers for counts and values of 100 or more)."""
    if unit == "count" or abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def cell(result: dict[str, Any]) -> str:
    """Median, then (min–max) when the samples differ, with the unit."""
    unit = result["unit"]
    text = number(result["median"], unit) + UNITS[unit]
    if result["samples"] > 1 and result["min"] != result["max"]:
        text += f" ({number(result['min'], unit)}–{number(result['max'], unit)})"
    return text


def comparison(python: dict[str, Any], rust: dict[str, Any]) -> str:
    """mcp-refcache's median divided by refcache's, and the signed difference."""
    unit = python["unit"]
    difference = python["median"] - rust["median"]
    sign = "+" if difference >= 0 else "−"
    diff_text = f"{sign}{number(abs(difference), unit)}{UNITS[unit]}"
    if rust["median"] == 0:
        return diff_text
    return f"{python['median'] / rust['median']:.2f}× ({diff_text})"


def load(path: str, expected_impl: str) -> dict[str, dict[str, Any]]:
    """Reads one side's JSON lines, keyed by scenario; lines that are not JSON objects are ignored."""
    results = {}
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            line = line.strip()
            if not line.startswith("{"):
                continue
            result = json.loads(line)
            if result["impl"] != expected_impl:
                sys.exit(f"{path}: a result from {result['impl']}, expected {expected_impl}")
            results[result["scenario"]] = result
    missing = [name for name, _ in SCENARIOS if name not in results]
    if missing:
        sys.exit(f"{path}: no result for {', '.join(missing)}")
    return results


def main() -> None:
    """Prints the table, then what each scenario measured."""
    if len(sys.argv) != 3:
        sys.exit("usage: format_table.py MCP_REFCACHE.jsonl REFCACHE.jsonl")
    python = load(sys.argv[1], "mcp-refcache")
    rust = load(sys.argv[2], "refcache")
    py_version = python["hit_us"]["version"]
    rs_version = rust["hit_us"]["version"]
    rows = [
        (
            "scenario",
            f"mcp-refcache {py_version}",
            f"refcache {rs_version}",
            "mcp-refcache ÷ refcache (difference)",
        )
    ]
    rows += [
        (label, cell(python[name]), cell(rust[name]), comparison(python[name], rust[name]))
        for name, label in SCENARIOS
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    print()
    for index, row in enumerate(rows):
        print("| " + " | ".join(text.ljust(width) for text, width in zip(row, widths)) + " |")
        if index == 0:
            print("|" + "|".join("-" * (width + 2) for width in widths) + "|")
    print()
    print("Median (min–max). Per-call figures: the medians of 10 batch means; times: over the calls listed below.")
    for name, _ in SCENARIOS:
        py_detail, rs_detail = python[name]["detail"], rust[name]["detail"]
        if py_detail == rs_detail:
            print(f"- {name}: {py_detail}")
        else:
            print(f"- {name}: mcp-refcache: {py_detail}; refcache: {rs_detail}")
    with open("/proc/loadavg", encoding="utf-8") as loadavg:
        load_end = " ".join(loadavg.read().split()[:3])
    load_start = os.environ.get("COMPARE_LOADAVG_START", "unknown")
    print(f"Machine: {os.cpu_count()} CPUs; load average {load_start} at the start, {load_end} at the end.")


if __name__ == "__main__":
    main()
