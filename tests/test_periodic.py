"""Periodic tasks: one run per tick however many workers, catch-up after a downtime, overlap,
pause, what a run knows of its tick, ``aiotaskq schedules``, and the options' errors. The due
ticks of each ``catch_up`` are computed here against fixed clocks; the daylight-saving cases
of cron expressions are in tests/test_cron.py."""

from __future__ import annotations

import datetime as dt
import json
import signal
import time
from collections import Counter
from typing import Any

import pytest

from aiotaskq import ConfigurationError, periodic, task
from aiotaskq.tasks import periodic as periodic_module
from aiotaskq.tasks.periodic import MAX_CATCH_UP, Schedule
from tests.conftest import run_cli, wait_for

UTC = dt.UTC


def _ticks(db: Any, label: str) -> list[dt.datetime]:
    rows = db.execute(
        "SELECT value #>> '{}' FROM testapp_execution WHERE label = %s ORDER BY id", (label,)
    ).fetchall()
    return [dt.datetime.fromisoformat(r[0]) for r in rows]


def _env(module: str) -> dict[str, str]:
    return {"AIOTASKQ_TEST_IMPORTS": f"tests.periodic.{module}"}


# --- one run per tick ----------------------------------------------------------------------


def test_three_workers_run_each_tick_once(worker: Any, db: Any) -> None:
    procs = [worker(env=_env("ticks")) for _ in range(3)]
    wait_for(lambda: len(_ticks(db, "tick")) >= 9, timeout=60, what="nine ticks")
    for proc in procs:
        proc.signal(signal.SIGTERM)
    for proc in procs:
        assert proc.wait(30) == 0
    ticks = _ticks(db, "tick")
    counts = Counter(ticks)
    assert all(n == 1 for n in counts.values()), counts.most_common(3)
    # Each run knew its tick: whole seconds, and every second from the first to the last
    # ran, none twice and none left out.
    ordered = sorted(ticks)
    assert all(t.microsecond == 0 for t in ordered)
    assert ordered == [ordered[0] + dt.timedelta(seconds=k) for k in range(len(ordered))]
    # Every worker tried each tick; each tick was enqueued by the one that moved it on.
    enqueued = sum(p.log().count("schedule.enqueued") for p in procs)
    # (one or two last ticks may have been enqueued as the workers stopped, and not run)
    assert len(ordered) <= enqueued <= len(ordered) + 2, (enqueued, len(ordered))


def test_a_schedule_seen_for_the_first_time_starts_at_its_next_tick(worker: Any, db: Any) -> None:
    started = dt.datetime.now(UTC)
    worker(env=_env("ticks"))
    (first,) = wait_for(lambda: _ticks(db, "tick")[:1], what="the first tick")
    assert first >= started.replace(microsecond=0)


# --- catch-up --------------------------------------------------------------------------------


def test_after_a_downtime_all_runs_every_missed_tick_and_latest_one(worker: Any, db: Any) -> None:
    # As a worker that stopped 10.5 s ago would have left the schedules.
    (last,) = db.execute(
        "INSERT INTO aiotaskq_schedule (name, task, last_tick, paused, updated_at) "
        "SELECT name, name, date_trunc('second', now()) - interval '10.5 seconds', false, now() "
        "FROM unnest(%s::text[]) AS name RETURNING last_tick",
        (
            [
                "tests.periodic.catch_up.catch_up_all",
                "tests.periodic.catch_up.catch_up_latest",
                "catch-up-none",
            ],
        ),
    ).fetchone()
    first_missed = last + dt.timedelta(seconds=0.5)
    worker(env=_env("catch_up"))
    wait_for(
        lambda: all(len(_ticks(db, label)) >= 2 for label in ("all", "latest", "none")),
        what="the runs after the downtime",
    )

    # The missed ticks run at once side by side and record themselves in any order: read
    # them once the eleven are there and no run is half recorded (a tick never run keeps
    # the gap, and this wait fails).
    def contiguous() -> bool:
        ticks = sorted(_ticks(db, "all"))
        whole = [first_missed + dt.timedelta(seconds=k) for k in range(len(ticks))]
        return len(ticks) >= 11 and ticks == whole

    wait_for(contiguous, what=f"every tick of catch_up='all' from {first_missed}, once each")
    runs = {label: sorted(_ticks(db, label)) for label in ("all", "latest", "none")}
    # "all": every tick from the first missed one on, once each, none left out.
    expected = [first_missed + dt.timedelta(seconds=k) for k in range(len(runs["all"]))]
    assert runs["all"] == expected, runs
    # "latest": of the missed ticks only the most recent ones ran (those of the last 3 s,
    # which a look once a second may find late): the first seven at least did not.
    for label in ("latest", "none"):  # "none" drops only ticks older than a minute
        assert runs[label][0] >= first_missed + dt.timedelta(seconds=7), runs
        assert len(set(runs[label])) == len(runs[label])


