#!/usr/bin/env python3
"""Where the instructions of one case go, from the callgrind profile gungraun leaves of it.

    python3 benches/instructions/profile.py miss        # after a run of benches/instructions.rs (check.sh)
    python3 benches/instructions/profile.py task --top 40

Reads target/gungraun/refcache-benches/instructions/five_cases/ops.<case>/callgrind.ops.<case>.out (valgrind's callgrind
on the bench binary, counting only the OPS operations), and prints per operation:
- the self cost of every function, summed by group (allocator, memory moves, hashing, JSON, moka, tracing, tokio,
  refcache's own code, std collections, other): the groups add up to the whole;
- calls per operation of the allocator and the hashers (callgrind counts the warm-up's calls too: see WARM_UP);
- the costliest functions by inclusive cost (callgrind_annotate --inclusive=yes), a map of the call tree.
Needs callgrind_annotate (valgrind). Only the standard library is used.
"""

import argparse
import collections
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
# Callgrind counts calls even while collection is off, so the call counts of a profile include the case's warm-up
# (WARM_UP in cases.rs: the same operation, 3,000 times) besides the counted operations. The poll cases' setups are
# other work (100,000 tasks), so their call counts are not shown.
WARM_UP = 3000
NO_CALL_COUNTS = ("poll", "poll_moka_get", "empty")
ROOT = os.path.dirname(os.path.dirname(HERE))

# First match wins. The patterns read demangled Rust names and glibc's.
GROUPS = [
    ("allocator (malloc, free)", r"(^|[^a-z_])(_int_)?(malloc|free|realloc|calloc|memalign)\b|malloc_consolidate|unlink_chunk"
     r"|tcache|__rust_(alloc|dealloc|realloc|no_alloc)|__rdl_|__rg_|arena\.c"),
    ("memory moves (memcpy, memset, memcmp)", r"__mem(cpy|move|set|cmp)|\bmem(cpy|move|set|cmp)\b"),
    ("hashing (SipHash, blake3)", r"hash_one|sip::|SipHasher|DefaultHasher|Hasher>::write|blake3|BuildHasher"),
    ("JSON (serde_json, canonical JSON, sizes)", r"serde_json|serde_core|serde::|serde_jcs|\bryu\b|itoa|json_len|json"),
    ("moka", r"moka::|crossbeam|tagptr|quanta"),
    ("tracing spans", r"tracing"),
    ("tokio: spawn, wake, timer, polling", r"tokio|Waker|waker|Timespec|Instant|clock_gettime|vdso|futures_util"
     r"|futures_core|core::future|Pin<P> as core::future"),
    ("refcache's own code (task bookkeeping, key, responses)", r"refcache|instructions::cases"),
    ("std collections, Arc, strings (shared by all of the above)", r"hashbrown|btree|BTree|VecDeque|alloc::|core::"
     r"|std::"),
]


# Entry points into each concern, by inclusive cost (their callees included, so they overlap and do not add up):
# (concern, what, pattern on the name without generics). The costliest matching function is shown.
ENTRY_POINTS = [
    ("task bookkeeping", "`MemoryTaskBackend::submit`", r"MemoryTaskBackend as .*TaskBackend>::submit::\{\{closure\}\}$"),
    ("task bookkeeping", "`Inner::complete` (the driver's end: record, store insert, wake-up)",
     r"refcache_core::memory::(driver::)?Inner::complete::\{\{closure\}\}$"),
    ("task bookkeeping", "`Inner::retire` (the history FIFO, evicting the oldest record)",
     r"refcache_core::memory::(driver::)?Inner::retire(_keeping_values)?$"),
    ("task bookkeeping", "`Inner::drop_values` (the evicted record's value out of the store, inline in the driver)",
     r"refcache_core::memory::(driver::)?Inner::drop_values::\{\{closure\}\}$"),
    ("task bookkeeping", "`Inner::drop_values_later` (the same from a spawned task: retires that cannot await)",
     r"refcache_core::memory::(driver::)?Inner::drop_values_later$"),
    ("task bookkeeping", "`MemoryTaskBackend::wait`", r"MemoryTaskBackend as .*TaskBackend>::wait::\{\{closure\}\}$"),
    ("task bookkeeping", "`RefId::generate`", r"RefId::generate$"),
    ("JSON", "`value_result` (the returned `Value` serialized into a `Value`)", r"__private::value_result$"),
    ("JSON", "`json_len` (the size, a second pass)", r"refcache_core::store::json_len$"),
    ("JSON", "`CacheKey::from_json` (canonical JSON and blake3)", r"CacheKey::from_json$"),
    ("moka", "`Cache::insert`", r"moka::future::cache::Cache::insert_with_hash::\{\{closure\}\}$"),
    ("moka", "`Cache::get`", r"moka::future::cache::Cache::get::\{\{closure\}\}$"),
    ("moka", "housekeeping (`run_pending_tasks`, inline on reads and writes)",
     r"Housekeeper::try_run_pending_tasks::\{\{closure\}\}$"),
    ("spawn, wake, timer", "`Inner::spawn_all` (spawning the driver)", r"refcache_core::memory::(driver::)?Inner::spawn_all$"),
    ("spawn, wake, timer", "tokio `spawn`", r"current_thread::Handle::spawn$"),
    ("spawn, wake, timer", "`watch` wake-ups (`notify_waiters`)", r"BigNotify::notify_waiters$"),
    ("spawn, wake, timer", "`Timeout::poll` (the `async_timeout` wait)", r"tokio::time::timeout::Timeout as .*::poll$"),
    ("spawn, wake, timer", "parking the time driver between polls", r"current_thread::Context::park_yield$"),
    ("spawn, wake, timer", "`Instant::elapsed` (clock reads)", r"std::time::Instant>::elapsed$"),
    ("the driver task", "`Instrumented::poll` (the spawned driver, all of it, inside its tracing span)",
     r"tracing::instrument::Instrumented as .*::poll$"),
]


