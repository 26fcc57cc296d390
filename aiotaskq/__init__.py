"""aiotaskq: an asyncio-native task queue for ASGI Django whose only broker is PostgreSQL."""

from .errors import (
    AiotaskqError,
    ArgumentsDoNotFit,
    ArgumentsNotSerializable,
    ArgumentsTooLarge,
    ConfigurationError,
    DatabaseError,
    DatabaseUnreachable,
    EnqueueError,
    InvalidArguments,
    InvalidPriority,
    InvalidQueueName,
    InvalidSchedule,
    InvalidWorkerOptions,
    Revoked,
    TaskNotRegistered,
    TimeLimitExceeded,
)
from .retry import Retry, Snooze
from .tasks import (
    AsyncResult,
    EagerResult,
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
    "ArgumentsDoNotFit",
    "ArgumentsNotSerializable",
    "ArgumentsTooLarge",
    "AsyncResult",
    "ConfigurationError",
    "DatabaseError",
    "DatabaseUnreachable",
    "EagerResult",
    "EnqueueError",
    "InvalidArguments",
    "InvalidPriority",
    "InvalidQueueName",
    "InvalidSchedule",
    "InvalidWorkerOptions",
    "Retry",
    "Revoked",
    "Signature",
    "Snooze",
    "Task",
    "TaskNotRegistered",
    "TimeLimitExceeded",
    "aenqueue_many",
    "enqueue_many",
    "shared_task",
    "task",
]
