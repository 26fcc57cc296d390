"""Limits per key (docs/limits.md): ``@task(limit_key=..., max_concurrent=..., rate_limit=...)``.
The options are checked when the task is declared; the key is computed once, at enqueue,
from the call's arguments, and stored with the task; the worker's limited claim (migration
0013) enforces the limits across every worker."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigurationError, InvalidLimitKey
from .unique import check_key, short

__all__ = ["ALL", "KeyFunction", "Limits", "call_key"]

#: The key of every call of a task that has limits and no ``limit_key`` function: the limits
#: then hold for the task as a whole.
ALL = "*"

KeyFunction = Callable[..., object]

_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(s|m|h)\s*$")
_UNIT = {"s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass(frozen=True, slots=True)
class Limits:
    """A task's limits, per key: ``max_concurrent`` seats; a token every ``interval``
    seconds, ``burst`` at most at once."""

    max_concurrent: int | None
    interval: float | None
    burst: int | None
    rate_limit: str | None

    @classmethod
    def build(
        cls,
        name: str,
        *,
        limit_key: object,
        max_concurrent: object,
        rate_limit: object,
        rate_burst: object,
    ) -> Limits | None:
        """The limits of task ``name``, or ``None`` when it has none.

        Raises:
            ConfigurationError: an option that is not valid, naming the task and the fix.
        """
        if max_concurrent is not None and (
            isinstance(max_concurrent, bool)
            or not isinstance(max_concurrent, int)
            or max_concurrent <= 0
        ):
            raise ConfigurationError(
                f"Task {name!r}: max_concurrent must be a positive int (tasks of one key "
                f"running at once, across every worker), got {short(max_concurrent)}."
            )
        interval = burst = None
        if rate_limit is not None:
            match = _RATE.match(rate_limit) if isinstance(rate_limit, str) else None
            count = float(match.group(1)) if match else 0.0
            if match is None or count <= 0:
                raise ConfigurationError(
                    f'Task {name!r}: rate_limit must be "N/s", "N/m" or "N/h" with N > 0 '
                    f'(for example "10/s": ten tasks a second per key), got {short(rate_limit)}.'
                )
            assert match is not None
            per_second = count / _UNIT[match.group(2)]
            interval = 1.0 / per_second
            burst = max(1, math.floor(per_second))
        if rate_burst is not None:
            if rate_limit is None:
                raise ConfigurationError(
                    f"Task {name!r}: rate_burst goes with a rate_limit (tokens a full bucket "
                    "holds); give rate_limit too, or leave rate_burst out."
                )
            if isinstance(rate_burst, bool) or not isinstance(rate_burst, int) or rate_burst < 1:
                raise ConfigurationError(
                    f"Task {name!r}: rate_burst must be an int of at least 1 (tasks a key may "
                    f"start at once after a quiet spell), got {short(rate_burst)}."
                )
            burst = rate_burst
        if max_concurrent is None and rate_limit is None:
            if limit_key is not None:
                raise ConfigurationError(
                    f"Task {name!r}: limit_key says which calls share a limit, but the task has "
                    "none: give max_concurrent=N and/or rate_limit='N/s' too."
                )
            return None
        if limit_key is not None and not callable(limit_key):
            raise ConfigurationError(
                f"Task {name!r}: limit_key must be a function of the call's arguments that "
                "returns the key (a str, or None for no limit), for example "
                f"limit_key=lambda url, payload: urlsplit(url).hostname; got {short(limit_key)}. "
                "A fixed key for one call goes to apply_async(limit_key=...)."
            )
        return cls(max_concurrent, interval, burst, None if rate_limit is None else str(rate_limit))


def call_key(
    name: str,
    function: KeyFunction | None,
    given: object,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
) -> str | None:
    """The limit key of one call: ``given`` (``apply_async(limit_key=...)``), else the
    task's function of the arguments (``None`` from it: this call has no limit), else
    :data:`ALL`.

    Raises:
        InvalidLimitKey: the function raised or returned something that is not a ``str`` or
            ``None``, or the key is not storable text; nothing is written.
    """
    if given is not None:
        return check_key(name, given, "limit_key", InvalidLimitKey, "for example 'tenant-7'")
    if function is None:
        return ALL
    try:
        key = function(*args, **kwargs)
    except Exception as exc:
        raise InvalidLimitKey(
            f"Task {name!r}: its limit_key function raised {type(exc).__name__} for this call; "
            "it must return the call's key (a str) or None. Nothing was written."
        ) from exc
    if key is None:
        return None
    if not isinstance(key, str):
        raise InvalidLimitKey(
            f"Task {name!r}: its limit_key function returned {type(key).__name__}; it must "
            "return a str (the key) or None (no limit for this call). Nothing was written."
        )
    return check_key(name, key, "limit_key", InvalidLimitKey, "for example 'tenant-7'")