def _schedule(**options: Any) -> Schedule:
    base: dict[str, Any] = {
        "name": "s",
        "task": task(lambda: None, name=f"tests.periodic_unit.{len(options)}.{time.time_ns()}"),
        "cron": None,
        "every": 60.0,
        "tz": dt.UTC,
        "catch_up": "latest",
    }
    base.update(options)
    if base["tz"] is dt.UTC:
        from zoneinfo import ZoneInfo

        base["tz"] = ZoneInfo("UTC")
    return Schedule(**base)


def test_the_due_ticks_of_each_catch_up() -> None:
    last = dt.datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
    now = dt.datetime(2026, 12, 1, 10, 5, 30, tzinfo=UTC)  # five ticks missed, the last 30 s ago
    expected = [last + dt.timedelta(minutes=k) for k in range(1, 6)]
    assert _schedule(catch_up="all").due(last, now) == expected
    # Ticks of the last 3 s all run, whatever catch_up says (a look found them late).
    busy = _schedule(every=1.0).due(now - dt.timedelta(seconds=10), now)
    assert busy == [now - dt.timedelta(seconds=k) for k in (3, 2, 1, 0)]
    assert _schedule(catch_up="latest").due(last, now) == expected[-1:]
    assert _schedule(catch_up="none").due(last, now) == expected[-1:]  # 30 s late: on time
    # Every 10 min, the latest tick 75 s old when a worker first sees it: missed for "none".
    later = last + dt.timedelta(minutes=11, seconds=15)
    ten = last + dt.timedelta(minutes=10)
    assert _schedule(every=600.0, catch_up="none").due(last, later) == []
    assert _schedule(every=600.0, catch_up="latest").due(last, later) == [ten]
    assert _schedule().due(now, now) == []
    # A week down at every=1: "all" is bounded, the newest kept.
    week = last + dt.timedelta(days=7)
    ticks = _schedule(every=1.0, catch_up="all").due(last, week)
    assert len(ticks) == MAX_CATCH_UP
    assert ticks[-1] == week


def test_the_due_ticks_of_a_cron_schedule() -> None:
    from aiotaskq.cron import Cron

    daily = _schedule(cron=Cron.parse("0 3 * * *"), every=None, catch_up="all")
    last = dt.datetime(2026, 11, 28, 3, 0, tzinfo=UTC)
    now = dt.datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    assert daily.due(last, now) == [dt.datetime(2026, 11, d, 3, tzinfo=UTC) for d in (29, 30)] + [
        dt.datetime(2026, 12, 1, 3, tzinfo=UTC)
    ]
    latest = _schedule(cron=Cron.parse("0 3 * * *"), every=None)
    assert latest.due(last, now) == [dt.datetime(2026, 12, 1, 3, tzinfo=UTC)]
    # A yearly schedule down for three years: its latest tick is found beyond two days back.
    yearly = _schedule(cron=Cron.parse("@yearly"), every=None)
    assert yearly.due(dt.datetime(2023, 6, 1, tzinfo=UTC), now) == [
        dt.datetime(2026, 1, 1, tzinfo=UTC)
    ]


