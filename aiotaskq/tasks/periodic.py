"""Periodic tasks: ``@periodic(cron=..., tz=...)`` or ``@periodic(every=...)`` on a task.

::

    @periodic(cron="0 3 * * *", tz="Europe/Riga")
    @task
    def nightly_report() -> None: ...

A schedule is known to every process that imports it. Its ticks are instants: a cron
expression's in its time zone's wall-clock time (:mod:`aiotaskq.cron` says what the changes
of daylight saving time do), an ``every`` interval's at the multiples of the interval since
the Unix epoch (``every=60`` ticks at each full minute). Which ticks are due, and which one
run each gets, is decided by the database: see :mod:`aiotaskq.worker.scheduler`.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..cron import Cron, CronError
from ..errors import ConfigurationError
from .task import Task

__all__ = ["CatchUp", "Schedule", "periodic", "schedules"]

CatchUp = Literal["latest", "all", "none"]
Overlap = Literal["queue", "skip"]

#: With ``catch_up="all"``, the most missed ticks run after a downtime (the oldest are
#: dropped past it, and logged).
MAX_CATCH_UP = 100
#: With ``catch_up="none"``, a tick older than this when a worker first sees it due counts
#: as missed and does not run.
LATE_AFTER = 60.0
#: Ticks due no longer ago than this are run whatever ``catch_up`` says: they were not missed
#: in a downtime, only found a little late (the schedulers look once a second, and a look can
#: come after two ticks of ``every=1``).
RECENT = 3.0

_UTC = dt.UTC
_schedules: dict[str, Schedule] = {}


@dataclass(frozen=True, slots=True, kw_only=True)
class Schedule:
    """One periodic schedule of a task."""

    name: str
    task: Task[Any, Any]
    cron: Cron | None
    every: float | None
    tz: ZoneInfo
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    catch_up: CatchUp = "latest"
    overlap: Overlap = "queue"

    def next_after(self, after: dt.datetime) -> dt.datetime | None:
        """The first tick strictly after the aware instant ``after``."""
        if self.cron is not None:
            return self.cron.next_after(after, self.tz)
        assert self.every is not None
        seconds = after.timestamp()
        k = math.floor(seconds / self.every) + 1
        return dt.datetime.fromtimestamp(k * self.every, _UTC)

    def due(self, last: dt.datetime, now: dt.datetime) -> list[dt.datetime]:
        """The ticks to run of those in (``last``, ``now``], oldest first, by ``catch_up``:
        the latest one, all of them (at most :data:`MAX_CATCH_UP`, the latest kept), or
        the latest one only if it is not older than :data:`LATE_AFTER` seconds. Ticks of the
        last :data:`RECENT` seconds all run, whatever ``catch_up`` says."""
        if self.every is not None:
            every = self.every
            first = math.floor(last.timestamp() / every) + 1  # the first tick after last
            newest = math.floor(now.timestamp() / every)  # the newest tick at or before now
            if newest < first:
                return []
            if self.catch_up == "all":
                start = max(first, newest - MAX_CATCH_UP + 1)
            else:  # the newest, and any others of the last RECENT seconds
                start = max(first, min(newest, math.ceil((now.timestamp() - RECENT) / every)))
            ticks = [dt.datetime.fromtimestamp(k * every, _UTC) for k in range(start, newest + 1)]
        else:
            ticks = []
            # A cron that ticked every minute through a long downtime: look back a bounded
            # way for the latest (and, with "all", the newest MAX_CATCH_UP).
            since = max(last, now - dt.timedelta(days=2)) if self.catch_up != "all" else last
            t = self.next_after(since)
            while t is not None and t <= now:
                ticks.append(t)
                if len(ticks) > MAX_CATCH_UP:
                    del ticks[0]
                t = self.next_after(t)
            if not ticks and since > last:  # a sparse cron: its latest tick is further back
                t = self.next_after(last)
                while t is not None and t <= now:
                    ticks = [t]
                    t = self.next_after(t)
            if self.catch_up != "all":
                fresh = [t for t in ticks if (now - t).total_seconds() <= RECENT]
                ticks = fresh or ticks[-1:]
        if self.catch_up == "none" and ticks and (now - ticks[-1]).total_seconds() > LATE_AFTER:
            return []
        return ticks

    def describe(self) -> str:
        return (
            f"cron {self.cron.expression!r} in {self.tz.key}"
            if self.cron
            else f"every {self.every:g} s"
        )


def _zone(tz: str | None, where: str) -> ZoneInfo:
    key = tz if tz is not None else get_settings_time_zone()
    if not isinstance(key, str):
        raise ConfigurationError(f"{where}: tz must be an IANA time zone name, got {key!r}.")
    try:
        return ZoneInfo(key)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigurationError(
            f"{where}: tz {key!r} is not a time zone this system knows; use an IANA name "
            "such as 'Europe/Riga' or 'UTC' (install tzdata where the system has none)."
        ) from None


def get_settings_time_zone() -> str:
    from django.conf import settings

    return str(getattr(settings, "TIME_ZONE", None) or "UTC")


def periodic(
    *,
    cron: str | None = None,
    every: float | dt.timedelta | None = None,
    tz: str | None = None,
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    name: str | None = None,
    catch_up: CatchUp = "latest",
    overlap: Overlap = "queue",
) -> Callable[[Task[Any, Any]], Task[Any, Any]]:
    """Run the decorated task (put ``@periodic`` above ``@task``) on a schedule.

    Args:
        cron: a 5-field cron expression (or ``@daily`` and the like), read in ``tz``.
        every: seconds (or a ``timedelta``) between ticks, at multiples of it since the
            Unix epoch. Exactly one of ``cron`` and ``every``.
        tz: the IANA time zone of ``cron`` (default: Django's ``TIME_ZONE``).
        args: the positional arguments of each run (JSON, as for ``delay``).
        kwargs: the keyword arguments of each run (JSON).
        name: the schedule's id (default: the task's name); two schedules of one task need
            names of their own.
        catch_up: after a downtime, run the most recent missed tick once (``"latest"``),
            every missed tick (``"all"``, at most 100), or none (``"none"``).
        overlap: a tick while the schedule's previous run is still queued or running waits in
            the queue (``"queue"``) or is dropped (``"skip"``, logged).

    Raises:
        ConfigurationError: a bad expression, an unknown time zone, both or neither of
            ``cron`` and ``every``, a schedule name used twice; named in the message.
    """

    def register(task: Task[Any, Any]) -> Task[Any, Any]:
        if not isinstance(task, Task):
            raise ConfigurationError(
                "@periodic goes above @task: it schedules a task, got "
                f"{type(task).__name__} {getattr(task, '__name__', task)!r}."
            )
        schedule_name = name or task.name
        where = f"@periodic of {task.name!r}" + (f" (schedule {name!r})" if name else "")
        if (cron is None) == (every is None):
            raise ConfigurationError(f"{where}: give exactly one of cron= and every=.")
        parsed = None
        seconds = None
        if cron is not None:
            try:
                parsed = Cron.parse(cron)
            except CronError as exc:
                raise ConfigurationError(f"{where}: {exc}.") from None
        else:
            seconds = every.total_seconds() if isinstance(every, dt.timedelta) else every
            if (
                isinstance(seconds, bool)
                or not isinstance(seconds, int | float)
                or not math.isfinite(seconds)
                or seconds < 1
            ):
                raise ConfigurationError(
                    f"{where}: every= must be at least 1 second (a number or a timedelta), "
                    f"got {every!r}."
                )
            seconds = float(seconds)
        if catch_up not in ("latest", "all", "none"):
            raise ConfigurationError(
                f'{where}: catch_up must be "latest", "all" or "none", got {catch_up!r}.'
            )
        if overlap not in ("queue", "skip"):
            raise ConfigurationError(
                f'{where}: overlap must be "queue" or "skip", got {overlap!r}.'
            )
        zone = _zone(tz, where)
        from ..serialization import encode

        try:
            encode(list(args))
            encode(dict(kwargs or {}))
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"{where}: args and kwargs must be JSON ({exc}).") from None
        schedule = Schedule(
            name=schedule_name,
            task=task,
            cron=parsed,
            every=seconds,
            tz=zone,
            args=tuple(args),
            kwargs=dict(kwargs or {}),
            catch_up=catch_up,
            overlap=overlap,
        )
        known = _schedules.get(schedule_name)
        if known is not None and known.task.fn is not task.fn:
            raise ConfigurationError(
                f"{where}: the schedule name {schedule_name!r} is already used by "
                f"{known.task.name!r}; give one of them name=."
            )
        _schedules[schedule_name] = schedule
        return task

    return register


def schedules() -> list[Schedule]:
    """Every schedule this process has imported, by name."""
    return [_schedules[n] for n in sorted(_schedules)]
