"""The signature of a webhook: ``X-Signature: t=<unix time>,v1=<hex HMAC-SHA256>``.

The HMAC covers ``"<t>." + body`` with the subscription's secret. The timestamp lets a
receiver refuse an old request replayed by someone who captured it; the body is signed as
the exact bytes sent, so a receiver must verify before it parses the JSON. It is the scheme
Stripe and others use, so receivers usually know it already.
"""

from __future__ import annotations

import hashlib
import hmac
import time

HEADER = "X-Signature"
#: How old a signed request a receiver accepts, in seconds.
TOLERANCE = 300


def _digest(secret: str, timestamp: int, body: bytes) -> str:
    message = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The ``X-Signature`` value for ``body``, signed now (or at ``timestamp``)."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    return f"t={timestamp},v1={_digest(secret, timestamp, body)}"


def verify(secret: str, body: bytes, header: str, now: float | None = None) -> bool:
    """Whether ``header`` is a signature of ``body`` by ``secret``, made within
    :data:`TOLERANCE` seconds of ``now``. Compares in constant time."""
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        timestamp = int(fields["t"])
        signature = fields["v1"]
    except (KeyError, ValueError):
        return False
    now = time.time() if now is None else now
    if abs(now - timestamp) > TOLERANCE:
        return False
    return hmac.compare_digest(signature, _digest(secret, timestamp, body))
