"""Standard 5-field cron expressions and the ticks of a schedule, in an IANA time zone.

``minute hour day-of-month month day-of-week``, each a ``*``, a number, a range ``a-b``, a
step ``*/n`` or ``a-b/n``, or a list of those separated by commas; months and days of the
week also by their English three-letter names (``jan``, ``mon``); ``0`` and ``7`` are both
Sunday. ``@yearly`` (``@annually``), ``@monthly``, ``@weekly``, ``@daily`` (``@midnight``)
and ``@hourly`` stand for their usual expressions. As in Vixie cron, when both the day of the
month and the day of the week are restricted, a day matching either one matches.

Ticks are instants. A cron expression is read in its time zone's wall-clock time, and the
changes of daylight saving time neither skip nor double a run:

- a wall-clock time that does not exist (the hour skipped in spring) runs at the instant its
  time would have had before the change, that is as much later as the clocks moved: a daily
  run at 02:30 runs at 03:30 on that day;
- a wall-clock time that happens twice (the hour repeated in autumn) runs once, at its first
  occurrence, unless the expression's hour is ``*``: an hourly or every-minute run follows
  real time and runs in both hours.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from .errors import ConfigurationError

__all__ = ["Cron", "CronError"]

_UTC = dt.UTC

_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_MONTHS = {m: i for i, m in enumerate(_MONTH_NAMES, 1)}
_DAYS = {d: i for i, d in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))}
# (name, lowest, highest, names)
_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 7, _DAYS),
)
#: How far ahead a tick is looked for: an expression that matches no day within it (such as
#: ``0 0 30 2 *``, the 30th of February) has no tick.
_HORIZON_DAYS = 366 * 8


class CronError(ConfigurationError, ValueError):
    """A cron expression that cannot be read; the message names the field and the fix."""


def _value(text: str, low: int, high: int, names: dict[str, int], field: str) -> int:
    word = text.lower()
    if word in names:
        return names[word]
    if not text.isdigit():
        known = f" or a name ({', '.join(names)})" if names else ""
        raise CronError(f"the {field} field has {text!r}: expected a number{known}")
    number = int(text)
    if not low <= number <= high:
        raise CronError(f"the {field} field has {number}: it must be from {low} to {high}")
    return number


def _field(text: str, low: int, high: int, names: dict[str, int], field: str) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        if not part:
            raise CronError(f"the {field} field {text!r} has an empty entry")
        body, slash, step_text = part.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) < 1:
                raise CronError(f"the {field} field has the step {step_text!r}: use */N, N >= 1")
            step = int(step_text)
        if body == "*":
            start, end = low, high
        elif "-" in body:
            first, _, last = body.partition("-")
            start = _value(first, low, high, names, field)
            end = _value(last, low, high, names, field)
            if start > end:
                raise CronError(f"the {field} field has the range {body}: it runs backwards")
        else:
            start = _value(body, low, high, names, field)
            end = high if slash else start
        values.update(range(start, end + 1, step))
    return frozenset(values)


@dataclass(frozen=True, slots=True)
class Cron:
    """A parsed cron expression; :meth:`next_after` gives its ticks."""

    expression: str
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    any_day: bool
    any_weekday: bool
    #: The hour field is ``*``: a repeated wall-clock hour runs twice (real time).
    every_hour: bool

    @classmethod
    def parse(cls, expression: str) -> Cron:
        """Raises:
        CronError: the expression is not 5 fields (or a macro), or a field is bad."""
        if not isinstance(expression, str):
            raise CronError(f"a cron expression is a str, got {type(expression).__name__}")
        text = _MACROS.get(expression.strip().lower(), expression)
        parts = text.split()
        if len(parts) != 5:
            raise CronError(
                f"{expression!r} has {len(parts)} fields; a cron expression has 5: minute hour "
                "day-of-month month day-of-week (for example '0 3 * * *', daily at 03:00)"
            )
        fields = [
            _field(part, low, high, names, name)
            for part, (name, low, high, names) in zip(parts, _FIELDS, strict=True)
        ]
        weekdays = frozenset(d % 7 for d in fields[4])
        return cls(
            expression=expression,
            minutes=tuple(sorted(fields[0])),
            hours=tuple(sorted(fields[1])),
            days=fields[2],
            months=fields[3],
            weekdays=weekdays,
            any_day=parts[2].startswith("*"),
            any_weekday=parts[4].startswith("*"),
            every_hour=parts[1] == "*",
        )

    def _day_matches(self, day: dt.date) -> bool:
        if day.month not in self.months:
            return False
        in_month = day.day in self.days
        in_week = (day.isoweekday() % 7) in self.weekdays
        if self.any_day and self.any_weekday:
            return True
        if self.any_day:
            return in_week
        if self.any_weekday:
            return in_month
        return in_month or in_week  # both restricted: either (Vixie cron)

    def _instants(self, wall: dt.datetime, tz: ZoneInfo) -> list[dt.datetime]:
        """The instants of the wall-clock time ``wall`` (naive) in ``tz``."""
        first = wall.replace(tzinfo=tz, fold=0).astimezone(_UTC)
        second = wall.replace(tzinfo=tz, fold=1).astimezone(_UTC)
        if first == second:
            return [first]
        if first < second:  # repeated (autumn): once, or twice for an every-hour expression
            return [first, second] if self.every_hour else [first]
        # Skipped (spring): fold=0 reads it with the offset before the change, an instant
        # as much later as the clocks moved.
        return [first]

    def next_after(self, after: dt.datetime, tz: ZoneInfo) -> dt.datetime | None:
        """The first tick strictly after the aware instant ``after`` (in UTC), or ``None``
        when the expression matches no day within the next eight years."""
        if after.tzinfo is None:
            raise ValueError("next_after() takes an aware datetime")
        after = after.astimezone(_UTC)
        # Start a little before, in wall-clock time: a skipped or repeated hour can put the
        # instants of an earlier wall-clock time after ``after``.
        start = (after.astimezone(tz) - dt.timedelta(hours=3)).replace(
            tzinfo=None, second=0, microsecond=0
        )
        day = start.date()
        for _ in range(_HORIZON_DAYS):
            if self._day_matches(day):
                found: list[dt.datetime] = []
                first_hour = None
                for hour in self.hours:
                    # A later wall-clock hour can map to an earlier instant only across a
                    # change of the clocks, and no change moves them by 3 hours.
                    if first_hour is not None and hour >= first_hour + 3:
                        break
                    for minute in self.minutes:
                        wall = dt.datetime(day.year, day.month, day.day, hour, minute)
                        if wall < start:
                            continue
                        instants = [i for i in self._instants(wall, tz) if i > after]
                        if instants and first_hour is None:
                            first_hour = hour
                        found += instants
                if found:
                    return min(found)
            day += dt.timedelta(days=1)
        return None
