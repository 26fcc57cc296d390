"""A TCP proxy in front of PostgreSQL that a test can take down and bring back, to try an
outage without stopping the server that other tests (and other people) use.

In a test (sync or async; the proxy runs its own event loop in a daemon thread, so its
methods are plain calls that return once done)::

    with TcpProxy.start() as proxy:            # forwards to PGHOST:PGPORT by default
        ... connect to 127.0.0.1:proxy.port ...
        proxy.down()   # the listening socket is closed and every open connection cut:
                       # new connections are refused, as by a stopped server
        proxy.up()     # listening again, on the same port

From another process (a worker started by a test, or by hand)::

    python -m tests.tcpproxy [--port PORT] [TARGET_HOST [TARGET_PORT]]

prints ``listening on PORT`` once it accepts connections, then reads commands from its
standard input, one a line: ``down``, ``up``; each is answered with ``ok``. End of input
stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import threading
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, TypeVar

__all__ = ["TcpProxy"]

T = TypeVar("T")
_CHUNK = 65536


class TcpProxy:
    """Forwards ``127.0.0.1:port`` to ``target_host:target_port``; see the module's doc."""

    def __init__(self, target_host: str, target_port: int, *, port: int = 0) -> None:
        self.target_host = target_host
        self.target_port = target_port
        #: The listening port (a free one is chosen when 0 is asked for).
        self.port = port
        self._server: asyncio.Server | None = None
        self._transports: set[asyncio.WriteTransport] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    @classmethod
    def start(
        cls, target_host: str | None = None, target_port: int | None = None, *, port: int = 0
    ) -> TcpProxy:
        """A running proxy to ``target_host:target_port`` (default ``PGHOST:PGPORT``)."""
        proxy = cls(
            target_host or os.environ.get("PGHOST", "127.0.0.1"),
            target_port or int(os.environ.get("PGPORT", "5432")),
            port=port,
        )
        proxy._thread.start()
        proxy.up()
        return proxy

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    def up(self) -> None:
        """Listen (again, on the same port); a no-op when already listening."""
        self._call(self._up())

    def down(self) -> None:
        """Stop listening and cut every open connection."""
        self._call(self._down())

    def close(self) -> None:
        """Take the proxy down and stop its loop."""
        if self._thread.is_alive():
            self.down()
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def _up(self) -> None:
        if self._server is not None:
            return
        # reuse_address (asyncio's default on Unix) lets up() bind the port again at once.
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _down(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for transport in list(self._transports):
            transport.abort()
        self._transports.clear()
        if server is not None:
            await server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            writer.transport.abort()
            return
        pair = {writer.transport, up_writer.transport}
        self._transports |= pair
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            self._transports -= pair
            for transport in pair:
                transport.abort()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await reader.read(_CHUNK):
            writer.write(data)
            await writer.drain()
    writer.transport.abort()  # one side ended: so does the other


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target_host", nargs="?", default=os.environ.get("PGHOST", "127.0.0.1"))
    parser.add_argument("target_port", nargs="?", type=int, default=None)
    parser.add_argument("--port", type=int, default=0)
    options = parser.parse_args(argv)
    with TcpProxy.start(options.target_host, options.target_port, port=options.port) as proxy:
        print(f"listening on {proxy.port}", flush=True)
        for line in sys.stdin:
            command = line.strip()
            if command == "down":
                proxy.down()
            elif command == "up":
                proxy.up()
            else:
                print(f"unknown command {command!r}: down or up", flush=True)
                continue
            print("ok", flush=True)


if __name__ == "__main__":
    main()
