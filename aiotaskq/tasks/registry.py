"""Task names to task objects. A worker runs only what a ``@task`` in its process registered:
a name read from a row is looked up here, never imported."""

from __future__ import annotations

import difflib
import functools
from typing import TYPE_CHECKING, Any

from ..errors import ConfigurationError, TaskNotRegistered
from ..tracebacks import cut_middle

if TYPE_CHECKING:
    from .task import Task

__all__ = ["get_task", "register", "registered"]

_tasks: dict[str, Task[Any, Any]] = {}
#: Changes when a task is registered: the advice of TaskNotRegistered is cached by it.
_version = 0

#: What TaskNotRegistered lists at most: a few names, a few hundred characters.
_LISTED_NAMES = 6
_LISTED_CHARS = 600


def register(task: Task[Any, Any]) -> None:
    """Add ``task``; a second, different function under the same name is a configuration error."""
    existing = _tasks.get(task.name)
    # The same function defined again (its module imported twice) replaces the old entry.
    if existing is not None and _origin(existing) != _origin(task):
        raise ConfigurationError(
            f"Two tasks are named {task.name!r}: {existing.fn.__module__}."
            f"{existing.fn.__qualname__} and {task.fn.__module__}.{task.fn.__qualname__}. "
            "Give one of them another name with @task(name=...)."
        )
    global _version
    _tasks[task.name] = task
    _version += 1


def _origin(task: Task[Any, Any]) -> tuple[str, str]:
    return task.fn.__module__, task.fn.__qualname__


def get_task(name: str) -> Task[Any, Any]:
    """The task registered as ``name``.

    Raises:
        TaskNotRegistered: no ``@task`` in this process has that name.
    """
    try:
        return _tasks[name]
    except KeyError:
        raise TaskNotRegistered(_not_registered(name, _version)) from None


@functools.lru_cache(maxsize=64)
def _not_registered(name: str, version: int) -> str:
    """The message of TaskNotRegistered: the registered names of the same module (the part
    of the name before its last dot), else the closest ones, and what to do. Cached: a
    backlog of rows of a removed task asks the same question for each of them."""
    shown = cut_middle(repr(name), 300)
    lines = [f"No task named {shown} is registered in this process."]
    module = name.rpartition(".")[0]
    siblings = [n for n in _tasks if module and n.rpartition(".")[0] == module]
    if siblings:
        lines.append(f"Registered in {cut_middle(module, 200)}: {_listing(name, siblings)}.")
    elif close := difflib.get_close_matches(name, list(_tasks), n=_LISTED_NAMES, cutoff=0.6):
        lines.append(f"The closest registered names: {_listing(name, close)}.")
    elif not _tasks:
        lines.append("No task at all is registered in this process.")
    example = cut_middle(name, 200)
    lines.append(
        "Import the module that defines it (a 'tasks' module of an installed app is imported "
        'by the worker, or list the module in AIOTASKQ["IMPORTS"]). If the task was renamed '
        "or moved to another module, the rows already queued keep its old name: put it on the "
        f'function, @task(name="{example}"), so that they still run.'
    )
    return " ".join(lines)


def _listing(name: str, names: list[str]) -> str:
    """The names closest to ``name`` first, quoted, as many as fit; then how many more."""
    ranked = sorted(names, key=lambda n: (-difflib.SequenceMatcher(None, name, n).ratio(), n))
    listed: list[str] = []
    size = 0
    for candidate in ranked[:_LISTED_NAMES]:
        quoted = repr(candidate)
        if listed and size + len(quoted) > _LISTED_CHARS:
            break
        listed.append(cut_middle(quoted, _LISTED_CHARS))
        size += len(quoted) + 2
    more = len(names) - len(listed)
    return ", ".join(listed) + (f" and {more} more" if more else "")


def registered() -> dict[str, Task[Any, Any]]:
    """A copy of the registry."""
    return dict(_tasks)
