"""The unique-task scenario of ``benchmarks/run.py``: what a unique key costs an enqueue. In
this process, no worker; each timing starts from empty tables, and the keyed and the plain
runs of one measure alternate, so that both meet the disk in the same moments (medians kept).

- bulk: ``enqueue_many`` of ``n`` signatures (built before the clock starts) without keys
  (COPY), with a fresh key each (the set-based path of ``aiotaskq_enqueue_unique``), and
  again with every key already held (nothing written: each call answered with its holder).
- single: ``await adelay(...)`` one after another from one coroutine: without a key, with a
  fresh key each, and with a key that a queued task holds.
- replace: ``await adelay(unique_key="one", on_conflict="replace", countdown=60)`` one after
  another: every call rewrites the one queued task (debounce).
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from benchmarks import harness
from benchmarks.scenarios_load import Kit


def _truncate() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE aiotaskq_task, aiotaskq_unique")


def bench_unique(kit: Kit, bulk: int, single: int, rounds: int) -> dict[str, Any]:
    import aiotaskq
    from benchmarks import bench_tasks

    plain_sigs = [bench_tasks.noop.s(i) for i in range(bulk)]
    keyed_sigs = [bench_tasks.noop.s(i).set(unique_key=f"k{i}") for i in range(bulk)]

    def timed(sigs: list[Any]) -> float:
        started = time.perf_counter()
        aiotaskq.enqueue_many(sigs)
        return time.perf_counter() - started

    plain: list[float] = []
    fresh: list[float] = []
    held: list[float] = []
    for _ in range(rounds):
        _truncate()
        plain.append(timed(plain_sigs))
        _truncate()
        fresh.append(timed(keyed_sigs))
        held.append(timed(keyed_sigs))  # the same keys again: all held

    async def singles() -> dict[str, list[float]]:
        await bench_tasks.noop.adelay(-1)  # opens the pool outside the timing
        times: dict[str, list[float]] = {"plain": [], "fresh": [], "held": [], "replace": []}
        for r in range(rounds):
            _atruncate_sync()
            started = time.perf_counter()
            for i in range(single):
                await bench_tasks.noop.adelay(i)
            times["plain"].append(time.perf_counter() - started)
            _atruncate_sync()
            started = time.perf_counter()
            for i in range(single):
                await bench_tasks.noop.aapply_async((i,), unique_key=f"s{r}-{i}")
            times["fresh"].append(time.perf_counter() - started)
            await bench_tasks.noop.aapply_async((0,), unique_key="held")
            started = time.perf_counter()
            for i in range(single):
                await bench_tasks.noop.aapply_async((i,), unique_key="held")
            times["held"].append(time.perf_counter() - started)
            started = time.perf_counter()
            for i in range(single):
                await bench_tasks.noop.aapply_async(
                    (i,), unique_key="one", on_conflict="replace", countdown=60
                )
            times["replace"].append(time.perf_counter() - started)
        return times

    calls = kit.run_async(singles())
    _truncate()

    def per_s(n: int, times: list[float]) -> float:
        return n / statistics.median(times)

    return {
        "bulk": {
            "tasks": bulk,
            "plain_per_s": per_s(bulk, plain),
            "fresh_per_s": per_s(bulk, fresh),
            "held_per_s": per_s(bulk, held),
        },
        "single": {
            "calls": single,
            "plain_per_s": per_s(single, calls["plain"]),
            "fresh_per_s": per_s(single, calls["fresh"]),
            "held_per_s": per_s(single, calls["held"]),
            "replace_per_s": per_s(single, calls["replace"]),
        },
        "rounds": rounds,
    }


def _atruncate_sync() -> None:
    """Empty the tables on a connection of its own (from the coroutine: a short blocking
    call, outside every timing)."""
    from benchmarks import dbenv

    with harness.connect(dbenv.database_name()) as conn:
        conn.execute("TRUNCATE aiotaskq_task, aiotaskq_unique")


def rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The table's rows of this scenario, as keyword arguments of run.py's ``Row``."""
    out: list[dict[str, Any]] = []
    if r := results.get("unique"):
        b, s = r["bulk"], r["single"]
        n = f"{b['tasks']:,}"
        for key, words in (
            ("plain_per_s", "no keys"),
            ("fresh_per_s", "a fresh unique key each"),
            ("held_per_s", "every key held (nothing written)"),
        ):
            out.append(harness.table_row(f"enqueue_many({n}): {words}", "tasks/s", True, b[key]))
        n = f"x{s['calls']:,}"
        for key, words in (
            ("plain_per_s", "no key"),
            ("fresh_per_s", "a fresh unique key each"),
            ("held_per_s", "a key a queued task holds"),
            ("replace_per_s", 'on_conflict="replace" of one queued task'),
        ):
            out.append(harness.table_row(f"adelay() {n}: {words}", "calls/s", True, s[key]))
    return out
