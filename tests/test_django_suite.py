"""Django's own tests of its tasks framework, run against aiotaskq's backend.

The tests come from the sdist of the installed Django (``tests/tasks/``, fetched once into
``.cache/django-tests/<version>/`` by :mod:`tests.django_suite`); nothing of them is copied
here. Each of Django's test classes is subclassed with ``TASKS`` pointing at our backend
instead of Django's:

- ``TaskTestCase`` (``test_tasks``) and ``DummyBackendTestCase`` expect a queue: a task stays
  READY after ``enqueue`` and ``get_result`` returns an equal result. They run against
  :class:`TableBackend`, our backend plus the two hooks of Django's dummy backend that they
  call (``results`` and ``clear()``), answered from the task table.
- ``ImmediateBackendTestCase`` expects the task to have run when ``enqueue`` returns. It runs
  twice: against our backend in eager mode (``AIOTASKQ["ALWAYS_EAGER"]``, no database at all),
  and against :class:`DrainingBackend`, which after each enqueue runs a real worker in burst
  mode (``aiotaskq.testing.run_until_empty``) and returns what ``get_result`` then reads from
  the table: claim, run, signals, outcome and result all through the production path.
- ``test_custom_backend`` tests backends and a task class defined in that module itself:
  nothing of aiotaskq's would run, so it is not run.

The tests that do not apply to aiotaskq are skipped, each with its reason, in
:data:`NOT_APPLICABLE`; Django test classes this module does not know yet (a newer Django)
show up as skipped, in ``test_every_django_test_class_is_reviewed``.
"""

from __future__ import annotations

import copy
import importlib
import inspect
import sys
import unittest
from collections.abc import Sequence
from typing import Any

import django
import psycopg
import pytest
from django.conf import settings
from django.test import SimpleTestCase, override_settings

if django.VERSION < (6, 0):
    pytest.skip("Django's tasks framework needs Django 6.0", allow_module_level=True)

from tests.django_suite import Unavailable, django_tests_dir

try:
    TESTS_DIR = django_tests_dir()
except Unavailable as exc:
    pytest.skip(f"Django's own tasks tests are not available: {exc}", allow_module_level=True)

from aiotaskq.backend import AiotaskqBackend
from aiotaskq.conf import get_settings
from aiotaskq.db.connect import close_enqueue_pools, conninfo
from aiotaskq.db.sql import text
from aiotaskq.testing import arun_until_empty, run_until_empty

# Django's tests import their tasks as ``tasks.tasks`` (Django runs them from tests/).
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))

# The modules, not their classes: a class bound here would be collected and run as it is,
# against Django's own backends.
django_modules = {
    name: importlib.import_module(f"tasks.{name}")
    for name in ("test_tasks", "test_dummy_backend", "test_immediate_backend")
}
OURS = f"{AiotaskqBackend.__module__}.{AiotaskqBackend.__qualname__}"


class TableBackend(AiotaskqBackend):
    """Our backend, plus ``results`` and ``clear()`` of Django's dummy backend (which its
    tests call), answered from the task table on a connection of their own (so that async
    tests may call them too)."""

    @property
    def results(self) -> list[Any]:
        dirty_after = get_settings().DIRTY_AFTER
        with psycopg.connect(conninfo(), autocommit=True) as conn:
            ids = conn.execute("SELECT id FROM aiotaskq_task ORDER BY created_at, id").fetchall()
            rows = [
                conn.execute(text("result"), {"id": task_id, "dirty_after": dirty_after}).fetchone()
                for (task_id,) in ids
            ]
        return [self._result(str(row[0]), tuple(row)) for row in rows if row is not None]

    def clear(self) -> None:
        with psycopg.connect(conninfo(), autocommit=True) as conn:
            conn.execute("TRUNCATE aiotaskq_task")


