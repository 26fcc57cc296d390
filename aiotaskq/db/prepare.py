"""Prepared statements and connection poolers: whether aiotaskq's own connections prepare
their statements (``AIOTASKQ["PREPARE"]``), and how a pooler that loses them shows."""

from __future__ import annotations

from typing import Any

import psycopg
from django import db as django_db
from django.db import connections

from ..conf import get_settings
from ..errors import DatabaseError

__all__ = ["REMEDY", "prepared_lost", "prepares", "unprepared"]


def prepares() -> bool:
    """Whether aiotaskq's own connections prepare their statements (and the worker's keep
    its session settings): ``AIOTASKQ["PREPARE"]``, or when that is ``None``, unless the
    task database's ``OPTIONS`` set ``prepare_threshold`` to ``None``.

    Django's own connections follow only their ``OPTIONS`` (Django prepares nothing unless
    ``prepare_threshold`` is a number there)."""
    settings = get_settings()
    if settings.PREPARE is not None:
        return settings.PREPARE
    options = connections.settings.get(settings.DATABASE, {}).get("OPTIONS") or {}
    return not ("prepare_threshold" in options and options["prepare_threshold"] is None)


def unprepared() -> dict[str, Any]:
    """psycopg's keyword for a connection that prepares nothing, when :func:`prepares` is
    false; nothing (psycopg's default, or the caller's) otherwise."""
    return {} if prepares() else {"prepare_threshold": None}


def prepared_lost(exc: BaseException) -> bool:
    """Whether PostgreSQL refused one of psycopg's prepared statements (``_pg3_N``): missing
    on this server connection, there already, or another one by that name. That is a pooler
    in transaction mode that does not keep prepared statements (PgBouncer before 1.21, or
    without ``max_prepared_statements``) handing each transaction to any server connection."""
    cause = exc.__cause__ if isinstance(exc, DatabaseError) else exc
    if isinstance(cause, django_db.Error) and cause.__cause__ is not None:
        cause = cause.__cause__
    return isinstance(cause, psycopg.Error) and 'prepared statement "_pg3_' in str(cause)


#: What a lost prepared statement's error message gets added.
REMEDY = (
    "; a pooler in transaction mode between aiotaskq and PostgreSQL does not keep prepared "
    "statements (PgBouncer before 1.21, or without max_prepared_statements): "
    'set AIOTASKQ["PREPARE"] = False'
)
