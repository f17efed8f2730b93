"""The mcp-refcache 0.2.1 side of the side-by-side comparison with refcache.

Runs the same scenarios, with the same parameters, as `refcache_scenarios.rs`, through mcp-refcache's public API
(`RefCache(task_backend=MemoryTaskBackend())`, the `@cache.cached(async_timeout=...)` decorator, and
`cache.get(ref_id)` to poll), and prints one JSON object per scenario on stdout. Progress goes to stderr.

Run through `bash benches/compare/run.sh`, which installs mcp-refcache==0.2.1 into a throwaway virtualenv first.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import statistics
import sys
import threading
import time
from collections import defaultdict
from typing import Any

from mcp_refcache import AsyncTaskResponse, CacheResponse, RefCache, TaskStatus
from mcp_refcache.backends import MemoryTaskBackend

# The version under comparison; anything else is an error, not a silent substitute.
EXPECTED_VERSION = "0.2.1"

# Scenario parameters. They must match the constants of the same names in refcache_scenarios.rs.
HIT_BATCHES, HIT_CALLS = 10, 10_000
MISS_BATCHES, MISS_CALLS = 10, 2_000
TIMED_OUT_CALLS, TIMED_OUT_WORK_S, TIMED_OUT_TIMEOUT_S = 15, 2.0, 0.1
CONCURRENT_CALLS, CONCURRENT_WORK_S = 20, 0.5
CONCURRENT_LONG_TIMEOUT_S, CONCURRENT_SHORT_TIMEOUT_S = 5.0, 0.1
SYNC_CALLS, SYNC_WORK_S, SYNC_TIMEOUT_S = 5, 1.0, 0.05
# How long any wait for background work may take before the run fails.
WAIT_CAP_S = 60.0


def log(message: str) -> None:
    """Progress for the person running the comparison (stderr, so stdout stays JSON lines)."""
    print(f"[mcp-refcache] {message}", file=sys.stderr, flush=True)


def emit(scenario: str, unit: str, samples: list[float], detail: str) -> None:
    """Prints one scenario's result as a JSON line: median, min and max of its samples."""
    print(
        json.dumps(
            {
                "impl": "mcp-refcache",
                "version": EXPECTED_VERSION,
                "scenario": scenario,
                "unit": unit,
                "median": statistics.median(samples),
                "min": min(samples),
                "max": max(samples),
                "samples": len(samples),
                "detail": detail,
            }
        ),
        flush=True,
    )


class Executions:
    """Counts executions of a function body per argument, and how many are running right now.

    Incremented at the very start of the body; `running` goes back down when the body ends in any way
    (return, exception or cancellation), so a wait can tell when no execution is left.
    """

    def __init__(self) -> None:
        """No executions yet."""
        self._lock = threading.Lock()
        self.per_key: dict[Any, int] = defaultdict(int)
        self.total = 0
        self.running = 0

    def run(self, key: Any) -> _Running:
        """Counts one execution under `key`; use as `with executions.run(key): ...` around the body."""
        with self._lock:
            self.per_key[key] += 1
            self.total += 1
            self.running += 1
        return _Running(self)

    def done(self) -> None:
        """One execution ended."""
        with self._lock:
            self.running -= 1


class _Running:
    """The context of one running execution: ends it on exit, however the body exits."""

    def __init__(self, executions: Executions) -> None:
        """Remembers which counter to decrement."""
        self._executions = executions

    def __enter__(self) -> None:
        """Nothing to do: the start was counted by `Executions.run`."""

    def __exit__(self, *exc: object) -> None:
        """Marks the execution as ended."""
        self._executions.done()


def new_cache(name: str) -> RefCache:
    """A fresh cache with the in-memory task backend (library defaults: 4 workers), so scenarios don't mix."""
    return RefCache(name=name, task_backend=MemoryTaskBackend())


def is_terminal(response: Any) -> bool:
    """Whether a `cache.get` answer says the task has ended (a cached value, or a failed/cancelled task)."""
    if isinstance(response, CacheResponse):
        return True
    assert isinstance(response, AsyncTaskResponse), type(response)
    if response.status in (TaskStatus.FAILED, TaskStatus.CANCELLED):
        raise RuntimeError(f"task {response.ref_id} ended {response.status.value}: {response.error}")
    return False


