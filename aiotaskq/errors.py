"""Every exception aiotaskq raises derives from :class:`AiotaskqError`.

Bad input is refused at enqueue time, before anything is written, with an exception that is
also the matching built-in (``ValueError`` or ``TypeError``) so that existing ``except``
clauses keep working. Configuration problems are also ``ImproperlyConfigured``.
"""

from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured


class AiotaskqError(Exception):
    """The base of every aiotaskq exception."""


class ConfigurationError(AiotaskqError, ImproperlyConfigured):
    """The ``AIOTASKQ`` settings or the database configuration are not usable."""


class InvalidWorkerOptions(ConfigurationError):
    """A worker's options do not fit together or with ``AIOTASKQ["QUEUES"]``: queue caps
    that exceed its concurrency, or a queue that ``QUEUES`` does not know. The command line
    reports it as a mistake on the command line."""


class EnqueueError(AiotaskqError):
    """A task could not be enqueued because of its input; nothing was written."""


class ArgumentsNotSerializable(EnqueueError, TypeError, ValueError):
    """A task argument cannot be encoded as JSON, or holds text PostgreSQL cannot store (a NUL
    character, a lone surrogate). A ``TypeError`` and a ``ValueError``, as :mod:`json`'s own
    errors and ``UnicodeEncodeError`` are."""


class InvalidArguments(EnqueueError, TypeError):
    """``args`` that is not a list or tuple, ``kwargs`` that is not a mapping, or something
    that is not a signature given to ``enqueue_many``."""


class ArgumentsDoNotFit(InvalidArguments):
    """The arguments cannot be bound to the task function's parameters (too many, an unknown
    keyword, a missing required one): the call would fail in the worker."""


class ArgumentsTooLarge(EnqueueError, ValueError):
    """The encoded arguments are larger than ``AIOTASKQ["MAX_ARGUMENTS_BYTES"]``."""


class InvalidQueueName(EnqueueError, ValueError):
    """A queue name is empty, longer than 63 bytes, or not made of ``[A-Za-z0-9_.-]``."""


class InvalidSchedule(EnqueueError, ValueError):
    """``countdown`` together with ``eta``, a naive ``eta`` under ``USE_TZ``, or a bad value."""


class InvalidPriority(EnqueueError, TypeError, ValueError):
    """A priority that is not an ``int`` (a ``TypeError``) or is out of range (a ``ValueError``)."""


class InvalidUniqueKey(EnqueueError, TypeError, ValueError):
    """A ``unique_key`` that is not a non-empty string PostgreSQL can store (at most 255
    characters, no NUL, no lone surrogate), an ``on_conflict`` that is not ``"ignore"`` or
    ``"replace"``, or an ``on_conflict`` for a call without a key."""


class InvalidLimitKey(EnqueueError, TypeError, ValueError):
    """A call's limit key is not storable text, the task's ``limit_key`` function raised or
    returned something that is not a ``str`` or ``None``, or a ``limit_key`` was given for a
    task without limits."""


class TaskNotRegistered(AiotaskqError, LookupError):
    """A task name that no ``@task`` in this process has registered."""


class DatabaseError(AiotaskqError):
    """A database operation failed; the driver's exception is the ``__cause__``."""


class DatabaseUnreachable(DatabaseError, TimeoutError):
    """The database does not answer: async enqueue had no connection within
    ``AIOTASKQ["ENQUEUE_TIMEOUT"]`` seconds (nothing was written), or a worker knows it is in
    an outage (its statements then fail at once instead of waiting)."""


class TimeLimitExceeded(AiotaskqError, TimeoutError):
    """A coroutine task ran past its ``time_limit`` and was cancelled. It is a ``TimeoutError``,
    so ``autoretry_for=(TimeoutError,)`` retries it."""


class Revoked(AiotaskqError):
    """Recorded for a task that was revoked while it ran (the coroutine was cancelled)."""


class NotInTask(AiotaskqError, LookupError):
    """``current_task()`` was called outside a task run by a worker (or by eager mode)."""


class InvalidCheckpoint(AiotaskqError, TypeError, ValueError):
    """A checkpoint that is not JSON, holds text PostgreSQL cannot store, or is larger than
    ``AIOTASKQ["MAX_ARGUMENTS_BYTES"]``: nothing was written."""


class InvalidProgress(AiotaskqError, TypeError, ValueError):
    """``set_progress()`` with a ``done`` or ``total`` that is not a finite number >= 0, or a
    ``message`` that is not a str."""


class LeaseLost(AiotaskqError):
    """A write of an attempt that no longer holds its task (rescued as Dirty, re-run
    elsewhere, deleted): it changed nothing."""


class TaskFailed(AiotaskqError):
    """The task waited for failed for good: its last error's exception type (a dotted
    name), message and traceback text are in ``type``, ``message`` and ``traceback``."""

    def __init__(self, task_id: object, error_type: str, message: str, traceback: str) -> None:
        super().__init__(f"Task {task_id} failed: {error_type}: {message}")
        self.task_id = task_id
        self.type = error_type
        self.message = message
        self.traceback = traceback

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.task_id, self.type, self.message, self.traceback))
