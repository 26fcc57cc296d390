"""Delivering one webhook: sign it, POST it, write down how it went, and let aiotaskq try
again later when the receiver is down, failing or busy.

The worker imports each installed app's ``tasks`` module, which registers :func:`deliver`.
The task is idempotent, as at-least-once delivery wants: a delivery already recorded as
delivered is not sent again, and every request carries the delivery's id as
``Idempotency-Key`` so that the receiver can drop a repeat it already processed (our
request succeeded but its answer was lost, say).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import json
import logging
import math
import time
import uuid
from urllib.parse import urlsplit

import httpx
from django.conf import settings
from django.utils import timezone

from aiotaskq import Snooze, task

from .models import Delivery
from .signing import HEADER, sign

__all__ = ["deliver", "host_of"]

logger = logging.getLogger(__name__)

#: Retries after the first attempt. Backing off from 1 s, doubled each time up to 5 s, with
#: jitter (each delay drawn from 0 to that), the last of the six attempts comes at most 17 s
#: after the first: right for a demo. A production sender spreads more retries over hours
#: (``max_retries=10, retry_backoff=30, retry_backoff_max=3600``).
MAX_RETRIES = 5
#: How many 429s one delivery may get before they count as failures: a receiver that asks
#: us to wait for ever must not keep a delivery pending for ever.
MAX_SNOOZES = 20
#: The wait after a 429 without a usable Retry-After, and the longest one we accept.
DEFAULT_SNOOZE = 5.0
MAX_SNOOZE = 3600.0


def host_of(url: str) -> str:
    """The key of a delivery's limit: the host its URL names."""
    return urlsplit(url).hostname or "-"


class ServerError(Exception):
    """The receiver answered 5xx, 408, or one 429 too many: a later try may work."""

    def __init__(self, status_code: int) -> None:
        self.status_code = status_code
        super().__init__(f"the receiver answered HTTP {status_code}")


class Rejected(Exception):
    """The receiver refused the delivery with another 4xx (400, 401, 404, 410...): the same
    request will fare no better, so it is not retried; the task is kept as Failed."""

    def __init__(self, status_code: int) -> None:
        self.status_code = status_code
        super().__init__(f"the receiver refused the delivery with HTTP {status_code}")


_client: tuple[asyncio.AbstractEventLoop, httpx.AsyncClient] | None = None


def http_client() -> httpx.AsyncClient:
    """The process's HTTP client, created on first use.

    One client for all deliveries: its pool keeps connections to a receiver open from one
    delivery to the next (no TCP and TLS handshake per webhook) and bounds how many are
    open. Created lazily, inside the worker's event loop, because a client belongs to the
    loop its connections were opened on; a new loop (a test's) gets a new client. It is not
    closed explicitly: it lives as long as the process, whose exit closes its sockets.
    """
    global _client
    loop = asyncio.get_running_loop()
    if _client is None or _client[0] is not loop or _client[1].is_closed:
        size = settings.WEBHOOK_CONCURRENCY
        client = httpx.AsyncClient(
            timeout=httpx.Timeout(settings.WEBHOOK_TIMEOUT),
            limits=httpx.Limits(max_connections=size, max_keepalive_connections=size),
            headers={"User-Agent": "aiotaskq-example-webhooks/1.0"},
            # A redirect would send the signed body somewhere the subscriber did not name.
            follow_redirects=False,
        )
        _client = (loop, client)
    return _client[1]


