"""Where a fan-out stands: one aggregate query over an event's deliveries."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from django.db.models import Count, Max, Q, Sum
from django.db.models.functions import Coalesce

from .models import Delivery

Status = Delivery.Status


@dataclass(frozen=True, slots=True, kw_only=True)
class Tally:
    """The deliveries of one event, counted."""

    total: int
    delivered: int
    failed: int
    pending: int
    #: Pending deliveries that were tried already and wait for their next attempt.
    waiting: int
    #: Requests sent, in all.
    attempts: int
    #: Deliveries that needed at least one retry, and the retries in all.
    retried: int
    retries: int
    #: Deliveries answered 429 at least once, and the 429s in all.
    snoozed: int
    snoozes: int
    #: When the last delivery reached its final state (``None`` while none has).
    last_finished_at: dt.datetime | None

    @property
    def finished(self) -> int:
        return self.delivered + self.failed

    @property
    def done(self) -> bool:
        """Every delivery is final: delivered, or failed for good."""
        return self.pending == 0


_AGGREGATES: dict[str, Any] = {
    "total": Count("pk"),
    "delivered": Count("pk", filter=Q(status=Status.DELIVERED)),
    "failed": Count("pk", filter=Q(status=Status.FAILED)),
    "pending": Count("pk", filter=Q(status=Status.PENDING)),
    "waiting": Count("pk", filter=Q(status=Status.PENDING, attempts__gt=0)),
    "attempts": Coalesce(Sum("attempts"), 0),
    "retried": Count("pk", filter=Q(retries__gt=0)),
    "retries": Coalesce(Sum("retries"), 0),
    "snoozed": Count("pk", filter=Q(snoozes__gt=0)),
    "snoozes": Coalesce(Sum("snoozes"), 0),
    "last_finished_at": Max("finished_at"),
}


def tally(event_id: int) -> Tally:
    """Count the deliveries of ``event_id`` (sync ORM)."""
    return Tally(**Delivery.objects.filter(event_id=event_id).aggregate(**_AGGREGATES))


async def atally(event_id: int) -> Tally:
    """Count the deliveries of ``event_id`` (async ORM)."""
    return Tally(**await Delivery.objects.filter(event_id=event_id).aaggregate(**_AGGREGATES))
