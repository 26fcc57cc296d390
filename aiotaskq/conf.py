"""Typed settings read from ``settings.AIOTASKQ``; every key has a default.

The values are read once and cached; Django's ``setting_changed`` signal (sent by
``override_settings``) clears the cache so tests can change them.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, fields
from functools import cache
from typing import Any

from django.conf import settings as django_settings
from django.core.signals import setting_changed

from .errors import ConfigurationError

__all__ = ["Settings", "get_settings"]


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


_FIELDS = {f.name: f for f in fields(Settings)}


def _coerce(name: str, value: Any) -> Any:
    default = _FIELDS[name].default
    if name == "IMPORTS":
        if isinstance(value, str) or not all(isinstance(v, str) for v in value):
            raise ConfigurationError(
                f'AIOTASKQ["IMPORTS"] must be a list of module paths, got {value!r}.'
            )
        return tuple(value)
    if name == "LISTEN_DSN":
        if value is not None and not isinstance(value, str):
            raise ConfigurationError(f'AIOTASKQ["LISTEN_DSN"] must be a string, got {value!r}.')
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
