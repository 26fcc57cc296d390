"""The lanes scenarios of ``benchmarks/run.py``: the 3 AM story (slow exports and urgent
tasks in one worker, with lanes and with one shared queue) and the cost of lanes (a drain
spread over four capped queues against the same drain from one queue).

Workers are real ``aiotaskq run`` processes. The story's driver watches the task table (a
look every 10 ms); the drain is timed like run.py's ``drain`` (probe, then the table found
empty). Each figure is the median of its rounds: the machine is shared.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

from benchmarks import dbenv, harness
from benchmarks.scenarios_load import Kit, burst_drain

#: The story: this many exports of this many seconds, and the urgent tasks enqueued while
#: they run, in a worker of this concurrency (as many slots as exports: one shared queue is
#: then wholly taken by them).
EXPORTS = 6
EXPORT_S = 3.0
CRITICAL = 300
STORY_CONCURRENCY = 6
#: The drain: four queues of a quarter of the concurrency each, against one queue.
LANES = ("q1", "q2", "q3", "q4")
DRAIN_CONCURRENCY = 100
POLL = 0.01


def _count(conn: Any, sql: str, *params: Any) -> int:
    row = conn.execute(sql, params).fetchone()
    return int(row[0]) if row else 0


def _story_round(conn: Any, queue: str | None) -> dict[str, Any]:
    """One round: the exports first, then, once they hold their slots, the urgent tasks;
    ``queue`` sends both to one shared queue instead of their own. Every look is kept for
    the chart: seconds from the urgent tasks' enqueue, urgent tasks done, exports running."""
    import aiotaskq
    from benchmarks import bench_tasks

    exports = [bench_tasks.export_sync.s(EXPORT_S) for _ in range(EXPORTS)]
    urgent = [bench_tasks.critical_sync.s(i) for i in range(CRITICAL)]
    if queue is not None:
        exports = [s.set(queue=queue) for s in exports]
        urgent = [s.set(queue=queue) for s in urgent]
    aiotaskq.enqueue_many(exports)
    look = (
        "SELECT count(*) FILTER (WHERE name = %s),"
        " count(*) FILTER (WHERE name = %s AND state = 'running'), count(*)"
        " FROM aiotaskq_task"
    )
    names = (bench_tasks.critical_sync.name, bench_tasks.export_sync.name)

    def counts() -> tuple[int, int, int]:
        row = conn.execute(look, names).fetchone()
        return (int(row[0]), int(row[1]), int(row[2])) if row else (0, 0, 0)

    deadline = time.monotonic() + 60
    expect = EXPORTS if queue is not None else min(EXPORTS, 2)
    while counts()[1] < expect:
        if time.monotonic() > deadline:
            raise RuntimeError("the exports did not start")
        time.sleep(POLL)
    t0 = time.monotonic()
    aiotaskq.enqueue_many(urgent)
    series: list[tuple[float, int, int]] = []
    t_urgent = None
    while True:
        left, exporting, total = counts()
        now = time.monotonic() - t0
        series.append((round(now, 3), CRITICAL - left, exporting))
        if t_urgent is None and left == 0:
            t_urgent = now
        if total == 0:
            break
        if time.monotonic() > deadline + 240:
            raise RuntimeError("the story did not finish")
        time.sleep(POLL)
    assert t_urgent is not None
    return {"urgent_s": t_urgent, "all_s": series[-1][0], "series": series}


