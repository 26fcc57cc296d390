"""The tasks' side of the benchmark's probe.

A benchmark task reports to the benchmark with a UDP datagram on loopback, sent to the
address in ``AIOTASKQ_BENCH_PROBE`` (``host:port``); without it, reports go nowhere. A
datagram costs a few microseconds and no database work, and a drain sends only two per
worker process (its first task's start, and the moment it has finished
``AIOTASKQ_BENCH_EXPECT`` tasks), so reporting adds nothing to the load being measured.
Where several workers share a drain, each also reports its running count every
``AIOTASKQ_BENCH_EVERY`` tasks (off when unset): a few hundred datagrams for tens of
thousands of tasks. Standard library only: the peer's tasks use it too.
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import time

__all__ = ["picked_up", "started", "task_finished", "task_started"]

_sock: socket.socket | None = None
_addr: tuple[str, int] | None = None
_started = itertools.count(1)
_finished = itertools.count(1)
_expect = int(os.environ.get("AIOTASKQ_BENCH_EXPECT") or 0)
_every = int(os.environ.get("AIOTASKQ_BENCH_EVERY") or 0)


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


def task_started() -> None:
    """Call first thing in a task: the process's first call is reported."""
    # next() on an itertools.count is atomic under the GIL, so threads may call this too.
    if next(_started) == 1:
        _send({"kind": "first", "t": time.time(), "pid": os.getpid()})


def task_finished() -> None:
    """Call last thing in a task: the call that makes ``AIOTASKQ_BENCH_EXPECT`` is reported,
    and every ``AIOTASKQ_BENCH_EVERY``-th call with the count so far."""
    count = next(_finished)
    if count == _expect:
        _send({"kind": "done", "t": time.time(), "pid": os.getpid()})
    if _every and count % _every == 0:
        _send({"kind": "count", "n": count, "t": time.time(), "pid": os.getpid()})


def started(sample: int) -> None:
    """Report that latency sample ``sample`` started now."""
    _send({"kind": "start", "sample": sample, "t": time.time()})


def picked_up(enqueued_at: float) -> None:
    """Report that a task enqueued at ``enqueued_at`` (``time.time()``) started now."""
    _send({"kind": "pickup", "enq": enqueued_at, "t": time.time()})
