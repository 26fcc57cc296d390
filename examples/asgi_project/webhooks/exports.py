"""Two tasks beside the webhooks: a resumable CSV export of every delivery, and a short
summary of one event that a view waits for.

**The export** (``export_deliveries``) is the long job of the seed article done with
aiotaskq's checkpoints. It reads the deliveries in primary-key order, ``CHUNK`` at a time
(``iterator(chunk_size=...)``: one server-side cursor, not the whole table in memory), and
after each chunk it flushes the file to disk and saves a checkpoint: the last key written and
the file's length at that point. A worker killed halfway (SIGKILL, the OOM killer, a lost
machine) leaves the task Dirty; ``on_dirty="retry"`` has another worker rescue it, and the
next attempt cuts the file back to the checkpoint's length and goes on after its key. The rows
written after the last checkpoint are rewritten, not duplicated: the cut removes them first.
Its progress (rows of total) shows in the admin's Active view and ``aiotaskq status --json``.

Run it on a worker of its own, never on the web server's loop (it is a plain function and
it reads the whole table)::

    python manage.py aiotaskq run --queues exports --threads 1

**The summary** (``summarize_event``) keeps its result (``keep_result``), so that
``GET /events/<id>/summary/`` can ``await result.aget()`` and answer with it. It is unique
(``unique=True``, the key: its arguments): requests for one event's summary that come while
one is queued or running wait for that one task instead of each enqueueing their own.

**The clean-up** (``forget_old_deliveries``) is periodic: every night at 04:00 (UTC) one of
the workers that import this module enqueues it, whichever gets there first, once.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import itertools
import os
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db.models import Count
from django.utils import timezone

from aiotaskq import current_task, periodic, task

from .models import Delivery, Export

#: Deliveries written between two checkpoints.
CHUNK = 500
HEADER = ("delivery", "event", "subscription", "status", "attempts", "response_code")


@task(queue="exports", on_dirty="retry", max_retries=5)
def export_deliveries(export_id: int) -> int:
    """Write every delivery to the export's CSV file; return how many were written."""
    export = Export.objects.get(pk=export_id)
    ctx = current_task()
    saved: dict[str, Any] = ctx.checkpoint or {"after": None, "offset": 0, "rows": 0}
    path = Path(export.path)
    path.parent.mkdir(parents=True, exist_ok=True)
    total = Delivery.objects.count()
    rows = int(saved["rows"])
    deliveries = Delivery.objects.order_by("pk")
    if saved["after"] is not None:
        deliveries = deliveries.filter(pk__gt=saved["after"])
    # Resuming: cut what an earlier attempt wrote after its last checkpoint.
    with path.open("r+b" if saved["offset"] else "wb") as out:
        out.truncate(saved["offset"])
        out.seek(saved["offset"])
        if not saved["offset"]:
            out.write(_csv([HEADER]))
        values = deliveries.values_list(
            "pk", "event_id", "subscription_id", "status", "attempts", "response_code"
        )
        for chunk in itertools.batched(values.iterator(chunk_size=CHUNK), CHUNK):
            out.write(_csv(chunk))
            out.flush()
            os.fsync(out.fileno())  # on disk before the checkpoint says so
            rows += len(chunk)
            ctx.save_checkpoint({"after": str(chunk[-1][0]), "offset": out.tell(), "rows": rows})
            ctx.set_progress(rows, total, f"{rows:,} of {total:,} deliveries")
            if settings.EXPORT_CHUNK_PAUSE:
                time.sleep(settings.EXPORT_CHUNK_PAUSE)  # the tests' way to kill it halfway
    Export.objects.filter(pk=export_id).update(
        status=Export.Status.DONE, rows=rows, finished_at=timezone.now()
    )
    return rows


def _csv(rows: Any) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    return buffer.getvalue().encode()


def start_export(directory: Path) -> Export:
    """Create an export and enqueue its task (in one transaction: both or neither)."""
    from django.db import transaction

    with transaction.atomic():
        export = Export.objects.create(path="")
        export.path = str(directory / f"deliveries-{export.pk}.csv")
        result = export_deliveries.delay(export.pk)
        export.task_id = result.id
        export.save(update_fields=["path", "task_id"])
    return export


@task(queue="reports", keep_result=300, unique=True)
async def summarize_event(event_id: int) -> dict[str, int]:
    """How an event's deliveries stand: a count per status."""
    counts = Delivery.objects.filter(event_id=event_id).values("status").annotate(n=Count("pk"))
    return {row["status"]: row["n"] async for row in counts}


#: Deliveries older than this are deleted by the nightly clean-up.
KEEP_DELIVERIES = dt.timedelta(days=30)


@periodic(cron="0 4 * * *", tz="UTC")
@task(queue="reports")
async def forget_old_deliveries() -> int:
    """Delete the deliveries older than KEEP_DELIVERIES, counted from the tick it runs for."""
    ctx = current_task()
    before = (ctx.scheduled_for or timezone.now()) - KEEP_DELIVERIES
    deleted, _ = await Delivery.objects.filter(created_at__lt=before).adelete()
    return deleted
