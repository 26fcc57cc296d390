"""Settings of the webhook fan-out example: ASGI Django, PostgreSQL, and an aiotaskq worker
colocated in the web server (see ``project/asgi.py``).

The database comes from the environment the way libpq's tools read it: ``PGHOST``,
``PGPORT``, ``PGUSER`` and ``PGPASSWORD`` (``demo.py`` turns a ``DATABASE_URL`` into those),
and ``EXAMPLE_DATABASE`` names the database.
"""

import os
from pathlib import Path
from typing import Any

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-not-secret")
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
USE_TZ = True
TIME_ZONE = "UTC"

INSTALLED_APPS = [
    "aiotaskq",
    "webhooks",
]
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "project.urls"
ASGI_APPLICATION = "project.asgi.application"

DATABASES: dict[str, dict[str, Any]] = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ.get("EXAMPLE_DATABASE", "aiotaskq_example"),
        "HOST": os.environ.get("PGHOST", "127.0.0.1"),
        "PORT": os.environ.get("PGPORT", "5432"),
        "USER": os.environ.get("PGUSER", ""),
        "PASSWORD": os.environ.get("PGPASSWORD", ""),
        # Keep connections between requests (and between the plain-function tasks of the
        # worker's threads); 0 would open one per request.
        "CONN_MAX_AGE": 60,
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Every key is optional. Deliveries go to their own queue, so that a burst of webhooks
# never holds up the project's other tasks (a second worker could take "default").
AIOTASKQ = {
    "DEFAULT_QUEUE": "default",
    # How long a task's heartbeat may be silent before it is Dirty (and, for a task with
    # on_dirty="retry" such as the export, rescued by another worker).
    "DIRTY_AFTER": float(os.environ.get("AIOTASKQ_DIRTY_AFTER", "10")),
}

# Where exports (webhooks/exports.py) write their CSV files, and a pause after each chunk
# (0; the tests slow an export down with it, to kill its worker halfway).
EXPORT_DIR = Path(os.environ.get("EXPORT_DIR", BASE_DIR / "exports"))
EXPORT_CHUNK_PAUSE = float(os.environ.get("EXPORT_CHUNK_PAUSE", "0"))

# aiotaskq logs to the "aiotaskq" loggers and never configures logging itself: show its
# events (worker.started, task.retry, task.snoozed, ...) on the server's stderr.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)-7s %(name)s: %(message)s"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {
        "aiotaskq": {"handlers": ["stderr"], "level": os.environ.get("AIOTASKQ_LOG", "INFO")},
        "webhooks": {"handlers": ["stderr"], "level": "INFO"},
    },
}

# The webhook sender's knobs (read by webhooks/tasks.py and project/asgi.py).
#
# How many deliveries run at once in this process (the worker's concurrency), and the size
# of the HTTP client's pool: one connection per delivery in flight, so that none waits for
# one. Throughput is about this number / the receivers' latency until the CPU is the
# limit: each delivery costs a few milliseconds of it (the HTTP client, the ORM), and past
# that point a larger number buys nothing (httpx's pool does more work per request the
# larger it is). Measure before you raise it; add processes to go further.
WEBHOOK_CONCURRENCY = int(os.environ.get("WEBHOOK_CONCURRENCY", "32"))
# How many deliveries to one receiver's host run at once, over every worker and process
# (aiotaskq's max_concurrent per key, the key being the subscription URL's host): a receiver
# is never sent more than this at once, however many workers there are.
WEBHOOK_PER_HOST = int(os.environ.get("WEBHOOK_PER_HOST", "16"))
# Seconds to wait for a receiver (to connect, and then for each read).
WEBHOOK_TIMEOUT = float(os.environ.get("WEBHOOK_TIMEOUT", "10"))
