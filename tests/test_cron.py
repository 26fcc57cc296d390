"""Cron expressions and their ticks: the fields, the errors, a brute-force oracle, and the
changes of daylight saving time in both directions (computed, not waited for)."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiotaskq.cron import Cron, CronError

UTC = dt.UTC
RIGA = ZoneInfo("Europe/Riga")  # spring: 03:00 -> 04:00; autumn: 04:00 -> 03:00
NEW_YORK = ZoneInfo("America/New_York")  # spring: 02:00 -> 03:00; autumn: 02:00 -> 01:00


def _ticks(expression: str, start: dt.datetime, n: int, tz: ZoneInfo) -> list[str]:
    cron, out, t = Cron.parse(expression), [], start
    for _ in range(n):
        nxt = cron.next_after(t, tz)
        assert nxt is not None
        assert nxt > t
        out.append(nxt.astimezone(tz).isoformat())
        t = nxt
    return out


def test_a_daily_run_is_neither_skipped_nor_doubled_when_the_clocks_go_forward() -> None:
    start = dt.datetime(2026, 3, 27, 12, tzinfo=UTC)
    assert _ticks("30 3 * * *", start, 4, RIGA) == [
        "2026-03-28T03:30:00+02:00",
        "2026-03-29T04:30:00+03:00",  # 03:30 does not exist that day: as much later
        "2026-03-30T03:30:00+03:00",
        "2026-03-31T03:30:00+03:00",
    ]
    assert _ticks("30 2 * * *", dt.datetime(2026, 3, 7, 12, tzinfo=UTC), 2, NEW_YORK) == [
        "2026-03-08T03:30:00-04:00",
        "2026-03-09T02:30:00-04:00",
    ]


def test_a_daily_run_is_neither_skipped_nor_doubled_when_the_clocks_go_back() -> None:
    start = dt.datetime(2026, 10, 23, 12, tzinfo=UTC)
    assert _ticks("30 3 * * *", start, 3, RIGA) == [
        "2026-10-24T03:30:00+03:00",
        "2026-10-25T03:30:00+03:00",  # 03:30 happens twice: the first only
        "2026-10-26T03:30:00+02:00",
    ]
    assert _ticks("30 1 * * *", dt.datetime(2026, 10, 31, 12, tzinfo=UTC), 2, NEW_YORK) == [
        "2026-11-01T01:30:00-04:00",
        "2026-11-02T01:30:00-05:00",
    ]


def test_an_hourly_run_follows_real_time_across_both_changes() -> None:
    spring = _ticks("0 * * * *", dt.datetime(2026, 3, 28, 23, tzinfo=UTC), 3, RIGA)
    assert spring == [
        "2026-03-29T02:00:00+02:00",
        "2026-03-29T04:00:00+03:00",  # one real hour later: there is no 03:00
        "2026-03-29T05:00:00+03:00",
    ]
    autumn = _ticks("30 * * * *", dt.datetime(2026, 10, 24, 23, tzinfo=UTC), 4, RIGA)
    assert autumn == [
        "2026-10-25T02:30:00+03:00",
        "2026-10-25T03:30:00+03:00",
        "2026-10-25T03:30:00+02:00",  # the repeated hour runs too
        "2026-10-25T04:30:00+02:00",
    ]


def test_fields_names_steps_lists_and_macros() -> None:
    cron = Cron.parse("*/15 9-17/4 1,15 jan-mar mon-fri")
    assert cron.minutes == (0, 15, 30, 45)
    assert cron.hours == (9, 13, 17)
    assert cron.days == {1, 15}
    assert cron.months == {1, 2, 3}
    assert cron.weekdays == {1, 2, 3, 4, 5}
    assert Cron.parse("0 0 * * 7").weekdays == {0}  # 7 is Sunday too
    assert Cron.parse("@daily").hours == (0,)
    assert Cron.parse("5/20 * * * *").minutes == (5, 25, 45)


def test_day_of_month_or_day_of_week_when_both_are_given() -> None:
    # The 13th, or any Friday (Vixie cron): from Thursday 2026-02-12.
    start = dt.datetime(2026, 2, 12, 12, tzinfo=UTC)
    assert _ticks("0 0 13 * fri", start, 3, ZoneInfo("UTC")) == [
        "2026-02-13T00:00:00+00:00",  # a Friday the 13th: once
        "2026-02-20T00:00:00+00:00",
        "2026-02-27T00:00:00+00:00",
    ]


def test_an_expression_that_never_matches_has_no_tick() -> None:
    assert Cron.parse("0 0 30 2 *").next_after(dt.datetime(2026, 1, 1, tzinfo=UTC), RIGA) is None
    leap = _ticks("0 0 29 2 *", dt.datetime(2026, 1, 1, tzinfo=UTC), 1, ZoneInfo("UTC"))
    assert leap == ["2028-02-29T00:00:00+00:00"]


@pytest.mark.parametrize(
    ("expression", "words"),
    [
        ("0 3 * *", "has 4 fields; a cron expression has 5"),
        ("60 * * * *", "minute field has 60: it must be from 0 to 59"),
        ("* 24 * * *", "hour field has 24"),
        ("* * 0 * *", "day of month field has 0: it must be from 1 to 31"),
        ("* * * 13 *", "month field has 13"),
        ("* * * * 8", "day of week field has 8"),
        ("*/0 * * * *", "step '0'"),
        ("5-1 * * * *", "runs backwards"),
        ("1,,2 * * * *", "empty entry"),
        ("* * * foo *", "expected a number or a name (jan"),
        ("", "has 0 fields"),
    ],
)
def test_bad_expressions_say_what_is_wrong(expression: str, words: str) -> None:
    with pytest.raises(CronError, match=words.replace("(", r"\(")):
        Cron.parse(expression)


_FIELD = st.one_of(
    st.just("*"),
    st.builds(lambda n: f"*/{n}", st.integers(1, 20)),
    st.builds(lambda a, b: f"{min(a, b)}-{max(a, b)}", st.integers(0, 9), st.integers(0, 9)),
    st.lists(st.integers(0, 9), min_size=1, max_size=3).map(lambda xs: ",".join(map(str, xs))),
)


def _matches(cron: Cron, t: dt.datetime) -> bool:
    return t.minute in cron.minutes and t.hour in cron.hours and cron._day_matches(t.date())


@given(
    minute=_FIELD,
    hour=_FIELD,
    day=st.sampled_from(["*", "1-10", "*/3", "5,20"]),
    weekday=st.sampled_from(["*", "1-5", "0", "6,0"]),
    start=st.datetimes(min_value=dt.datetime(2020, 1, 1), max_value=dt.datetime(2030, 1, 1)),
)
@settings(max_examples=150, deadline=None)
def test_next_after_is_the_first_matching_minute_in_utc(
    minute: str, hour: str, day: str, weekday: str, start: dt.datetime
) -> None:
    cron = Cron.parse(f"{minute} {hour} {day} * {weekday}")
    after = start.replace(tzinfo=UTC)
    got = cron.next_after(after, ZoneInfo("UTC"))
    assert got is not None
    # Every minute between is not a tick; the tick itself matches.
    t = after.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
    while t < got:
        assert not _matches(cron, t), t
        t += dt.timedelta(minutes=1)
        if t - after > dt.timedelta(days=40):
            break  # the oracle gives up on sparse expressions; the tick still matches
    assert _matches(cron, got)
    assert got > after
