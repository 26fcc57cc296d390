"""What an attempt's ending becomes: pure decisions, no I/O.

Whatever a task returns or raises, and whatever its exception object does when it is looked
at (a ``__str__`` that raises, a message with NUL characters or lone surrogates, a
``BaseException`` of its own), the attempt ends as exactly one :data:`~aiotaskq.db.finish.Outcome`
that PostgreSQL can store: text is made storable (NUL characters and lone surrogates written
as escapes), messages and tracebacks are capped (:mod:`aiotaskq.tracebacks`), and delays are
numbers within range.
"""

from __future__ import annotations

import datetime as dt
import inspect
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.utils import timezone

from ..db.finish import Ack, Failed, KeptResult, Lease, Outcome, Retried
from ..errors import Revoked
from ..retry import Decision, Retry, Snooze
from ..serialization import decode_arguments
from ..tasks.task import Task
from ..tracebacks import format_task_traceback, safe_str

__all__ = ["Attempt", "failure", "snooze", "storable", "success"]

#: The longest delay a retry or a snooze may ask for (about 31 years); longer ones are cut.
MAX_DELAY = 1e9

_NUL_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


@dataclass(frozen=True, slots=True)
class Attempt:
    """What the decisions need to know of the attempt that ended."""

    lease: Lease
    name: str
    queue: str
    #: Failed attempts before this one (the retries already spent).
    retries: int
    worker_id: str

    @property
    def number(self) -> int:
        return self.lease[1]


def storable(text: str) -> str:
    """``text`` as PostgreSQL can store it in jsonb: NUL characters as ``\\x00`` and lone
    surrogates as ``\\udXXX`` escapes; any other text is returned as it is."""
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def _type_path(exc: BaseException) -> str:
    cls = type(exc)
    try:
        return storable(f"{cls.__module__}.{cls.__qualname__}")
    except Exception:
        return storable(repr(cls))


def error_json(
    attempt: Attempt,
    exc: BaseException,
    outcome: str,
    *,
    reason: str | None = None,
    fn: Callable[..., Any] | None = None,
) -> str:
    """The JSON object kept in the row's ``errors`` for a failed attempt."""
    return json.dumps(
        {
            "attempt": attempt.number,
            "outcome": storable(outcome),
            "type": _type_path(exc),
            "message": storable(reason if reason is not None else safe_str(exc)),
            "traceback": storable(format_task_traceback(exc, fn)),
            "worker_id": storable(attempt.worker_id),
            "at": dt.datetime.now(dt.UTC).isoformat(),
        }
    )


def minimal_error_json(attempt: Attempt, message: str) -> str:
    """An error object that is always storable: for an outcome whose own record was refused."""
    return json.dumps(
        {
            "attempt": attempt.number,
            "outcome": "failed",
            "type": "aiotaskq.errors.OutcomeNotStorable",
            "message": storable(message)[:4096],
            "traceback": "",
            "worker_id": storable(attempt.worker_id),
            "at": dt.datetime.now(dt.UTC).isoformat(),
        }
    )


