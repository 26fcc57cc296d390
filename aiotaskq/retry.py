"""Retries, Celery-style: the policy a task declares, and the exceptions a task raises to ask
for another attempt (:class:`Retry`) or for a later one that costs none (:class:`Snooze`).

Pure: no I/O. The worker asks the policy what to do with each failed attempt.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass
from typing import Literal

__all__ = ["DEFAULT_RETRY_DELAY", "Decision", "Retry", "RetryPolicy", "Snooze"]

#: Seconds before a retry when neither ``countdown`` nor a backoff is given (Celery's
#: ``default_retry_delay``).
DEFAULT_RETRY_DELAY = 180.0
#: Celery's default ``max_retries``.
DEFAULT_MAX_RETRIES = 3

_rng = random.Random()


class Retry(Exception):
    """Raise inside a task to run it again later; the attempt counts as a failure.

    ``countdown`` (seconds) or ``eta`` (a datetime) say when; without either the task's
    policy decides (its ``retry_kwargs["countdown"]`` or its backoff). ``exc`` is the error
    recorded for this attempt (and raised as the reason if no retry is left).
    ``max_retries`` overrides the task's for this decision. The arguments never change: a
    different call is a new task.
    """

    def __init__(
        self,
        countdown: float | None = None,
        eta: dt.datetime | None = None,
        exc: BaseException | None = None,
        max_retries: int | None = None,
    ) -> None:
        if countdown is not None and eta is not None:
            raise ValueError("Retry takes countdown or eta, not both.")
        self.countdown = countdown
        self.eta = eta
        self.exc = exc
        self.max_retries = max_retries
        super().__init__(f"Retry in {countdown} s" if countdown is not None else "Retry")


class Snooze(Exception):
    """Raise inside a task to run it again in ``seconds`` without spending an attempt: for a
    webhook answered with HTTP 429 or 503 and a ``Retry-After`` header, say. No error is
    recorded and the retry budget is untouched."""

    def __init__(self, seconds: float) -> None:
        if not isinstance(seconds, int | float) or isinstance(seconds, bool) or seconds < 0:
            raise ValueError(f"Snooze takes a number of seconds >= 0, got {seconds!r}.")
        self.seconds = float(seconds)
        super().__init__(f"Snooze for {self.seconds:g} s")


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """What becomes of a failed attempt: ``retry`` after ``countdown`` seconds (or at
    ``eta``), or ``fail`` for good."""

    action: Literal["retry", "fail"]
    countdown: float | None = None
    eta: dt.datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """A task's retry settings, with Celery's meanings and defaults.

    - ``autoretry_for``: exception types that are retried by themselves; ``dont_autoretry_for``
      excludes subclasses of those.
    - ``max_retries``: retries after the first attempt (default 3; ``None``: no limit).
    - ``retry_kwargs``: ``{"max_retries": ..., "countdown": ...}`` as in Celery; they win over
      the plain options.
    - ``retry_backoff``: ``False`` (fixed ``countdown``, default 180 s), ``True`` (1 s doubled
      at each retry) or a number of seconds to double from; capped by ``retry_backoff_max``
      (600 s); ``retry_jitter`` (on by default) then draws the delay from ``[0, delay]``.
    """

    autoretry_for: tuple[type[BaseException], ...] = ()
    dont_autoretry_for: tuple[type[BaseException], ...] = ()
    max_retries: int | None = DEFAULT_MAX_RETRIES
    countdown: float = DEFAULT_RETRY_DELAY
    retry_backoff: bool | float = False
    retry_backoff_max: float = 600.0
    retry_jitter: bool = True

    @classmethod
    def build(
        cls,
        *,
        autoretry_for: tuple[type[BaseException], ...] = (),
        dont_autoretry_for: tuple[type[BaseException], ...] = (),
        max_retries: int | None = DEFAULT_MAX_RETRIES,
        retry_kwargs: dict[str, float | int | None] | None = None,
        retry_backoff: bool | float = False,
        retry_backoff_max: float = 600.0,
        retry_jitter: bool = True,
    ) -> RetryPolicy:
        """Validate the options; raise ``TypeError``/``ValueError`` naming the bad one."""
        for name, types in (
            ("autoretry_for", autoretry_for),
            ("dont_autoretry_for", dont_autoretry_for),
        ):
            if not isinstance(types, tuple) or not all(
                isinstance(t, type) and issubclass(t, BaseException) for t in types
            ):
                raise TypeError(f"{name} must be a tuple of exception classes, got {types!r}.")
        kwargs = dict(retry_kwargs or {})
        unknown = set(kwargs) - {"max_retries", "countdown"}
        if unknown:
            raise ValueError(
                f"retry_kwargs takes max_retries and countdown, not {', '.join(sorted(unknown))}."
            )
        if "max_retries" in kwargs:
            max_retries = None if kwargs["max_retries"] is None else int(kwargs["max_retries"])
        if max_retries is not None and max_retries < 0:
            raise ValueError(f"max_retries must be >= 0 or None, got {max_retries!r}.")
        countdown = kwargs.get("countdown")
        if countdown is not None and countdown < 0:
            raise ValueError(f"retry_kwargs['countdown'] must be >= 0, got {countdown!r}.")
        if isinstance(retry_backoff, bool) is False and (
            not isinstance(retry_backoff, int | float) or retry_backoff <= 0
        ):
            raise ValueError(
                f"retry_backoff must be True, False or a number of seconds, got {retry_backoff!r}."
            )
        return cls(
            autoretry_for=autoretry_for,
            dont_autoretry_for=dont_autoretry_for,
            max_retries=max_retries,
            countdown=DEFAULT_RETRY_DELAY if countdown is None else float(countdown),
            retry_backoff=retry_backoff,
            retry_backoff_max=float(retry_backoff_max),
            retry_jitter=retry_jitter,
        )

    def retries_automatically(self, exc: BaseException) -> bool:
        return isinstance(exc, self.autoretry_for) and not isinstance(exc, self.dont_autoretry_for)

    def delay(self, retries: int, rng: random.Random | None = None) -> float:
        """Seconds before retry number ``retries + 1`` (``retries`` already happened)."""
        if self.retry_backoff is False:
            return self.countdown
        factor = 1.0 if self.retry_backoff is True else float(self.retry_backoff)
        delay = min(self.retry_backoff_max, factor * 2.0**retries)
        if self.retry_jitter:
            delay = (rng or _rng).uniform(0, delay)
        return delay

    def decide(self, exc: BaseException, retries: int) -> Decision:
        """What to do after an attempt raised ``exc``, ``retries`` retries having happened."""
        if isinstance(exc, Retry):
            limit = exc.max_retries if exc.max_retries is not None else self.max_retries
            if limit is not None and retries >= limit:
                return Decision(action="fail")
            if exc.eta is not None:
                return Decision(action="retry", eta=exc.eta)
            countdown = exc.countdown if exc.countdown is not None else self.delay(retries)
            return Decision(action="retry", countdown=countdown)
        if not self.retries_automatically(exc):
            return Decision(action="fail")
        if self.max_retries is not None and retries >= self.max_retries:
            return Decision(action="fail")
        return Decision(action="retry", countdown=self.delay(retries))
