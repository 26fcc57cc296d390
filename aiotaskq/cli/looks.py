"""The commands that look at the queues and the workers: ``status``, ``schedules``,
``workers`` and ``health`` (for probes). Each reads; none changes a row."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import socket
from collections.abc import Sequence
from typing import Any

from . import _asyncio_run

__all__ = ["check_health", "print_table", "show_schedules", "show_status", "show_workers"]


def show_schedules(options: argparse.Namespace) -> int:
    from ..db.schedules import list_rows
    from ..tasks.periodic import schedules
    from ..worker.lifecycle import import_task_modules

    import_task_modules()
    rows = _asyncio_run(list_rows())
    listed = []
    for schedule in schedules():
        row = rows.get(schedule.name, {})
        now = row.get("now") or dt.datetime.now(dt.UTC)
        last_tick = row.get("last_tick")
        upcoming = schedule.next_after(max(now, last_tick) if last_tick else now)
        listed.append(
            {
                "name": schedule.name,
                "task": schedule.task.name,
                "cron": schedule.cron.expression if schedule.cron else None,
                "every": schedule.every,
                "tz": schedule.tz.key,
                "last_run": iso(row.get("last_run"), schedule.tz),
                "next_run": iso(upcoming, schedule.tz),
                "paused": bool(row.get("paused", False)),
            }
        )
    if options.json:
        print(json.dumps({"schedules": listed}, indent=2))
        return 0
    if not listed:
        print("no schedules: no @periodic task in the modules a worker imports")
        return 0
    header: tuple[str, ...] = ("schedule", "task", "when", "last run", "next run", "paused")
    table: list[tuple[str, ...]] = [
        header,
        *[
            (
                str(s["name"]),
                str(s["task"]),
                f"cron {s['cron']} ({s['tz']})" if s["cron"] else f"every {s['every']:g} s",
                str(s["last_run"] or "-"),
                str(s["next_run"] or "-"),
                "yes" if s["paused"] else "",
            )
            for s in listed
        ],
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


def iso(moment: dt.datetime | None, tz: Any) -> str | None:
    return None if moment is None else moment.astimezone(tz).isoformat()


def show_status(options: argparse.Namespace) -> int:
    from ..conf import get_settings
    from ..db.status import QueueStatus, in_progress, limits_status, queue_status
    from ..tasks.registry import registered
    from ..worker.lifecycle import import_task_modules

    settings = get_settings()
    rows = _asyncio_run(queue_status(settings.DIRTY_AFTER))
    import_task_modules()  # the limits are the tasks' own
    known = registered()
    keys = []
    for k in _asyncio_run(limits_status(settings.DIRTY_AFTER)):
        limits = getattr(known.get(k.name), "limits", None)
        keys.append(
            {
                "task": k.name,
                "key": k.key,
                "running": k.running,
                "max_concurrent": limits.max_concurrent if limits else None,
                "rate_limit": limits.rate_limit if limits else None,
                "waiting": k.waiting,
            }
        )
    # The queues of AIOTASKQ["QUEUES"] show even with no task, for their caps.
    seen = {r.queue for r in rows}
    rows += [QueueStatus.empty(q) for q in settings.QUEUES if q not in seen]
    rows.sort(key=lambda r: r.queue)
    caps = {q: options_.concurrency for q, options_ in settings.QUEUES.items()}
    if options.json:
        print(
            json.dumps(
                {
                    "queues": {
                        r.queue: {
                            "pending": r.pending,
                            "future": r.future,
                            "active": r.active,
                            "dirty": r.dirty,
                            "failed": r.failed,
                            "succeeded": r.succeeded,
                            "oldest_pending_age_s": r.oldest_pending_age_s,
                            # AIOTASKQ["QUEUES"]: the most of its tasks one worker runs at
                            # once (null: no cap), and the slots its running tasks hold now
                            # over all workers.
                            "cap_per_worker": caps.get(r.queue),
                            "slots_in_use": r.active,
                        }
                        for r in rows
                    },
                    # Running tasks that report their progress (set_progress), the
                    # longest-running first, at most 100.
                    "in_progress": _asyncio_run(in_progress()),
                    # Limit keys in use (docs/limits.md): seats taken (running) of
                    # max_concurrent, the rate, and the tasks waiting for a seat or a token.
                    "limits": keys,
                },
                indent=2,
            )
        )
        return 0
    header = (
        *("queue", "pending", "future", "active", "dirty", "failed", "succeeded"),
        "oldest pending",
        "cap/worker",
    )
    table = [header] + [
        (
            r.queue,
            str(r.pending),
            str(r.future),
            str(r.active),
            str(r.dirty),
            str(r.failed),
            str(r.succeeded),
            "-" if r.oldest_pending_age_s is None else f"{r.oldest_pending_age_s:.1f} s",
            str(caps.get(r.queue) or "-"),
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print(
            "  ".join(
                cell.ljust(w) if i == 0 else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    if not rows:
        print("(no tasks)")
    if keys:
        print()
        print_table(
            ("task", "limit key", "running", "rate", "waiting"),
            [
                (
                    k["task"],
                    k["key"],
                    f"{k['running']}/{k['max_concurrent'] or '-'}",
                    k["rate_limit"] or "-",
                    str(k["waiting"]),
                )
                for k in keys
            ],
        )
    return 0


def print_table(header: tuple[str, ...], body: Sequence[tuple[str, ...]], left: int = 2) -> None:
    """Print columns, the first ``left`` aligned left and the rest right."""
    table = [header, *body]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print(
            "  ".join(
                cell.ljust(w) if i < left else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            )
        )


def _ago(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s ago"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def _queues_cell(queues: dict[str, int | None]) -> str:
    return ",".join(q if cap is None else f"{q}:{cap}" for q, cap in queues.items())


def show_workers(options: argparse.Namespace) -> int:
    """``aiotaskq workers``: the live workers (with ``--all``, the lost ones too)."""
    from ..conf import get_settings
    from ..db.workers import WorkerRow, listed

    rows: list[WorkerRow] = _asyncio_run(listed(get_settings().DIRTY_AFTER))
    if not options.all:
        rows = [r for r in rows if r.alive]
    if options.json:
        out = []
        for r in rows:
            doc = r.as_json()
            if options.all:
                doc["alive"] = r.alive
            out.append(doc)
        print(json.dumps({"workers": out}, indent=2))
        return 0
    if not rows:
        print("(no worker alive)" if not options.all else "(no worker)")
        return 0
    header = ("id", "host", "pid", "queues", "concurrency", "in flight", "started", "last seen")
    body = [
        (
            r.id,
            r.host,
            str(r.pid),
            _queues_cell(r.queues),
            str(r.concurrency),
            str(r.in_flight),
            r.started_at.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
            _ago(r.silent_s) + ("" if r.alive else " (lost)"),
        )
        for r in rows
    ]
    print_table(header, body, left=4)
    return 0


def check_health(options: argparse.Namespace) -> int:
    """``aiotaskq health``: exit 0 when a worker of this host (``--host``), or with
    ``--queue`` any worker that takes the queue, has a fresh heartbeat; else 1. One line
    either way, for the probe's log."""
    from ..conf import get_settings
    from ..db.workers import WorkerRow, listed

    dirty_after = get_settings().DIRTY_AFTER
    rows: list[WorkerRow] = _asyncio_run(listed(dirty_after))
    if options.queue is not None:
        scope = f"of queue {options.queue!r}"
        mine = [r for r in rows if options.queue in r.queues]
    else:
        host = options.host or socket.gethostname()
        scope = f"on host {host}"
        mine = [r for r in rows if r.host == host]
    alive = [r for r in mine if r.alive]
    if alive:
        freshest = min(r.silent_s for r in alive)
        print(
            f"ok: {len(alive)} worker{'s' if len(alive) > 1 else ''} {scope} alive "
            f"(last heartbeat {_ago(freshest)})"
        )
        return 0
    if mine:
        freshest = min(r.silent_s for r in mine)
        why = (
            f"the last heartbeat of a worker {scope} was {_ago(freshest)}, more than "
            f"DIRTY_AFTER ({dirty_after:g} s): its event loop is blocked, or it was stopped "
            "or killed"
        )
    else:
        why = f"no worker {scope} is registered (none started, or every one stopped)"
    print(f"not alive: {why}")
    return 1
