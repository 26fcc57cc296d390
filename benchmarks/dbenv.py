"""Where the benchmark's PostgreSQL server is. Standard library only: the peer's virtualenv
imports this module too.

The server comes from ``DATABASE_URL`` if it is set (its host, port, user, password and query
options; its database name is never used, since the benchmark drops and recreates its own),
else from ``PGHOST``/``PGPORT``/``PGUSER``/``PGPASSWORD``, else 127.0.0.1:5432 as the current
user. The benchmark's database is ``AIOTASKQ_BENCH_DATABASE`` (default ``aiotaskq_bench``);
the peer's is the same name with ``_taskq`` appended.
"""

from __future__ import annotations

import os
from urllib.parse import parse_qsl, unquote, urlsplit

DEFAULT_DATABASE = "aiotaskq_bench"


def database_name() -> str:
    """The database the aiotaskq scenarios run in."""
    return os.environ.get("AIOTASKQ_BENCH_DATABASE") or DEFAULT_DATABASE


def peer_database_name() -> str:
    """The database the peer (django-taskq) runs in."""
    return f"{database_name()}_taskq"


def server() -> tuple[dict[str, str], dict[str, str]]:
    """``(params, options)``: host, port, user and password (empty when not given), and any
    other libpq options (for example ``sslmode`` from the URL's query string)."""
    url = os.environ.get("DATABASE_URL")
    if url:
        parts = urlsplit(url)
        if parts.scheme not in {"postgres", "postgresql", "pgsql"}:
            raise SystemExit(f"DATABASE_URL must be a postgres:// URL, got scheme {parts.scheme!r}")
        params = {
            "host": unquote(parts.hostname or ""),
            "port": str(parts.port or ""),
            "user": unquote(parts.username or ""),
            "password": unquote(parts.password or ""),
        }
        return params, dict(parse_qsl(parts.query))
    params = {
        "host": os.environ.get("PGHOST", "127.0.0.1"),
        "port": os.environ.get("PGPORT", "5432"),
        "user": os.environ.get("PGUSER", ""),
        "password": os.environ.get("PGPASSWORD", ""),
    }
    return params, {}


def django_database(name: str) -> dict[str, object]:
    """A ``DATABASES`` entry for database ``name`` on the benchmark's server."""
    params, options = server()
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": name,
        "HOST": params["host"],
        "PORT": params["port"],
        "USER": params["user"],
        "PASSWORD": params["password"],
        "OPTIONS": options,
    }


def libpq_params(name: str) -> dict[str, str]:
    """Keyword arguments for ``psycopg.connect`` to database ``name``."""
    params, options = server()
    return {k: v for k, v in {**params, **options, "dbname": name}.items() if v}
