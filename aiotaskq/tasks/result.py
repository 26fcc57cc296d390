"""What enqueueing returns: a handle on the task's id, and (in eager mode) its outcome."""

from __future__ import annotations

import uuid
from typing import Any

from ..conf import get_settings
from ..db import control

__all__ = ["AsyncResult", "EagerResult"]


class AsyncResult:
    """A handle on an enqueued task. Tasks produce no stored result: ``id`` is what it is for
    (keep it to revoke the task, or to find it in the admin or ``aiotaskq status``)."""

    __slots__ = ("id",)

    def __init__(self, id: uuid.UUID | str) -> None:
        self.id: uuid.UUID = id if isinstance(id, uuid.UUID) else uuid.UUID(str(id))

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {self.id}>"

    def __str__(self) -> str:
        return str(self.id)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AsyncResult) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def revoke(self) -> bool:
        """Make sure the task does not run, or stops.

        A queued or future task is deleted: it never runs. A running coroutine task is
        cancelled by its worker within milliseconds (told through NOTIFY at commit) and kept
        as failed with a ``Revoked`` error. A running plain-function task cannot be
        interrupted: it finishes, and its worker logs the revoke as too late.

        Runs on Django's connection, so inside ``transaction.atomic()`` it takes effect at
        commit. Returns ``False`` for an id that is unknown or already finished (not an error).
        """
        deleted, running = control.revoke_sync(self.id, get_settings().DATABASE)
        return deleted or running

    async def arevoke(self) -> bool:
        """The async twin of :meth:`revoke` (its own autocommit statement)."""
        deleted, running = await control.revoke(self.id)
        return deleted or running


class EagerResult(AsyncResult):
    """The outcome of a task run at once in the caller (``ALWAYS_EAGER``)."""

    __slots__ = ("exception", "traceback", "value")

    def __init__(
        self,
        id: uuid.UUID | str,
        value: Any = None,
        exception: BaseException | None = None,
        traceback: str | None = None,
    ) -> None:
        super().__init__(id)
        self.value = value
        self.exception = exception
        self.traceback = traceback

    @property
    def result(self) -> Any:
        """The return value, or the exception the task raised (Celery's ``result``)."""
        return self.exception if self.exception is not None else self.value

    @property
    def status(self) -> str:
        return "FAILURE" if self.exception is not None else "SUCCESS"

    def successful(self) -> bool:
        return self.exception is None

    def failed(self) -> bool:
        return self.exception is not None

    def get(self, propagate: bool = True) -> Any:
        """The return value; the task's exception is raised if it failed and ``propagate``."""
        if self.exception is not None and propagate:
            raise self.exception
        return self.result

    def revoke(self) -> bool:
        return False

    async def arevoke(self) -> bool:
        return False
