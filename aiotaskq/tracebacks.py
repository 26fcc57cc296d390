"""What a failed attempt keeps of its exception: a traceback that starts at the task's own
frame, and a message that can always be printed, each cut to a documented size.

A task runs under a few of the worker's frames (the executor, asyncio's task step, and for a
plain function asgiref's ``sync_to_async`` and a thread pool's worker); they are the same for
every task and only push the task's own frames down the page. :func:`format_task_traceback`
leaves them out. Neither function raises, whatever the exception does to be printed: these
run while an attempt's outcome is being recorded, where an error would lose the outcome.

No I/O, nothing of aiotaskq imported: the worker, the admin and the tests all use it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
import traceback
from collections.abc import Callable
from types import CodeType, TracebackType
from typing import Any

__all__ = [
    "MAX_MESSAGE_CHARS",
    "MAX_TRACEBACK_CHARS",
    "cut_middle",
    "format_task_traceback",
    "safe_str",
]

#: The most characters :func:`format_task_traceback` returns (16 KiB): enough for any
#: readable traceback; a deeper one (a recursion, a huge message) is cut in its middle.
MAX_TRACEBACK_CHARS = 16 * 1024
#: The most characters :func:`safe_str` returns (4 KiB).
MAX_MESSAGE_CHARS = 4 * 1024


def _folder(path: str | None) -> str:
    return os.path.dirname(os.path.abspath(path or "")) + os.sep


def _asgiref_folder() -> str | None:
    # asgiref comes with Django; looked up, not imported, to keep this module light.
    import importlib.util

    spec = importlib.util.find_spec("asgiref")
    return _folder(spec.origin) if spec is not None and spec.origin else None


#: Where the frames that run a task (and are not the task) live: aiotaskq's own package,
#: asyncio, concurrent.futures, asgiref, and the threading module.
_RUNNER_FOLDERS: tuple[str, ...] = tuple(
    folder
    for folder in (
        _folder(__file__),
        _folder(asyncio.__file__),
        _folder(concurrent.futures.__file__),
        _asgiref_folder(),
    )
    if folder
)
_RUNNER_FILES = frozenset({os.path.abspath(threading.__file__)})


def cut_middle(text: str, limit: int) -> str:
    """``text`` if it has at most ``limit`` characters, else its head and its tail around a
    marker such as ``... 12,345 characters cut ...``, ``limit`` characters in all."""
    if len(text) <= limit:
        return text
    # The longest marker this cut can need (it counts at most every character), so that
    # the real one, which counts fewer, fits in what is left.
    widest = _marker(len(text))
    keep = max(limit - len(widest), 0)
    marker = _marker(len(text) - keep)
    if keep == 0:
        return marker[:limit]
    head = keep // 2
    return text[:head] + marker + text[len(text) - (keep - head) :]


def _marker(cut: int) -> str:
    return f"\n... {cut:,} characters cut ...\n"


def safe_str(exc: BaseException, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``str(exc)``, at most ``limit`` characters (cut in the middle); when ``str()`` raises,
    a description such as ``<unprintable ValueError: __str__ raised RuntimeError>``.
    Never raises."""
    try:
        text = str(exc)
    except BaseException as error:
        # Whatever __str__ raises is its output. str() is synchronous: nothing raised here
        # can be the worker's own cancellation.
        text = f"<unprintable {_type_name(exc)}: __str__ raised {_type_name(error)}>"
    return cut_middle(text, limit)


def format_task_traceback(
    exc: BaseException, fn: Callable[..., Any] | None = None, limit: int = MAX_TRACEBACK_CHARS
) -> str:
    """The traceback of ``exc`` as Python prints it, chained exceptions included, starting
    at the task's own frame, at most ``limit`` characters (cut in the middle).

    In each exception of the chain the first frame kept is the first one running ``fn``'s
    code; when there is none (the call itself failed, or ``fn`` is None), the first one
    outside aiotaskq, asyncio, asgiref, concurrent.futures and threading; when every frame
    is one of those, all of them. Never raises: an exception that cannot be formatted gives
    a line that says so, with its type and message.
    """
    try:
        formatted = _format(exc, _code_of(fn))
    except BaseException as error:
        # Whatever it is: a hostile exception must not lose the attempt's outcome.
        formatted = (
            f"{_type_name(exc)}: {safe_str(exc)}\n"
            f"(its traceback could not be formatted: {_type_name(error)}: {safe_str(error)})\n"
        )
    return cut_middle(formatted, limit)


def _format(exc: BaseException, code: CodeType | None) -> str:
    # TracebackException renders the chain (__cause__, __context__, exception groups) as
    # Python does, and guards against cycles and failing __str__; each of its stacks has
    # one entry per traceback node, so the worker's leading frames are cut from it there.
    tb = exc.__traceback__ if isinstance(exc.__traceback__, TracebackType) else None
    rendered = traceback.TracebackException(type(exc), exc, tb, compact=True)
    pending: list[tuple[traceback.TracebackException, BaseException]] = [(rendered, exc)]
    seen: set[int] = set()
    while pending:
        te, error = pending.pop()
        if id(te) in seen:
            continue
        seen.add(id(te))
        _drop_runner_frames(te, error.__traceback__, code)
        for attr in ("__cause__", "__context__"):
            linked_te = getattr(te, attr, None)
            linked = getattr(error, attr, None)
            if linked_te is not None and isinstance(linked, BaseException):
                pending.append((linked_te, linked))
        group_tes = getattr(te, "exceptions", None)
        group = getattr(error, "exceptions", None)
        if group_tes and isinstance(group, tuple) and len(group) == len(group_tes):
            pending.extend(zip(group_tes, group, strict=True))
    return "".join(rendered.format())


def _drop_runner_frames(
    te: traceback.TracebackException, tb: TracebackType | None, code: CodeType | None
) -> None:
    nodes: list[TracebackType] = []
    while isinstance(tb, TracebackType):
        nodes.append(tb)
        tb = tb.tb_next
    if len(nodes) != len(te.stack):  # a sys.tracebacklimit cut it: leave it as it is
        return
    start = _first_kept(nodes, code)
    if start:
        del te.stack[:start]


def _first_kept(nodes: list[TracebackType], code: CodeType | None) -> int:
    if code is not None:
        for i, node in enumerate(nodes):
            if node.tb_frame.f_code is code:
                return i
    for i, node in enumerate(nodes):
        filename = os.path.abspath(node.tb_frame.f_code.co_filename)
        if filename not in _RUNNER_FILES and not filename.startswith(_RUNNER_FOLDERS):
            return i
    return 0


def _code_of(fn: Callable[..., Any] | None) -> CodeType | None:
    if fn is None:
        return None
    try:
        code = getattr(fn, "__code__", None)
    except Exception:  # a callable object whose attributes raise: look for no task frame
        return None
    return code if isinstance(code, CodeType) else None


def _type_name(obj: object) -> str:
    try:
        name = type(obj).__name__
    except Exception:
        name = None
    return name if isinstance(name, str) else "exception"
