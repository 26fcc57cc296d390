"""Unique keys (docs/unique.md): a call's key, given (``unique_key=...``) or derived from the
task's name and arguments (``@task(unique=True)``), and what a call does when a live task
already holds it (``on_conflict``). Checked before anything is written; the database does
the rest (migration 0012)."""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Literal, cast

from ..conf import get_settings
from ..db.enqueue import TaskRow
from ..errors import EnqueueError, InvalidUniqueKey

if TYPE_CHECKING:
    from .fit import Fit

__all__ = [
    "MAX_KEY_LENGTH",
    "OnConflict",
    "check_key",
    "check_on_conflict",
    "derive_key",
    "key",
    "short",
]

OnConflict = Literal["ignore", "replace"]
ON_CONFLICT: tuple[OnConflict, ...] = ("ignore", "replace")

#: Characters a key may have (at most four bytes each in UTF-8: far below what an index entry
#: of PostgreSQL holds).
MAX_KEY_LENGTH = 255
#: A derived key is the call's arguments as canonical JSON up to this length (readable in the
#: admin), else their SHA-256.
_READABLE = 200


def check_key(
    name: str,
    key: object,
    option: str = "unique_key",
    error: type[EnqueueError] = InvalidUniqueKey,
    example: str = "for example f'order-{order.pk}'",
) -> str:
    """``key`` as the text stored (of ``unique_key``, or of another option that takes a key).

    Raises:
        error: not a string, empty, too long, or with a NUL or a lone surrogate.
    """
    if not isinstance(key, str):
        raise error(
            f"Task {name!r}: {option} must be a string ({example}), got "
            f"{type(key).__name__} {short(key)}. Nothing was written."
        )
    text = str.__str__(key)  # a subclass's own __str__ is never called
    if not text:
        raise error(
            f"Task {name!r}: {option} is empty; pass a key that names what it stands for "
            f"({example}). Nothing was written."
        )
    if len(text) > MAX_KEY_LENGTH:
        raise error(
            f"Task {name!r}: {option} has {len(text)} characters; at most {MAX_KEY_LENGTH} "
            "are allowed (hash a longer one, for example with hashlib.sha256). Nothing was "
            "written."
        )
    if "\x00" in text:
        raise error(
            f"Task {name!r}: {option} {short(text)} holds a NUL character, which "
            "PostgreSQL cannot store in text. Nothing was written."
        )
    try:
        text.encode()
    except UnicodeEncodeError:
        raise error(
            f"Task {name!r}: {option} {short(text)} holds a lone surrogate, which is not "
            "UTF-8 and PostgreSQL cannot store. Nothing was written."
        ) from None
    return text


def check_on_conflict(name: str, value: object) -> OnConflict:
    """
    Raises:
        InvalidUniqueKey: not one of ``"ignore"``, ``"replace"``.
    """
    if not isinstance(value, str) or str.__str__(value) not in ON_CONFLICT:
        raise InvalidUniqueKey(
            f'Task {name!r}: on_conflict must be "ignore" (keep the task that holds the key; '
            f'write nothing) or "replace" (give the queued one these arguments and run time), '
            f"got {short(value)}."
        )
    return cast(OnConflict, str.__str__(value))


def derive_key(fit: Fit, args_json: str, kwargs_json: str) -> str:
    """The key of ``@task(unique=True)``: the call's arguments by parameter name, defaults
    filled in, as canonical JSON (sorted keys), or its SHA-256 when longer than 200
    characters. The arguments are read back from their JSON, so that a tuple and a list, or
    ``f(7)`` and ``f(x=7)``, give the same key, as they give the worker the same call."""
    arguments = fit.arguments(json.loads(args_json), json.loads(kwargs_json))
    text = json.dumps(
        arguments, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=repr
    )
    if len(text) <= _READABLE:
        return text
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def key(
    row: TaskRow,
    *,
    fit: Fit,
    given: object,
    unique: bool,
    on_conflict: object,
    default_on_conflict: OnConflict,
    dirty_keeps: bool,
) -> None:
    """Give ``row`` its key, if the call has one, and what it does on a conflict.

    Raises:
        InvalidUniqueKey: a bad key or ``on_conflict``, or an ``on_conflict`` for a call
            without a key.
    """
    if given is not None:
        row.unique_key = check_key(row.name, given)
    elif unique:
        row.unique_key = derive_key(fit, row.args, row.kwargs)
    elif on_conflict is not None:
        check_on_conflict(row.name, on_conflict)
        raise InvalidUniqueKey(
            f"Task {row.name!r}: on_conflict={on_conflict!r} applies to a call with a unique "
            "key; pass unique_key=... too, or declare the task with @task(unique=True). "
            "Nothing was written."
        )
    else:
        return
    mode = default_on_conflict if on_conflict is None else check_on_conflict(row.name, on_conflict)
    row.replace = mode == "replace"
    # A Dirty task of an on_dirty="keep" name holds its key no longer (its worker is gone);
    # one of an on_dirty="retry" name does: the workers queue it again.
    row.dirty_after = get_settings().DIRTY_AFTER if dirty_keeps else None


def short(value: object) -> str:
    """``repr(value)`` cut to 60 characters, or its type's name if its repr raises."""
    try:
        text = repr(value)
    except Exception:
        text = f"<{type(value).__name__}>"
    return text if len(text) <= 60 else text[:57] + "..."