def poll_until_done(cache: RefCache, ref_ids: list[str]) -> None:
    """Polls every reference with `cache.get(ref_id)` (what get_cached_result answers) until its value is cached."""
    give_up = time.monotonic() + WAIT_CAP_S
    pending = set(ref_ids)
    while pending:
        pending = {ref_id for ref_id in pending if not is_terminal(cache.get(ref_id))}
        if pending and time.monotonic() > give_up:
            raise RuntimeError(f"{len(pending)} tasks never completed")
        time.sleep(0.01)


def wait_until_quiet(executions: Executions, quiet_s: float) -> None:
    """Waits until no execution is running and none has started for `quiet_s` (so queued work had its chance)."""
    give_up = time.monotonic() + WAIT_CAP_S
    seen, quiet_since = executions.total, time.monotonic()
    while True:
        if executions.running != 0 or executions.total != seen:
            seen, quiet_since = executions.total, time.monotonic()
        elif time.monotonic() - quiet_since >= quiet_s:
            return
        if time.monotonic() > give_up:
            raise RuntimeError("executions never stopped")
        time.sleep(0.01)


async def per_call_us(call: Any, batches: int, calls: int, first_arg: int, step: int) -> list[float]:
    """Times `batches` batches of `calls` awaited calls; returns each batch's mean per call in µs."""
    means = []
    arg = first_arg
    for _ in range(batches):
        start = time.perf_counter_ns()
        for _ in range(calls):
            await call(user_id=arg)
            arg += step
        means.append((time.perf_counter_ns() - start) / calls / 1000.0)
    return means


