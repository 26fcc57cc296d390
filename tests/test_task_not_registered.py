"""TaskNotRegistered says what is registered near the missing name and how to keep a renamed
task's rows running, in one message of bounded size."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

import aiotaskq
from aiotaskq.tasks import registry


@pytest.fixture
def define() -> Iterator[Callable[[str], Any]]:
    """Register tasks by name for one test; the registry is as it was afterwards."""
    before = dict(registry._tasks)

    def define(name: str) -> Any:
        def fn() -> None: ...

        return aiotaskq.task(name=name)(fn)

    yield define
    registry._tasks.clear()
    registry._tasks.update(before)


def _message(name: str) -> str:
    with pytest.raises(aiotaskq.TaskNotRegistered) as caught:
        registry.get_task(name)
    assert isinstance(caught.value, LookupError)
    return str(caught.value)


def test_it_lists_the_names_of_the_same_module_and_the_rename_advice(
    define: Callable[[str], Any],
) -> None:
    for name in ("shop.tasks.send_email", "shop.tasks.refund", "billing.tasks.send_mail"):
        define(name)
    message = _message("shop.tasks.send_mail")
    assert message.startswith("No task named 'shop.tasks.send_mail' is registered in this process.")
    # The module's names, the closest first; not the other module's.
    assert "Registered in shop.tasks: 'shop.tasks.send_email', 'shop.tasks.refund'." in message
    assert "billing" not in message
    assert '@task(name="shop.tasks.send_mail")' in message
    assert "renamed or moved to another module" in message
    assert "\n" not in message


def test_with_no_name_in_the_module_it_lists_the_closest(define: Callable[[str], Any]) -> None:
    define("shop.tasks.send_email")
    define("shop.tasks.refund")
    message = _message("shop.jobs.send_email")
    assert "The closest registered names: 'shop.tasks.send_email'" in message
    assert "Registered in" not in message


def test_with_nothing_close_it_says_only_what_to_do(define: Callable[[str], Any]) -> None:
    define("shop.tasks.refund")
    message = _message("zzz")
    assert "Registered in" not in message
    assert "closest" not in message
    assert 'list the module in AIOTASKQ["IMPORTS"]' in message


def test_a_module_of_500_tasks_gives_a_short_message(define: Callable[[str], Any]) -> None:
    for i in range(500):
        define(f"big.tasks.task_number_{i:03}_{'x' * 40}")
    message = _message("big.tasks.task_number_250")
    assert len(message) < 1500
    assert "'big.tasks.task_number_250_" in message  # the closest first
    assert "more." in message
    assert message.count("'big.tasks.") <= 1 + 6  # the missing name, and a few


def test_a_huge_missing_name_is_cut(define: Callable[[str], Any]) -> None:
    define("a.b")
    message = _message("a." + "n" * 100_000)
    assert len(message) < 2000
    assert "characters cut" in message
