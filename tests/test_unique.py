"""Unique tasks and debounce: one task per (task, key) while it is queued or running, from
any mix of threads, processes, coalesced async calls and bulk batches; ``on_conflict="replace"``
(debounce); and the paths that move a keyed task (retry, rescue, SIGTERM release, run again)
keep its key and never wait for it. Keys are checked before anything is written."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from typing import Any

import psycopg
import pytest
from django.db import connections, transaction
from django.test import override_settings
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import aiotaskq
from aiotaskq import ConfigurationError, InvalidUniqueKey, task
from aiotaskq.db import control
from aiotaskq.db.connect import WorkerDatabase
from aiotaskq.tasks.unique import MAX_KEY_LENGTH, derive_key
from aiotaskq.worker.upkeep import Pruner
from tests.app import tasks
from tests.conftest import ROOT, executions, migrate_back_and_forth, run_cli, wait_for


def _tasks(db: psycopg.Connection[Any], key: str | None = None) -> list[tuple[Any, ...]]:
    """(id, state, args, kwargs) of the tasks with this key (all tasks without one)."""
    if key is None:
        query = "SELECT id, state, args, kwargs FROM aiotaskq_task ORDER BY created_at, id"
        return [tuple(r) for r in db.execute(query).fetchall()]
    rows = db.execute(
        "SELECT id, state, args, kwargs FROM aiotaskq_task WHERE unique_key = %s"
        " ORDER BY created_at, id",
        (key,),
    ).fetchall()
    return [tuple(r) for r in rows]


def _holder(db: psycopg.Connection[Any], name: str, key: str) -> uuid.UUID | None:
    row = db.execute(
        "SELECT task_id FROM aiotaskq_unique WHERE name = %s AND key = %s", (name, key)
    ).fetchone()
    return row[0] if row else None


DIGEST = tasks.digest.name


# --- one task per key ------------------------------------------------------------------------


def test_a_second_call_with_the_key_writes_nothing_and_answers_with_the_first(db: Any) -> None:
    first = tasks.digest.apply_async(("a", 1), unique_key="order-42")
    second = tasks.digest.apply_async(("a", 2), unique_key="order-42", countdown=60)
    assert second.id == first.id
    ((task_id, state, args, _),) = _tasks(db)
    assert (task_id, state, args) == (first.id, "queued", ["a", 1])  # the first as it was
    assert _holder(db, DIGEST, "order-42") == first.id
    # Another key, and the same key for another task, are tasks of their own.
    other = tasks.digest.apply_async(("a", 3), unique_key="order-43")
    record = tasks.record.apply_async(("a",), unique_key="order-42")
    assert len({first.id, other.id, record.id}) == 3
    assert len(_tasks(db)) == 3


def test_signatures_and_enqueue_many_take_the_key(db: Any) -> None:
    sig = tasks.digest.s("s", 1).set(unique_key="sig")
    first = sig.delay()
    assert sig.apply_async().id == first.id
    results = aiotaskq.enqueue_many([sig, tasks.digest.s("s", 2), sig])
    assert results[0].id == results[2].id == first.id
    assert results[1].id != first.id
    assert len(_tasks(db)) == 2


def test_unique_true_keys_a_call_by_its_arguments_bound_to_the_parameters(db: Any) -> None:
    first = tasks.rebuild.delay("r", 7)
    for same in (
        tasks.rebuild.delay("r", report=7),
        tasks.rebuild.delay(label="r", report=7, full=False),
        tasks.rebuild.apply_async(["r", 7, False]),
    ):
        assert same.id == first.id
    assert tasks.rebuild.delay("r", 7, full=True).id != first.id
    assert tasks.rebuild.delay("r", 8).id != first.id
    # An explicit key wins over the derived one.
    assert tasks.rebuild.apply_async(("r", 7), unique_key="mine").id != first.id
    assert len(_tasks(db)) == 4
    (key,) = db.execute(
        "SELECT unique_key FROM aiotaskq_task WHERE id = %s", (first.id,)
    ).fetchone()
    assert json.loads(key) == {"label": "r", "report": 7, "full": False}


def test_a_derived_key_of_long_arguments_is_their_hash() -> None:
    sig = tasks.rebuild.s("x" * 500, 1)
    row = sig.build_row()
    assert row.unique_key is not None
    assert row.unique_key.startswith("sha256:")
    assert len(row.unique_key) == len("sha256:") + 64
    assert tasks.rebuild.s("x" * 500, 1).build_row().unique_key == row.unique_key
    assert tasks.rebuild.s("x" * 500, 2).build_row().unique_key != row.unique_key


def test_inside_atomic_the_key_commits_or_rolls_back_with_the_task(db: Any) -> None:
    with transaction.atomic():
        first = tasks.digest.apply_async(("t", 1), unique_key="tx")
        assert tasks.digest.apply_async(("t", 2), unique_key="tx").id == first.id
        transaction.set_rollback(True)
    assert _tasks(db) == []
    assert _holder(db, DIGEST, "tx") is None
    again = tasks.digest.apply_async(("t", 3), unique_key="tx")
    assert again.id != first.id
    assert _tasks(db, "tx")[0][2] == ["t", 3]


def test_a_producer_waits_for_an_open_transaction_that_holds_the_key(db: Any) -> None:
    """The key row of an uncommitted enqueue is locked: a second producer of that key waits for
    its commit (and then answers with its task) instead of writing a second one."""
    done: dict[str, Any] = {}
    holding = threading.Event()
    release = threading.Event()

    def hold() -> None:
        try:
            with transaction.atomic():
                done["first"] = tasks.digest.apply_async(("w", 1), unique_key="open").id
                holding.set()
                release.wait(20)
        finally:
            connections.close_all()

    thread = threading.Thread(target=hold)
    thread.start()
    assert holding.wait(20)
    second: dict[str, Any] = {}

    def produce() -> None:
        try:
            second["id"] = tasks.digest.apply_async(("w", 2), unique_key="open").id
        finally:
            connections.close_all()

    producer = threading.Thread(target=produce)
    producer.start()
    wait_for(
        lambda: db.execute(
            "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            " AND datname = current_database()"
        ).fetchone(),
        what="the second producer to wait for the key",
    )
    assert "id" not in second
    release.set()
    thread.join(20)
    producer.join(20)
    assert second["id"] == done["first"]
    assert len(_tasks(db)) == 1


def test_eager_mode_runs_every_call() -> None:
    with override_settings(AIOTASKQ={"ALWAYS_EAGER": True}):
        tasks.digest.apply_async(("eager", 1), unique_key="e")
        tasks.digest.apply_async(("eager", 2), unique_key="e")
    assert [e.value for e in executions("eager")] == [1, 2]


# --- races ---------------------------------------------------------------------------------


def _race(key: str, label: str, calls: int) -> list[uuid.UUID]:
    """Ten threads, started together, each enqueueing ``calls`` digests of ``key``: the ids
    they were answered with."""
    ids: list[uuid.UUID] = []
    lock = threading.Lock()
    start = threading.Barrier(10)

    def producer(n: int) -> None:
        try:
            start.wait(20)
            mine = [
                tasks.digest.apply_async((f"{label}-{n}", k), unique_key=key).id
                for k in range(calls)
            ]
            with lock:
                ids.extend(mine)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=producer, args=(n,)) for n in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return ids


def test_200_racing_enqueues_of_one_key_from_10_threads_give_one_task(db: Any) -> None:
    ids = _race("race", "race", 20)
    assert len(ids) == 200
    assert len(set(ids)) == 1
    assert [row[0] for row in _tasks(db)] == [ids[0]]


@pytest.mark.parametrize("ended", ["failed", "gone", "dirty"])
def test_racing_takeovers_of_an_ended_holder_give_one_new_task(db: Any, ended: str) -> None:
    """The key row is there, its holder has ended: ten threads that find it at once take it
    over once, and the others answer with the one that did."""
    old = tasks.digest.apply_async(("old",), unique_key="over").id
    _set_state(db, old, ended)
    ids = _race("over", "over", 5)
    assert len(ids) == 50
    assert len(set(ids)) == 1
    (new,) = set(ids)
    assert new != old
    assert _holder(db, DIGEST, "over") == new
    assert [row[0] for row in _tasks(db, "over") if row[1] == "queued"] == [new]


RACER = """
import sys
import django
django.setup()
from tests.app import tasks
ids = {tasks.digest.apply_async(("proc", k), unique_key=sys.argv[1]).id for k in range(50)}
print(" ".join(str(i) for i in ids))
"""


def test_racing_processes_and_bulk_batches_give_one_task_per_key(db: Any) -> None:
    env = {"DJANGO_SETTINGS_MODULE": "tests.settings", "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, "proc-key"],
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    # Meanwhile, bulk batches (COPY-sized) of the same key and 99 others, in both orders.
    keys = ["proc-key", *(f"bulk-{k:02d}" for k in range(99))]
    for order in (keys, keys[::-1]):
        results = aiotaskq.enqueue_many(
            [tasks.digest.s("bulk", k).set(unique_key=k) for k in order]
        )
        assert len({r.id for r in results}) == 100
    seen = set()
    for proc in procs:
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0
        seen |= set(out.split())
    holder = _holder(db, DIGEST, "proc-key")
    assert seen <= {str(holder)}
    assert db.execute("SELECT count(*) FROM aiotaskq_task").fetchone() == (100,)


async def test_coalesced_adelay_calls_of_one_key_share_one_task(db: Any) -> None:
    results = await asyncio.gather(
        *(tasks.digest.aapply_async((f"co-{n}", n), unique_key="co") for n in range(60)),
        *(tasks.digest.aapply_async((f"other-{n}",), unique_key=f"co-{n % 5}") for n in range(40)),
    )
    assert len({r.id for r in results[:60]}) == 1
    assert len({r.id for r in results[60:]}) == 5
    assert await asyncio.to_thread(lambda: len(_tasks(db))) == 6


# --- replace (debounce) ------------------------------------------------------------------


def test_replace_gives_the_queued_task_the_last_call_in_a_batch_and_across_calls(db: Any) -> None:
    first = tasks.digest.apply_async(("d", 1), unique_key="dd", countdown=60)
    results = aiotaskq.enqueue_many(
        [
            tasks.digest.s("d", 2).set(unique_key="dd", on_conflict="replace", countdown=30),
            tasks.digest.s("d", 3).set(unique_key="dd"),  # ignore: changes nothing
            tasks.digest.s("d", 4).set(unique_key="dd", on_conflict="replace", priority=5),
        ]
    )
    assert {r.id for r in results} == {first.id}
    (row,) = db.execute(
        "SELECT args, priority, pos IS NOT NULL, execute_at <= now() FROM aiotaskq_task"
    ).fetchall()
    assert row == (["d", 4], 5, True, True)  # ready now, with the last replace's call


def test_replace_of_a_running_task_enqueues_a_new_one_and_leaves_the_running_one(
    worker: Any, db: Any
) -> None:
    worker()
    running = tasks.unique_slow.apply_async(("busy", 2.0), unique_key="job")
    wait_for(lambda: executions("busy:start"), what="the task to start")
    after = tasks.unique_slow.apply_async(("next", 0.0), unique_key="job", on_conflict="replace")
    assert after.id != running.id
    assert _holder(db, tasks.unique_slow.name, "job") == after.id
    args = db.execute("SELECT args FROM aiotaskq_task WHERE id = %s", (running.id,)).fetchone()
    assert args == (["busy", 2.0],)
    wait_for(lambda: executions("busy") and executions("next"), what="both to finish")


def test_debounce_eight_calls_run_once_a_second_after_the_last(worker: Any, db: Any) -> None:
    worker()
    ids = set()
    for n in range(8):
        ids.add(
            tasks.digest.apply_async(
                ("debounced", n), unique_key="dig", on_conflict="replace", countdown=1
            ).id
        )
        last = time.time()
        if n < 7:
            time.sleep(0.2)
    assert len(ids) == 1
    (run,) = wait_for(lambda: executions("debounced"), what="the debounced run")
    assert run.value == 7  # the last call's arguments
    after = run.at.timestamp() - last
    assert 0.9 <= after <= 3.0, after
    # Nothing else comes: the earlier calls were replaced, not queued (the table empties).
    wait_for(lambda: not _tasks(db), what="the debounced run's ack")
    assert len(executions("debounced")) == 1


# --- the paths that move a keyed task keep its key ----------------------------------------


def test_a_finished_failed_or_revoked_holder_frees_its_key(worker: Any, db: Any) -> None:
    worker()
    done = tasks.digest.apply_async(("fin", 1), unique_key="f")
    wait_for(lambda: executions("fin"), what="the first to run")
    wait_for(lambda: not _tasks(db), what="its ack")
    again = tasks.digest.apply_async(("fin", 2), unique_key="f", countdown=60)
    assert again.id != done.id
    again.revoke()
    third = tasks.digest.apply_async(("fin", 3), unique_key="f", countdown=60)
    assert third.id not in (done.id, again.id)
    failed = tasks.fail.apply_async(("boom",), unique_key="x")
    wait_for(lambda: failed.state == "failed", what="the failure")
    assert tasks.fail.apply_async(("boom",), unique_key="x").id != failed.id


def test_a_retried_unique_task_keeps_its_key_while_it_waits(worker: Any, db: Any) -> None:
    worker()
    first = tasks.unique_flaky.apply_async(("flaky", 1), unique_key="fl")
    wait_for(lambda: executions("flaky:try"), what="the first attempt")
    wait_for(
        lambda: db.execute(
            "SELECT 1 FROM aiotaskq_task WHERE id = %s AND retries = 1", (first.id,)
        ).fetchone(),
        what="the retry to be scheduled",
    )
    assert tasks.unique_flaky.apply_async(("flaky", 1), unique_key="fl").id == first.id
    wait_for(lambda: executions("flaky"), what="the retry to succeed")
    assert len(executions("flaky:try")) == 2
    assert len(executions("flaky")) == 1


def test_a_rescued_unique_task_keeps_its_key_and_runs_once_more(worker: Any, db: Any) -> None:
    first = worker()
    result = tasks.unique_slow.apply_async(("rescued", 30.0), unique_key="r")
    wait_for(lambda: executions("rescued:start"), what="the task to start")
    first.signal(signal.SIGKILL)
    first.wait(10)
    # Dirty, of an on_dirty="retry" name: it still holds its key (it will be queued again).
    wait_for(lambda: result.state == "running" and _dirty(db, result.id), what="Dirty")
    assert tasks.unique_slow.apply_async(("rescued", 0.0), unique_key="r").id == result.id
    worker()
    wait_for(lambda: executions("rescued"), timeout=60, what="the rescued run")
    assert len(executions("rescued:start")) == 2
    # (the task records its end before it returns: its ack comes a moment later)
    wait_for(lambda: not _tasks(db), what="the rescued run's ack")


def test_a_dirty_task_that_waits_for_a_person_gives_its_key_up(worker: Any, db: Any) -> None:
    first = worker()
    dirty = tasks.unique_slow_keep.apply_async(("kept", 30.0), unique_key="k")
    wait_for(lambda: executions("kept:start"), what="the task to start")
    first.signal(signal.SIGKILL)
    first.wait(10)
    wait_for(lambda: _dirty(db, dirty.id), what="Dirty")
    fresh = tasks.unique_slow_keep.apply_async(("kept", 0.0), unique_key="k")
    assert fresh.id != dirty.id
    # Run again by hand, the Dirty task finds its key held by the fresh one: left alone.
    assert control.requeue_sync(control.Selection(ids=[dirty.id]), 3.0, "default") == []
    assert _dirty(db, dirty.id)


def test_sigterm_gives_a_keyed_task_back_with_its_key(worker: Any, db: Any) -> None:
    first = worker("--grace", "0.2")
    result = tasks.unique_slow.apply_async(("given-back", 30.0), unique_key="g")
    wait_for(lambda: executions("given-back:start"), what="the task to start")
    first.signal(signal.SIGTERM)
    assert first.wait(30) == 0
    assert result.state == "queued"
    assert tasks.unique_slow.apply_async(("given-back", 0.0), unique_key="g").id == result.id
    assert len(_tasks(db)) == 1


def test_run_again_takes_the_key_back_unless_another_task_holds_it(worker: Any, db: Any) -> None:
    worker()
    failed = tasks.fail.apply_async(("again",), unique_key="ra")
    wait_for(lambda: failed.state == "failed", what="the failure")
    # Nobody took the key meanwhile: run again (the CLI's and the admin's requeue).
    assert "1" in run_cli("retry", "--failed").stdout
    wait_for(lambda: len(executions("again")) == 2 and failed.state == "failed", what="a rerun")
    assert _holder(db, tasks.fail.name, "ra") == failed.id
    # Now another task holds it: the failed one is left alone.
    other = tasks.fail.apply_async(("again",), unique_key="ra", countdown=60)
    assert other.id != failed.id
    assert control.requeue_sync(control.Selection(ids=[failed.id]), 3.0, "default") == []
    assert failed.state == "failed"
    assert _holder(db, tasks.fail.name, "ra") == other.id


def _dirty(db: Any, task_id: uuid.UUID) -> bool:
    row = db.execute(
        "SELECT state = 'running' AND alive_at < now() - interval '3 seconds'"
        " FROM aiotaskq_task WHERE id = %s",
        (task_id,),
    ).fetchone()
    return bool(row and row[0])


# --- the pruner ----------------------------------------------------------------------------


async def test_the_pruner_removes_ended_keys_and_never_waits_for_a_held_one(db: Any) -> None:
    def setup() -> None:
        try:
            enqueue()
        finally:
            connections.close_all()  # this thread's own Django connection

    def enqueue() -> None:
        tasks.digest.apply_async(("p",), unique_key="live", countdown=60)
        gone = tasks.digest.apply_async(("p",), unique_key="gone").id
        failed = tasks.digest.apply_async(("p",), unique_key="failed").id
        db.execute("DELETE FROM aiotaskq_task WHERE id = %s", (gone,))
        db.execute("UPDATE aiotaskq_task SET state = 'failed' WHERE id = %s", (failed,))
        held = tasks.digest.apply_async(("p",), unique_key="held").id
        db.execute("DELETE FROM aiotaskq_task WHERE id = %s", (held,))

    await asyncio.to_thread(setup)
    # Another session holds the ended key "held" (as an enqueue would, in its transaction).
    with psycopg.connect(db.info.dsn) as other:
        other.execute("SELECT 1 FROM aiotaskq_unique WHERE key = 'held' FOR UPDATE").fetchone()
        db_pool = WorkerDatabase("aiotaskq-prune-test", 2)
        await db_pool.open(wait=False)
        try:
            started = time.monotonic()
            await asyncio.wait_for(Pruner(db_pool, "test").prune_once(), 10)
            assert time.monotonic() - started < 5
        finally:
            await db_pool.close()
    keys = {r[0] for r in db.execute("SELECT key FROM aiotaskq_unique").fetchall()}
    assert keys == {"live", "held"}


# --- what users pass in ----------------------------------------------------------------------


class _HostileStr(str):
    def __str__(self) -> str:
        raise RuntimeError("hostile __str__")

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("hostile __eq__")

    __hash__ = str.__hash__


@pytest.mark.parametrize(
    ("key", "words"),
    [
        (42, "must be a string"),
        (b"bytes", "must be a string"),
        ("", "is empty"),
        ("x" * (MAX_KEY_LENGTH + 1), "at most 255"),
        ("a\x00b", "NUL"),
        ("a\ud800b", "lone surrogate"),
    ],
)
def test_a_bad_key_is_refused_with_the_reason_and_nothing_is_written(
    db: Any, key: Any, words: str
) -> None:
    with transaction.atomic():
        with pytest.raises(InvalidUniqueKey, match=words):
            tasks.digest.apply_async(("bad",), unique_key=key)
        with pytest.raises(InvalidUniqueKey, match=words):
            aiotaskq.enqueue_many([tasks.digest.s("ok"), tasks.digest.s("bad").set(unique_key=key)])
        tasks.digest.delay("after")  # the caller's transaction is still usable
    assert [r[2] for r in _tasks(db)] == [["after"]]


def test_a_str_subclass_key_is_its_text() -> None:
    row = tasks.digest.s("h").set(unique_key=_HostileStr("order-1")).build_row()
    assert row.unique_key == "order-1"
    assert type(row.unique_key) is str
    result = tasks.digest.apply_async(("h",), unique_key=_HostileStr("order-1"))
    assert tasks.digest.apply_async(("h",), unique_key="order-1").id == result.id


@pytest.mark.parametrize("value", ["Replace", "", 1, b"replace", _HostileStr("update")])
def test_on_conflict_must_be_ignore_or_replace(value: Any) -> None:
    with pytest.raises(InvalidUniqueKey, match='"ignore"'):
        tasks.digest.apply_async(("c",), unique_key="k", on_conflict=value)
    # A str subclass is read as its text, as a key is.
    tasks.digest.apply_async(("c",), unique_key="k", on_conflict=_HostileStr("replace"))


def test_on_conflict_without_a_key_says_how_to_give_one() -> None:
    with pytest.raises(InvalidUniqueKey, match=r"unique_key=\.\.\. too"):
        tasks.digest.apply_async(("c",), on_conflict="replace")


def test_the_task_options_are_checked_at_declaration() -> None:
    with pytest.raises(ConfigurationError, match="unique must be True"):
        task(unique="yes", name="tests.unique.bad1")(lambda: None)  # type: ignore[call-overload]
    with pytest.raises(ConfigurationError, match="on_conflict must be"):
        task(on_conflict="update", name="tests.unique.bad2")(lambda: None)  # type: ignore[call-overload]


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(key=st.text(max_size=300))
@example(key="\U0001f600" * 255)
@example(key=" ")
def test_any_text_is_a_key_or_refused_and_a_stored_key_is_found_again(db: Any, key: str) -> None:
    db.execute("TRUNCATE aiotaskq_task, aiotaskq_unique")
    try:
        first = tasks.digest.apply_async(("prop",), unique_key=key)
    except InvalidUniqueKey:
        assert key == "" or len(key) > MAX_KEY_LENGTH or "\x00" in key or _has_surrogate(key)
        assert _tasks(db) == []
        return
    assert tasks.digest.apply_async(("prop", 2), unique_key=key).id == first.id
    assert _holder(db, DIGEST, key) == first.id


def _has_surrogate(text: str) -> bool:
    return any(0xD800 <= ord(c) <= 0xDFFF for c in text)


_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00")),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(alphabet="abc$", max_size=3), inner, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=100, deadline=None)
@given(report=_JSON, full=_JSON)
def test_a_derived_key_is_the_same_however_the_call_is_spelt(report: Any, full: Any) -> None:
    spellings = [
        tasks.rebuild.s("k", report, full),
        tasks.rebuild.s("k", report=report, full=full),
        tasks.rebuild.s(full=full, report=report, label="k"),
    ]
    keys = {s.build_row().unique_key for s in spellings}
    assert len(keys) == 1
    other = tasks.rebuild.s("k", [report], full).build_row().unique_key
    assert other not in keys


def test_derive_key_reads_the_arguments_back_from_json() -> None:
    row = tasks.rebuild.s("t", (1, 2)).build_row()
    assert derive_key(tasks.rebuild.fit, row.args, row.kwargs) == (
        tasks.rebuild.s("t", [1, 2]).build_row().unique_key
    )
    dated = tasks.rebuild.s("t", dt.date(2026, 12, 3)).build_row().unique_key
    assert dated is not None
    assert "2026-12-03" in dated


# --- every mix of outcomes in one batch ------------------------------------------------------

# A holder before the batch: none, or a task of the key in one of these states.
_STATES = ("none", "queued", "future", "running", "dirty", "failed", "gone")


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    before=st.dictionaries(st.sampled_from("abcd"), st.sampled_from(_STATES), max_size=4),
    calls=st.lists(
        st.tuples(st.sampled_from("abcde"), st.booleans(), st.integers(0, 99)),
        min_size=1,
        max_size=12,
    ),
    bulk=st.booleans(),
)
def test_a_batch_of_any_keys_and_holders_acts_as_its_calls_one_by_one(
    db: Any, before: dict[str, str], calls: list[tuple[str, bool, int]], bulk: bool
) -> None:
    """The calls of one enqueue_many (with a COPY-sized batch around them or not) against
    holders in every state: each answers as if the calls had been made one after another."""
    db.execute("TRUNCATE aiotaskq_task, aiotaskq_unique")
    # The model: per key, its holder (an id, or "new:N" for the task of the Nth call) and
    # whether the holder is live, and running; and every task's arguments.
    held: dict[str, tuple[Any, str]] = {}
    args: dict[Any, list[Any]] = {}
    deleted: set[uuid.UUID] = set()
    for key, state in before.items():
        if state == "none":
            continue
        holder = tasks.digest.apply_async(
            ("before", key), unique_key=key, countdown=60 if state == "future" else None
        ).id
        _set_state(db, holder, state)
        held[key] = (holder, state)
        args[holder] = ["before", key]
        if state == "gone":
            deleted.add(holder)
    expected: list[Any] = []
    for n, (key, replace, value) in enumerate(calls):
        holder, state = held.get(key, (None, "none"))
        live = state in ("queued", "future", "running")
        if live and not (replace and state == "running"):
            if replace:
                args[holder] = ["batch", value]
            expected.append(holder)
        else:
            new = f"new:{n}"
            held[key] = (new, "queued")
            args[new] = ["batch", value]
            expected.append(new)
    padding = [tasks.digest.s("pad", n) for n in range(70 if bulk else 0)]
    sigs = [
        tasks.digest.s("batch", value).set(
            unique_key=key, on_conflict="replace" if replace else "ignore"
        )
        for key, replace, value in calls
    ]
    results = aiotaskq.enqueue_many([*padding, *sigs])[len(padding) :]
    # The stand-ins of the model become the ids written, one id per stand-in.
    actual: dict[Any, uuid.UUID] = {}
    for result, want in zip(results, expected, strict=True):
        if isinstance(want, uuid.UUID):
            assert result.id == want
        else:
            assert actual.setdefault(want, result.id) == result.id
    assert len(set(actual.values())) == len(actual)
    assert not set(actual.values()) & {h for h, _ in held.values()}
    for key, (holder, _) in held.items():
        assert _holder(db, DIGEST, key) == actual.get(holder, holder)
    for task_id, want_args in args.items():
        row = db.execute(
            "SELECT args FROM aiotaskq_task WHERE id = %s", (actual.get(task_id, task_id),)
        ).fetchone()
        assert row == (None if task_id in deleted else (want_args,))


def _set_state(db: Any, task_id: uuid.UUID, state: str) -> None:
    if state in ("queued", "future"):
        return
    if state == "gone":
        db.execute("DELETE FROM aiotaskq_task WHERE id = %s", (task_id,))
        return
    alive = "now()" if state == "running" else "now() - interval '1 hour'"
    db.execute(
        f"UPDATE aiotaskq_task SET state = %s, pos = NULL, worker_id = 'w', started_at = now(),"
        f" alive_at = {alive} WHERE id = %s",
        ("failed" if state == "failed" else "running", task_id),
    )


# --- the migration -------------------------------------------------------------------------


def test_migration_0012_goes_back_and_forth() -> None:
    migrate_back_and_forth(
        "0011",
        "SELECT to_regclass('aiotaskq_unique') IS NOT NULL,"
        " to_regproc('aiotaskq_enqueue_unique') IS NOT NULL,"
        " EXISTS (SELECT 1 FROM information_schema.columns WHERE table_name ="
        " 'aiotaskq_task_cold' AND column_name = 'unique_key')",
    )


def test_the_key_tables_vacuum_does_not_wait_for_a_held_key(db: Any) -> None:
    """VACUUM's last step (truncating the table's empty tail) waits up to 5 s for a session
    that holds a row; the pruner's VACUUM leaves that step out."""
    from aiotaskq.db.sql import text

    tasks.digest.apply_async(("v",), unique_key="held")
    # Pages of ended keys after it, deleted: an empty tail for VACUUM to cut.
    aiotaskq.enqueue_many([tasks.digest.s("v").set(unique_key=f"k{n}") for n in range(3000)])
    db.execute("DELETE FROM aiotaskq_unique WHERE key <> 'held'")
    with psycopg.connect(db.info.dsn) as other:
        other.execute("SELECT 1 FROM aiotaskq_unique WHERE key = 'held' FOR UPDATE").fetchone()
        started = time.monotonic()
        db.execute(text("unique_vacuum"))
        assert time.monotonic() - started < 2.0
