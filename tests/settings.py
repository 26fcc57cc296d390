"""Settings of the test suite. The database comes from the environment (see conftest.py)."""

import os
from typing import Any

SECRET_KEY = "tests-only"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
DATABASES: dict[str, dict[str, Any]] = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ.get("AIOTASKQ_TEST_DATABASE", "aiotaskq_test"),
        "HOST": os.environ.get("PGHOST", "127.0.0.1"),
        "PORT": os.environ.get("PGPORT", "5432"),
        "USER": os.environ.get("PGUSER", ""),
        "PASSWORD": os.environ.get("PGPASSWORD", ""),
    }
}
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "aiotaskq",
    "tests.app",
]
# The admin (tests/test_admin.py, tests/test_admin_browser.py).
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
ROOT_URLCONF = "tests.urls"
STATIC_URL = "static/"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AIOTASKQ: dict[str, Any] = {
    # Short enough that a lost notification shows within a test, long enough that a test
    # asserting a wake-up by NOTIFY or by ETA would fail if it only ran at the poll.
    "POLL_INTERVAL": float(os.environ.get("AIOTASKQ_TEST_POLL", "5")),
    "DIRTY_AFTER": float(os.environ.get("AIOTASKQ_TEST_DIRTY_AFTER", "3")),
    "HEARTBEAT_INTERVAL": 0.5,
}
if os.environ.get("AIOTASKQ_TEST_IMPORTS"):
    # Task modules for one worker process only (the periodic schedules of tests/periodic/).
    AIOTASKQ["IMPORTS"] = os.environ["AIOTASKQ_TEST_IMPORTS"].split(",")
if os.environ.get("AIOTASKQ_TEST_QUEUES"):
    # Per-queue settings for one worker process (tests/test_lanes.py), as JSON.
    import json

    AIOTASKQ["QUEUES"] = json.loads(os.environ["AIOTASKQ_TEST_QUEUES"])
if os.environ.get("AIOTASKQ_TEST_SETTINGS"):
    # More AIOTASKQ keys for one process (tests/test_pgbouncer.py), as JSON.
    import json

    AIOTASKQ.update(json.loads(os.environ["AIOTASKQ_TEST_SETTINGS"]))
if os.environ.get("AIOTASKQ_TEST_POOLER"):
    # A process whose PGPORT is PgBouncer's, in transaction mode (tests/test_pgbouncer.py):
    # a server-side cursor needs the session that the pooler does not keep.
    DATABASES["default"]["DISABLE_SERVER_SIDE_CURSORS"] = True
if os.environ.get("AIOTASKQ_TEST_DB_OPTIONS"):
    # DATABASES["default"]["OPTIONS"] for one process, as JSON (tests/test_pgbouncer.py).
    import json

    DATABASES["default"]["OPTIONS"] = json.loads(os.environ["AIOTASKQ_TEST_DB_OPTIONS"])
LOGGING_CONFIG = None
# Like a deployment that keeps connections: close_old_connections() around each sync task
# then reuses them instead of reconnecting per task.
DATABASES["default"]["CONN_MAX_AGE"] = 60

import django  # noqa: E402

if django.VERSION >= (6, 0):
    # Django's tasks framework, run by aiotaskq workers (tests/test_backend.py).
    TASKS = {
        "default": {
            "BACKEND": "aiotaskq.backend.AiotaskqBackend",
            "QUEUES": ["default", "a", "b", "other"],
        }
    }
    AIOTASKQ["IMPORTS"] = [*AIOTASKQ.get("IMPORTS", ()), "tests.app.django_tasks"]
