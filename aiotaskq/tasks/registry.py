"""Task names to task objects. A worker runs only what a ``@task`` in its process registered:
a name read from a row is looked up here, never imported."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import ConfigurationError, TaskNotRegistered

if TYPE_CHECKING:
    from .task import Task

__all__ = ["get_task", "register", "registered"]

_tasks: dict[str, Task[Any, Any]] = {}


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
    _tasks[task.name] = task


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
        raise TaskNotRegistered(
            f"No task named {name!r} is registered in this process. Import the module that "
            "defines it (a 'tasks' module of an installed app is imported by the worker, or "
            'list the module in AIOTASKQ["IMPORTS"]).'
        ) from None


def registered() -> dict[str, Task[Any, Any]]:
    """A copy of the registry."""
    return dict(_tasks)
