"""The HTTP side: record an event and fan it out to every subscription, in one request; a
summary of an event that waits for a short task's result; CSV exports and their progress."""

from __future__ import annotations

import dataclasses
import json

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import Http404, HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

import aiotaskq

from .exports import start_export, summarize_event
from .models import Delivery, Event, Export, Subscription
from .progress import atally
from .tasks import deliver, host_of


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
        hosts = {pk: host_of(url) async for pk, url in subscribers.values_list("pk", "target_url")}
        deliveries = await Delivery.objects.abulk_create(
            [Delivery(event=event, subscription_id=pk) for pk in hosts]
        )
        # One INSERT for all the tasks, and one NOTIFY, committed when this returns: its own
        # statement, not one transaction with the rows above. So it comes after them, and a
        # failure deletes the event again (its deliveries go by cascade): no delivery is
        # left pending without a task. (For a single transaction, do the writes and
        # aiotaskq.enqueue_many() in one sync_to_async function under atomic().)
        # Each with its limit key, the receiver's host: at most WEBHOOK_PER_HOST at once to
        # one host, over every worker.
        await aiotaskq.aenqueue_many(
            [deliver.s(d.pk).set(limit_key=hosts[d.subscription_id]) for d in deliveries]
        )
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


@require_GET
async def event_summary(request: HttpRequest, event_id: int) -> JsonResponse:
    """``GET /events/<id>/summary/``: a short task counts the event's deliveries by status,
    and this view waits for its result (no polling: aiotaskq's waiting thread is told when
    it ends). A task that takes longer than the view may wait is a 504."""
    result = await summarize_event.adelay(event_id)
    try:
        counts = await result.aget(timeout=10)
    except TimeoutError:
        return JsonResponse(
            {"error": "the summary took too long", "task": str(result.id)}, status=504
        )
    return JsonResponse({"event": event_id, "deliveries": counts})


@csrf_exempt
@require_POST
async def create_export(request: HttpRequest) -> JsonResponse:
    """``POST /exports/``: start a CSV export of every delivery (webhooks/exports.py)."""
    export = await sync_to_async(start_export)(settings.EXPORT_DIR)
    return JsonResponse({"export": export.pk, "task": str(export.task_id)}, status=202)


@require_GET
async def export_status(request: HttpRequest, export_id: int) -> JsonResponse:
    """``GET /exports/<id>/``: the export's state and its task's progress."""
    export = await Export.objects.filter(pk=export_id).afirst()
    if export is None:
        raise Http404
    progress = None
    if export.task_id is not None and export.status == Export.Status.RUNNING:
        progress = await aiotaskq.AsyncResult(export.task_id).aprogress()
    return JsonResponse(
        {"export": export.pk, "status": export.status, "rows": export.rows, "progress": progress}
    )
