"""Fault tests record executions in a file ledger (see tests/app/tasks.py) and check it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest


class Ledger:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.touch()

    @property
    def env(self) -> dict[str, str]:
        return {"AIOTASKQ_TEST_LEDGER": str(self.path)}

    def lines(self) -> list[tuple[str, str, int]]:
        out = []
        text = self.path.read_text()
        # A task's line may be half written while this reads it (an O_APPEND write is one
        # call, but a reader can see the part before a page boundary first): complete lines
        # only.
        for line in text[: text.rfind("\n") + 1].splitlines():
            label, event, pid = line.split()
            out.append((label, event, int(pid)))
        return out

    def counts(self) -> Counter[str]:
        return Counter(label for label, event, _ in self.lines() if event == "ran")


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    return Ledger(tmp_path / "ledger.txt")


@pytest.fixture
def ledger_worker(worker: Any, ledger: Ledger) -> Callable[..., Any]:
    """``worker`` with the ledger's path in its environment."""

    def start(*args: str, env: dict[str, str] | None = None, **kwargs: Any) -> Any:
        return worker(*args, env={**ledger.env, **(env or {})}, **kwargs)

    return start
