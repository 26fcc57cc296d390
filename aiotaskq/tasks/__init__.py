"""Tasks: the decorator, signatures, the registry, and the one enqueue path."""

from .enqueue import aenqueue_many, enqueue_many
from .registry import get_task, registered
from .result import AsyncResult, EagerResult
from .task import Signature, Task, shared_task, task

__all__ = [
    "AsyncResult",
    "EagerResult",
    "Signature",
    "Task",
    "aenqueue_many",
    "enqueue_many",
    "get_task",
    "registered",
    "shared_task",
    "task",
]