async def hit_and_miss() -> None:
    """Hit and miss cost per call of an async tool that returns at once, called as an MCP server calls it."""
    cache = new_cache("hit-miss")

    @cache.cached(async_timeout=5.0)
    async def lookup_user(user_id: int) -> dict[str, Any]:
        """Returns a small user record at once."""
        return {"id": user_id, "name": "Ada", "roles": ["admin", "dev"]}

    first = await lookup_user(user_id=7)
    assert first["is_complete"] and first["value"]["id"] == 7, first
    await per_call_us(lookup_user, 1, HIT_CALLS // 10, 7, 0)  # warm-up
    hits = await per_call_us(lookup_user, HIT_BATCHES, HIT_CALLS, 7, 0)
    emit("hit_us", "us", hits, f"{HIT_BATCHES} batches x {HIT_CALLS} calls, same args; batch means")
    log(f"hit: {statistics.median(hits):.2f} us")

    await per_call_us(lookup_user, 1, MISS_CALLS // 10, 10_000_000, 1)  # warm-up
    misses = await per_call_us(lookup_user, MISS_BATCHES, MISS_CALLS, 1_000_000, 1)
    emit("miss_us", "us", misses, f"{MISS_BATCHES} batches x {MISS_CALLS} calls, new args each; batch means")
    log(f"miss: {statistics.median(misses):.2f} us")


async def timed_out_calls() -> None:
    """How long a call whose work outlasts async_timeout takes to return, and how often one such call runs the body."""
    cache = new_cache("timed-out")
    executions = Executions()

    @cache.cached(async_timeout=TIMED_OUT_TIMEOUT_S)
    async def slow_job(job: int) -> dict[str, Any]:
        """Works for TIMED_OUT_WORK_S seconds."""
        with executions.run(job):
            await asyncio.sleep(TIMED_OUT_WORK_S)
            return {"job": job, "done": True}

    returns_ms, ref_ids = [], []
    for job in range(TIMED_OUT_CALLS):
        start = time.perf_counter()
        response = await slow_job(job=job)
        returns_ms.append((time.perf_counter() - start) * 1000.0)
        assert response["is_async"] and not response["is_complete"], response
        ref_ids.append(response["ref_id"])
    emit(
        "timed_out_return_ms",
        "ms",
        returns_ms,
        f"{TIMED_OUT_CALLS} calls, distinct args, work {TIMED_OUT_WORK_S} s, async_timeout {TIMED_OUT_TIMEOUT_S} s",
    )
    log(f"timed-out return: {statistics.median(returns_ms):.1f} ms; waiting for the background work")
    await asyncio.to_thread(poll_until_done, cache, ref_ids)
    await asyncio.to_thread(wait_until_quiet, executions, 2 * TIMED_OUT_WORK_S)

    # One call, alone: how many times did its body run once everything has finished?
    job = 1_000
    start = time.monotonic()
    response = await slow_job(job=job)
    assert response["is_async"], response
    await asyncio.to_thread(poll_until_done, cache, [response["ref_id"]])
    remaining = 2 * TIMED_OUT_WORK_S + 0.5 - (time.monotonic() - start)
    await asyncio.sleep(max(remaining, 0.0))
    await asyncio.to_thread(wait_until_quiet, executions, 1.0)
    emit(
        "timed_out_executions",
        "count",
        [executions.per_key[job]],
        f"1 call, work {TIMED_OUT_WORK_S} s, async_timeout {TIMED_OUT_TIMEOUT_S} s; counted after completion + 2x work",
    )
    log(f"executions for one timed-out call: {executions.per_key[job]}")


async def concurrent_identical(timeout_s: float, scenario: str) -> None:
    """Body executions for CONCURRENT_CALLS concurrent calls with the same arguments (asyncio.gather)."""
    cache = new_cache(scenario)
    executions = Executions()

    @cache.cached(async_timeout=timeout_s)
    async def shared_job(job: str) -> dict[str, Any]:
        """Works for CONCURRENT_WORK_S seconds."""
        with executions.run(job):
            await asyncio.sleep(CONCURRENT_WORK_S)
            return {"job": job, "done": True}

    responses = await asyncio.gather(*(shared_job(job="same") for _ in range(CONCURRENT_CALLS)))
    ref_ids = sorted({r["ref_id"] for r in responses if not r["is_complete"]})
    await asyncio.to_thread(poll_until_done, cache, ref_ids)
    await asyncio.to_thread(wait_until_quiet, executions, 2 * CONCURRENT_WORK_S)
    emit(
        scenario,
        "count",
        [executions.total],
        f"{CONCURRENT_CALLS} concurrent identical calls, work {CONCURRENT_WORK_S} s, async_timeout {timeout_s} s; "
        f"{len({r['ref_id'] for r in responses})} distinct ref_ids",
    )
    log(f"{scenario}: {executions.total} executions")


def sync_function() -> None:
    """A plain sync tool with a short async_timeout, called from a plain thread: when does the caller get control?"""
    cache = new_cache("sync")
    executions = Executions()

    @cache.cached(async_timeout=SYNC_TIMEOUT_S)
    def blocking_job(job: int) -> dict[str, Any]:
        """Blocks its thread for SYNC_WORK_S seconds."""
        with executions.run(job):
            time.sleep(SYNC_WORK_S)
            return {"job": job, "done": True}

    returns_ms, ref_ids = [], []
    for job in range(SYNC_CALLS):
        start = time.perf_counter()
        response = blocking_job(job=job)
        returns_ms.append((time.perf_counter() - start) * 1000.0)
        assert response["is_async"] and not response["is_complete"], response
        ref_ids.append(response["ref_id"])
    emit(
        "sync_return_ms",
        "ms",
        returns_ms,
        f"{SYNC_CALLS} calls from a plain thread, work {SYNC_WORK_S} s (time.sleep), async_timeout {SYNC_TIMEOUT_S} s",
    )
    log(f"sync return: {statistics.median(returns_ms):.1f} ms; waiting for the background work")
    poll_until_done(cache, ref_ids)
    wait_until_quiet(executions, 2 * SYNC_WORK_S)
    per_call = [float(executions.per_key[job]) for job in range(SYNC_CALLS)]
    emit("sync_executions", "count", per_call, f"per call, over the {SYNC_CALLS} calls above, after completion")
    log(f"sync executions per call: {per_call}")


async def async_scenarios() -> None:
    """The scenarios whose tools are async, run on one asyncio event loop as an MCP server runs them."""
    await hit_and_miss()
    await timed_out_calls()
    await concurrent_identical(CONCURRENT_LONG_TIMEOUT_S, "concurrent_in_time_executions")
    await concurrent_identical(CONCURRENT_SHORT_TIMEOUT_S, "concurrent_timed_out_executions")


def main() -> None:
    """Checks the installed version, then runs every scenario."""
    version = importlib.metadata.version("mcp-refcache")
    if version != EXPECTED_VERSION:
        sys.exit(f"mcp-refcache {EXPECTED_VERSION} expected, {version} installed")
    log(f"mcp-refcache {version}, Python {sys.version.split()[0]}")
    asyncio.run(async_scenarios())
    sync_function()


if __name__ == "__main__":
    main()
