"""Waiting on the first of several things, as the fetcher and the lifecycle do."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import Any

__all__ = ["first_of"]


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
