"""The one enqueue path: validate options, encode arguments, build rows (pure), then write
them with :mod:`aiotaskq.db.enqueue`, synchronously on Django's connection or asynchronously
on the loop's pool. Every public enqueue method ends here."""

from __future__ import annotations

import datetime as dt
import math
import os
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from django.conf import settings as django_settings
from django.utils import timezone

from ..conf import get_settings, validate_queue
from ..db import enqueue as db_enqueue
from ..errors import InvalidArguments, InvalidPriority, InvalidSchedule
from ..serialization import encode_arguments
from . import eager, tracing
from .result import AsyncResult

if TYPE_CHECKING:
    from .task import Signature

__all__ = ["aenqueue_many", "build_row", "enqueue_many", "validate_queue"]

_INT32 = (-(2**31), 2**31 - 1)

Expires = dt.datetime | int | float | None


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
    id: uuid.UUID | None = None,
    max_bytes: int | None = None,
) -> db_enqueue.TaskRow:
    """Validate and encode one call; no I/O. ``id`` and ``max_bytes`` are for callers that
    build many rows at once (a new id; ``AIOTASKQ["MAX_ARGUMENTS_BYTES"]``).

    Raises:
        EnqueueError: a subclass naming the bad input (see :mod:`aiotaskq.errors`).
    """
    if countdown is None and eta is None and expires is None:
        eta_at = delay = expires_at = expires_in = None
    else:
        eta_at, delay, expires_at, expires_in = _schedule(countdown, eta, expires)
    args_json, kwargs_json = encode_arguments(
        name,
        args,
        kwargs,
        max_bytes=get_settings().MAX_ARGUMENTS_BYTES if max_bytes is None else max_bytes,
    )
    return db_enqueue.TaskRow(
        id=uuid.uuid4() if id is None else id,
        name=name,
        # A valid name, and, when AIOTASKQ["QUEUES"] is set, one of its queues: a typo is
        # refused here rather than waiting forever for a worker that serves it.
        queue=get_settings().check_known_queue(validate_queue(queue)),
        priority=_validate_priority(priority),
        args=args_json,
        kwargs=kwargs_json,
        eta=eta_at,
        countdown=delay,
        expires_at=expires_at,
        expires_in=expires_in,
        time_limit=None if time_limit is None else _positive_seconds("time_limit", time_limit),
        trace=tracing.carrier(),
    )


def _new_uuid_from_int(value: int) -> uuid.UUID:
    # What uuid.UUID(int=value) makes, without its checks: value is a 128-bit random
    # number with the version and variant bits already set.
    new = object.__new__(uuid.UUID)
    object.__setattr__(new, "int", value)
    object.__setattr__(new, "is_safe", uuid.SafeUUID.unknown)
    return new


_FAST_UUID = {"int", "is_safe"} <= set(getattr(uuid.UUID, "__slots__", ()))
# Keep the random bits, then set version 4 (bits 76-79) and the RFC 4122 variant (62-63).
_UUID4_MASK = ~((0xF << 76) | (0x3 << 62)) & ((1 << 128) - 1)
_UUID4_BITS = (0x4 << 76) | (0x2 << 62)


def new_ids(count: int) -> list[uuid.UUID]:
    """``count`` random (version 4) UUIDs: one read of the system's randomness for all."""
    if not _FAST_UUID or count < 8:
        return [uuid.uuid4() for _ in range(count)]
    raw = os.urandom(16 * count)
    from_bytes, mask, bits = int.from_bytes, _UUID4_MASK, _UUID4_BITS
    return [
        _new_uuid_from_int(from_bytes(raw[i : i + 16]) & mask | bits)
        for i in range(0, 16 * count, 16)
    ]


