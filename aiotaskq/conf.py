"""Typed settings read from ``settings.AIOTASKQ``; every key has a default.

The values are read once and cached; Django's ``setting_changed`` signal (sent by
``override_settings``) clears the cache so tests can change them.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from functools import cache
from typing import Any

from django.conf import settings as django_settings
from django.core.signals import setting_changed

from .errors import ConfigurationError, InvalidQueueName

__all__ = ["QueueSettings", "Settings", "get_settings", "validate_queue"]

_QUEUE_NAME = re.compile(r"[A-Za-z0-9_.\-]+")
_valid_queues: set[str] = set()


def validate_queue(queue: object) -> str:
    """Return ``queue`` if it is a valid queue name (whether or not ``QUEUES`` knows it).

    Raises:
        InvalidQueueName: empty, longer than 63 bytes, or not ``[A-Za-z0-9_.-]``.
    """
    if type(queue) is str and queue in _valid_queues:
        return queue
    if not isinstance(queue, str) or not queue:
        raise InvalidQueueName(f"The queue name must be a non-empty string, got {shown(queue)}.")
    if len(queue.encode(errors="surrogatepass")) > 63:
        raise InvalidQueueName(
            f"The queue name {queue[:20]!r}... is "
            f"{len(queue.encode(errors='surrogatepass'))} bytes; the limit is 63."
        )
    if not _QUEUE_NAME.fullmatch(queue):
        raise InvalidQueueName(
            f"The queue name {queue!r} may contain only letters, digits, '_', '.' and '-'."
        )
    if len(_valid_queues) < 1024:  # a program has a few queues; a bound all the same
        _valid_queues.add(queue)
    return queue


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueSettings:
    """One entry of ``AIOTASKQ["QUEUES"]``: what every worker serving the queue applies."""

    #: The most tasks of this queue one worker runs at once; reserved out of its
    #: ``--concurrency``. ``--queues NAME:N`` overrides it. ``None``: the queue shares what
    #: the capped queues leave.
    concurrency: int | None = None
    #: The time limit (seconds) of its tasks that have none of their own (the call's, then
    #: the task's, come first).
    time_limit: float | None = None
    #: Threads of its own for plain-function tasks, so they never wait for (or hold) a
    #: thread of the worker's shared ``--threads`` pool. ``None``: the shared pool.
    threads: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """The effective configuration. Keys of ``AIOTASKQ`` are these names in upper case."""

    #: The Django database alias that holds the task table.
    DATABASE: str = "default"
    #: The queue of a task that names none.
    DEFAULT_QUEUE: str = "default"
    #: A running task whose heartbeat is older than this many seconds is Dirty.
    DIRTY_AFTER: float = 10.0
    #: How often a worker writes the heartbeat of its in-flight tasks, in seconds.
    HEARTBEAT_INTERVAL: float = 1.0
    #: The safety poll: a worker claims at least this often even without a notification.
    POLL_INTERVAL: float = 5.0
    #: The largest encoded arguments (JSON bytes of args and kwargs together) accepted.
    MAX_ARGUMENTS_BYTES: int = 1024 * 1024
    #: The most tasks one claim statement takes.
    CLAIM_BATCH: int = 500
    #: Modules a worker imports at start, beside each installed app's ``tasks`` module.
    IMPORTS: tuple[str, ...] = ()
    #: Import the ``tasks`` module of every installed app when a worker starts.
    AUTODISCOVER: bool = True
    #: Use LISTEN/NOTIFY for wake-ups; ``False`` means polling only (for example behind a
    #: transaction-mode pooler without ``LISTEN_DSN``).
    LISTEN: bool = True
    #: A connection string for the listening connection when the Django database goes
    #: through a pooler that cannot hold a session.
    LISTEN_DSN: str | None = None
    #: Whether aiotaskq's own connections (the worker's, the async enqueue pool's) prepare
    #: their statements and keep the worker's session settings. ``None``: they do, unless
    #: ``DATABASES[DATABASE]["OPTIONS"]["prepare_threshold"]`` is set to ``None`` (the user
    #: told Django the same). ``False`` behind a pooler in transaction mode, which hands
    #: each transaction to any server connection: a statement prepared on one is missing
    #: on the next, and a ``SET`` would reach other clients of the pool.
    PREPARE: bool | None = None
    #: Largest size of the worker's connection pool (claims, acks, heartbeats).
    WORKER_POOL_SIZE: int = 3
    #: Largest size of the pool used by ``adelay`` / ``aapply_async`` in each event loop.
    ENQUEUE_POOL_SIZE: int = 10
    #: Seconds an async enqueue (``adelay``, ``aapply_async``, ``aenqueue_many``) waits for
    #: a connection before it raises ``DatabaseUnreachable``.
    ENQUEUE_TIMEOUT: float = 5.0
    #: Run tasks at once in the caller instead of enqueueing them (for tests). Celery's
    #: ``CELERY_TASK_ALWAYS_EAGER`` setting turns it on too.
    ALWAYS_EAGER: bool = False
    #: In eager mode, raise a task's exception in the caller (``CELERY_TASK_EAGER_PROPAGATES``
    #: too) instead of keeping it in the returned ``EagerResult``.
    EAGER_PROPAGATES: bool = False
    #: Per-queue settings (``{"exports": {"concurrency": 2, "time_limit": 1800, "threads":
    #: 2}}``). When set, it is also the list of queues: enqueueing to another queue (other
    #: than ``DEFAULT_QUEUE``) raises ``InvalidQueueName``.
    QUEUES: Mapping[str, QueueSettings] = field(default_factory=dict)
    #: Serve Prometheus metrics on this port from ``aiotaskq run`` (``--metrics-port`` wins;
    #: docs/operations.md). ``None``: not served (the view ``aiotaskq.metrics.view`` can be).
    METRICS_PORT: int | None = None
    #: Seconds between a worker's reads of its queues' depths for the metrics (one
    #: ``aiotaskq status`` query, which counts the table's rows); 0: never.
    METRICS_DEPTH_EVERY: float = 10.0

    def known_queue(self, queue: str) -> bool:
        """Whether ``queue`` may be enqueued to: any name without ``QUEUES``, else one of
        its keys or ``DEFAULT_QUEUE``."""
        return not self.QUEUES or queue in self.QUEUES or queue == self.DEFAULT_QUEUE

    def check_known_queue(self, queue: str) -> str:
        """Return ``queue`` if :meth:`known_queue`.

        Raises:
            InvalidQueueName: ``QUEUES`` is set and does not name it (nor is it the default).
        """
        if self.known_queue(queue):
            return queue
        known = sorted({*self.QUEUES, self.DEFAULT_QUEUE})
        near = difflib.get_close_matches(queue, known, n=1)
        hint = f' Did you mean "{near[0]}"?' if near else ""
        raise InvalidQueueName(
            f'The queue {queue!r} is not in AIOTASKQ["QUEUES"]; the known queues are '
            f"{', '.join(known)}.{hint}"
        )


_FIELDS = {f.name: f for f in fields(Settings)}


_QUEUE_KEYS = {f.name for f in fields(QueueSettings)}


#: Bounds of the per-queue numbers: far past any real use, and small enough that every
#: later computation (timers, sums, messages) is plain.
MAX_SLOTS = 1_000_000
MAX_TIME_LIMIT = 366 * 24 * 3600.0


def shown(value: object, width: int = 60) -> str:
    """``repr(value)`` cut to ``width`` characters, on one line, whatever the value (an int
    of 5,000 digits has no ``repr``)."""
    try:
        text = repr(value)
    except Exception:
        text = f"<{type(value).__name__}>"
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def _queue_option(queue: str, key: str, value: Any) -> int | float:
    where = f'AIOTASKQ["QUEUES"][{queue!r}][{key!r}]'
    if key == "time_limit":
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            # isfinite() of an int past a float's range raises: only floats are asked.
            or (isinstance(value, float) and not math.isfinite(value))
            or not 0 < value <= MAX_TIME_LIMIT
        ):
            raise ConfigurationError(
                f"{where} must be a positive number of seconds (a year at most), "
                f"got {shown(value)}."
            )
        return float(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_SLOTS:
        raise ConfigurationError(
            f"{where} must be a positive integer (at most {MAX_SLOTS:,}), got {shown(value)}."
        )
    return value


def _queues(value: Any) -> dict[str, QueueSettings]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigurationError(
            'AIOTASKQ["QUEUES"] must be a dict of queue names to their settings, '
            f"got {type(value).__name__}."
        )
    queues: dict[str, QueueSettings] = {}
    for queue, options in value.items():
        try:
            validate_queue(queue)
        except InvalidQueueName as exc:
            raise ConfigurationError(
                f'AIOTASKQ["QUEUES"] has a bad queue name: {exc}'.replace("\n", " ")
            ) from None
        if options is None:
            options = {}
        if not isinstance(options, Mapping):
            raise ConfigurationError(
                f'AIOTASKQ["QUEUES"][{queue!r}] must be a dict (concurrency, time_limit, '
                f"threads), got {type(options).__name__}."
            )
        values: dict[str, Any] = {}
        for key, option in options.items():
            if key not in _QUEUE_KEYS:
                near = difflib.get_close_matches(str(key), sorted(_QUEUE_KEYS), n=1)
                hint = f' Did you mean "{near[0]}"?' if near else ""
                raise ConfigurationError(
                    f'Unknown key {shown(key)} in AIOTASKQ["QUEUES"][{queue!r}]; the keys are '
                    f"concurrency, threads and time_limit.{hint}"
                )
            values[key] = _queue_option(queue, key, option)
        queues[queue] = QueueSettings(**values)
    return queues


def _coerce(name: str, value: Any) -> Any:
    if name == "QUEUES":
        return _queues(value)
    default = _FIELDS[name].default
    if name == "IMPORTS":
        if isinstance(value, str) or not all(isinstance(v, str) for v in value):
            raise ConfigurationError(
                f'AIOTASKQ["IMPORTS"] must be a list of module paths, got {value!r}.'
            )
        return tuple(value)
    if name == "METRICS_PORT":
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536
        ):
            raise ConfigurationError(
                f'AIOTASKQ["METRICS_PORT"] must be a TCP port (1-65535) or None, got '
                f"{shown(value)}."
            )
        return value
    if name == "METRICS_DEPTH_EVERY":
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not 0 <= value <= 86400  # NaN fails this too
        ):
            raise ConfigurationError(
                f'AIOTASKQ["METRICS_DEPTH_EVERY"] must be a number of seconds from 0 (never) '
                f"to 86400, got {shown(value)}."
            )
        return float(value)
    if name == "LISTEN_DSN":
        if value is not None and not isinstance(value, str):
            raise ConfigurationError(f'AIOTASKQ["LISTEN_DSN"] must be a string, got {value!r}.')
        return value
    if name == "PREPARE":
        if value is not None and not isinstance(value, bool):
            raise ConfigurationError(
                f'AIOTASKQ["PREPARE"] must be True, False or None, got {shown(value)}.'
            )
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigurationError(f'AIOTASKQ["{name}"] must be True or False, got {value!r}.')
        return value
    if isinstance(default, int | float):
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise ConfigurationError(
                f'AIOTASKQ["{name}"] must be a positive number, got {value!r}.'
            )
        return type(default)(value)
    if isinstance(default, str) and not (isinstance(value, str) and value):
        raise ConfigurationError(f'AIOTASKQ["{name}"] must be a non-empty string, got {value!r}.')
    return value


@cache
def get_settings() -> Settings:
    """Return the validated settings; raise :class:`ConfigurationError` on a bad key or value."""
    raw = getattr(django_settings, "AIOTASKQ", None) or {}
    if not isinstance(raw, dict):
        raise ConfigurationError(f"settings.AIOTASKQ must be a dict, got {type(raw).__name__}.")
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in _FIELDS:
            near = difflib.get_close_matches(str(key), list(_FIELDS), n=1)
            hint = f' Did you mean "{near[0]}"?' if near else ""
            raise ConfigurationError(f'Unknown key AIOTASKQ["{key}"].{hint}')
        values[key] = _coerce(key, value)
    for key, celery_key in (
        ("ALWAYS_EAGER", "CELERY_TASK_ALWAYS_EAGER"),
        ("EAGER_PROPAGATES", "CELERY_TASK_EAGER_PROPAGATES"),
    ):
        if key not in values and getattr(django_settings, celery_key, False):
            values[key] = True
    return Settings(**values)


def _reset(*, setting: str, **kwargs: Any) -> None:
    if setting in {
        "AIOTASKQ",
        "DATABASES",
        "USE_TZ",
        "CELERY_TASK_ALWAYS_EAGER",
        "CELERY_TASK_EAGER_PROPAGATES",
    }:
        get_settings.cache_clear()


setting_changed.connect(_reset, dispatch_uid="aiotaskq.conf.reset")
