"""Settings of the ASGI app (tests/asgi_app.py) that tests/test_asgi.py serves with uvicorn:
the test settings, the same database, and a few views."""

from tests.settings import *  # noqa: F403

ROOT_URLCONF = "tests.asgi_urls"
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
MIDDLEWARE: list[str] = []
