"""System checks, and enqueueing from async code inside the caller's transaction."""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.core import checks
from django.db import transaction
from django.test import override_settings

from aiotaskq.checks import check_configuration
from tests.app import tasks


def _ids(messages: list[checks.CheckMessage]) -> list[str]:
    return [m.id or "" for m in messages]


def test_a_clean_configuration_passes() -> None:
    assert check_configuration() == []


def test_a_typo_in_aiotaskq_names_the_nearest_key() -> None:
    with override_settings(AIOTASKQ={"DIRTY_AFTERR": 5}):
        (message,) = check_configuration()
    assert message.id == "aiotaskq.E001"
    assert 'Did you mean "DIRTY_AFTER"' in message.msg


def test_an_unknown_database_alias() -> None:
    with override_settings(AIOTASKQ={"DATABASE": "queue"}):
        assert _ids(check_configuration()) == ["aiotaskq.E002"]


def test_a_pooler_without_a_listen_dsn_gets_a_warning() -> None:
    from django.db import connections

    conf = connections.settings["default"]
    port = conf["PORT"]
    conf["PORT"] = "6432"  # pgbouncer's port
    try:
        with override_settings(AIOTASKQ={"PREPARE": False}):
            assert _ids(check_configuration()) == ["aiotaskq.W001"]
        with override_settings(AIOTASKQ={"PREPARE": False, "LISTEN_DSN": "host=db port=5432"}):
            assert check_configuration() == []
        with override_settings(AIOTASKQ={"PREPARE": False, "LISTEN": False}):
            assert check_configuration() == []
    finally:
        conf["PORT"] = port


def test_a_pooler_with_prepared_statements_gets_a_warning() -> None:
    from django.db import connections

    conf = connections.settings["default"]
    port = conf["PORT"]
    conf["PORT"] = "6432"
    try:
        with override_settings(AIOTASKQ={"LISTEN": False}):
            (message,) = check_configuration()
        assert message.id == "aiotaskq.W003"
        assert 'AIOTASKQ["PREPARE"] = False' in (message.hint or "")
        with override_settings(AIOTASKQ={"LISTEN": False, "PREPARE": False}):
            assert check_configuration() == []
        # Django's OPTIONS saying the same is enough.
        conf["OPTIONS"] = {**conf["OPTIONS"], "prepare_threshold": None}
        with override_settings(AIOTASKQ={"LISTEN": False}):
            assert check_configuration() == []
    finally:
        conf["PORT"] = port
        conf["OPTIONS"].pop("prepare_threshold", None)


@pytest.mark.parametrize("value", [0, 1, "no", "False"])
def test_prepare_must_be_a_bool_or_none(value: object) -> None:
    with override_settings(AIOTASKQ={"PREPARE": value}):
        (message,) = check_configuration()
    assert message.id == "aiotaskq.E001"
    assert message.msg == f'AIOTASKQ["PREPARE"] must be True, False or None, got {value!r}.'


def test_prepare_follows_django_options_unless_set() -> None:
    from django.db import connections

    from aiotaskq.db.prepare import prepares

    options = connections.settings["default"]["OPTIONS"]
    assert prepares()  # the default: Django's OPTIONS say nothing of it
    try:
        options["prepare_threshold"] = None
        assert not prepares()
        with override_settings(AIOTASKQ={"PREPARE": True}):
            assert prepares()
        options["prepare_threshold"] = 5
        assert prepares()
        with override_settings(AIOTASKQ={"PREPARE": False}):
            assert not prepares()
    finally:
        options.pop("prepare_threshold", None)


@pytest.mark.parametrize("prepare", [None, False])
async def test_the_worker_connections_with_and_without_prepare(prepare: bool | None) -> None:
    """The default is unchanged: every statement prepared from its first run, and the
    session settings. With PREPARE off: nothing prepared and no SET."""
    from aiotaskq.db.connect import WorkerDatabase

    with override_settings(AIOTASKQ={"PREPARE": prepare}):
        database = WorkerDatabase("aiotaskq-test-prepare", 1)
        await database.open(wait=False)
        try:
            async with database.connection("Looking") as conn:
                cur = await conn.execute("SHOW enable_seqscan")
                row = await cur.fetchone()
                threshold = conn.prepare_threshold
        finally:
            await database.close()
    assert (threshold, row) == ((0, ("off",)) if prepare is None else (None, ("on",)))


def test_the_checks_are_registered() -> None:
    assert check_configuration in checks.registry.registry.get_checks()


def _count(db: Any) -> int:
    return int(db.execute("SELECT count(*) FROM aiotaskq_task").fetchone()[0])


async def test_aapply_async_with_transaction_joins_the_atomic_block(db: Any) -> None:
    @sync_to_async
    def in_atomic(fail: bool) -> None:
        with transaction.atomic():
            # The atomic block is held by this thread-sensitive thread; the enqueue below
            # is written there too.
            async_to_sync(tasks.record.aapply_async)(("tx",), transaction=True)
            if fail:
                raise RuntimeError("roll back")

    from asgiref.sync import async_to_sync

    with pytest.raises(RuntimeError):
        await in_atomic(True)
    assert _count(db) == 0
    await in_atomic(False)
    assert _count(db) == 1
    # Without transaction=True the async enqueue commits on its own, whatever the caller does.
    await tasks.record.aapply_async(("own",))
    assert _count(db) == 2
