"""Whether a call's arguments fit the task function's parameters, checked at enqueue so that
``nap.delay(1, 2, 3)`` fails in the caller (as Celery's ``delay`` does) instead of in the
worker, where nobody can fix the row's arguments."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..errors import ArgumentsDoNotFit, ArgumentsNotSerializable, InvalidArguments

__all__ = ["Fit", "check_containers"]

#: Shapes remembered per function: a program calls a task in a few shapes; a bound all the
#: same, since a ``**kwargs`` function accepts any set of names.
_MAX_SHAPES = 256


class Fit:
    """The parameters of one task function, and the call shapes known to bind to them.

    Whether ``inspect.Signature.bind`` succeeds depends only on the number of positional
    arguments and the set of keyword names, never on the values: once a shape has bound,
    the check of a call of that shape is one set lookup.
    """

    __slots__ = ("_fn", "_lead", "_shapes", "_signature")

    def __init__(self, fn: Callable[..., Any], *, lead: int = 0) -> None:
        self._fn = fn
        #: Positional arguments the worker passes before the caller's (an ``Attempt``, or
        #: Django's ``TaskContext``).
        self._lead = lead
        self._signature: inspect.Signature | None = None
        self._shapes: set[object] = set()

    def check(self, name: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
        """Return if ``fn(*lead, *args, **kwargs)`` would bind.

        Raises:
            ArgumentsDoNotFit: it would not (Python's own message says why).
            ArgumentsNotSerializable: a keyword name is not a string.
        """
        shape = len(args) if not kwargs else (len(args), frozenset(kwargs))
        if shape not in self._shapes:
            self._bind(name, args, kwargs, shape)

    def arguments(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """The call's arguments by parameter name, with the defaults of those it leaves out
        (the worker's leading ones not included): ``f(7)`` and ``f(x=7)`` give the same.
        Only for a call that :meth:`check` has let through."""
        signature = self._load()
        bound = signature.bind(*((None,) * self._lead), *args, **kwargs)
        bound.apply_defaults()
        lead = list(signature.parameters)[: self._lead]
        return {k: v for k, v in bound.arguments.items() if k not in lead}

    def _load(self) -> inspect.Signature:
        signature = self._signature
        if signature is None:
            try:
                signature = self._signature = inspect.signature(self._fn)
            except (TypeError, ValueError):  # a callable Python cannot describe: no check
                signature = self._signature = inspect.Signature(
                    [
                        inspect.Parameter("args", inspect.Parameter.VAR_POSITIONAL),
                        inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD),
                    ]
                )
        return signature

    def _bind(
        self, name: str, args: Sequence[Any], kwargs: Mapping[str, Any], shape: object
    ) -> None:
        for key in kwargs:
            if not isinstance(key, str):
                raise ArgumentsNotSerializable(
                    f"Task {name!r}: keyword argument names must be strings, got {key!r}."
                )
        signature = self._load()
        try:
            signature.bind(*((None,) * self._lead), *args, **kwargs)
        except TypeError as exc:
            raise ArgumentsDoNotFit(
                f"Task {name!r} cannot take these arguments: {exc}. Its parameters are "
                f"{self._shown(signature)}; the call would fail in the worker, so nothing "
                "was written."
            ) from None
        if len(self._shapes) < _MAX_SHAPES:
            self._shapes.add(shape)

    def _shown(self, signature: inspect.Signature) -> str:
        """The parameters the caller passes (without the worker's leading ones)."""
        params = list(signature.parameters.values())
        dropped = 0
        while dropped < self._lead and params and params[0].kind in _POSITIONAL:
            params.pop(0)
            dropped += 1
        bare = [p.replace(annotation=inspect.Parameter.empty) for p in params]
        return str(signature.replace(parameters=bare, return_annotation=inspect.Signature.empty))


_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def check_containers(
    name: str, args: object, kwargs: object
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """``args`` as a tuple and ``kwargs`` as a dict, as ``apply_async`` takes them.

    Raises:
        InvalidArguments: ``args`` is not a list or tuple (a string would be taken as one
            argument per character), or ``kwargs`` is not a mapping.
    """
    if args is None:
        positional: tuple[Any, ...] = ()
    elif isinstance(args, tuple | list):
        positional = tuple(args)
    else:
        raise InvalidArguments(
            f"Task {name!r}: args must be a list or tuple of the positional arguments, got "
            f"{type(args).__name__} {_short(args)}. For one argument write args=(value,), or "
            "call .delay(value)."
        )
    if kwargs is None:
        keywords: dict[str, Any] = {}
    elif isinstance(kwargs, Mapping):
        keywords = dict(kwargs)
    else:
        raise InvalidArguments(
            f"Task {name!r}: kwargs must be a mapping (a dict) of keyword arguments, got "
            f"{type(kwargs).__name__} {_short(kwargs)}. Write kwargs={{'name': value}}."
        )
    return positional, keywords


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