def _not_a_signature(item: object) -> InvalidArguments:
    name = getattr(item, "name", None)
    if callable(getattr(item, "s", None)) and isinstance(name, str):
        return InvalidArguments(
            f"enqueue_many takes signatures, got the task {name!r} itself: write "
            f"{getattr(item, '__name__', 'task')}.s(...) with the call's arguments, one "
            "signature per task to enqueue. Nothing of the batch was written."
        )
    text = repr(item)
    return InvalidArguments(
        "enqueue_many takes signatures (my_task.s(...)), got "
        f"{type(item).__name__} {text if len(text) <= 60 else text[:57] + '...'}. Nothing "
        "of the batch was written."
    )


def _rows(signatures: Iterable[Signature[Any, Any]]) -> list[db_enqueue.TaskRow]:
    sigs = signatures if isinstance(signatures, list | tuple) else list(signatures)
    if len(sigs) == 1:
        try:
            build = sigs[0].build_row
        except AttributeError:
            raise _not_a_signature(sigs[0]) from None
        return [build()]
    return list(_build(sigs, []))


def _build(
    sigs: Sequence[Signature[Any, Any]], built: list[db_enqueue.TaskRow]
) -> Iterator[db_enqueue.TaskRow]:
    """Build the rows of ``sigs`` one by one, keeping each in ``built`` too."""
    max_bytes = get_settings().MAX_ARGUMENTS_BYTES
    keep = built.append
    for sig, id in zip(sigs, new_ids(len(sigs)), strict=True):
        try:
            build = sig.build_row
        except AttributeError:
            raise _not_a_signature(sig) from None
        row = build(id=id, max_bytes=max_bytes)
        keep(row)
        yield row


def _streamed(sigs: Sequence[Signature[Any, Any]]) -> bool:
    """Whether ``sigs`` are many enough to be streamed into COPY (never in eager mode)."""
    return len(sigs) >= db_enqueue.COPY_MIN_ROWS and not get_settings().ALWAYS_EAGER


def enqueue_many(signatures: Iterable[Signature[Any, Any]]) -> Sequence[AsyncResult]:
    """Enqueue many tasks at once on Django's connection (joins ``atomic()``).

    All or none: one bad input raises and writes nothing (the caller's transaction stays
    usable). Large batches are written with COPY while they are built. One NOTIFY per queue is
    sent at commit. A signature with a unique key that a live task holds writes nothing (or
    replaces that task's arguments): its result is that task's. In eager mode
    (``ALWAYS_EAGER``) the tasks run at once instead (keys or not) and the results are
    :class:`~aiotaskq.tasks.result.EagerResult`.

    Raises:
        EnqueueError: bad input in any signature, or an item that is not a signature
            (:class:`~aiotaskq.errors.InvalidArguments`); DatabaseError: the write failed.
    """
    if not isinstance(signatures, list | tuple):
        signatures = list(signatures)
    if _streamed(signatures):
        built: list[db_enqueue.TaskRow] = []
        holders = db_enqueue.stream_sync(_build(signatures, built), get_settings().DATABASE)
        return _results(built, holders)
    rows = _rows(signatures)
    if get_settings().ALWAYS_EAGER:
        return eager.run_eagerly(rows)
    if not rows:
        return []
    return _results(rows, db_enqueue.insert_sync(rows, get_settings().DATABASE))


async def aenqueue_many(signatures: Iterable[Signature[Any, Any]]) -> Sequence[AsyncResult]:
    """The async twin of :func:`enqueue_many`: committed at once, no thread hop."""
    if not isinstance(signatures, list | tuple):
        signatures = list(signatures)
    if _streamed(signatures):
        built: list[db_enqueue.TaskRow] = []
        holders = await db_enqueue.stream(_build(signatures, built))
        return _results(built, holders)
    rows = _rows(signatures)
    if get_settings().ALWAYS_EAGER:
        return await eager.arun_eagerly(rows)
    if not rows:
        return []
    return _results(rows, await db_enqueue.insert(rows))


def _results(rows: Sequence[db_enqueue.TaskRow], holders: db_enqueue.Holders) -> list[AsyncResult]:
    """A result per row: its own task's, or, for a row whose unique key a live task holds,
    that task's."""
    if not holders:
        return [AsyncResult(row.id) for row in rows]
    return [AsyncResult(holders.get(row.id, row.id)) for row in rows]
