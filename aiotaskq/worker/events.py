"""Waiting on the first of several things, as the fetcher and the lifecycle do."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import Any

__all__ = ["Wake", "first_of"]


class Wake(asyncio.Event):
    """The fetcher's wake-up. ``set()`` says that ordinary tasks may be ready (a notification,
    the marks, the database back); ``seats()`` says only that seats of limited tasks were
    freed, and the fetcher then runs its limited claim without the ordinary one, unless
    something else woke it too (docs/limits.md)."""

    def __init__(self) -> None:
        super().__init__()
        self._ordinary = True

    def set(self) -> None:
        self._ordinary = True
        super().set()

    def seats(self) -> None:
        """Wake the fetcher for its limited claim alone."""
        super().set()

    def take_ordinary(self) -> bool:
        """Whether a ``set()`` came since the last call (the first call: True)."""
        ordinary, self._ordinary = self._ordinary, False
        return ordinary


async def first_of(*aws: Awaitable[Any], timeout: float | None) -> None:
    """Return when the first of ``aws`` completes or ``timeout`` passes; cancel the rest."""
    futures = [asyncio.ensure_future(aw) for aw in aws]
    try:
        await asyncio.wait(futures, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for fut in futures:
            if not fut.done():
                fut.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await fut
