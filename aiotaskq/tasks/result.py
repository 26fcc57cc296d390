"""What enqueueing returns: a handle on the task's id."""

from __future__ import annotations

import uuid

__all__ = ["AsyncResult"]


class AsyncResult:
    """A handle on an enqueued task. Tasks produce no stored result: ``id`` is what it is for
    (keep it to find the task in the admin or in ``aiotaskq status``)."""

    __slots__ = ("id",)

    def __init__(self, id: uuid.UUID | str) -> None:
        self.id: uuid.UUID = id if isinstance(id, uuid.UUID) else uuid.UUID(str(id))

    def __repr__(self) -> str:
        return f"<AsyncResult: {self.id}>"

    def __str__(self) -> str:
        return str(self.id)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AsyncResult) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)
