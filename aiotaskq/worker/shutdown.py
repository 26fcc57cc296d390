"""Signals for a worker that owns its process (``aiotaskq run``). The ASGI integration
installs none: there the server owns the signals."""

from __future__ import annotations

import asyncio
import signal

from .lifecycle import Worker

__all__ = ["ignore_stop_signals", "install_signal_handlers"]


def install_signal_handlers(worker: Worker) -> None:
    """SIGTERM and SIGINT ask ``worker`` to stop; a second one skips the grace period.

    The handlers only set events (nothing exits inside a signal handler): the worker drains
    and :meth:`Worker.run` returns normally.
    """
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stop)


def ignore_stop_signals() -> None:
    """Once the worker has stopped, ignore SIGTERM and SIGINT until the process exits.

    The loop would otherwise restore the default action when it closes, and a late signal
    (an impatient operator, a supervisor's repeat) would turn a clean exit into a kill.
    """
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.remove_signal_handler(sig)
        signal.signal(sig, signal.SIG_IGN)
