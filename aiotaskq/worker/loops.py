"""The worker's side loops (reporter, heartbeat, listener, rescuer, table upkeep, ORM-thread
tidying) share one shape and one error boundary.

- :func:`every` runs a step every so many seconds. A step that fails for the database is
  logged as a warning (or not at all while the database is known to be unreachable: the
  ``database.unreachable`` line has said so) and the next step comes as planned.
- :func:`supervised` runs a whole loop and restarts it when it fails from anything else (a
  bug): the failure is logged with its traceback, and the loop restarts after a backoff
  (0.5 s doubling to 30 s, reset once it has run for a minute). A worker never carries on
  silently without its heartbeat or its reporter.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ..errors import DatabaseError, DatabaseUnreachable

__all__ = ["every", "supervised"]

logger = logging.getLogger(__name__)

_RESTART_FIRST = 0.5
_RESTART_MAX = 30.0
_HEALTHY_AFTER = 60.0


async def every(
    interval: float,
    step: Callable[[], Awaitable[Any]],
    name: str,
    *,
    first: bool = False,
    extra: dict[str, Any] | None = None,
) -> None:
    """Await ``step`` every ``interval`` seconds (at once too, with ``first``), forever."""
    if not first:
        await asyncio.sleep(interval)
    while True:
        try:
            await step()
        except DatabaseUnreachable as exc:
            logger.debug("%s.skipped: %s", name, exc)
        except DatabaseError as exc:
            logger.warning("%s.failed: %s", name, exc, extra=extra)
        await asyncio.sleep(interval)


async def supervised(
    name: str, run: Callable[[], Awaitable[None]], *, extra: dict[str, Any] | None = None
) -> None:
    """Run ``run`` until it returns; restart it with a backoff each time it raises an
    ``Exception`` (cancellation and other ``BaseException`` go through)."""
    delay = _RESTART_FIRST
    while True:
        started = time.monotonic()
        try:
            await run()
            return
        except Exception:
            if time.monotonic() - started > _HEALTHY_AFTER:
                delay = _RESTART_FIRST
            logger.exception(
                "loop.crashed: the worker's %s loop failed; restarting it in %.1f s",
                name,
                delay,
                extra=extra,
            )
        await asyncio.sleep(delay)
        delay = min(delay * 2, _RESTART_MAX)
