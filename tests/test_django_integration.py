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
        assert _ids(check_configuration()) == ["aiotaskq.W001"]
        with override_settings(AIOTASKQ={"LISTEN_DSN": "host=db port=5432"}):
            assert check_configuration() == []
        with override_settings(AIOTASKQ={"LISTEN": False}):
            assert check_configuration() == []
    finally:
        conf["PORT"] = port


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