def result_json(value: Any) -> str:
    """A kept return value as JSON that PostgreSQL stores.

    Raises:
        TypeError: the value is not JSON (or holds NaN, an infinity, a NUL character or a lone
            surrogate); the attempt then fails with this reason.
    """
    try:
        text = json.dumps(value, allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise TypeError(f"The task's return value cannot be kept as JSON: {exc}") from None
    if "\\u0000" in text and _NUL_ESCAPE.search(text):
        raise TypeError("The task's return value cannot be kept: it holds a NUL character.")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise TypeError(
            "The task's return value cannot be kept: it holds a lone surrogate character."
        ) from None
    return text


def success(attempt: Attempt, task: Task[Any, Any], value: Any) -> Outcome:
    """The outcome of an attempt that returned ``value``."""
    if task.result_retention is None:
        return Ack(attempt.lease)
    try:
        text = result_json(value)
    except TypeError as exc:
        return Failed(attempt.lease, error_json(attempt, exc, "failed: result not storable"))
    return KeptResult(attempt.lease, text, float(task.result_retention))


def _seconds(value: Any, default: float) -> float:
    """A delay in seconds within [0, MAX_DELAY]; ``default`` for what is not a number."""
    try:
        seconds = float(value)
    except OverflowError:  # an int too large for a float
        return MAX_DELAY if value > 0 else 0.0
    except (TypeError, ValueError):
        return default
    if math.isnan(seconds):
        return default
    return min(max(seconds, 0.0), MAX_DELAY)


def _eta(value: Any) -> str | None:
    if not isinstance(value, dt.datetime):
        return None
    try:
        if timezone.is_naive(value):
            value = timezone.make_aware(value, timezone.get_default_timezone())
        return str(value.isoformat())
    except (ValueError, OverflowError):
        return None


def snooze(attempt: Attempt, exc: Snooze) -> Retried:
    """A snoozed attempt: run again later, no error recorded, no attempt spent."""
    try:
        seconds = _seconds(exc.seconds, 0.0)
    except Exception:
        seconds = 0.0
    return Retried(attempt.lease, attempt.queue, None, countdown=seconds)


def failure(
    attempt: Attempt,
    task: Task[Any, Any] | None,
    exc: BaseException,
    args_json: str,
    kwargs_json: str,
) -> tuple[Outcome, str]:
    """What a failed attempt becomes: retried if the task's policy says so, else Failed.
    Returns the outcome and the words for the log (``retry 2 in 4.0 s``, ``failed: ...``).
    Never raises: an exception that cannot even be examined fails the attempt."""
    try:
        return _failure(attempt, task, exc, args_json, kwargs_json)
    except Exception as broken:
        words = f"failed: the exception could not be examined ({type(broken).__name__})"
        try:
            error = error_json(attempt, exc, words)
        except Exception:
            error = minimal_error_json(attempt, words)
        return Failed(attempt.lease, error), words


def _failure(
    attempt: Attempt,
    task: Task[Any, Any] | None,
    exc: BaseException,
    args_json: str,
    kwargs_json: str,
) -> tuple[Outcome, str]:
    fn = task.fn if task is not None else None
    reason = _reason(task, exc, args_json, kwargs_json)
    decision = Decision(action="fail")
    if task is not None and reason is None:
        decision = task.policy.decide(exc, attempt.retries)
    recorded = exc
    if isinstance(exc, Retry) and isinstance(exc.exc, BaseException):
        recorded = exc.exc
    if decision.action == "retry":
        eta = _eta(decision.eta)
        countdown = None
        if eta is None:
            default = task.policy.delay(attempt.retries) if task is not None else 0.0
            countdown = _seconds(decision.countdown, default)
        words = f"retry {attempt.retries + 1} " + (
            f"at {eta}" if eta is not None else f"in {countdown:.1f} s"
        )
        error = error_json(attempt, recorded, words, reason=reason, fn=fn)
        return Retried(attempt.lease, attempt.queue, error, countdown=countdown, eta=eta), words
    words = _final_words(task, exc, attempt.retries, reason)
    return Failed(attempt.lease, error_json(attempt, recorded, words, reason=reason, fn=fn)), words


def _final_words(
    task: Task[Any, Any] | None, exc: BaseException, retries: int, reason: str | None
) -> str:
    if isinstance(exc, Revoked):
        return "failed: revoked"
    if task is None or reason is not None:
        return "failed: cannot run"
    policy = task.policy
    limit = (
        exc.max_retries
        if isinstance(exc, Retry) and exc.max_retries is not None
        else policy.max_retries
    )
    if isinstance(exc, Retry) or policy.retries_automatically(exc):
        return f"failed: no retries left ({retries} of max_retries={limit})"
    if not isinstance(exc, Exception):
        return f"failed: {type(exc).__name__} is a BaseException, not an Exception"
    if policy.autoretry_for:
        return f"failed: {type(exc).__name__} is not retried (not in autoretry_for)"
    return "failed"


def _reason(
    task: Task[Any, Any] | None, exc: BaseException, args_json: str, kwargs_json: str
) -> str | None:
    """A clearer message for the two failures that are not the task's own."""
    if task is None:
        return safe_str(exc)
    if isinstance(exc, TypeError):
        try:
            args, kwargs = decode_arguments(args_json, kwargs_json)
            if task.wants_attempt:
                args.insert(0, None)
            inspect.signature(task.fn).bind(*args, **kwargs)
        except TypeError as bind_error:
            return (
                f"The stored arguments no longer fit the task's signature: {bind_error}. "
                "Fix the row's arguments and run it again, or delete it."
            )
        except ValueError:
            return None
    return None
