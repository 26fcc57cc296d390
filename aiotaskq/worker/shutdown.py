"""Signals for a worker that owns its process (``aiotaskq run``). The ASGI integration
installs none: there the server owns the signals."""

from __future__ import annotations

import asyncio
import signal

from .lifecycle import Worker

__all__ = ["install_signal_handlers"]


def install_signal_handlers(worker: Worker) -> None:
    """SIGTERM and SIGINT ask ``worker`` to stop; a second one skips the grace period.

    The handlers only set events (nothing exits inside a signal handler): the worker drains
    and :meth:`Worker.run` returns normally.
    """
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stop)
