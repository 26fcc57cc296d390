"""aiotaskq: an asyncio-native task queue for ASGI Django whose only broker is PostgreSQL."""

from .errors import (
    AiotaskqError,
    ArgumentsNotSerializable,
    ArgumentsTooLarge,
    ConfigurationError,
    DatabaseError,
    EnqueueError,
    InvalidPriority,
    InvalidQueueName,
    InvalidSchedule,
    TaskNotRegistered,
)
from .tasks import (
    AsyncResult,
    Signature,
    Task,
    aenqueue_many,
    enqueue_many,
    shared_task,
    task,
)

__version__ = "0.1.0.dev0"

__all__ = [
    "AiotaskqError",
    "ArgumentsNotSerializable",
    "ArgumentsTooLarge",
    "AsyncResult",
    "ConfigurationError",
    "DatabaseError",
    "EnqueueError",
    "InvalidPriority",
    "InvalidQueueName",
    "InvalidSchedule",
    "Signature",
    "Task",
    "TaskNotRegistered",
    "aenqueue_many",
    "enqueue_many",
    "shared_task",
    "task",
]