@task(
    queue="webhooks",
    autoretry_for=(httpx.TransportError, ServerError),
    max_retries=MAX_RETRIES,
    retry_backoff=1,
    retry_backoff_max=5,
    retry_jitter=True,
    # A backstop only: the client's timeout bounds the request itself. An attempt cut by it
    # is not retried (TimeLimitExceeded is not in autoretry_for): the delivery stays pending
    # and its task Failed, until `aiotaskq retry --failed` sends it again.
    time_limit=60,
    # At most WEBHOOK_PER_HOST deliveries at once to one host, over every worker. The key is
    # the host of the subscription's URL, given by the view that enqueues
    # (deliver.s(pk).set(limit_key=host)); an enqueue without one shares the key "*".
    max_concurrent=settings.WEBHOOK_PER_HOST,
)
async def deliver(delivery_id: uuid.UUID) -> None:
    """POST the event of one delivery to its subscriber and record the outcome on the row.

    Raises (``deliver`` is declared so that aiotaskq retries the first two):
        httpx.TransportError: no answer (refused, reset, timed out).
        ServerError: HTTP 5xx or 408, or a 429 past MAX_SNOOZES.
        Snooze: HTTP 429: run again after its Retry-After, without spending a retry.
        Rejected: any other 4xx; not retried.
    """
    try:
        delivery = await Delivery.objects.select_related("event", "subscription").aget(
            pk=delivery_id
        )
    except Delivery.DoesNotExist:
        logger.info("Delivery %s is gone (its event or subscription was deleted)", delivery_id)
        return
    if delivery.status == Delivery.Status.DELIVERED:
        # At least once: the success was recorded, then the worker died before aiotaskq
        # deleted the task. Nothing to send.
        return

    body = payload(delivery)
    headers = {
        "Content-Type": "application/json",
        HEADER: sign(delivery.subscription.secret, body),
        "Idempotency-Key": str(delivery.id),
        "X-Event-Type": delivery.event.kind,
    }
    delivery.attempts += 1
    started = time.perf_counter()
    try:
        response = await http_client().post(
            delivery.subscription.target_url, content=body, headers=headers
        )
    except httpx.TransportError as exc:
        await _failed(delivery, started, None, exc)
        raise
    code = response.status_code

    if 200 <= code < 300:
        delivery.status = Delivery.Status.DELIVERED
        delivery.finished_at = timezone.now()
        delivery.last_error = ""
        await _save(delivery, started, code)
        return
    if code == 429 and delivery.snoozes < MAX_SNOOZES:
        delivery.snoozes += 1
        delivery.last_error = "HTTP 429"
        await _save(delivery, started, code)
        raise Snooze(retry_after(response))
    if code >= 500 or code in (408, 429):
        retryable = ServerError(code)
        await _failed(delivery, started, code, retryable)
        raise retryable
    rejected = Rejected(code)
    delivery.status = Delivery.Status.FAILED
    delivery.finished_at = timezone.now()
    delivery.last_error = f"Rejected: {rejected}"
    await _save(delivery, started, code)
    raise rejected


def payload(delivery: Delivery) -> bytes:
    """The request body: the exact bytes that are signed."""
    event = delivery.event
    document = {
        "delivery": str(delivery.id),
        "event": {
            "id": event.pk,
            "type": event.kind,
            "created_at": event.created_at.isoformat(),
            "data": event.payload,
        },
    }
    return json.dumps(document, separators=(",", ":")).encode()


def retry_after(response: httpx.Response) -> float:
    """Seconds to wait, from a ``Retry-After`` of seconds or an HTTP date; bounded."""
    value = response.headers.get("Retry-After", "").strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return DEFAULT_SNOOZE
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        seconds = (when - timezone.now()).total_seconds()
    if not math.isfinite(seconds):
        return DEFAULT_SNOOZE
    return min(max(seconds, 0.0), MAX_SNOOZE)


async def _failed(delivery: Delivery, started: float, code: int | None, exc: BaseException) -> None:
    """Record an attempt that aiotaskq will retry, unless it was the last one.

    ``retries`` counts the retries already spent, as aiotaskq does (a Snooze spends none),
    so both agree on which attempt is the last: then the delivery is failed for good here,
    and aiotaskq keeps the task as Failed with the error, for a person to look at (and
    ``aiotaskq retry --failed`` to send it again).
    """
    delivery.last_error = f"{type(exc).__name__}: {exc}"
    if delivery.retries >= MAX_RETRIES:
        delivery.status = Delivery.Status.FAILED
        delivery.finished_at = timezone.now()
    else:
        delivery.retries += 1
    await _save(delivery, started, code)


async def _save(delivery: Delivery, started: float, code: int | None) -> None:
    delivery.response_code = code
    delivery.latency_ms = (time.perf_counter() - started) * 1000
    await delivery.asave(
        update_fields=[
            "status",
            "attempts",
            "retries",
            "snoozes",
            "response_code",
            "latency_ms",
            "last_error",
            "finished_at",
            "updated_at",
        ]
    )


# The export and the event summary live in their own module; importing it here registers
# their tasks with the worker, which imports each app's ``tasks`` module.
from . import exports  # noqa: E402, F401
