"""Loads ``queries.sql`` once into named statements."""

from __future__ import annotations

import re
from functools import cache
from importlib.resources import files
from typing import LiteralString

from psycopg import sql

__all__ = ["query", "text"]

_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


@cache
def _load() -> dict[str, str]:
    source = files("aiotaskq.db").joinpath("queries.sql").read_text(encoding="utf-8")
    parts = _NAME.split(source)
    blocks: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        lines = [line for line in body.strip().splitlines() if not line.lstrip().startswith("--")]
        blocks[name] = "\n".join(lines).strip().rstrip(";")
    return blocks


def text(name: str) -> LiteralString:
    """The statement ``name`` as a string, for Django's cursor and for psycopg's execute."""
    # The file ships with the package and is never built from input: it is as literal as a
    # string in the source would be.
    return _load()[name]


def query(name: str) -> sql.SQL:
    """The statement ``name`` as a :class:`psycopg.sql.SQL`, for filling in identifiers."""
    return sql.SQL(text(name))


def names() -> list[str]:
    """Every statement's name, in file order."""
    return list(_load())
