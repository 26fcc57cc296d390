"""The ASGI app of tests/test_asgi.py: Django with an aiotaskq worker in its lifespan.

``AIOTASKQ_TEST_ASGI_WORKER=0`` turns the worker off; ``AIOTASKQ_TEST_GRACE`` sets its grace.
"""

from __future__ import annotations

import logging
import os
import sys

os.environ["DJANGO_SETTINGS_MODULE"] = "tests.asgi_settings"

from django.core.asgi import get_asgi_application

import aiotaskq.asgi

# aiotaskq never configures logging; the tests read the worker's events in the server's log.
_handler = logging.StreamHandler(sys.stderr)
_handler.setFormatter(logging.Formatter("%(process)d %(levelname)s %(name)s: %(message)s"))
logging.getLogger("aiotaskq").addHandler(_handler)
logging.getLogger("aiotaskq").setLevel(logging.INFO)

application = aiotaskq.asgi.with_worker(
    get_asgi_application(),
    concurrency=20,
    threads=2,
    grace=float(os.environ.get("AIOTASKQ_TEST_GRACE", "10")),
    enabled=os.environ.get("AIOTASKQ_TEST_ASGI_WORKER", "1") == "1",
)
