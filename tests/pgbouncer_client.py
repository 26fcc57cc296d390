"""A Django process whose database goes through PgBouncer (tests/test_pgbouncer.py): it
enqueues ``record`` tasks from sync code, then from async code, one by one and in bulk, and
exits 0, or prints the error and exits 1.

    python -m tests.pgbouncer_client LABEL COUNT

The environment says where the database is (``PGPORT``: the pooler's) and how aiotaskq is
configured (``AIOTASKQ_TEST_POOLER``, ``AIOTASKQ_TEST_SETTINGS``; see tests/settings.py).
"""

from __future__ import annotations

import asyncio
import sys

import django

#: Batches of ``enqueue_many``: a plain multi-row INSERT, and one of COPY_MIN_ROWS (64) rows
#: or more, written with COPY.
BULK = (10, 100)


def enqueue_sync(label: str, count: int) -> None:
    import aiotaskq
    from tests.app import tasks

    for i in range(count):
        tasks.record.delay(f"{label}:sync", i)
    for size in BULK:
        aiotaskq.enqueue_many(tasks.record.s(f"{label}:sync-bulk", i) for i in range(size))


async def enqueue_async(label: str, count: int) -> None:
    import aiotaskq
    from aiotaskq.db.connect import close_enqueue_pools
    from tests.app import tasks

    try:
        for i in range(count):
            await tasks.record.adelay(f"{label}:async", i)
        # Several at once: the enqueue pool's connections then take turns on the pooler's
        # server connections, as under load.
        await asyncio.gather(*(tasks.record.adelay(f"{label}:async", count + i) for i in range(10)))
        for size in BULK:
            await aiotaskq.aenqueue_many(
                [tasks.record.s(f"{label}:async-bulk", i) for i in range(size)]
            )
    finally:
        await close_enqueue_pools()


def main() -> int:
    label, count = sys.argv[1], int(sys.argv[2])
    django.setup()
    from aiotaskq.errors import AiotaskqError

    try:
        enqueue_sync(label, count)
        asyncio.run(enqueue_async(label, count))
    except AiotaskqError as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
