"""The tasks' side of the benchmark's probe.

A benchmark task reports to the benchmark with one UDP datagram on loopback, sent to the
address in ``AIOTASKQ_BENCH_PROBE`` (``host:port``); without it, reports go nowhere. A
datagram costs a few microseconds and no database work, so reporting adds nothing to the
load being measured. Standard library only: the peer's tasks use it too.
"""

from __future__ import annotations

import json
import os
import socket
import time

__all__ = ["first_start", "started"]

_sock: socket.socket | None = None
_addr: tuple[str, int] | None = None
_first_sent = False


def _send(payload: dict[str, object]) -> None:
    global _sock, _addr
    if _addr is None:
        raw = os.environ.get("AIOTASKQ_BENCH_PROBE")
        if not raw:
            return
        host, port = raw.rsplit(":", 1)
        _addr = (host, int(port))
        _sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    assert _sock is not None
    _sock.sendto(json.dumps(payload).encode(), _addr)


def first_start() -> None:
    """Report the start of this process's first task (later calls cost one global read)."""
    global _first_sent
    if not _first_sent:
        _first_sent = True
        _send({"kind": "first", "t": time.time(), "pid": os.getpid()})


def started(sample: int) -> None:
    """Report that latency sample ``sample`` started now."""
    _send({"kind": "start", "sample": sample, "t": time.time()})
