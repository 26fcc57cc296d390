"""The one enqueue path: validate options, encode arguments, build rows (pure), then write
them with :mod:`aiotaskq.db.enqueue`, synchronously on Django's connection or asynchronously
on the loop's pool. Every public enqueue method ends here."""

from __future__ import annotations

import datetime as dt
import math
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from django.conf import settings as django_settings
from django.utils import timezone

from ..conf import get_settings
from ..db import enqueue as db_enqueue
from ..errors import InvalidPriority, InvalidQueueName, InvalidSchedule
from ..serialization import encode_arguments
from . import eager
from .result import AsyncResult

if TYPE_CHECKING:
    from .task import Signature

__all__ = ["aenqueue_many", "build_row", "enqueue_many", "validate_queue"]

_QUEUE_NAME = re.compile(r"[A-Za-z0-9_.\-]+")
_INT32 = (-(2**31), 2**31 - 1)

Expires = dt.datetime | int | float | None


def validate_queue(queue: object) -> str:
    """Return ``queue`` if it is a valid queue name.

    Raises:
        InvalidQueueName: empty, longer than 63 bytes, or not ``[A-Za-z0-9_.-]``.
    """
    if not isinstance(queue, str) or not queue:
        raise InvalidQueueName(f"The queue name must be a non-empty string, got {queue!r}.")
    if len(queue.encode()) > 63:
        raise InvalidQueueName(
            f"The queue name {queue[:20]!r}... is {len(queue.encode())} bytes; the limit is 63."
        )
    if not _QUEUE_NAME.fullmatch(queue):
        raise InvalidQueueName(
            f"The queue name {queue!r} may contain only letters, digits, '_', '.' and '-'."
        )
    return queue


def _validate_priority(priority: object) -> int:
    if not isinstance(priority, int) or isinstance(priority, bool):
        raise InvalidPriority(f"priority must be an int (higher runs first), got {priority!r}.")
    if not _INT32[0] <= priority <= _INT32[1]:
        raise InvalidPriority(f"priority {priority} is outside the 32-bit integer range.")
    return priority


def _seconds(option: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidSchedule(f"{option} must be a finite number of seconds, got {value!r}.")
    return float(value)


def _positive_seconds(option: str, value: object) -> float:
    seconds = _seconds(option, value)
    if seconds <= 0:
        raise InvalidSchedule(f"{option} must be a positive number of seconds, got {value!r}.")
    return seconds


def _aware(option: str, value: dt.datetime) -> dt.datetime:
    if timezone.is_aware(value):
        return value
    if django_settings.USE_TZ:
        raise InvalidSchedule(
            f"{option}={value!r} is a naive datetime while USE_TZ is on. Pass an aware one, "
            "for example django.utils.timezone.now() + timedelta(...)."
        )
    return timezone.make_aware(value, timezone.get_default_timezone())


def _schedule(
    countdown: object, eta: object, expires: object
) -> tuple[dt.datetime | None, float | None, dt.datetime | None, float | None]:
    if countdown is not None and eta is not None:
        raise InvalidSchedule(
            "countdown and eta were both given; pass one: countdown (seconds from now) or eta "
            "(a datetime)."
        )
    eta_at: dt.datetime | None = None
    if eta is not None:
        if not isinstance(eta, dt.datetime):
            raise InvalidSchedule(f"eta must be a datetime, got {eta!r}.")
        eta_at = _aware("eta", eta)
    delay = None if countdown is None else _seconds("countdown", countdown)
    expires_at: dt.datetime | None = None
    expires_in: float | None = None
    if isinstance(expires, dt.datetime):
        expires_at = _aware("expires", expires)
    elif expires is not None:
        expires_in = _seconds("expires", expires)
    return eta_at, delay, expires_at, expires_in


def build_row(
    name: str,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    *,
    queue: object,
    priority: object,
    countdown: object = None,
    eta: object = None,
    expires: object = None,
    time_limit: object = None,
) -> db_enqueue.TaskRow:
    """Validate and encode one call; no I/O.

    Raises:
        EnqueueError: a subclass naming the bad input (see :mod:`aiotaskq.errors`).
    """
    eta_at, delay, expires_at, expires_in = _schedule(countdown, eta, expires)
    args_json, kwargs_json = encode_arguments(
        name, args, kwargs, max_bytes=get_settings().MAX_ARGUMENTS_BYTES
    )
    return db_enqueue.TaskRow(
        id=uuid.uuid4(),
        name=name,
        queue=validate_queue(queue),
        priority=_validate_priority(priority),
        args=args_json,
        kwargs=kwargs_json,
        eta=eta_at,
        countdown=delay,
        expires_at=expires_at,
        expires_in=expires_in,
        time_limit=None if time_limit is None else _positive_seconds("time_limit", time_limit),
    )


def _rows(signatures: Iterable[Signature[Any, Any]]) -> list[db_enqueue.TaskRow]:
    return [sig.build_row() for sig in signatures]


def enqueue_many(signatures: Iterable[Signature[Any, Any]]) -> Sequence[AsyncResult]:
    """Enqueue many tasks in one statement on Django's connection (joins ``atomic()``).

    Every signature is validated before anything is written: one bad input writes nothing.
    One NOTIFY per queue is sent at commit. In eager mode (``ALWAYS_EAGER``) the tasks run at
    once instead and the results are :class:`~aiotaskq.tasks.result.EagerResult`.

    Raises:
        EnqueueError: bad input in any signature; DatabaseError: the write failed.
    """
    rows = _rows(signatures)
    if get_settings().ALWAYS_EAGER:
        return eager.run_eagerly(rows)
    if rows:
        db_enqueue.insert_sync(rows, get_settings().DATABASE)
    return [AsyncResult(row.id) for row in rows]


async def aenqueue_many(signatures: Iterable[Signature[Any, Any]]) -> Sequence[AsyncResult]:
    """The async twin of :func:`enqueue_many`: one autocommit statement, no thread hop."""
    rows = _rows(signatures)
    if get_settings().ALWAYS_EAGER:
        return await eager.arun_eagerly(rows)
    if rows:
        await db_enqueue.insert(rows)
    return [AsyncResult(row.id) for row in rows]
