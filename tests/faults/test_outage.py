"""The database away for longer than the worker's own timeouts and backoffs (a TCP proxy
in front of PostgreSQL is taken down and brought back: the server others use stays up).
Whatever the outage's length, a worker claims within a couple of seconds of the database
answering again, tells the story in three lines, and no worker rescues another's tasks
just because no heartbeat could get through."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.app import tasks
from tests.conftest import wait_for
from tests.tcpproxy import TcpProxy

# Longer than DIRTY_AFTER in the test settings (3 s), than the pool's own reconnect timeout
# (5 s) and than the backoffs the worker used to grow without a ceiling.
OUTAGE = 12.0


@pytest.fixture
def proxy() -> Iterator[TcpProxy]:
    with TcpProxy.start() as running:
        yield running


def _through(proxy: TcpProxy) -> dict[str, str]:
    return {"PGPORT": str(proxy.port), "PGHOST": "127.0.0.1"}


def _hold(seconds: float) -> None:
    """Keep the database away for ``seconds``: the length of the outage is the fault itself,
    not a wait for something to happen."""
    deadline = time.monotonic() + seconds
    wait_for(lambda: time.monotonic() >= deadline, timeout=seconds + 5, what="the outage")


def _count(db: Any, state: str | None = None) -> int:
    if state is None:
        return int(db.execute("SELECT count(*) FROM aiotaskq_task").fetchone()[0])
    return int(
        db.execute("SELECT count(*) FROM aiotaskq_task WHERE state = %s", (state,)).fetchone()[0]
    )


def test_after_a_long_outage_the_worker_claims_at_once_and_says_so(
    ledger_worker: Any, ledger: Any, proxy: TcpProxy, db: Any
) -> None:
    # A long safety poll: what runs after the outage is claimed because the worker knows
    # the database is back, not because a poll came round.
    proc = ledger_worker("--concurrency", "20", poll=60, env=_through(proxy))
    tasks.nap_then_ledger.delay("through-the-outage", 3.0)
    wait_for(lambda: ("through-the-outage", "start") in {(a, b) for a, b, _ in ledger.lines()})
    proxy.down()
    wait_for(lambda: "database.unreachable" in proc.log(), timeout=10)
    # Enqueued (straight to the database) while the worker cannot see it: its notification
    # is lost with the listener's session.
    tasks.nap_then_ledger.delay("during-the-outage", 0.0)
    # The task that needs no database finishes meanwhile; its outcome is kept.
    wait_for(lambda: ledger.counts()["through-the-outage"] == 1, timeout=10)
    _hold(OUTAGE)
    proxy.up()
    # A failure shows the worker's log: what it did once the database was back.
    try:
        wait_for(lambda: ledger.counts()["during-the-outage"] == 1, timeout=4)
    except AssertionError:
        raise AssertionError(
            "the task enqueued during the outage did not run within 4 s of the database "
            f"being back; the worker's log:\n{proc.log()}"
        ) from None
    wait_for(lambda: _count(db) == 0, timeout=5, what="both outcomes to be written")
    wait_for(lambda: "database.back after" in proc.log(), timeout=5)
    log = proc.log()
    assert log.count("database.unreachable") == 1, log
    back = [line for line in log.splitlines() if "database.back after" in line]
    assert len(back) == 1, log
    assert "; 1 outcomes kept during the outage written" in back[0], back
    assert "psycopg.pool" not in log, "the pool's own retries should not flood the log"
    assert proc.proc.poll() is None


def test_no_worker_rescues_another_after_an_outage_longer_than_dirty_after(
    ledger_worker: Any, ledger: Any, proxy: TcpProxy, db: Any
) -> None:
    first = ledger_worker("--concurrency", "20", env=_through(proxy))
    second = ledger_worker("--concurrency", "20", env=_through(proxy))
    for i in range(10):
        tasks.nap_then_ledger.delay(f"long-{i}", OUTAGE + 6)
    wait_for(lambda: sum(1 for _, event, _ in ledger.lines() if event == "start") == 10)
    proxy.down()
    _hold(8.0)  # well past DIRTY_AFTER (3 s)
    proxy.up()
    # Every task runs to its end once, where it started; nobody rescues anything.
    wait_for(lambda: sum(ledger.counts().values()) == 10, timeout=OUTAGE + 15)
    wait_for(lambda: _count(db) == 0, timeout=10)
    assert all(count == 1 for count in ledger.counts().values()), ledger.counts()
    starts = [label for label, event, _ in ledger.lines() if event == "start"]
    assert len(starts) == 10, "a task was started twice"
    for proc in (first, second):
        assert "task.rescued" not in proc.log(), proc.log()


def test_a_worker_started_with_the_database_down_waits_for_it(
    ledger_worker: Any, ledger: Any, proxy: TcpProxy
) -> None:
    proxy.down()
    proc = ledger_worker(env=_through(proxy), wait=False)
    wait_for(lambda: "database.waiting" in proc.log(), timeout=20)
    assert proc.proc.poll() is None, "the worker waits, it does not exit"
    tasks.nap_then_ledger.delay("after-start", 0.0)
    proxy.up()
    proc.wait_started()
    wait_for(lambda: ledger.counts()["after-start"] == 1, timeout=10)
