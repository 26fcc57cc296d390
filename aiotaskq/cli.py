"""``aiotaskq run``, ``status``, ``retry`` and ``delete``; ``python manage.py aiotaskq`` uses the
same parser.

The CLI is the only part of aiotaskq that reads environment variables or configures logging.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import uuid
from collections.abc import Coroutine, Sequence
from typing import Any

__all__ = ["add_commands", "execute", "main"]

_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def add_commands(parser: argparse.ArgumentParser, *, settings_option: bool = True) -> None:
    """Add the ``run``, ``status``, ``retry`` and ``delete`` sub-commands to ``parser``.
    ``manage.py`` has its own ``--settings``, so it passes ``settings_option=False``."""
    sub = parser.add_subparsers(dest="command", required=True, metavar="{run,status,retry,delete}")
    run = sub.add_parser("run", help="run a worker until SIGTERM/SIGINT")
    run.add_argument(
        "--concurrency",
        type=_positive,
        default=100,
        help="tasks run at once (coroutines and threads together; default 100)",
    )
    run.add_argument(
        "--threads", type=_positive, default=8, help="threads for plain-function tasks (default 8)"
    )
    run.add_argument(
        "--queues",
        type=_queues,
        default=None,
        help='comma-separated queues (default AIOTASKQ["DEFAULT_QUEUE"])',
    )
    run.add_argument(
        "--grace",
        type=float,
        default=30.0,
        help="seconds in-flight tasks get to finish on SIGTERM (default 30)",
    )
    run.add_argument(
        "--db-threads",
        type=_positive,
        default=4,
        help="threads (and Django connections) for the ORM calls of async tasks (default 4)",
    )
    run.add_argument("--burst", action="store_true", help="run what is due, then exit")
    run.add_argument(
        "--loop",
        choices=["auto", "asyncio", "uvloop"],
        default="auto",
        help="the event loop: uvloop when installed (auto), or the named one",
    )
    _add_common(run, settings_option)
    status = sub.add_parser(
        "status",
        help="counts of pending, future, active, dirty, failed and succeeded tasks per queue",
    )
    status.add_argument("--json", action="store_true", help="print JSON")
    _add_common(status, settings_option)
    for verb, text in (
        ("retry", "queue Failed or Dirty tasks again, due now"),
        ("delete", "delete Failed or Dirty tasks"),
    ):
        cmd = sub.add_parser(verb, help=text)
        cmd.add_argument("ids", nargs="*", type=uuid.UUID, metavar="ID", help="task ids")
        cmd.add_argument("--failed", action="store_true", help="every Failed task")
        cmd.add_argument("--dirty", action="store_true", help="every Dirty task")
        cmd.add_argument("--queue", help="only tasks of this queue")
        _add_common(cmd, settings_option)


def _add_common(parser: argparse.ArgumentParser, settings_option: bool) -> None:
    if settings_option:
        parser.add_argument(
            "--settings", help="the Django settings module (default: $DJANGO_SETTINGS_MODULE)"
        )
    else:
        # manage.py reads these itself before the command runs; accept them after the
        # sub-command too, without overriding what it parsed.
        for option in ("--settings", "--pythonpath"):
            parser.add_argument(option, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="default INFO",
    )


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return number


def _queues(value: str) -> list[str]:
    return [q.strip() for q in value.split(",") if q.strip()]


def _asyncio_run(coro: Coroutine[Any, Any, Any], loop: str = "auto") -> Any:
    if loop != "asyncio":
        try:
            import uvloop
        except ImportError:
            if loop == "uvloop":
                raise
        else:
            return uvloop.run(coro)
    return asyncio.run(coro)


def _loop_name(loop: str) -> str:
    if loop == "auto":
        try:
            import uvloop  # noqa: F401
        except ImportError:
            return "asyncio"
        return "uvloop"
    return loop


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level, format=_LOG_FORMAT, stream=sys.stderr)
    logging.getLogger("aiotaskq").setLevel(level)


def execute(options: argparse.Namespace) -> int:
    """Run the parsed sub-command; Django must be set up. Returns the exit status."""
    if options.command == "run":
        return _run(options)
    if options.command in ("retry", "delete"):
        return _by_hand(options)
    return _status(options)


def _by_hand(options: argparse.Namespace) -> int:
    from .conf import get_settings
    from .db import control

    if not options.ids and not (options.failed or options.dirty):
        print(
            f"aiotaskq {options.command}: name task ids, or pass --failed and/or --dirty",
            file=sys.stderr,
        )
        return 2
    either = not (options.failed or options.dirty)
    selection = control.Selection(
        ids=options.ids or None,
        queue=options.queue,
        failed=options.failed or either,
        dirty=options.dirty or either,
    )
    action = control.requeue if options.command == "retry" else control.delete
    count = len(_asyncio_run(action(selection, get_settings().DIRTY_AFTER)))
    done = "queued again" if options.command == "retry" else "deleted"
    print(f"{count} task{'s' if count != 1 else ''} {done}")
    return 0


def _run(options: argparse.Namespace) -> int:
    from .worker import Worker, WorkerConfig
    from .worker.shutdown import ignore_stop_signals, install_signal_handlers

    worker = Worker(
        WorkerConfig(
            queues=tuple(options.queues or ()),
            concurrency=options.concurrency,
            threads=options.threads,
            db_threads=options.db_threads,
            grace=options.grace,
            burst=options.burst,
        )
    )
    print(
        f"aiotaskq worker {worker.id}\n"
        f"  queues:      {', '.join(worker.queues)}\n"
        f"  concurrency: {options.concurrency}\n"
        f"  threads:     {options.threads}\n"
        f"  loop:        {_loop_name(options.loop)}\n"
        f"  connections: {worker.budget}",
        flush=True,
    )

    async def main() -> None:
        install_signal_handlers(worker)
        try:
            await worker.run()
        finally:
            ignore_stop_signals()
        if worker.abandoned_threads or worker.stubborn:
            # Tasks ran past the grace period and their rows were given back: sync tasks in
            # their threads (Python would wait for them at exit), or coroutines that ignore
            # their cancellation (the loop's shutdown would wait for them forever). Leave
            # without waiting for either.
            logging.getLogger(__name__).warning(
                "worker.exit: %d sync tasks still running in their threads and %d coroutines "
                "that ignored their cancellation are abandoned",
                worker.abandoned_threads,
                len(worker.stubborn),
            )
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)

    _asyncio_run(main(), options.loop)
    return 0


def _status(options: argparse.Namespace) -> int:
    from .conf import get_settings
    from .db.status import queue_status

    rows = _asyncio_run(queue_status(get_settings().DIRTY_AFTER))
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
                        }
                        for r in rows
                    }
                },
                indent=2,
            )
        )
        return 0
    header = (
        *("queue", "pending", "future", "active", "dirty", "failed", "succeeded"),
        "oldest pending",
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
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """The ``aiotaskq`` console script."""
    parser = argparse.ArgumentParser(prog="aiotaskq", description=__doc__.splitlines()[0])
    add_commands(parser)
    options = parser.parse_args(argv)
    if options.settings:
        os.environ["DJANGO_SETTINGS_MODULE"] = options.settings
    if not os.environ.get("DJANGO_SETTINGS_MODULE"):
        parser.error("no Django settings: pass --settings or set DJANGO_SETTINGS_MODULE")
    # Like manage.py: the project in the current directory is importable.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    configure_logging(options.log_level)
    import django

    django.setup()
    return execute(options)


if __name__ == "__main__":
    raise SystemExit(main())
