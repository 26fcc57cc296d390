"""The ASGI entry point: Django, with an aiotaskq worker on the same event loop.

::

    uvicorn project.asgi:application --lifespan on

At lifespan startup the worker starts (uvicorn serves once it is claiming); on SIGTERM or
Ctrl-C uvicorn finishes its requests, then the worker stops claiming, lets the deliveries in
flight finish within ``grace`` seconds and puts the rest back to queued. Set
``RUN_WORKER=0`` where a process should only serve (under ``--reload``, or when
``aiotaskq run --queues webhooks`` runs elsewhere).
"""

import os

from django.conf import settings
from django.core.asgi import get_asgi_application

import aiotaskq.asgi

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

application = aiotaskq.asgi.with_worker(
    get_asgi_application(),
    # Deliveries, and the short summaries a view waits for (webhooks/exports.py). Exports
    # read the whole table in a plain function: they run in `aiotaskq run --queues exports`.
    queues=["webhooks", "reports"],
    # Deliveries mostly wait on the network: dozens at once cost one event loop, not dozens
    # of threads or database connections. (See settings.py for the figure.)
    concurrency=settings.WEBHOOK_CONCURRENCY,
    # Below the 30 s that process managers usually wait before they kill.
    grace=10.0,
    enabled=os.environ.get("RUN_WORKER", "1") == "1",
)
