"""Lanes: queue caps in one worker (``--queues critical:10,exports:2``), ``AIOTASKQ["QUEUES"]``,
and the 3 AM story: slow exports never hold the slots or threads a critical task needs."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import re
from collections.abc import Iterator
from typing import Any

import django
import pytest
from django.test import override_settings
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import aiotaskq
from aiotaskq import errors
from aiotaskq.cli import OneLineErrors, add_commands, explain
from aiotaskq.conf import get_settings
from aiotaskq.worker import Worker, WorkerConfig
from aiotaskq.worker.lanes import Lane, Slots, fair_share, plan_lanes
from tests.app import tasks
from tests.conftest import executions, run_cli, wait_for

QUEUES = {
    "critical": {"concurrency": 10, "time_limit": 30},
    "exports": {"concurrency": 2, "time_limit": 1800, "threads": 2},
}


# --- The slot arithmetic ------------------------------------------------------------------


def test_caps_are_reserved_and_the_rest_is_shared() -> None:
    plan = plan_lanes(
        ["critical", "exports", "default", "webhooks"], {"critical": 10, "exports": 2}, 100
    )
    assert plan.lanes == (
        Lane(("critical",), 10, capped=True),
        Lane(("exports",), 2, capped=True),
        Lane(("default", "webhooks"), 88, capped=False),
    )
    assert plan.capacity == 100
    assert str(plan) == "critical:10, exports:2, default,webhooks (sharing 88)"


def test_no_caps_is_one_lane_as_before() -> None:
    plan = plan_lanes(["a", "b"], {}, 50)
    assert plan.lanes == (Lane(("a", "b"), 50, capped=False),)
    assert str(plan) == "a,b"


def test_all_capped_leaves_the_rest_unused() -> None:
    plan = plan_lanes(["critical", "exports"], {"critical": 10, "exports": 2}, 100)
    assert plan.capacity == 12
    assert plan.describe(100) == "critical:10, exports:2 (88 of 100 unused)"


@pytest.mark.parametrize(
    ("queues", "caps", "concurrency", "words"),
    [
        (["critical", "exports"], {"critical": 10, "exports": 2}, 11, "add up to 12, more than"),
        (
            ["critical", "default"],
            {"critical": 10},
            10,
            "all of the concurrency of 10; the uncapped default",
        ),
        (
            ["critical"],
            {"critical": 0},
            10,
            "must be a positive integer (at most 1,000,000), got 0",
        ),
        (
            ["critical"],
            {"exports": 2},
            10,
            "caps are given for 'exports', which this worker does not serve",
        ),
    ],
)
def test_caps_that_do_not_fit_are_refused(
    queues: list[str], caps: dict[str, int], concurrency: int, words: str
) -> None:
    with pytest.raises(errors.InvalidWorkerOptions, match=re.escape(words)) as info:
        plan_lanes(queues, caps, concurrency)
    assert "\n" not in str(info.value)


def test_caps_exactly_filling_concurrency_are_fine_without_uncapped_queues() -> None:
    assert plan_lanes(["a", "b"], {"a": 3, "b": 7}, 10).capacity == 10


def test_a_finished_task_frees_its_own_lane() -> None:
    slots = Slots(plan_lanes(["critical", "exports", "default"], {"critical": 3, "exports": 2}, 10))
    for queue in ("exports", "exports", "critical", "default", "default"):
        slots.take(queue)
    assert slots.demands(budget=100) == [2, 0, 3]
    slots.free_one("exports")
    assert slots.demands(budget=100) == [2, 1, 3]
    slots.free_one("default")
    assert slots.demands(budget=100) == [2, 1, 4]


def test_backpressure_shares_what_is_left_fairly() -> None:
    slots = Slots(
        plan_lanes(["critical", "exports", "default"], {"critical": 10, "exports": 2}, 100)
    )
    # Outcomes not yet written leave 7 slots of the worker: no lane is left out.
    assert slots.demands(budget=7) == [3, 2, 2]
    assert slots.demands(budget=3) == [1, 1, 1]
    assert slots.demands(budget=0) == [0, 0, 0]


@given(st.lists(st.integers(0, 500), max_size=8), st.integers(-5, 2000))
def test_fair_share_never_gives_more_than_wanted_or_the_budget(
    wants: list[int], budget: int
) -> None:
    given_ = fair_share(wants, budget)
    assert all(0 <= g <= w for g, w in zip(given_, wants, strict=True))
    assert sum(given_) == min(sum(wants), max(budget, 0))
    # No lane that wants slots starves while another gets more than one more than it.
    hungry = [g for g, w in zip(given_, wants, strict=True) if g < w]
    if hungry:
        assert max(given_) <= min(hungry) + 1


def test_refill_follows_the_lanes() -> None:
    plan = plan_lanes(["q1", "q2", "q3", "q4"], {"q1": 25, "q2": 25, "q3": 25, "q4": 25}, 100)
    # Four lanes together claim as often as one queue of 100 slots would ...
    assert plan.refill == plan_lanes(["q"], {}, 100).refill == 5
    # ... and one lane alone once half its slots are free.
    assert Lane(("e",), 2, capped=True).refill == 1
    assert Lane(("c",), 10, capped=True).refill == 5
    assert Lane(("d",), 1, capped=True).refill == 1


# --- AIOTASKQ["QUEUES"] -------------------------------------------------------------------


def test_queues_setting_is_typed() -> None:
    with override_settings(AIOTASKQ={"QUEUES": QUEUES}):
        queues = get_settings().QUEUES
        assert queues["exports"].concurrency == 2
        assert queues["exports"].threads == 2
        assert queues["exports"].time_limit == 1800.0
        assert queues["critical"].threads is None
        plan = plan_lanes(["critical", "exports", "default"], {"critical": 8}, 20)
        # The command line's cap wins over the setting's.
        assert str(plan) == "critical:8, exports:2, default (sharing 10)"
        assert plan.time_limits == {"critical": 30.0, "exports": 1800.0}
        assert plan.threads == {"exports": 2}


@pytest.mark.parametrize(
    ("queues", "words"),
    [
        (
            {"exports": {"concurency": 2}},
            "Unknown key 'concurency' in AIOTASKQ[\"QUEUES\"]['exports']",
        ),
        ({"exports": {"concurrency": 0}}, "['exports']['concurrency'] must be a positive integer"),
        ({"exports": {"concurrency": 2.5}}, "must be a positive integer"),
        ({"exports": {"concurrency": True}}, "must be a positive integer"),
        ({"exports": {"threads": -1}}, "['exports']['threads'] must be a positive integer"),
        ({"exports": {"time_limit": 0}}, "['exports']['time_limit'] must be a positive number"),
        ({"exports": {"time_limit": math.inf}}, "must be a positive number of seconds"),
        ({"exports": {"time_limit": "30"}}, "must be a positive number of seconds"),
        ({"exp orts": {}}, "bad queue name"),
        ({"exports": 2}, "['exports'] must be a dict"),
        (["exports"], 'AIOTASKQ["QUEUES"] must be a dict'),
    ],
)
def test_bad_queues_setting_is_a_configuration_error(queues: Any, words: str) -> None:
    with (
        override_settings(AIOTASKQ={"QUEUES": queues}),
        pytest.raises(errors.ConfigurationError) as info,
    ):
        get_settings()
    assert words in str(info.value)


def test_a_worker_of_a_queue_not_in_queues_is_refused() -> None:
    with override_settings(AIOTASKQ={"QUEUES": QUEUES}):
        with pytest.raises(errors.InvalidWorkerOptions, match="'emials' is not in") as info:
            Worker(WorkerConfig(queues=("critical", "emials")))
        assert "known: critical, default, exports" in str(info.value)
        # The default queue is always known.
        Worker(WorkerConfig(queues=("critical", "default")))


def test_the_budget_counts_the_threads_of_each_queue() -> None:
    with override_settings(AIOTASKQ={"QUEUES": QUEUES}):
        worker = Worker(WorkerConfig(queues=("critical", "exports"), threads=4, db_threads=2))
        assert worker.budget.threads == 4 + 2
        # Only queues with threads of their own: the shared pool serves no one.
        only = Worker(WorkerConfig(queues=("exports",), threads=4, db_threads=2))
        assert only.budget.threads == 2


# --- InvalidQueueName at enqueue when QUEUES is set ------------------------------------------


@pytest.fixture
def known_queues() -> Iterator[None]:
    with override_settings(AIOTASKQ={"QUEUES": QUEUES}):
        yield


def _count(db: Any) -> int:
    return int(db.execute("SELECT count(*) FROM aiotaskq_task").fetchone()[0])


def test_a_queue_not_in_queues_is_refused_at_enqueue(known_queues: None, db: Any) -> None:
    with pytest.raises(errors.InvalidQueueName) as info:
        tasks.record.apply_async(("x",), queue="criticl")
    message = str(info.value)
    assert "'criticl' is not in AIOTASKQ[\"QUEUES\"]" in message
    assert "the known queues are critical, default, exports" in message
    assert 'Did you mean "critical"?' in message
    with pytest.raises(errors.InvalidQueueName):
        aiotaskq.enqueue_many([tasks.record.s("a"), tasks.record.s("b").set(queue="emials")])
    assert _count(db) == 0
    # The known ones, and the default queue, are accepted.
    tasks.record.apply_async(("x",), queue="critical")
    tasks.record.delay("default")
    tasks.export_csv.delay("e", 0)
    assert _count(db) == 3


async def test_a_queue_not_in_queues_is_refused_at_async_enqueue(
    known_queues: None, db: Any
) -> None:
    with pytest.raises(errors.InvalidQueueName, match="'emials' is not in"):
        await tasks.record.aapply_async(("x",), queue="emials")
    with pytest.raises(errors.InvalidQueueName):
        await aiotaskq.aenqueue_many([tasks.record.s("x").set(queue="emials")] * 300)
    assert _count(db) == 0


def test_without_queues_any_valid_name_is_accepted(db: Any) -> None:
    tasks.record.apply_async(("x",), queue="anything-goes")
    assert _count(db) == 1


@pytest.mark.skipif(django.VERSION < (6, 0), reason="Django's tasks framework")
def test_the_django_tasks_backend_refuses_it_too(known_queues: None, db: Any) -> None:
    from tests.app import django_tasks

    # "other" is in the backend's own QUEUES, not in AIOTASKQ["QUEUES"].
    with pytest.raises(errors.InvalidQueueName, match="'other' is not in"):
        django_tasks.dj_add.using(queue_name="other").enqueue(1, 2)
    assert _count(db) == 0


# --- The --queues parser and the QUEUES setting: any input, one clear line ----------------


def _parse(value: str) -> tuple[argparse.Namespace | None, str]:
    parser = OneLineErrors(prog="aiotaskq")
    add_commands(parser)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            return parser.parse_args(["run", "--queues", value]), ""
        except SystemExit as exit_:
            code = exit_.code
    assert code == 2
    return None, err.getvalue()


def test_queues_option_parses_caps() -> None:
    options, _ = _parse("critical:10, exports:2,default")
    assert options is not None
    assert options.queues == [("critical", 10), ("exports", 2), ("default", None)]


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("critical:0", "the cap in 'critical:0' must be a positive integer"),
        ("critical:-1", "must be a positive integer"),
        ("critical:", "must be a positive integer"),
        ("critical:1e3", "must be a positive integer"),
        ("critical:99999999999999999999", "must be a positive integer"),
        ("a:1,a:2", "names a more than once"),
        ("bad name:2", "may contain only letters"),
        ("a,,b", "has an empty entry"),
    ],
)
def test_queues_option_refuses_bad_entries(value: str, words: str) -> None:
    options, err = _parse(value)
    assert options is None
    assert words in err
    assert err.count("\n") == 1


ENTRY_TEXT = st.text(
    alphabet=st.sampled_from("ab_-.:,0123456789 \x00\t\n\u00e9\ud800-+"), max_size=30
)
ENTRIES = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "critical", "exports", "x" * 70, "", "é", "a\x00"]),
        st.none() | st.integers(-(10**30), 10**30).map(str) | st.text(max_size=5),
    ),
    max_size=5,
).map(lambda items: ",".join(q if c is None else f"{q}:{c}" for q, c in items))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=ENTRY_TEXT | ENTRIES, concurrency=st.integers(1, 200))
def test_any_queues_option_is_accepted_or_one_clear_line(value: str, concurrency: int) -> None:
    options, err = _parse(value)
    if options is None:
        assert err.startswith("aiotaskq run: error: argument --queues: ")
        assert err.count("\n") == 1
        return
    names = [name for name, _ in options.queues]
    caps = {name: cap for name, cap in options.queues if cap is not None}
    try:
        plan = plan_lanes(names, caps, concurrency)
    except errors.InvalidWorkerOptions as exc:
        line = explain(exc)
        assert line is not None
        assert "\n" not in line
        return
    assert plan.capacity <= concurrency
    assert sorted(q for lane in plan.lanes for q in lane.queues) == sorted(names)


OPTION_VALUES = (
    st.none()
    | st.booleans()
    | st.integers(-(10**6), 10**6)
    | st.integers(min_value=10**4000, max_value=10**4500)
    | st.floats()
    | st.text(max_size=5)
    | st.lists(st.integers(), max_size=2)
)
QUEUES_SETTINGS = (
    st.dictionaries(
        st.text(max_size=8) | st.integers() | st.sampled_from(["critical", "exports"]),
        st.dictionaries(
            st.sampled_from(["concurrency", "time_limit", "threads"]) | st.text(max_size=6),
            OPTION_VALUES,
            max_size=3,
        )
        | OPTION_VALUES,
        max_size=3,
    )
    | OPTION_VALUES
)


@settings(max_examples=300, deadline=None)
@given(QUEUES_SETTINGS)
# An int past a float's range (math.isfinite raised OverflowError on it).
@example({"q": {"time_limit": 10**400}})
def test_any_queues_setting_is_accepted_or_one_clear_line(value: Any) -> None:
    with override_settings(AIOTASKQ={"QUEUES": value}):
        try:
            queues = get_settings().QUEUES
        except errors.ConfigurationError as exc:
            message = str(exc)
        else:
            message = ""
    if message:
        assert "\n" not in message
        assert 'AIOTASKQ["QUEUES"]' in message
        return
    for options in queues.values():
        assert options.concurrency is None or 1 <= options.concurrency <= 10**6
        assert options.threads is None or 1 <= options.threads <= 10**6
        assert options.time_limit is None or 0 < options.time_limit < math.inf


# --- The command line ---------------------------------------------------------------------


def test_cli_refuses_caps_over_concurrency_in_one_line() -> None:
    out = run_cli("run", "--queues", "critical:10,exports:2", "--concurrency", "5", check=False)
    assert out.returncode == 2
    assert out.stderr == (
        "aiotaskq run: error: the queue caps critical:10 + exports:2 add up to 12, more than "
        "the concurrency of 5: raise the concurrency or lower the caps\n"
    )


def test_cli_refuses_a_zero_cap_in_one_line() -> None:
    out = run_cli("run", "--queues", "critical:0", check=False)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1
    assert "the cap in 'critical:0' must be a positive integer" in out.stderr


def test_status_shows_caps_and_slots_in_use(db: Any) -> None:
    db.execute(
        "INSERT INTO aiotaskq_task (id, name, queue, state, alive_at, attempt, worker_id) "
        "SELECT gen_random_uuid(), 'x', 'exports', 'running', now() + interval '1 hour', 1, 'w' "
        "FROM generate_series(1, 2)"
    )
    out = run_cli_with_queues("status", "--json")
    status = json.loads(out)["queues"]
    assert status["exports"]["cap_per_worker"] == 2
    assert status["exports"]["slots_in_use"] == 2
    # A queue of QUEUES with no task shows too, with its cap.
    assert status["critical"]["cap_per_worker"] == 10
    assert status["critical"]["slots_in_use"] == 0


def run_cli_with_queues(*args: str) -> str:
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT

    return subprocess.run(
        [sys.executable, "-m", "aiotaskq.cli", *args, "--settings", "tests.settings"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "AIOTASKQ_TEST_QUEUES": json.dumps(QUEUES)},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout


# --- The 3 AM story, with a real worker ---------------------------------------------------


def _most_at_once(label_prefix: str, count: int) -> int:
    """From the ledger of starts and ends: the most exports that ran at the same time."""
    events = []
    for i in range(count):
        (start,) = executions(f"{label_prefix}{i}:start")
        (end,) = executions(f"{label_prefix}{i}:end")
        events += [(start.at, 1), (end.at, -1)]
    running = most = 0
    for _, step in sorted(events, key=lambda e: (e[0], e[1])):  # an end before a start
        running += step
        most = max(most, running)
    return most


def test_critical_tasks_never_wait_behind_exports(worker: Any, db: Any) -> None:
    """Six slow sync exports in ``exports:2`` (with two threads of their own) and 300
    critical tasks enqueued while they run: the critical tasks all finish while the exports
    are still being worked through, and never more than two exports run at once."""
    proc = worker(
        "--queues",
        "critical:10,exports:2,default",
        "--concurrency",
        "20",
        "--threads",
        "4",
        env={"AIOTASKQ_TEST_QUEUES": json.dumps(QUEUES)},
    )
    # The budget counts the exports' own threads: 1 + 3 + (4 + 2) + 4.
    assert "14 connections at most (1 listener + 3 pool + 6 sync-task threads" in proc.log()
    aiotaskq.enqueue_many([tasks.export_csv.s(f"export{i}", 3.0) for i in range(6)])
    wait_for(
        lambda: (
            db.execute(
                "SELECT count(*) FROM testapp_execution WHERE label LIKE 'export%%:start'"
            ).fetchone()[0]
            >= 2
        ),
        what="the first exports to start",
    )
    aiotaskq.enqueue_many([tasks.send_password_reset.s(f"reset{i}") for i in range(300)])

    def resets_done() -> bool:
        return (
            db.execute(
                "SELECT count(*) FROM testapp_execution WHERE label LIKE 'reset%%'"
            ).fetchone()[0]
            == 300
        )

    wait_for(resets_done, timeout=60, what="the 300 critical tasks")
    ended = db.execute(
        "SELECT count(*) FROM testapp_execution WHERE label LIKE 'export%%:end'"
    ).fetchone()[0]
    # Six exports of 3 s, two at a time, take 9 s: the critical tasks did not wait for them.
    assert ended < 6, "the critical tasks finished only after every export"
    wait_for(
        lambda: (
            db.execute(
                "SELECT count(*) FROM testapp_execution WHERE label LIKE 'export%%:end'"
            ).fetchone()[0]
            == 6
        ),
        timeout=90,
        what="the exports",
    )
    assert _most_at_once("export", 6) == 2
    # The exports ran in their own two threads, the critical tasks never in those.
    export_threads = {e.value for i in range(6) for e in executions(f"export{i}:start")}
    reset_threads = set(
        db.execute(
            "SELECT DISTINCT value #>> '{}' FROM testapp_execution WHERE label LIKE 'reset%%'"
        ).fetchall()
    )
    assert len(export_threads) <= 2
    assert all(t.startswith("aiotaskq-exports") for t in export_threads)
    assert not any(t.startswith("aiotaskq-exports") for (t,) in reset_threads)
    assert db.execute("SELECT count(*) FROM aiotaskq_task").fetchone()[0] == 0


def test_queue_settings_apply_in_the_worker(worker: Any, db: Any) -> None:
    """``QUEUES`` alone caps a queue in every worker that serves it, and its time limit
    applies to the tasks that have none of their own (the call's, then the task's, first)."""
    queues = {"limited": {"concurrency": 3, "time_limit": 0.5}}
    worker("--queues", "limited,default", env={"AIOTASKQ_TEST_QUEUES": json.dumps(queues)})
    over = tasks.sleep_in_limited_queue.delay("over", 30)
    own = tasks.sleep_with_own_limit.delay("own", 1.0)
    call = tasks.sleep_in_limited_queue.apply_async(("call", 1.0), time_limit=10)

    def state(task_id: Any) -> Any:
        row = db.execute("SELECT state, errors FROM aiotaskq_task WHERE id = %s", (task_id,))
        return row.fetchone()

    failed = wait_for(lambda: (s := state(over.id)) and s[0] == "failed" and s, what="the limit")
    assert failed[1][-1]["type"] == "aiotaskq.errors.TimeLimitExceeded"
    assert "0.5 s" in failed[1][-1]["message"]
    # Both ran past the queue's 0.5 s and succeeded (their rows deleted by the ack).
    wait_for(
        lambda: state(own.id) is None and state(call.id) is None, what="the tasks with own limits"
    )
    assert executions("own")
    assert executions("call")


def test_admin_summary_shows_caps_and_slots_in_use(db: Any) -> None:
    from tests.test_admin import client_for, make_user

    db.execute(
        "INSERT INTO aiotaskq_task (id, name, queue, state, alive_at, started_at, attempt, "
        "worker_id) SELECT gen_random_uuid(), 'x', 'exports', 'running', "
        "now() + interval '1 hour', now(), 1, 'w' "
        "FROM generate_series(1, 2)"
    )
    admin = client_for(make_user(superuser=True))
    with override_settings(AIOTASKQ={"QUEUES": QUEUES}):
        html = admin.get("/admin/aiotaskq/tasksummary/").content.decode()
    start = html.index('<table id="lanes">')
    lanes = html[start : html.index("</table>", start)]
    rows = lanes.split("<tr>")[2:]
    assert len(rows) == 2, lanes
    assert "<td>critical</td>\n  <td>10</td>\n  <td>0</td>\n  <td>30 s</td>" in rows[0]
    assert (
        "<td>exports</td>\n  <td>2</td>\n  <td>2</td>\n  <td>1800 s</td>\n  <td>2</td>" in rows[1]
    )
