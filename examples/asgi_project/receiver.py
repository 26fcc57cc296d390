"""A webhook receiver to deliver to: a tiny ASGI app, no framework, that behaves like a
real endpoint on a bad day. Run it beside the project::

    RECEIVER_SECRET=s3cret uvicorn receiver:app --port 8001

``POST /hooks/<anything>`` checks the signature (401 if wrong), waits 50-150 ms, and then
answers, at random:

- 500 (``RECEIVER_FAIL_RATE``, 10 %): failed before doing anything;
- 500 after it did its work (``RECEIVER_LOST_RATE``, 2 %): as when a proxy times out on
  the way back; the sender retries, and the ``Idempotency-Key`` lets the receiver
  recognise the repeat, answer 200 and not process it twice;
- 429 with ``Retry-After: 1`` (``RECEIVER_THROTTLE_RATE``, 5 %);
- otherwise 200, once per ``Idempotency-Key``: a repeat is counted as a duplicate.

It counts the requests in flight per ``Host`` (without the port), and ``GET /stats``
reports the most it saw at once per host (``peak_per_host``), so that the sender's
per-host limit can be seen from the receiving end.

``GET /stats`` answers its settings and what it saw, as JSON. The latency range is
``RECEIVER_LATENCY_MS`` (``50-150``); ``RECEIVER_SEED`` makes the dice repeatable.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
from collections import Counter
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

from webhooks.signing import HEADER, verify

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def _rate(name: str, default: float) -> float:
    value = float(os.environ.get(name, default))
    if not 0 <= value <= 1:
        raise ValueError(f"{name} must be between 0 and 1, got {value}")
    return value


SECRET = os.environ.get("RECEIVER_SECRET", "")
FAIL_RATE = _rate("RECEIVER_FAIL_RATE", 0.10)
LOST_RATE = _rate("RECEIVER_LOST_RATE", 0.02)
THROTTLE_RATE = _rate("RECEIVER_THROTTLE_RATE", 0.05)
LATENCY_MS = tuple(float(x) for x in os.environ.get("RECEIVER_LATENCY_MS", "50-150").split("-"))
_dice = random.Random(os.environ.get("RECEIVER_SEED"))
CONFIG = {
    "fail_rate": FAIL_RATE,
    "lost_rate": LOST_RATE,
    "throttle_rate": THROTTLE_RATE,
    "latency_ms": "-".join(f"{x:g}" for x in LATENCY_MS),
}

# What the receiver has processed, by Idempotency-Key, and what it saw. A real receiver
# keeps the keys in its database, for at least as long as the sender may retry.
processed: set[str] = set()
stats: Counter[str] = Counter()
in_flight: Counter[str] = Counter()
peak: Counter[str] = Counter()


async def app(scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    if scope["method"] == "GET" and scope["path"] == "/stats":
        await _answer(
            send, 200, {"config": CONFIG, "seen": dict(stats), "peak_per_host": dict(peak)}
        )
    elif scope["method"] == "POST" and scope["path"].startswith("/hooks/"):
        body = await _body(receive)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        host = headers.get("host", "-").rsplit(":", 1)[0]
        in_flight[host] += 1
        peak[host] = max(peak[host], in_flight[host])
        try:
            status, document, extra = await _hook(body, headers)
            await _answer(send, status, document, extra)
        finally:
            in_flight[host] -= 1
    else:
        await _answer(send, 404, {"error": "not found"})


async def _hook(
    body: bytes, headers: dict[str, str]
) -> tuple[int, dict[str, Any], list[tuple[bytes, bytes]]]:
    stats["requests"] += 1
    # Verify before anything else, on the exact bytes received.
    if not verify(SECRET, body, headers.get(HEADER.lower(), "")):
        stats["bad_signature"] += 1
        return 401, {"error": "bad signature"}, []
    key = headers.get("idempotency-key")
    if not key:
        stats["no_idempotency_key"] += 1
        return 400, {"error": "Idempotency-Key is required"}, []
    await asyncio.sleep(_dice.uniform(*LATENCY_MS) / 1000)
    roll = _dice.random()
    if roll < FAIL_RATE:
        stats["answered_500"] += 1
        return 500, {"error": "internal error"}, []
    if roll < FAIL_RATE + THROTTLE_RATE:
        stats["answered_429"] += 1
        return 429, {"error": "slow down"}, [(b"retry-after", b"1")]
    if key in processed:
        stats["duplicates"] += 1
        return 200, {"duplicate": True}, []
    processed.add(key)
    stats["accepted"] += 1
    if roll < FAIL_RATE + THROTTLE_RATE + LOST_RATE:
        stats["answered_500_after_processing"] += 1
        return 500, {"error": "gateway timeout"}, []
    return 200, {"accepted": True}, []


async def _body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def _answer(
    send: Send, status: int, document: dict[str, Any], extra: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    body = json.dumps(document).encode()
    headers = [(b"content-type", b"application/json"), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
