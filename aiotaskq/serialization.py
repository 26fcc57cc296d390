"""Task arguments as JSON, and back to the same Python types.

JSON's own types (``str``, ``int``, ``float``, ``bool``, ``None``, ``list``, ``dict`` with string
keys) pass through as they are; a ``tuple`` arrives as a ``list``. These types are written as a
one-key object and come back as the same type and value:

========================  =====================================
``datetime.datetime``     ``{"$datetime": "2026-11-22T18:46:00.123456+00:00"}``
``datetime.date``         ``{"$date": "2026-11-22"}``
``datetime.time``         ``{"$time": "18:46:00.123456"}``
``datetime.timedelta``    ``{"$timedelta": [days, seconds, microseconds]}``
``uuid.UUID``             ``{"$uuid": "…"}``
``decimal.Decimal``       ``{"$decimal": "1.10"}`` (exact, trailing zeros kept)
========================  =====================================

A ``dict`` of the caller's whose only key starts with ``$`` is escaped as
``{"$dict": [[key, value]]}`` so it is never mistaken for one of the above. Other values that
Django's JSON encoder knows (lazy translation strings, for instance) are encoded as Django
encodes them and arrive as plain strings. Anything else is refused at enqueue time. Nothing
is ever pickled: a row must never be a way to run code.

Text PostgreSQL cannot store is refused at enqueue time too: a NUL character (``"\\x00"``,
which jsonb cannot hold) and a lone surrogate (``"\\ud800"``, which is not UTF-8), in a
value or a key, at any depth.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import json.encoder
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder

from .errors import ArgumentsNotSerializable, ArgumentsTooLarge

__all__ = ["decode", "decode_arguments", "encode", "encode_arguments", "unstorable"]


class _Encoder(DjangoJSONEncoder):
    def default(self, o: Any) -> Any:
        # datetime must be tested before date: it is a subclass.
        if isinstance(o, dt.datetime):
            return {"$datetime": o.isoformat()}
        if isinstance(o, dt.date):
            return {"$date": o.isoformat()}
        if isinstance(o, dt.time):
            return {"$time": o.isoformat()}
        if isinstance(o, dt.timedelta):
            return {"$timedelta": [o.days, o.seconds, o.microseconds]}
        if isinstance(o, uuid.UUID):
            return {"$uuid": str(o)}
        if isinstance(o, decimal.Decimal):
            return {"$decimal": str(o)}
        return super().default(o)


_encoder = _Encoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)

# ``JSONEncoder.encode`` builds a new C encoder on every call, which costs more than encoding
# a small argument list. One is built here, with the same settings, and reused. It keeps no
# table of the containers it is inside (that table would be shared between threads), so a
# value that contains itself ends in RecursionError instead of ValueError; encode() turns
# that back into the ValueError the json module would raise.
_c_make_encoder: Any = getattr(json.encoder, "c_make_encoder", None)
_c_encode: Callable[[Any, int], tuple[str, ...]] | None = (
    None
    if _c_make_encoder is None
    else _c_make_encoder(
        None, _encoder.default, json.encoder.encode_basestring, None, ":", ",", False, False, False
    )
)

_DECODERS: dict[str, Callable[[Any], Any]] = {
    "$datetime": dt.datetime.fromisoformat,
    "$date": dt.date.fromisoformat,
    "$time": dt.time.fromisoformat,
    "$timedelta": lambda v: dt.timedelta(days=v[0], seconds=v[1], microseconds=v[2]),
    "$uuid": uuid.UUID,
    "$decimal": decimal.Decimal,
    "$dict": lambda v: {v[0][0]: v[0][1]},
}


def _escape(value: Any) -> Any:
    """Wrap the caller's one-key ``$`` dicts so that decoding gives them back unchanged."""
    if isinstance(value, Mapping):
        if len(value) == 1:
            ((key, item),) = value.items()
            if isinstance(key, str) and key.startswith("$"):
                # A pair list, not an object: the decoder works bottom-up and must not read
                # the caller's key as a tag before it sees the wrapper.
                return {"$dict": [[key, _escape(item)]]}
        return {k: _escape(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_escape(v) for v in value]
    return value


def _object_hook(obj: dict[str, Any]) -> Any:
    if len(obj) == 1:
        ((key, value),) = obj.items()
        decoder = _DECODERS.get(key)
        if decoder is not None:
            return decoder(value)
    return obj


_decoder = json.JSONDecoder(object_hook=_object_hook)


def encode(value: Any) -> str:
    """Encode one value; raise ``TypeError``/``ValueError`` from :mod:`json` when it can't."""
    if _c_encode is None:
        text = _encoder.encode(value)
    else:
        try:
            text = "".join(_c_encode(value, 0))
        except RecursionError:
            raise ValueError("Circular reference detected") from None
    # Fast path: only a text that contains a one-key "$" object can need escaping.
    if '{"$' in text:
        text = _encoder.encode(_escape(value))
    if "e+" in text:
        text = _TOKEN.sub(_positional, text)
    return text


# A JSON string, or a number written with a positive exponent (the form Python gives floats
# from 1e16 up). jsonb stores numbers as numeric and would give 1e+16 back as
# 10000000000000000, an int; written as 10000000000000000.0 it comes back as the float.
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|-?\d+(?:\.\d+)?e\+\d+')


def _positional(match: re.Match[str]) -> str:
    token = match.group()
    if token[0] == '"':
        return token
    return format(decimal.Decimal(token), "f") + ".0"


_NUL_ESCAPE = "\\u0000"


def _has_nul(text: str) -> bool:
    """Whether JSON ``text`` encodes a NUL character. The encoder writes one as ``\\u0000``;
    a user's backslash followed by ``u0000`` is written ``\\\\u0000``: only an odd run of
    backslashes before ``u0000`` is the escape of a NUL."""
    start = text.find(_NUL_ESCAPE)
    while start >= 0:
        before = start
        while before > 0 and text[before - 1] == "\\":
            before -= 1
        if (start - before) % 2 == 0:  # the backslash at start is not itself escaped
            return True
        start = text.find(_NUL_ESCAPE, start + 1)
    return False


def _has_surrogate(text: str) -> bool:
    """Whether ``text`` holds a lone surrogate (the encoder leaves non-ASCII characters as
    they are, so one is in the JSON text). ASCII text, the common case, is known as such
    without a scan; other text is checked by encoding it."""
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def unstorable(text: str) -> str | None:
    """Why PostgreSQL cannot store the JSON ``text`` (an output of :func:`encode`), or
    ``None`` when it can."""
    if _NUL_ESCAPE in text and _has_nul(text):
        return (
            "contains a NUL character (\\x00): NUL characters cannot be stored in "
            "PostgreSQL's jsonb; encode binary data, e.g. base64"
        )
    if _has_surrogate(text):
        return (
            "contains a lone surrogate (such as \\ud800), which is not valid Unicode text "
            "and cannot be stored; decode bytes with a real codec (errors='replace' keeps the "
            "rest), or encode binary data, e.g. base64"
        )
    return None


def decode(text: str) -> Any:
    """Decode what :func:`encode` wrote, restoring the tagged types."""
    return _decoder.decode(text)


def _describe(value: Any) -> str:
    return f"{type(value).__module__}.{type(value).__qualname__}"


def _locate(args: Sequence[Any], kwargs: Mapping[str, Any]) -> str:
    for index, value in enumerate(args):
        try:
            encode(value)
        except (TypeError, ValueError):
            return f"positional argument {index} ({_describe(value)})"
    for name, value in kwargs.items():
        try:
            encode(value)
        except (TypeError, ValueError):
            return f"keyword argument {name!r} ({_describe(value)})"
    return "the arguments"


def _locate_unstorable(args: Sequence[Any], kwargs: Mapping[str, Any]) -> str:
    for index, value in enumerate(args):
        if unstorable(encode(value)):
            return f"positional argument {index} ({_describe(value)})"
    for name, value in kwargs.items():
        if unstorable(encode(name)):
            return f"the name of keyword argument {name!r}"
        if unstorable(encode(value)):
            return f"keyword argument {name!r} ({_describe(value)})"
    return "the arguments"


def encode_arguments(
    task_name: str, args: Sequence[Any], kwargs: Mapping[str, Any], *, max_bytes: int
) -> tuple[str, str]:
    """Encode a call's arguments; raise an :class:`~aiotaskq.errors.EnqueueError` subclass.

    Raises:
        ArgumentsNotSerializable: an argument is not JSON, or holds a NUL character or a
            lone surrogate (the message names which argument).
        ArgumentsTooLarge: the encoded arguments exceed ``max_bytes``.
    """
    for key in kwargs:
        if not isinstance(key, str):
            raise ArgumentsNotSerializable(
                f"Task {task_name!r}: keyword argument names must be strings, got {key!r}."
            )
    try:
        args_json = encode(args if type(args) is list else list(args))
        kwargs_json = encode(kwargs if type(kwargs) is dict else dict(kwargs)) if kwargs else "{}"
    except (TypeError, ValueError) as exc:
        where = _locate(args, kwargs)
        raise ArgumentsNotSerializable(
            f"Task {task_name!r}: {where} cannot be encoded as JSON ({exc}). Pass JSON types, "
            "datetimes, dates, times, timedeltas, UUIDs or Decimals, or pass an identifier "
            "(a primary key) and load the object inside the task."
        ) from exc
    # The cheap tests of unstorable(), inline: this runs for every row of a bulk enqueue.
    if (
        _NUL_ESCAPE in args_json
        or _NUL_ESCAPE in kwargs_json
        or not args_json.isascii()
        or not kwargs_json.isascii()
    ):
        problem = unstorable(args_json) or unstorable(kwargs_json)
        if problem is not None:
            where = _locate_unstorable(args, kwargs)
            raise ArgumentsNotSerializable(f"Task {task_name!r}: {where} {problem}.")
    size = len(args_json) + len(kwargs_json)  # characters: a lower bound of the bytes
    if size * 4 > max_bytes:  # at most 4 bytes a character: only then count the bytes
        size = len(args_json.encode()) + len(kwargs_json.encode())
    if size > max_bytes:
        raise ArgumentsTooLarge(
            f"Task {task_name!r}: the arguments are {size} bytes of JSON, more than the limit "
            f'of {max_bytes} (AIOTASKQ["MAX_ARGUMENTS_BYTES"]). Store the data in a model or '
            "a file and pass its identifier, or raise the limit."
        )
    return args_json, kwargs_json


def decode_arguments(args_json: str, kwargs_json: str) -> tuple[list[Any], dict[str, Any]]:
    """Decode the stored arguments of a task."""
    args = decode(args_json)
    kwargs = decode(kwargs_json)
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        raise ValueError("stored arguments are not a JSON list and a JSON object")
    return args, kwargs
