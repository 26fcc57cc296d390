"""Wake-ups from LISTEN/NOTIFY, on a dedicated session connection that reconnects by itself."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import psycopg

from ..db.connect import WorkerDatabase
from ..db.listen import (
    CONTROL_CHANNEL,
    LIMITS_PAYLOAD,
    SEATS_PAYLOAD,
    connect_listener,
    seats_payload,
)
from ..db.sql import text
from ..errors import DatabaseError
from .events import Wake

__all__ = ["Listener"]

logger = logging.getLogger(__name__)

_BACKOFF_FIRST = 0.1
#: The longest wait between two attempts to listen again while the database answers; while
#: it does not, the listener waits for the worker's pool to find it back instead.
_BACKOFF_MAX = 2.0


class Listener:
    """Sets ``wake`` on every notification of the worker's queues; a notification of freed
    seats (another worker's: this worker's own are ignored) wakes the limited claim alone.

    PostgreSQL keeps no notification for a session that is not listening, so after every
    (re)connect the listener sets ``wake`` once more: the fetcher then claims whatever was
    enqueued while it was away.
    """

    def __init__(
        self,
        queues: list[str],
        dsn: str | None,
        wake: Wake,
        quiet_check: float,
        on_control: Callable[[str], None],
        db: WorkerDatabase | None = None,
        limited: asyncio.Event | None = None,
        worker_id: str = "",
    ) -> None:
        self._db = db
        self._own_seats = seats_payload(worker_id)
        #: Set on a notification that a task with a limit key became ready.
        self._limited = limited
        self._queues = queues
        self._on_control = on_control
        self._dsn = dsn
        self._wake = wake
        self._quiet_check = quiet_check
        #: Set while a LISTEN session is up (tests and the status log read it).
        self.connected = asyncio.Event()

    async def run(self) -> None:
        """Listen until cancelled; never raises for a database failure."""
        backoff = _BACKOFF_FIRST
        first = True
        while True:
            conn: psycopg.AsyncConnection[Any] | None = None
            try:
                conn = await connect_listener(self._queues, self._dsn)
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
                if self._limited is not None:
                    self._limited.set()  # what was missed meanwhile may be limited too
                await self._listen(conn)
            except (DatabaseError, psycopg.Error, OSError) as exc:
                self.connected.clear()
                if first or backoff == _BACKOFF_FIRST:
                    logger.warning(
                        "listener.lost: %s; listening again as soon as the database answers",
                        " ".join(str(exc).split()) or type(exc).__name__,
                        extra={"queues": self._queues},
                    )
                if self._db is not None:
                    await self._db.failed()
            finally:
                self.connected.clear()
                if conn is not None:
                    await _close_quietly(conn)
            if self._db is not None and not self._db.available.is_set():
                await self._db.wait_available(None)
            else:
                await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _BACKOFF_MAX)

    async def _listen(self, conn: psycopg.AsyncConnection[Any]) -> None:
        wake = self._wake
        while True:
            async for notify in conn.notifies(timeout=self._quiet_check):
                payload = notify.payload
                if notify.channel == CONTROL_CHANNEL:
                    self._on_control(payload)
                elif payload.startswith(SEATS_PAYLOAD):
                    if payload != self._own_seats and self._limited is not None:
                        self._limited.set()
                        wake.seats()
                else:
                    wake.set()
                    if payload == LIMITS_PAYLOAD and self._limited is not None:
                        self._limited.set()
            # A quiet spell: make sure the session is still there (a cut network gives no
            # error until something is sent).
            await conn.execute(text("ping"))


async def _close_quietly(conn: psycopg.AsyncConnection[Any]) -> None:
    try:
        await asyncio.wait_for(conn.close(), timeout=5)
    except (psycopg.Error, OSError, TimeoutError):
        logger.debug("listener: closing a broken connection failed", exc_info=True)
