"""The HTTP side: record an event and fan it out to every subscription, in one request."""

from __future__ import annotations

import dataclasses
import json

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

import aiotaskq

from .models import Delivery, Event, Subscription
from .progress import atally
from .tasks import deliver


@csrf_exempt
@require_POST
async def create_event(request: HttpRequest) -> JsonResponse:
    """``POST /events/`` with ``{"type": "order.paid", "data": {...}}``: record the event,
    create one delivery per active subscription, enqueue one ``deliver`` task per delivery,
    and answer 202 at once. The worker sends them in the background.

    For a single delivery, ``await deliver.adelay(delivery.pk)`` does the same for one.
    """
    try:
        document = json.loads(request.body)
        kind, data = document["type"], document.get("data", {})
        if not isinstance(kind, str) or not kind or not isinstance(data, dict):
            raise ValueError
    except (ValueError, KeyError, TypeError):
        return JsonResponse(
            {"error": 'expected JSON like {"type": "order.paid", "data": {...}}'}, status=400
        )

    subscribers = Subscription.objects.filter(active=True).order_by("pk")
    event = await Event.objects.acreate(kind=kind, payload=data)
    try:
        deliveries = await Delivery.objects.abulk_create(
            [
                Delivery(event=event, subscription_id=pk)
                async for pk in subscribers.values_list("pk", flat=True)
            ]
        )
        # One INSERT for all the tasks, and one NOTIFY, committed when this returns: its own
        # statement, not one transaction with the rows above. So it comes after them, and a
        # failure deletes the event again (its deliveries go by cascade): no delivery is
        # left pending without a task. (For a single transaction, do the writes and
        # aiotaskq.enqueue_many() in one sync_to_async function under atomic().)
        await aiotaskq.aenqueue_many([deliver.s(delivery.pk) for delivery in deliveries])
    except BaseException:
        await Event.objects.filter(pk=event.pk).adelete()
        raise
    return JsonResponse({"event": event.pk, "deliveries": len(deliveries)}, status=202)


@require_GET
async def event_progress(request: HttpRequest, event_id: int) -> JsonResponse:
    """``GET /events/<id>/``: how the fan-out of an event stands."""
    if not await Event.objects.filter(pk=event_id).aexists():
        return JsonResponse({"error": "no such event"}, status=404)
    counts = dataclasses.asdict(await atally(event_id))
    return JsonResponse({"event": event_id, **counts})