def bench_lanes_story(kit: Kit, rounds: int) -> dict[str, Any]:
    """The 3 AM story: :data:`EXPORTS` plain-function exports of :data:`EXPORT_S` s and
    :data:`CRITICAL` urgent plain functions enqueued while the exports run, in one worker at
    ``--concurrency`` :data:`STORY_CONCURRENCY`: with lanes (``--queues
    critical,exports:2``) and with one shared queue. The time is from the urgent tasks'
    enqueue to the last of them acknowledged."""
    out: dict[str, Any] = {
        "exports": EXPORTS,
        "export_s": EXPORT_S,
        "urgent": CRITICAL,
        "concurrency": STORY_CONCURRENCY,
    }
    for mode, queues, queue in (
        ("lanes", "critical,exports:2", None),
        ("shared", "shared", "shared"),
    ):
        kit.truncate()
        with harness.connect(dbenv.database_name()) as conn:
            proc = kit.start_worker(
                f"lanes-story-{mode}",
                kit.log_dir,
                harness.subprocess_env(),
                "--concurrency",
                str(STORY_CONCURRENCY),
                "--queues",
                queues,
            )
            try:
                proc.wait_line("worker.started", timeout=60)
                runs = [_story_round(conn, queue) for _ in range(rounds)]
            finally:
                proc.stop()
        urgent = [r["urgent_s"] for r in runs]
        # The chart shows the round of the median time (of the middle one or two, the first).
        middle = sorted(runs, key=lambda r: r["urgent_s"])[(len(runs) - 1) // 2]
        out[mode] = {
            "queues": queues,
            "urgent_s": statistics.median(urgent),
            "rounds": urgent,
            "all_s": statistics.median(r["all_s"] for r in runs),
            "max_exports_running": max(e for r in runs for _, _, e in r["series"]),
            "series": middle["series"],
        }
    return out


def _drain(kit: Kit, n: int, queues: list[str], caps: bool, name: str) -> dict[str, float]:
    import aiotaskq
    from benchmarks import bench_tasks

    kit.truncate()
    for chunk in range(0, n, 5000):
        aiotaskq.enqueue_many(
            [
                bench_tasks.noop.s(i).set(queue=queues[i % len(queues)])
                for i in range(chunk, min(n, chunk + 5000))
            ]
        )
    share = DRAIN_CONCURRENCY // len(queues)
    spec = ",".join(f"{q}:{share}" if caps else q for q in queues)
    t = burst_drain(kit, n, name, "--concurrency", str(DRAIN_CONCURRENCY), "--queues", spec)
    return {"tasks_per_s": n / (t["empty"] - t["first"])}


def bench_lanes_drain(kit: Kit, n: int, rounds: int) -> dict[str, Any]:
    """``n`` async no-op tasks drained by one ``--burst`` worker at ``--concurrency``
    :data:`DRAIN_CONCURRENCY`: from one queue, and spread evenly over four queues capped at
    a quarter of it each. Rounds alternate so that the machine's other load falls on both."""
    one: list[float] = []
    four: list[float] = []
    for k in range(rounds):
        one.append(_drain(kit, n, ["q1"], False, f"lanes-drain-one-{k + 1}")["tasks_per_s"])
        four.append(_drain(kit, n, list(LANES), True, f"lanes-drain-four-{k + 1}")["tasks_per_s"])
    m_one, m_four = statistics.median(one), statistics.median(four)
    return {
        "tasks": n,
        "concurrency": DRAIN_CONCURRENCY,
        "one_queue": {"tasks_per_s": m_one, "rounds": one},
        "four_lanes": {"tasks_per_s": m_four, "rounds": four},
        "ratio": m_four / m_one,
    }


def draw(results: dict[str, Any], meta: dict[str, Any], results_dir: Path) -> tuple[Path, str]:
    """Write ``lanes.json`` and draw ``lanes.png`` in ``results_dir`` (with matplotlib from
    the chart's own virtualenv); return the image and why it was not drawn, or ``""``."""
    from benchmarks import compare

    results_dir.mkdir(parents=True, exist_ok=True)
    data = results_dir / "lanes.json"
    keep = ("when", "postgresql", "python", "cpus")
    data.write_text(
        json.dumps({"meta": {k: meta.get(k) for k in keep}, **results["lanes_story"]}, indent=1)
    )
    png = results_dir / "lanes.png"
    return png, compare.draw_chart(data, png, script="chart_lanes.py")


def rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The table's rows of these scenarios, as keyword arguments of run.py's ``Row``."""
    out: list[dict[str, Any]] = []

    def row(label: str, unit: str, higher: bool, value: Any, target: Any = None) -> None:
        out.append(harness.table_row(label, unit, higher, value, target))

    if r := results.get("lanes_story"):
        head = (
            f"3 AM story: {r['urgent']} urgent tasks behind {r['exports']} exports of "
            f"{r['export_s']:g} s, c={r['concurrency']}"
        )
        row(f"{head}, lanes ({r['lanes']['queues']})", "s", False, r["lanes"]["urgent_s"], 2.0)
        row(f"{head}, one shared queue", "s", False, r["shared"]["urgent_s"])
    if r := results.get("lanes_drain"):
        head = f"lanes: {r['tasks']:,} async no-op, c={r['concurrency']}"
        one = r["one_queue"]["tasks_per_s"]
        row(f"{head}, one queue", "tasks/s", True, one)
        row(
            f"{head}, four capped queues",
            "tasks/s",
            True,
            r["four_lanes"]["tasks_per_s"],
            one * 0.8,
        )
    return out
