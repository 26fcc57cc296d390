"""Wake-ups from LISTEN/NOTIFY, on a dedicated session connection that reconnects by itself."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import psycopg

from ..db.listen import CONTROL_CHANNEL, connect_listener
from ..db.sql import text
from ..errors import DatabaseError

__all__ = ["Listener"]

logger = logging.getLogger(__name__)

_BACKOFF_FIRST = 0.1
_BACKOFF_MAX = 30.0


class Listener:
    """Sets ``wake`` on every notification of the worker's queues.

    PostgreSQL keeps no notification for a session that is not listening, so after every
    (re)connect the listener sets ``wake`` once more: the fetcher then claims whatever was
    enqueued while it was away.
    """

    def __init__(
        self,
        queues: list[str],
        dsn: str | None,
        wake: asyncio.Event,
        quiet_check: float,
        on_control: Callable[[str], None],
    ) -> None:
        self._queues = queues
        self._on_control = on_control
        self._dsn = dsn
        self._wake = wake
        self._quiet_check = quiet_check
        #: Set while a LISTEN session is up (tests and the status log read it).
        self.connected = asyncio.Event()
        self.backend_pid: int | None = None

    async def run(self) -> None:
        """Listen until cancelled; never raises for a database failure."""
        backoff = _BACKOFF_FIRST
        first = True
        while True:
            conn: psycopg.AsyncConnection[Any] | None = None
            try:
                conn = await connect_listener(self._queues, self._dsn)
                self.backend_pid = conn.info.backend_pid
                self.connected.set()
                if not first:
                    logger.warning(
                        "listener.reconnected: listening again on %s",
                        ", ".join(self._queues),
                        extra={"queues": self._queues},
                    )
                first = False
                backoff = _BACKOFF_FIRST
                self._wake.set()
                await self._listen(conn)
            except (DatabaseError, psycopg.Error, OSError) as exc:
                self.connected.clear()
                logger.warning(
                    "listener.lost: %s; reconnecting in %.1f s",
                    str(exc).strip() or type(exc).__name__,
                    backoff,
                    extra={"queues": self._queues},
                )
            finally:
                self.connected.clear()
                if conn is not None:
                    await _close_quietly(conn)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _BACKOFF_MAX)

    async def _listen(self, conn: psycopg.AsyncConnection[Any]) -> None:
        wake = self._wake
        while True:
            async for notify in conn.notifies(timeout=self._quiet_check):
                if notify.channel == CONTROL_CHANNEL:
                    self._on_control(notify.payload)
                else:
                    wake.set()
            # A quiet spell: make sure the session is still there (a cut network gives no
            # error until something is sent).
            await conn.execute(text("ping"))


async def _close_quietly(conn: psycopg.AsyncConnection[Any]) -> None:
    try:
        await asyncio.wait_for(conn.close(), timeout=5)
    except (psycopg.Error, OSError, TimeoutError):
        logger.debug("listener: closing a broken connection failed", exc_info=True)