class DrainingBackend(AiotaskqBackend):
    """Our backend, and after each enqueue a worker in burst mode runs what is due; the
    result returned is the one ``get_result`` then reads from the table."""

    def enqueue(self, task: Any, args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
        result = super().enqueue(task, args, kwargs)
        run_until_empty()
        return self.get_result(result.id)

    async def aenqueue(self, task: Any, args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
        result = await super().aenqueue(task, args, kwargs)
        await arun_until_empty()
        return await self.aget_result(result.id)


# Django's tests that do not apply to aiotaskq, by the class of ours that runs them. A class
# mapped to a string is skipped as a whole.
_IMMEDIATE = {
    "test_using_correct_backend": "asserts the class and options of Django's ImmediateBackend",
    "test_cannot_get_result": "aiotaskq supports get_result (supports_get_result = True)",
    "test_cannot_refresh_result": "aiotaskq supports refresh (supports_get_result = True)",
    "test_cannot_pass_run_after": "aiotaskq supports run_after (supports_defer = True)",
    "test_validate_on_enqueue": "re-configures TASKS with Django's ImmediateBackend inside "
    "the test, so it would test that backend, not ours (test_backend covers unlisted queues)",
    "test_validate_on_aenqueue": "re-configures TASKS with Django's ImmediateBackend inside "
    "the test, so it would test that backend, not ours (test_backend covers unlisted queues)",
}
_DUMMY_ONLY = "asserts the class of Django's DummyBackend"
NOT_APPLICABLE: dict[str, dict[str, str] | str] = {
    "TestTaskTestCase": {
        "test_using_correct_backend": _DUMMY_ONLY,
        "test_get_backend": _DUMMY_ONLY,
        "test_refresh_result": "calls the sync refresh() from async code: ours reads through "
        "Django's connection, which raises SynchronousOnlyOperation there as the ORM does "
        "(TestDummyBackendTestCase.test_get_result_async covers the async read)",
    },
    "TestDummyBackendTestCase": {
        "test_using_correct_backend": _DUMMY_ONLY,
        "test_refresh_result": "fakes a worker by changing the dummy backend's stored result "
        "in memory; TestImmediateBackendWorker refreshes results a real worker wrote",
        "test_refresh_result_async": "fakes a worker by changing the dummy backend's stored "
        "result in memory; TestImmediateBackendWorker refreshes results a real worker wrote",
        "test_validate_on_enqueue": "re-configures TASKS with Django's DummyBackend inside the "
        "test, so it would test that backend, not ours (test_backend covers unlisted queues)",
        "test_validate_on_aenqueue": "re-configures TASKS with Django's DummyBackend inside the "
        "test, so it would test that backend, not ours (test_backend covers unlisted queues)",
    },
    "TestImmediateBackendEager": _IMMEDIATE,
    "TestImmediateBackendWorker": {
        **_IMMEDIATE,
        "test_throws_keyboard_interrupt": "the task runs in a worker, not in the caller: a "
        "worker records a KeyboardInterrupt as the task's failure and does not raise it "
        "in the code that enqueued it",
    },
    "TestDummyBackendTransactionTestCase": "configures Django's DummyBackend on the test "
    "method itself (tests/test_backend.py tests that our enqueue joins the transaction)",
    "TestImmediateBackendTransactionTestCase": "configures Django's ImmediateBackend on the "
    "test method itself (tests/test_backend.py tests that our enqueue joins the transaction)",
}
REVIEWED = {
    "test_tasks": {"TaskTestCase"},
    "test_dummy_backend": {"DummyBackendTestCase", "DummyBackendTransactionTestCase"},
    "test_immediate_backend": {
        "ImmediateBackendTestCase",
        "ImmediateBackendTransactionTestCase",
    },
    # Backends and task classes defined in that module itself: nothing of aiotaskq's runs.
    "test_custom_backend": {"CustomBackendTestCase", "CustomTaskTestCase"},
}


def _skip_not_applicable(cls: type[Any]) -> type[Any]:
    reasons = NOT_APPLICABLE.get(cls.__name__, {})
    if isinstance(reasons, str):
        return unittest.skip(reasons)(cls)
    for name, reason in reasons.items():
        if hasattr(cls, name):

            def skipped(self: Any) -> None:
                """Not applicable (see NOT_APPLICABLE)."""

            setattr(cls, name, unittest.skip(reason)(skipped))
    return cls


def _close_loop_pools(cls: type[Any]) -> type[Any]:
    """Close the enqueue pool an async test opened before its event loop (asgiref's, one per
    test) goes away."""
    for name in dir(cls):
        test = getattr(cls, name)
        if not name.startswith("test") or not inspect.iscoroutinefunction(test):
            continue

        def closing(test: Any) -> Any:
            async def run(self: Any) -> None:
                try:
                    await test(self)
                finally:
                    await close_enqueue_pools()

            run.__name__ = test.__name__
            return run

        setattr(cls, name, closing(test))
    return cls


def _against(backend: str, django_class: type[Any], **extra: Any) -> Any:
    """``override_settings`` with Django's ``TASKS`` of ``django_class``, its default backend
    replaced by ``backend``."""
    tasks = copy.deepcopy(django_class._overridden_settings["TASKS"])
    tasks["default"]["BACKEND"] = backend
    return override_settings(TASKS=tasks, **extra)


def _our(cls: type[Any]) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


# Typed Any: mypy cannot follow Django's classes into the fetched modules.
tasks_tests: Any = django_modules["test_tasks"]
dummy_tests: Any = django_modules["test_dummy_backend"]
immediate_tests: Any = django_modules["test_immediate_backend"]


@_close_loop_pools
@_skip_not_applicable
@_against(_our(TableBackend), tasks_tests.TaskTestCase)
class TestTaskTestCase(tasks_tests.TaskTestCase):  # type: ignore[misc]
    databases = {"default"}


@_close_loop_pools
@_skip_not_applicable
@_against(_our(TableBackend), dummy_tests.DummyBackendTestCase)
class TestDummyBackendTestCase(dummy_tests.DummyBackendTestCase):  # type: ignore[misc]
    databases = {"default"}


@_close_loop_pools
@_skip_not_applicable
@_against(
    OURS,
    immediate_tests.ImmediateBackendTestCase,
    AIOTASKQ={**settings.AIOTASKQ, "ALWAYS_EAGER": True},
)
class TestImmediateBackendEager(immediate_tests.ImmediateBackendTestCase):  # type: ignore[misc]
    """Eager mode touches no database: ``databases`` stays empty, so a query would fail."""


@_close_loop_pools
@_skip_not_applicable
@_against(_our(DrainingBackend), immediate_tests.ImmediateBackendTestCase)
class TestImmediateBackendWorker(immediate_tests.ImmediateBackendTestCase):  # type: ignore[misc]
    databases = {"default"}


@_skip_not_applicable
class TestDummyBackendTransactionTestCase(
    dummy_tests.DummyBackendTransactionTestCase  # type: ignore[misc]
):
    pass


@_skip_not_applicable
class TestImmediateBackendTransactionTestCase(
    immediate_tests.ImmediateBackendTransactionTestCase  # type: ignore[misc]
):
    pass


def test_every_django_test_class_is_reviewed() -> None:
    """A test class of a newer Django shows here until it is mapped above."""
    unreviewed = []
    for path in sorted((TESTS_DIR / "tasks").glob("test_*.py")):
        module = importlib.import_module(f"tasks.{path.stem}")
        for name, value in vars(module).items():
            if (
                isinstance(value, type)
                and issubclass(value, SimpleTestCase)
                and value.__module__ == module.__name__
                and name not in REVIEWED.get(path.stem, set())
            ):
                unreviewed.append(f"{path.stem}.{name}")
    if unreviewed:
        pytest.skip(
            f"Django {django.__version__} has tasks test classes not yet run against "
            f"aiotaskq: {', '.join(unreviewed)}"
        )
