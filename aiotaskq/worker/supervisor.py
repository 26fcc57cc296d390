"""Several worker processes under one command: ``aiotaskq run --processes N``.

The supervisor starts N worker processes and keeps N running. It runs no task and opens no
database connection: each child is an ordinary ``aiotaskq run`` (the same command line,
without ``--processes``, with ``--supervised``), with its own event loop, connections and
signal handling, so a child behaves exactly as a worker started by hand.

Why re-executing the command, not ``multiprocessing``: a child started from the command
line sets Django up the way the user's entry point does (``manage.py`` may set the settings
module, ``sys.path`` or the environment before Django starts), nothing is pickled across,
and no state of the supervisor (its loop, its signal handlers, a half-set-up Django) leaks
into a worker. The cost, a second of start-up per child, is paid once per process lifetime.

- A child that dies is restarted, logged with its exit status or signal, after a backoff
  that doubles for a child that keeps dying (0.5 s up to 30 s) and starts again from 0.5 s
  once a child has lived :data:`STEADY_AFTER` seconds.
- A child that exits with :data:`~aiotaskq.worker.recycle.REPLACE_ME` (it recycled itself,
  or left a plain function past its hard time limit) is replaced at once.
- A child that exits 0 by itself (a ``--burst`` run that has drained) is not replaced; the
  supervisor exits 0 once every child has.
- A child that exits 2 (a mistake in the configuration, or a database that refuses it) stops
  the supervisor, with status 2: restarting would not mend it.
- SIGTERM or SIGINT is forwarded to every child (each drains within ``--grace``); a second
  one is forwarded too (each gives its tasks back now). Once all have exited the supervisor
  exits 0. A child still running :data:`KILL_AFTER` seconds past the grace is SIGKILLed
  (its tasks turn Dirty) and the supervisor exits 1.

Children run in their own process group, so a Ctrl-C in a terminal reaches the supervisor
only, and each child gets the signal once. If the supervisor itself is killed, each child
notices within a second that its parent is gone and stops gracefully.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass

from .recycle import REPLACE_ME

__all__ = ["STEADY_AFTER", "Supervisor", "child_command"]

logger = logging.getLogger(__name__)

#: The first restart delay of a child that died, doubled for each death in a row, at most
#: :data:`BACKOFF_MAX`.
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 30.0
#: A child that lived this long before dying is restarted after :data:`BACKOFF_FIRST` again.
STEADY_AFTER = 30.0
#: How long past ``--grace`` the supervisor waits for its children after a stop before it
#: kills them: a child's own exit comes within the grace + 2 s, plus up to 30 s to write
#: its last outcomes while the database does not answer.
KILL_AFTER = 45.0


def child_command(command: Sequence[str]) -> list[str]:
    """The command line of a child: ``command`` (the supervisor's own, as run) without its
    ``--processes N``, with ``--supervised``. A child given ``--supervised`` never supervises,
    whatever else its command line says."""
    out: list[str] = []
    skip = False
    for arg in command:
        if skip:
            skip = False
        elif arg == "--processes":
            skip = True
        elif not arg.startswith("--processes="):
            out.append(arg)
    return [*out, "--supervised"]


@dataclass(slots=True, eq=False)
class _Child:
    number: int
    proc: asyncio.subprocess.Process | None = None
    started: float = 0.0
    #: Deaths in a row, each after less than STEADY_AFTER seconds of life.
    deaths: int = 0

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc is not None else 0

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None


def describe(status: int) -> str:
    """``exited with status 3`` or ``killed by SIGKILL``, from a ``returncode``."""
    if status < 0:
        try:
            name = signal.Signals(-status).name
        except ValueError:
            name = f"signal {-status}"
        return f"killed by {name}"
    return f"exited with status {status}"


class Supervisor:
    """Keeps ``processes`` children of ``command`` running until stopped; see the module.

    The constructor does nothing; :meth:`run` starts the children and returns the exit status.
    """

    def __init__(self, command: Sequence[str], processes: int, grace: float) -> None:
        if processes < 1:
            raise ValueError(f"processes must be at least 1, got {processes}")
        self.command = list(command)
        self.processes = processes
        self.grace = grace
        self._children = [_Child(number=n + 1) for n in range(processes)]
        self._stopping: asyncio.Event | None = None
        self._requests = 0
        self._status = 0

    @property
    def pids(self) -> list[int]:
        """The pids of the children running now."""
        return [child.pid for child in self._children if child.alive]

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Forward ``sig`` to every child; the first call also ends the restarts. Safe to
        call from a signal handler installed with ``loop.add_signal_handler``."""
        self._requests += 1
        if self._stopping is None:
            return
        name = signal.Signals(sig).name
        if self._requests == 1:
            logger.info(
                "supervisor.stopping: %s forwarded to %d worker processes; they drain "
                "within --grace %g s",
                name,
                len(self.pids),
                self.grace,
            )
            self._stopping.set()
        else:
            logger.warning(
                "supervisor.stopping_now: a second %s forwarded; the workers give their "
                "tasks back now",
                name,
            )
        for child in self._children:
            if child.alive and child.proc is not None:
                with contextlib.suppress(ProcessLookupError):
                    child.proc.send_signal(sig)

    async def run(self) -> int:
        """Start the children, keep them running until a stop, and return the exit status:
        0 once all have exited after a stop (or each finished a ``--burst`` run), 2 if a
        child reported a mistake in the configuration, 1 if a child had to be killed."""
        loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop, sig)
        backstop = asyncio.create_task(self._backstop())
        try:
            for child in self._children:
                if not self._stopping.is_set():
                    await self._start(child)
            print(
                f"aiotaskq supervisor {os.getpid()}: {self.processes} worker processes, "
                f"pids {', '.join(str(pid) for pid in self.pids)}",
                flush=True,
            )
            async with asyncio.TaskGroup() as group:
                for child in self._children:
                    group.create_task(self._keep(child))
        finally:
            backstop.cancel()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
                signal.signal(sig, signal.SIG_IGN)
        logger.info("supervisor.stopped: exit status %d", self._status)
        return self._status

    async def _start(self, child: _Child) -> None:
        replaced = child.pid
        child.proc = await asyncio.create_subprocess_exec(*self.command, process_group=0)
        child.started = time.monotonic()
        if self._stopping is not None and self._stopping.is_set():
            # A stop arrived while the child was being started: it gets the signal too.
            with contextlib.suppress(ProcessLookupError):
                child.proc.send_signal(signal.SIGTERM)
        logger.info(
            "supervisor.child_started: process %d pid %d%s",
            child.number,
            child.pid,
            f" (replacing pid {replaced})" if replaced else "",
        )

    async def _keep(self, child: _Child) -> None:
        """Wait for ``child`` to exit and start it again, until a stop."""
        assert self._stopping is not None
        while child.proc is not None:
            status = await child.proc.wait()
            lived = time.monotonic() - child.started
            what = f"process {child.number} pid {child.pid} {describe(status)} after {lived:.1f} s"
            if self._stopping.is_set():
                logger.info("supervisor.child_exited: %s", what)
                return
            if status == 0:
                logger.info("supervisor.child_done: %s by itself; not replaced", what)
                return
            if status == 2:
                logger.error(
                    "supervisor.child_failed: %s (a mistake in the configuration or a database "
                    "that refuses it: see its error line); stopping",
                    what,
                )
                self._status = 2
                self.stop()
                return
            if status == REPLACE_ME:
                delay = 0.0
                child.deaths = 0
                logger.info("supervisor.replacing: %s to be replaced; starting another", what)
            else:
                child.deaths = 1 if lived >= STEADY_AFTER else child.deaths + 1
                delay = min(BACKOFF_FIRST * 2 ** (child.deaths - 1), BACKOFF_MAX)
                logger.error(
                    "supervisor.child_died: %s; restarting it in %.1f s (%d deaths in a row)",
                    what,
                    delay,
                    child.deaths,
                )
            while not await self._stopped_within(delay):
                try:
                    await self._start(child)
                    break
                except OSError as exc:  # no interpreter could be started (fds, memory)
                    logger.error("supervisor.start_failed: process %d: %s", child.number, exc)
                    delay = BACKOFF_MAX
            else:
                return

    async def _stopped_within(self, seconds: float) -> bool:
        assert self._stopping is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)
        return self._stopping.is_set()

    async def _backstop(self) -> None:
        """After a stop, kill the children still running past the grace + :data:`KILL_AFTER`."""
        assert self._stopping is not None
        await self._stopping.wait()
        await asyncio.sleep(self.grace + KILL_AFTER)
        for child in self._children:
            if child.alive and child.proc is not None:
                logger.error(
                    "supervisor.killed: process %d pid %d still ran %g s after the stop; "
                    "SIGKILL (its tasks turn Dirty)",
                    child.number,
                    child.pid,
                    self.grace + KILL_AFTER,
                )
                with contextlib.suppress(ProcessLookupError):
                    child.proc.kill()
                self._status = 1