# --- overlap, pause, the listing ---------------------------------------------------------------


def test_overlap_skip_drops_the_ticks_that_come_while_a_run_goes(worker: Any, db: Any) -> None:
    proc = worker(env=_env("overlap"))
    wait_for(lambda: len(_ticks(db, "slow")) >= 2, timeout=30, what="two runs")
    ticks = _ticks(db, "slow")
    # A run takes 2.5 s: the ticks of its second and third second are skipped.
    assert (ticks[1] - ticks[0]).total_seconds() >= 3, ticks
    assert "schedule.skipped" in proc.log()


def test_a_paused_schedule_enqueues_nothing(worker: Any, db: Any) -> None:
    """Of the three schedules of tests/periodic/catch_up.py, "all" is paused: the worker's
    looks at the others (which run) are looks at it too."""
    db.execute(
        "INSERT INTO aiotaskq_schedule (name, task, last_tick, paused, updated_at) "
        "VALUES ('tests.periodic.catch_up.catch_up_all', 'tests.periodic.catch_up.catch_up_all',"
        " now(), true, now())"
    )
    proc = worker(env=_env("catch_up"))
    wait_for(lambda: len(_ticks(db, "latest")) >= 3, what="three ticks of the others")
    assert _ticks(db, "all") == []
    # Resumed as the admin resumes: from the next tick, the paused ones not caught up.
    (resumed,) = db.execute(
        "UPDATE aiotaskq_schedule SET paused = false, last_tick = now() "
        "WHERE name = 'tests.periodic.catch_up.catch_up_all' RETURNING last_tick"
    ).fetchone()
    ran = wait_for(lambda: _ticks(db, "all"), what="a tick once resumed")
    assert min(ran) > resumed
    proc.signal(signal.SIGTERM)


def test_schedules_lists_every_schedule(worker: Any, db: Any) -> None:
    out = run_cli("schedules", "--json", env=_env("overlap"))
    listed = {s["name"]: s for s in json.loads(out.stdout)["schedules"]}
    nightly = listed["nightly"]
    assert nightly["task"] == "tests.periodic.overlap.nightly_report"
    assert nightly["cron"] == "0 3 * * *"
    assert nightly["tz"] == "Europe/Riga"
    assert nightly["every"] is None
    assert nightly["last_run"] is None
    next_run = dt.datetime.fromisoformat(nightly["next_run"])
    assert next_run.utcoffset() in (dt.timedelta(hours=2), dt.timedelta(hours=3))
    assert (next_run.hour, next_run.minute) in ((3, 0), (4, 0))  # 04:00 on a spring-forward day
    assert listed["tests.periodic.overlap.slow_tick"]["every"] == 1.0
    worker(env=_env("overlap"))
    wait_for(lambda: _ticks(db, "slow"), what="a run")
    again = json.loads(run_cli("schedules", "--json", env=_env("overlap")).stdout)
    slow = {s["name"]: s for s in again["schedules"]}["tests.periodic.overlap.slow_tick"]
    assert slow["last_run"] is not None
    text = run_cli("schedules", env=_env("overlap")).stdout
    assert "cron 0 3 * * * (Europe/Riga)" in text
    assert "every 1 s" in text


