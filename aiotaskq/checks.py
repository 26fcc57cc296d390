"""Django system checks (``manage.py check``) for aiotaskq's configuration."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.apps import AppConfig
from django.conf import settings as django_settings
from django.core import checks
from django.db import connections

from .conf import get_settings
from .db.prepare import prepares
from .errors import ConfigurationError

__all__ = ["check_configuration"]

# Ports and host names that usually mean a connection pooler in transaction mode, which
# cannot hold the session that LISTEN needs.
_POOLER_PORTS = {"6432"}


def _pooler_hint(alias: str) -> str | None:
    conf = connections.settings[alias]
    host = str(conf.get("HOST") or "")
    port = str(conf.get("PORT") or "")
    if port in _POOLER_PORTS or "pgbouncer" in host.lower():
        return f"{host}:{port}"
    if conf.get("DISABLE_SERVER_SIDE_CURSORS"):
        return "DISABLE_SERVER_SIDE_CURSORS is set"
    return None


@checks.register(checks.Tags.database, checks.Tags.compatibility)
def check_configuration(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """Settings keys and values, the database vendor and driver, and LISTEN's needs."""
    try:
        settings = get_settings()
    except ConfigurationError as exc:
        return [
            checks.Error(
                str(exc), id="aiotaskq.E001", hint="Fix settings.AIOTASKQ; every key is optional."
            )
        ]
    messages: list[checks.CheckMessage] = []
    alias = settings.DATABASE
    if alias not in connections.settings:
        return [
            checks.Error(
                f'AIOTASKQ["DATABASE"] is {alias!r}, which is not in settings.DATABASES.',
                id="aiotaskq.E002",
                hint="Name the alias of the PostgreSQL database that holds aiotaskq's table.",
            )
        ]
    engine = connections.settings[alias]["ENGINE"]
    if connections[alias].vendor != "postgresql":
        messages.append(
            checks.Error(
                f"The database {alias!r} uses {engine}; aiotaskq needs PostgreSQL.",
                id="aiotaskq.E003",
                hint="Use django.db.backends.postgresql (with psycopg 3) for AIOTASKQ['DATABASE'].",
            )
        )
    else:
        from django.db.backends.postgresql.psycopg_any import is_psycopg3

        if not is_psycopg3:
            messages.append(
                checks.Error(
                    "aiotaskq needs psycopg 3; Django is using psycopg2.",
                    id="aiotaskq.E004",
                    hint='pip install "psycopg[binary]" (and uninstall psycopg2).',
                )
            )
    if settings.LISTEN and not settings.LISTEN_DSN and (where := _pooler_hint(alias)):
        messages.append(
            checks.Warning(
                f"The database {alias!r} looks like a connection pooler ({where}); LISTEN needs a "
                "session connection, which a pooler in transaction mode cannot give.",
                id="aiotaskq.W001",
                hint='Set AIOTASKQ["LISTEN_DSN"] to a direct connection string, or '
                'AIOTASKQ["LISTEN"] = False to wake workers by polling only.',
            )
        )
    if prepares() and (where := _pooler_hint(alias)):
        messages.append(
            checks.Warning(
                f"The database {alias!r} looks like a connection pooler ({where}); aiotaskq's "
                "connections prepare their statements, which a pooler in transaction mode "
                "cannot keep before PgBouncer 1.21 (the worker fails with 'prepared statement "
                "... does not exist').",
                id="aiotaskq.W003",
                hint='Set AIOTASKQ["PREPARE"] = False (or OPTIONS {"prepare_threshold": None} '
                "in the database's settings). A pooler in session mode needs neither.",
            )
        )
    if getattr(django_settings, "CELERY_TASK_ALWAYS_EAGER", False) and not django_settings.DEBUG:
        messages.append(
            checks.Warning(
                "CELERY_TASK_ALWAYS_EAGER is on: tasks run in the caller, not in workers.",
                id="aiotaskq.W002",
                hint="Leave eager mode to test settings.",
            )
        )
    return messages
