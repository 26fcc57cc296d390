"""The limits scenario of ``benchmarks/run.py``: a fan-out held to a limit per key.

- ``limits_fanout``: ``n`` tasks that each ``await asyncio.sleep(0.2)``, spread over 100
  hosts (``limit_key``), at ``max_concurrent=4`` per host, drained by one ``--burst`` worker
  at ``--concurrency 500`` (more slots than the 400 seats the limits allow, so the limits are
  the bound). The ideal time is what the limit allows: each host's tasks four at a time,
  ``n / 100 / 4 * 0.2`` s. Timed from the worker's start line to the table found empty,
  rounds alternated with the same fan-out without limits (``sleep_for``, at
  ``--concurrency 400``: the same 400 at once, the ideal of the same size).
"""

from __future__ import annotations

import statistics
from typing import Any

from benchmarks import harness
from benchmarks.scenarios_load import Kit, burst_drain

HOSTS = 100
SEATS = 4
SLEEP = 0.2


def bench_limits_fanout(kit: Kit, n: int, rounds: int) -> dict[str, Any]:
    import aiotaskq
    from benchmarks import bench_tasks

    limited: list[float] = []
    plain: list[float] = []
    for k in range(rounds):
        for kind in ("limited", "plain"):
            kit.truncate()
            if kind == "limited":
                sigs = [bench_tasks.sleep_per_host.s(f"h{i % HOSTS}", SLEEP) for i in range(n)]
            else:
                sigs = [bench_tasks.sleep_for.s(SLEEP) for _ in range(n)]
            for chunk in range(0, n, 5000):
                aiotaskq.enqueue_many(sigs[chunk : chunk + 5000])
            concurrency = "500" if kind == "limited" else str(HOSTS * SEATS)
            t = burst_drain(kit, n, f"limits-{kind}-{k + 1}", "--concurrency", concurrency)
            (limited if kind == "limited" else plain).append(t["empty"] - t["ready"])
    ideal = n / HOSTS / SEATS * SLEEP
    wall = statistics.median(limited)
    return {
        "tasks": n,
        "hosts": HOSTS,
        "max_concurrent": SEATS,
        "ideal_s": ideal,
        "wall_s": wall,
        "over_ideal": wall / ideal - 1,
        "plain_wall_s": statistics.median(plain),
        "rounds_limited_s": limited,
        "rounds_plain_s": plain,
    }


def rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The table's rows of this scenario, as keyword arguments of run.py's ``Row``."""
    out: list[dict[str, Any]] = []
    if r := results.get("limits_fanout"):
        label = (
            f"fan-out {r['tasks']:,} x sleep({SLEEP}) over {r['hosts']} hosts, "
            f"max_concurrent={r['max_concurrent']} (ideal {r['ideal_s']:.1f} s)"
        )
        out.append(harness.table_row(label, "s", False, r["wall_s"], r["ideal_s"] * 1.1))
        label = f"the same without limits, c={r['hosts'] * r['max_concurrent']}"
        out.append(harness.table_row(label, "s", False, r["plain_wall_s"]))
    return out