# --- the options' errors ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({}, "give exactly one of cron= and every="),
        ({"cron": "0 3 * * *", "every": 60}, "give exactly one of cron= and every="),
        ({"cron": "0 25 * * *"}, "hour field has 25"),
        ({"cron": "0 3 * * *", "tz": "Mars/Olympus"}, "tz 'Mars/Olympus' is not a time zone"),
        ({"every": 0.5}, "every= must be at least 1 second"),
        ({"every": dt.timedelta(0)}, "every= must be at least 1 second"),
        ({"every": 60, "catch_up": "some"}, 'catch_up must be "latest", "all" or "none"'),
        ({"every": 60, "overlap": "wait"}, 'overlap must be "queue" or "skip"'),
        ({"every": 60, "kwargs": {"at": object()}}, "args and kwargs must be JSON"),
    ],
)
def test_bad_options_name_the_schedule(options: dict[str, Any], words: str) -> None:
    @task(name=f"tests.periodic_bad.{time.time_ns()}")
    def job(**kwargs: Any) -> None: ...

    with pytest.raises(ConfigurationError, match=words.replace("(", r"\(")) as info:
        periodic(**options)(job)
    assert job.name in str(info.value)


def test_periodic_goes_above_task_and_names_are_its_own() -> None:
    with pytest.raises(ConfigurationError, match="@periodic goes above @task"):
        periodic(every=60)(lambda: None)  # type: ignore[arg-type]

    @task(name=f"tests.periodic_names.a.{time.time_ns()}")
    def first() -> None: ...

    @task(name=f"tests.periodic_names.b.{time.time_ns()}")
    def second() -> None: ...

    name = f"shared-{time.time_ns()}"
    periodic(every=60, name=name)(first)
    with pytest.raises(ConfigurationError, match="already used by"):
        periodic(every=60, name=name)(second)
    periodic_module._schedules.pop(name)


# --- the admin's Schedules view ------------------------------------------------------------


def test_the_admin_lists_pauses_resumes_and_runs_a_schedule(db: Any) -> None:
    from django.contrib.auth.models import User
    from django.test import Client

    db.execute("TRUNCATE auth_user, django_session, django_admin_log CASCADE")
    name = f"tests.periodic_admin.{time.time_ns()}"

    @task(name=name)
    def report(region: str) -> None: ...

    periodic(every=3600, kwargs={"region": "eu"}, name="hourly-report")(report)
    try:
        db.execute(
            "INSERT INTO aiotaskq_schedule (name, task, last_tick, last_run, paused, updated_at) "
            "VALUES ('hourly-report', %s, now(), '2026-12-01 10:00+00', false, now()), "
            "('gone', 'old.task', now(), NULL, false, now())",
            (name,),
        )
        client = Client()
        client.force_login(User.objects.create_superuser("root-admin"))
        page = client.get("/admin/aiotaskq/schedule/").content.decode()
        assert "every 3600 s" in page
        assert "2026-12-01 10:00:00" in page
        assert "not in the code any more" in page  # the row of a schedule removed from code

        def act(action: str, *names: str) -> None:
            response = client.post(
                "/admin/aiotaskq/schedule/",
                {"action": action, "_selected_action": list(names)},
            )
            assert response.status_code == 302, response.content.decode()[:500]

        act("pause", "hourly-report")
        assert db.execute(
            "SELECT paused FROM aiotaskq_schedule WHERE name = 'hourly-report'"
        ).fetchone() == (True,)
        act("resume", "hourly-report")
        assert db.execute(
            "SELECT paused FROM aiotaskq_schedule WHERE name = 'hourly-report'"
        ).fetchone() == (False,)
        act("run_now", "hourly-report", "gone")
        rows = db.execute("SELECT name, kwargs FROM aiotaskq_task").fetchall()
        assert rows == [(name, {"region": "eu"})]
        # Who may only view sees the schedules and no action.
        from django.contrib.auth.models import Permission

        viewer = User.objects.create_user("viewer", is_staff=True)
        viewer.user_permissions.add(Permission.objects.get(codename="view_schedule"))
        looking = Client()
        looking.force_login(viewer)
        page = looking.get("/admin/aiotaskq/schedule/").content.decode()
        assert "hourly-report" in page
        assert 'value="pause"' not in page
    finally:
        periodic_module._schedules.pop("hourly-report", None)