def profile_path(case):
    home = os.environ.get("GUNGRAUN_HOME")
    if not home:
        home = os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "gungraun")
    return os.path.join(home, "refcache-benches", "instructions", "five_cases", f"ops.{case}", f"callgrind.ops.{case}.out")


def annotate(path, inclusive):
    args = ["callgrind_annotate", "--threshold=100", f"--inclusive={'yes' if inclusive else 'no'}", path]
    try:
        out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    except FileNotFoundError:
        sys.exit("profile.py: callgrind_annotate is missing (it comes with valgrind)")
    rows = []
    total = None
    for line in out.splitlines():
        m = re.match(r"\s*([\d,]+) \(\s*[\d.]+%\)\s+(.*)$", line)
        if not m:
            continue
        cost = int(m.group(1).replace(",", ""))
        what = m.group(2)
        if what.strip() == "PROGRAM TOTALS":
            total = cost
            continue
        # `file:function [object]`: keep the function.
        what = re.sub(r"\s+\[[^\]]*\]$", "", what)
        function = what.split(":", 1)[1] if ":" in what and not what.startswith("<") else what
        if what.startswith("???:"):
            function = what[4:]
        rows.append((cost, function))
    return total, rows


def binary_of(path):
    """The profiled binary, from the `cmd:` line of the callgrind file."""
    with open(path, errors="replace") as f:
        for line in f:
            if line.startswith("cmd:"):
                return line[4:].split()[0]
    return None


def resolve(function, binary, cache={}):
    """A function callgrind shows as a bare address (assembly without a size, such as blake3's SIMD kernels): its
    symbol, from objdump."""
    if not re.fullmatch(r"0x[0-9a-f]+", function) or binary is None:
        return function
    if function not in cache:
        start = int(function, 16)
        try:
            out = subprocess.run(
                ["objdump", "-d", f"--start-address={start:#x}", f"--stop-address={start + 1:#x}", binary],
                capture_output=True, text=True, check=True,
            ).stdout
            m = re.search(r"^[0-9a-f]+ <([^>]+)>:", out, re.M)
            cache[function] = m.group(1) if m else function
        except (OSError, subprocess.CalledProcessError):
            cache[function] = function
    return cache[function]


def group_of(function):
    for name, pattern in GROUPS:
        if re.search(pattern, function):
            return name
    return "other"


def call_counts(path):
    """Calls per callee name, from the `cfn=` / `calls=` lines of the callgrind file."""
    names = {}
    counts = collections.Counter()
    callee = None
    with open(path, errors="replace") as f:
        for line in f:
            if line.startswith(("fn=", "cfn=", "cfi=", "cfl=", "fl=", "fi=", "fe=")):
                key, _, rest = line.rstrip("\n").partition("=")
                m = re.match(r"\((\d+)\)(?: (.*))?$", rest)
                if m and key in ("fn", "cfn"):
                    ident, name = m.group(1), m.group(2)
                    if name is not None:
                        names[ident] = name
                    if key == "cfn":
                        callee = names.get(ident, ident)
                elif key == "cfn":
                    callee = rest
            elif line.startswith("calls=") and callee is not None:
                counts[callee] += int(line[6:].split()[0])
    return counts


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("case", help="a case of benches/instructions.rs: miss, task, hit, ...")
    parser.add_argument("--top", type=int, default=25, help="inclusive functions to list")
    args = parser.parse_args()
    ops = int(os.environ.get("REFCACHE_BENCH_OPS", "1000"))
    path = profile_path(args.case)
    if not os.path.exists(path):
        sys.exit(f"profile.py: no profile at {path}: run `bash benches/instructions/check.sh` first")

    total, rows = annotate(path, inclusive=False)
    binary = binary_of(path)
    rows = [(cost, resolve(function, binary)) for cost, function in rows]
    by_group = collections.defaultdict(int)
    top_of_group = collections.defaultdict(list)
    for cost, function in rows:
        group = group_of(function)
        by_group[group] += cost
        top_of_group[group].append((cost, function))
    listed = sum(by_group.values())
    print(f"`{args.case}`: {total / ops:,.0f} instructions per operation ({ops:,} operations)")
    print()
    print("Self cost by group (each function's own instructions, not its callees'):")
    print()
    print("| group | instructions/op | share | costliest functions in it |")
    print("|---|---:|---:|---|")
    for group, cost in sorted(by_group.items(), key=lambda kv: -kv[1]):
        tops = sorted(top_of_group[group], reverse=True)[:3]
        names = "; ".join(f"`{short(f)}` {c / ops:,.0f}" for c, f in tops)
        print(f"| {group} | {cost / ops:,.0f} | {cost / total * 100:.0f}% | {names} |")
    if total - listed > 0:
        print(f"| below the listing threshold | {(total - listed) / ops:,.0f} | {(total - listed) / total * 100:.0f}% | |")
    print()

    counts = call_counts(path)
    called = ops + WARM_UP
    interesting = [
        ("malloc", r"^malloc$"),
        ("free", r"^free$"),
        ("realloc", r"^realloc$"),
        ("SipHash `hash_one`", r"BuildHasher::hash_one"),
        ("blake3 `keyed_hash` + `finalize`", r"^blake3::keyed_hash$|^blake3::Hasher::finalize$"),
        ("memcpy", r"__memcpy"),
        ("tokio `spawn`", r"(current_thread::Handle|multi_thread::handle::Handle)::spawn(<|$)"),
        # The output feature (issue 18): a task that never writes output must not make its log.
        ("output log made (`Active::output_log`, `OutputLog::new`)", r"Active::output_log|OutputLog(>|<[^>]*>)?::new"),
    ]
    if args.case not in NO_CALL_COUNTS:
        print(f"Calls per operation (over the {WARM_UP:,} of the warm-up and the {ops:,} counted):", ", ".join(
            f"{label} {sum(n for name, n in counts.items() if re.search(pattern, name)) / called:.1f}"
            for label, pattern in interesting
        ))
        print()

    _, inclusive = annotate(path, inclusive=True)
    counts_by_short = collections.Counter()
    for name, n in counts.items():
        counts_by_short[short(name)] += n
    print("Entry points by inclusive cost (with their callees; they overlap):")
    print()
    print("| concern | entry point | instructions/op | calls/op |")
    print("|---|---|---:|---:|")
    for concern, what, pattern in ENTRY_POINTS:
        matches = [(cost, f) for cost, f in inclusive if re.search(pattern, short(f))]
        if not matches:
            continue
        cost, function = max(matches)
        calls = counts_by_short.get(short(function), 0) / called
        shown_calls = "" if args.case in NO_CALL_COUNTS else f"{calls:.1f}"
        print(f"| {concern} | {what} | {cost / ops:,.0f} | {shown_calls} |")
    print()
    print(f"Costliest functions by inclusive cost (instructions/op, with their callees), top {args.top}:")
    print()
    shown = 0
    for cost, function in inclusive:
        if "gungraun" in function or "__gungraun" in function or function.startswith("instructions::__"):
            continue
        print(f"- {cost / ops:>8,.0f}  `{short(function)}`")
        shown += 1
        if shown >= args.top:
            break
    return 0


def short(function):
    """A function name without its generic parameters, cut to a readable length."""
    out, depth = [], 0
    for ch in function:
        if ch == "<" and out and out[-1] not in " (<":
            depth += 1
            continue
        if ch == ">" and depth:
            depth -= 1
            continue
        if not depth:
            out.append(ch)
    text = "".join(out)
    return text if len(text) <= 110 else text[:107] + "..."


if __name__ == "__main__":
    sys.exit(main())
